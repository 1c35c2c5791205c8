//! The client side of the cluster RPCs: openraft's network over tonic.
//!
//! Channels come from a [`Connector`], so the same code runs over mutual
//! TLS in a cell and over plain loopback TCP in tests that exercise Raft
//! alone. Channels connect lazily and are cached per peer address.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use openraft::RaftNetworkV2;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use sigil_proto::cluster::v1 as pb;
use sigil_proto::cluster::v1::cluster_client::ClusterClient;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;

use super::snapshot::SnapshotFile;
use super::{CellNode, NodeId, RaftMetrics, Snapshot, TypeConfig, Vote, decode, encode};

/// Snapshot data is streamed in chunks of this size.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Encoded messages may be this large (a batch of log entries).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Makes a (lazily connecting) channel to a peer's cluster address.
pub trait Connector: Send + Sync + std::fmt::Debug + 'static {
    fn channel(&self, addr: &str) -> Result<Channel, String>;

    /// Why the peer at `addr` refuses this node's connections, if it does.
    /// With TLS 1.3 a server refuses a client certificate only after the
    /// client's side of the handshake is done, so an RPC sees just a closed
    /// connection; a probe reads the server's alert instead.
    fn probe(&self, _addr: &str) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>> {
        Box::pin(std::future::ready(None))
    }
}

/// Plain TCP, for tests of Raft alone on loopback. Cells use mutual TLS.
#[derive(Debug, Default)]
pub struct PlainConnector;

impl Connector for PlainConnector {
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        Ok(endpoint(addr)?.connect_lazy())
    }
}

/// The endpoint settings every cluster channel shares. The address is
/// always `http://`: with mutual TLS the connector does the TLS itself.
pub fn endpoint(addr: &str) -> Result<tonic::transport::Endpoint, String> {
    use std::time::Duration;
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad cluster address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5)),
    )
}

/// Cached channels to peers, shared by Raft replication and forwarding.
#[derive(Debug, Clone)]
pub struct Peers {
    connector: Arc<dyn Connector>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// This node's Raft metrics, to tell followers how fresh the leader's
    /// quorum contact is (see [`super::cell::Freshness`]).
    metrics: Arc<std::sync::OnceLock<tokio::sync::watch::Receiver<RaftMetrics>>>,
    /// Advertised address → address actually dialled (`raft.dial_overrides`).
    overrides: Arc<std::collections::BTreeMap<String, String>>,
}

/// Metadata on AppendEntries: milliseconds since the sending leader last
/// heard from a quorum.
pub const QUORUM_AGE_HEADER: &str = "x-sigil-quorum-age-ms";

impl Peers {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self {
            connector,
            channels: Arc::default(),
            metrics: Arc::default(),
            overrides: Arc::default(),
        }
    }

    /// Dials `to` whenever a peer advertises `from`.
    pub fn with_overrides(mut self, overrides: std::collections::BTreeMap<String, String>) -> Self {
        self.overrides = Arc::new(overrides);
        self
    }

    pub(crate) fn set_metrics(&self, metrics: tokio::sync::watch::Receiver<RaftMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn quorum_age_ms(&self) -> Option<u64> {
        self.metrics
            .get()
            .and_then(|m| super::cell::quorum_age(&m.borrow()))
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// A client for the node at `addr`.
    pub fn client(&self, addr: &str) -> Result<ClusterClient<Channel>, String> {
        let addr = self.overrides.get(addr).map_or(addr, String::as_str);
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = self.connector.channel(addr)?;
                channels.insert(addr.to_owned(), c.clone());
                c
            }
        };
        Ok(ClusterClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// Why the peer at `addr` refuses this node's connections, if it does
    /// (see [`Connector::probe`]).
    pub async fn probe(&self, addr: &str) -> Option<String> {
        let addr = self.overrides.get(addr).map_or(addr, String::as_str);
        self.connector.probe(addr).await
    }

    /// Drops the cached channel to `addr` (after the peer restarted with a
    /// new certificate, for one).
    pub fn forget(&self, addr: &str) {
        let addr = self.overrides.get(addr).map_or(addr, String::as_str);
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
    }
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerNetwork;

    async fn new_client(&mut self, _target: NodeId, node: &CellNode) -> Self::Network {
        PeerNetwork {
            peers: self.clone(),
            node: node.clone(),
        }
    }
}

/// The network to one peer.
#[derive(Debug)]
pub struct PeerNetwork {
    peers: Peers,
    node: CellNode,
}

type RpcResult<T> = Result<T, RPCError<TypeConfig>>;

impl PeerNetwork {
    fn client(&self) -> Result<ClusterClient<Channel>, Unreachable<TypeConfig>> {
        self.peers
            .client(&self.node.cluster_addr)
            .map_err(|e| Unreachable::new(&std::io::Error::other(e)))
    }
}

/// What a pipelined AppendEntries stream yields for each request.
type StreamItem = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// How long a pipelined AppendEntries may go unanswered (checked each tick
/// of this length, so a stalled stream ends after one to two of them).
const STREAM_STALL: std::time::Duration = std::time::Duration::from_secs(3);

/// Requests sent and replies received on one AppendEntries stream.
#[derive(Debug, Default)]
struct StreamCounts {
    sent: AtomicU64,
    replied: AtomicU64,
}

/// Most bytes of entries (roughly) in one AppendEntries.
const APPEND_BUDGET: usize = 256 << 10;

/// How many of `entries`, from the first, fit in `budget` bytes (at least
/// one: a single entry larger than the budget still goes, alone).
fn entries_within(entries: &[super::Entry], budget: usize) -> usize {
    let mut total = 0usize;
    for (i, e) in entries.iter().enumerate() {
        total += match &e.payload {
            openraft::EntryPayload::Normal(p) => p.weight(),
            _ => 64,
        };
        if total > budget {
            return i.max(1);
        }
    }
    entries.len()
}

/// An encoded Raft message as a request with openraft's deadline.
fn payload_request<T: serde::Serialize>(
    rpc: &T,
    option: &RPCOption,
) -> RpcResult<tonic::Request<pb::RaftPayload>> {
    let payload = encode(rpc).map_err(codec_error)?;
    let mut req = tonic::Request::new(pb::RaftPayload {
        payload: payload.into(),
    });
    req.set_timeout(option.hard_ttl());
    Ok(req)
}

impl PeerNetwork {
    /// The peer's encoded `Result`, as openraft's RPC result.
    fn decode_reply<T: for<'de> serde::Deserialize<'de>>(
        &self,
        reply: Result<tonic::Response<pb::RaftPayload>, tonic::Status>,
    ) -> RpcResult<T> {
        let reply = reply.map_err(|s| status_error(&s))?.into_inner();
        let result: Result<T, RaftError<TypeConfig>> =
            decode(&reply.payload).map_err(codec_error)?;
        // The only error a peer's Raft returns here is that it stopped: to
        // this node, the peer is unreachable until it comes back.
        result.map_err(|e| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                "{}: {e}",
                self.node
            ))))
        })
    }
}

