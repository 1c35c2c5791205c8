//! Global mounts: a mount enabled with `global: true` exists in every
//! federated cell (docs/architecture.md, "The control plane"). Its
//! configuration — engine type, description, TTLs, options — is a
//! control-plane register (`Key::Mount`); each cell's leader enables its own
//! copy, so each cell holds its own data and its own keys under it, and
//! nothing under the mount ever crosses cells. Disabling a global mount in
//! any cell writes a tombstone, and every cell disables its copy.
//!
//! The roles written under a global mount are shared too (`Key::Role`):
//! each engine names its role endpoint ([`Engine::shared_roles`]); a role
//! written or deleted through it in any cell is published, and every
//! other cell's leader writes the same definition through the same
//! endpoint, so each cell validates it as if a client had written it.
//! What a role hands out — secret IDs, role IDs, database users — is
//! made by each cell for itself.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;
use sigil_control_plane::model::{MountConfig, MountTable, Param, RoleConfig};
use sigil_control_plane::{Key, Kind, Value};
use time::OffsetDateTime;

use super::Pipeline;
use crate::api_error::ApiError;
use crate::engine::{Engine, EngineCtx};
use crate::logical::{Data, Operation, Request};
use crate::mounts::{MountEntry, Table};
use crate::view::BarrierView;

fn table_of(m: &MountEntry) -> MountTable {
    match m.table {
        Table::Secrets => MountTable::Secrets,
        Table::Auth => MountTable::Auth,
    }
}

fn key(m: &MountEntry) -> Key {
    Key::Mount {
        table: table_of(m),
        path: m.path.clone(),
    }
}

fn role_key(m: &MountEntry, name: &str) -> Key {
    Key::Role {
        table: table_of(m),
        mount: m.path.clone(),
        name: name.to_owned(),
    }
}

/// A role definition as it travels: each field a [`Param`]. Structured
/// values travel as JSON text.
fn to_params(d: &Data) -> BTreeMap<String, Param> {
    d.iter()
        .filter_map(|(k, v)| {
            let p = match v {
                Json::Null => return None,
                Json::Bool(b) => Param::Bool(*b),
                Json::Number(n) => match n.as_i64() {
                    Some(i) => Param::Int(i),
                    None => Param::Json(n.to_string()),
                },
                Json::String(s) => Param::Str(s.clone()),
                Json::Array(items) if items.iter().all(Json::is_string) => Param::List(
                    items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect(),
                ),
                other => Param::Json(other.to_string()),
            };
            Some((k.clone(), p))
        })
        .collect()
}

/// The request body that recreates a shared role. A peer's JSON text that
/// does not parse is refused, naming the field.
fn from_params(params: &BTreeMap<String, Param>) -> Result<Data, String> {
    params
        .iter()
        .map(|(k, p)| {
            let v = match p {
                Param::Bool(b) => Json::Bool(*b),
                Param::Int(i) => Json::from(*i),
                Param::Str(s) => Json::String(s.clone()),
                Param::List(l) => Json::from(l.clone()),
                Param::Json(text) => serde_json::from_str(text)
                    .map_err(|e| format!("field {k:?} is not JSON: {e}"))?,
            };
            Ok((k.clone(), v))
        })
        .collect()
}

/// Runs one request against a mount's engine on the cell's behalf (no
/// caller): how the leader reads and writes shared roles.
async fn call_engine(
    p: &Pipeline,
    engine: &dyn Engine,
    m: &MountEntry,
    op: Operation,
    path: &str,
    data: Data,
) -> Result<crate::logical::Response, ApiError> {
    let ctx = EngineCtx {
        view: BarrierView::new(p.barrier.clone(), &m.storage_prefix()),
        mount: m,
        path,
        caller: None,
        now: OffsetDateTime::now_utc(),
    };
    let req = Request::new(op, format!("{}{path}", m.route_prefix())).with_data(data);
    engine.handle(&ctx, &req).await
}

