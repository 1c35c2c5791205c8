//! The system backend (`sys/`): mounts, auth methods, policies,
//! capabilities, audit devices and response wrapping.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sigil_hsm::{SecretBytes, SecretString};

use super::{Caller, Pipeline, data, wrapping};
use crate::api_error::ApiError;
use crate::audit::DeviceConfig;
use crate::logical::{Operation, Request, Response};
use crate::mounts::{self, MountEntry, Table};
use crate::params;
use crate::view::BarrierView;

/// Barrier key of the audit table (device configs and their salts).
const AUDIT_KEY: &str = "core/audit";

/// One enabled audit device as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuditEntry {
    path: String,
    #[serde(rename = "type")]
    device_type: String,
    description: String,
    options: BTreeMap<String, String>,
    local: bool,
    /// Hex of the device's HMAC key; only ever inside the barrier.
    salt: String,
}

pub(super) async fn handle(
    p: &Pipeline,
    req: &Request,
    rel: &str,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let op = req.operation;
    let write = matches!(op, Operation::Create | Operation::Update);
    let (head, rest) = match rel.split_once('/') {
        Some((h, r)) => (h, r),
        None => (rel, ""),
    };
    match (head, rest) {
        ("mounts", "") if op == Operation::Read || op == Operation::List => {
            Ok(mount_list(p, Table::Secrets).legacy())
        }
        ("mounts", path) if !path.is_empty() => match path.strip_suffix("/tune") {
            Some(path) => tune(p, req, Table::Secrets, path).await,
            None => mount_one(p, req, Table::Secrets, path).await,
        },
        ("auth", "") if op == Operation::Read || op == Operation::List => {
            Ok(mount_list(p, Table::Auth).legacy())
        }
        ("auth", path) if !path.is_empty() => match path.strip_suffix("/tune") {
            Some(path) => tune(p, req, Table::Auth, path).await,
            None => mount_one(p, req, Table::Auth, path).await,
        },
        ("remount", "") if write => remount(p, req).await,
        ("remount", r) if r.starts_with("status/") && op == Operation::Read => {
            let id = &r["status/".len()..];
            p.remount_status(id)
                .map(data)
                .ok_or_else(|| ApiError::NotFound(String::new()))
        }
        ("internal", r) if r == "ui/mounts" && op == Operation::Read => Ok(ui_mounts(p, caller)),
        ("internal", r) if r.starts_with("ui/mounts/") && op == Operation::Read => {
            ui_mount(p, caller, &r["ui/mounts/".len()..])
        }
        ("policy", "") if op == Operation::Read || op == Operation::List => {
            let names = p.policies.list()?;
            Ok(data(json!({ "policies": names, "keys": names })).legacy())
        }
        ("policy", name) => policy(p, req, name, true).await,
        ("policies", "acl" | "acl/") if op == Operation::List || op == Operation::Read => {
            let names = p.policies.list()?;
            Ok(data(json!({ "keys": names })))
        }
        ("policies", r) if r.starts_with("acl/") => policy(p, req, &r["acl/".len()..], false).await,
        ("capabilities", "") if write => {
            let token = SecretString::new(params::require_string(&req.data, "token")?);
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let entry = p
                .tokens
                .lookup_live(&token, now)?
                .ok_or_else(|| ApiError::InvalidRequest("invalid token".into()))?;
            capabilities(p, req, &entry)
        }
        ("capabilities-self", "") if write => capabilities(p, req, &caller.entry),
        ("capabilities-accessor", "") if write => {
            let accessor = params::require_string(&req.data, "accessor")?;
            let entry = p
                .tokens
                .by_accessor(&accessor)?
                .ok_or_else(|| ApiError::InvalidRequest("invalid accessor".into()))?;
            capabilities(p, req, &entry)
        }
        ("audit", "") if op == Operation::Read || op == Operation::List => {
            let table = load_audit_table(p)?;
            let mut out = serde_json::Map::new();
            for e in table {
                out.insert(
                    e.path.clone(),
                    json!({
                        "type": e.device_type,
                        "description": e.description,
                        "options": e.options,
                        "local": e.local,
                        "path": e.path,
                    }),
                );
            }
            Ok(Response::data(out).legacy())
        }
        ("audit", path) if !path.is_empty() => match op {
            Operation::Create | Operation::Update => enable_audit(p, req, path).await,
            Operation::Delete => disable_audit(p, path).await,
            _ => Err(ApiError::UnsupportedOperation),
        },
        ("audit-hash", path) if !path.is_empty() && write => {
            let input = params::string(&req.data, "input")?.unwrap_or_default();
            let hash = p.audit.hash(path, &input).map_err(|e| {
                ApiError::InvalidRequest(format!("unknown audit device {path:?}: {e}"))
            })?;
            Ok(data(json!({ "hash": hash })).legacy())
        }
        ("wrapping", "wrap") if write => wrapping::wrap_data(p, req).await,
        ("wrapping", "unwrap") if write => wrapping::unwrap(p, req, caller).await,
        ("wrapping", "rewrap") if write => wrapping::rewrap(p, req).await,
        ("seal", "") if write => {
            let seal = p.seal.clone();
            tokio::task::spawn_blocking(move || seal.seal())
                .await
                .map_err(|e| ApiError::Internal(format!("seal task failed: {e}")))??;
            tracing::info!(accessor = %caller.entry.accessor, "sealed by request");
            Ok(Response::empty())
        }
        ("rotate", "") if write => {
            let status = p.barrier.rotate().await?;
            tracing::info!(term = status.term, accessor = %caller.entry.accessor, "keyring rotated");
            Ok(Response::empty())
        }
        ("key-status", "") if op == Operation::Read => {
            let k = p.barrier.key_status()?;
            Ok(data(json!({
                "term": k.term,
                "install_time": crate::clock::rfc3339_unix(k.install_time_unix),
                "encryptions": k.encryptions,
            }))
            .legacy())
        }
        ("storage", "raft/configuration") if op == Operation::Read => {
            super::raft_ops::configuration(p.cell()?)
        }
        ("storage", "raft/remove-peer") if write => {
            super::raft_ops::remove_peer(p.cell()?, req).await
        }
        ("storage", "raft/snapshot") if op == Operation::Read => {
            super::raft_ops::snapshot_save(p.cell()?).await
        }
        ("storage", "raft/snapshot") if write => {
            super::raft_ops::snapshot_restore(p.cell()?, &p.barrier, req, false).await
        }
        ("storage", "raft/snapshot-force") if write => {
            super::raft_ops::snapshot_restore(p.cell()?, &p.barrier, req, true).await
        }
        ("step-down", "") if write => super::raft_ops::step_down(p.cell()?).await,
        ("quotas", rest) if !rest.is_empty() => super::quotas::handle(p, req, rest).await,
        ("leases" | "renew" | "revoke" | "revoke-prefix" | "revoke-force", _) => {
            super::leases::handle(p, req, head, rest, caller).await
        }
        ("control-plane", rest) => super::control_plane_api::handle(p, req, rest).await,
        ("namespaces", rest) => super::namespaces::handle(p, req, rest).await,
        ("revocations", rest) => super::revocations_api::handle(p, req, rest).await,
        ("metrics", "") if op == Operation::Read => {
            let format = params::string(&req.data, "format")?.unwrap_or_default();
            p.metrics_response(&format)
        }
        _ if known_head(head) => Err(ApiError::UnsupportedOperation),
        _ => Err(ApiError::NotFound(format!(
            "no handler for route \"sys/{rel}\". route entry not found."
        ))),
    }
}

