//! One node's Raft instance: log store, state machine, network and openraft,
//! assembled; and the operations the rest of the node needs from it
//! (propose, read-index, wait-for-index, freshness, membership).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, SnapshotPolicy};
use sigil_proto::cluster::v1 as pb;
use tokio::sync::watch;
use tonic::Status;

use super::log_store::LogStore;
use super::network::{Connector, Peers};
use super::service::write_error;
use super::state_machine::{Applied, StateMachine};
use super::stats::{RaftFigures, RaftStats};
use super::{
    CellNode, Command, CommandResult, NodeId, Proposal, Raft, RaftMetrics, StoredMembership,
    TypeConfig, decode, encode, node_id_of,
};

/// Tuning of a node's Raft, from the `[raft]` config section.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// This node's name in the cell (`node_id` in the config).
    pub node_name: String,
    /// `host:port` other nodes reach this node's cluster port at.
    pub cluster_addr: String,
    /// Base URL of this node's client API.
    pub api_addr: String,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot (and purge the log before it) after this many
    /// entries.
    pub snapshot_every: u64,
    /// How stale a `bounded` read served here may be.
    pub max_staleness: Duration,
    /// How long a write waits for a leader before failing with 503.
    pub write_timeout: Duration,
    /// Advertised peer address → address dialled.
    pub dial_overrides: BTreeMap<String, String>,
    /// Bytes of state entries cached in memory for reads (0: no cache).
    pub read_cache_bytes: u64,
}

impl RaftSettings {
    pub fn new(node_name: &str, cluster_addr: &str, api_addr: &str) -> Self {
        Self {
            node_name: node_name.to_owned(),
            cluster_addr: cluster_addr.to_owned(),
            api_addr: api_addr.to_owned(),
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(1000), Duration::from_millis(2000)),
            snapshot_every: 20_000,
            max_staleness: Duration::from_millis(250),
            write_timeout: Duration::from_secs(5),
            dial_overrides: BTreeMap::new(),
            read_cache_bytes: super::read_cache::DEFAULT_CACHE_BYTES,
        }
    }
}

/// Errors of cell-level operations, mapped to 503 / `UNAVAILABLE` at the edge
/// unless said otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CellError {
    #[error("no leader is reachable: {0}")]
    NoLeader(String),
    #[error("timed out waiting for this node to apply index {index} (applied {applied})")]
    Lagging { index: u64, applied: u64 },
    #[error("raft error: {0}")]
    Raft(String),
}

/// When the leader was last known to hold its quorum, and its commit index
/// then: a follower whose applied index covers that commit was at most
/// `now - at` behind the cell.
#[derive(Debug, Default)]
pub struct Freshness {
    contacts: Mutex<VecDeque<(Instant, u64)>>,
}

impl Freshness {
    const KEEP: usize = 64;

    /// Records a message from the leader that had quorum contact
    /// `quorum_age` ago and commit index `commit`.
    pub fn record(&self, quorum_age: Duration, commit: u64) {
        let at = Instant::now()
            .checked_sub(quorum_age)
            .unwrap_or_else(Instant::now);
        let mut c = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
        c.push_back((at, commit));
        while c.len() > Self::KEEP {
            c.pop_front();
        }
    }

    /// How far behind the cell this node can be, having applied `applied`.
    pub fn staleness(&self, applied: u64) -> Option<Duration> {
        let c = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
        c.iter()
            .rev()
            .find(|(_, commit)| *commit <= applied)
            .map(|(at, _)| at.elapsed())
    }
}

