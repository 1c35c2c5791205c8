//! A node's certificate and key for the cluster port.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::error::PkiError;
use super::identity::NodeIdentity;
use super::pem::{self, Overwrite};
use super::private_key::PrivateKey;

/// A node's leaf certificate, its private key, and the identity the
/// certificate carries. Constructing one checks that the key matches the
/// certificate and that the certificate names a node, so a node with a
/// wrong file fails at start-up rather than at its first handshake.
pub struct NodeCertificate {
    identity: NodeIdentity,
    certificate: CertificateDer<'static>,
    key: PrivateKey,
    /// The key parsed once for rustls, shared by every config built from
    /// this certificate.
    certified: Arc<CertifiedKey>,
}

impl NodeCertificate {
    /// File name [`Self::write_to`] gives the certificate.
    pub const CERT_FILE: &'static str = "node.pem";
    /// File name [`Self::write_to`] gives the key (mode 0600).
    pub const KEY_FILE: &'static str = "node-key.pem";

    pub fn new(
        certificate: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, PkiError> {
        let key = PrivateKey::new(key);
        let identity = NodeIdentity::from_der(&certificate)?;
        let certified = CertifiedKey::from_der(
            vec![certificate.clone()],
            key.to_rustls(),
            &crate::tls::provider(),
        )?;
        Ok(Self {
            identity,
            certificate,
            key,
            certified: Arc::new(certified),
        })
    }

    /// Loads the certificate and key from PEM files.
    pub fn load(cert_pem_path: &Path, key_pem_path: &Path) -> Result<Self, PkiError> {
        let certificate = pem::read_certificate(cert_pem_path)?;
        let key = pem::read_private_key(key_pem_path)?;
        let in_file = |problem: String| PkiError::File {
            path: cert_pem_path.to_owned(),
            problem,
        };
        Self::new(certificate, key).map_err(|e| match e {
            PkiError::Tls(e) => in_file(format!(
                "does not match the key in {}: {e}",
                key_pem_path.display()
            )),
            e @ PkiError::NoIdentity { .. } => in_file(e.to_string()),
            e => e,
        })
    }

    /// Writes [`Self::CERT_FILE`] and [`Self::KEY_FILE`] into `dir`,
    /// replacing earlier ones (renewal), and returns their paths.
    pub fn write_to(&self, dir: &Path) -> Result<(PathBuf, PathBuf), PkiError> {
        // The key goes first: a crash in between leaves a new key with the
        // old certificate, which NodeCertificate::load reports as a
        // mismatch, rather than a new certificate nobody holds the key of.
        let key = pem::write_file(
            dir,
            Self::KEY_FILE,
            self.key.to_pem().as_bytes(),
            pem::KEY_FILE_MODE,
            Overwrite::Allow,
        )?;
        let cert = pem::write_file(
            dir,
            Self::CERT_FILE,
            self.certificate_pem().as_bytes(),
            pem::CERT_FILE_MODE,
            Overwrite::Allow,
        )?;
        Ok((cert, key))
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    pub fn certificate_pem(&self) -> String {
        pem::encode("CERTIFICATE", &self.certificate).to_string()
    }

    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    pub(super) fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }
}

impl fmt::Debug for NodeCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCertificate")
            .field("identity", &self.identity.spiffe_id())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