fn known_head(head: &str) -> bool {
    matches!(
        head,
        "mounts"
            | "auth"
            | "namespaces"
            | "revocations"
            | "remount"
            | "policy"
            | "policies"
            | "capabilities"
            | "capabilities-self"
            | "capabilities-accessor"
            | "audit"
            | "audit-hash"
            | "wrapping"
            | "metrics"
            | "internal"
            | "seal"
            | "rotate"
            | "key-status"
            | "storage"
            | "step-down"
    )
}

// ---- mounts ------------------------------------------------------------------

fn mount_json(m: &MountEntry) -> Value {
    let options: Value = if m.options.is_empty() {
        Value::Null
    } else {
        json!(m.options)
    };
    json!({
        "accessor": m.accessor,
        "config": {
            "default_lease_ttl": m.config.default_lease_ttl,
            "max_lease_ttl": m.config.max_lease_ttl,
            "force_no_cache": m.config.force_no_cache,
        },
        "description": m.description,
        "external_entropy_access": m.external_entropy_access,
        "global": m.global,
        "local": m.local,
        "options": options,
        "plugin_version": "",
        "running_plugin_version": "",
        "running_sha256": "",
        "seal_wrap": m.seal_wrap,
        "type": m.mount_type,
        "uuid": m.uuid,
    })
}

