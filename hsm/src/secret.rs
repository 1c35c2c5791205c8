//! Zeroizing containers for key material.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// Bytes that must never be logged, compared in variable time or left in memory.
///
/// * zeroized on drop;
/// * `Debug` prints `[redacted]`;
/// * equality is constant time;
/// * the bytes are reachable only through [`SecretBytes::expose`], whose call
///   sites must say why they need them.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; the caller's buffer is moved, not copied.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret. Prefer [`SecretBytes::new`] when the
    /// source can be moved, so no unzeroized copy is left behind.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// `len` bytes from the system CSPRNG (aws-lc-rs).
    pub fn random(len: usize) -> Self {
        let mut buf = Zeroizing::new(vec![0u8; len]);
        aws_lc_rs::rand::fill(&mut buf).expect("system random number generator failed");
        Self(buf)
    }

    /// The raw bytes. Every caller is a place where key material is used for
    /// cryptography or handed to the HSM; keep them few.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes; not secret.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for SecretBytes {}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Zeroize for SecretBytes {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

/// A secret string (PINs, tokens) with the same guarantees as [`SecretBytes`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(SecretBytes);

impl SecretString {
    /// Takes ownership of `s`; the caller's buffer is moved, not copied.
    pub fn new(s: String) -> Self {
        Self(SecretBytes::new(s.into_bytes()))
    }

    /// The string. Callers hand it to a library that needs it (a PIN to the
    /// HSM, a token to a hash); they never log it.
    pub fn expose(&self) -> &str {
        // The bytes were a `String` when they came in and are never mutated.
        std::str::from_utf8(self.0.expose()).unwrap_or_default()
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        Self::new(s.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let s = SecretBytes::copy_from(b"hunter2-canary");
        assert_eq!(format!("{s:?}"), "[redacted]");
        let p = SecretString::from("pin-1234");
        assert_eq!(format!("{p:?}"), "[redacted]");
    }

    #[test]
    fn equality_compares_content() {
        assert_eq!(
            SecretBytes::copy_from(b"abc"),
            SecretBytes::copy_from(b"abc")
        );
        assert_ne!(
            SecretBytes::copy_from(b"abc"),
            SecretBytes::copy_from(b"abd")
        );
        assert_ne!(
            SecretBytes::copy_from(b"abc"),
            SecretBytes::copy_from(b"abcd")
        );
    }

    #[test]
    fn random_is_random() {
        let a = SecretBytes::random(32);
        let b = SecretBytes::random(32);
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