struct Inner {
    id: NodeId,
    node: CellNode,
    raft: Raft,
    sm: StateMachine,
    peers: Peers,
    settings: RaftSettings,
    freshness: Freshness,
    /// One membership change at a time: Raft refuses a change while another
    /// is in flight, so concurrent joins queue here instead of failing.
    membership_change: tokio::sync::Mutex<()>,
    /// The last term in which this node, as leader, had applied everything
    /// committed before its term began (see [`RaftCell::ready_to_lead`]).
    ready_term: std::sync::atomic::AtomicU64,
    /// Commands waiting for the proposal batcher (see [`batch_loop`]).
    proposals: tokio::sync::mpsc::UnboundedSender<Pending>,
    /// Proposal and log-sync figures for `sys/metrics`.
    stats: Arc<RaftStats>,
    /// openraft's metrics, republished on a tokio watch channel (see
    /// [`forward_metrics`]).
    metrics: watch::Receiver<RaftMetrics>,
}

/// A command waiting to be proposed, and who waits for its outcome.
struct Pending {
    command: Command,
    reply: tokio::sync::oneshot::Sender<Result<(CommandResult, u64), Status>>,
}

/// Proposals in flight at once (appended, replicating or applying). Few
/// and large beats many and small: each entry costs encoding, a log write,
/// replication and an apply on every node, whatever it carries. Measured
/// with 64 clients on a three-node cell (`docs/benchmarks.md`): 1 or 2 in
/// flight gave 2,130-2,460 writes/s, 8 gave 1,720-1,790 and 32 gave 1,610.
const PROPOSALS_IN_FLIGHT: usize = 2;
/// Most commands in one log entry.
const MAX_BATCH_COMMANDS: usize = 1024;
/// Most bytes (roughly) in one log entry: with `max_payload_entries` of 64,
/// an AppendEntries stays well inside the cluster port's message limit.
const MAX_BATCH_BYTES: usize = 256 << 10;

/// The leader's proposal batcher. Every command that queued while
/// [`PROPOSALS_IN_FLIGHT`] proposals were in flight goes into the next log
/// entry: one entry to encode, append, replicate and apply, however many
/// writes. openraft 0.10 takes the next proposal while earlier appends are
/// still syncing, and the log store syncs the appends queued meanwhile
/// together, so proposals in flight share fsyncs too.
async fn batch_loop(
    raft: Raft,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Pending>,
    stats: Arc<RaftStats>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(PROPOSALS_IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Whatever queued while waiting for a slot joins this proposal; a
        // restore's commit always travels alone.
        let mut batch = vec![first];
        let mut bytes = batch[0].command.weight();
        if !batch[0].command.is_restore_commit() {
            while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
                match queue.try_recv() {
                    Ok(p) if p.command.is_restore_commit() => {
                        carried = Some(p);
                        break;
                    }
                    Ok(p) => {
                        bytes += p.command.weight();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
        }
        let raft = raft.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (commands, replies): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|p| (p.command, p.reply)).unzip();
            let (count, started) = (commands.len(), std::time::Instant::now());
            let outcome = raft.client_write(Proposal(commands)).await;
            stats.proposal(count, started.elapsed(), outcome.is_ok());
            match outcome {
                Ok(resp) => {
                    let index = resp.log_id.index;
                    let mut results = resp.data.into_iter();
                    for reply in replies {
                        let result = results.next().ok_or_else(|| {
                            Status::internal("the state machine returned too few results")
                        });
                        let _ = reply.send(result.map(|r| (r, index)));
                    }
                }
                Err(e) => {
                    let status = write_error(e);
                    for reply in replies {
                        let _ = reply.send(Err(Status::with_metadata(
                            status.code(),
                            status.message(),
                            status.metadata().clone(),
                        )));
                    }
                }
            }
        });
    }
}

/// Republishes openraft's metrics on a tokio watch channel, which the rest
/// of the node waits on with `wait_for`. Ends when Raft stops.
async fn forward_metrics(
    mut from: openraft::type_config::alias::WatchReceiverOf<TypeConfig, RaftMetrics>,
    to: watch::Sender<RaftMetrics>,
) {
    use openraft::async_runtime::watch::WatchReceiver;
    loop {
        let current = from.borrow_watched().clone();
        to.send_replace(current);
        if from.changed().await.is_err() {
            return;
        }
    }
}

