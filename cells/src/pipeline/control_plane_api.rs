//! `sys/control-plane/*`: what this cell's control-plane replica holds and
//! how its sync with peer cells goes (docs/architecture.md, "The control
//! plane").
//!
//! - `status`: the version vector, state digest and clock; each peer's
//!   stream, last sync, and lag (ops the peer has applied that we have not,
//!   per origin); bytes and ops sent and received. Served by the leader,
//!   which runs the sync; `?local=true` asks the node reached about its own
//!   replica.
//! - `cells`: the cell registry.
//! - `conflicts`: keys written concurrently in different cells, with the
//!   value in force and the ones it outranked. Writing the key again
//!   resolves its conflict.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde_json::{Value as Json, json};
use sigil_control_plane::model::{CellStatus, MountTable};
use sigil_control_plane::sync::status::lag;
use sigil_control_plane::{CellId, Key, Kind, Stamped, Value};

use super::Pipeline;
use crate::api_error::ApiError;
use crate::logical::{Operation, Request, Response};

pub(super) async fn handle(p: &Pipeline, req: &Request, rest: &str) -> Result<Response, ApiError> {
    let read = matches!(req.operation, Operation::Read | Operation::List);
    match rest.trim_end_matches('/') {
        "status" if req.operation == Operation::Read => status(p).await,
        "cells" if read => cells(p).await,
        "conflicts" if read => conflicts(p).await,
        "status" | "cells" | "conflicts" => Err(ApiError::UnsupportedOperation),
        other => Err(ApiError::NotFound(format!(
            "no handler for route \"sys/control-plane/{other}\". route entry not found."
        ))),
    }
}

fn vv_json<'a>(dots: impl Iterator<Item = (&'a CellId, u64)>) -> Json {
    Json::Object(
        dots.map(|(c, n)| (c.to_string(), json!(n)))
            .collect::<serde_json::Map<_, _>>(),
    )
}

async fn status(p: &Pipeline) -> Result<Response, ApiError> {
    let control = p.control();
    let (applied, digest, hlc, pending, logs) = control
        .read(|r| {
            let logs: BTreeMap<String, Json> = r
                .floors()
                .map(|(origin, floor)| {
                    (
                        origin.to_string(),
                        json!({ "first": floor, "last": r.applied().get(origin) }),
                    )
                })
                .collect();
            (
                r.applied().clone(),
                hex::encode(r.state().digest()),
                r.hlc(),
                r.pending(),
                logs,
            )
        })
        .await?;
    let sync = control.sync_status();
    let statuses = sync.peers();
    let peers: Vec<Json> = control
        .peers()
        .iter()
        .map(|peer| {
            let s = statuses.get(&peer.cell).cloned().unwrap_or_default();
            let behind = s.peer_applied.as_ref().map(|theirs| {
                let l = lag(&applied, theirs);
                vv_json(l.iter().map(|(c, n)| (c, *n)))
            });
            json!({
                "cell": peer.cell.to_string(),
                "addrs": peer.addrs,
                "connected": s.connected,
                "last_sync_ms": s.last_sync_ms,
                "last_error": s.last_error,
                "peer_version_vector": s.peer_applied.as_ref().map(|v| vv_json(v.iter().map(|d| (d.actor, d.counter)))),
                "lag": behind,
                "entries_received": s.entries_received,
                "states_received": s.states_received,
                "bytes_received": s.bytes_received,
            })
        })
        .collect();
    let leads = p.cell.as_ref().is_none_or(|c| c.is_leader());
    Ok(Response::from_json(json!({
        "cell": control.cell_id().to_string(),
        "leader": leads,
        "node": p.cell.as_ref().map(|c| c.node().name.clone()),
        "version_vector": vv_json(applied.iter().map(|d| (d.actor, d.counter))),
        "state_digest": digest,
        "hlc": hlc.to_string(),
        "pending": pending,
        "logs": logs,
        "peers": peers,
        "roles_refused": super::global_mounts::roles_refused(p),
        "entries_sent": sync.entries_sent.load(Ordering::Relaxed),
        "states_sent": sync.states_sent.load(Ordering::Relaxed),
        "bytes_sent": sync.bytes_sent.load(Ordering::Relaxed),
    })))
}

async fn cells(p: &Pipeline) -> Result<Response, ApiError> {
    let control = p.control();
    // The value in force of each cell's entry, with when it was written.
    let entries: Vec<(CellId, Stamped)> = control
        .read(|r| {
            r.state()
                .of_kind(Kind::Cell)
                .into_iter()
                .filter_map(|(k, _)| {
                    let Key::Cell { id } = &k else { return None };
                    let s = r.state().values(&k).into_iter().next()?;
                    Some((id.clone(), s))
                })
                .collect()
        })
        .await?;
    let mut keys = Vec::new();
    let mut cells = serde_json::Map::new();
    for (id, s) in entries {
        let Some(Value::Cell(info)) = s.value else {
            continue;
        };
        keys.push(json!(id.to_string()));
        cells.insert(
            id.to_string(),
            json!({
                "region": info.region,
                "api_addrs": info.api_addrs,
                "cluster_addrs": info.cluster_addrs,
                "status": match info.status {
                    CellStatus::Active => "active",
                    CellStatus::Draining => "draining",
                    CellStatus::Retired => "retired",
                },
                "updated_ms": s.hlc.wall_ms,
                "self": id == *control.cell_id(),
            }),
        );
    }
    Ok(Response::from_json(json!({ "keys": keys, "cells": cells })))
}

async fn conflicts(p: &Pipeline) -> Result<Response, ApiError> {
    let conflicts = p.control().read(|r| r.state().conflicts()).await?;
    let list: Vec<Json> = conflicts
        .iter()
        .map(|c| {
            json!({
                "key": key_json(&c.key),
                "winner": stamped_json(&c.winner),
                "losers": c.losers.iter().map(stamped_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let keys: Vec<String> = conflicts.iter().map(|c| c.key.to_string()).collect();
    Ok(Response::from_json(
        json!({ "keys": keys, "conflicts": list }),
    ))
}

fn key_json(key: &Key) -> Json {
    let table = |t: &MountTable| match t {
        MountTable::Secrets => "secrets",
        MountTable::Auth => "auth",
    };
    match key {
        Key::Policy { name } => json!({ "kind": "policy", "name": name }),
        Key::Mount { table: t, path } => {
            json!({ "kind": "mount", "table": table(t), "path": path })
        }
        Key::Role {
            table: t,
            mount,
            name,
        } => json!({ "kind": "role", "table": table(t), "mount": mount, "name": name }),
        Key::Cell { id } => json!({ "kind": "cell", "id": id.to_string() }),
        Key::Namespace { path } => json!({ "kind": "namespace", "path": path }),
        Key::Revocation { id } => json!({ "kind": "revocation", "id": id }),
    }
}

/// One value of a conflict. Control-plane values are configuration, never
/// secrets, so a policy's text is shown whole.
fn stamped_json(s: &Stamped) -> Json {
    let value = match &s.value {
        None => json!(null),
        Some(Value::Policy(doc)) => json!({ "policy": doc.text }),
        Some(other) => serde_json::to_value(other).unwrap_or(Json::Null),
    };
    json!({
        "origin": s.origin.to_string(),
        "hlc": s.hlc.to_string(),
        "written_ms": s.hlc.wall_ms,
        "deleted": s.value.is_none(),
        "value": value,
    })
}
