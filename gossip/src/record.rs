//! A revocation record: what it kills, since when, until when, and why.
//!
//! Records travel between every node of every cell, so they carry no
//! secret: a token is named by its accessor, a lease by its id or path
//! prefix, a workload by the identity recorded on its tokens.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest id, target or reason a record may carry, in bytes.
pub const MAX_FIELD_BYTES: usize = 1_024;

/// `Revoke`: everything matching that was issued at or before the record
/// dies; new logins are let in (rotate after a compromise). `Quarantine`:
/// the same, and new logins of the identity or role are refused until the
/// record is lifted or expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    Revoke,
    Quarantine,
}

/// What a record kills.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    /// A token, by accessor (never the token itself).
    Accessor(String),
    /// One lease, by id.
    LeaseId(String),
    /// Every lease under a path, segment by segment (`database/creds/payments`
    /// covers `database/creds/payments/<id>`, not `database/creds/payments-2/..`).
    LeasePrefix(String),
    /// Identities matching a pattern: segments separated by `/`; `*` inside
    /// a segment matches any run of characters of that segment; a last
    /// segment of exactly `*` matches one or more further segments
    /// (`spiffe://prod.example/ns/payments/*`). Without `*`, one identity
    /// (`approle:billing`).
    Identity(String),
    /// Tokens and leases issued through one role of one mount
    /// (`auth/approle/`, `billing`).
    Role { mount: String, role: String },
    /// An X.509 certificate, by serial number (lowercase hex).
    CertSerial(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Accessor(a) => write!(f, "accessor {a}"),
            Self::LeaseId(l) => write!(f, "lease {l}"),
            Self::LeasePrefix(p) => write!(f, "leases under {p}"),
            Self::Identity(i) => write!(f, "identity {i}"),
            Self::Role { mount, role } => write!(f, "role {mount}{role}"),
            Self::CertSerial(s) => write!(f, "certificate {s}"),
        }
    }
}

/// One revocation. Its id is unique in the federation (the origin cell
/// makes it); a record is only ever replaced by the same record lifted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Revocation {
    pub id: String,
    pub kind: Kind,
    pub target: Target,
    pub reason: String,
    /// Milliseconds since the Unix epoch: credentials issued at or before
    /// this die.
    pub issued_at_ms: u64,
    /// After this the record is dropped everywhere: the longest a
    /// credential it can affect may live, or the end of a quarantine.
    pub expires_ms: u64,
    /// A lifted quarantine lets new logins in again; what it killed stays
    /// dead.
    pub lifted: bool,
}

/// Why a record is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{what} is {len} bytes long; at most {MAX_FIELD_BYTES} are allowed")]
    TooLong { what: &'static str, len: usize },
    #[error("a revocation must expire after it was issued")]
    Expiry,
    #[error("only a quarantine can be lifted")]
    LiftedRevoke,
    #[error("{0}")]
    Pattern(String),
}

fn field(what: &'static str, s: &str) -> Result<(), RecordError> {
    if s.is_empty() {
        return Err(RecordError::Empty(what));
    }
    if s.len() > MAX_FIELD_BYTES {
        return Err(RecordError::TooLong { what, len: s.len() });
    }
    Ok(())
}

impl Revocation {
    /// Checks a record from a client or a peer before it is enforced.
    pub fn validate(&self) -> Result<(), RecordError> {
        field("id", &self.id)?;
        if self.reason.len() > MAX_FIELD_BYTES {
            return Err(RecordError::TooLong {
                what: "reason",
                len: self.reason.len(),
            });
        }
        match &self.target {
            Target::Accessor(s) | Target::LeaseId(s) | Target::CertSerial(s) => field("target", s)?,
            Target::LeasePrefix(p) => {
                field("lease prefix", p)?;
                if p.trim_matches('/').is_empty() {
                    return Err(RecordError::Pattern(
                        "a lease prefix must name at least one path segment".into(),
                    ));
                }
            }
            Target::Identity(p) => {
                field("identity pattern", p)?;
                if p.split('/').all(|seg| seg.chars().all(|c| c == '*')) {
                    return Err(RecordError::Pattern(
                        "an identity pattern must have a literal part: it would match every identity"
                            .into(),
                    ));
                }
            }
            Target::Role { mount, role } => {
                field("mount", mount)?;
                field("role", role)?;
            }
        }
        if self.expires_ms <= self.issued_at_ms {
            return Err(RecordError::Expiry);
        }
        if self.lifted && self.kind == Kind::Revoke {
            return Err(RecordError::LiftedRevoke);
        }
        Ok(())
    }

    /// The version of the record: a lifted record replaces the unlifted one.
    pub fn version(&self) -> u8 {
        u8::from(self.lifted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(id: &str, target: Target) -> Revocation {
        Revocation {
            id: id.into(),
            kind: Kind::Revoke,
            target,
            reason: "test".into(),
            issued_at_ms: 1_000,
            expires_ms: 10_000,
            lifted: false,
        }
    }

    #[test]
    fn bad_records_are_refused_by_name() {
        assert_eq!(record("r", Target::Accessor("a".into())).validate(), Ok(()));
        let mut r = record("", Target::Accessor("a".into()));
        assert_eq!(r.validate(), Err(RecordError::Empty("id")));
        r.id = "r".into();
        r.expires_ms = r.issued_at_ms;
        assert_eq!(r.validate(), Err(RecordError::Expiry));
        r.expires_ms = 5_000;
        r.lifted = true;
        assert_eq!(r.validate(), Err(RecordError::LiftedRevoke));
        r.kind = Kind::Quarantine;
        assert_eq!(r.validate(), Ok(()));
        for t in [
            Target::Identity("*".into()),
            Target::Identity("*/*".into()),
            Target::LeasePrefix("/".into()),
            Target::Role {
                mount: "auth/approle/".into(),
                role: String::new(),
            },
            Target::CertSerial("x".repeat(MAX_FIELD_BYTES + 1)),
        ] {
            assert!(record("r", t.clone()).validate().is_err(), "{t}");
        }
    }
}
