//! The `KeyProvider` trait: the seam between Sigil and wherever its keys live.

use crate::{HsmError, KeyId, KeyKind, KeyLabel, SecretBytes};

/// Keeps keys and performs the operations that need them, without ever
/// handing out key material.
///
/// Calls are synchronous and may block on an HSM for milliseconds; async
/// callers use `tokio::task::spawn_blocking`. Implementations are shared
/// across threads and serialise internally where the backend requires it.
///
/// Every implementation runs the same conformance suite
/// (`sigil_hsm::conformance::run_all`, feature `testing`), which is the
/// executable form of the contract documented here.
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// "pkcs11" or "software"; shown in seal-status and logs.
    fn kind(&self) -> &'static str;

    /// Finds a key by label and kind; `Ok(None)` when absent.
    fn find_key(&self, label: &KeyLabel, kind: KeyKind) -> Result<Option<KeyId>, HsmError>;

    /// Generates a new key inside the provider; `Err(HsmError::KeyExists)` if
    /// the label is taken for that kind. The same label may name one key of
    /// each kind.
    fn generate_key(&self, label: &KeyLabel, kind: KeyKind) -> Result<KeyId, HsmError>;

    /// AES-256-GCM encrypts `plaintext` under an [`KeyKind::Aes256`] key,
    /// binding `aad`. Returns an opaque, versioned blob (`0x01 || 12-byte IV ||
    /// ciphertext || 16-byte tag`) that only [`KeyProvider::unwrap`] with the
    /// same key and `aad` opens. Each call uses a fresh random IV, so wrapping
    /// the same plaintext twice gives different blobs.
    fn wrap(&self, key: &KeyId, plaintext: &SecretBytes, aad: &[u8]) -> Result<Vec<u8>, HsmError>;

    /// Inverse of [`KeyProvider::wrap`]. A tampered or truncated blob, wrong
    /// `aad` or wrong key is `Err(HsmError::Unwrap)`, whatever the bytes; it
    /// never panics.
    fn unwrap(&self, key: &KeyId, blob: &[u8], aad: &[u8]) -> Result<SecretBytes, HsmError>;

    /// ECDSA P-256 with SHA-256 over `message` with an [`KeyKind::EcdsaP256`]
    /// key. The signature is the fixed-width `r || s` (64 bytes).
    fn sign(&self, key: &KeyId, message: &[u8]) -> Result<Vec<u8>, HsmError>;

    /// Checks a signature made by [`KeyProvider::sign`]. A bad or malformed
    /// signature is `Ok(false)`, not an error; errors mean the check could not
    /// be made.
    fn verify(&self, key: &KeyId, message: &[u8], signature: &[u8]) -> Result<bool, HsmError>;

    /// Finds the key, generating it if absent: what a node does on first boot.
    ///
    /// When another process generates the same key between our find and
    /// generate, its key is returned instead of an error.
    fn find_or_generate_key(&self, label: &KeyLabel, kind: KeyKind) -> Result<KeyId, HsmError> {
        if let Some(key) = self.find_key(label, kind)? {
            return Ok(key);
        }
        match self.generate_key(label, kind) {
            Err(HsmError::KeyExists { .. }) => {
                self.find_key(label, kind)?
                    .ok_or_else(|| HsmError::KeyNotFound {
                        label: label.clone(),
                    })
            }
            result => result,
        }
    }
}
