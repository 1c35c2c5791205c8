//! Bad input gets a clear error with the right status and changes nothing
//! (the issue's list, one case each): unknown path 404, wrong method 405,
//! malformed JSON / wrong types / unknown capability / unparsable HCL 400,
//! check-and-set mismatch 400, path traversal that never leaves a mount's
//! view, an exhausted `num_uses` token 403, a wrapping token used twice 400.

mod common;

use common::call;
use serde_json::{Value, json};

/// Everything a rejected request could have changed, as the API shows it.
fn snapshot(base: &str, root: &str) -> Value {
    let strip = |mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            o.remove("request_id");
        }
        v
    };
    let (_, mounts) = call(base, "GET", "sys/mounts", Some(root), "");
    let (_, policies) = call(base, "GET", "sys/policies/acl?list=true", Some(root), "");
    let (_, meta) = call(base, "GET", "secret/metadata/app", Some(root), "");
    let (_, keys) = call(base, "LIST", "secret/metadata/", Some(root), "");
    let (_, kv1) = call(base, "LIST", "kv1/", Some(root), "");
    let (_, tokens) = call(base, "LIST", "auth/token/accessors", Some(root), "");
    json!([
        strip(mounts),
        strip(policies),
        strip(meta),
        strip(keys),
        strip(kv1),
        strip(tokens)
    ])
}

