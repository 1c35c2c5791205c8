//! AES-256-GCM with random 96-bit nonces, the one symmetric primitive of the
//! node (aws-lc-rs). Blobs are `nonce (12) || ciphertext || tag (16)`.
//!
//! Random nonces bound the number of encryptions under one key: NIST SP
//! 800-38D §8.3 caps it at 2^32, which the barrier's keyring stays well below
//! by rotating terms automatically.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sigil_hsm::SecretBytes;
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AeadError {
    #[error("key must be 32 bytes")]
    KeyLength,
    /// Wrong key, wrong associated data, or tampered ciphertext: deliberately
    /// indistinguishable.
    #[error("message authentication failed")]
    Authentication,
}

/// A ready-to-use AES-256-GCM key (the expanded key schedule is kept so hot
/// paths do not re-derive it).
pub struct AeadKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey([redacted])")
    }
}

impl AeadKey {
    pub fn new(key: &SecretBytes) -> Result<Self, AeadError> {
        if key.len() != KEY_LEN {
            return Err(AeadError::KeyLength);
        }
        let unbound =
            UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| AeadError::KeyLength)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Encrypts `plaintext`, appending `nonce || ciphertext || tag` to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("system random number generator failed");
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (_, body) = out.split_at_mut(start + NONCE_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
            .expect("AES-GCM sealing cannot fail for in-range lengths");
        out.extend_from_slice(tag.as_ref());
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Decrypts a blob made by [`AeadKey::seal`]. The plaintext is returned
    /// in a zeroizing buffer since it is often key material.
    pub fn open(&self, aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, AeadError> {
        if blob.len() < OVERHEAD {
            return Err(AeadError::Authentication);
        }
        let (nonce, body) = blob.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| AeadError::Authentication)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| AeadError::Authentication)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// One-shot seal under a raw key (key-encryption keys, root key).
pub fn seal(key: &SecretBytes, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
    Ok(AeadKey::new(key)?.seal(aad, plaintext))
}

/// One-shot open under a raw key.
pub fn open(key: &SecretBytes, aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, AeadError> {
    AeadKey::new(key)?.open(aad, blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = SecretBytes::random(32);
        let blob = seal(&key, b"aad", b"hello").expect("seal");
        assert_eq!(blob.len(), 5 + OVERHEAD);
        assert_eq!(
            open(&key, b"aad", &blob).expect("open").as_slice(),
            b"hello"
        );
        assert_eq!(open(&key, b"other", &blob), Err(AeadError::Authentication));
        for i in 0..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 0x01;
            assert_eq!(
                open(&key, b"aad", &t),
                Err(AeadError::Authentication),
                "bit flip at {i}"
            );
        }
        assert_eq!(
            open(&key, b"aad", &blob[..10]),
            Err(AeadError::Authentication)
        );
        let other = SecretBytes::random(32);
        assert_eq!(open(&other, b"aad", &blob), Err(AeadError::Authentication));
        assert_ne!(
            seal(&key, b"aad", b"hello").expect("seal"),
            blob,
            "random nonce"
        );
        assert_eq!(
            seal(&SecretBytes::random(16), b"", b""),
            Err(AeadError::KeyLength)
        );
    }
}
