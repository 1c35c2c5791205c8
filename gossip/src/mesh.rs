//! The node runtime of the revocation mesh: chitchat membership and the
//! [`broadcast`] core, both carried over one gRPC stream per pair of nodes
//! ([`links`]) on the mutual-TLS cluster port.
//!
//! - **Membership.** chitchat (scuttlebutt with a phi-accrual failure
//!   detector) runs over [`membership::StreamTransport`]. Each node's
//!   chitchat state holds its cell, a summary of its revocation digest,
//!   and when it applied each record it holds (`rev:<id>` → ms), which is
//!   how any node reports convergence.
//! - **Broadcast.** Every tick (20 ms by default) the core's rumour batches
//!   go to the live peers it picks; every anti-entropy interval, if some
//!   live peer's digest summary differs from this node's, one of them is
//!   sent this node's full digest and the two repair by range.
//! - **Enforcement.** A record new to this node, from a peer, goes to the
//!   [`Observer`] at once (the cell merges it into the request filter and
//!   proposes it to its leader). Records the node learns otherwise (its
//!   cell committed it, or control-plane sync brought it) come in through
//!   [`Mesh::learn`].

pub mod links;
mod membership;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat};
use sigil_proto::mesh::v1 as pb;
use sigil_proto::mesh::v1::frame::Body;
use sigil_proto::mesh::v1::mesh_server::MeshServer;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::broadcast::{self, Message, Peer, SplitMix64};
use crate::filter::Applied;
use crate::record::{RecordError, Revocation};
pub use links::{Authenticate, Dialer, Identity, LinkStats, MAX_FRAME_BYTES};
use links::{Inbound, Links};

/// The chitchat key with the summary of a node's revocation digest.
const DIGEST_KEY: &str = "rev.digest";
/// The chitchat key prefix of when a node applied a record.
const APPLIED_PREFIX: &str = "rev:";
/// The chitchat key with the node's cell.
const CELL_KEY: &str = "cell";

/// How the runtime paces itself.
#[derive(Clone, Debug)]
pub struct MeshSettings {
    /// Names the mesh; nodes of another mesh are ignored.
    pub cluster_id: String,
    /// How often rumour batches go out.
    pub tick: Duration,
    /// How often a node looks for a peer whose digest differs.
    pub anti_entropy: Duration,
    /// chitchat's gossip interval (membership, liveness, node state).
    pub membership_interval: Duration,
    /// Fanout and rounds of the broadcast core.
    pub broadcast: broadcast::Settings,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            cluster_id: "sigil".into(),
            tick: Duration::from_millis(20),
            anti_entropy: Duration::from_secs(1),
            membership_interval: Duration::from_millis(500),
            broadcast: broadcast::Settings::default(),
        }
    }
}

/// What the node does with records it hears of from peers.
pub trait Observer: Send + Sync + 'static {
    /// Records new to this node (or newly lifted), from a peer: enforce
    /// them now. Called before they can be passed on (under the lock of
    /// the node's broadcast state, so it must not block).
    fn enforce(&self, records: &[Revocation]);
}

/// Apply latency buckets (ms from a record's issue to its application on
/// this node), Prometheus style: each counts observations at or below it.
pub const CONVERGENCE_BUCKETS_MS: [u64; 10] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000];

/// Counters of what this node's share of the broadcast did.
#[derive(Debug, Default)]
pub struct BroadcastStats {
    /// Rumour records sent (a batch of 3 to 2 peers counts 6).
    pub rumours_sent: AtomicU64,
    /// Rumour records received, new or not.
    pub rumours_received: AtomicU64,
    /// Rumour records received that this node already held.
    pub rumours_duplicate: AtomicU64,
    /// Anti-entropy digests sent.
    pub digests_sent: AtomicU64,
    /// Records this node learned through anti-entropy repair.
    pub records_repaired: AtomicU64,
    /// Messages from peers refused (malformed, invalid records).
    pub messages_refused: AtomicU64,
    /// Apply latency histogram (cumulative, [`CONVERGENCE_BUCKETS_MS`]).
    convergence_buckets: [AtomicU64; CONVERGENCE_BUCKETS_MS.len()],
    convergence_count: AtomicU64,
    convergence_sum_ms: AtomicU64,
}

