//! A node's private key as a secret type.

use std::fmt;

use rustls::pki_types::PrivateKeyDer;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A private key in DER (PKCS#8, SEC1 or PKCS#1). It is wiped from memory
/// when dropped, prints as `[redacted]`, and compares in constant time.
///
/// The copies it hands to rustls ([`Self::to_rustls`]) are parsed into
/// aws-lc keys, which aws-lc wipes when freed; the DER copy itself is
/// dropped by rustls without wiping, which its API leaves us no way to change.
pub struct PrivateKey(Zeroizing<PrivateKeyDer<'static>>);

impl PrivateKey {
    pub fn new(der: PrivateKeyDer<'static>) -> Self {
        Self(Zeroizing::new(der))
    }

    /// A copy for rustls, which takes its keys by value.
    pub fn to_rustls(&self) -> PrivateKeyDer<'static> {
        self.0.clone_key()
    }

    /// The key as PEM, for writing it to a key file: the one place the
    /// secret leaves memory on purpose.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let label = match &*self.0 {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        super::pem::encode(label, self.0.secret_der())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey([redacted])")
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.secret_der().ct_eq(other.0.secret_der()).into()
    }
}

impl Eq for PrivateKey {}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivatePkcs8KeyDer;

    #[test]
    fn debug_is_redacted_and_pem_round_trips() {
        let key = PrivateKey::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![
            0x30, 0x01, 0xaa,
        ])));
        assert_eq!(format!("{key:?}"), "PrivateKey([redacted])");
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        use rustls::pki_types::pem::PemObject;
        let back = PrivateKey::new(PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("pem"));
        assert_eq!(back, key);
        assert_ne!(
            back,
            PrivateKey::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![0x30])))
        );
    }
}
