//! The Python client hvac drives a real `sigil server` over HTTP: init
//! (5 shares, threshold 3), unseal with three keys, seal-status, health codes
//! for uninitialised/sealed/active, seal, rekey, rotate, key-status and
//! generate-root (tests/hvac/lifecycle.py holds the steps and assertions).

mod common;

#[test]
fn hvac_drives_the_shamir_lifecycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), "");
    let server = common::ServerProcess::start(&config, &[]);
    let result = common::run_hvac(&["shamir", &server.http_url]);
    assert_eq!(result["ok"], true);
    assert_eq!(result["term"], 2, "one rotation");
    // Nothing a client did reached the log in plaintext: no root token.
    let log = server.stderr();
    assert!(
        !log.contains("hvs."),
        "a token reached the server log:\n{log}"
    );
}
