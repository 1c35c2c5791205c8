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

/// The media type of a packed snapshot.
const SNAPSHOT_TYPE: &str = "application/vnd.sigil.snapshot";

/// `GET sys/storage/raft/snapshot`: the cell's state as of now (at least
/// every write acknowledged before the request), streamed as one packed,
/// checksummed file. It holds barrier ciphertext only.
pub(super) async fn snapshot_save(cell: &RaftCell) -> Result<Response, ApiError> {
    cell.linearize()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let sm = cell.state_machine().clone();
    let path = tempfile::TempPath::try_from_path(sm.incoming_path())
        .map_err(|e| ApiError::Internal(format!("cannot take a snapshot: {e}")))?;
    let out = path.to_path_buf();
    let (len, index) = tokio::task::spawn_blocking(move || {
        sm.export(&out)
            .map_err(|e| ApiError::Internal(format!("cannot take a snapshot: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("snapshot task failed: {e}")))??;
    tracing::info!(bytes = len, index, "snapshot saved by an operator");
    Ok(Response {
        download: Some(crate::logical::Download {
            content_type: SNAPSHOT_TYPE.to_owned(),
            path: std::sync::Arc::new(path),
            len,
        }),
        ..Response::default()
    })
}

/// `POST sys/storage/raft/snapshot[-force]`: replaces the cell's whole
/// state with an uploaded snapshot. The file is checked (checksum, format,
/// and unless `force`, that this cell's root key opens its keyring) before
/// anything is proposed; a refused snapshot changes nothing.
pub(super) async fn snapshot_restore(
    cell: &RaftCell,
    barrier: &crate::barrier::Barrier,
    req: &Request,
    force: bool,
) -> Result<Response, ApiError> {
    use crate::file_stream::{CopyError, write_file};
    let body = req
        .upload
        .take()
        .ok_or_else(|| ApiError::InvalidRequest("no snapshot in the request body".into()))?;
    let io = |e: std::io::Error| ApiError::Internal(format!("cannot store the upload: {e}"));
    let path =
        tempfile::TempPath::try_from_path(cell.state_machine().incoming_path()).map_err(io)?;
    let len = write_file(body.into_data_stream(), &path)
        .await
        .map_err(|e| match e {
            CopyError::Source(e) => {
                ApiError::InvalidRequest(format!("the snapshot upload was cut off: {e}"))
            }
            CopyError::Io(e) => io(e),
        })?;
    if len == 0 {
        return Err(ApiError::InvalidRequest(
            "no snapshot in the request body".into(),
        ));
    }
    let check_path = path.to_path_buf();
    let checker = barrier.clone();
    tokio::task::spawn_blocking(move || check_snapshot(&check_path, &checker, force))
        .await
        .map_err(|e| ApiError::Internal(format!("snapshot check failed: {e}")))??;
    let (result, index) = cell
        .restore(&path)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    match result {
        crate::raft::CommandResult::Applied => {
            tracing::warn!(
                bytes = len,
                index,
                force,
                "snapshot restored by an operator"
            );
            if !force && let Err(e) = barrier.store_keyring_if_newer().await {
                tracing::error!(error = %e, "could not store the current keyring after the restore");
            }
            Ok(Response::empty())
        }
        crate::raft::CommandResult::PreconditionFailed { key } => Err(ApiError::Internal(format!(
            "the restore was refused: {key}"
        ))),
        crate::raft::CommandResult::Duplicate => Ok(Response::empty()),
    }
}

/// Checks an uploaded snapshot before it is proposed (blocking): intact,
/// a Sigil state database, initialised, and (unless `force`) sealed under
/// this cell's root key, so the cell can still read its data afterwards.
fn check_snapshot(
    path: &std::path::Path,
    barrier: &crate::barrier::Barrier,
    force: bool,
) -> Result<(), ApiError> {
    crate::raft::snapshot::verify(path)
        .map_err(|e| ApiError::InvalidRequest(format!("the snapshot is not intact: {e}")))?;
    let scratch = tempfile::Builder::new()
        .prefix("check-")
        .tempdir_in(path.parent().unwrap_or(std::path::Path::new(".")))
        .map_err(|e| ApiError::Internal(format!("cannot unpack the snapshot: {e}")))?;
    let dest = scratch.path().join("db");
    crate::raft::snapshot::unpack(path, &dest)
        .map_err(|e| ApiError::InvalidRequest(format!("the snapshot cannot be unpacked: {e}")))?;
    let db = crate::storage::RocksStorage::open(&dest).map_err(|e| {
        ApiError::InvalidRequest(format!("the snapshot is not a Sigil state database: {e}"))
    })?;
    let keyring = crate::storage::Storage::get(&db, crate::barrier::KEYRING_KEY)
        .map_err(|e| ApiError::InvalidRequest(format!("the snapshot cannot be read: {e}")))?
        .ok_or_else(|| {
            ApiError::InvalidRequest(
                "the snapshot holds no keyring: it was taken before the cell was initialised"
                    .into(),
            )
        })?;
    if !force && !barrier.opens_keyring(&keyring)? {
        return Err(ApiError::InvalidRequest(
            "the snapshot was sealed under a different root key than this cell's; \
             restore it with sys/storage/raft/snapshot-force, then unseal with that \
             snapshot's keys"
                .into(),
        ));
    }
    Ok(())
}
