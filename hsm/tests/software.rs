//! The conformance suite against the in-memory provider.

use sigil_hsm::{KeyKind, KeyLabel, KeyProvider, SoftwareKeyProvider, conformance};

#[test]
fn software_provider_passes_the_conformance_suite() {
    conformance::run_all(&SoftwareKeyProvider::new());
}

#[test]
fn keys_belong_to_their_provider() {
    // Two providers are two independent key stores: a key generated in one
    // is absent from the other, even under the same label.
    let a = SoftwareKeyProvider::new();
    let b = SoftwareKeyProvider::new();
    let label = KeyLabel::new("shared-label").expect("valid label");
    let key = a.generate_key(&label, KeyKind::Aes256).expect("generate");
    assert!(b.find_key(&label, KeyKind::Aes256).expect("find").is_none());
    assert!(matches!(
        b.wrap(&key, &sigil_hsm::SecretBytes::copy_from(b"x"), b""),
        Err(sigil_hsm::HsmError::KeyNotFound { .. })
    ));
}

#[test]
fn provider_is_usable_as_a_shared_trait_object() {
    let provider: std::sync::Arc<dyn KeyProvider> = std::sync::Arc::new(SoftwareKeyProvider::new());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let provider = provider.clone();
            std::thread::spawn(move || {
                let label = KeyLabel::new(&format!("thread-{i}")).expect("valid label");
                let key = provider
                    .find_or_generate_key(&label, KeyKind::EcdsaP256)
                    .expect("key");
                let signature = provider.sign(&key, b"hello").expect("sign");
                assert!(provider.verify(&key, b"hello", &signature).expect("verify"));
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread panicked");
    }
}
