//! Who a node is: its cell and node ids, written into its certificate as a
//! SPIFFE ID, `spiffe://<cell>.sigil/node/<node>`.
//!
//! SPIFFE (SPIFFE-ID.md §2) puts the trust domain in the authority and the
//! workload in the path; the cell is our trust domain, so each cell's CA
//! vouches for one trust domain and a peer names its cell in the part of the
//! ID a CA of another trust domain has no business signing. X509-SVID.md §2
//! requires exactly one URI SAN, which [`NodeIdentity::from_der`] enforces.

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use super::error::PkiError;

const SCHEME: &str = "spiffe://";
const TRUST_DOMAIN_SUFFIX: &str = ".sigil";
const NODE_PATH: &str = "/node/";
const MAX_ID_LEN: usize = 63;

/// Checks the grammar shared by cell and node ids: one DNS label
/// (RFC 1123 §2.1) in lower case, so that an id is valid both as part of
/// a SPIFFE trust domain and as a path segment, and reads the same
/// everywhere it is printed.
fn check_label(kind: &'static str, value: &str) -> Result<(), PkiError> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_ID_LEN {
        Some("must be at most 63 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("only lowercase letters a-z, digits and '-' are allowed")
    } else if value.starts_with('-') || value.ends_with('-') {
        Some("must not start or end with '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PkiError::InvalidId {
            kind,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

macro_rules! label_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, PkiError> {
                let value = value.into();
                check_label($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = PkiError;

            fn from_str(s: &str) -> Result<Self, PkiError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

label_id!(
    /// A cell's id: 1 to 63 of `a-z`, `0-9` and `-`, not starting or ending
    /// with `-`.
    CellId,
    "cell"
);

label_id!(
    /// A node's id within its cell, with the grammar of [`CellId`].
    NodeId,
    "node"
);

/// The identity a node certificate carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeIdentity {
    pub cell: CellId,
    pub node: NodeId,
}

impl NodeIdentity {
    pub fn new(cell: CellId, node: NodeId) -> Self {
        Self { cell, node }
    }

    /// The SPIFFE ID, `spiffe://<cell>.sigil/node/<node>`.
    pub fn spiffe_id(&self) -> String {
        format!(
            "{SCHEME}{}{TRUST_DOMAIN_SUFFIX}{NODE_PATH}{}",
            self.cell, self.node
        )
    }

    /// Parses a SPIFFE ID of the form [`Self::spiffe_id`] writes. Anything
    /// else is refused, including other letter cases, ports, queries and
    /// extra path segments: a peer's identity has exactly one spelling.
    pub fn parse_spiffe_id(uri: &str) -> Result<Self, PkiError> {
        let refuse = |reason: &str| PkiError::NoIdentity {
            reason: format!(
                "URI SAN {uri:?} is not of the form spiffe://<cell>.sigil/node/<node>: {reason}"
            ),
        };
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| refuse("not a spiffe:// URI"))?;
        let (trust_domain, path) = rest
            .find('/')
            .map(|at| rest.split_at(at))
            .ok_or_else(|| refuse("no path"))?;
        let cell = trust_domain
            .strip_suffix(TRUST_DOMAIN_SUFFIX)
            .ok_or_else(|| refuse("the trust domain is not <cell>.sigil"))?;
        let node = path
            .strip_prefix(NODE_PATH)
            .ok_or_else(|| refuse("the path is not /node/<node>"))?;
        let cell = CellId::new(cell).map_err(|e| refuse(&e.to_string()))?;
        let node = NodeId::new(node).map_err(|e| refuse(&e.to_string()))?;
        Ok(Self { cell, node })
    }

    /// The identity in a DER certificate's single URI SAN. The certificate
    /// may come from a peer and is not trusted to be well formed: every
    /// problem is an error, never a panic. This reads the identity only;
    /// whether the certificate is trusted is for the TLS verifier to decide.
    pub fn from_der(cert: &CertificateDer<'_>) -> Result<Self, PkiError> {
        let malformed = |e: &dyn fmt::Display| PkiError::NoIdentity {
            reason: format!("malformed certificate: {e}"),
        };
        let (rest, parsed) =
            x509_parser::parse_x509_certificate(cert).map_err(|e| malformed(&e))?;
        if !rest.is_empty() {
            return Err(malformed(&"trailing bytes after the certificate"));
        }
        let san = parsed
            .subject_alternative_name()
            .map_err(|e| malformed(&e))?
            .ok_or_else(|| PkiError::NoIdentity {
                reason: "no subject alternative name extension".to_owned(),
            })?;
        let mut uris = san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            });
        match (uris.next(), uris.next()) {
            (Some(uri), None) => Self::parse_spiffe_id(uri),
            (None, _) => Err(PkiError::NoIdentity {
                reason: "no URI subject alternative name".to_owned(),
            }),
            (Some(_), Some(_)) => Err(PkiError::NoIdentity {
                reason: "more than one URI subject alternative name".to_owned(),
            }),
        }
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spiffe_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_follow_the_dns_label_grammar() {
        for good in ["a", "eu-west-1", "node-0", "0", &"a".repeat(63)] {
            assert!(CellId::new(good).is_ok(), "{good}");
            assert!(NodeId::new(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("Node1", "lowercase"),
            ("node_1", "lowercase"),
            ("node.1", "lowercase"),
            ("node/1", "lowercase"),
            ("nöde", "lowercase"),
            ("-node", "start or end"),
            ("node-", "start or end"),
            (&"a".repeat(64), "63"),
        ] {
            match NodeId::new(bad) {
                Err(PkiError::InvalidId {
                    kind: "node",
                    value,
                    reason,
                }) => {
                    assert_eq!(value, bad);
                    assert!(reason.contains(why), "{bad:?}: {reason}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let err = "Cell!".parse::<CellId>().expect_err("invalid");
        assert!(
            err.to_string().starts_with("invalid cell id \"Cell!\""),
            "{err}"
        );
    }

    #[test]
    fn spiffe_id_has_one_spelling() {
        let id = NodeIdentity::new(
            CellId::new("eu-1").expect("cell"),
            NodeId::new("n2").expect("node"),
        );
        assert_eq!(id.spiffe_id(), "spiffe://eu-1.sigil/node/n2");
        assert_eq!(id.to_string(), id.spiffe_id());
        assert_eq!(
            NodeIdentity::parse_spiffe_id(&id.spiffe_id()).expect("parse"),
            id
        );
        for bad in [
            "spiffe://eu-1.sigil/node/n2/",
            "spiffe://eu-1.sigil/node/n2/x",
            "spiffe://eu-1.sigil/node/",
            "spiffe://eu-1.sigil/nodes/n2",
            "spiffe://eu-1.sigil",
            "spiffe://eu-1.sigil:443/node/n2",
            "spiffe://eu-1.example/node/n2",
            "spiffe://EU-1.sigil/node/n2",
            "SPIFFE://eu-1.sigil/node/n2",
            "https://eu-1.sigil/node/n2",
            "spiffe://.sigil/node/n2",
            "spiffe://a.b.sigil/node/n2",
            "spiffe://eu-1.sigil/node/n2?x=1",
            "",
        ] {
            assert!(
                matches!(
                    NodeIdentity::parse_spiffe_id(bad),
                    Err(PkiError::NoIdentity { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn garbage_certificates_are_errors() {
        for bytes in [
            &b""[..],
            b"\x30",
            b"\x30\x03\x02\x01\x01",
            b"not a certificate",
        ] {
            let err = NodeIdentity::from_der(&CertificateDer::from(bytes)).expect_err("garbage");
            assert!(err.to_string().contains("malformed certificate"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn parsing_any_uri_never_panics(uri in ".{0,80}") {
            let _ = NodeIdentity::parse_spiffe_id(&uri);
        }

        #[test]
        fn parsing_any_der_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = NodeIdentity::from_der(&CertificateDer::from(bytes));
        }

        #[test]
        fn valid_ids_round_trip(cell in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", node in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            let id = NodeIdentity::new(CellId::new(cell).expect("cell"), NodeId::new(node).expect("node"));
            prop_assert_eq!(NodeIdentity::parse_spiffe_id(&id.spiffe_id()).expect("parse"), id);
        }
    }
}