fn mount_list(p: &Pipeline, table: Table) -> Response {
    let mut out = serde_json::Map::new();
    for m in p.router().entries(table) {
        out.insert(m.path.clone(), mount_json(&m));
    }
    Response::data(out)
}

async fn mount_one(
    p: &Pipeline,
    req: &Request,
    table: Table,
    path: &str,
) -> Result<Response, ApiError> {
    match req.operation {
        Operation::Read => {
            let m = p
                .router()
                .get(table, path)
                .ok_or_else(|| ApiError::NotFound(String::new()))?;
            Ok(data(mount_json(&m)))
        }
        Operation::Create | Operation::Update => enable_mount(p, req, table, path).await,
        Operation::Delete => disable_mount(p, table, path).await,
        _ => Err(ApiError::UnsupportedOperation),
    }
}

/// Applies the `config` object of an enable or tune request.
fn apply_config(m: &mut MountEntry, cfg: &crate::logical::Data) -> Result<(), ApiError> {
    params::deny_unknown(
        cfg,
        &[
            "default_lease_ttl",
            "max_lease_ttl",
            "force_no_cache",
            "audit_non_hmac_request_keys",
            "audit_non_hmac_response_keys",
            "listing_visibility",
            "passthrough_request_headers",
            "allowed_response_headers",
            "description",
            "options",
            "plugin_version",
            "token_type",
        ],
    )?;
    let ttl = |field: &str| -> Result<Option<u64>, ApiError> {
        match cfg.get(field) {
            Some(Value::String(s)) if s == "system" => Ok(Some(0)),
            _ => params::seconds(cfg, field),
        }
    };
    if let Some(t) = ttl("default_lease_ttl")? {
        m.config.default_lease_ttl = t;
    }
    if let Some(t) = ttl("max_lease_ttl")? {
        m.config.max_lease_ttl = t;
    }
    if m.config.max_lease_ttl > 0 && m.config.default_lease_ttl > m.config.max_lease_ttl {
        return Err(ApiError::InvalidRequest(
            "default_lease_ttl must not exceed max_lease_ttl".into(),
        ));
    }
    if let Some(v) = params::boolean(cfg, "force_no_cache")? {
        m.config.force_no_cache = v;
    }
    if let Some(v) = params::string_list(cfg, "audit_non_hmac_request_keys")? {
        m.config.audit_non_hmac_request_keys = v;
    }
    if let Some(v) = params::string_list(cfg, "audit_non_hmac_response_keys")? {
        m.config.audit_non_hmac_response_keys = v;
    }
    if let Some(v) = params::string(cfg, "listing_visibility")? {
        if !matches!(v.as_str(), "" | "hidden" | "unauth") {
            return Err(ApiError::InvalidRequest(format!(
                "invalid listing_visibility {v:?}"
            )));
        }
        m.config.listing_visibility = v;
    }
    if let Some(v) = params::string_list(cfg, "passthrough_request_headers")? {
        m.config.passthrough_request_headers = v;
    }
    if let Some(v) = params::string_list(cfg, "allowed_response_headers")? {
        m.config.allowed_response_headers = v;
    }
    Ok(())
}