/// A role's definition in this cell, or `None` when it has none.
async fn export_role(
    p: &Pipeline,
    engine: &dyn Engine,
    m: &MountEntry,
    prefix: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Param>>, ApiError> {
    let path = format!("{prefix}{name}");
    match call_engine(p, engine, m, Operation::Read, &path, Data::new()).await {
        Ok(resp) => Ok(resp.data.as_ref().map(to_params)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The role names of a mount in this cell.
async fn role_names(
    p: &Pipeline,
    engine: &dyn Engine,
    m: &MountEntry,
    prefix: &str,
) -> Result<Vec<String>, ApiError> {
    let dir = prefix.trim_end_matches('/');
    match call_engine(p, engine, m, Operation::List, dir, Data::new()).await {
        Ok(resp) => Ok(resp
            .data
            .and_then(|d| d.get("keys").cloned())
            .and_then(|k| serde_json::from_value::<Vec<String>>(k).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|k| !k.ends_with('/'))
            .collect()),
        Err(ApiError::NotFound(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// After a request on a global mount succeeded: if it wrote or deleted a
/// role, shares the role's new definition (or its deletion).
pub(super) async fn share_role(
    p: &Pipeline,
    engine: &dyn Engine,
    m: &MountEntry,
    rel: &str,
    op: Operation,
) -> Result<(), ApiError> {
    let Some(prefix) = engine.shared_roles() else {
        return Ok(());
    };
    let Some(name) = rel
        .trim_end_matches('/')
        .strip_prefix(prefix)
        .filter(|n| !n.is_empty() && !n.contains('/'))
    else {
        return Ok(());
    };
    let value = match op {
        Operation::Create | Operation::Update | Operation::Patch => {
            export_role(p, engine, m, prefix, name)
                .await?
                .map(|params| {
                    Value::Role(RoleConfig {
                        engine: m.mount_type.clone(),
                        params,
                    })
                })
        }
        Operation::Delete => None,
        Operation::Read | Operation::List => return Ok(()),
    };
    p.control.write(role_key(m, name), value).await.map_err(|e| {
        ApiError::Unavailable(format!(
            "role {name:?} was saved in this cell but could not be shared with the other cells ({e}); write it again"
        ))
    })?;
    Ok(())
}

/// Shares a mount just enabled here.
pub(super) async fn publish(p: &Pipeline, m: &MountEntry) -> Result<(), ApiError> {
    let cfg = MountConfig {
        engine: m.mount_type.clone(),
        description: m.description.clone(),
        default_lease_ttl_s: m.config.default_lease_ttl,
        max_lease_ttl_s: m.config.max_lease_ttl,
        options: m.options.clone(),
    };
    p.control.write(key(m), Some(Value::Mount(cfg))).await?;
    Ok(())
}

/// Withdraws a global mount, and its shared roles, from every cell.
pub(super) async fn withdraw(p: &Pipeline, m: &MountEntry) -> Result<(), ApiError> {
    p.control.write(key(m), None).await?;
    let (table, path) = (table_of(m), m.path.clone());
    let roles: Vec<Key> = p
        .control
        .read(|r| {
            r.state()
                .registers()
                .filter_map(|(k, _)| match k {
                    Key::Role {
                        table: t, mount, ..
                    } if *t == table && *mount == path && r.state().get(k).is_some() => {
                        Some(k.clone())
                    }
                    _ => None,
                })
                .collect()
        })
        .await?;
    for k in roles {
        p.control.write(k, None).await?;
    }
    Ok(())
}

/// Brings this cell's mount table in line with the global mounts: enables
/// the ones it lacks, disables its copies of withdrawn ones. Run by the
/// leader whenever the control plane may have changed.
pub(crate) async fn reconcile(p: &Pipeline) -> Result<(), ApiError> {
    let wanted: Vec<(Key, Option<Value>)> = p
        .control
        .read(|r| {
            // Every mount key, deleted ones included (a tombstone's value
            // in force is `None`).
            r.state()
                .registers()
                .filter(|(k, _)| k.kind() == Kind::Mount)
                .map(|(k, _)| (k.clone(), r.state().get(k)))
                .collect()
        })
        .await?;
    let (mut enabled, mut disabled) = (Vec::new(), Vec::new());
    for (key, value) in wanted {
        let Key::Mount { table, path } = &key else {
            continue;
        };
        let table = match table {
            MountTable::Secrets => Table::Secrets,
            MountTable::Auth => Table::Auth,
        };
        let here = p.router().get(table, path);
        match (value, here) {
            (Some(Value::Mount(cfg)), None) => {
                let mut data = Data::new();
                data.insert("type".into(), cfg.engine.clone().into());
                data.insert("description".into(), cfg.description.clone().into());
                data.insert("options".into(), serde_json::json!(cfg.options));
                data.insert(
                    "config".into(),
                    serde_json::json!({
                        "default_lease_ttl": cfg.default_lease_ttl_s,
                        "max_lease_ttl": cfg.max_lease_ttl_s,
                    }),
                );
                data.insert("global".into(), true.into());
                let req = Request::new(Operation::Update, "sys/mounts").with_data(data);
                match super::sys::enable_mount_from(p, &req, table, path, false).await {
                    Ok(_) => enabled.push(path.clone()),
                    Err(e) => {
                        tracing::warn!(%path, error = %e, "cannot enable a global mount in this cell");
                    }
                }
            }
            (Some(Value::Mount(_)), Some(m)) if !m.global => {
                tracing::warn!(%path, "a global mount's path is taken by a local mount of this cell");
            }
            (None, Some(m)) if m.global => {
                super::sys::disable_mount_here(p, table, path).await?;
                disabled.push(path.clone());
            }
            _ => {}
        }
    }
    if !enabled.is_empty() || !disabled.is_empty() {
        tracing::info!(?enabled, ?disabled, "global mounts reconciled");
    }
    reconcile_roles(p).await
}

/// Shared roles this cell could not apply, and why.
pub(super) fn roles_refused(p: &Pipeline) -> BTreeMap<String, String> {
    p.roles_refused
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Brings the roles of this cell's global mounts in line with the shared
/// ones: writes those that differ, deletes those deleted elsewhere, and
/// shares any role of a global mount that was never shared (a write whose
/// sharing failed).
async fn reconcile_roles(p: &Pipeline) -> Result<(), ApiError> {
    let shared: Vec<(Key, Option<Value>)> = p
        .control
        .read(|r| {
            r.state()
                .registers()
                .filter(|(k, _)| k.kind() == Kind::Role)
                .map(|(k, _)| (k.clone(), r.state().get(k)))
                .collect()
        })
        .await?;
    let router = p.router();
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    let mut known: BTreeSet<Key> = BTreeSet::new();
    let (mut written, mut deleted) = (Vec::new(), Vec::new());
    for (key, value) in shared {
        known.insert(key.clone());
        let Key::Role { table, mount, name } = &key else {
            continue;
        };
        let table = match table {
            MountTable::Secrets => Table::Secrets,
            MountTable::Auth => Table::Auth,
        };
        let Some(m) = router.get(table, mount).filter(|m| m.global) else {
            continue;
        };
        let Some(engine) = p.engines.get(m.mount_type.as_str()).cloned() else {
            continue;
        };
        let Some(prefix) = engine.shared_roles() else {
            continue;
        };
        let here = export_role(p, engine.as_ref(), &m, prefix, name).await?;
        match value {
            Some(Value::Role(cfg)) if cfg.engine == m.mount_type => {
                if here.as_ref() == Some(&cfg.params) {
                    continue;
                }
                let body = match from_params(&cfg.params) {
                    Ok(body) => body,
                    Err(e) => {
                        refused.insert(key.to_string(), e);
                        continue;
                    }
                };
                let path = format!("{prefix}{name}");
                match call_engine(p, engine.as_ref(), &m, Operation::Update, &path, body).await {
                    Ok(_) => written.push(key.to_string()),
                    Err(e) => {
                        refused.insert(key.to_string(), e.to_string());
                    }
                }
            }
            Some(_) => {
                refused.insert(
                    key.to_string(),
                    format!("the role is not for a {} mount", m.mount_type),
                );
            }
            None if here.is_some() => {
                let path = format!("{prefix}{name}");
                call_engine(
                    p,
                    engine.as_ref(),
                    &m,
                    Operation::Delete,
                    &path,
                    Data::new(),
                )
                .await?;
                deleted.push(key.to_string());
            }
            None => {}
        }
    }
    // Roles of global mounts that were never shared.
    for m in router.all().filter(|m| m.global) {
        let Some(engine) = p.engines.get(m.mount_type.as_str()).cloned() else {
            continue;
        };
        let Some(prefix) = engine.shared_roles() else {
            continue;
        };
        for name in role_names(p, engine.as_ref(), m, prefix).await? {
            if !known.contains(&role_key(m, &name)) {
                let rel = format!("{prefix}{name}");
                share_role(p, engine.as_ref(), m, &rel, Operation::Update).await?;
            }
        }
    }
    if !written.is_empty() || !deleted.is_empty() {
        tracing::info!(?written, ?deleted, "shared roles reconciled");
    }
    // Each refusal is logged once, when it starts or its reason changes.
    let mut was = p
        .roles_refused
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (role, why) in &refused {
        if was.get(role) != Some(why) {
            tracing::warn!(%role, reason = %why, "this cell cannot apply a shared role yet; it retries on every change and every few seconds");
        }
    }
    *was = refused;
    Ok(())
}
