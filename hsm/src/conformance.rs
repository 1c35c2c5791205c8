//! The conformance suite every [`KeyProvider`] must pass.
//!
//! One suite, run against every implementation (openraft's
//! `testing::log::Suite` is the model), so the software provider used in dev
//! mode cannot drift from the PKCS#11 one used in production:
//!
//! ```
//! use sigil_hsm::{SoftwareKeyProvider, conformance};
//!
//! conformance::run_all(&SoftwareKeyProvider::new());
//! ```
//!
//! Each check is also public, for running one at a time. Checks panic on
//! failure, naming the check and the provider. They use fresh random labels,
//! because a PKCS#11 token keeps its keys between checks (and between runs,
//! if a fixture is reused).

use crate::{HsmError, KeyId, KeyKind, KeyLabel, KeyProvider, SecretBytes};

/// A named check.
pub type Check = fn(&dyn KeyProvider);

/// Every check, in the order [`run_all`] runs them.
pub const CHECKS: &[(&str, Check)] = &[
    ("kind_is_known", kind_is_known),
    ("generate_then_find", generate_then_find),
    ("find_absent_is_none", find_absent_is_none),
    ("labels_match_exactly", labels_match_exactly),
    ("generate_twice_is_key_exists", generate_twice_is_key_exists),
    ("one_label_per_kind", one_label_per_kind),
    (
        "find_or_generate_is_idempotent",
        find_or_generate_is_idempotent,
    ),
    ("wrap_unwrap_round_trip", wrap_unwrap_round_trip),
    ("wraps_are_randomised", wraps_are_randomised),
    ("unwrap_with_wrong_aad_fails", unwrap_with_wrong_aad_fails),
    (
        "unwrap_detects_every_flipped_bit",
        unwrap_detects_every_flipped_bit,
    ),
    ("unwrap_rejects_truncation", unwrap_rejects_truncation),
    ("unwrap_rejects_empty_blob", unwrap_rejects_empty_blob),
    ("unwrap_with_other_key_fails", unwrap_with_other_key_fails),
    ("unwrap_rejects_garbage", unwrap_rejects_garbage),
    ("sign_verify_round_trip", sign_verify_round_trip),
    ("verify_rejects_other_message", verify_rejects_other_message),
    (
        "verify_rejects_mutated_signature",
        verify_rejects_mutated_signature,
    ),
    ("verify_with_other_key_fails", verify_with_other_key_fails),
    ("wrong_key_kind_is_rejected", wrong_key_kind_is_rejected),
];

/// Runs every check in [`CHECKS`] against `provider`.
pub fn run_all(provider: &dyn KeyProvider) {
    for (name, check) in CHECKS {
        // Printed before the check so a failure's captured output names it.
        println!("conformance [{}]: {name}", provider.kind());
        check(provider);
    }
}

/// `kind()` is one of the names operators see in seal-status.
pub fn kind_is_known(provider: &dyn KeyProvider) {
    assert!(
        ["pkcs11", "software"].contains(&provider.kind()),
        "unexpected provider kind {:?}",
        provider.kind()
    );
}

/// A generated key is found again under its label and kind.
pub fn generate_then_find(provider: &dyn KeyProvider) {
    for kind in [KeyKind::Aes256, KeyKind::EcdsaP256] {
        let label = unique_label("find");
        let generated = generate(provider, &label, kind);
        assert_eq!(generated.label(), &label);
        assert_eq!(generated.kind(), kind);
        let found = provider
            .find_key(&label, kind)
            .unwrap_or_else(|e| fail(provider, "find_key after generate_key", &e))
            .unwrap_or_else(|| {
                panic!(
                    "[{}] generated {kind} key {label:?} not found",
                    provider.kind()
                )
            });
        assert_eq!(found.label(), &label);
        assert_eq!(found.kind(), kind);
    }
}

/// Looking up a label nobody generated is `Ok(None)`, not an error.
pub fn find_absent_is_none(provider: &dyn KeyProvider) {
    for kind in [KeyKind::Aes256, KeyKind::EcdsaP256] {
        let label = unique_label("absent");
        let found = provider
            .find_key(&label, kind)
            .unwrap_or_else(|e| fail(provider, "find_key of an absent label", &e));
        assert!(
            found.is_none(),
            "[{}] found absent key {label:?}",
            provider.kind()
        );
    }
}

