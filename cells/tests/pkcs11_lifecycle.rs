//! The seal lifecycle with `[seal] type = "pkcs11"` against SoftHSM2, driven
//! by hvac over HTTP against real `sigil server` processes: init hands out
//! recovery keys and unseals; a restart unseals with no operator action; a
//! missing token, module, PIN or key leaves the node sealed with a clear
//! error and nothing written.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sigil_hsm::softhsm::SoftHsm;

fn pkcs11_section(hsm: &SoftHsm, module: &Path, key_label: &str) -> String {
    format!(
        "[seal]\ntype = \"pkcs11\"\nauto_unseal_retry_secs = 1\n[seal.pkcs11]\nmodule = {:?}\ntoken_label = {:?}\npin_env = \"SIGIL_TEST_HSM_PIN\"\nkey_label = {:?}\n",
        module.display().to_string(),
        hsm.token_label(),
        key_label
    )
}

fn start(dir: &Path, hsm: &SoftHsm, section: &str, pin: &str) -> common::ServerProcess {
    let config = common::write_config(dir, section);
    let conf = hsm.conf_path().display().to_string();
    common::ServerProcess::start(
        &config,
        &[
            ("SOFTHSM2_CONF", conf.as_str()),
            ("SIGIL_TEST_HSM_PIN", pin),
        ],
    )
}

fn seal_status(url: &str) -> Value {
    common::get_json(url, "sys/seal-status")
}

#[test]
fn hsm_seal_lifecycle_with_restart_and_token_removal() {
    let hsm =
        SoftHsm::new().expect("softhsm2 must be installed (the README's test command installs it)");
    let dir = tempfile::tempdir().expect("tempdir");
    let pin = hsm.pin().expose().to_owned();
    let section = pkcs11_section(&hsm, hsm.module_path(), "sigil-root-wrap");

    // First start: hvac inits (recovery keys) and runs rotate, recovery
    // rekey and generate-root.
    let mut server = start(dir.path(), &hsm, &section, &pin);
    let first = common::run_hvac(&["pkcs11", &server.http_url]);
    let token = first["root_token"].as_str().expect("token").to_owned();
    let recovery = first["recovery_keys"].to_string();
    server.kill();

    // Restart: unsealed with no operator action.
    let mut server = start(dir.path(), &hsm, &section, &pin);
    let unsealed = common::wait_for(Duration::from_secs(30), || {
        (seal_status(&server.http_url)["sealed"] == false).then_some(())
    });
    assert!(
        unsealed.is_some(),
        "node did not unseal itself; log:\n{}",
        server.stderr()
    );
    let again = common::run_hvac(&["pkcs11-restarted", &server.http_url, &token, &recovery]);
    assert_eq!(again["term"], first["term"], "keyring survived the restart");
    server.kill();

    // Remove the HSM token: the node starts, stays sealed, and says why.
    hsm.delete_token().expect("delete token");
    let server = start(dir.path(), &hsm, &section, &pin);
    let logged = common::wait_for(Duration::from_secs(30), || {
        let log = server.stderr();
        log.contains("auto-unseal through the hsm failed")
            .then_some(log)
    });
    let log = logged.unwrap_or_else(|| panic!("no clear error logged:\n{}", server.stderr()));
    assert!(
        log.contains(hsm.token_label()),
        "error names the token: {log}"
    );
    assert_eq!(seal_status(&server.http_url)["sealed"], true);
    assert!(!log.contains(&pin), "the pin reached the log");
}

/// A misconfigured HSM seal: the node starts sealed, reports a clear error,
/// and `sys/init` fails with nothing written (a later init with the right
/// settings succeeds on the same data directory).
#[test]
fn broken_hsm_settings_leave_the_node_sealed_and_storage_untouched() {
    let hsm = SoftHsm::new().expect("softhsm2 must be installed");
    let dir = tempfile::tempdir().expect("tempdir");
    let pin = hsm.pin().expose().to_owned();
    let good = pkcs11_section(&hsm, hsm.module_path(), "sigil-root-wrap");

    let cases = [
        (
            pkcs11_section(
                &hsm,
                Path::new("/nonexistent/libpkcs11.so"),
                "sigil-root-wrap",
            ),
            pin.clone(),
            "/nonexistent/libpkcs11.so",
        ),
        (good.clone(), "wrong-pin".to_owned(), "login failed"),
    ];
    for (section, pin_value, needle) in &cases {
        let server = start(dir.path(), &hsm, section, pin_value);
        // Reported at start, before anyone tries init.
        let logged = common::wait_for(Duration::from_secs(30), || {
            let log = server.stderr();
            log.contains("hsm seal is not usable").then_some(log)
        });
        let log = logged.unwrap_or_else(|| panic!("no startup error:\n{}", server.stderr()));
        assert!(
            log.contains(needle),
            "startup error should mention {needle:?}: {log}"
        );
        let (code, body) = common::put_json(
            &server.http_url,
            "sys/init",
            r#"{"recovery_shares":3,"recovery_threshold":2}"#,
        );
        assert_eq!(code, 500, "{body}");
        let msg = body["errors"][0].as_str().unwrap_or_default().to_owned();
        assert!(
            msg.contains(needle),
            "error {msg:?} should mention {needle:?}"
        );
        assert!(!msg.contains(&pin), "the pin reached an error message");
        let st = seal_status(&server.http_url);
        assert_eq!(
            (st["initialized"].clone(), st["sealed"].clone()),
            (Value::Bool(false), Value::Bool(true))
        );
    }

    // Key label absent on an initialised node: initialise with one label,
    // restart naming another.
    let server = start(dir.path(), &hsm, &good, &pin);
    let (code, body) = common::put_json(
        &server.http_url,
        "sys/init",
        r#"{"recovery_shares":3,"recovery_threshold":2}"#,
    );
    assert_eq!(
        code, 200,
        "nothing was written by the failed attempts: {body}"
    );
    drop(server);
    let other_label = pkcs11_section(&hsm, hsm.module_path(), "some-other-key");
    let server = start(dir.path(), &hsm, &other_label, &pin);
    let logged = common::wait_for(Duration::from_secs(30), || {
        let log = server.stderr();
        log.contains("some-other-key").then_some(log)
    });
    assert!(
        logged.is_some(),
        "no error naming the missing key:\n{}",
        server.stderr()
    );
    assert_eq!(seal_status(&server.http_url)["sealed"], true);
}
