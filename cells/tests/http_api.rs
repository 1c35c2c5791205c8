//! The Vault-compatible HTTP API against an in-process node: wire format,
//! status codes, and every bad-input case of the seal lifecycle (each must
//! answer with a clear error and change nothing).

mod common;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

struct Api {
    base: String,
    http: Client,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, String, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.base));
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let text = resp.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("json body")
        };
        (status, ct, v)
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, ct, v) = self.call(Method::PUT, path, None, Some(body)).await;
        if !v.is_null() {
            assert_eq!(ct, "application/json", "exact content type on {path}");
        }
        (s, v)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::GET, path, None, None).await;
        (s, v)
    }

    async fn raw(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let resp = self
            .http
            .put(format!("{}/v1/{path}", self.base))
            .body(body)
            .send()
            .await
            .expect("send");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn errors(v: &Value) -> String {
    v["errors"]
        .as_array()
        .map(|a| format!("{a:?}"))
        .unwrap_or_default()
}

async fn setup() -> (tempfile::TempDir, sigil_cell::server::Running, Api) {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = common::start_node(dir.path()).await;
    let api = Api {
        base: running.http_url(),
        http: Client::new(),
    };
    (dir, running, api)
}

#[tokio::test]
async fn init_parameters_are_validated_and_init_happens_once() {
    let (_dir, running, api) = setup().await;
    for (body, needle) in [
        (
            json!({"secret_shares": 3, "secret_threshold": 5}),
            "secret_threshold",
        ),
        (
            json!({"secret_shares": 0, "secret_threshold": 0}),
            "secret_shares",
        ),
        (
            json!({"secret_shares": 256, "secret_threshold": 3}),
            "secret_shares",
        ),
        (
            json!({"secret_shares": 3, "secret_threshold": 1}),
            "at least 2",
        ),
        (json!({"secret_shares": "five"}), "invalid"),
        (
            json!({"secret_shares": 3, "secret_threshold": 2, "recovery_shares": 1}),
            "recovery",
        ),
    ] {
        let (s, v) = api.put("sys/init", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert!(errors(&v).contains(needle), "{body}: {v}");
        assert_eq!(
            api.get("sys/init").await.1,
            json!({"initialized": false}),
            "nothing changed"
        );
    }
    let (s, v) = api.raw("sys/init", b"{not json".to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(errors(&v).contains("JSON"));
    let (s, v) = api.raw("sys/init", b"[1,2]".to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api.raw("sys/init", vec![b' '; 33 << 20]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(!running.node.init_status());

    let (s, v) = api
        .put(
            "sys/init",
            json!({"secret_shares": 5, "secret_threshold": 3}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["keys"].as_array().expect("keys").len(), 5);
    assert_eq!(v["keys_base64"].as_array().expect("keys").len(), 5);
    assert_eq!(
        v["keys"][0].as_str().expect("hex").len(),
        66,
        "33-byte shares, hex"
    );
    assert_eq!(v["root_token"].as_str().expect("token").len(), 28);
    let (s, v) = api
        .put(
            "sys/init",
            json!({"secret_shares": 5, "secret_threshold": 3}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "init twice");
    assert!(errors(&v).contains("already initialized"));
    running.shutdown().await;
}

#[tokio::test]
async fn unseal_rejects_bad_shares_without_losing_progress() {
    let (_dir, running, api) = setup().await;
    let (s, v) = api.put("sys/unseal", json!({"key": "00"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unseal before init: {v}");
    let (_, init) = api
        .put(
            "sys/init",
            json!({"secret_shares": 5, "secret_threshold": 3}),
        )
        .await;
    let keys = common::strings(&init, "keys");
    let b64 = common::strings(&init, "keys_base64");

    let (s, v) = api.put("sys/unseal", json!({"key": keys[0]})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["progress"], 1);
    let nonce = v["nonce"].clone();
    for (body, needle) in [
        (json!({"key": "not hex or base64!"}), "hex or base64"),
        (json!({"key": "abcd"}), "wrong length"),
        (json!({"key": keys[0]}), "duplicate"),
        (json!({"key": b64[0]}), "duplicate"),
        (json!({}), "'key' must be specified"),
        (json!({"key": 42}), "invalid"),
    ] {
        let (s, v) = api.put("sys/unseal", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(errors(&v).contains(needle), "{body}: {v}");
        let (_, st) = api.get("sys/seal-status").await;
        assert_eq!(st["progress"], 1, "progress unchanged after {body}");
        assert_eq!(st["nonce"], nonce);
        assert_eq!(st["sealed"], true);
    }
    // Reset clears progress.
    let (_, v) = api.put("sys/unseal", json!({"reset": true})).await;
    assert_eq!(v["progress"], 0);

    // Well-formed shares from another initialisation: unseal fails, progress
    // resets, the node stays sealed.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = common::start_node(other_dir.path()).await;
    let other_api = Api {
        base: other.http_url(),
        http: Client::new(),
    };
    let (_, other_init) = other_api
        .put(
            "sys/init",
            json!({"secret_shares": 5, "secret_threshold": 3}),
        )
        .await;
    let foreign = common::strings(&other_init, "keys");
    api.put("sys/unseal", json!({"key": foreign[0]})).await;
    api.put("sys/unseal", json!({"key": foreign[1]})).await;
    let (s, v) = api.put("sys/unseal", json!({"key": foreign[2]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(errors(&v).contains("unseal failed"), "{v}");
    let (_, st) = api.get("sys/seal-status").await;
    assert_eq!(st["sealed"], true);
    assert_eq!(st["progress"], 0);

    // The right shares, mixing hex and base64.
    api.put("sys/unseal", json!({"key": keys[4]})).await;
    api.put("sys/unseal", json!({"key": b64[2]})).await;
    let (s, v) = api.put("sys/unseal", json!({"key": keys[1]})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["sealed"], false, "{v}");
    other.shutdown().await;
    running.shutdown().await;
}

#[tokio::test]
async fn health_codes_and_overrides_follow_vault() {
    let (_dir, running, api) = setup().await;
    let (s, v) = api.get("sys/health").await;
    assert_eq!(s.as_u16(), 501, "uninitialised");
    for field in [
        "initialized",
        "sealed",
        "standby",
        "performance_standby",
        "replication_performance_mode",
        "replication_dr_mode",
        "server_time_utc",
        "version",
        "cluster_name",
        "cluster_id",
    ] {
        assert!(v.get(field).is_some(), "health body has {field}");
    }
    assert_eq!(api.get("sys/health?uninitcode=299").await.0.as_u16(), 299);
    let (_, init) = api
        .put(
            "sys/init",
            json!({"secret_shares": 1, "secret_threshold": 1}),
        )
        .await;
    let (s, v) = api.get("sys/health").await;
    assert_eq!(s.as_u16(), 503, "sealed");
    assert_eq!(v["sealed"], true);
    assert_eq!(api.get("sys/health?sealedcode=200").await.0.as_u16(), 200);
    assert_eq!(api.get("sys/health?sealedcode=abc").await.0.as_u16(), 400);
    let head = api
        .http
        .head(format!("{}/v1/sys/health", api.base))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status().as_u16(), 503);
    assert!(
        head.text().await.expect("body").is_empty(),
        "HEAD has no body"
    );
    api.put("sys/unseal", json!({"key": init["keys"][0]})).await;
    let (s, v) = api.get("sys/health").await;
    assert_eq!(s.as_u16(), 200, "active");
    assert_eq!(v["cluster_id"].as_str().map(str::len), Some(36));
    assert_eq!(api.get("sys/health?activecode=218").await.0.as_u16(), 218);
    running.shutdown().await;
}

#[tokio::test]
async fn privileged_calls_need_the_root_token() {
    let (_dir, running, api) = setup().await;
    let (_, init) = api
        .put(
            "sys/init",
            json!({"secret_shares": 1, "secret_threshold": 1}),
        )
        .await;
    let root = init["root_token"].as_str().expect("token").to_owned();
    // Sealed: 503 before the token is even looked at.
    let (s, _, v) = api
        .call(Method::GET, "sys/key-status", Some(&root), None)
        .await;
    assert_eq!(s.as_u16(), 503, "{v}");
    assert!(errors(&v).contains("sealed"));
    api.put("sys/unseal", json!({"key": init["keys"][0]})).await;

    for token in [None, Some("hvs.wrongwrongwrongwrongwron")] {
        let (s, _, v) = api.call(Method::PUT, "sys/seal", token, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v, json!({"errors": ["permission denied"]}));
        let (s, _, _) = api.call(Method::PUT, "sys/rotate", token, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        api.get("sys/seal-status").await.1["sealed"],
        false,
        "still unsealed"
    );

    // Bearer works too; rotate answers 204 with an empty body.
    let resp = api
        .http
        .put(format!("{}/v1/sys/rotate", api.base))
        .bearer_auth(&root)
        .send()
        .await
        .expect("rotate");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.text().await.expect("body").is_empty());
    let (s, ct, v) = api
        .call(Method::GET, "sys/key-status", Some(&root), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct, "application/json");
    assert_eq!(v["data"]["term"], 2);
    assert_eq!(v["term"], 2, "legacy top-level copy");
    for field in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(v.get(field).is_some(), "envelope has {field}");
    }

    let (s, _, v) = api.call(Method::PUT, "sys/seal", Some(&root), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(api.get("sys/seal-status").await.1["sealed"], true);
    running.shutdown().await;
}

#[tokio::test]
async fn sealed_nodes_answer_503_beyond_init_unseal_and_status() {
    let (_dir, running, api) = setup().await;
    let (_, init) = api
        .put(
            "sys/init",
            json!({"secret_shares": 1, "secret_threshold": 1}),
        )
        .await;
    let root = init["root_token"].as_str().expect("token").to_owned();
    for (method, path) in [
        (Method::GET, "sys/nope"),
        (Method::GET, "sys/leader"),
        (Method::GET, "sys/key-status"),
        (Method::PUT, "sys/rotate"),
        (Method::PUT, "sys/seal"),
        (Method::GET, "sys/rekey/init"),
        (Method::PUT, "sys/rekey/init"),
        (Method::DELETE, "sys/rekey/init"),
        (Method::PUT, "sys/rekey/update"),
        (Method::GET, "sys/generate-root/attempt"),
        (Method::PUT, "sys/generate-root/attempt"),
        (Method::PUT, "sys/generate-root/update"),
        (Method::GET, "secret/data/app"),
    ] {
        let body = (method == Method::PUT)
            .then(|| json!({"secret_shares": 1, "secret_threshold": 1, "key": "00", "nonce": "n"}));
        let (s, _, v) = api.call(method.clone(), path, Some(&root), body).await;
        assert_eq!(s.as_u16(), 503, "{method} {path}: {v}");
        assert_eq!(v, json!({"errors": ["Vault is sealed"]}), "{method} {path}");
    }
    for path in ["sys/seal-status", "sys/init"] {
        assert_eq!(api.get(path).await.0, StatusCode::OK, "{path} while sealed");
    }
    assert_eq!(api.get("sys/health").await.0.as_u16(), 503);
    running.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let (_dir, running, api) = setup().await;
    let (_, init) = api
        .put(
            "sys/init",
            json!({"secret_shares": 1, "secret_threshold": 1}),
        )
        .await;
    api.put("sys/unseal", json!({"key": init["keys"][0]})).await;
    let root = init["root_token"].as_str().expect("root token");
    // Without a token nothing is revealed, not even whether a path exists.
    let (s, _) = api.get("sys/nope").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, v) = api.call(Method::GET, "sys/nope", Some(root), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v, json!({"errors": []}));
    let (s, _, v) = api.call(Method::GET, "nomount/x", Some(root), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _, v) = api
        .call(Method::PATCH, "sys/mounts", Some(root), None)
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    let (s, _, v) = api
        .call(Method::DELETE, "sys/seal-status", None, None)
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    let (s, _, _) = api.call(Method::GET, "sys/unseal", None, None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    running.shutdown().await;
}

#[tokio::test]
async fn rekey_replaces_shares_and_generate_root_mints_a_working_token() {
    let (_dir, running, api) = setup().await;
    let (_, init) = api
        .put(
            "sys/init",
            json!({"secret_shares": 3, "secret_threshold": 2}),
        )
        .await;
    let keys: Vec<Value> = init["keys"].as_array().expect("keys").clone();
    for k in &keys[..2] {
        api.put("sys/unseal", json!({"key": k})).await;
    }
    let (s, v) = api
        .put(
            "sys/rekey/init",
            json!({"secret_shares": 4, "secret_threshold": 300}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api
        .put(
            "sys/rekey/init",
            json!({"secret_shares": 4, "secret_threshold": 3}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let nonce = v["nonce"].as_str().expect("nonce").to_owned();
    assert_eq!(v["required"], 2);
    let (s, v) = api
        .put(
            "sys/rekey/update",
            json!({"nonce": "bogus", "key": keys[0]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (_, v) = api
        .put("sys/rekey/update", json!({"nonce": nonce, "key": keys[0]}))
        .await;
    assert_eq!(v["progress"], 1);
    let (s, v) = api
        .put("sys/rekey/update", json!({"nonce": nonce, "key": keys[2]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["complete"], true);
    let new_keys: Vec<Value> = v["keys"].as_array().expect("keys").clone();
    assert_eq!(new_keys.len(), 4);

    // Old shares no longer unseal; three new ones do.
    let root = init["root_token"].as_str().expect("token");
    api.call(Method::PUT, "sys/seal", Some(root), None).await;
    // The new threshold is 3: three old shares make a quorum that fails.
    let mut last = (StatusCode::OK, Value::Null);
    for k in &keys[..3] {
        last = api.put("sys/unseal", json!({"key": k})).await;
    }
    assert_eq!(
        last.0,
        StatusCode::BAD_REQUEST,
        "old shares rejected: {}",
        last.1
    );
    assert_eq!(
        api.get("sys/seal-status").await.1["sealed"],
        true,
        "old shares rejected"
    );
    assert_eq!(api.get("sys/seal-status").await.1["t"], 3);
    for k in &new_keys[1..4] {
        api.put("sys/unseal", json!({"key": k})).await;
    }
    assert_eq!(api.get("sys/seal-status").await.1["sealed"], false);

    // generate-root: bad OTP length, then a full round.
    let (s, _) = api
        .put("sys/generate-root/attempt", json!({"otp": "short"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let otp = "abcdefghijklmnopqrstuvwxyz01";
    let (s, v) = api
        .put("sys/generate-root/attempt", json!({"otp": otp}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["otp_length"], 28);
    let nonce = v["nonce"].as_str().expect("nonce").to_owned();
    let mut last = Value::Null;
    for k in &new_keys[..3] {
        last = api
            .put(
                "sys/generate-root/update",
                json!({"nonce": nonce, "key": k}),
            )
            .await
            .1;
    }
    assert_eq!(last["complete"], true, "{last}");
    let token =
        sigil_cell::seal::decode_with_otp(last["encoded_token"].as_str().expect("enc"), otp)
            .expect("decode");
    assert!(token.starts_with("hvs."));
    assert_ne!(token, root);
    let (s, _, _) = api
        .call(Method::GET, "sys/key-status", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "the generated root token works");
    running.shutdown().await;
}
