//! The wrapped-secret format shared by every provider.
//!
//! ```text
//! version (1 byte, 0x01) || IV (12 bytes) || ciphertext (n bytes) || GCM tag (16 bytes)
//! ```
//!
//! The version byte lets a later format (another AEAD, a key-version field)
//! coexist with blobs already stored in the Raft log. It is not covered by
//! the tag, so a parser must accept exactly the versions it knows.

use crate::HsmError;

/// The only version this crate writes and reads.
const VERSION: u8 = 1;
/// AES-GCM IV length: 96 bits, the length GCM is defined for without GHASH
/// of the IV (NIST SP 800-38D, section 5.2.1.1).
pub(crate) const IV_LEN: usize = 12;
/// AES-GCM tag length: the full 128 bits.
pub(crate) const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + IV_LEN;

/// A parsed blob, borrowing the ciphertext from the input.
#[derive(Debug)]
pub(crate) struct Blob<'a> {
    pub(crate) iv: [u8; IV_LEN],
    /// Ciphertext followed by the tag, as AEAD APIs (aws-lc-rs `open_in_place`,
    /// PKCS#11 `C_Decrypt` with `CKM_AES_GCM`) expect it.
    pub(crate) sealed: &'a [u8],
}

impl<'a> Blob<'a> {
    /// Splits `blob`; anything malformed is `Unwrap`, the same error as a bad
    /// tag, so callers learn nothing about why.
    pub(crate) fn parse(blob: &'a [u8]) -> Result<Self, HsmError> {
        let (&version, rest) = blob.split_first().ok_or(HsmError::Unwrap)?;
        if version != VERSION || rest.len() < IV_LEN + TAG_LEN {
            return Err(HsmError::Unwrap);
        }
        let (iv, sealed) = rest.split_at(IV_LEN);
        let iv = iv.try_into().map_err(|_| HsmError::Unwrap)?;
        Ok(Self { iv, sealed })
    }

    /// Writes the header and returns the buffer for the caller to append the
    /// ciphertext and tag to.
    pub(crate) fn start(iv: &[u8; IV_LEN], sealed_len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + sealed_len);
        out.push(VERSION);
        out.extend_from_slice(iv);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_fields() {
        let mut blob = Blob::start(&[7; IV_LEN], 20);
        blob.extend_from_slice(&[9; 20]);
        let parsed = Blob::parse(&blob).expect("well formed");
        assert_eq!(parsed.iv, [7; IV_LEN]);
        assert_eq!(parsed.sealed, &[9; 20][..]);
    }

    #[test]
    fn parse_rejects_short_and_unknown_versions() {
        assert!(matches!(Blob::parse(&[]), Err(HsmError::Unwrap)));
        let mut blob = Blob::start(&[0; IV_LEN], TAG_LEN);
        blob.extend_from_slice(&[0; TAG_LEN - 1]);
        assert!(matches!(Blob::parse(&blob), Err(HsmError::Unwrap)));
        blob.push(0);
        assert!(Blob::parse(&blob).is_ok());
        blob[0] = 2;
        assert!(matches!(Blob::parse(&blob), Err(HsmError::Unwrap)));
    }
}
