//! The node's revocation filter: the control plane's revocation records
//! (`Key::Revocation`), which every cell holds durably and sync spreads to
//! every cell, and the records the revocation mesh brought before the
//! replica holds them (docs/architecture.md, "The revocation mesh").
//!
//! Every node rebuilds its filter from its cell's replica before its
//! pipeline serves a first request, and again whenever the replica's
//! version vector moves, so a node restarted after a revocation enforces
//! it from the start. A record heard from the mesh is enforced the moment
//! it arrives and kept across rebuilds until the replica holds it. The
//! request path asks the filter about the calling token (accessor,
//! identity, role, creation time) and, at login, whether a quarantine
//! refuses the identity or role.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use sigil_gossip::mesh::Mesh;

use sigil_control_plane::model::{RevocationKind, RevocationRecord, RevocationTarget};
use sigil_control_plane::{Key, Kind, Value};
use sigil_gossip::{Credential, Filter, Revocation, Target};

use crate::api_error::ApiError;
use crate::control_plane::ControlPlane;
use crate::token::TokenEntry;

/// A filter record as the control plane holds it (the inverse of
/// [`to_filter_record`]: records are issued at logical time 0).
pub fn from_filter_record(r: &Revocation) -> RevocationRecord {
    RevocationRecord {
        kind: match r.kind {
            sigil_gossip::Kind::Revoke => RevocationKind::Revoke,
            sigil_gossip::Kind::Quarantine => RevocationKind::Quarantine,
        },
        target: match &r.target {
            Target::Accessor(a) => RevocationTarget::Accessor(a.clone()),
            Target::LeaseId(l) => RevocationTarget::LeaseId(l.clone()),
            Target::LeasePrefix(p) => RevocationTarget::LeasePrefix(p.clone()),
            Target::Identity(i) => RevocationTarget::Identity(i.clone()),
            Target::Role { mount, role } => RevocationTarget::Role {
                mount: mount.clone(),
                role: role.clone(),
            },
            Target::CertSerial(s) => RevocationTarget::CertSerial(s.clone()),
        },
        reason: r.reason.clone(),
        issued_at: sigil_control_plane::Hlc::new(r.issued_at_ms, 0),
        expires_ms: r.expires_ms,
        lifted: r.lifted,
    }
}

/// A control-plane record as the filter holds it.
pub fn to_filter_record(id: &str, r: &RevocationRecord) -> Revocation {
    Revocation {
        id: id.to_owned(),
        kind: match r.kind {
            RevocationKind::Revoke => sigil_gossip::Kind::Revoke,
            RevocationKind::Quarantine => sigil_gossip::Kind::Quarantine,
        },
        target: match &r.target {
            RevocationTarget::Accessor(a) => Target::Accessor(a.clone()),
            RevocationTarget::LeaseId(l) => Target::LeaseId(l.clone()),
            RevocationTarget::LeasePrefix(p) => Target::LeasePrefix(p.clone()),
            RevocationTarget::Identity(i) => Target::Identity(i.clone()),
            RevocationTarget::Role { mount, role } => Target::Role {
                mount: mount.clone(),
                role: role.clone(),
            },
            RevocationTarget::CertSerial(s) => Target::CertSerial(s.clone()),
        },
        reason: r.reason.clone(),
        issued_at_ms: r.issued_at.wall_ms,
        expires_ms: r.expires_ms,
        lifted: r.lifted,
    }
}

/// The mount and role a token was issued through, as revocation records
/// name them: `auth/approle/` and `billing` for a token from
/// `auth/approle/login` with role `billing`; `auth/token/` and the role for
/// `auth/token/create/<role>`.
pub fn token_role(entry: &TokenEntry) -> Option<(&str, &str)> {
    let role = entry.role.as_deref()?;
    if entry.path.starts_with("auth/token/create/") {
        return Some(("auth/token/", role));
    }
    // The mount is the path up to and with its last `/`.
    let end = entry.path.rfind('/')? + 1;
    Some((&entry.path[..end], role))
}