impl BroadcastStats {
    fn observe_convergence(&self, ms: u64) {
        for (b, limit) in self.convergence_buckets.iter().zip(CONVERGENCE_BUCKETS_MS) {
            if ms <= limit {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.convergence_count.fetch_add(1, Ordering::Relaxed);
        self.convergence_sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// The apply latency histogram: cumulative counts per bucket, the
    /// number of observations and their sum in ms.
    pub fn convergence(&self) -> (Vec<(u64, u64)>, u64, u64) {
        let buckets = CONVERGENCE_BUCKETS_MS
            .iter()
            .zip(&self.convergence_buckets)
            .map(|(l, c)| (*l, c.load(Ordering::Relaxed)))
            .collect();
        (
            buckets,
            self.convergence_count.load(Ordering::Relaxed),
            self.convergence_sum_ms.load(Ordering::Relaxed),
        )
    }
}

/// A member of the mesh as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub cell: String,
    pub node: String,
    pub addr: SocketAddr,
    pub live: bool,
}

/// When one member applied a record, as its chitchat state reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Application {
    pub member: Member,
    /// Milliseconds since the Unix epoch, by that node's clock.
    pub applied_ms: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A digest summary as membership state carries it (hex).
fn summary_text(summary: u64) -> String {
    format!("{summary:016x}")
}

fn split_name(node_id: &str) -> (&str, &str) {
    node_id.split_once('/').unwrap_or((node_id, ""))
}

/// A live peer as the core sees it, with where to send to it and its
/// digest summary.
struct LivePeer {
    peer: Peer,
    addr: SocketAddr,
    summary: Option<u64>,
}

/// A node's share of the mesh.
pub struct Mesh {
    me: Identity,
    settings: MeshSettings,
    links: Arc<Links>,
    chitchat: ChitchatHandle,
    core: Mutex<broadcast::Node>,
    /// When this node applied each record it holds (ms).
    applied: Mutex<HashMap<String, u64>>,
    observer: Arc<dyn Observer>,
    stats: BroadcastStats,
    /// Live members, this node included, as last counted.
    live: AtomicU64,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("me", &self.me)
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// Starts membership and the broadcast loops. `seeds`: addresses of
    /// nodes to join through, with their cells.
    pub async fn start(
        me: Identity,
        settings: MeshSettings,
        seeds: Vec<(SocketAddr, String)>,
        dialer: Arc<dyn Dialer>,
        observer: Arc<dyn Observer>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Self>> {
        let (links, membership_rx, revocations_rx) =
            Links::new(me.clone(), dialer, shutdown.clone());
        for (addr, cell) in &seeds {
            links.learn_cell(*addr, cell);
        }
        let core = broadcast::Node::new(me.name(), me.cell.clone(), settings.broadcast);
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(me.name(), now_ms(), me.addr),
            cluster_id: settings.cluster_id.clone(),
            gossip_interval: settings.membership_interval,
            listen_addr: me.addr,
            seed_nodes: seeds
                .iter()
                .filter(|(a, _)| *a != me.addr)
                .map(|(a, _)| a.to_string())
                .collect(),
            failure_detector_config: FailureDetectorConfig {
                initial_interval: settings.membership_interval,
                dead_node_grace_period: Duration::from_secs(60 * 60),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(60 * 60),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let transport = membership::StreamTransport::new(Arc::clone(&links), membership_rx);
        let initial = vec![
            (CELL_KEY.to_owned(), me.cell.clone()),
            (DIGEST_KEY.to_owned(), summary_text(core.digest().summary())),
        ];
        let chitchat = spawn_chitchat(config, initial, &transport).await?;
        let mesh = Arc::new(Self {
            me,
            settings,
            links,
            chitchat,
            core: Mutex::new(core),
            applied: Mutex::new(HashMap::new()),
            observer,
            stats: BroadcastStats::default(),
            live: AtomicU64::new(1),
        });
        tokio::spawn(Arc::clone(&mesh).receive_loop(revocations_rx, shutdown.clone()));
        tokio::spawn(Arc::clone(&mesh).tick_loop(shutdown));
        Ok(mesh)
    }

    /// The Mesh service for the cluster port.
    pub fn server(self: &Arc<Self>, authenticate: Authenticate) -> MeshServer<MeshService> {
        MeshServer::new(MeshService {
            links: Arc::clone(&self.links),
            authenticate,
        })
        .max_decoding_message_size(MAX_FRAME_BYTES)
        .max_encoding_message_size(MAX_FRAME_BYTES)
    }

    pub fn identity(&self) -> &Identity {
        &self.me
    }

    /// Tells membership about a node (from the cell registry, say): it is
    /// dialled with `cell`'s trust and sent a membership round now.
    pub fn introduce(&self, addr: SocketAddr, cell: &str) {
        if addr == self.me.addr {
            return;
        }
        self.links.learn_cell(addr, cell);
        let _ = self.chitchat.gossip(addr);
    }

    /// A record this node learned other than from a peer: its cell just
    /// committed it (`origin`: it is seeded to every cell at once), or
    /// control-plane sync brought it. It spreads from here.
    pub fn learn(&self, r: Revocation, origin: bool) -> Result<(), RecordError> {
        let applied = lock(&self.core).learn(r.clone(), origin)?;
        if applied != Applied::Known {
            self.applied_here(std::slice::from_ref(&r));
        }
        Ok(())
    }

    /// Whether this node's share of the mesh holds record `id`.
    pub fn holds(&self, id: &str) -> bool {
        lock(&self.core).filter().get(id).is_some()
    }

    pub fn stats(&self) -> &BroadcastStats {
        &self.stats
    }

    pub fn link_stats(&self) -> &LinkStats {
        &self.links.stats
    }

    /// Live members (this node included) when last counted (at least
    /// once per anti-entropy interval).
    pub fn live_members(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// Peers this node has a stream open with.
    pub fn open_streams(&self) -> usize {
        self.links.open_streams()
    }

    /// Every member chitchat knows, this node included.
    pub async fn members(&self) -> Vec<Member> {
        let cc = self.chitchat.chitchat();
        let cc = cc.lock().await;
        let live: std::collections::HashSet<&ChitchatId> = cc.live_nodes().collect();
        cc.node_states()
            .keys()
            .map(|id| member(id, live.contains(id)))
            .collect()
    }

    /// When each member applied record `id`, as their states report it.
    pub async fn applications(&self, id: &str) -> Vec<Application> {
        let key = format!("{APPLIED_PREFIX}{id}");
        let cc = self.chitchat.chitchat();
        let cc = cc.lock().await;
        let live: std::collections::HashSet<&ChitchatId> = cc.live_nodes().collect();
        cc.node_states()
            .iter()
            .map(|(cid, state)| Application {
                member: member(cid, live.contains(cid)),
                applied_ms: state.get(&key).and_then(|v| v.parse().ok()),
            })
            .collect()
    }

    /// Notes records as applied here: when (for convergence reports and
    /// the latency histogram) and in this node's chitchat state.
    fn applied_here(&self, records: &[Revocation]) {
        let now = now_ms();
        let mut fresh = Vec::new();
        {
            let mut applied = lock(&self.applied);
            for r in records {
                if !applied.contains_key(&r.id) {
                    applied.insert(r.id.clone(), now);
                    self.stats
                        .observe_convergence(now.saturating_sub(r.issued_at_ms));
                    fresh.push(r.id.clone());
                }
            }
        }
        if fresh.is_empty() {
            return;
        }
        let cc = self.chitchat.chitchat();
        tokio::spawn(async move {
            let mut cc = cc.lock().await;
            let state = cc.self_node_state();
            for id in fresh {
                state.set(format!("{APPLIED_PREFIX}{id}"), now.to_string());
            }
        });
    }

    async fn receive_loop(
        self: Arc<Self>,
        mut inbox: mpsc::Receiver<Inbound>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let inbound = tokio::select! {
                m = inbox.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
                _ = shutdown.wait_for(|s| *s) => return,
            };
            self.handle(inbound);
        }
    }

    fn handle(&self, inbound: Inbound) {
        let msg = match Message::decode(&inbound.payload) {
            Ok(m) => m,
            Err(e) => {
                self.stats.messages_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %inbound.from, error = %e, "revocation message refused");
                return;
            }
        };
        let (rumours, repair) = match &msg {
            Message::Rumours(rs) => (rs.len() as u64, false),
            Message::Repair { .. } => (0, true),
            Message::Digest(_) => (0, false),
        };
        // Enforced under the core's lock: the tick loop cannot pass a
        // record on before this node enforces it.
        let received = {
            let mut core = lock(&self.core);
            let received = core.receive(msg);
            if !received.applied.is_empty() {
                self.observer.enforce(&received.applied);
            }
            received
        };
        let new = received.applied.len() as u64;
        if rumours > 0 {
            self.stats
                .rumours_received
                .fetch_add(rumours, Ordering::Relaxed);
            self.stats
                .rumours_duplicate
                .fetch_add(rumours.saturating_sub(new), Ordering::Relaxed);
        }
        if repair {
            self.stats
                .records_repaired
                .fetch_add(new, Ordering::Relaxed);
        }
        if !received.applied.is_empty() {
            self.applied_here(&received.applied);
        }
        if let Some(reply) = received.reply {
            self.links
                .send(inbound.from, Body::Revocations(reply.encode().into()));
        }
    }

    async fn tick_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut rng = SplitMix64::new(now_ms() ^ broadcast::fnv1a(self.me.name().bytes()));
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_entropy = tokio::time::Instant::now();
        let mut last_expiry = tokio::time::Instant::now();
        let mut published = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => {
                    let _ = self.chitchat.initiate_shutdown();
                    return;
                }
            }
            let entropy_due = last_entropy.elapsed() >= self.settings.anti_entropy;
            let spreading = lock(&self.core).spreading() > 0;
            if !spreading && !entropy_due {
                continue;
            }
            let peers = self.live_peers(&mut published).await;
            let core_peers: Vec<Peer> = peers.iter().map(|p| p.peer.clone()).collect();
            let addr_of: BTreeMap<&str, SocketAddr> =
                peers.iter().map(|p| (p.peer.id.as_str(), p.addr)).collect();
            if spreading {
                let batches = lock(&self.core).tick(&core_peers, &mut rng);
                for (peer, msg) in batches {
                    let Some(addr) = addr_of.get(peer.id.as_str()) else {
                        continue;
                    };
                    if let Message::Rumours(rs) = &msg {
                        self.stats
                            .rumours_sent
                            .fetch_add(rs.len() as u64, Ordering::Relaxed);
                    }
                    self.links
                        .send(*addr, Body::Revocations(msg.encode().into()));
                }
            }
            if entropy_due {
                last_entropy = tokio::time::Instant::now();
                let published: Vec<(Peer, Option<u64>)> =
                    peers.iter().map(|p| (p.peer.clone(), p.summary)).collect();
                let aimed = lock(&self.core).anti_entropy_towards(&published, &mut rng);
                if let Some((peer, msg)) = aimed
                    && let Some(addr) = addr_of.get(peer.id.as_str())
                {
                    self.stats.digests_sent.fetch_add(1, Ordering::Relaxed);
                    self.links
                        .send(*addr, Body::Revocations(msg.encode().into()));
                }
            }
            if last_expiry.elapsed() >= Duration::from_secs(1) {
                last_expiry = tokio::time::Instant::now();
                self.expire().await;
            }
        }
    }