/// A node's Raft. Cheap to clone.
#[derive(Clone)]
pub struct RaftCell {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RaftCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftCell")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl RaftCell {
    /// Opens the log and state under `data_dir` and starts Raft. The node
    /// serves Raft RPCs once [`super::service::ClusterService`] is listening;
    /// a new cell is formed with [`RaftCell::bootstrap`].
    pub async fn open(
        data_dir: &Path,
        settings: RaftSettings,
        connector: Arc<dyn Connector>,
    ) -> Result<Self, CellError> {
        let stats = Arc::new(RaftStats::new());
        let log = LogStore::open(&data_dir.join("raft"), stats.clone())
            .map_err(|e| CellError::Raft(e.to_string()))?;
        let sm = StateMachine::open(&data_dir.join("state"), settings.read_cache_bytes)
            .map_err(|e| CellError::Raft(e.to_string()))?;
        let config = openraft::Config {
            cluster_name: "sigil".into(),
            heartbeat_interval: millis(settings.heartbeat),
            election_timeout_min: millis(settings.election_timeout.0),
            election_timeout_max: millis(settings.election_timeout.1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
            // Followers just behind catch up from the log, not a snapshot;
            // never keep more than a snapshot interval's worth.
            max_in_snapshot_log_to_keep: settings.snapshot_every.min(1000),
            install_snapshot_timeout: 60_000,
            max_payload_entries: 64,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| CellError::Raft(e.to_string()))?,
        );
        let id = node_id_of(&settings.node_name);
        let node = CellNode {
            name: settings.node_name.clone(),
            cluster_addr: settings.cluster_addr.clone(),
            api_addr: settings.api_addr.clone(),
        };
        let peers = Peers::new(connector).with_overrides(settings.dial_overrides.clone());
        let raft = Raft::new(id, config, peers.clone(), log, sm.clone())
            .await
            .map_err(|e| CellError::Raft(e.to_string()))?;
        let (metrics_tx, metrics) = watch::channel(RaftMetrics::new_initial(id));
        tokio::spawn(forward_metrics(raft.metrics(), metrics_tx));
        peers.set_metrics(metrics.clone());
        let (proposals, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch_loop(raft.clone(), queue, stats.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                id,
                node,
                raft,
                sm,
                peers,
                settings,
                freshness: Freshness::default(),
                membership_change: tokio::sync::Mutex::new(()),
                ready_term: std::sync::atomic::AtomicU64::new(0),
                proposals,
                stats,
                metrics,
            }),
        })
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn state_machine(&self) -> &StateMachine {
        &self.inner.sm
    }

    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn node(&self) -> &CellNode {
        &self.inner.node
    }

    pub fn settings(&self) -> &RaftSettings {
        &self.inner.settings
    }

    pub fn freshness(&self) -> &Freshness {
        &self.inner.freshness
    }

    pub fn metrics(&self) -> watch::Receiver<RaftMetrics> {
        self.inner.metrics.clone()
    }

    /// The node's Raft figures for `sys/metrics`.
    pub fn figures(&self) -> RaftFigures {
        let cache = self.inner.sm.cache_stats();
        let m = self.inner.metrics.borrow();
        RaftFigures {
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            cache_entries: cache.entries,
            cache_bytes: cache.bytes,
            is_leader: m.current_leader == Some(self.inner.id),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.as_ref().map_or(0, |l| l.index),
            ..self.inner.stats.figures()
        }
    }

    /// Forms a new cell with `members` (this node among them), if this node
    /// has never been part of one. Every founding node may call it with the
    /// same members; Raft keeps one.
    pub async fn bootstrap(&self, members: BTreeMap<NodeId, CellNode>) -> Result<bool, CellError> {
        if self
            .inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| CellError::Raft(e.to_string()))?
        {
            return Ok(false);
        }
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(true),
            // Another founder's initialisation reached this node first.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(CellError::Raft(e.to_string())),
        }
    }

    /// Whether this node belongs to a cell yet (it founded or joined one).
    pub fn is_member(&self) -> bool {
        self.inner
            .metrics
            .borrow()
            .membership_config
            .membership()
            .get_node(&self.inner.id)
            .is_some()
    }

    /// Founds a one-node cell of this node alone, unless it is a member of
    /// a cell already. Returns whether it founded one.
    pub async fn found(&self) -> Result<bool, CellError> {
        let mut members = BTreeMap::new();
        members.insert(self.inner.id, self.inner.node.clone());
        self.bootstrap(members).await
    }

    pub fn is_leader(&self) -> bool {
        self.inner.metrics.borrow().current_leader == Some(self.inner.id)
    }

    /// The current leader and its address, if one is known.
    pub fn leader(&self) -> Option<(NodeId, CellNode)> {
        let m = self.inner.metrics.borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    pub fn applied(&self) -> Applied {
        self.inner.sm.applied().borrow().clone()
    }

    pub fn membership(&self) -> StoredMembership {
        self.applied().membership
    }

    /// How far behind the cell this node may be; `None` when unknown (no
    /// recent contact with a leader holding its quorum).
    pub fn staleness(&self) -> Option<Duration> {
        let m = self.inner.metrics.borrow();
        if m.current_leader == Some(self.inner.id) {
            return quorum_age(&m);
        }
        drop(m);
        self.inner.freshness.staleness(self.applied().index())
    }

    /// Waits until this node has applied `index`, for at most `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), CellError> {
        let mut rx = self.inner.sm.applied();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|a| a.index() >= index)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(CellError::Lagging {
                index,
                applied: self.applied().index(),
            }),
        }
    }

    /// On the leader: confirms leadership with a quorum and returns the index
    /// a linearizable read must see (Raft §6.4, read-index).
    pub async fn read_index_as_leader(&self) -> Result<u64, Status> {
        let (read, _) = self
            .inner
            .raft
            .get_read_log_id(openraft::ReadPolicy::ReadIndex)
            .await
            .map_err(|e| match e {
                RaftError::APIError(e) => Status::failed_precondition(e.to_string()),
                RaftError::Fatal(f) => Status::unavailable(f.to_string()),
            })?;
        Ok(read.index())
    }

    /// On a leader: waits, once per term, until this node has applied every
    /// entry committed before its term began. A new leader holds those
    /// entries in its log but may not have applied them yet; a request that
    /// reads state to decide what to write (the next KV version, a token's
    /// remaining uses) must not see the state from before them, or it would
    /// overwrite an acknowledged write. The read index of a new leader is
    /// the index of its own first entry, which commits only after all
    /// earlier ones (Raft §5.4.2, §8).
    pub async fn ready_to_lead(&self) -> Result<(), CellError> {
        use std::sync::atomic::Ordering;
        let term = self.inner.metrics.borrow().current_term;
        if self.inner.ready_term.load(Ordering::Acquire) == term {
            return Ok(());
        }
        let timeout = self.inner.settings.write_timeout;
        let index = tokio::time::timeout(timeout, self.read_index_as_leader())
            .await
            .map_err(|_| CellError::NoLeader("leadership not confirmed by a quorum".into()))?
            .map_err(|s| CellError::NoLeader(s.message().to_owned()))?;
        self.wait_applied(index, timeout).await?;
        self.inner.ready_term.store(term, Ordering::Release);
        Ok(())
    }

    /// The read index, from the leader wherever this node is; then waits
    /// until this node has applied it. After this, local reads are
    /// linearizable.
    pub async fn linearize(&self) -> Result<u64, CellError> {
        let deadline = Instant::now() + self.inner.settings.write_timeout;
        loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10));
            let attempt = if self.is_leader() {
                // A leader without its quorum never confirms: bounded wait.
                tokio::time::timeout(left, self.read_index_as_leader())
                    .await
                    .unwrap_or_else(|_| {
                        Err(Status::unavailable("leadership not confirmed by a quorum"))
                    })
            } else if let Some((_, leader)) = self.leader() {
                match self.inner.peers.client(&leader.cluster_addr) {
                    Ok(mut c) => {
                        let mut req = tonic::Request::new(pb::ReadIndexRequest {});
                        req.set_timeout(left);
                        c.read_index(req).await.map(|r| r.into_inner().index)
                    }
                    Err(e) => Err(Status::unavailable(e)),
                }
            } else {
                Err(Status::unavailable("no leader"))
            };
            match attempt {
                Ok(index) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.wait_applied(index, left.max(Duration::from_millis(100)))
                        .await?;
                    return Ok(index);
                }
                Err(s) if Instant::now() < deadline => {
                    tracing::debug!(error = %s.message(), "read-index attempt failed; retrying");
                    self.wait_for_leader_change(deadline).await;
                }
                Err(s) => return Err(CellError::NoLeader(s.message().to_owned())),
            }
        }
    }

    /// Proposes `batch` and waits until it is committed and applied on this
    /// node. From a follower the proposal goes to the leader. Retries after
    /// a leader change carry the same request id, so a proposal that was in
    /// fact committed is applied once (the retry comes back
    /// [`CommandResult::Duplicate`]). Returns the result and the log index.
    pub async fn propose(
        &self,
        batch: crate::storage::Batch,
    ) -> Result<(CommandResult, u64), CellError> {
        self.submit(Command::write(batch)).await
    }

    /// Replaces the whole replicated state with the packed snapshot at
    /// `path` (already checked by [`super::snapshot::verify`]): its pieces
    /// go through the log, then a commit step that every node applies at
    /// the same index. Returns the commit's result and log index.
    pub async fn restore(&self, path: &Path) -> Result<(CommandResult, u64), CellError> {
        use tokio::io::AsyncReadExt;
        let io = |e: std::io::Error| CellError::Raft(e.to_string());
        let id = super::random_request_id();
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let (mut seq, mut size) = (0u32, 0u64);
        loop {
            let mut bytes = Vec::with_capacity(super::RESTORE_CHUNK);
            (&mut file)
                .take(super::RESTORE_CHUNK as u64)
                .read_to_end(&mut bytes)
                .await
                .map_err(io)?;
            if bytes.is_empty() {
                break;
            }
            size += bytes.len() as u64;
            self.submit(Command::restore_step(super::RestoreStep::Chunk {
                id,
                seq,
                bytes,
            }))
            .await?;
            seq = seq
                .checked_add(1)
                .ok_or_else(|| CellError::Raft("snapshot too large to restore".into()))?;
        }
        self.submit(Command::restore_step(super::RestoreStep::Commit {
            id,
            chunks: seq,
            size,
        }))
        .await
    }

    /// Proposes `cmd` (see [`RaftCell::propose`]).
    async fn submit(&self, cmd: Command) -> Result<(CommandResult, u64), CellError> {
        let deadline = Instant::now() + self.inner.settings.write_timeout;
        let encoded = encode(&cmd).map_err(|e| CellError::Raft(e.to_string()))?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt: Result<(CommandResult, u64), Status> = if self.is_leader() {
                // A leader cut off from its quorum never commits: give up at
                // the deadline (the entry is dropped once a new leader's log
                // replaces it, or applied once if this node keeps leading; a
                // retry carries the same request id).
                match tokio::time::timeout(left, self.write_here(cmd.clone())).await {
                    Ok(r) => r,
                    Err(_) => Err(Status::deadline_exceeded(
                        "the write was not committed in time; it may or may not be applied",
                    )),
                }
            } else if let Some((_, leader)) = self.leader() {
                self.propose_at(&leader.cluster_addr, encoded.clone(), left)
                    .await
            } else {
                Err(Status::unavailable("no leader elected"))
            };
            match attempt {
                Ok((result, index)) => {
                    // Local reads after this write must see it.
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.wait_applied(index, left.max(Duration::from_secs(1)))
                        .await?;
                    let result = match result {
                        CommandResult::Duplicate => CommandResult::Applied,
                        other => other,
                    };
                    return Ok((result, index));
                }
                Err(s) if Instant::now() < deadline => {
                    tracing::debug!(code = ?s.code(), error = %s.message(), "proposal not taken; retrying");
                    self.wait_for_leader_change(deadline).await;
                }
                Err(s) => return Err(CellError::NoLeader(s.message().to_owned())),
            }
        }
    }

    /// On the leader: proposes `command` through the batcher and waits for
    /// its own result and the index of the entry that carried it.
    pub(crate) async fn write_here(
        &self,
        command: Command,
    ) -> Result<(CommandResult, u64), Status> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.inner
            .proposals
            .send(Pending { command, reply })
            .map_err(|_| Status::unavailable("raft stopped"))?;
        outcome
            .await
            .map_err(|_| Status::unavailable("raft stopped"))?
    }

    async fn propose_at(
        &self,
        addr: &str,
        command: Vec<u8>,
        timeout: Duration,
    ) -> Result<(CommandResult, u64), Status> {
        let mut client = self.inner.peers.client(addr).map_err(Status::unavailable)?;
        let mut req = tonic::Request::new(pb::ProposeRequest {
            command: command.into(),
        });
        req.set_timeout(timeout.max(Duration::from_millis(10)));
        let reply = client.propose(req).await?.into_inner();
        let result: CommandResult =
            decode(&reply.result).map_err(|e| Status::internal(e.to_string()))?;
        Ok((result, reply.index))
    }

    /// Sleeps until the leader changes, a short while passes, or `deadline`.
    async fn wait_for_leader_change(&self, deadline: Instant) {
        let mut rx = self.inner.metrics.clone();
        let before = rx.borrow().current_leader;
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(self.inner.settings.heartbeat * 4);
        let _ = tokio::time::timeout(
            wait,
            rx.wait_for(|m| m.current_leader != before && m.current_leader.is_some()),
        )
        .await;
    }

    /// On the leader: adds `node` as a learner, waits for it to catch up,
    /// then makes it a voter. Refuses a name already used by another address.
    pub async fn add_member(&self, id: NodeId, node: CellNode) -> Result<StoredMembership, Status> {
        if !self.is_leader() {
            let mut s = Status::failed_precondition("not the leader");
            if let Some((_, leader)) = self.leader()
                && let Ok(v) = leader.cluster_addr.parse()
            {
                s.metadata_mut().insert("x-sigil-leader", v);
            }
            return Err(s);
        }
        let _changing = self.inner.membership_change.lock().await;
        let current = self.membership();
        if let Some(existing) = current.membership().get_node(&id) {
            if existing.cluster_addr != node.cluster_addr {
                return Err(Status::already_exists(format!(
                    "node id {:?} is already taken by the node at {}",
                    node.name, existing.cluster_addr
                )));
            }
            if current.membership().voter_ids().any(|v| v == id) {
                return Ok(current);
            }
        }
        self.inner
            .raft
            .add_learner(id, node, true)
            .await
            .map_err(write_error)?;
        let r = self
            .inner
            .raft
            .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
            .await
            .map_err(|e| match e {
                RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                    Status::failed_precondition(c.to_string())
                }
                other => write_error(other),
            })?;
        tracing::info!(node = id, index = r.log_id.index, "node joined the cell");
        Ok(self.membership())
    }

    /// Joins an existing cell through any of `addrs` (cluster addresses of
    /// members), retrying until a leader accepts this node. A node that is
    /// already a member (a restart) returns at once.
    pub async fn join(&self, addrs: &[String], mut stop: watch::Receiver<bool>) {
        let mut attempt: u32 = 0;
        loop {
            if self
                .membership()
                .membership()
                .voter_ids()
                .any(|v| v == self.inner.id)
            {
                return;
            }
            for addr in addrs {
                match self.try_join(addr).await {
                    Ok(()) => {
                        tracing::info!(through = %addr, "joined the cell");
                        return;
                    }
                    Err(e) => {
                        if attempt.is_multiple_of(10) {
                            tracing::warn!(through = %addr, error = %e, "cannot join the cell yet; retrying");
                        }
                    }
                }
            }
            attempt += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One attempt to join through `addr` (following "ask the leader"
    /// hints); the error says why the cell refused or could not be reached.
    pub async fn try_join(&self, addr: &str) -> Result<(), String> {
        let mut target = addr.to_owned();
        // Follow at most a couple of "ask the leader" hints.
        for _ in 0..3 {
            let mut client = self.inner.peers.client(&target)?;
            let req = pb::JoinRequest {
                node_name: self.inner.node.name.clone(),
                cluster_addr: self.inner.node.cluster_addr.clone(),
                api_addr: self.inner.node.api_addr.clone(),
            };
            match client.join(req).await {
                Ok(_) => return Ok(()),
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    match s
                        .metadata()
                        .get("x-sigil-leader")
                        .and_then(|v| v.to_str().ok())
                    {
                        Some(leader) if leader != target => target = leader.to_owned(),
                        _ => return Err(s.message().to_owned()),
                    }
                }
                Err(s) => {
                    self.inner.peers.forget(&target);
                    let mut why = describe(&s);
                    if s.code() != tonic::Code::AlreadyExists
                        && s.code() != tonic::Code::PermissionDenied
                        && let Some(refused) = self.inner.peers.probe(&target).await
                    {
                        why = format!("{refused} ({why})");
                    }
                    return Err(why);
                }
            }
        }
        Err("no leader found".into())
    }

    /// On the leader: removes a member (voter or learner).
    pub async fn remove_member(&self, id: NodeId) -> Result<StoredMembership, Status> {
        if !self.is_leader() {
            return Err(Status::failed_precondition("not the leader"));
        }
        let _changing = self.inner.membership_change.lock().await;
        let m = self.membership();
        if m.membership().get_node(&id).is_none() {
            return Err(Status::not_found("no such node in the cell"));
        }
        if m.membership().voter_ids().any(|v| v == id) {
            self.inner
                .raft
                .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                .await
                .map_err(write_error)?;
        }
        self.inner
            .raft
            .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
            .await
            .map_err(write_error)?;
        Ok(self.membership())
    }

    /// Gives up leadership: this node stops sending heartbeats and standing
    /// for election until another node has taken over (or the election
    /// timeout passed twice), then takes part again as a follower.
    pub async fn step_down(&self) -> Result<(), CellError> {
        let raft = &self.inner.raft;
        raft.runtime_config().elect(false);
        raft.runtime_config().heartbeat(false);
        let wait = self.inner.settings.election_timeout.1 * 4;
        let me = self.inner.id;
        let mut rx = self.inner.metrics.clone();
        let moved = tokio::time::timeout(
            wait,
            rx.wait_for(|m| m.current_leader.is_some() && m.current_leader != Some(me)),
        )
        .await;
        raft.runtime_config().heartbeat(true);
        raft.runtime_config().elect(true);
        match moved {
            Ok(Ok(_)) => {
                tracing::info!("stepped down; another node leads");
                Ok(())
            }
            _ => Err(CellError::NoLeader(
                "no other node took over; this node may lead again".into(),
            )),
        }
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// A status with its chain of causes: a refused TLS handshake shows up as
/// an alert deep in the chain (`received fatal alert: UnknownCA`), and that
/// is the part an operator needs.
fn describe(s: &Status) -> String {
    let mut text = format!("{}: {}", s.code(), s.message());
    let mut cause = std::error::Error::source(s);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// How long ago a leader last heard from its quorum, from its metrics. A
/// lone voter is its own quorum: openraft records no acknowledgement for
/// it, and it is never behind.
pub(crate) fn quorum_age(m: &RaftMetrics) -> Option<Duration> {
    use openraft::Instant as _;
    let mut voters = m.membership_config.membership().voter_ids();
    if voters.next() == Some(m.id) && voters.next().is_none() {
        return Some(Duration::ZERO);
    }
    m.last_quorum_acked.as_ref().map(|at| at.elapsed())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
