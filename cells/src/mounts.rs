//! Mount tables: which engine serves which path.
//!
//! Two tables, as in Vault: secrets engines (`sys/mounts`) and auth methods
//! (`sys/auth`, routed under `auth/`). Both are stored in the barrier. Each
//! mount's data lives under its own UUID (`mount/<uuid>/` or `auth/<uuid>/`),
//! not under its path, so a remount is a table change and never moves data.
//! Routing picks the longest mount path that prefixes the request path,
//! segment-aligned (docs/architecture.md, "Router").

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api_error::ApiError;

/// Default and maximum lease TTL when a mount sets none: 32 days, as Vault.
pub const SYSTEM_DEFAULT_TTL: u64 = 32 * 24 * 3600;

/// Which table a mount belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    Secrets,
    Auth,
}

/// Per-mount tuning, as `sys/mounts/:path/tune` reads and writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MountConfig {
    /// Seconds; 0 means the system default.
    pub default_lease_ttl: u64,
    /// Seconds; 0 means the system default.
    pub max_lease_ttl: u64,
    pub force_no_cache: bool,
    pub audit_non_hmac_request_keys: Vec<String>,
    pub audit_non_hmac_response_keys: Vec<String>,
    pub listing_visibility: String,
    pub passthrough_request_headers: Vec<String>,
    pub allowed_response_headers: Vec<String>,
}

impl MountConfig {
    pub fn effective_default_ttl(&self) -> u64 {
        match self.default_lease_ttl {
            0 => self.effective_max_ttl().min(SYSTEM_DEFAULT_TTL),
            t => t,
        }
    }

    pub fn effective_max_ttl(&self) -> u64 {
        match self.max_lease_ttl {
            0 => SYSTEM_DEFAULT_TTL,
            t => t,
        }
    }
}

/// One mounted engine or auth method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    pub table: Table,
    /// Ends with `/`; relative to `auth/` for auth mounts.
    pub path: String,
    #[serde(rename = "type")]
    pub mount_type: String,
    pub description: String,
    pub uuid: String,
    pub accessor: String,
    pub config: MountConfig,
    pub options: BTreeMap<String, String>,
    pub local: bool,
    pub seal_wrap: bool,
    pub external_entropy_access: bool,
    /// Exists in every federated cell (its configuration is control-plane
    /// state; each cell holds its own data and keys under it).
    #[serde(default)]
    pub global: bool,
}

impl MountEntry {
    pub fn new(table: Table, path: &str, mount_type: &str) -> Self {
        let uuid = uuid::Uuid::new_v4().to_string();
        let accessor = format!(
            "{}_{}",
            if table == Table::Auth {
                format!("auth_{mount_type}")
            } else {
                mount_type.to_owned()
            },
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            table,
            path: normalise_mount_path(path),
            mount_type: mount_type.to_owned(),
            description: String::new(),
            uuid,
            accessor,
            config: MountConfig::default(),
            options: BTreeMap::new(),
            local: false,
            seal_wrap: false,
            external_entropy_access: false,
            global: false,
        }
    }

    /// The prefix of request paths this mount serves (`auth/token/` for an
    /// auth mount at `token/`).
    pub fn route_prefix(&self) -> String {
        match self.table {
            Table::Secrets => self.path.clone(),
            Table::Auth => format!("auth/{}", self.path),
        }
    }

    /// The barrier prefix of the mount's private data.
    pub fn storage_prefix(&self) -> String {
        match self.table {
            Table::Secrets => format!("mount/{}/", self.uuid),
            Table::Auth => format!("auth/{}/", self.uuid),
        }
    }

    /// System mounts that exist once per node and cannot be disabled or
    /// moved.
    pub fn is_singleton(&self) -> bool {
        matches!(
            (self.table, self.mount_type.as_str()),
            (Table::Secrets, "system" | "cubbyhole" | "identity") | (Table::Auth, "token")
        )
    }
}

/// `secret` → `secret/`; leading and repeated slashes removed.
pub fn normalise_mount_path(path: &str) -> String {
    let mut p: String = path
        .split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    p.push('/');
    p
}

/// Checks a path for a new mount in `table` against the existing mounts.
pub fn check_new_mount_path(
    table: Table,
    path: &str,
    existing: &[MountEntry],
) -> Result<String, ApiError> {
    let p = normalise_mount_path(path);
    if p == "/" {
        return Err(ApiError::InvalidRequest(
            "mount path cannot be empty".into(),
        ));
    }
    crate::logical::check_path(&p)?;
    if table == Table::Secrets {
        for reserved in ["sys/", "auth/", "cubbyhole/", "identity/"] {
            if p.starts_with(reserved) {
                return Err(ApiError::InvalidRequest(format!(
                    "cannot mount under reserved path {reserved:?}"
                )));
            }
        }
    }
    for m in existing.iter().filter(|m| m.table == table) {
        if m.path.starts_with(&p) || p.starts_with(&m.path) {
            return Err(ApiError::InvalidRequest(format!(
                "path is already in use at {}",
                m.path
            )));
        }
    }
    Ok(p)
}

/// The two tables and the routing index built from them. Immutable: a change
/// builds a new `Router` and swaps it in.
#[derive(Debug, Clone, Default)]
pub struct Router {
    by_prefix: BTreeMap<String, Arc<MountEntry>>,
}

