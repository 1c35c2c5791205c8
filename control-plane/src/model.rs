//! What the control plane holds: the keys of its registers and the values
//! they take.
//!
//! **Sovereignty by construction.** These types, with [`crate::Hlc`] and the
//! CRDT clocks around them, are everything a cell ever sends another
//! (`crate::replica::Entry`, `crate::replica::StateSnapshot`). None of them
//! has a place for key material, a secret value, a token or a lease: a policy
//! is its text, a mount is its type and settings, a role is the parameters of
//! a role endpoint, a revocation names what it kills by accessor, lease path,
//! identity or role. A cell's keys, secrets, tokens and leases stay in its own
//! Raft state, which no control-plane message reads.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Hlc;

/// The longest name, path or identifier a key or value may hold, in bytes.
pub const MAX_NAME_BYTES: usize = 1_024;
/// The longest text a value may hold (a policy document, a description), in bytes.
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// The most entries in a value's map or list (role parameters, metadata).
pub const MAX_ITEMS: usize = 1_024;

/// Why a key or value is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error(
        "{0} is not a valid cell id: 1 to 63 lowercase letters, digits or '-', not at either end"
    )]
    CellId(String),
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} has {len} items; at most {max} are allowed")]
    TooMany {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("a {value} value cannot be stored under a {key} key")]
    Mismatch { key: Kind, value: Kind },
    #[error("a revocation must expire after it was issued")]
    RevocationExpiry,
    #[error("a revocation cannot be deleted: it is lifted, or it expires")]
    RevocationDelete,
}

/// A cell's name, which is also its actor in every CRDT clock: the region
/// name by convention (`eu-west`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CellId(String);

impl CellId {
    pub fn new(id: impl Into<String>) -> Result<Self, ModelError> {
        let id = id.into();
        let ok = (1..=63).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !id.starts_with('-')
            && !id.ends_with('-');
        if ok {
            Ok(Self(id))
        } else {
            Err(ModelError::CellId(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The least valid id: every other sorts after it.
    pub(crate) fn least() -> Self {
        Self("0".to_owned())
    }
}

impl TryFrom<String> for CellId {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<CellId> for String {
    fn from(c: CellId) -> Self {
        c.0
    }
}

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The two mount tables: secrets engines and auth methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MountTable {
    Secrets,
    Auth,
}

/// The kinds of thing the control plane holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Policy,
    Mount,
    Role,
    Cell,
    Namespace,
    Revocation,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Policy => "policy",
            Self::Mount => "mount",
            Self::Role => "role",
            Self::Cell => "cell",
            Self::Namespace => "namespace",
            Self::Revocation => "revocation",
        })
    }
}

/// The name of one register.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Key {
    /// An ACL policy, by name.
    Policy { name: String },
    /// A global mount, by table and path (`payments-db/`).
    Mount { table: MountTable, path: String },
    /// A role of a global mount (`database` roles, AppRole and JWT roles).
    Role {
        table: MountTable,
        mount: String,
        name: String,
    },
    /// A cell of the federation.
    Cell { id: CellId },
    /// A namespace, by path.
    Namespace { path: String },
    /// A revocation record, by id.
    Revocation { id: String },
}

impl Key {
    pub fn kind(&self) -> Kind {
        match self {
            Self::Policy { .. } => Kind::Policy,
            Self::Mount { .. } => Kind::Mount,
            Self::Role { .. } => Kind::Role,
            Self::Cell { .. } => Kind::Cell,
            Self::Namespace { .. } => Kind::Namespace,
            Self::Revocation { .. } => Kind::Revocation,
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Self::Policy { name } => name_ok("policy name", name),
            Self::Mount { path, .. } => name_ok("mount path", path),
            Self::Role { mount, name, .. } => {
                name_ok("mount path", mount)?;
                name_ok("role name", name)
            }
            Self::Cell { .. } => Ok(()),
            Self::Namespace { path } => name_ok("namespace path", path),
            Self::Revocation { id } => name_ok("revocation id", id),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = |t: &MountTable| match t {
            MountTable::Secrets => "",
            MountTable::Auth => "auth/",
        };
        match self {
            Self::Policy { name } => write!(f, "policy {name}"),
            Self::Mount { table: t, path } => write!(f, "mount {}{path}", table(t)),
            Self::Role {
                table: t,
                mount,
                name,
            } => write!(f, "role {}{mount}{name}", table(t)),
            Self::Cell { id } => write!(f, "cell {id}"),
            Self::Namespace { path } => write!(f, "namespace {path}"),
            Self::Revocation { id } => write!(f, "revocation {id}"),
        }
    }
}

/// An ACL policy document, as its author wrote it (HCL or JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDoc {
    pub text: String,
}

/// A global mount's configuration. Each cell that has the mount keeps its own
/// data and its own keys under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountConfig {
    /// The engine or auth method type (`kv`, `transit`, `database`, `approle`, `jwt`).
    pub engine: String,
    pub description: String,
    pub default_lease_ttl_s: u64,
    pub max_lease_ttl_s: u64,
    /// Engine options (`version = "2"` for kv).
    pub options: BTreeMap<String, String>,
}

/// One parameter of a role definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Param {
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<String>),
    /// A structured value (a JWT role's `bound_claims`), as JSON text. Kept
    /// as text rather than a recursive type so that decoding a peer's
    /// message can never recurse without bound.
    Json(String),
}

/// A role of a global mount: the parameters its role endpoint was written
/// with. The cell decides, per engine, which parameters a role may share; a
/// role never holds credentials (a database role names statements, not
/// passwords; an AppRole role is not its secret IDs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleConfig {
    pub engine: String,
    pub params: BTreeMap<String, Param>,
}

/// Whether a cell takes traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CellStatus {
    Active,
    Draining,
    Retired,
}

