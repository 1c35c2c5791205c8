//! The cell CA: one per cell, the only trust anchor of its cluster port.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroize;

use super::error::PkiError;
use super::identity::{CellId, NodeId, NodeIdentity};
use super::node_certificate::NodeCertificate;
use super::pem::{self, Overwrite};
use super::private_key::PrivateKey;

/// How long a generated CA is valid. Replacing a cell CA means reissuing
/// every node certificate, so it is long.
const CA_VALIDITY: Duration = Duration::days(10 * 365);
/// How long a node certificate is valid.
const NODE_VALIDITY: Duration = Duration::days(365);
/// Certificates start a little in the past so a peer whose clock is behind
/// ours does not reject a certificate issued a moment ago.
const CLOCK_SKEW: Duration = Duration::minutes(5);

/// The cell CA's certificate: what every node needs to verify its peers.
#[derive(Clone)]
pub struct CaCertificate {
    der: CertificateDer<'static>,
    subject: String,
}

impl CaCertificate {
    /// Accepts `der` if it parses and is marked as a CA.
    pub fn from_der(der: CertificateDer<'static>) -> Result<Self, PkiError> {
        let not_ca = |what: String| PkiError::NotCa { what };
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| not_ca(format!("unparseable certificate ({e})")))?;
        let subject = parsed.subject().to_string();
        let is_ca = matches!(parsed.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        if !is_ca {
            return Err(not_ca(format!("certificate {subject:?}")));
        }
        Ok(Self { der, subject })
    }

    /// Loads the certificate from a PEM file holding exactly one.
    pub fn load(cert_pem_path: &Path) -> Result<Self, PkiError> {
        let der = pem::read_certificate(cert_pem_path)?;
        Self::from_der(der).map_err(|e| PkiError::File {
            path: cert_pem_path.to_owned(),
            problem: e.to_string(),
        })
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    pub fn pem(&self) -> String {
        pem::encode("CERTIFICATE", &self.der).to_string()
    }

    /// The subject distinguished name, for logs and errors.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl fmt::Debug for CaCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaCertificate")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// The cell CA: its certificate and signing key. Only the node (or
/// operator tool) that issues node certificates holds one.
pub struct CellCa {
    certificate: CaCertificate,
    key: KeyPair,
}

impl CellCa {
    /// File name [`Self::write_to`] gives the CA certificate.
    pub const CERT_FILE: &'static str = "cluster-ca.pem";
    /// File name [`Self::write_to`] gives the CA key (mode 0600).
    pub const KEY_FILE: &'static str = "cluster-ca-key.pem";

    /// A new ECDSA P-256 CA whose subject names `cell`. It may sign node
    /// certificates only (path length 0), not further CAs.
    pub fn generate(cell: &CellId) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&format!("sigil cell {cell} cluster CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            certificate: CaCertificate::from_der(cert.der().clone())?,
            key,
        })
    }

    /// Loads an operator-supplied CA: a PEM file with its certificate and
    /// one with its private key (PKCS#8, SEC1 or PKCS#1). The key must
    /// match the certificate.
    pub fn load(cert_pem_path: &Path, key_pem_path: &Path) -> Result<Self, PkiError> {
        let certificate = CaCertificate::load(cert_pem_path)?;
        let mut key_der = pem::read_private_key(key_pem_path)?;
        let checked = rustls::sign::CertifiedKey::from_der(
            vec![certificate.der.clone()],
            key_der.clone_key(),
            &crate::tls::provider(),
        )
        .map(|_| ());
        let key = KeyPair::try_from(&key_der);
        key_der.zeroize();
        let file_error = |problem: String| PkiError::File {
            path: key_pem_path.to_owned(),
            problem,
        };
        checked.map_err(|e| {
            file_error(format!(
                "does not match the CA certificate in {}: {e}",
                cert_pem_path.display()
            ))
        })?;
        let key = key.map_err(|e| file_error(format!("unusable CA key: {e}")))?;
        Ok(Self { certificate, key })
    }