fn errors(v: &Value) -> String {
    v["errors"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = common::start_node(dir.path()).await;
    let base = running.http_url();
    let b = base.clone();
    tokio::task::spawn_blocking(move || check(&b))
        .await
        .expect("checks");
    running.shutdown().await;
}

fn check(base: &str) {
    let root = common::init_unseal(base);
    let root = root.as_str();
    let ok = |method: &str, path: &str, body: &str| {
        let (code, v) = call(base, method, path, Some(root), body);
        assert!((200..300).contains(&code), "{method} {path}: {code} {v}");
        v
    };
    ok("POST", "sys/mounts/secret", r#"{"type":"kv-v2"}"#);
    ok("POST", "sys/mounts/kv1", r#"{"type":"kv"}"#);
    ok("POST", "secret/data/app", r#"{"data":{"v":"1"}}"#);
    ok("POST", "kv1/app", r#"{"v":"1"}"#);
    ok(
        "PUT",
        "sys/policies/acl/p",
        r#"{"policy":"path \"secret/*\" { capabilities = [\"read\"] }"}"#,
    );
    let before = snapshot(base, root);

    let expect = |method: &str, path: &str, token: Option<&str>, body: &str, want: u16| {
        let (code, v) = call(base, method, path, token, body);
        assert_eq!(code, want, "{method} {path} {body}: {v}");
        assert!(
            v["errors"].is_array(),
            "{method} {path}: errors array in {v}"
        );
        v
    };

    // Unknown paths and wrong methods.
    let v = expect("GET", "nomount/x", Some(root), "", 404);
    assert_eq!(v, json!({"errors": []}));
    expect("GET", "sys/nonesuch", Some(root), "", 404);
    expect("PATCH", "kv1/app", Some(root), r#"{"v":"2"}"#, 405);
    expect("POST", "sys/mounts", Some(root), "{}", 405);
    expect("DELETE", "sys/wrapping/lookup", Some(root), "", 405);

    // Malformed JSON and wrong types name the problem.
    let v = expect("POST", "secret/data/app", Some(root), "{not json", 400);
    assert!(errors(&v).contains("JSON"), "{v}");
    let v = expect("POST", "secret/data/app", Some(root), "[1,2]", 400);
    assert!(errors(&v).contains("object"), "{v}");
    let v = expect(
        "POST",
        "auth/token/create",
        Some(root),
        r#"{"ttl":"banana"}"#,
        400,
    );
    assert!(errors(&v).contains("ttl"), "{v}");
    let v = expect(
        "POST",
        "secret/config",
        Some(root),
        r#"{"max_versions":"banana"}"#,
        400,
    );
    assert!(errors(&v).contains("max_versions"), "{v}");
    let v = expect(
        "POST",
        "sys/mounts/x",
        Some(root),
        r#"{"type":"kv","config":{"default_lease_ttl":"banana"}}"#,
        400,
    );
    assert!(errors(&v).contains("default_lease_ttl"), "{v}");
    let v = expect(
        "POST",
        "auth/token/create",
        Some(root),
        r#"{"num_uses":-1}"#,
        400,
    );
    assert!(errors(&v).contains("num_uses"), "{v}");

    // Policies: an unknown capability, and HCL that does not parse (the
    // error names line and column).
    let v = expect(
        "PUT",
        "sys/policies/acl/q",
        Some(root),
        r#"{"policy":"path \"a/*\" {\n  capabilities = [\"read\", \"fly\"]\n}"}"#,
        400,
    );
    assert!(errors(&v).contains("fly"), "{v}");
    let v = expect(
        "PUT",
        "sys/policies/acl/q",
        Some(root),
        r#"{"policy":"path \"a/*\" {\n  capabilities = [\"read\"\n"}"#,
        400,
    );
    let msg = errors(&v);
    assert!(msg.contains("line 3") && msg.contains("column"), "{v}");
    expect(
        "PUT",
        "sys/policies/acl/root",
        Some(root),
        r#"{"policy":"path \"a\" { capabilities = [\"read\"] }"}"#,
        400,
    );
    expect("DELETE", "sys/policies/acl/default", Some(root), "", 400);

    // Check-and-set.
    let v = expect(
        "POST",
        "secret/data/app",
        Some(root),
        r#"{"data":{"v":"x"},"options":{"cas":7}}"#,
        400,
    );
    assert_eq!(
        v["errors"][0],
        "check-and-set parameter did not match the current version"
    );
    expect(
        "POST",
        "secret/data/app",
        Some(root),
        r#"{"data":{"v":"x"},"options":{"cas":0}}"#,
        400,
    );

    // Traversal: none of these reaches anything outside the mount.
    let deep = format!("secret/data/{}", "a/".repeat(10_000));
    for path in [
        "secret/data/../../sys/mounts/kv1",
        "secret/data/%2e%2e/%2e%2e/sys/mounts/kv1",
        "secret/data/%2E%2E%2Fkv1",
        "secret/data/a//b",
        "secret//data/a",
        "secret/data/a%00b",
        "secret/data/a%2",
        "kv1/../secret/data/app",
        deep.as_str(),
    ] {
        let (code, v) = call(base, "POST", path, Some(root), r#"{"data":{"v":"evil"}}"#);
        assert!(matches!(code, 400 | 404 | 414 | 431), "{path}: {code} {v}");
        let (code, v) = call(base, "DELETE", path, Some(root), "");
        assert!(
            matches!(code, 400 | 404 | 414 | 431),
            "DELETE {path}: {code} {v}"
        );
    }

    // Tokens: bad or missing ones are 403, never 500.
    for token in [None, Some("hvs.bogus"), Some(""), Some(&"x".repeat(4096))] {
        expect("GET", "secret/data/app", token, "", 403);
    }
    // A header value that is not valid HTTP never reaches the API.
    let (code, _) = call(base, "GET", "secret/data/app", Some("x\u{7f}y"), "");
    assert_eq!(code, 400);

    assert_eq!(
        snapshot(base, root),
        before,
        "a rejected request changed something"
    );

    // num_uses: the third use of a two-use token is refused.
    let (_, t) = call(
        base,
        "POST",
        "auth/token/create",
        Some(root),
        r#"{"num_uses":2,"policies":["p"]}"#,
    );
    let two = t["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    for _ in 0..2 {
        let (code, v) = call(base, "GET", "secret/data/app", Some(&two), "");
        assert_eq!(code, 200, "{v}");
    }
    let v = expect("GET", "secret/data/app", Some(&two), "", 403);
    assert_eq!(v["errors"][0], "permission denied");

    // A wrapping token works once.
    let (_, w) = call(
        base,
        "POST",
        "sys/wrapping/wrap",
        Some(root),
        r#"{"k":"v"}"#,
    );
    assert!(w["errors"].is_array(), "no wrap TTL is an error: {w}");
    let wrapped = {
        use std::io::{Read, Write};
        let host = base.strip_prefix("http://").expect("http");
        let mut s = std::net::TcpStream::connect(host).expect("connect");
        let body = r#"{"k":"v"}"#;
        write!(s, "POST /v1/sys/wrapping/wrap HTTP/1.1\r\nHost: {host}\r\nX-Vault-Token: {root}\r\nX-Vault-Wrap-TTL: 60\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        let json: Value =
            serde_json::from_str(out.split_once("\r\n\r\n").expect("body").1).expect("json");
        json["wrap_info"]["token"]
            .as_str()
            .expect("wrap token")
            .to_owned()
    };
    let (code, v) = call(
        base,
        "POST",
        "sys/wrapping/unwrap",
        None,
        &format!(r#"{{"token":"{wrapped}"}}"#),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["k"], "v");
    let v = expect(
        "POST",
        "sys/wrapping/unwrap",
        None,
        &format!(r#"{{"token":"{wrapped}"}}"#),
        400,
    );
    assert!(errors(&v).contains("wrapping token"), "{v}");
}
