//! KV version 2: versioned keys with metadata, check-and-set, soft delete,
//! undelete and destroy, following Vault's API
//! (<https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2>).
//!
//! Storage in the mount's view (docs/engines/kv.md, "Storage layout"):
//!
//! - `config`: the mount's [`KvConfig`];
//! - `meta/<key>`: the key's [`KeyMetadata`], with every version's
//!   metadata, so reading the latest version is two point reads;
//! - `ver/<key>/<n>`: the data of version `n`. The version number is always
//!   the last segment, so `ver/a/1` (key `a`) and `ver/a/1/1` (key `a/1`)
//!   never collide.
//!
//! Every request that changes a key writes all of its entries in one
//! [`ViewBatch`](crate::view::ViewBatch), under the key's lock.

use serde_json::{Map, Value};

use crate::api_error::ApiError;
use crate::engine::{EngineCtx, unsupported_path};
use crate::engines::flat::parse_key;
use crate::engines::list_response;
use crate::logical::{Data, Operation, Request, Response};
use crate::view::BarrierView;

use super::KeyLocks;
use super::fields;
use super::merge_patch::merge_patch;
use super::metadata::{KeyMetadata, KvConfig, UnixNanos, unix_nanos};

const CONFIG_KEY: &str = "config";
const MERGE_PATCH: &str = "application/merge-patch+json";
/// Vault's `delete_version_after` value for "disabled".
const DISABLED: i64 = -1_000_000_000;

fn meta_key(key: &str) -> String {
    format!("meta/{key}")
}

fn version_key(key: &str, n: u64) -> String {
    format!("ver/{key}/{n}")
}

pub(super) fn load_meta(view: &BarrierView, key: &str) -> Result<Option<KeyMetadata>, ApiError> {
    view.get_json(&meta_key(key))
}

fn load_config(view: &BarrierView) -> Result<KvConfig, ApiError> {
    Ok(view.get_json(CONFIG_KEY)?.unwrap_or_default())
}

fn not_found() -> ApiError {
    ApiError::NotFound("no value at this path".into())
}

/// The `exists` answer: `data/` and `metadata/` paths exist when the key has
/// metadata; `config` always exists.
pub(super) fn exists(ctx: &EngineCtx<'_>) -> Result<Option<bool>, ApiError> {
    match ctx.path.split_once('/') {
        Some(("data" | "metadata", key)) if !key.is_empty() && !key.ends_with('/') => {
            let key = parse_key(key)?;
            Ok(Some(ctx.view.get(&meta_key(key))?.is_some()))
        }
        None if ctx.path == CONFIG_KEY => Ok(Some(true)),
        _ => Ok(None),
    }
}

pub(super) async fn handle(
    locks: &KeyLocks,
    ctx: &EngineCtx<'_>,
    req: &Request,
) -> Result<Response, ApiError> {
    let v2 = V2 {
        locks,
        view: &ctx.view,
        now: unix_nanos(ctx.now),
    };
    let op = req.operation;
    let (section, rest) = match ctx.path.split_once('/') {
        Some((s, r)) => (s, Some(r)),
        None => (ctx.path, None),
    };
    let key = rest.filter(|k| !k.is_empty());
    match (section, key) {
        ("config", None) if rest.is_none() => match op {
            Operation::Read => v2.config_read(),
            Operation::Create | Operation::Update => v2.config_write(&req.data).await,
            _ => Err(ApiError::UnsupportedOperation),
        },
        ("metadata", _) if op == Operation::List => v2.metadata_list(rest.unwrap_or("")),
        ("metadata", None) if op == Operation::Read => Err(not_found()),
        ("metadata", Some(key)) => match op {
            Operation::Read => v2.metadata_read(parse_key(key)?),
            Operation::Create | Operation::Update => {
                v2.metadata_write(parse_key(key)?, &req.data).await
            }
            Operation::Patch => {
                require_merge_patch(req)?;
                v2.metadata_patch(parse_key(key)?, &req.data).await
            }
            Operation::Delete => v2.metadata_delete(parse_key(key)?).await,
            Operation::List => Err(ApiError::UnsupportedOperation),
        },
        ("data", Some(key)) => match op {
            Operation::Read => v2.data_read(parse_key(key)?, &req.data),
            Operation::Create | Operation::Update => {
                v2.data_write(parse_key(key)?, &req.data).await
            }
            Operation::Patch => {
                require_merge_patch(req)?;
                v2.data_patch(parse_key(key)?, &req.data).await
            }
            Operation::Delete => v2.data_delete(parse_key(key)?).await,
            Operation::List => Err(ApiError::UnsupportedOperation),
        },
        ("delete" | "undelete" | "destroy", Some(key)) => match op {
            Operation::Create | Operation::Update => {
                let action = match section {
                    "delete" => VersionAction::Delete,
                    "undelete" => VersionAction::Undelete,
                    _ => VersionAction::Destroy,
                };
                v2.versions_action(action, parse_key(key)?, &req.data).await
            }
            _ => Err(ApiError::UnsupportedOperation),
        },
        ("subkeys", Some(key)) => match op {
            Operation::Read => v2.subkeys(parse_key(key)?, &req.data),
            _ => Err(ApiError::UnsupportedOperation),
        },
        _ => Err(unsupported_path(ctx.mount, ctx.path)),
    }
}