async fn enable_mount(
    p: &Pipeline,
    req: &Request,
    table: Table,
    path: &str,
) -> Result<Response, ApiError> {
    enable_mount_from(p, req, table, path, true).await
}

/// Enables a mount from `req`'s data. With `publish`, a global mount is
/// also written to the control plane; without, it came from there.
pub(super) async fn enable_mount_from(
    p: &Pipeline,
    req: &Request,
    table: Table,
    path: &str,
    publish: bool,
) -> Result<Response, ApiError> {
    let d = &req.data;
    params::deny_unknown(
        d,
        &[
            "type",
            "description",
            "config",
            "options",
            "local",
            "seal_wrap",
            "external_entropy_access",
            "plugin_name",
            "plugin_version",
            "path",
            "global",
        ],
    )?;
    let global = params::boolean(d, "global")?.unwrap_or(false);
    let mut mount_type = params::string(d, "type")?
        .or(params::string(d, "plugin_name")?)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::InvalidRequest("missing required field \"type\"".into()))?;
    let mut options = params::string_map(d, "options")?.unwrap_or_default();
    if table == Table::Secrets && mount_type == "kv-v2" {
        mount_type = "kv".into();
        options.insert("version".into(), "2".into());
    }
    let engine = p
        .engines
        .get(mount_type.as_str())
        .filter(|e| e.is_auth_method() == (table == Table::Auth))
        .cloned();
    let Some(engine) = engine.filter(|e| !matches!(e.kind(), "cubbyhole")) else {
        let what = if table == Table::Auth {
            "auth method"
        } else {
            "secrets engine"
        };
        return Err(ApiError::InvalidRequest(format!(
            "plugin not found in the catalog: {mount_type} (no {what} of that type)"
        )));
    };
    let options = engine.check_options(&options)?;
    let _guard = p.mount_lock.lock().await;
    let router = p.router();
    let all: Vec<MountEntry> = router.all().map(|m| (**m).clone()).collect();
    let path = mounts::check_new_mount_path(table, path, &all)?;
    let mut m = MountEntry::new(table, &path, &mount_type);
    m.description = params::string(d, "description")?.unwrap_or_default();
    m.options = options;
    m.local = params::boolean(d, "local")?.unwrap_or(false);
    m.seal_wrap = params::boolean(d, "seal_wrap")?.unwrap_or(false);
    m.external_entropy_access = params::boolean(d, "external_entropy_access")?.unwrap_or(false);
    if let Some(cfg) = d.get("config").filter(|v| !v.is_null()) {
        let cfg = cfg
            .as_object()
            .ok_or_else(|| ApiError::InvalidRequest("\"config\" must be an object".into()))?;
        apply_config(&mut m, cfg)?;
    }
    if global && m.local {
        return Err(ApiError::InvalidRequest(
            "a mount cannot be both global and local".into(),
        ));
    }
    m.global = global;
    let mut entries = all;
    tracing::info!(path = %m.route_prefix(), mount_type = %m.mount_type, global, "mount enabled");
    entries.push(m.clone());
    p.save_mounts(entries).await?;
    drop(_guard);
    if global
        && publish
        && let Err(e) = super::global_mounts::publish(p, &m).await
    {
        // Not shared, so not kept: the caller retries the whole enable.
        let _ = disable_mount_here(p, table, &m.path).await;
        return Err(e);
    }
    Ok(Response::empty())
}