    /// Writes [`Self::CERT_FILE`] and [`Self::KEY_FILE`] (mode 0600) into
    /// `dir` and returns their paths. Existing files are never replaced: a
    /// new CA over an old one would strand every node certificate the old
    /// one issued.
    pub fn write_to(&self, dir: &Path) -> Result<(PathBuf, PathBuf), PkiError> {
        for name in [Self::CERT_FILE, Self::KEY_FILE] {
            let path = dir.join(name);
            if path.exists() {
                return Err(PkiError::Write {
                    path,
                    source: std::io::ErrorKind::AlreadyExists.into(),
                });
            }
        }
        let key = pem::write_file(
            dir,
            Self::KEY_FILE,
            self.private_key().to_pem().as_bytes(),
            pem::KEY_FILE_MODE,
            Overwrite::Refuse,
        )?;
        let cert = pem::write_file(
            dir,
            Self::CERT_FILE,
            self.certificate.pem().as_bytes(),
            pem::CERT_FILE_MODE,
            Overwrite::Refuse,
        )?;
        Ok((cert, key))
    }

    pub fn certificate(&self) -> &CaCertificate {
        &self.certificate
    }

    /// Issues a node certificate for `node` of `cell`: a fresh ECDSA P-256
    /// key, the identity as the only URI SAN, `hosts` (IP addresses or DNS
    /// names peers dial) as IP/DNS SANs, and both the server and client
    /// authentication purposes, since every node is both.
    pub fn issue_node(
        &self,
        cell: &CellId,
        node: &NodeId,
        hosts: &[String],
    ) -> Result<NodeCertificate, PkiError> {
        let identity = NodeIdentity::new(cell.clone(), node.clone());
        let mut sans = vec![SanType::URI(
            identity
                .spiffe_id()
                .try_into()
                .map_err(PkiError::Generate)?,
        )];
        if hosts.is_empty() {
            return Err(PkiError::NoHosts);
        }
        for host in hosts {
            sans.push(host_san(host)?);
        }

        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name =
            distinguished_name(&format!("sigil node {node} of cell {cell}"));
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + NODE_VALIDITY;
        params.serial_number = Some(random_serial()?);

        // Read issuer name and key identifier back from the certificate, so
        // a generated and a loaded CA issue alike and the chain links by the
        // exact bytes of the CA's subject.
        let issuer = Issuer::from_ca_cert_der(self.certificate.der(), &self.key)?;
        let mut key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        key.zeroize();
        NodeCertificate::new(cert.der().clone(), key_der)
    }

    fn private_key(&self) -> PrivateKey {
        PrivateKey::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            self.key.serialize_der(),
        )))
    }
}

impl Drop for CellCa {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for CellCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CellCa")
            .field("certificate", &self.certificate)
            .field("key", &"[redacted]")
            .finish()
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Sigil");
    name.push(DnType::CommonName, common_name);
    name
}