/// `PATCH` takes a JSON merge patch and nothing else.
fn require_merge_patch(req: &Request) -> Result<(), ApiError> {
    let given = req.content_type.as_deref().unwrap_or("");
    let media = given.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(MERGE_PATCH) {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "PATCH requires Content-Type of {MERGE_PATCH}, provided {given:?}"
        )))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionAction {
    Delete,
    Undelete,
    Destroy,
}

struct V2<'a> {
    locks: &'a KeyLocks,
    view: &'a BarrierView,
    now: UnixNanos,
}

impl V2<'_> {
    fn config_read(&self) -> Result<Response, ApiError> {
        Ok(Response::data(load_config(self.view)?.to_data()))
    }

    async fn config_write(&self, data: &Data) -> Result<Response, ApiError> {
        let max_versions = fields::uint32(data, "max_versions")?;
        let cas_required = fields::boolean(data, "cas_required")?;
        let dva = fields::signed_duration(data, "delete_version_after")?;
        if max_versions.is_none() && cas_required.is_none() && dva.is_none() {
            return Ok(Response::empty());
        }
        let _guard = self.locks.lock(self.view.prefix(), CONFIG_KEY).await;
        let mut config = load_config(self.view)?;
        if let Some(m) = max_versions {
            config.max_versions = m;
        }
        if let Some(c) = cas_required {
            config.cas_required = c;
        }
        if let Some(d) = dva {
            // Negative disables delete_version_after everywhere, zero
            // resets it (Vault's `DisableDeleteVersionAfter`).
            config.delete_version_after = if d < 0 { DISABLED } else { d };
        }
        self.view.put_json(CONFIG_KEY, &config).await?;
        Ok(Response::empty())
    }

    fn data_read(&self, key: &str, query: &Data) -> Result<Response, ApiError> {
        match self.read_version(key, query, "data")? {
            VersionRead::Live { mut body, stored } => {
                body.insert("data".into(), Value::Object(stored));
                Ok(Response::data(body))
            }
            VersionRead::Gone(resp) => Ok(*resp),
        }
    }

    /// The version a read names (`version`; absent or 0 is the latest), with
    /// the body's `metadata` filled in and `field` set to null. A deleted or
    /// destroyed version is [`VersionRead::Gone`]: a 404 that still carries
    /// that body, as Vault answers.
    fn read_version(&self, key: &str, query: &Data, field: &str) -> Result<VersionRead, ApiError> {
        let meta = load_meta(self.view, key)?.ok_or_else(not_found)?;
        let n = match fields::uint(query, "version")? {
            None | Some(0) => meta.current_version,
            Some(v) => v,
        };
        let vm = meta.versions.get(&n).ok_or_else(not_found)?;
        let mut body = Map::new();
        body.insert(field.into(), Value::Null);
        body.insert("metadata".into(), Value::Object(meta.version_data(n, vm)));
        if !vm.is_live(self.now) {
            return Ok(VersionRead::Gone(Box::new(Response::not_found_with(body))));
        }
        let stored: Data = self
            .view
            .get_json(&version_key(key, n))?
            .ok_or_else(|| missing_version(key, n))?;
        Ok(VersionRead::Live { body, stored })
    }

    async fn data_write(&self, key: &str, data: &Data) -> Result<Response, ApiError> {
        let secret = fields::object(data, "data")?
            .ok_or_else(|| ApiError::InvalidRequest("no data provided".into()))?;
        let cas = fields::cas(data)?;
        let _guard = self.locks.lock(self.view.prefix(), key).await;
        let config = load_config(self.view)?;
        let meta = load_meta(self.view, key)?.unwrap_or_else(|| KeyMetadata::new(self.now));
        check_cas(cas, &config, &meta)?;
        self.add_version(key, meta, &config, secret).await
    }

    async fn data_patch(&self, key: &str, data: &Data) -> Result<Response, ApiError> {
        let patch = fields::object(data, "data")?
            .ok_or_else(|| ApiError::InvalidRequest("no data provided".into()))?;
        let cas = fields::cas(data)?;
        let _guard = self.locks.lock(self.view.prefix(), key).await;
        let meta = load_meta(self.view, key)?.ok_or_else(not_found)?;
        let config = load_config(self.view)?;
        check_cas(cas, &config, &meta)?;
        let n = meta.current_version;
        let vm = meta.versions.get(&n).ok_or_else(not_found)?;
        if !vm.is_live(self.now) {
            return Ok(Response::not_found_with(meta.version_data(n, vm)));
        }
        let current: Data = self
            .view
            .get_json(&version_key(key, n))?
            .ok_or_else(|| missing_version(key, n))?;
        let mut merged = Value::Object(current);
        merge_patch(&mut merged, &Value::Object(patch.clone()));
        let Value::Object(merged) = merged else {
            return Err(ApiError::Internal(
                "merge patch of an object gave a non-object".into(),
            ));
        };
        self.add_version(key, meta, &config, &merged).await
    }

    /// Writes `secret` as the next version of `key`, dropping versions that
    /// leave the `max_versions` window, in one batch.
    async fn add_version(
        &self,
        key: &str,
        mut meta: KeyMetadata,
        config: &KvConfig,
        secret: &Map<String, Value>,
    ) -> Result<Response, ApiError> {
        let (n, pruned) = meta.add_version(self.now, config);
        let mut batch = self.view.batch().put_json(&version_key(key, n), secret)?;
        for old in pruned {
            batch = batch.delete(&version_key(key, old))?;
        }
        batch = batch.put_json(&meta_key(key), &meta)?;
        self.view.commit(batch).await?;
        let vm = meta
            .versions
            .get(&n)
            .ok_or_else(|| ApiError::Internal("new version missing from metadata".into()))?;
        Ok(Response::data(meta.version_data(n, vm)))
    }

    /// Soft-deletes the latest version; nothing to do is still a 204.
    async fn data_delete(&self, key: &str) -> Result<Response, ApiError> {
        let _guard = self.locks.lock(self.view.prefix(), key).await;
        let Some(mut meta) = load_meta(self.view, key)? else {
            return Ok(Response::empty());
        };
        let now = self.now;
        let current = meta.current_version;
        match meta.versions.get_mut(&current) {
            Some(vm) if vm.is_live(now) => vm.deletion_time = Some(now),
            _ => return Ok(Response::empty()),
        }
        self.view.put_json(&meta_key(key), &meta).await?;
        Ok(Response::empty())
    }

    async fn versions_action(
        &self,
        action: VersionAction,
        key: &str,
        data: &Data,
    ) -> Result<Response, ApiError> {
        let versions = fields::versions(data)?;
        let _guard = self.locks.lock(self.view.prefix(), key).await;
        let Some(mut meta) = load_meta(self.view, key)? else {
            return Ok(Response::empty());
        };
        let now = self.now;
        let mut batch = self.view.batch();
        for n in versions {
            let Some(vm) = meta.versions.get_mut(&n) else {
                continue;
            };
            if vm.destroyed {
                continue;
            }
            match action {
                VersionAction::Delete => {
                    if !vm.is_deleted(now) {
                        vm.deletion_time = Some(now);
                    }
                }
                VersionAction::Undelete => vm.deletion_time = None,
                VersionAction::Destroy => {
                    vm.destroyed = true;
                    batch = batch.delete(&version_key(key, n))?;
                }
            }
        }
        batch = batch.put_json(&meta_key(key), &meta)?;
        self.view.commit(batch).await?;
        Ok(Response::empty())
    }

    fn metadata_list(&self, dir: &str) -> Result<Response, ApiError> {
        let dir = dir.strip_suffix('/').unwrap_or(dir);
        let keys = if dir.is_empty() {
            self.view.list("meta/")?
        } else {
            parse_key(dir)?;
            self.view.list(&format!("meta/{dir}/"))?
        };
        list_response(keys)
    }

    fn metadata_read(&self, key: &str) -> Result<Response, ApiError> {
        let meta = load_meta(self.view, key)?.ok_or_else(not_found)?;
        Ok(Response::data(meta.to_data()))
    }

    async fn metadata_write(&self, key: &str, data: &Data) -> Result<Response, ApiError> {
        let update = MetadataUpdate::parse(data)?;
        if update.is_empty() {
            return Ok(Response::empty());
        }
        let _guard = self.locks.lock(self.view.prefix(), key).await;
        let mut meta = load_meta(self.view, key)?.unwrap_or_else(|| KeyMetadata::new(self.now));
        update.apply(&mut meta);
        self.view.put_json(&meta_key(key), &meta).await?;
        Ok(Response::empty())
    }

    /// Merges into an existing key's metadata: fields given replace theirs
    /// (`null` resets one), `custom_metadata` merges as a JSON merge patch.
    async fn metadata_patch(&self, key: &str, data: &Data) -> Result<Response, ApiError> {
        let _guard = self.locks.lock(self.view.prefix(), key).await;
        let mut meta = load_meta(self.view, key)?.ok_or_else(not_found)?;
        // custom_metadata is a merge patch here, not a replacement.
        let mut plain = data.clone();
        plain.remove("custom_metadata");
        let mut update = MetadataUpdate::parse(&plain)?;
        let nulled = |field: &str| data.get(field).is_some_and(Value::is_null);
        if nulled("max_versions") {
            update.max_versions = Some(0);
        }
        if nulled("delete_version_after") {
            update.delete_version_after = Some(0);
        }
        if nulled("cas_required") {
            update.cas_required = Some(false);
        }
        if let Some(patch) = data.get("custom_metadata") {
            let mut current = Value::Object(
                meta.custom_metadata
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            );
            merge_patch(&mut current, patch);
            update.custom_metadata = Some(match current {
                Value::Null => None,
                other => Some(fields::custom_metadata(&other)?),
            });
        }
        update.apply(&mut meta);
        self.view.put_json(&meta_key(key), &meta).await?;
        Ok(Response::empty())
    }

    /// Removes the key, its metadata and every version, for good.
    async fn metadata_delete(&self, key: &str) -> Result<Response, ApiError> {
        let _guard = self.locks.lock(self.view.prefix(), key).await;
        let Some(meta) = load_meta(self.view, key)? else {
            return Ok(Response::empty());
        };
        let mut batch = self.view.batch();
        for n in meta.versions.keys() {
            batch = batch.delete(&version_key(key, *n))?;
        }
        batch = batch.delete(&meta_key(key))?;
        self.view.commit(batch).await?;
        Ok(Response::empty())
    }

    fn subkeys(&self, key: &str, query: &Data) -> Result<Response, ApiError> {
        let depth = fields::uint(query, "depth")?.unwrap_or(0);
        match self.read_version(key, query, "subkeys")? {
            VersionRead::Live { mut body, stored } => {
                body.insert("subkeys".into(), structure(&stored, depth, 1));
                Ok(Response::data(body))
            }
            VersionRead::Gone(resp) => Ok(*resp),
        }
    }
}

