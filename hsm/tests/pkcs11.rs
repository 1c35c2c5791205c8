//! The PKCS#11 provider against SoftHSM2, one fresh token per test.
//!
//! Every test that loads the module runs its body in a child process (see
//! `sigil_hsm::softhsm::run_in_child`): SoftHSM2 reads `SOFTHSM2_CONF` once,
//! when the module is initialised, and this process cannot set it.

use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use sigil_hsm::softhsm::{SoftHsm, SoftHsmEnv, run_in_child};
use sigil_hsm::{
    HsmError, KeyKind, KeyLabel, KeyProvider, Pkcs11Config, Pkcs11KeyProvider, SecretBytes,
    SecretString, conformance,
};

fn open(env: &SoftHsmEnv) -> Pkcs11KeyProvider {
    Pkcs11KeyProvider::open(env.pkcs11_config()).expect("open the softhsm token")
}

fn label(s: &str) -> KeyLabel {
    KeyLabel::new(s).expect("valid label")
}

/// A second, raw cryptoki session on the token, logged in, as another part
/// of the process (or an auditor's tool) would have. The module is already
/// initialised and the user logged in by the provider under test, and both
/// are accepted here as they are in the provider.
fn raw_session(env: &SoftHsmEnv) -> Session {
    let pkcs11 = Pkcs11::new(env.module_path()).expect("load module");
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("initialise: {e}"),
    }
    let slot = pkcs11
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| info.label() == env.token_label())
        })
        .expect("the fixture's token");
    let session = pkcs11.open_rw_session(slot).expect("open session");
    match session.login(UserType::User, Some(&AuthPin::from(env.pin().expose()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("login: {e}"),
    }
    session
}

#[test]
fn pkcs11_provider_passes_the_conformance_suite() {
    run_in_child("pkcs11_provider_passes_the_conformance_suite", |env| {
        conformance::run_all(&open(env));
    });
}

#[test]
fn keys_are_sensitive_and_never_extractable() {
    run_in_child("keys_are_sensitive_and_never_extractable", |env| {
        let provider = open(env);
        for kind in [KeyKind::Aes256, KeyKind::EcdsaP256] {
            let key = provider
                .generate_key(&label("protected"), kind)
                .expect("generate");
            let protection = provider.key_protection(&key).expect("read attributes");
            assert!(protection.token, "{kind}: {protection:?}");
            assert!(protection.sensitive, "{kind}: {protection:?}");
            assert!(!protection.extractable, "{kind}: {protection:?}");
            assert!(protection.always_sensitive, "{kind}: {protection:?}");
            assert!(protection.never_extractable, "{kind}: {protection:?}");
        }
    });
}

#[test]
fn aes_key_value_cannot_be_read() {
    run_in_child("aes_key_value_cannot_be_read", |env| {
        let provider = open(env);
        provider
            .generate_key(&label("unreadable"), KeyKind::Aes256)
            .expect("generate");

        let session = raw_session(env);
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(b"unreadable".to_vec()),
            ])
            .expect("find");
        let [key] = found.as_slice() else {
            panic!("expected one key, found {}", found.len());
        };
        // The lookup itself works: a public attribute reads back.
        let public = session
            .get_attributes(*key, &[AttributeType::Label])
            .expect("read label");
        assert!(matches!(public.as_slice(), [Attribute::Label(l)] if l == b"unreadable"));
        // The value does not: the module refuses (CKR_ATTRIBUTE_SENSITIVE),
        // which cryptoki reports either as an error or by omitting it.
        match session.get_attributes(*key, &[AttributeType::Value]) {
            Err(CkError::Pkcs11(RvError::AttributeSensitive, _)) => {}
            Ok(attributes) => assert!(
                !attributes.iter().any(|a| matches!(a, Attribute::Value(_))),
                "CKA_VALUE of the wrapping key was readable"
            ),
            Err(e) => panic!("unexpected error reading CKA_VALUE: {e}"),
        }
    });
}

