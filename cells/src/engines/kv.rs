//! The KV secrets engine, versions 1 and 2 on one engine (docs/engines/kv.md).
//!
//! The mount's `version` option picks the behaviour: version 1 keeps one
//! value per key (a [`FlatStore`] under `data/`), version 2 keeps versions
//! and metadata ([`v2`]). Tuning a mount from version 1 to 2 upgrades its
//! data in place ([`Engine::options_changed`]); going back is refused.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use futures::future::BoxFuture;
use tokio::sync::{Mutex, MutexGuard};

use crate::api_error::ApiError;
use crate::duration::parse_duration;
use crate::engine::{Engine, EngineCtx};
use crate::engines::flat::FlatStore;
use crate::logical::{Lease, Operation, Request, Response};
use crate::mounts::MountEntry;
use crate::view::BarrierView;

mod fields;
mod merge_patch;
mod metadata;
mod v2;

pub use merge_patch::merge_patch;

/// Where version 1 keeps its values inside the mount's view.
const V1_PREFIX: &str = "data";
/// Lock stripes: writes to one key are serialised, different keys rarely
/// wait for each other.
const LOCK_STRIPES: usize = 64;

/// Which API a KV mount speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvVersion {
    V1,
    V2,
}

impl KvVersion {
    /// From mount options: `version` absent or empty is 1, as Vault.
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        match options.get("version").map(|v| v.trim()) {
            None | Some("" | "1") => Ok(KvVersion::V1),
            Some("2") => Ok(KvVersion::V2),
            Some(other) => Err(ApiError::InvalidRequest(format!(
                "invalid kv version {other:?}: must be \"1\" or \"2\""
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            KvVersion::V1 => "1",
            KvVersion::V2 => "2",
        }
    }
}

/// Per-key write locks, striped by a hash of the mount's prefix and the
/// key. They make version 2's read-modify-write of a key's metadata atomic
/// on this node; across a cell, writes are ordered by Raft.
#[derive(Debug)]
pub(crate) struct KeyLocks {
    stripes: Vec<Mutex<()>>,
}

impl Default for KeyLocks {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyLocks {
    pub(crate) fn new() -> Self {
        Self {
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    pub(crate) async fn lock(&self, scope: &str, key: &str) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        (scope, key).hash(&mut h);
        // The modulus keeps the index in range; the cast only narrows a
        // value already below LOCK_STRIPES.
        let i = (h.finish() % self.stripes.len() as u64) as usize;
        self.stripes[i].lock().await
    }
}

#[derive(Debug)]
pub struct KvEngine {
    locks: KeyLocks,
}

impl Default for KvEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl KvEngine {
    pub fn new() -> Self {
        Self {
            locks: KeyLocks::new(),
        }
    }
}

fn v1_store(view: &BarrierView) -> Result<FlatStore, ApiError> {
    Ok(FlatStore::new(view.sub(V1_PREFIX)?))
}

/// A version 1 read: the value, with Vault's advisory lease duration (the
/// value's own `ttl` or `lease` field, else the mount's default TTL). There
/// is no lease to renew or revoke, so the lease id is empty.
fn v1_read(ctx: &EngineCtx<'_>) -> Result<Response, ApiError> {
    let data = v1_store(&ctx.view)?
        .read(ctx.path)?
        .ok_or_else(|| ApiError::NotFound("no value at this path".into()))?;
    let ttl = ["ttl", "lease"]
        .iter()
        .find_map(|f| data.get(*f))
        .and_then(|v| parse_duration(v).ok())
        .map_or_else(|| ctx.mount.config.effective_default_ttl(), |d| d.as_secs());
    let mut resp = Response::data(data);
    resp.lease = Some(Lease {
        lease_id: String::new(),
        ttl,
        renewable: false,
    });
    Ok(resp)
}

async fn v1_handle(ctx: &EngineCtx<'_>, req: &Request) -> Result<Response, ApiError> {
    let store = v1_store(&ctx.view)?;
    match req.operation {
        Operation::Read => v1_read(ctx),
        op => store.serve_non_read(op, ctx.path, &req.data).await,
    }
}

/// Rewrites every version 1 value as version 1 of a version 2 key, one
/// atomic batch per key, so an interrupted upgrade resumes where it
/// stopped. Returns how many keys moved.
async fn upgrade_to_v2(view: &BarrierView, now: metadata::UnixNanos) -> Result<usize, ApiError> {
    let v1 = v1_store(view)?;
    let mut dirs = vec![String::new()];
    let mut moved = 0;
    while let Some(dir) = dirs.pop() {
        for entry in v1.view().list(&dir)? {
            let key = format!("{dir}{entry}");
            if key.ends_with('/') {
                dirs.push(key);
                continue;
            }
            let Some(value) = v1.read(&key)? else {
                continue;
            };
            let v1_entry = format!("{V1_PREFIX}/{key}");
            if v2::import_v1(view, &key, &value, &v1_entry, now).await? {
                moved += 1;
            } else {
                tracing::warn!(key = %key, "kv upgrade: key already has version 2 data, left as is");
            }
        }
    }
    Ok(moved)
}

impl Engine for KvEngine {
    fn kind(&self) -> &'static str {
        "kv"
    }

    fn check_options(
        &self,
        options: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        if let Some(k) = options.keys().find(|k| k.as_str() != "version") {
            return Err(ApiError::InvalidRequest(format!(
                "kv mounts take no option {k:?}"
            )));
        }
        let version = KvVersion::from_options(options)?;
        Ok(BTreeMap::from([(
            "version".into(),
            version.as_str().into(),
        )]))
    }

    fn exists(&self, ctx: &EngineCtx<'_>, _req: &Request) -> Result<Option<bool>, ApiError> {
        match KvVersion::from_options(&ctx.mount.options)? {
            KvVersion::V1 if ctx.path.is_empty() || ctx.path.ends_with('/') => Ok(None),
            KvVersion::V1 => v1_store(&ctx.view)?.exists(ctx.path).map(Some),
            KvVersion::V2 => v2::exists(ctx),
        }
    }

    fn handle<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        req: &'a Request,
    ) -> BoxFuture<'a, Result<Response, ApiError>> {
        Box::pin(async move {
            match KvVersion::from_options(&ctx.mount.options)? {
                KvVersion::V1 => v1_handle(ctx, req).await,
                KvVersion::V2 => v2::handle(&self.locks, ctx, req).await,
            }
        })
    }

    fn options_changed<'a>(
        &'a self,
        view: &'a BarrierView,
        old: &'a BTreeMap<String, String>,
        new: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let from = KvVersion::from_options(old)?;
            let to = KvVersion::from_options(new)?;
            match (from, to) {
                (KvVersion::V1, KvVersion::V2) => {
                    let now = metadata::unix_nanos(time::OffsetDateTime::now_utc());
                    let moved = upgrade_to_v2(view, now).await?;
                    tracing::info!(keys = moved, "kv mount upgraded to version 2");
                    Ok(())
                }
                (KvVersion::V2, KvVersion::V1) => Err(ApiError::InvalidRequest(
                    "cannot downgrade mount from version 2".into(),
                )),
                _ => Ok(()),
            }
        })
    }
}

/// The KV version a mount speaks.
pub fn mount_version(mount: &MountEntry) -> Result<KvVersion, ApiError> {
    KvVersion::from_options(&mount.options)
}

#[cfg(test)]
mod tests;