/// Labels are matched exactly: no prefix, suffix or case folding.
pub fn labels_match_exactly(provider: &dyn KeyProvider) {
    let label = unique_label("exact");
    generate(provider, &label, KeyKind::Aes256);
    let near_misses = [
        &label.as_str()[..label.as_str().len() - 1],
        &format!("{label}x"),
        &label.as_str().to_uppercase(),
    ];
    for near in near_misses {
        let near = KeyLabel::new(near).expect("near-miss label is valid");
        let found = provider
            .find_key(&near, KeyKind::Aes256)
            .unwrap_or_else(|e| fail(provider, "find_key of a near-miss label", &e));
        assert!(
            found.is_none(),
            "[{}] {near:?} matched {label:?}",
            provider.kind()
        );
    }
}

/// Generating a label that is taken (for that kind) is `KeyExists`.
pub fn generate_twice_is_key_exists(provider: &dyn KeyProvider) {
    for kind in [KeyKind::Aes256, KeyKind::EcdsaP256] {
        let label = unique_label("twice");
        generate(provider, &label, kind);
        match provider.generate_key(&label, kind) {
            Err(HsmError::KeyExists { label: taken }) => assert_eq!(taken, label),
            other => panic!(
                "[{}] second generate_key of {kind} {label:?} gave {other:?}",
                provider.kind()
            ),
        }
    }
}

/// One label can name one key of each kind, and they do not shadow each other.
pub fn one_label_per_kind(provider: &dyn KeyProvider) {
    let label = unique_label("kinds");
    let aes = generate(provider, &label, KeyKind::Aes256);
    let found = provider
        .find_key(&label, KeyKind::EcdsaP256)
        .unwrap_or_else(|e| fail(provider, "find_key of the other kind", &e));
    assert!(
        found.is_none(),
        "[{}] aes key found as ecdsa",
        provider.kind()
    );
    let ecdsa = generate(provider, &label, KeyKind::EcdsaP256);
    let blob = wrap(provider, &aes, b"both kinds", b"");
    assert_eq!(unwrap(provider, &aes, &blob, b"").expose(), b"both kinds");
    let signature = sign(provider, &ecdsa, b"both kinds");
    assert!(verify(provider, &ecdsa, b"both kinds", &signature));
}

/// `find_or_generate_key` creates once, then finds the same key.
pub fn find_or_generate_is_idempotent(provider: &dyn KeyProvider) {
    let label = unique_label("fog");
    let first = provider
        .find_or_generate_key(&label, KeyKind::Aes256)
        .unwrap_or_else(|e| fail(provider, "first find_or_generate_key", &e));
    let second = provider
        .find_or_generate_key(&label, KeyKind::Aes256)
        .unwrap_or_else(|e| fail(provider, "second find_or_generate_key", &e));
    let blob = wrap(provider, &first, b"same key", b"aad");
    assert_eq!(
        unwrap(provider, &second, &blob, b"aad").expose(),
        b"same key"
    );
}

/// Wrap then unwrap gives the plaintext back, for empty to multi-block
/// plaintexts (32 bytes being the barrier key size) and with or without aad.
pub fn wrap_unwrap_round_trip(provider: &dyn KeyProvider) {
    let key = generate(provider, &unique_label("round"), KeyKind::Aes256);
    for len in [0, 1, 15, 16, 17, 32, 64, 1000, 4096] {
        for aad in [&b""[..], b"sigil/core/keyring", &[0u8; 300]] {
            let plaintext = SecretBytes::random(len);
            let blob = provider
                .wrap(&key, &plaintext, aad)
                .unwrap_or_else(|e| fail(provider, &format!("wrap of {len} bytes"), &e));
            assert_eq!(
                blob.len(),
                1 + 12 + len + 16,
                "[{}] blob for {len} bytes is version || iv || ciphertext || tag",
                provider.kind()
            );
            assert_eq!(blob[0], 1, "[{}] blob version", provider.kind());
            let opened = unwrap(provider, &key, &blob, aad);
            assert!(
                opened == plaintext,
                "[{}] round trip of {len} bytes changed the plaintext",
                provider.kind()
            );
        }
    }
}

/// Wrapping the same plaintext twice gives different blobs (fresh IVs).
pub fn wraps_are_randomised(provider: &dyn KeyProvider) {
    let key = generate(provider, &unique_label("random"), KeyKind::Aes256);
    let plaintext = SecretBytes::random(32);
    let a = provider
        .wrap(&key, &plaintext, b"aad")
        .unwrap_or_else(|e| fail(provider, "wrap", &e));
    let b = provider
        .wrap(&key, &plaintext, b"aad")
        .unwrap_or_else(|e| fail(provider, "wrap", &e));
    assert_ne!(a, b, "[{}] two wraps gave the same blob", provider.kind());
    assert_ne!(
        a[1..13],
        b[1..13],
        "[{}] two wraps reused an iv",
        provider.kind()
    );
}