#[test]
fn missing_module_is_a_module_error() {
    // Nothing is loaded, so no child process is needed.
    let config = Pkcs11Config {
        module: "/nonexistent/sigil/libpkcs11.so".into(),
        token_label: "sigil".into(),
        pin: "1234".into(),
    };
    match Pkcs11KeyProvider::open(config) {
        Err(e @ HsmError::Module { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("/nonexistent/sigil/libpkcs11.so"), "{msg}");
        }
        other => panic!("expected HsmError::Module, got {other:?}"),
    }
}

#[test]
fn non_library_module_is_a_module_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = dir.path().join("libnot-pkcs11.so");
    std::fs::write(&bogus, b"not a shared object").expect("write");
    let config = Pkcs11Config {
        module: bogus.clone(),
        token_label: "sigil".into(),
        pin: "1234".into(),
    };
    match Pkcs11KeyProvider::open(config) {
        Err(HsmError::Module { path, .. }) => assert_eq!(path, bogus),
        other => panic!("expected HsmError::Module, got {other:?}"),
    }
}

#[test]
fn absent_token_is_token_not_found() {
    run_in_child("absent_token_is_token_not_found", |env| {
        let config = Pkcs11Config {
            token_label: "no-such-token".into(),
            ..env.pkcs11_config()
        };
        match Pkcs11KeyProvider::open(config) {
            Err(HsmError::TokenNotFound { label }) => assert_eq!(label, "no-such-token"),
            other => panic!("expected HsmError::TokenNotFound, got {other:?}"),
        }
    });
}

#[test]
fn wrong_pin_is_a_login_error() {
    run_in_child("wrong_pin_is_a_login_error", |env| {
        let config = Pkcs11Config {
            pin: SecretString::from("wrong-pin-0000"),
            ..env.pkcs11_config()
        };
        match Pkcs11KeyProvider::open(config) {
            Err(e @ HsmError::Login { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("CKR_PIN_INCORRECT"), "{msg}");
                assert!(!msg.contains("wrong-pin-0000"), "the pin leaked: {msg}");
                assert!(!msg.contains(env.pin().expose()), "the pin leaked: {msg}");
            }
            other => panic!("expected HsmError::Login, got {other:?}"),
        }
        // The right PIN still works: a failed login leaves nothing behind.
        open(env);
    });
}

#[test]
fn keys_survive_reopening_the_provider() {
    run_in_child("keys_survive_reopening_the_provider", |env| {
        let plaintext = SecretBytes::random(32);
        let (blob, signature) = {
            let provider = open(env);
            let wrapping = provider
                .generate_key(&label("durable-wrap"), KeyKind::Aes256)
                .expect("generate aes");
            let signing = provider
                .generate_key(&label("durable-sign"), KeyKind::EcdsaP256)
                .expect("generate ecdsa");
            let blob = provider.wrap(&wrapping, &plaintext, b"aad").expect("wrap");
            let signature = provider.sign(&signing, b"message").expect("sign");
            (blob, signature)
            // The provider drops here: session closed, module left initialised.
        };

        let provider = open(env);
        let wrapping = provider
            .find_key(&label("durable-wrap"), KeyKind::Aes256)
            .expect("find aes")
            .expect("the aes key survived");
        let signing = provider
            .find_key(&label("durable-sign"), KeyKind::EcdsaP256)
            .expect("find ecdsa")
            .expect("the ecdsa key survived");
        assert_eq!(
            provider.unwrap(&wrapping, &blob, b"aad").expect("unwrap"),
            plaintext
        );
        assert!(
            provider
                .verify(&signing, b"message", &signature)
                .expect("verify")
        );
    });
}

#[test]
fn two_providers_share_the_module() {
    run_in_child("two_providers_share_the_module", |env| {
        let first = open(env);
        let second = open(env);
        let key = first
            .generate_key(&label("shared"), KeyKind::Aes256)
            .expect("generate");
        let blob = first
            .wrap(&key, &SecretBytes::copy_from(b"shared secret"), b"")
            .expect("wrap");
        // The first provider's KeyId is looked up afresh by the second.
        assert_eq!(
            second.unwrap(&key, &blob, b"").expect("unwrap").expose(),
            b"shared secret"
        );
        // Dropping one provider neither finalises the module nor logs the
        // other out.
        drop(first);
        let found = second
            .find_key(&label("shared"), KeyKind::Aes256)
            .expect("find")
            .expect("still visible");
        assert_eq!(
            second.unwrap(&found, &blob, b"").expect("unwrap").expose(),
            b"shared secret"
        );
    });
}