/// A cell's entry in the registry. Each cell writes only its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellInfo {
    pub region: String,
    /// Client-facing API addresses (`https://host:8200`).
    pub api_addrs: Vec<String>,
    /// Cluster-port addresses, where control-plane sync is served.
    pub cluster_addrs: Vec<String>,
    pub status: CellStatus,
}

/// A namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceInfo {
    pub custom_metadata: BTreeMap<String, String>,
}

/// Revoke what matches (and let new logins in), or also refuse new logins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevocationKind {
    Revoke,
    Quarantine,
}

/// What a revocation kills.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevocationTarget {
    /// A token, by accessor (never the token itself).
    Accessor(String),
    /// One lease, by id.
    LeaseId(String),
    /// Every lease under a path (`database/creds/payments/`).
    LeasePrefix(String),
    /// An identity pattern, glob allowed (`spiffe://prod.example/ns/payments/*`).
    Identity(String),
    /// A role of a mount.
    Role { mount: String, role: String },
    /// An X.509 certificate, by serial number.
    CertSerial(String),
}

/// A revocation record. Its expiry is the longest TTL it can affect; after
/// it, the record is garbage-collected everywhere. Lifting a quarantine
/// writes the record again with `lifted` set and the same expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    pub kind: RevocationKind,
    pub target: RevocationTarget,
    pub reason: String,
    /// Everything matching that was issued at or before this dies.
    pub issued_at: Hlc,
    /// Milliseconds since the Unix epoch after which the record is dropped.
    pub expires_ms: u64,
    pub lifted: bool,
}

/// A register's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Policy(PolicyDoc),
    Mount(MountConfig),
    Role(RoleConfig),
    Cell(CellInfo),
    Namespace(NamespaceInfo),
    Revocation(RevocationRecord),
}

impl Value {
    pub fn kind(&self) -> Kind {
        match self {
            Self::Policy(_) => Kind::Policy,
            Self::Mount(_) => Kind::Mount,
            Self::Role(_) => Kind::Role,
            Self::Cell(_) => Kind::Cell,
            Self::Namespace(_) => Kind::Namespace,
            Self::Revocation(_) => Kind::Revocation,
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Self::Policy(p) => text_ok("policy text", &p.text),
            Self::Mount(m) => {
                name_ok("engine type", &m.engine)?;
                text_ok("description", &m.description)?;
                map_ok("mount options", &m.options)
            }
            Self::Role(r) => {
                name_ok("engine type", &r.engine)?;
                items_ok("role parameters", r.params.len())?;
                for (k, v) in &r.params {
                    name_ok("role parameter name", k)?;
                    match v {
                        Param::Str(s) | Param::Json(s) => text_ok("role parameter", s)?,
                        Param::List(l) => {
                            items_ok("role parameter list", l.len())?;
                            l.iter().try_for_each(|s| text_ok("role parameter", s))?;
                        }
                        Param::Bool(_) | Param::Int(_) => {}
                    }
                }
                Ok(())
            }
            Self::Cell(c) => {
                text_ok("region", &c.region)?;
                items_ok("addresses", c.api_addrs.len() + c.cluster_addrs.len())?;
                c.api_addrs
                    .iter()
                    .chain(&c.cluster_addrs)
                    .try_for_each(|a| name_ok("address", a))
            }
            Self::Namespace(n) => map_ok("namespace metadata", &n.custom_metadata),
            Self::Revocation(r) => {
                text_ok("reason", &r.reason)?;
                match &r.target {
                    RevocationTarget::Accessor(s)
                    | RevocationTarget::LeaseId(s)
                    | RevocationTarget::LeasePrefix(s)
                    | RevocationTarget::Identity(s)
                    | RevocationTarget::CertSerial(s) => name_ok("revocation target", s)?,
                    RevocationTarget::Role { mount, role } => {
                        name_ok("mount path", mount)?;
                        name_ok("role name", role)?;
                    }
                }
                if r.expires_ms <= r.issued_at.wall_ms {
                    return Err(ModelError::RevocationExpiry);
                }
                Ok(())
            }
        }
    }
}

/// Checks that `value` (or a deletion, `None`) may be stored under `key`.
pub fn validate_put(key: &Key, value: Option<&Value>) -> Result<(), ModelError> {
    key.validate()?;
    if value.is_none() && key.kind() == Kind::Revocation {
        return Err(ModelError::RevocationDelete);
    }
    if let Some(v) = value {
        if v.kind() != key.kind() {
            return Err(ModelError::Mismatch {
                key: key.kind(),
                value: v.kind(),
            });
        }
        v.validate()?;
    }
    Ok(())
}

fn name_ok(what: &'static str, s: &str) -> Result<(), ModelError> {
    if s.is_empty() {
        return Err(ModelError::Empty { what });
    }
    if s.len() > MAX_NAME_BYTES {
        return Err(ModelError::TooLong {
            what,
            len: s.len(),
            max: MAX_NAME_BYTES,
        });
    }
    Ok(())
}

fn text_ok(what: &'static str, s: &str) -> Result<(), ModelError> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(ModelError::TooLong {
            what,
            len: s.len(),
            max: MAX_TEXT_BYTES,
        });
    }
    Ok(())
}

fn items_ok(what: &'static str, len: usize) -> Result<(), ModelError> {
    if len > MAX_ITEMS {
        return Err(ModelError::TooMany {
            what,
            len,
            max: MAX_ITEMS,
        });
    }
    Ok(())
}

fn map_ok(what: &'static str, m: &BTreeMap<String, String>) -> Result<(), ModelError> {
    items_ok(what, m.len())?;
    for (k, v) in m {
        name_ok(what, k)?;
        text_ok(what, v)?;
    }
    Ok(())
}
