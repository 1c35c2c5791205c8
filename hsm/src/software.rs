//! An in-memory key provider for dev mode and tests.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use zeroize::Zeroizing;

use crate::blob::{Blob, TAG_LEN};
use crate::key::KeyHandle;
use crate::{HsmError, KeyId, KeyKind, KeyLabel, KeyProvider, SecretBytes};

/// AES-256 key length in bytes.
const AES_256_KEY_LEN: usize = 32;

/// Keeps keys in process memory with the same contract as an HSM.
///
/// For `sigil server -dev` and tests only: the keys vanish with the process
/// and sit in ordinary (if zeroized-on-drop) memory. AES keys are
/// [`SecretBytes`]; ECDSA private keys live inside aws-lc, which wipes freed
/// memory (`OPENSSL_free` cleanses). Dropping the provider zeroizes every
/// key.
///
/// ```
/// use sigil_hsm::{KeyKind, KeyLabel, KeyProvider, SecretBytes, SoftwareKeyProvider};
///
/// let provider = SoftwareKeyProvider::new();
/// let label = KeyLabel::new("dev-root")?;
/// let key = provider.generate_key(&label, KeyKind::Aes256)?;
/// let blob = provider.wrap(&key, &SecretBytes::copy_from(b"hello"), b"aad")?;
/// assert_eq!(provider.unwrap(&key, &blob, b"aad")?.expose(), b"hello");
/// # Ok::<(), sigil_hsm::HsmError>(())
/// ```
#[derive(Default)]
pub struct SoftwareKeyProvider {
    keys: Mutex<BTreeMap<(KeyKind, KeyLabel), SoftKey>>,
}

enum SoftKey {
    Aes256(SecretBytes),
    EcdsaP256(EcdsaKeyPair),
}

impl SoftwareKeyProvider {
    /// An empty provider.
    pub fn new() -> Self {
        Self::default()
    }

    fn keys(&self) -> MutexGuard<'_, BTreeMap<(KeyKind, KeyLabel), SoftKey>> {
        // A panic while the lock was held cannot leave the map half-updated:
        // keys are inserted whole, after generation succeeded.
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with the key behind `key`, after checking its kind.
    fn with_key<T>(
        &self,
        key: &KeyId,
        kind: KeyKind,
        f: impl FnOnce(&SoftKey) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        key.expect_kind(kind)?;
        let keys = self.keys();
        let found =
            keys.get(&(kind, key.label().clone()))
                .ok_or_else(|| HsmError::KeyNotFound {
                    label: key.label().clone(),
                })?;
        f(found)
    }
}