#[test]
fn provider_logs_in_again_after_a_logout() {
    run_in_child("provider_logs_in_again_after_a_logout", |env| {
        let provider = open(env);
        let key = provider
            .generate_key(&label("relogin"), KeyKind::Aes256)
            .expect("generate");
        let blob = provider
            .wrap(&key, &SecretBytes::copy_from(b"still here"), b"")
            .expect("wrap");

        // C_Logout acts on the whole application, so this logs out the
        // provider's session too, as an HSM restart that keeps sessions would.
        let raw = raw_session(env);
        raw.logout().expect("logout");
        // A search while logged out would miss private keys; the provider
        // must notice and log in again rather than report the key absent.
        let found = provider
            .find_key(&label("relogin"), KeyKind::Aes256)
            .expect("find")
            .expect("found after logging in again");

        raw.login(UserType::User, Some(&AuthPin::from(env.pin().expose())))
            .or_else(|e| match e {
                CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _) => Ok(()),
                e => Err(e),
            })
            .expect("login");
        raw.logout().expect("logout");
        // An operation on a cached handle while logged out is retried too.
        assert_eq!(
            provider
                .unwrap(&found, &blob, b"")
                .expect("unwrap")
                .expose(),
            b"still here"
        );
    });
}

#[test]
fn deleted_token_is_token_not_found() {
    run_in_child("deleted_token_is_token_not_found", |env| {
        env.delete_token().expect("delete token");
        match Pkcs11KeyProvider::open(env.pkcs11_config()) {
            Err(HsmError::TokenNotFound { .. }) => {}
            other => panic!("expected HsmError::TokenNotFound, got {other:?}"),
        }
    });
}

#[test]
fn softhsm_fixture_creates_and_deletes_its_token() {
    // Runs softhsm2-util only; this process never loads the module.
    let fixture = SoftHsm::new().expect("softhsm2 fixture");
    let dir = fixture
        .conf_path()
        .parent()
        .expect("conf has a directory")
        .to_owned();
    let conf = std::fs::read_to_string(fixture.conf_path()).expect("conf");
    assert!(conf.contains("objectstore.backend = file"), "{conf}");
    let slots = || {
        let out = Command::new("softhsm2-util")
            .arg("--show-slots")
            .env("SOFTHSM2_CONF", fixture.conf_path())
            .output()
            .expect("softhsm2-util");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(slots().contains(fixture.token_label()), "{}", slots());
    fixture.delete_token().expect("delete");
    assert!(!slots().contains(fixture.token_label()), "{}", slots());
    drop(fixture);
    assert!(!dir.exists(), "fixture directory left behind");
}

#[test]
fn deleting_the_token_under_an_open_provider_fails_every_call() {
    run_in_child(
        "deleting_the_token_under_an_open_provider_fails_every_call",
        |env| {
            let provider = open(env);
            let key = provider
                .generate_key(&label("doomed"), KeyKind::Aes256)
                .expect("generate");
            let blob = provider
                .wrap(&key, &SecretBytes::copy_from(b"gone"), b"")
                .expect("wrap");
            env.delete_token().expect("delete token");
            // The session dies with the token; the provider tries to reopen it,
            // cannot find the token, and says so. Repeatedly: nothing is cached.
            for _ in 0..2 {
                assert!(matches!(
                    provider.unwrap(&key, &blob, b""),
                    Err(HsmError::TokenNotFound { .. })
                ));
                assert!(matches!(
                    provider.find_key(&label("doomed"), KeyKind::Aes256),
                    Err(HsmError::TokenNotFound { .. })
                ));
            }
        },
    );
}
