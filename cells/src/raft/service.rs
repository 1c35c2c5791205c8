//! The server side of the cluster RPCs (`sigil.cluster.v1.Cluster`).
//!
//! Raft messages go straight to the local openraft instance. A snapshot is
//! received into a file, its size and checksum are verified, and only then
//! is it handed to Raft: a corrupt transfer is refused with `DATA_LOSS` and
//! leaves the node unchanged. Forwarded client requests go to the
//! [`ForwardHandler`] the node installs.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Future, StreamExt};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::AppendEntriesRequest;
use sigil_proto::cluster::v1 as pb;
use sigil_proto::cluster::v1::cluster_server::{Cluster, ClusterServer};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::cell::RaftCell;
use super::network::{MAX_MESSAGE, QUORUM_AGE_HEADER};
use super::snapshot;
use super::{
    CellNode, Command, Snapshot, SnapshotMeta, TypeConfig, Vote, decode, encode, node_id_of,
};

/// Runs a client request forwarded by a follower. Implemented by the node;
/// the reply is the JSON-encoded outcome and the applied index after it.
pub trait ForwardHandler: Send + Sync + 'static {
    fn forward(
        &self,
        request: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = (Vec<u8>, u64)> + Send + '_>>;
}

/// The cluster service. Serves Raft and forwarding for one node.
#[derive(Clone)]
pub struct ClusterService {
    cell: RaftCell,
    forward: Arc<std::sync::RwLock<Option<Arc<dyn ForwardHandler>>>>,
}

impl std::fmt::Debug for ClusterService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterService").finish_non_exhaustive()
    }
}

impl ClusterService {
    pub fn new(cell: RaftCell) -> Self {
        Self {
            cell,
            forward: Arc::default(),
        }
    }

    /// Installs the handler for forwarded requests.
    pub fn set_forward_handler(&self, handler: Arc<dyn ForwardHandler>) {
        *self.forward.write().unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// The server for the cluster port, admitting only nodes of `cell`: the
    /// port also admits federated peer cells, for control-plane sync alone.
    pub fn into_server_for(
        self,
        cell: crate::cluster_pki::CellId,
    ) -> tonic::service::interceptor::InterceptedService<ClusterServer<Self>, AdmitCell> {
        tonic::service::interceptor::InterceptedService::new(self.into_server(), AdmitCell(cell))
    }

    pub fn into_server(self) -> ClusterServer<Self> {
        ClusterServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

/// Refuses callers whose certificate names another cell than this one.
#[derive(Debug, Clone)]
pub struct AdmitCell(crate::cluster_pki::CellId);

impl tonic::service::Interceptor for AdmitCell {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        match crate::cluster_pki::peer_identity(&req) {
            Some(peer) if peer.cell != self.0 => Err(Status::permission_denied(format!(
                "a node of cell {} may not call cell {}'s cluster service",
                peer.cell, self.0
            ))),
            _ => Ok(req),
        }
    }
}

fn bad_payload(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable cluster message: {e}"))
}

fn encoded<T: serde::Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    let payload = encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(pb::RaftPayload {
        payload: payload.into(),
    }))
}

/// Maps a refused proposal to a status the proposer can act on: `NOT_LEADER`
/// errors name the leader so the follower can retry there.
pub(crate) fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            let mut s = Status::failed_precondition("not the leader");
            if let Some(node) = f.leader_node
                && let Ok(v) = node.cluster_addr.parse()
            {
                s.metadata_mut().insert("x-sigil-leader", v);
            }
            s
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            Status::failed_precondition(c.to_string())
        }
        // A leader change truncated the entry away: it was never committed,
        // and the proposer retries with the same request id.
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(d)) => {
            Status::unavailable(format!("the proposal was discarded: {d}"))
        }
        RaftError::APIError(ClientWriteError::PreconditionFailed(p)) => {
            Status::failed_precondition(p.to_string())
        }
        RaftError::Fatal(f) => Status::unavailable(format!("raft stopped: {f}")),
    }
}

/// The replies of a pipelined AppendEntries stream (see
/// [`Cluster::append_stream`]).
type AppendReplies = Pin<Box<dyn futures::Stream<Item = Result<pb::RaftPayload, Status>> + Send>>;

#[tonic::async_trait]
impl Cluster for ClusterService {
    type AppendStreamStream = AppendReplies;