fn status_error(s: &tonic::Status) -> RPCError<TypeConfig> {
    let err = std::io::Error::other(format!("{}: {}", s.code(), s.message()));
    match s.code() {
        // Only a peer that cannot be reached at all puts replication to it
        // into backoff. A reply that missed its deadline (a follower slow to
        // fsync under load) is retried at once: backing off would stall
        // every write for the backoff interval.
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
        _ => RPCError::Network(NetworkError::new(&err)),
    }
}

fn codec_error(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(e.to_string())))
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotFile;

    /// Backoff for an unreachable peer: 50 ms, doubling to 500 ms. openraft's
    /// default waits 500 ms from the first failure, which stalls commits for
    /// that long whenever one follower blips.
    fn backoff(&self) -> Option<openraft::network::Backoff> {
        Some(openraft::network::Backoff::new(
            (0..4)
                .map(|i| std::time::Duration::from_millis(50 << i))
                .chain(std::iter::repeat(std::time::Duration::from_millis(500))),
        ))
    }

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<TypeConfig>> {
        // openraft gives an AppendEntries one heartbeat to complete, and
        // retries one that timed out with the same entries: a run of large
        // entries (a restore's pieces) would never get through. Send at most
        // `APPEND_BUDGET` bytes of entries at a time and report the part sent
        // as a partial success; openraft sends the rest next.
        let fit = entries_within(&rpc.entries, APPEND_BUDGET);
        let cut = (fit < rpc.entries.len()).then(|| {
            rpc.entries.truncate(fit);
            rpc.entries.last().map(|e| e.log_id)
        });
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let mut req = payload_request(&rpc, &option)?;
        if let Some(age) = self.peers.quorum_age_ms() {
            req.metadata_mut().insert(QUORUM_AGE_HEADER, age.into());
        }
        let reply = client.append_entries(req).await;
        let resp: AppendEntriesResponse<TypeConfig> = self.decode_reply(reply)?;
        Ok(match (resp, cut) {
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(last)
            }
            (resp, _) => resp,
        })
    }

    /// Pipelined AppendEntries over one gRPC stream: requests go out as
    /// openraft produces them, without waiting for the replies, so a
    /// follower's fsyncs overlap the leader's next appends. A request
    /// unanswered for [`STREAM_STALL`] (and up to twice that) ends the stream
    /// with a network error; openraft opens a new one.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, StreamItem>, RPCError<TypeConfig>>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let mut client = self.client().map_err(RPCError::Unreachable)?;
            let counts = Arc::new(StreamCounts::default());
            let sent = counts.clone();
            let peers = self.peers.clone();
            let requests = input
                .map(move |rpc| encode(&(peers.quorum_age_ms(), rpc)))
                .take_while(|r| {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "cannot encode AppendEntries; ending the stream");
                    }
                    std::future::ready(r.is_ok())
                })
                .filter_map(move |r| {
                    sent.sent.fetch_add(1, Ordering::AcqRel);
                    std::future::ready(r.ok().map(|p| pb::RaftPayload { payload: p.into() }))
                });
            let replies = client
                .append_stream(tonic::Request::new(requests))
                .await
                .map_err(|s| status_error(&s))?
                .into_inner();
            let node = self.node.clone();
            let out = futures::stream::unfold(Some((replies, counts, 0u64)), move |state| {
                let node = node.clone();
                async move {
                    let (mut replies, counts, mut stalled_at) = state?;
                    let next = loop {
                        match tokio::time::timeout(STREAM_STALL, replies.next()).await {
                            Ok(next) => break next,
                            Err(_) => {
                                // Unanswered since the last tick as well: stalled.
                                let replied = counts.replied.load(Ordering::Acquire);
                                let sent = counts.sent.load(Ordering::Acquire);
                                if sent > replied && stalled_at == replied + 1 {
                                    let e = codec_error(format!(
                                        "{node} answered no AppendEntries for {STREAM_STALL:?}"
                                    ));
                                    return Some((Err(e), None));
                                }
                                stalled_at = if sent > replied { replied + 1 } else { 0 };
                            }
                        }
                    };
                    let item = match next? {
                        Err(status) => return Some((Err(status_error(&status)), None)),
                        Ok(msg) => msg,
                    };
                    counts.replied.fetch_add(1, Ordering::AcqRel);
                    let decoded: Result<Result<StreamAppendResult<TypeConfig>, String>, _> =
                        decode(&item.payload);
                    match decoded {
                        Ok(Ok(result)) => {
                            // A refusal (conflict, higher vote) ends the stream.
                            let more = result.is_ok();
                            Some((Ok(result), more.then_some((replies, counts, stalled_at))))
                        }
                        // The peer's Raft stopped: unreachable until it is back.
                        Ok(Err(fatal)) => Some((
                            Err(RPCError::Unreachable(Unreachable::new(
                                &std::io::Error::other(format!("{node}: {fatal}")),
                            ))),
                            None,
                        )),
                        Err(e) => Some((Err(codec_error(e)), None)),
                    }
                }
            });
            let out: BoxStream<'s, StreamItem> = Box::pin(out);
            Ok(out)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let req = payload_request(&rpc, &option)?;
        let reply = client.vote(req).await;
        self.decode_reply(reply)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let unreachable =
            |e: String| StreamingError::Unreachable(Unreachable::new(&std::io::Error::other(e)));
        let mut client = self.client().map_err(StreamingError::Unreachable)?;
        let header = encode(&(vote, snapshot.meta.clone(), snapshot.snapshot.size))
            .map_err(|e| unreachable(e.to_string()))?;
        let path = snapshot.snapshot.path.clone();
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        // Chunks are read as the stream is polled, so a large snapshot is
        // never held in memory whole.
        let chunks = futures::stream::unfold(
            (Some(header), file, false),
            |(header, mut file, done)| async move {
                if done {
                    return None;
                }
                if let Some(h) = header {
                    let chunk = pb::SnapshotChunk {
                        header: h.into(),
                        data: Bytes::new(),
                    };
                    return Some((chunk, (None, file, false)));
                }
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read(&mut buf[filled..]).await {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => {
                            tracing::warn!(error = %e, "reading snapshot for transfer failed");
                            return None;
                        }
                    }
                }
                if filled == 0 {
                    return None;
                }
                buf.truncate(filled);
                let chunk = pb::SnapshotChunk {
                    header: Bytes::new(),
                    data: buf.into(),
                };
                Some((chunk, (None, file, false)))
            },
        );
        let mut req = tonic::Request::new(chunks);
        req.set_timeout(option.hard_ttl().max(std::time::Duration::from_secs(600)));
        let send = client.install_snapshot(req);
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            reply = send => reply,
        };
        // Keep the file until the transfer finished.
        drop(snapshot);
        let reply = reply
            .map_err(|s| unreachable(format!("{}: {}", s.code(), s.message())))?
            .into_inner();
        let result: Result<SnapshotResponse<TypeConfig>, RaftError<TypeConfig>> =
            decode(&reply.payload).map_err(|e| unreachable(e.to_string()))?;
        result.map_err(|e| unreachable(format!("{}: {e}", self.node)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Command, Entry, LogId, Proposal};
    use crate::storage::Batch;

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry {
            log_id: LogId::new(
                openraft::impls::leader_id_adv::LeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            ),
            payload: openraft::EntryPayload::Normal(Proposal(vec![Command::write(
                Batch::new().put("k", vec![0u8; bytes]),
            )])),
        }
    }

    #[test]
    fn appends_are_cut_at_the_budget_but_never_to_nothing() {
        let small: Vec<Entry> = (0..10).map(|i| entry(i, 100)).collect();
        assert_eq!(entries_within(&small, 1 << 20), 10);
        let big: Vec<Entry> = (0..10).map(|i| entry(i, 400 << 10)).collect();
        assert_eq!(entries_within(&big, 1 << 20), 2);
        let huge = vec![entry(0, 3 << 20), entry(1, 10)];
        assert_eq!(entries_within(&huge, 1 << 20), 1);
        assert_eq!(entries_within(&[], 1 << 20), 0);
    }
}