/// Any change to the associated data makes unwrap fail.
pub fn unwrap_with_wrong_aad_fails(provider: &dyn KeyProvider) {
    let key = generate(provider, &unique_label("aad"), KeyKind::Aes256);
    let blob = wrap(provider, &key, b"barrier key", b"sigil/core/keyring");
    for wrong in [
        &b""[..],
        b"sigil/core/keyrinG",
        b"sigil/core/keyrin",
        b"sigil/core/keyring\0",
    ] {
        expect_unwrap_error(provider, &key, &blob, wrong, "wrong aad");
    }
    let blob = wrap(provider, &key, b"barrier key", b"");
    expect_unwrap_error(provider, &key, &blob, b"\0", "aad where there was none");
}

/// Flipping any single bit of a blob (version, iv, ciphertext or tag) makes
/// unwrap fail.
pub fn unwrap_detects_every_flipped_bit(provider: &dyn KeyProvider) {
    let key = generate(provider, &unique_label("bits"), KeyKind::Aes256);
    let blob = wrap(provider, &key, &[0x5a; 32], b"aad");
    for bit in 0..blob.len() * 8 {
        let mut tampered = blob.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        expect_unwrap_error(
            provider,
            &key,
            &tampered,
            b"aad",
            &format!("bit {bit} flipped"),
        );
    }
}

/// Every proper prefix of a blob, and a blob with a byte appended, fails.
pub fn unwrap_rejects_truncation(provider: &dyn KeyProvider) {
    let key = generate(provider, &unique_label("trunc"), KeyKind::Aes256);
    let blob = wrap(provider, &key, &[0xa5; 32], b"aad");
    for len in 0..blob.len() {
        expect_unwrap_error(
            provider,
            &key,
            &blob[..len],
            b"aad",
            &format!("truncated to {len}"),
        );
    }
    let mut longer = blob.clone();
    longer.push(0);
    expect_unwrap_error(provider, &key, &longer, b"aad", "a byte appended");
}

/// An empty blob is an unwrap error, not a panic.
pub fn unwrap_rejects_empty_blob(provider: &dyn KeyProvider) {
    let key = generate(provider, &unique_label("empty"), KeyKind::Aes256);
    expect_unwrap_error(provider, &key, &[], b"", "empty blob");
}

/// A blob wrapped under one key does not unwrap under another.
pub fn unwrap_with_other_key_fails(provider: &dyn KeyProvider) {
    let key = generate(provider, &unique_label("key-a"), KeyKind::Aes256);
    let other = generate(provider, &unique_label("key-b"), KeyKind::Aes256);
    let blob = wrap(provider, &key, b"for key a only", b"aad");
    expect_unwrap_error(provider, &other, &blob, b"aad", "another key");
}

/// Random bytes, with or without a valid version byte, never unwrap and never panic.
pub fn unwrap_rejects_garbage(provider: &dyn KeyProvider) {
    let key = generate(provider, &unique_label("garbage"), KeyKind::Aes256);
    for round in 0..64 {
        let len = usize::from(random_bytes(1)[0]) % 120;
        let mut garbage = random_bytes(len);
        if round % 2 == 0
            && let Some(version) = garbage.first_mut()
        {
            *version = 1;
        }
        expect_unwrap_error(
            provider,
            &key,
            &garbage,
            b"",
            &format!("{len} random bytes"),
        );
    }
}

/// A signature verifies against the message it signed, for any message length.
pub fn sign_verify_round_trip(provider: &dyn KeyProvider) {
    let key = generate(provider, &unique_label("sign"), KeyKind::EcdsaP256);
    for message in [&b""[..], b"m", &[0x42; 1000]] {
        let signature = sign(provider, &key, message);
        assert_eq!(
            signature.len(),
            64,
            "[{}] p-256 signature is r || s",
            provider.kind()
        );
        assert!(
            verify(provider, &key, message, &signature),
            "[{}] signature over {} bytes did not verify",
            provider.kind(),
            message.len()
        );
    }
}

/// A signature does not verify against any other message.
pub fn verify_rejects_other_message(provider: &dyn KeyProvider) {
    let key = generate(provider, &unique_label("othermsg"), KeyKind::EcdsaP256);
    let signature = sign(provider, &key, b"pay alice 10");
    for other in [&b"pay alice 100"[..], b"pay alice 1", b"", b"Pay alice 10"] {
        assert!(
            !verify(provider, &key, other, &signature),
            "[{}] signature verified for another message",
            provider.kind()
        );
    }
}

