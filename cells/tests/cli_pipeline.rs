//! The Vault-style client commands against a real `sigil server`: kv (v1
//! and v2), token, policy, secrets, auth, audit and the generic
//! read/write/list/delete, in table, JSON and `-field` output; exit codes
//! (0 ok, 1 error, 2 absent or sealed), one-line errors, and bad input
//! rejected before anything is sent.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

/// Runs `sigil args...` with `env`, feeding `stdin`.
fn sigil_in(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
    cmd.args(args)
        .env_remove("SIGIL_TOKEN")
        .env_remove("VAULT_TOKEN")
        .env_remove("SIGIL_ADDR")
        .env_remove("VAULT_ADDR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run sigil");
    {
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait sigil")
}

fn sigil(args: &[&str], env: &[(&str, &str)]) -> Output {
    sigil_in(args, env, "")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(o: Output) -> String {
    assert_eq!(
        code(&o),
        0,
        "stdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts success and parses stdout as JSON.
#[track_caller]
fn ok_json(o: Output) -> Value {
    let text = ok(o);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Asserts exit `want` and a single `Error: ...` line containing `needle`.
#[track_caller]
fn fails(o: Output, want: i32, needle: &str) {
    let err = stderr(&o);
    assert_eq!(code(&o), want, "stdout:\n{}\nstderr:\n{err}", stdout(&o));
    assert_eq!(err.lines().count(), 1, "one-line error: {err:?}");
    assert!(err.starts_with("Error: "), "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
}

/// Asserts exit 2 with Vault's "No value found at ..." line.
#[track_caller]
fn absent(o: Output, path: &str) {
    assert_eq!(
        code(&o),
        2,
        "stdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(stderr(&o).trim(), format!("No value found at {path}"));
}

/// A fresh, initialised and unsealed node; its URL and root token.
fn unsealed_server(dir: &std::path::Path) -> (common::ServerProcess, String) {
    let config = common::write_config(dir, "");
    let server = common::ServerProcess::start(&config, &[]);
    let (status, init) = common::put_json(
        &server.http_url,
        "sys/init",
        r#"{"secret_shares": 1, "secret_threshold": 1}"#,
    );
    assert_eq!(status, 200, "init: {init}");
    let key = common::strings(&init, "keys_base64").remove(0);
    let root = init["root_token"].as_str().expect("root").to_owned();
    let (status, st) = common::put_json(
        &server.http_url,
        "sys/unseal",
        &json!({ "key": key }).to_string(),
    );
    assert_eq!((status, &st["sealed"]), (200, &json!(false)), "{st}");
    (server, root)
}

#[test]
fn client_commands_drive_the_pipeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = unsealed_server(dir.path());
    let env = [
        ("SIGIL_ADDR", server.http_url.as_str()),
        ("SIGIL_TOKEN", root.as_str()),
    ];

    // secrets enable: a KV v2 mount at secret/.
    let out = ok(sigil(
        &["secrets", "enable", "-path=secret", "-version=2", "kv"],
        &env,
    ));
    assert_eq!(
        out.trim(),
        "Success! Enabled the kv secrets engine at: secret/"
    );
    let mounts = ok_json(sigil(&["secrets", "list", "-format=json"], &env));
    assert_eq!(mounts["secret/"]["type"], "kv");
    assert_eq!(mounts["secret/"]["options"]["version"], "2");
    let table = ok(sigil(&["secrets", "list"], &env));
    assert!(table.starts_with("Path "), "{table}");
    assert!(table.lines().any(|l| l.starts_with("secret/ ")), "{table}");
    assert!(ok(sigil(&["secrets", "list", "-detailed"], &env)).contains("Default TTL"));

    kv_v2(&env);
    tokens(&env, dir.path());
    generic_and_kv_v1(&env);
    mounts_auth_audit(&env, dir.path());
    bad_input(&env, &server.http_url);
    wrapping(&env);

    // Sealed: the same read exits 2 with the server's error on one line.
    ok(sigil(&["operator", "seal"], &env));
    fails(sigil(&["kv", "get", "secret/app/db"], &env), 2, "HTTP 503");
}

fn kv_v2(env: &[(&str, &str)]) {
    // put: the Secret Path and Metadata sections.
    let out = ok(sigil(
        &["kv", "put", "secret/app/db", "user=app", "password=hunter2"],
        env,
    ));
    assert!(out.contains("Secret Path"), "{out}");
    assert!(out.contains("secret/data/app/db"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("version ") && l.ends_with(" 1")),
        "{out}"
    );

    // get: table, JSON (the whole answer), -field (raw, no newline when piped).
    let out = ok(sigil(&["kv", "get", "secret/app/db"], env));
    assert!(out.contains("Metadata") && out.contains("Data"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("password ") && l.ends_with(" hunter2")),
        "{out}"
    );
    let v = ok_json(sigil(&["kv", "get", "-format=json", "secret/app/db"], env));
    assert_eq!(v["data"]["data"]["password"], "hunter2");
    assert_eq!(v["data"]["metadata"]["version"], 1);
    assert!(v.get("request_id").is_some(), "the full answer: {v}");
    assert_eq!(
        ok(sigil(
            &["kv", "get", "-field=password", "secret/app/db"],
            env
        )),
        "hunter2"
    );
    assert_eq!(
        ok(sigil(
            &["kv", "get", "-mount=secret", "-field=user", "app/db"],
            env
        )),
        "app"
    );
    fails(
        sigil(&["kv", "get", "-field=nope", "secret/app/db"], env),
        1,
        "field \"nope\" not present",
    );

    // put with cas, a value from stdin; a stale cas is refused.
    let out = sigil_in(
        &[
            "kv",
            "put",
            "-cas=1",
            "secret/app/db",
            "user=app",
            "password=-",
        ],
        env,
        "from-stdin",
    );
    ok(out);
    assert_eq!(
        ok(sigil(
            &["kv", "get", "-field=password", "secret/app/db"],
            env
        )),
        "from-stdin"
    );
    fails(
        sigil(&["kv", "put", "-cas=1", "secret/app/db", "a=b"], env),
        1,
        "check-and-set",
    );
    // A JSON object on stdin.
    ok(sigil_in(
        &["kv", "put", "secret/app/json", "-"],
        env,
        r#"{"nested": {"a": 1}, "list": [1, 2]}"#,
    ));
    let v = ok_json(sigil(
        &["kv", "get", "-format=json", "secret/app/json"],
        env,
    ));
    assert_eq!(v["data"]["data"]["nested"]["a"], 1);

    // patch: merge patch and read-then-write keep the other keys.
    ok(sigil(
        &["kv", "patch", "secret/app/db", "password=patched"],
        env,
    ));
    assert_eq!(
        ok(sigil(
            &["kv", "get", "-field=password", "secret/app/db"],
            env
        )),
        "patched"
    );
    assert_eq!(
        ok(sigil(&["kv", "get", "-field=user", "secret/app/db"], env)),
        "app"
    );
    ok(sigil(
        &["kv", "patch", "-method=rw", "secret/app/db", "extra=1"],
        env,
    ));
    let v = ok_json(sigil(&["kv", "get", "-format=json", "secret/app/db"], env));
    assert_eq!(
        v["data"]["data"],
        json!({ "user": "app", "password": "patched", "extra": "1" })
    );
    let version = v["data"]["metadata"]["version"].as_u64().expect("version");
    assert_eq!(version, 4);
    absent(
        sigil(&["kv", "patch", "secret/app/none", "a=1"], env),
        "secret/data/app/none",
    );

    // Older versions stay readable.
    assert_eq!(
        ok(sigil(
            &[
                "kv",
                "get",
                "-version=1",
                "-field=password",
                "secret/app/db"
            ],
            env
        )),
        "hunter2"
    );

    // list.
    let out = ok(sigil(&["kv", "list", "secret/app"], env));
    assert_eq!(out, "Keys\n----\ndb\njson\n");
    let keys = ok_json(sigil(
        &["kv", "list", "-format=json", "-mount=secret", "app"],
        env,
    ));
    assert_eq!(keys, json!(["db", "json"]));
    absent(
        sigil(&["kv", "list", "secret/nothing"], env),
        "secret/metadata/nothing",
    );

    // delete / undelete / destroy.
    let out = ok(sigil(&["kv", "delete", "secret/app/db"], env));
    assert_eq!(
        out.trim(),
        "Success! Data deleted (if it existed) at: secret/data/app/db"
    );
    absent(
        sigil(&["kv", "get", "secret/app/db"], env),
        "secret/data/app/db",
    );
    let v4 = format!("-versions={version}");
    ok(sigil(&["kv", "undelete", &v4, "secret/app/db"], env));
    assert_eq!(
        ok(sigil(&["kv", "get", "-field=extra", "secret/app/db"], env)),
        "1"
    );
    ok(sigil(
        &["kv", "delete", "-versions=1,2", "secret/app/db"],
        env,
    ));
    absent(
        sigil(&["kv", "get", "-version=1", "secret/app/db"], env),
        "secret/data/app/db",
    );
    ok(sigil(
        &["kv", "destroy", "-versions=3", "secret/app/db"],
        env,
    ));
    let meta = ok_json(sigil(
        &["kv", "metadata", "get", "-format=json", "secret/app/db"],
        env,
    ));
    assert_eq!(meta["data"]["versions"]["3"]["destroyed"], true);
    assert_ne!(meta["data"]["versions"]["1"]["deletion_time"], "");

    // metadata put / get / delete.
    ok(sigil(
        &[
            "kv",
            "metadata",
            "put",
            "-max-versions=5",
            "-cas-required",
            "-delete-version-after=1h",
            "-custom-metadata=owner=ann",
            "-custom-metadata=team=ops",
            "secret/app/db",
        ],
        env,
    ));
    let meta = ok_json(sigil(
        &["kv", "metadata", "get", "-format=json", "secret/app/db"],
        env,
    ));
    assert_eq!(meta["data"]["max_versions"], 5);
    assert_eq!(meta["data"]["cas_required"], true);
    assert_eq!(
        meta["data"]["custom_metadata"],
        json!({ "owner": "ann", "team": "ops" })
    );
    let table = ok(sigil(&["kv", "metadata", "get", "secret/app/db"], env));
    assert!(
        table.contains("Metadata Path") && table.contains("Version 4"),
        "{table}"
    );
    // cas is now required.
    fails(
        sigil(&["kv", "put", "secret/app/db", "a=b"], env),
        1,
        "HTTP 400",
    );
    ok(sigil(&["kv", "metadata", "delete", "secret/app/db"], env));
    absent(
        sigil(&["kv", "get", "secret/app/db"], env),
        "secret/data/app/db",
    );
    absent(
        sigil(&["kv", "metadata", "get", "secret/app/db"], env),
        "secret/metadata/app/db",
    );
}

fn tokens(env: &[(&str, &str)], dir: &std::path::Path) {
    // policy write / read / list.
    let file = dir.join("dev.hcl");
    let policy = "path \"secret/data/dev/*\" {\n  capabilities = [\"read\", \"list\"]\n}\n";
    std::fs::write(&file, policy).expect("write policy");
    let out = ok(sigil(
        &["policy", "write", "dev", file.to_str().expect("utf8")],
        env,
    ));
    assert_eq!(out.trim(), "Success! Uploaded policy: dev");
    ok(sigil_in(&["policy", "write", "ops", "-"], env, policy));
    assert_eq!(
        ok(sigil(&["policy", "read", "dev"], env)).trim(),
        policy.trim()
    );
    let v = ok_json(sigil(&["policy", "read", "-format=json", "dev"], env));
    assert_eq!(v, json!({ "name": "dev", "policy": policy }));
    let names = ok(sigil(&["policy", "list"], env));
    assert!(
        names.lines().any(|l| l == "dev") && names.lines().any(|l| l == "ops"),
        "{names}"
    );

    // token create: table, JSON, -field.
    let out = ok(sigil(&["token", "create", "-policy=dev", "-ttl=1h"], env));
    for row in [
        "token ",
        "token_accessor ",
        "token_duration ",
        "token_policies ",
        "policies ",
    ] {
        assert!(out.lines().any(|l| l.starts_with(row)), "{row}: {out}");
    }
    assert!(out.contains("[\"default\" \"dev\"]"), "{out}");
    let created = ok_json(sigil(
        &[
            "token",
            "create",
            "-policy=dev",
            "-ttl=1h",
            "-explicit-max-ttl=2h",
            "-display-name=ci",
            "-metadata=user=ann",
            "-format=json",
        ],
        env,
    ));
    let token = created["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let accessor = created["auth"]["accessor"]
        .as_str()
        .expect("accessor")
        .to_owned();
    assert_eq!(created["auth"]["metadata"]["user"], "ann");
    let orphan = ok(sigil(
        &[
            "token",
            "create",
            "-orphan",
            "-no-default-policy",
            "-policy=dev",
            "-field=token",
        ],
        env,
    ));
    assert!(!orphan.is_empty() && !orphan.ends_with('\n'), "{orphan:?}");

    // lookup by token, accessor and self.
    let v = ok_json(sigil(&["token", "lookup", "-format=json", &token], env));
    assert_eq!(v["data"]["display_name"], "token-ci");
    assert_eq!(v["data"]["accessor"], accessor.as_str());
    let v = ok_json(sigil(
        &["token", "lookup", "-format=json", "-accessor", &accessor],
        env,
    ));
    assert_eq!(v["data"]["accessor"], accessor.as_str());
    let own = [env[0], ("SIGIL_TOKEN", token.as_str())];
    let table = ok(sigil(&["token", "lookup"], &own));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("policies ") && l.contains("dev")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ttl ") && (l.ends_with("1h") || l.contains('m'))),
        "{table}"
    );

    // renew.
    let out = ok(sigil(&["token", "renew", "-increment=30m", &token], env));
    assert!(
        out.lines().any(|l| l.starts_with("token_duration ")),
        "{out}"
    );
    ok(sigil(&["token", "renew", "-accessor", &accessor], env));
    ok(sigil(&["token", "renew"], &own));

    // capabilities.
    assert_eq!(
        ok(sigil(
            &["token", "capabilities", &token, "secret/data/dev/x"],
            env
        ))
        .trim(),
        "list, read"
    );
    assert_eq!(
        ok(sigil(&["token", "capabilities", "secret/data/other"], &own)).trim(),
        "deny"
    );
    assert_eq!(
        ok(sigil(&["token", "capabilities", "sys/mounts"], env)).trim(),
        "root"
    );
    let caps = ok(sigil(
        &[
            "token",
            "capabilities",
            &token,
            "secret/data/dev/x",
            "secret/data/other",
        ],
        env,
    ));
    assert_eq!(
        caps,
        "secret/data/dev/x: list, read\nsecret/data/other: deny\n"
    );

    // revoke; the token is gone.
    let out = ok(sigil(&["token", "revoke", &token], env));
    assert_eq!(out.trim(), "Success! Revoked token (if it existed)");
    fails(sigil(&["token", "lookup"], &own), 1, "permission denied");
    let child = ok(sigil(&["token", "create", "-field=token"], env));
    let child_env = [env[0], ("SIGIL_TOKEN", child.as_str())];
    ok(sigil(&["token", "revoke", "-self"], &child_env));
    fails(
        sigil(&["token", "lookup"], &child_env),
        1,
        "permission denied",
    );

    // policy delete; read is then absent (exit 2).
    assert_eq!(
        ok(sigil(&["policy", "delete", "ops"], env)).trim(),
        "Success! Deleted policy: ops"
    );
    let out = sigil(&["policy", "read", "ops"], env);
    assert_eq!(code(&out), 2);
    assert_eq!(stderr(&out).trim(), "No policy named: ops");
}

fn generic_and_kv_v1(env: &[(&str, &str)]) {
    ok(sigil(&["secrets", "enable", "-path=kv1", "kv"], env));
    let out = ok(sigil(&["write", "kv1/foo", "a=1", "b=two"], env));
    assert_eq!(out.trim(), "Success! Data written to: kv1/foo");
    assert_eq!(ok(sigil(&["read", "-field=b", "kv1/foo"], env)), "two");
    let out = ok(sigil(&["read", "kv1/foo"], env));
    assert!(out.starts_with("Key "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("a ") && l.ends_with(" 1")),
        "{out}"
    );
    let v = ok_json(sigil(&["read", "-format=json", "kv1/foo"], env));
    assert_eq!(v["data"], json!({ "a": "1", "b": "two" }));
    assert_eq!(ok(sigil(&["list", "kv1"], env)), "Keys\n----\nfoo\n");
    // KV version 1 has no patch (as in Vault): one line, exit 1, no change.
    let out = sigil(&["patch", "kv1/foo", "b=three"], env);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), "Error: unsupported operation (HTTP 405)");
    ok(sigil(&["write", "kv1/foo", "a=1", "b=three"], env));
    assert_eq!(ok(sigil(&["read", "-field=b", "kv1/foo"], env)), "three");
    let out = ok(sigil(&["delete", "kv1/foo"], env));
    assert_eq!(
        out.trim(),
        "Success! Data deleted (if it existed) at: kv1/foo"
    );
    absent(sigil(&["read", "kv1/foo"], env), "kv1/foo");
    absent(sigil(&["list", "kv1/"], env), "kv1");

    // kv on a v1 mount: plain paths; v2-only commands refuse.
    let out = ok(sigil(&["kv", "put", "kv1/bar", "x=y"], env));
    assert_eq!(out.trim(), "Success! Data written to: kv1/bar");
    assert_eq!(ok(sigil(&["kv", "get", "-field=x", "kv1/bar"], env)), "y");
    assert_eq!(ok(sigil(&["kv", "list", "kv1"], env)), "Keys\n----\nbar\n");
    fails(
        sigil(&["kv", "undelete", "-versions=1", "kv1/bar"], env),
        1,
        "version 2",
    );
    fails(
        sigil(&["kv", "patch", "kv1/bar", "x=z"], env),
        1,
        "version 2",
    );
}

fn mounts_auth_audit(env: &[(&str, &str)], dir: &std::path::Path) {
    // tune, move, disable.
    let out = ok(sigil(
        &[
            "secrets",
            "tune",
            "-max-lease-ttl=2h",
            "-description=tuned",
            "kv1",
        ],
        env,
    ));
    assert_eq!(out.trim(), "Success! Tuned the secrets engine at: kv1/");
    let mounts = ok_json(sigil(&["secrets", "list", "-format=json"], env));
    assert_eq!(mounts["kv1/"]["config"]["max_lease_ttl"], 7200);
    assert_eq!(mounts["kv1/"]["description"], "tuned");
    ok(sigil(&["secrets", "move", "kv1", "kv2"], env));
    assert_eq!(ok(sigil(&["read", "-field=x", "kv2/bar"], env)), "y");
    let out = ok(sigil(&["secrets", "disable", "kv2"], env));
    assert_eq!(
        out.trim(),
        "Success! Disabled the secrets engine (if it existed) at: kv2/"
    );
    let mounts = ok_json(sigil(&["secrets", "list", "-format=json"], env));
    assert!(
        mounts.get("kv2/").is_none() && mounts.get("kv1/").is_none(),
        "{mounts}"
    );

    // auth enable / list / disable. An unknown type, a secrets engine
    // mounted as an auth method, and disabling the token method all fail.
    fails(
        sigil(&["auth", "enable", "-path=nope", "no-such-method"], env),
        1,
        "plugin not found in the catalog: no-such-method",
    );
    fails(
        sigil(&["auth", "enable", "-path=kvauth", "kv"], env),
        1,
        "plugin not found in the catalog: kv",
    );
    let out = ok(sigil(&["auth", "enable", "-path=ar", "approle"], env));
    assert_eq!(out.trim(), "Success! Enabled approle auth method at: ar/");
    let auths = ok_json(sigil(&["auth", "list", "-format=json"], env));
    assert_eq!(auths["token/"]["type"], "token", "{auths}");
    assert_eq!(auths["ar/"]["type"], "approle", "{auths}");
    assert!(
        auths.get("nope/").is_none() && auths.get("kvauth/").is_none(),
        "{auths}"
    );
    let table = ok(sigil(&["auth", "list"], env));
    assert!(table.lines().any(|l| l.starts_with("token/ ")), "{table}");
    ok(sigil(&["auth", "disable", "ar"], env));
    let auths = ok_json(sigil(&["auth", "list", "-format=json"], env));
    assert!(auths.get("ar/").is_none(), "{auths}");
    fails(
        sigil(&["auth", "disable", "token"], env),
        1,
        "cannot unmount",
    );

    // audit enable / list / disable.
    let log = dir.join("audit.log");
    let file_path = format!("file_path={}", log.display());
    let out = ok(sigil(
        &["audit", "enable", "-description=main", "file", &file_path],
        env,
    ));
    assert_eq!(
        out.trim(),
        "Success! Enabled the file audit device at: file/"
    );
    let table = ok(sigil(&["audit", "list", "-detailed"], env));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("file/ ") && l.contains("main")),
        "{table}"
    );
    let devices = ok_json(sigil(&["audit", "list", "-format=json"], env));
    assert_eq!(
        devices["file/"]["options"]["file_path"],
        log.display().to_string()
    );
    ok(sigil(&["secrets", "list"], env));
    assert!(log.exists(), "the device logs requests");
    ok(sigil(&["audit", "disable", "file"], env));
    let out = sigil(&["audit", "list"], env);
    assert_eq!(code(&out), 2);
    assert_eq!(stderr(&out).trim(), "No audit devices are enabled.");
}

/// Bad input fails on one line with exit 1 and sends nothing: pointed at a
/// dead address, the error is still the validation one.
fn bad_input(env: &[(&str, &str)], url: &str) {
    let dead = [("SIGIL_ADDR", "http://127.0.0.1:1"), env[1]];
    for (args, needle) in [
        (
            &["kv", "put", "secret/x", "novalue"][..],
            "invalid key/value pair \"novalue\"",
        ),
        (
            &["kv", "put", "secret/x", "a=@/nonexistent/file"][..],
            "cannot read file",
        ),
        (
            &["write", "secret/data/x", "a=1", "b=-", "c=-"][..],
            "only be read once",
        ),
        (
            &["write", "secret/data/x"][..],
            "must supply data or use -force",
        ),
        (
            &["token", "create", "-ttl=forever"][..],
            "invalid -ttl value",
        ),
        (
            &["token", "create", "-metadata=nokey"][..],
            "invalid -metadata value",
        ),
        (&["kv", "undelete", "secret/x"][..], "no versions given"),
        (
            &[
                "kv",
                "metadata",
                "put",
                "-delete-version-after=later",
                "secret/x",
            ][..],
            "-delete-version-after",
        ),
        (
            &["kv", "metadata", "put", "-custom-metadata=oops", "secret/x"][..],
            "-custom-metadata",
        ),
        (
            &["read", "-wrap-ttl=soon", "secret/data/x"][..],
            "invalid -wrap-ttl value",
        ),
        (
            &["secrets", "enable", "-default-lease-ttl=long", "kv"][..],
            "-default-lease-ttl",
        ),
        (&["secrets", "tune", "secret"][..], "nothing to tune"),
        (
            &["policy", "write", "p", "/nonexistent/p.hcl"][..],
            "cannot read file",
        ),
        (&["token", "revoke"][..], "give a token to revoke"),
        (
            &["audit", "enable", "file", "nonsense"][..],
            "invalid key/value pair",
        ),
    ] {
        fails(sigil(args, &dead), 1, needle);
    }
    // And nothing changed on the real node.
    let live = [("SIGIL_ADDR", url), env[1]];
    absent(sigil(&["kv", "get", "secret/x"], &live), "secret/data/x");
    let mounts = ok_json(sigil(&["secrets", "list", "-format=json"], &live));
    assert!(mounts.get("kv/").is_none(), "{mounts}");
    let out = sigil(&["policy", "read", "p"], &live);
    assert_eq!(code(&out), 2);
    assert_eq!(stderr(&out).trim(), "No policy named: p");
    // Server errors are one line too.
    let no_token = [("SIGIL_ADDR", url)];
    fails(
        sigil(&["kv", "get", "secret/x"], &no_token),
        1,
        "permission denied",
    );
    fails(
        sigil(&["secrets", "enable", "nonsense-engine"], &live),
        1,
        "HTTP 400",
    );
}

fn wrapping(env: &[(&str, &str)]) {
    // Long enough that no random token or accessor in the output contains it.
    ok(sigil(
        &["kv", "put", "secret/wrapped", "pw=wrapped-secret-s3"],
        env,
    ));
    let out = ok(sigil(&["kv", "get", "-wrap-ttl=5m", "secret/wrapped"], env));
    for row in [
        "wrapping_token:",
        "wrapping_accessor:",
        "wrapping_token_ttl:",
        "wrapping_token_creation_time:",
        "wrapping_token_creation_path:",
    ] {
        assert!(out.lines().any(|l| l.starts_with(row)), "{row}: {out}");
    }
    assert!(out.contains("5m"), "{out}");
    assert!(
        !out.contains("wrapped-secret-s3"),
        "the secret stays wrapped: {out}"
    );
    let wrap = ok(sigil(
        &[
            "kv",
            "get",
            "-wrap-ttl=300",
            "-field=wrapping_token",
            "secret/wrapped",
        ],
        env,
    ));
    let v = ok_json(sigil(
        &[
            "write",
            "-format=json",
            "sys/wrapping/unwrap",
            &format!("token={wrap}"),
        ],
        env,
    ));
    assert_eq!(v["data"]["data"]["pw"], "wrapped-secret-s3");
    let v = ok_json(sigil(
        &["token", "create", "-wrap-ttl=1m", "-format=json"],
        env,
    ));
    assert_eq!(v["wrap_info"]["creation_path"], "auth/token/create");
}