    /// The live peers (with their cells made dialable); this node's digest
    /// summary is published if it changed.
    async fn live_peers(&self, published: &mut Option<u64>) -> Vec<LivePeer> {
        let mine = lock(&self.core).digest().summary();
        let cc = self.chitchat.chitchat();
        let mut cc = cc.lock().await;
        if *published != Some(mine) {
            cc.self_node_state().set(DIGEST_KEY, summary_text(mine));
            *published = Some(mine);
        }
        // Every node chitchat knows of may be dialled by it.
        for id in cc.node_states().keys() {
            let (cell, _) = split_name(&id.node_id);
            self.links.learn_cell(id.gossip_advertise_addr, cell);
        }
        let self_id = cc.self_chitchat_id().clone();
        let live: Vec<ChitchatId> = cc
            .live_nodes()
            .filter(|id| **id != self_id)
            .cloned()
            .collect();
        self.live.store(live.len() as u64 + 1, Ordering::Relaxed);
        live.into_iter()
            .map(|id| {
                let summary = cc
                    .node_state(&id)
                    .and_then(|s| s.get(DIGEST_KEY))
                    .and_then(|s| u64::from_str_radix(s, 16).ok());
                let (cell, _) = split_name(&id.node_id);
                LivePeer {
                    peer: Peer {
                        id: id.node_id.to_string(),
                        cell: cell.to_owned(),
                    },
                    addr: id.gossip_advertise_addr,
                    summary,
                }
            })
            .collect()
    }