impl Router {
    pub fn new(entries: impl IntoIterator<Item = MountEntry>) -> Self {
        let by_prefix = entries
            .into_iter()
            .map(|m| (m.route_prefix(), Arc::new(m)))
            .collect();
        Self { by_prefix }
    }

    /// The mount serving `path` and the path relative to it. `secret` (no
    /// slash) routes to `secret/` with an empty relative path.
    pub fn route<'p>(&self, path: &'p str) -> Option<(Arc<MountEntry>, &'p str)> {
        // Candidate prefixes end at each `/`, longest first, then the whole
        // path with a slash added.
        let with_slash = format!("{path}/");
        if !path.ends_with('/')
            && let Some(m) = self.by_prefix.get(&with_slash)
        {
            return Some((m.clone(), ""));
        }
        let mut end = path.len();
        while let Some(i) = path[..end].rfind('/') {
            if let Some(m) = self.by_prefix.get(&path[..=i]) {
                return Some((m.clone(), &path[i + 1..]));
            }
            end = i;
        }
        None
    }

    pub fn entries(&self, table: Table) -> Vec<MountEntry> {
        self.by_prefix
            .values()
            .filter(|m| m.table == table)
            .map(|m| (**m).clone())
            .collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<MountEntry>> {
        self.by_prefix.values()
    }

    /// The mount at exactly `path` in `table`.
    pub fn get(&self, table: Table, path: &str) -> Option<Arc<MountEntry>> {
        let p = normalise_mount_path(path);
        let key = match table {
            Table::Secrets => p,
            Table::Auth => format!("auth/{p}"),
        };
        self.by_prefix
            .get(&key)
            .filter(|m| m.table == table)
            .cloned()
    }
}

/// The mounts of a freshly initialised node: `sys/`, `cubbyhole/` and the
/// token auth method, plus `secret/` (KV version 2) when asked, as a dev
/// server has.
pub fn default_mounts(with_secret_kv: bool) -> Vec<MountEntry> {
    let mut sys = MountEntry::new(Table::Secrets, "sys/", "system");
    sys.description = "system endpoints used for control, policy and debugging".into();
    let mut cubby = MountEntry::new(Table::Secrets, "cubbyhole/", "cubbyhole");
    cubby.description = "per-token private secret storage".into();
    cubby.local = true;
    let mut token = MountEntry::new(Table::Auth, "token/", "token");
    token.description = "token based credentials".into();
    let mut out = vec![sys, cubby, token];
    if with_secret_kv {
        let mut kv = MountEntry::new(Table::Secrets, "secret/", "kv");
        kv.description = "key/value secret storage".into();
        kv.options.insert("version".into(), "2".into());
        out.push(kv);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let mut v = default_mounts(true);
        v.push(MountEntry::new(Table::Secrets, "team/a/kv", "kv"));
        v.push(MountEntry::new(Table::Secrets, "team/ab/", "kv"));
        Router::new(v)
    }

    #[test]
    fn routes_by_longest_segment_aligned_prefix() {
        let r = router();
        let cases = [
            ("secret/data/foo", Some(("secret/", "data/foo"))),
            ("secret/", Some(("secret/", ""))),
            ("secret", Some(("secret/", ""))),
            ("secretx/data", None),
            ("team/a/kv/x/y", Some(("team/a/kv/", "x/y"))),
            ("team/ab/x", Some(("team/ab/", "x"))),
            ("team/a/x", None),
            ("auth/token/create", Some(("auth/token/", "create"))),
            ("token/create", None),
            ("sys/mounts/secret", Some(("sys/", "mounts/secret"))),
        ];
        for (path, want) in cases {
            let got = r
                .route(path)
                .map(|(m, rel)| (m.route_prefix(), rel.to_owned()));
            assert_eq!(
                got,
                want.map(|(m, rel)| (m.to_owned(), rel.to_owned())),
                "{path}"
            );
        }
    }

    #[test]
    fn new_mounts_may_not_overlap_or_take_reserved_paths() {
        let existing = router().entries(Table::Secrets);
        assert_eq!(
            check_new_mount_path(Table::Secrets, "/kv2//", &existing).expect("ok"),
            "kv2/"
        );
        for bad in [
            "secret",
            "secret/sub",
            "team",
            "sys/x",
            "auth/x",
            "cubbyhole",
            "",
            "/",
            "a/../b",
        ] {
            assert!(
                check_new_mount_path(Table::Secrets, bad, &existing).is_err(),
                "{bad}"
            );
        }
        let auth = router().entries(Table::Auth);
        assert!(check_new_mount_path(Table::Auth, "token", &auth).is_err());
        assert!(check_new_mount_path(Table::Auth, "approle", &auth).is_ok());
    }

    #[test]
    fn data_lives_under_the_uuid_and_accessors_name_the_type() {
        let m = MountEntry::new(Table::Auth, "approle", "approle");
        assert_eq!(m.route_prefix(), "auth/approle/");
        assert_eq!(m.storage_prefix(), format!("auth/{}/", m.uuid));
        assert!(m.accessor.starts_with("auth_approle_"));
        assert_eq!(
            MountConfig::default().effective_default_ttl(),
            SYSTEM_DEFAULT_TTL
        );
        let c = MountConfig {
            max_lease_ttl: 60,
            ..MountConfig::default()
        };
        assert_eq!(c.effective_default_ttl(), 60);
    }
}