async fn disable_mount(p: &Pipeline, table: Table, path: &str) -> Result<Response, ApiError> {
    // A global mount leaves every cell: the control plane first, so that
    // the other cells' leaders disable their copies too.
    if let Some(m) = p.router().get(table, path)
        && m.global
    {
        super::global_mounts::withdraw(p, &m).await?;
    }
    disable_mount_here(p, table, path).await
}

/// Disables a mount in this cell only.
pub(super) async fn disable_mount_here(
    p: &Pipeline,
    table: Table,
    path: &str,
) -> Result<Response, ApiError> {
    let _guard = p.mount_lock.lock().await;
    let router = p.router();
    let Some(m) = router.get(table, path) else {
        return Ok(Response::empty());
    };
    if m.is_singleton() {
        return Err(ApiError::InvalidRequest(format!(
            "cannot unmount {:?}",
            m.route_prefix()
        )));
    }
    let entries: Vec<MountEntry> = router
        .all()
        .filter(|e| e.uuid != m.uuid)
        .map(|e| (**e).clone())
        .collect();
    // Its leases first: once the table no longer has the mount, nothing
    // could revoke them.
    p.revoke_mount_leases(&m).await?;
    // The table first: once it is saved nothing routes to the data, and a
    // crash before the clear leaves only unreachable ciphertext.
    p.save_mounts(entries).await?;
    let removed = BarrierView::new(p.barrier.clone(), &m.storage_prefix())
        .clear()
        .await?;
    tracing::info!(path = %m.route_prefix(), entries = removed, "mount disabled and its data removed");
    Ok(Response::empty())
}

async fn tune(p: &Pipeline, req: &Request, table: Table, path: &str) -> Result<Response, ApiError> {
    match req.operation {
        Operation::Read => {
            let m = p.router().get(table, path).ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "cannot fetch mount config for {path:?}: no mount"
                ))
            })?;
            let options: Value = if m.options.is_empty() {
                Value::Null
            } else {
                json!(m.options)
            };
            Ok(data(json!({
                "default_lease_ttl": m.config.effective_default_ttl(),
                "max_lease_ttl": m.config.effective_max_ttl(),
                "force_no_cache": m.config.force_no_cache,
                "description": m.description,
                "options": options,
                "audit_non_hmac_request_keys": m.config.audit_non_hmac_request_keys,
                "audit_non_hmac_response_keys": m.config.audit_non_hmac_response_keys,
                "listing_visibility": m.config.listing_visibility,
                "passthrough_request_headers": m.config.passthrough_request_headers,
                "allowed_response_headers": m.config.allowed_response_headers,
            })))
        }
        Operation::Create | Operation::Update => {
            let _guard = p.mount_lock.lock().await;
            let router = p.router();
            let current = router
                .get(table, path)
                .ok_or_else(|| ApiError::InvalidRequest(format!("no mount at {path:?}")))?;
            let mut m = (*current).clone();
            apply_config(&mut m, &req.data)?;
            if let Some(desc) = params::string(&req.data, "description")? {
                m.description = desc;
            }
            if let Some(opts) = params::string_map(&req.data, "options")? {
                let engine = p.engines.get(m.mount_type.as_str()).cloned();
                if let Some(engine) = engine {
                    let mut merged = m.options.clone();
                    merged.extend(opts);
                    let new = engine.check_options(&merged)?;
                    let view = BarrierView::new(p.barrier.clone(), &m.storage_prefix());
                    engine.options_changed(&view, &m.options, &new).await?;
                    m.options = new;
                } else if !opts.is_empty() {
                    return Err(ApiError::InvalidRequest(format!(
                        "{} mounts take no options",
                        m.mount_type
                    )));
                }
            }
            let entries: Vec<MountEntry> = router
                .all()
                .map(|e| {
                    if e.uuid == m.uuid {
                        m.clone()
                    } else {
                        (**e).clone()
                    }
                })
                .collect();
            p.save_mounts(entries).await?;
            Ok(Response::empty())
        }
        _ => Err(ApiError::UnsupportedOperation),
    }
}

