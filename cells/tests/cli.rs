//! The `sigil` binary as operators use it: exit codes (0 ok, 1 error,
//! 2 sealed), one-line errors, `--format json`, Vault-style flags, the
//! `SIGIL_*`/`VAULT_*` environment, `sigil dev`, config errors, and the
//! process hardening of a running server.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

fn sigil(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
    cmd.args(args)
        .env_remove("SIGIL_TOKEN")
        .env_remove("VAULT_TOKEN")
        .env_remove("SIGIL_ADDR")
        .env_remove("VAULT_ADDR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sigil")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn operator_commands_drive_a_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), "");
    let server = common::ServerProcess::start(&config, &[]);
    let addr = [("SIGIL_ADDR", server.http_url.as_str())];

    let out = sigil(
        &[
            "operator",
            "init",
            "-key-shares",
            "3",
            "-key-threshold",
            "2",
            "--format",
            "json",
        ],
        &addr,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let init: Value = serde_json::from_slice(&out.stdout).expect("json");
    let keys = common::strings(&init, "keys_base64");
    let root = init["root_token"].as_str().expect("root").to_owned();
    assert_eq!(keys.len(), 3);

    let out = sigil(&["status"], &addr);
    assert_eq!(code(&out), 2, "sealed → exit 2");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Sealed"));

    let out = sigil(&["operator", "unseal", "not-a-key"], &addr);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one-line error: {err:?}");
    assert!(
        err.starts_with("Error: ") && err.contains("HTTP 400"),
        "{err}"
    );

    assert_eq!(
        code(&sigil(&["operator", "unseal", &keys[0]], &addr)),
        2,
        "still sealed"
    );
    // The key may also come on stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["operator", "unseal"])
        .env("SIGIL_ADDR", &server.http_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{}", keys[2]).expect("write key");
    }
    assert_eq!(
        child.wait().expect("wait").code(),
        Some(0),
        "unsealed → exit 0"
    );

    let out = sigil(&["status", "--format", "json"], &addr);
    assert_eq!(code(&out), 0);
    let st: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(st["sealed"], false);

    // No token: one-line permission error, exit 1, nothing changes.
    let out = sigil(&["operator", "seal"], &addr);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    assert_eq!(code(&sigil(&["status"], &addr)), 0);

    // VAULT_ADDR / VAULT_TOKEN are the fallbacks.
    let vault_env = [
        ("VAULT_ADDR", server.http_url.as_str()),
        ("VAULT_TOKEN", root.as_str()),
    ];
    let out = sigil(&["operator", "rotate"], &vault_env);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = sigil(&["operator", "key-status", "--format", "json"], &vault_env);
    let ks: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(ks["term"], 2);

    // generate-root end to end, decoded by the CLI.
    let out = sigil(
        &["operator", "generate-root", "-init", "--format", "json"],
        &addr,
    );
    let attempt: Value = serde_json::from_slice(&out.stdout).expect("json");
    let (nonce, otp) = (
        attempt["nonce"].as_str().expect("nonce"),
        attempt["otp"].as_str().expect("otp"),
    );
    assert_eq!(otp.len(), 28);
    sigil(
        &["operator", "generate-root", "-nonce", nonce, &keys[0]],
        &addr,
    );
    let out = sigil(
        &[
            "operator",
            "generate-root",
            "-nonce",
            nonce,
            &keys[1],
            "--format",
            "json",
        ],
        &addr,
    );
    let done: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(done["complete"], true);
    let out = sigil(
        &[
            "operator",
            "generate-root",
            "-decode",
            done["encoded_token"].as_str().expect("enc"),
            "-otp",
            otp,
        ],
        &[],
    );
    let new_root = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(new_root.starts_with("hvs.") && new_root != root);

    let with_token = [
        ("SIGIL_ADDR", server.http_url.as_str()),
        ("SIGIL_TOKEN", new_root.as_str()),
    ];
    assert_eq!(code(&sigil(&["operator", "seal"], &with_token)), 0);
    assert_eq!(code(&sigil(&["status"], &addr)), 2);

    // An unreachable server is exit 1 with a one-line message.
    let out = sigil(&["status"], &[("SIGIL_ADDR", "http://127.0.0.1:1")]);
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn config_errors_name_the_key_and_exit_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "node_id = \"n\"\ndata_dir = \"/tmp/x\"\n[listener]\nhttp_addr = \"0.0.0.0:8200\"\n",
    )
    .expect("write");
    let out = sigil(&["server", "--config", path.to_str().expect("utf8")], &[]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("listener.http_addr"),
        "{}",
        stderr(&out)
    );
    let out = sigil(&["server", "--config", "/nonexistent/sigil.toml"], &[]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("/nonexistent/sigil.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dev_node_answers_as_unsealed_with_the_chosen_root_token() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args([
            "dev",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--root-token",
            "my-root",
            "--disable-mlock",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sigil dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(u) = line.trim().strip_prefix("HTTP API:") {
                let _ = tx.send(u.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("dev banner");
    let health = common::wait_for(Duration::from_secs(10), || {
        let v = common::get_json(&url, "sys/seal-status");
        (v["sealed"] == false).then_some(v)
    });
    assert!(health.is_some(), "dev node unsealed");
    let out = sigil(
        &["operator", "key-status", "--format", "json"],
        &[("SIGIL_ADDR", &url), ("SIGIL_TOKEN", "my-root")],
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// With mlock on (the default), a running server has locked memory and core
/// dumps disabled. Needs CAP_IPC_LOCK (CI runs as root).
#[test]
fn server_locks_memory_and_disables_core_dumps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sigil.toml");
    let text = common::config_text(&dir.path().join("data"), "")
        .replace("disable_mlock = true", "disable_mlock = false");
    std::fs::write(&path, text).expect("write");
    let server = common::ServerProcess::start(&path, &[]);
    let pid = server.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmLck line");
    assert!(locked_kb > 0, "memory is locked: {status}");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit");
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "core dumps off: {core}");
}