    /// Drops expired records, and their entries in this node's state.
    async fn expire(&self) {
        let now = now_ms();
        let gone: Vec<String> = {
            let mut core = lock(&self.core);
            let gone = core
                .filter()
                .records()
                .filter(|r| r.expires_ms <= now)
                .map(|r| r.id.clone())
                .collect();
            core.expire(now);
            gone
        };
        if gone.is_empty() {
            return;
        }
        {
            let mut applied = lock(&self.applied);
            for id in &gone {
                applied.remove(id);
            }
        }
        let cc = self.chitchat.chitchat();
        let mut cc = cc.lock().await;
        let state = cc.self_node_state();
        for id in gone {
            state.delete(&format!("{APPLIED_PREFIX}{id}"));
        }
    }
}

fn member(id: &ChitchatId, live: bool) -> Member {
    let (cell, node) = split_name(&id.node_id);
    Member {
        cell: cell.to_owned(),
        node: node.to_owned(),
        addr: id.gossip_advertise_addr,
        live,
    }
}

/// The Mesh service of one node: accepts the streams peers open.
pub struct MeshService {
    links: Arc<Links>,
    authenticate: Authenticate,
}

impl std::fmt::Debug for MeshService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshService").finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl pb::mesh_server::Mesh for MeshService {
    type ExchangeStream = links::FrameStream;

    async fn exchange(
        &self,
        request: Request<Streaming<pb::Frame>>,
    ) -> Result<Response<Self::ExchangeStream>, Status> {
        let (_, extensions, incoming) = request.into_parts();
        let stream = self
            .links
            .accept(&extensions, incoming, &self.authenticate)
            .await?;
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests;