impl KeyProvider for SoftwareKeyProvider {
    fn kind(&self) -> &'static str {
        "software"
    }

    fn find_key(&self, label: &KeyLabel, kind: KeyKind) -> Result<Option<KeyId>, HsmError> {
        let found = self.keys().contains_key(&(kind, label.clone()));
        Ok(found.then(|| KeyId::new(label.clone(), kind, KeyHandle::Software)))
    }

    fn generate_key(&self, label: &KeyLabel, kind: KeyKind) -> Result<KeyId, HsmError> {
        let mut keys = self.keys();
        let slot = (kind, label.clone());
        if keys.contains_key(&slot) {
            return Err(HsmError::KeyExists {
                label: label.clone(),
            });
        }
        let key = match kind {
            KeyKind::Aes256 => SoftKey::Aes256(SecretBytes::random(AES_256_KEY_LEN)),
            KeyKind::EcdsaP256 => SoftKey::EcdsaP256(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| HsmError::Crypto("ecdsa p-256 key generation failed".into()))?,
            ),
        };
        keys.insert(slot, key);
        tracing::debug!(label = %label, kind = %kind, "generated software key");
        Ok(KeyId::new(label.clone(), kind, KeyHandle::Software))
    }

    fn wrap(&self, key: &KeyId, plaintext: &SecretBytes, aad: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.with_key(key, KeyKind::Aes256, |found| {
            let aead = aes_key(found)?;
            // Sealed in place in a zeroizing copy, so no plaintext copy outlives the call.
            let mut sealed = Zeroizing::new(plaintext.expose().to_vec());
            let (nonce, tag) = aead
                .seal_in_place_separate_tag(Aad::from(aad), &mut sealed)
                .map_err(|_| HsmError::Crypto("aes-256-gcm seal failed".into()))?;
            let mut blob = Blob::start(nonce.as_ref(), sealed.len() + TAG_LEN);
            blob.extend_from_slice(&sealed);
            blob.extend_from_slice(tag.as_ref());
            Ok(blob)
        })
    }

    fn unwrap(&self, key: &KeyId, blob: &[u8], aad: &[u8]) -> Result<SecretBytes, HsmError> {
        self.with_key(key, KeyKind::Aes256, |found| {
            let aead = aes_key(found)?;
            let parsed = Blob::parse(blob)?;
            let mut buf = Zeroizing::new(parsed.sealed.to_vec());
            let plaintext_len = aead
                .open_in_place(
                    Nonce::assume_unique_for_key(parsed.iv),
                    Aad::from(aad),
                    &mut buf,
                )
                .map_err(|_| HsmError::Unwrap)?
                .len();
            buf.truncate(plaintext_len);
            // Moved, not copied, into the SecretBytes.
            Ok(SecretBytes::new(std::mem::take(&mut *buf)))
        })
    }

    fn sign(&self, key: &KeyId, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.with_key(key, KeyKind::EcdsaP256, |found| {
            let pair = ecdsa_key(found)?;
            let signature = pair
                .sign(&SystemRandom::new(), message)
                .map_err(|_| HsmError::Crypto("ecdsa p-256 signing failed".into()))?;
            Ok(signature.as_ref().to_vec())
        })
    }

    fn verify(&self, key: &KeyId, message: &[u8], signature: &[u8]) -> Result<bool, HsmError> {
        self.with_key(key, KeyKind::EcdsaP256, |found| {
            let pair = ecdsa_key(found)?;
            let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key());
            Ok(public.verify(message, signature).is_ok())
        })
    }
}

/// The AEAD key for an AES entry. The map is keyed by kind, so a mismatch
/// here is a bug in this file, reported as `WrongKeyKind` rather than a panic.
fn aes_key(key: &SoftKey) -> Result<RandomizedNonceKey, HsmError> {
    match key {
        // The raw key goes to aws-lc, which keeps its own (cleansed on free) copy.
        SoftKey::Aes256(bytes) => RandomizedNonceKey::new(&AES_256_GCM, bytes.expose())
            .map_err(|_| HsmError::Crypto("invalid aes-256 key".into())),
        SoftKey::EcdsaP256(_) => Err(HsmError::WrongKeyKind),
    }
}

fn ecdsa_key(key: &SoftKey) -> Result<&EcdsaKeyPair, HsmError> {
    match key {
        SoftKey::EcdsaP256(pair) => Ok(pair),
        SoftKey::Aes256(_) => Err(HsmError::WrongKeyKind),
    }
}

impl fmt::Debug for SoftwareKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Labels and kinds only: they are names, not secrets. try_lock, so
        // formatting the provider while it is busy (in a log line from inside
        // an operation) cannot deadlock.
        let mut debug = f.debug_struct("SoftwareKeyProvider");
        match self.keys.try_lock() {
            Ok(keys) => debug.field("keys", &keys.keys().collect::<Vec<_>>()),
            Err(_) => debug.field("keys", &format_args!("<busy>")),
        };
        debug.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_lists_labels_not_keys() {
        let provider = SoftwareKeyProvider::new();
        let label = KeyLabel::new("debug-me").expect("valid");
        provider
            .generate_key(&label, KeyKind::Aes256)
            .expect("generate");
        let debug = format!("{provider:?}");
        assert_eq!(
            debug,
            r#"SoftwareKeyProvider { keys: [(Aes256, "debug-me")] }"#
        );
    }
}