async fn remount(p: &Pipeline, req: &Request) -> Result<Response, ApiError> {
    let from = params::require_string(&req.data, "from")?;
    let to = params::require_string(&req.data, "to")?;
    let split = |s: &str| -> (Table, String) {
        let s = s.trim_start_matches('/');
        match s.strip_prefix("auth/") {
            Some(rest) => (Table::Auth, rest.to_owned()),
            None => (Table::Secrets, s.to_owned()),
        }
    };
    let (from_table, from_path) = split(&from);
    let (to_table, to_path) = split(&to);
    if from_table != to_table {
        return Err(ApiError::InvalidRequest(
            "cannot move a mount between the secrets and auth tables".into(),
        ));
    }
    let _guard = p.mount_lock.lock().await;
    let router = p.router();
    let m = router
        .get(from_table, &from_path)
        .ok_or_else(|| ApiError::InvalidRequest(format!("no mount at {from:?}")))?;
    if m.is_singleton() {
        return Err(ApiError::InvalidRequest(format!(
            "cannot remount {:?}",
            m.route_prefix()
        )));
    }
    let others: Vec<MountEntry> = router
        .all()
        .filter(|e| e.uuid != m.uuid)
        .map(|e| (**e).clone())
        .collect();
    let new_path = mounts::check_new_mount_path(to_table, &to_path, &others)?;
    let mut moved = (*m).clone();
    moved.path = new_path;
    let info = json!({
        "source_mount": m.route_prefix(),
        "target_mount": moved.route_prefix(),
        "status": "success",
    });
    let mut entries = others;
    entries.push(moved);
    // Data lives under the mount's UUID, so moving is only a table change.
    p.save_mounts(entries).await?;
    let id = uuid::Uuid::new_v4().to_string();
    p.record_remount(&id, info);
    Ok(data(json!({ "migration_id": id })))
}

/// Whether the caller may see a mount in the UI listings: some rule grants
/// something at or below the mount, or a glob above it covers it.
fn visible(caller: &Caller, m: &MountEntry) -> bool {
    if caller.is_root() || caller.acl.is_root() {
        return true;
    }
    let prefix = m.route_prefix();
    caller.acl.rules().iter().any(|r| {
        !r.capabilities.is_empty()
            && !r.capabilities.is_deny()
            && (r.pattern.as_str().starts_with(&prefix)
                || (r.pattern.is_glob() && prefix.starts_with(r.pattern.body()))
                || r.pattern.matches(&prefix))
    })
}

fn ui_mounts(p: &Pipeline, caller: &Caller) -> Response {
    let mut secret = serde_json::Map::new();
    let mut auth = serde_json::Map::new();
    for m in p.router().all() {
        if !visible(caller, m) {
            continue;
        }
        match m.table {
            Table::Secrets => secret.insert(m.path.clone(), mount_json(m)),
            Table::Auth => auth.insert(m.path.clone(), mount_json(m)),
        };
    }
    data(json!({ "secret": secret, "auth": auth }))
}

fn ui_mount(p: &Pipeline, caller: &Caller, path: &str) -> Result<Response, ApiError> {
    let router = p.router();
    let (m, _) = router
        .route(path)
        .ok_or_else(|| ApiError::InvalidRequest(format!("no mount at {path:?}")))?;
    if !visible(caller, &m) {
        return Err(ApiError::PermissionDenied);
    }
    let mut v = mount_json(&m);
    if let Some(o) = v.as_object_mut() {
        o.insert("path".into(), json!(m.path));
    }
    Ok(data(v))
}

// ---- policies ------------------------------------------------------------------

