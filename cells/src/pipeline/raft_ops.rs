//! `sys/storage/raft/*` and `sys/step-down`: the cell's membership as Vault's
//! integrated storage reports it, and the operations on it.

use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::logical::{Request, Response};
use crate::params;
use crate::raft::{RaftCell, node_id_of};

/// `GET sys/storage/raft/configuration`, in Vault's shape.
pub(super) fn configuration(cell: &RaftCell) -> Result<Response, ApiError> {
    let applied = cell.applied();
    let leader = cell.leader().map(|(id, _)| id);
    let membership = applied.membership.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let servers: Vec<Value> = membership
        .nodes()
        .map(|(id, node)| {
            json!({
                "node_id": node.name,
                "address": node.cluster_addr,
                "api_address": node.api_addr,
                "leader": leader == Some(*id),
                "voter": voters.contains(id),
                "protocol_version": "3",
            })
        })
        .collect();
    let mut d = crate::logical::Data::new();
    d.insert(
        "config".into(),
        json!({
            "index": applied.membership.log_id().map_or(0, |l| l.index),
            "servers": servers,
        }),
    );
    Ok(Response::data(d))
}

/// `POST sys/storage/raft/remove-peer {server_id}` (on the leader).
pub(super) async fn remove_peer(cell: &RaftCell, req: &Request) -> Result<Response, ApiError> {
    params::deny_unknown(&req.data, &["server_id", "dr_operation_token"])?;
    let name = params::require_string(&req.data, "server_id")?;
    if name == cell.node().name {
        return Err(ApiError::InvalidRequest(
            "a node cannot remove itself; step it down and remove it from another node".into(),
        ));
    }
    cell.remove_member(node_id_of(&name))
        .await
        .map_err(|s| match s.code() {
            tonic::Code::NotFound => {
                ApiError::InvalidRequest(format!("no server {name:?} in the cell"))
            }
            _ => ApiError::Unavailable(s.message().to_owned()),
        })?;
    tracing::info!(server = %name, "removed from the cell");
    Ok(Response::empty())
}

/// `PUT sys/step-down`: this node stops leading; another is elected.
pub(super) async fn step_down(cell: &RaftCell) -> Result<Response, ApiError> {
    if !cell.is_leader() {
        return Err(ApiError::InvalidRequest(
            "this node is not the leader".into(),
        ));
    }
    cell.step_down()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Response::empty())
}