/// An IP SAN for an address, a DNS SAN for a hostname, anything else refused.
fn host_san(host: &str) -> Result<SanType, PkiError> {
    let invalid = |reason| PkiError::InvalidHost {
        host: host.to_owned(),
        reason,
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    // rustls's server name grammar is the one a dialling peer's name has
    // to pass, so a SAN it rejects could never be matched anyway.
    match rustls::pki_types::ServerName::try_from(host) {
        Ok(rustls::pki_types::ServerName::DnsName(_)) => {}
        _ => return Err(invalid("not an IP address or DNS name")),
    }
    if host.contains('*') {
        return Err(invalid("wildcards are not allowed"));
    }
    let name = host
        .to_owned()
        .try_into()
        .map_err(|_| invalid("not an ASCII DNS name"))?;
    Ok(SanType::DnsName(name))
}

/// 126 random bits: RFC 5280 §4.1.2.2 asks for a positive serial unique per
/// CA, and random ones stay unique without a counter to persist. The top
/// bit is cleared (positive) and the next one set (never zero, always 16
/// bytes).
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PkiError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::extensions::GeneralName;

    fn cell(s: &str) -> CellId {
        CellId::new(s).expect("cell id")
    }

    fn node(s: &str) -> NodeId {
        NodeId::new(s).expect("node id")
    }

    fn hosts() -> Vec<String> {
        vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "::1".to_owned(),
        ]
    }

    #[test]
    fn generated_ca_names_its_cell_and_is_a_ca() {
        let ca = CellCa::generate(&cell("eu-1")).expect("generate");
        assert!(
            ca.certificate()
                .subject()
                .contains("sigil cell eu-1 cluster CA")
        );
        let (_, parsed) =
            x509_parser::parse_x509_certificate(ca.certificate().der()).expect("parse");
        let bc = parsed.basic_constraints().expect("bc").expect("present");
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        assert!(format!("{ca:?}").contains("[redacted]"));
    }

    #[test]
    fn node_certificate_carries_identity_hosts_and_both_purposes() {
        let ca = CellCa::generate(&cell("eu-1")).expect("generate");
        let issued = ca
            .issue_node(&cell("eu-1"), &node("n1"), &hosts())
            .expect("issue");
        assert_eq!(issued.identity().cell, "eu-1");
        assert_eq!(issued.identity().node, "n1");
        let (_, parsed) = x509_parser::parse_x509_certificate(issued.certificate()).expect("parse");
        let san = parsed
            .subject_alternative_name()
            .expect("san")
            .expect("present");
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::URI(u) => format!("uri:{u}"),
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "uri:spiffe://eu-1.sigil/node/n1".to_owned(),
                format!("ip:{:?}", [127u8, 0, 0, 1]),
                "dns:localhost".to_owned(),
                format!("ip:{:?}", std::net::Ipv6Addr::LOCALHOST.octets()),
            ]
        );
        let eku = parsed.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.server_auth && eku.value.client_auth);
        let bc = parsed.basic_constraints().expect("bc").expect("present");
        assert!(!bc.value.ca);
        assert_eq!(parsed.issuer().to_string(), ca.certificate().subject());
        assert!(format!("{issued:?}").contains("[redacted]"));
    }

    #[test]
    fn serials_are_distinct() {
        let ca = CellCa::generate(&cell("c")).expect("generate");
        let serial = |n: &str| {
            let issued = ca
                .issue_node(&cell("c"), &node(n), &hosts())
                .expect("issue");
            let (_, parsed) =
                x509_parser::parse_x509_certificate(issued.certificate()).expect("parse");
            parsed.raw_serial().to_vec()
        };
        assert_ne!(serial("a"), serial("b"));
    }

    #[test]
    fn malformed_ids_and_hosts_are_rejected_at_issue_time() {
        let ca = CellCa::generate(&cell("c")).expect("generate");
        for bad in ["Node_1", "", "-x", "a/b", "a.b"] {
            assert!(
                matches!(
                    bad.parse::<NodeId>(),
                    Err(PkiError::InvalidId { kind: "node", .. })
                ),
                "{bad:?}"
            );
            assert!(
                matches!(
                    bad.parse::<CellId>(),
                    Err(PkiError::InvalidId { kind: "cell", .. })
                ),
                "{bad:?}"
            );
        }
        for bad in [
            "",
            "bad host",
            "*.example.com",
            "exa mple",
            "ünicode.example",
            "http://x",
        ] {
            let err = ca
                .issue_node(&cell("c"), &node("n"), &[bad.to_owned()])
                .expect_err(bad);
            assert!(
                matches!(err, PkiError::InvalidHost { .. }),
                "{bad:?}: {err}"
            );
        }
        assert!(matches!(
            ca.issue_node(&cell("c"), &node("n"), &[]),
            Err(PkiError::NoHosts)
        ));
    }

    #[test]
    fn ca_round_trips_through_files_with_a_private_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CellCa::generate(&cell("c")).expect("generate");
        let (cert_path, key_path) = ca.write_to(dir.path()).expect("write");
        let mode = std::fs::metadata(&key_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(&cert_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);

        let loaded = CellCa::load(&cert_path, &key_path).expect("load");
        assert_eq!(loaded.certificate().der(), ca.certificate().der());
        // A node certificate from the loaded CA names the same issuer and
        // verifies under the original certificate (checked by rustls in
        // the config tests); here, the issuer bytes match exactly.
        let issued = loaded
            .issue_node(&cell("c"), &node("n"), &hosts())
            .expect("issue");
        let (_, leaf) = x509_parser::parse_x509_certificate(issued.certificate()).expect("leaf");
        let (_, root) = x509_parser::parse_x509_certificate(ca.certificate().der()).expect("root");
        assert_eq!(leaf.issuer().as_raw(), root.subject().as_raw());

        // A second CA is not written over the first.
        let other = CellCa::generate(&cell("c")).expect("generate");
        let err = other.write_to(dir.path()).expect_err("exists");
        assert!(matches!(err, PkiError::Write { .. }), "{err}");
        let reloaded = CellCa::load(&cert_path, &key_path).expect("load");
        assert_eq!(reloaded.certificate().der(), ca.certificate().der());
    }

    #[test]
    fn load_refuses_a_key_of_another_ca_and_a_leaf_as_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = tempfile::tempdir_in(dir.path()).expect("a");
        let b = tempfile::tempdir_in(dir.path()).expect("b");
        let ca_a = CellCa::generate(&cell("c")).expect("a");
        let ca_b = CellCa::generate(&cell("c")).expect("b");
        let (cert_a, _) = ca_a.write_to(a.path()).expect("write a");
        let (_, key_b) = ca_b.write_to(b.path()).expect("write b");
        let err = CellCa::load(&cert_a, &key_b).expect_err("mismatch");
        assert!(err.to_string().contains("does not match"), "{err}");

        let issued = ca_a
            .issue_node(&cell("c"), &node("n"), &hosts())
            .expect("issue");
        let (leaf_cert, leaf_key) = issued.write_to(dir.path()).expect("write leaf");
        let err = CellCa::load(&leaf_cert, &leaf_key).expect_err("leaf");
        assert!(err.to_string().contains("not a CA"), "{err}");

        let err = CellCa::load(&dir.path().join("missing.pem"), &leaf_key).expect_err("missing");
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn node_certificate_round_trips_through_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CellCa::generate(&cell("c")).expect("generate");
        let issued = ca
            .issue_node(&cell("c"), &node("n"), &hosts())
            .expect("issue");
        let (cert, key) = issued.write_to(dir.path()).expect("write");
        let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = NodeCertificate::load(&cert, &key).expect("load");
        assert_eq!(loaded.identity(), issued.identity());
        assert_eq!(loaded.certificate(), issued.certificate());
        assert_eq!(loaded.key(), issued.key());

        // Renewal replaces both files.
        let renewed = ca
            .issue_node(&cell("c"), &node("n"), &hosts())
            .expect("renew");
        renewed.write_to(dir.path()).expect("rewrite");
        let loaded = NodeCertificate::load(&cert, &key).expect("load renewed");
        assert_eq!(loaded.certificate(), renewed.certificate());

        // A key that does not belong to the certificate is refused.
        let other = ca
            .issue_node(&cell("c"), &node("m"), &hosts())
            .expect("other");
        let other_dir = tempfile::tempdir().expect("tempdir");
        let (_, other_key) = other.write_to(other_dir.path()).expect("write other");
        let err = NodeCertificate::load(&cert, &other_key).expect_err("mismatch");
        assert!(
            err.to_string().contains("does not match the key in"),
            "{err}"
        );
    }
}