async fn policy(
    p: &Pipeline,
    req: &Request,
    name: &str,
    legacy: bool,
) -> Result<Response, ApiError> {
    if name.is_empty() || name.contains('/') {
        return Err(ApiError::InvalidRequest(format!(
            "invalid policy name {name:?}"
        )));
    }
    match req.operation {
        Operation::Read => {
            let pol = p
                .policies
                .get(name)?
                .ok_or_else(|| ApiError::NotFound(String::new()))?;
            let name = name.to_lowercase();
            if legacy {
                Ok(data(json!({ "name": name, "rules": pol.raw })).legacy())
            } else {
                Ok(data(json!({ "name": name, "policy": pol.raw })))
            }
        }
        Operation::Create | Operation::Update => {
            let text = match params::string(&req.data, "policy")? {
                Some(t) if !t.is_empty() => t,
                _ => params::string(&req.data, "rules")?
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        ApiError::InvalidRequest("'policy' parameter not supplied or empty".into())
                    })?,
            };
            p.policies.put(name, &decode_policy_text(&text)).await?;
            Ok(Response::empty())
        }
        Operation::Delete => {
            p.policies.delete(name).await?;
            Ok(Response::empty())
        }
        _ => Err(ApiError::UnsupportedOperation),
    }
}

/// Vault accepts policy text base64-encoded too.
fn decode_policy_text(text: &str) -> String {
    use base64::Engine as _;
    let looks_encoded = !text.contains(['{', '"', ' ', '\n', '#']);
    if looks_encoded
        && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(text.trim())
        && let Ok(s) = String::from_utf8(raw)
    {
        return s;
    }
    text.to_owned()
}

fn capabilities(
    p: &Pipeline,
    req: &Request,
    entry: &crate::token::TokenEntry,
) -> Result<Response, ApiError> {
    let mut paths = params::string_list(&req.data, "paths")?.unwrap_or_default();
    if let Some(one) = params::string(&req.data, "path")? {
        paths.push(one);
    }
    if paths.is_empty() {
        return Err(ApiError::InvalidRequest(
            "missing required field \"paths\"".into(),
        ));
    }
    let acl = if entry.is_root() {
        None
    } else {
        Some(p.policies.acl(&entry.policies)?)
    };
    let mut out = serde_json::Map::new();
    let mut all: Vec<String> = Vec::new();
    for path in &paths {
        let path = path.trim_start_matches('/');
        let caps: Vec<String> = match &acl {
            None => vec!["root".into()],
            Some(acl) => acl
                .capability_names(path)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        };
        for c in &caps {
            if !all.contains(c) {
                all.push(c.clone());
            }
        }
        out.insert(path.to_owned(), json!(caps));
    }
    if paths.len() == 1 {
        out.insert("capabilities".into(), json!(all));
    }
    Ok(Response::data(out).legacy())
}

// ---- audit ---------------------------------------------------------------------

fn load_audit_table(p: &Pipeline) -> Result<Vec<AuditEntry>, ApiError> {
    match p.barrier.get(AUDIT_KEY)? {
        None => Ok(Vec::new()),
        Some(raw) => serde_json::from_slice(&raw)
            .map_err(|e| ApiError::Internal(format!("audit table is corrupt: {e}"))),
    }
}

fn device_config(e: &AuditEntry) -> DeviceConfig {
    DeviceConfig {
        device_type: e.device_type.clone(),
        description: e.description.clone(),
        options: e.options.clone(),
        local: e.local,
    }
}

fn salt_of(e: &AuditEntry) -> Result<SecretBytes, ApiError> {
    hex::decode(&e.salt)
        .map(SecretBytes::new)
        .map_err(|_| ApiError::Internal("audit salt is corrupt".into()))
}