    async fn append_stream(
        &self,
        req: Request<Streaming<pb::RaftPayload>>,
    ) -> Result<Response<AppendReplies>, Status> {
        // Each reply answers the request at the front of `sent`: what the
        // leader said of its quorum then, and its commit index, so an
        // accepted request updates this node's freshness as a unary one does.
        let sent: Arc<std::sync::Mutex<std::collections::VecDeque<(Option<u64>, u64)>>> =
            Arc::default();
        let incoming = req.into_inner();
        let queue = sent.clone();
        // A request that does not decode ends the stream: what follows it
        // could not be in order.
        let requests = incoming
            .take_while(|m| std::future::ready(m.is_ok()))
            .filter_map(|m| std::future::ready(m.ok()))
            .map(|m| decode::<(Option<u64>, AppendEntriesRequest<TypeConfig>)>(&m.payload))
            .take_while(|r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "undecodable AppendEntries in a stream; ending it");
                }
                std::future::ready(r.is_ok())
            })
            .filter_map(|r| std::future::ready(r.ok()))
            .map(move |(age, rpc)| {
                let commit = rpc.leader_commit.map_or(0, |l| l.index);
                queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back((age, commit));
                rpc
            });
        let cell = self.cell.clone();
        let replies = self.cell.raft().stream_append(requests).map(move |result| {
            let front = sent.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            if let (Ok(Ok(_)), Some((Some(age), commit))) = (&result, front) {
                cell.freshness().record(Duration::from_millis(age), commit);
            }
            let result = result.map_err(|fatal| fatal.to_string());
            let payload = encode(&result).map_err(|e| Status::internal(e.to_string()))?;
            Ok(pb::RaftPayload {
                payload: payload.into(),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn append_entries(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let quorum_age = req
            .metadata()
            .get(QUORUM_AGE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(&req.into_inner().payload).map_err(bad_payload)?;
        let commit = rpc.leader_commit.map_or(0, |l| l.index);
        let result = self.cell.raft().append_entries(rpc).await;
        // Only a leader this node accepted says anything about freshness.
        if let (Some(age), Ok(resp)) = (quorum_age, &result)
            && resp.is_success()
        {
            self.cell
                .freshness()
                .record(Duration::from_millis(age), commit);
        }
        encoded(&result)
    }

    async fn vote(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = decode(&req.into_inner().payload).map_err(bad_payload)?;
        let result = self.cell.raft().vote(rpc).await;
        encoded(&result)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let (vote, meta, size): (Vote, SnapshotMeta, u64) =
            decode(&first.header).map_err(bad_payload)?;
        let mut file = self
            .cell
            .state_machine()
            .begin_receiving_snapshot()
            .map_err(|e| Status::internal(format!("cannot store incoming snapshot: {e}")))?;
        file.size = size;
        let path = file.path.clone();
        let mut out = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Status::internal(format!("cannot store incoming snapshot: {e}")))?;
        let mut received: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            received += chunk.data.len() as u64;
            if received > size {
                return Err(Status::data_loss(format!(
                    "snapshot longer than its declared {size} bytes"
                )));
            }
            out.write_all(&chunk.data)
                .await
                .map_err(|e| Status::internal(format!("cannot store incoming snapshot: {e}")))?;
        }
        out.sync_all()
            .await
            .map_err(|e| Status::internal(format!("cannot store incoming snapshot: {e}")))?;
        drop(out);
        if received != size {
            return Err(Status::data_loss(format!(
                "snapshot truncated: {received} of {size} bytes"
            )));
        }
        let check = path.clone();
        tokio::task::spawn_blocking(move || snapshot::verify(&check))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| {
                tracing::warn!(index = ?meta.last_log_id.map(|l| l.index), error = %e, "refusing snapshot");
                Status::data_loss(e.to_string())
            })?;
        let snapshot = Snapshot {
            meta,
            snapshot: file,
        };
        let result: Result<_, RaftError<TypeConfig>> = self
            .cell
            .raft()
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(RaftError::Fatal);
        encoded(&result)
    }

    async fn propose(
        &self,
        req: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeReply>, Status> {
        let cmd: Command = decode(&req.into_inner().command).map_err(bad_payload)?;
        let (result, index) = self.cell.write_here(cmd).await?;
        let result = encode(&result).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ProposeReply {
            result: result.into(),
            index,
        }))
    }

    async fn read_index(
        &self,
        _req: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexReply>, Status> {
        let index = self.cell.read_index_as_leader().await?;
        Ok(Response::new(pb::ReadIndexReply { index }))
    }

    async fn forward(
        &self,
        req: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardReply>, Status> {
        if !self.cell.is_leader() {
            return Err(Status::failed_precondition("not the leader"));
        }
        let handler = self
            .forward
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Status::unavailable("node is starting"))?;
        let (reply, index) = handler.forward(req.into_inner().request.to_vec()).await;
        Ok(Response::new(pb::ForwardReply {
            reply: reply.into(),
            index,
        }))
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        // The cell CA vouched for the caller's certificate; the name it asks
        // to join under must be the one the certificate carries.
        let peer = crate::cluster_pki::peer_identity(&req);
        let j = req.into_inner();
        if let Some(peer) = peer
            && peer.node.as_str() != j.node_name
        {
            return Err(Status::permission_denied(format!(
                "the caller's certificate names node {}, not {:?}",
                peer.node, j.node_name
            )));
        }
        let node = CellNode {
            name: j.node_name,
            cluster_addr: j.cluster_addr,
            api_addr: j.api_addr,
        };
        let membership = self.cell.add_member(node_id_of(&node.name), node).await?;
        let membership = encode(&membership).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::JoinReply {
            membership: membership.into(),
        }))
    }
}