/// A signature with any bit flipped, truncated, extended or empty is `false`.
pub fn verify_rejects_mutated_signature(provider: &dyn KeyProvider) {
    let key = generate(provider, &unique_label("mutsig"), KeyKind::EcdsaP256);
    let message = b"audit record";
    let signature = sign(provider, &key, message);
    for bit in 0..signature.len() * 8 {
        let mut mutated = signature.clone();
        mutated[bit / 8] ^= 1 << (bit % 8);
        assert!(
            !verify(provider, &key, message, &mutated),
            "[{}] signature with bit {bit} flipped verified",
            provider.kind()
        );
    }
    let mut longer = signature.clone();
    longer.push(0);
    for mutated in [
        &signature[..63],
        &signature[..32],
        &[][..],
        &longer,
        &[0u8; 64],
        &[0xff; 64],
    ] {
        assert!(
            !verify(provider, &key, message, mutated),
            "[{}] malformed {}-byte signature verified",
            provider.kind(),
            mutated.len()
        );
    }
}

/// A signature from one key does not verify under another.
pub fn verify_with_other_key_fails(provider: &dyn KeyProvider) {
    let key = generate(provider, &unique_label("signer-a"), KeyKind::EcdsaP256);
    let other = generate(provider, &unique_label("signer-b"), KeyKind::EcdsaP256);
    let signature = sign(provider, &key, b"message");
    assert!(
        !verify(provider, &other, b"message", &signature),
        "[{}] signature verified under another key",
        provider.kind()
    );
}

/// Wrapping with a signing key, or signing with a wrapping key, is `WrongKeyKind`.
pub fn wrong_key_kind_is_rejected(provider: &dyn KeyProvider) {
    let aes = generate(provider, &unique_label("kind-aes"), KeyKind::Aes256);
    let ecdsa = generate(provider, &unique_label("kind-ec"), KeyKind::EcdsaP256);
    let blob = wrap(provider, &aes, b"secret", b"");
    let signature = sign(provider, &ecdsa, b"message");
    let results = [
        (
            "wrap with an ecdsa key",
            provider
                .wrap(&ecdsa, &SecretBytes::copy_from(b"s"), b"")
                .err(),
        ),
        (
            "unwrap with an ecdsa key",
            provider.unwrap(&ecdsa, &blob, b"").err(),
        ),
        (
            "sign with an aes key",
            provider.sign(&aes, b"message").err(),
        ),
        (
            "verify with an aes key",
            provider.verify(&aes, b"message", &signature).err(),
        ),
    ];
    for (what, error) in results {
        assert!(
            matches!(error, Some(HsmError::WrongKeyKind)),
            "[{}] {what} gave {error:?}",
            provider.kind()
        );
    }
}

/// A label no other check (or earlier run against a persistent token) uses.
fn unique_label(tag: &str) -> KeyLabel {
    let suffix: String = random_bytes(8).iter().map(|b| format!("{b:02x}")).collect();
    KeyLabel::new(&format!("conformance-{tag}-{suffix}")).expect("conformance labels are valid")
}

fn random_bytes(len: usize) -> Vec<u8> {
    SecretBytes::random(len).expose().to_vec()
}

fn generate(provider: &dyn KeyProvider, label: &KeyLabel, kind: KeyKind) -> KeyId {
    provider
        .generate_key(label, kind)
        .unwrap_or_else(|e| fail(provider, &format!("generate_key({label:?}, {kind})"), &e))
}

fn wrap(provider: &dyn KeyProvider, key: &KeyId, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    provider
        .wrap(key, &SecretBytes::copy_from(plaintext), aad)
        .unwrap_or_else(|e| fail(provider, "wrap", &e))
}

fn unwrap(provider: &dyn KeyProvider, key: &KeyId, blob: &[u8], aad: &[u8]) -> SecretBytes {
    provider
        .unwrap(key, blob, aad)
        .unwrap_or_else(|e| fail(provider, "unwrap", &e))
}

fn sign(provider: &dyn KeyProvider, key: &KeyId, message: &[u8]) -> Vec<u8> {
    provider
        .sign(key, message)
        .unwrap_or_else(|e| fail(provider, "sign", &e))
}

fn verify(provider: &dyn KeyProvider, key: &KeyId, message: &[u8], signature: &[u8]) -> bool {
    provider
        .verify(key, message, signature)
        .unwrap_or_else(|e| fail(provider, "verify", &e))
}

fn expect_unwrap_error(
    provider: &dyn KeyProvider,
    key: &KeyId,
    blob: &[u8],
    aad: &[u8],
    what: &str,
) {
    match provider.unwrap(key, blob, aad) {
        Err(HsmError::Unwrap) => {}
        Ok(_) => panic!("[{}] unwrap accepted a blob with {what}", provider.kind()),
        Err(other) => panic!(
            "[{}] unwrap of a blob with {what} gave {other:?}, expected HsmError::Unwrap",
            provider.kind()
        ),
    }
}

fn fail(provider: &dyn KeyProvider, what: &str, error: &HsmError) -> ! {
    panic!("[{}] {what} failed: {error}", provider.kind())
}
