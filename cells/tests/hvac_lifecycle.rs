//! The Python client hvac drives a real `sigil server` over HTTP: init
//! (5 shares, threshold 3), unseal with three keys, seal-status, health codes
//! for uninitialised/sealed/active, seal, rekey, rotate, key-status and
//! generate-root (tests/hvac/lifecycle.py holds the steps and assertions).

mod common;

use std::process::Command;

/// Runs the hvac script; fails with its output when it fails.
pub fn run_hvac(args: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hvac/lifecycle.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 must be installed (the README's test command installs it and hvac)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hvac script failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("script's last line is JSON")
}

#[test]
fn hvac_drives_the_shamir_lifecycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), "");
    let server = common::ServerProcess::start(&config, &[]);
    let result = run_hvac(&["shamir", &server.http_url]);
    assert_eq!(result["ok"], true);
    assert_eq!(result["term"], 2, "one rotation");
    // Nothing a client did reached the log in plaintext: no root token.
    let log = server.stderr();
    assert!(
        !log.contains("hvs."),
        "a token reached the server log:\n{log}"
    );
}