/// Imports a KV version 1 value as version 1 of `key` (the v1 → v2
/// upgrade), deleting `v1_entry` in the same batch. A key that already has
/// version 2 metadata is left alone and `false` returned.
pub(super) async fn import_v1(
    view: &BarrierView,
    key: &str,
    secret: &Data,
    v1_entry: &str,
    now: UnixNanos,
) -> Result<bool, ApiError> {
    if load_meta(view, key)?.is_some() {
        return Ok(false);
    }
    let config = load_config(view)?;
    let mut meta = KeyMetadata::new(now);
    let (n, _) = meta.add_version(now, &config);
    let batch = view
        .batch()
        .put_json(&version_key(key, n), secret)?
        .put_json(&meta_key(key), &meta)?
        .delete(v1_entry)?;
    view.commit(batch).await?;
    Ok(true)
}

/// What [`V2::read_version`] found.
enum VersionRead {
    Live {
        body: Map<String, Value>,
        stored: Data,
    },
    Gone(Box<Response>),
}

fn missing_version(key: &str, n: u64) -> ApiError {
    tracing::error!(key = %key, version = n, "kv version metadata without data");
    ApiError::Internal("could not find version data".into())
}

fn check_cas(cas: Option<u64>, config: &KvConfig, meta: &KeyMetadata) -> Result<(), ApiError> {
    match cas {
        Some(c) if c != meta.current_version => Err(ApiError::CheckAndSet(
            "check-and-set parameter did not match the current version".into(),
        )),
        Some(_) => Ok(()),
        None if config.cas_required || meta.cas_required => Err(ApiError::CheckAndSet(
            "check-and-set parameter required for this call".into(),
        )),
        None => Ok(()),
    }
}