/// When a token was issued, in milliseconds: its recorded creation time,
/// or, for tokens recorded before milliseconds were kept, the start of its
/// creation second (which errs towards treating it as older).
pub fn token_issued_ms(entry: &TokenEntry) -> u64 {
    if entry.created_ms > 0 {
        entry.created_ms
    } else {
        u64::try_from(entry.created_unix).unwrap_or(0) * 1_000
    }
}

#[derive(Debug, Default)]
struct Loaded {
    filter: Filter,
    /// The stored replica version the filter was built from.
    from: Option<Vec<u8>>,
}

/// The revocations a node enforces.
#[derive(Debug, Default)]
pub struct Revocations {
    loaded: RwLock<Loaded>,
    /// Records heard from the mesh that the replica did not hold (at that
    /// version) when last rebuilt.
    heard: RwLock<HashMap<String, Revocation>>,
    /// The node's share of the mesh, once it runs.
    mesh: OnceLock<Arc<Mesh>>,
}

impl Revocations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands records this node learns from its cell to the mesh from now on.
    pub fn attach_mesh(&self, mesh: Arc<Mesh>) {
        let _ = self.mesh.set(mesh);
    }

    pub fn mesh(&self) -> Option<&Arc<Mesh>> {
        self.mesh.get()
    }

    /// Enforces records heard from the mesh, at once.
    pub fn hear(&self, records: &[Revocation]) {
        let mut heard = self.heard.write().unwrap_or_else(|p| p.into_inner());
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        for r in records {
            loaded.filter.insert(r.clone());
            heard.insert(r.id.clone(), r.clone());
        }
    }

    /// A record this cell just committed (issued or lifted here): the mesh
    /// takes it to every cell from this node.
    pub fn originate(&self, id: &str, record: &RevocationRecord) {
        if let Some(mesh) = self.mesh.get()
            && let Err(e) = mesh.learn(to_filter_record(id, record), true)
        {
            tracing::error!(revocation = %id, error = %e, "a committed revocation is not a valid mesh record");
        }
    }

    /// Rebuilds the filter from the replica if the replica moved since the
    /// last build. Returns whether it rebuilt.
    pub async fn reload(&self, control: &ControlPlane) -> Result<bool, ApiError> {
        let version = control.stored_version()?;
        let known = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .from
            .clone();
        if known.is_some() && known == version {
            return Ok(false);
        }
        let mut filter = control
            .read(|r| {
                let mut filter = Filter::new();
                for (k, _) in r.state().registers() {
                    if k.kind() != Kind::Revocation {
                        continue;
                    }
                    if let (Key::Revocation { id }, Some(Value::Revocation(rec))) =
                        (k, r.state().get(k))
                    {
                        filter.insert(to_filter_record(id, &rec));
                    }
                }
                filter
            })
            .await?;
        let stored: Vec<Revocation> = if self.mesh.get().is_some() {
            filter.records().cloned().collect()
        } else {
            Vec::new()
        };
        {
            // Heard records stay enforced until the replica holds them.
            let now = sigil_control_plane::sync::now_ms();
            let mut heard = self.heard.write().unwrap_or_else(|p| p.into_inner());
            heard.retain(|id, r| {
                let held = filter.get(id).is_some_and(|s| s.version() >= r.version());
                r.expires_ms > now && !held
            });
            for r in heard.values() {
                filter.insert(r.clone());
            }
            let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
            loaded.filter = filter;
            loaded.from = version;
        }
        // What the replica brought (sync from another cell, a commit by
        // another node here) spreads on the mesh too; known records stop
        // at once.
        if let Some(mesh) = self.mesh.get() {
            for r in stored {
                let _ = mesh.learn(r, false);
            }
        }
        Ok(true)
    }

    /// Forgets what was built (the node sealed, or its state was replaced).
    pub fn clear(&self) {
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Loaded::default();
    }

    /// Whether a record kills this token: its accessor, the identity it was
    /// issued to, or the role it came through, issued at or before it.
    pub fn is_revoked(&self, entry: &TokenEntry) -> bool {
        let c = Credential {
            accessor: Some(entry.accessor.as_str()).filter(|a| !a.is_empty()),
            identity: entry.identity.as_deref(),
            role: token_role(entry),
            issued_at_ms: token_issued_ms(entry),
            ..Credential::default()
        };
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        loaded.filter.revoked(&c).is_some()
    }

    /// The id of the quarantine that refuses a new login of `identity`
    /// through `role` of the auth mount at `mount` (`auth/approle/`), if
    /// any.
    pub fn login_refused(
        &self,
        identity: Option<&str>,
        mount: &str,
        role: Option<&str>,
        now_ms: u64,
    ) -> Option<String> {
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        loaded
            .filter
            .login_refused(identity, role.map(|r| (mount, r)), now_ms)
            .map(|r| r.id.clone())
    }

    /// How many records this node enforces.
    pub fn held(&self) -> usize {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .filter
            .len()
    }

    /// Whether this node enforces the record `id`.
    pub fn enforces(&self, id: &str) -> bool {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .filter
            .get(id)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, role: Option<&str>) -> TokenEntry {
        TokenEntry {
            hash: "h".into(),
            accessor: "acc".into(),
            parent: None,
            policies: vec!["default".into()],
            display_name: "t".into(),
            meta: Default::default(),
            created_unix: 1_700_000_000,
            created_ms: 0,
            ttl: 0,
            expire_unix: None,
            explicit_max_ttl: 0,
            max_expire_unix: None,
            period: 0,
            renewable: false,
            num_uses: 0,
            initial_num_uses: 0,
            role: role.map(str::to_owned),
            path: path.into(),
            identity: Some("approle:billing".into()),
            entity_id: String::new(),
            auth_mount: None,
            bound_cidrs: Vec::new(),
        }
    }

    #[test]
    fn a_token_names_the_mount_and_role_it_came_through() {
        assert_eq!(
            token_role(&entry("auth/approle/login", Some("billing"))),
            Some(("auth/approle/", "billing"))
        );
        assert_eq!(
            token_role(&entry("auth/token/create/ci", Some("ci"))),
            Some(("auth/token/", "ci"))
        );
        assert_eq!(token_role(&entry("auth/token/create", None)), None);
    }

    #[test]
    fn issue_time_falls_back_to_the_start_of_the_creation_second() {
        let mut e = entry("auth/approle/login", None);
        assert_eq!(token_issued_ms(&e), 1_700_000_000_000);
        e.created_ms = 1_700_000_000_456;
        assert_eq!(token_issued_ms(&e), 1_700_000_000_456);
    }

    #[test]
    fn the_filter_kills_a_token_issued_before_and_spares_one_after() {
        let revs = Revocations::new();
        let rec = RevocationRecord {
            kind: RevocationKind::Revoke,
            target: RevocationTarget::Role {
                mount: "auth/approle/".into(),
                role: "billing".into(),
            },
            reason: "leak".into(),
            issued_at: sigil_control_plane::Hlc::new(1_700_000_000_500, 0),
            expires_ms: 1_800_000_000_000,
            lifted: false,
        };
        revs.loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .filter
            .insert(to_filter_record("r1", &rec));
        let mut before = entry("auth/approle/login", Some("billing"));
        before.created_ms = 1_700_000_000_400;
        let mut after = before.clone();
        after.created_ms = 1_700_000_000_600;
        assert!(revs.is_revoked(&before));
        assert!(!revs.is_revoked(&after));
        assert!(revs.enforces("r1"));
        assert_eq!(revs.held(), 1);
    }
}