/// Re-enables the stored audit devices after an unseal. A device that
/// cannot start is logged and left out of the broker; the pipeline still
/// counts it as configured, so if no device runs, requests fail closed
/// rather than go unaudited.
pub(super) async fn load_audit_devices(p: &Pipeline) -> Result<(), ApiError> {
    let table = load_audit_table(p)?;
    p.audit_expected.store(table.len(), Ordering::Release);
    for e in table {
        let salt = salt_of(&e)?;
        if let Err(err) = p.audit.enable(&e.path, device_config(&e), salt).await {
            tracing::error!(device = %e.path, error = %err, "audit device did not start; requests fail closed until it is fixed or disabled");
        }
    }
    Ok(())
}

/// Brings the running devices in line with the stored audit table (changed
/// on another node of the cell). Callers hold `mount_lock`.
pub(super) async fn sync_audit_devices(p: &Pipeline) -> Result<(), ApiError> {
    let table = load_audit_table(p)?;
    let running: Vec<String> = p.audit.list().into_iter().map(|(path, _)| path).collect();
    for path in &running {
        if !table.iter().any(|e| &e.path == path) {
            let _ = p.audit.disable(path);
            tracing::info!(device = %path, "audit device disabled on another node");
        }
    }
    for e in &table {
        if !running.contains(&e.path) {
            let salt = salt_of(e)?;
            match p.audit.enable(&e.path, device_config(e), salt).await {
                Ok(()) => tracing::info!(device = %e.path, "audit device enabled on another node"),
                Err(err) => {
                    tracing::error!(device = %e.path, error = %err, "audit device did not start; requests fail closed until it is fixed or disabled")
                }
            }
        }
    }
    p.audit_expected.store(table.len(), Ordering::Release);
    Ok(())
}

async fn enable_audit(p: &Pipeline, req: &Request, path: &str) -> Result<Response, ApiError> {
    let d = &req.data;
    params::deny_unknown(d, &["type", "description", "options", "local"])?;
    let device_type = params::require_string(d, "type")?;
    let path = mounts::normalise_mount_path(path);
    crate::logical::check_path(&path)?;
    let _guard = p.mount_lock.lock().await;
    let mut table = load_audit_table(p)?;
    if table.iter().any(|e| e.path == path) {
        return Err(ApiError::InvalidRequest(format!(
            "path already in use: {path:?}"
        )));
    }
    let salt = SecretBytes::random(32);
    let entry = AuditEntry {
        path: path.clone(),
        device_type,
        description: params::string(d, "description")?.unwrap_or_default(),
        options: params::string_map(d, "options")?.unwrap_or_default(),
        local: params::boolean(d, "local")?.unwrap_or(false),
        salt: hex::encode(salt.expose()),
    };
    p.audit
        .enable(&path, device_config(&entry), salt)
        .await
        .map_err(|e| {
            if e.is_client_error() {
                ApiError::InvalidRequest(e.to_string())
            } else {
                ApiError::Internal(e.to_string())
            }
        })?;
    table.push(entry);
    if let Err(e) = save_audit_table(p, &table).await {
        let _ = p.audit.disable(&path);
        return Err(e);
    }
    p.audit_expected.store(table.len(), Ordering::Release);
    tracing::info!(device = %path, "audit device enabled");
    Ok(Response::empty())
}

async fn disable_audit(p: &Pipeline, path: &str) -> Result<Response, ApiError> {
    let path = mounts::normalise_mount_path(path);
    let _guard = p.mount_lock.lock().await;
    let mut table = load_audit_table(p)?;
    let before = table.len();
    table.retain(|e| e.path != path);
    if table.len() != before {
        save_audit_table(p, &table).await?;
        p.audit_expected.store(table.len(), Ordering::Release);
        let _ = p.audit.disable(&path);
        tracing::info!(device = %path, "audit device disabled");
    }
    Ok(Response::empty())
}

async fn save_audit_table(p: &Pipeline, table: &[AuditEntry]) -> Result<(), ApiError> {
    let raw = serde_json::to_vec(table).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(p.barrier.put(AUDIT_KEY, &raw).await?)
}
