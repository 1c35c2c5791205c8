//! Global mounts: a mount enabled with `global: true` exists in every
//! federated cell (docs/architecture.md, "The control plane"). Its
//! configuration — engine type, description, TTLs, options — is a
//! control-plane register (`Key::Mount`); each cell's leader enables its own
//! copy, so each cell holds its own data and its own keys under it, and
//! nothing under the mount ever crosses cells. Disabling a global mount in
//! any cell writes a tombstone, and every cell disables its copy.
//!
//! Not yet shared: the roles written under a global mount (each cell's
//! roles are its own until role replication lands).

use sigil_control_plane::model::{MountConfig, MountTable};
use sigil_control_plane::{Key, Kind, Value};

use super::Pipeline;
use crate::api_error::ApiError;
use crate::logical::{Data, Operation, Request};
use crate::mounts::{MountEntry, Table};

fn key(m: &MountEntry) -> Key {
    let table = match m.table {
        Table::Secrets => MountTable::Secrets,
        Table::Auth => MountTable::Auth,
    };
    Key::Mount {
        table,
        path: m.path.clone(),
    }
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

/// Withdraws a global mount from every cell.
pub(super) async fn withdraw(p: &Pipeline, m: &MountEntry) -> Result<(), ApiError> {
    p.control.write(key(m), None).await?;
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
    Ok(())
}