/// The shape of a secret: every member kept, leaves (and objects past
/// `depth`, or empty ones) replaced by `null`. `depth` 0 is unlimited.
fn structure(data: &Map<String, Value>, depth: u64, level: u64) -> Value {
    Value::Object(
        data.iter()
            .map(|(k, v)| {
                let shape = match v {
                    Value::Object(m) if !m.is_empty() && (depth == 0 || level < depth) => {
                        structure(m, depth, level + 1)
                    }
                    _ => Value::Null,
                };
                (k.clone(), shape)
            })
            .collect(),
    )
}

/// The settable fields of `metadata/:path`.
#[derive(Debug, Default)]
struct MetadataUpdate {
    max_versions: Option<u32>,
    cas_required: Option<bool>,
    delete_version_after: Option<u64>,
    custom_metadata: Option<Option<std::collections::BTreeMap<String, String>>>,
}

impl MetadataUpdate {
    fn parse(data: &Data) -> Result<Self, ApiError> {
        let delete_version_after = match fields::signed_duration(data, "delete_version_after")? {
            Some(d) if d < 0 => {
                return Err(ApiError::InvalidRequest(
                    "invalid value for field \"delete_version_after\": must not be negative".into(),
                ));
            }
            d => d.map(i64::unsigned_abs),
        };
        let custom_metadata = match data.get("custom_metadata") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Some(fields::custom_metadata(v)?)),
        };
        Ok(Self {
            max_versions: fields::uint32(data, "max_versions")?,
            cas_required: fields::boolean(data, "cas_required")?,
            delete_version_after,
            custom_metadata,
        })
    }

    fn is_empty(&self) -> bool {
        self.max_versions.is_none()
            && self.cas_required.is_none()
            && self.delete_version_after.is_none()
            && self.custom_metadata.is_none()
    }

    fn apply(self, meta: &mut KeyMetadata) {
        if let Some(m) = self.max_versions {
            meta.max_versions = m;
        }
        if let Some(c) = self.cas_required {
            meta.cas_required = c;
        }
        if let Some(d) = self.delete_version_after {
            meta.delete_version_after = d;
        }
        if let Some(c) = self.custom_metadata {
            meta.custom_metadata = c;
        }
    }
}
