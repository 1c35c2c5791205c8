//! This node's part in the revocation mesh (docs/architecture.md, "The
//! revocation mesh"): the `sigil_gossip` runtime, given the cluster port's
//! mutual TLS, this cell's seeds, and what to do with what it hears.
//!
//! - **Trust.** A node of this cell is dialled with this cell's CA; a node
//!   of a federated cell with that cell's CA, presenting this node's
//!   certificate. A stream is accepted only from a certificate the cluster
//!   port verified (this cell or a federated one) whose cell and node are
//!   the ones its hello claims.
//! - **Seeds.** `raft.retry_join` (this cell), every federation peer's
//!   `addrs`, `gossip.seeds`, and later the cell registry's cluster
//!   addresses and the cell's Raft members.
//! - **Enforcement.** A record heard from a peer is in the node's filter
//!   before the mesh passes it on. Then the cell makes it durable: the
//!   leader commits it to the control plane at once; another node waits a
//!   moment for its leader and commits it only if it is still missing.
//!   Commits are idempotent by id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use rustls::ClientConfig;
use sigil_control_plane::{Key, Kind, Value};
use sigil_gossip::Revocation;
use sigil_gossip::broadcast;
use sigil_gossip::mesh::{
    Authenticate, Dialer, Identity, Mesh, MeshService, MeshSettings, Observer,
};
use sigil_proto::mesh::v1::mesh_server::MeshServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::cluster_pki::{
    CellId, ClusterConnectInfo, ClusterConnector, client_config, federation_client_config,
};
use crate::config::Config;
use crate::node::Node;
use crate::raft::tls::ClusterTls;
use crate::revocations::from_filter_record;

/// How often the registry and the cell's membership are checked for nodes
/// the mesh has not met.
const INTRODUCE_EVERY: Duration = Duration::from_secs(5);
/// How long a node that does not lead waits for its leader to commit a
/// record heard from the mesh before committing it itself.
const FOLLOWER_GRACE_MS: u64 = 250;

/// The mesh's settings from `[gossip]`.
pub fn settings(config: &Config) -> MeshSettings {
    let g = &config.gossip;
    MeshSettings {
        cluster_id: "sigil".into(),
        tick: Duration::from_millis(g.tick_ms),
        anti_entropy: Duration::from_millis(g.anti_entropy_ms),
        membership_interval: Duration::from_millis(g.membership_interval_ms),
        broadcast: broadcast::Settings {
            fanout_local: g.fanout_local,
            fanout_remote: g.fanout_remote,
            retransmit_mult: g.retransmit_mult,
            ..broadcast::Settings::default()
        },
    }
}

/// Dials mesh peers with the trust of their cell.
struct CellDialer {
    own_cell: String,
    own: Arc<ClientConfig>,
    peers: HashMap<String, Arc<ClientConfig>>,
    /// Advertised → dialled (`gossip.dial_overrides`, then `raft.dial_overrides`).
    overrides: BTreeMap<String, String>,
}

impl Dialer for CellDialer {
    fn dial(&self, addr: SocketAddr, cell: &str) -> Result<Channel, String> {
        let tls = if cell == self.own_cell {
            Arc::clone(&self.own)
        } else {
            self.peers
                .get(cell)
                .cloned()
                .ok_or_else(|| format!("cell {cell} is not a federation peer of this cell"))?
        };
        let advertised = addr.to_string();
        let target = self.overrides.get(&advertised).unwrap_or(&advertised);
        Ok(crate::raft::network::endpoint(target)?
            .connect_with_connector_lazy(ClusterConnector::new(tls)))
    }
}

/// Enforces what the mesh hears, then makes it durable in this cell.
struct Enforcer {
    node: Weak<Node>,
    /// This node's name on the mesh: spreads the followers' waits.
    me: String,
}

impl Observer for Enforcer {
    fn enforce(&self, records: &[Revocation]) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        node.revocations().hear(records);
        node.metrics().revocation_heard(records.len() as u64);
        for r in records {
            tracing::info!(revocation = %r.id, target = %r.target, "revocation heard from the mesh; enforced");
        }
        // Followers wait a grace period plus a share of it that differs
        // from node to node, so the cell's nodes do not all race.
        let first = records.first().map_or("", |r| r.id.as_str());
        let jitter = broadcast::fnv1a(self.me.bytes().chain(first.bytes())) % FOLLOWER_GRACE_MS;
        tokio::spawn(adopt(
            node,
            records.to_vec(),
            Duration::from_millis(FOLLOWER_GRACE_MS + jitter),
        ));
    }
}

/// Commits records heard from the mesh to this cell's control plane.
/// Commits records heard from the mesh to this cell's control plane: at
/// once on the leader, after `grace` on another node.
async fn adopt(node: Arc<Node>, records: Vec<Revocation>, grace: Duration) {
    if !node.leads() {
        tokio::time::sleep(grace).await;
    }
    if !node.is_serving() {
        // Sealed: the cell's unsealed nodes, or sync, commit it.
        return;
    }
    for r in records {
        match node
            .control()
            .adopt_revocation(&r.id, from_filter_record(&r))
            .await
        {
            Ok(true) => {
                tracing::info!(revocation = %r.id, "revocation heard from the mesh committed in this cell");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(revocation = %r.id, error = %e, "cannot commit a revocation heard from the mesh; sync will bring it");
            }
        }
    }
}

async fn resolve(addr: &str) -> Option<SocketAddr> {
    match tokio::net::lookup_host(addr).await {
        Ok(mut a) => a.next(),
        Err(e) => {
            tracing::warn!(addr, error = %e, "cannot resolve a gossip address");
            None
        }
    }
}

/// Starts this node's share of the mesh and returns it with the service
/// the cluster port serves; `None` when `[gossip] enabled = false`.
pub async fn start(
    node: &Arc<Node>,
    config: &Config,
    pki: &ClusterTls,
    peers: &crate::federation::Peers,
    cluster_addr: &str,
    shutdown: watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Option<(Arc<Mesh>, MeshServer<MeshService>)>> {
    if !config.gossip.enabled {
        tracing::info!("revocation mesh disabled: revocations travel with the control plane only");
        return Ok(None);
    }
    let addr = resolve(cluster_addr)
        .await
        .with_context(|| format!("cannot resolve the cluster address {cluster_addr}"))?;
    let own_cell = pki.cell.as_str().to_owned();
    let mut peer_tls = HashMap::new();
    for (peer, ca) in &peers.peers {
        let cell = CellId::new(peer.cell.as_str())?;
        peer_tls.insert(
            peer.cell.as_str().to_owned(),
            Arc::new(federation_client_config(ca, &pki.node, &cell)?),
        );
    }
    let mut overrides = config.raft.dial_overrides.clone();
    overrides.extend(config.gossip.dial_overrides.clone());
    let dialer = CellDialer {
        own_cell: own_cell.clone(),
        own: Arc::new(client_config(&pki.ca, &pki.node, &pki.cell)?),
        peers: peer_tls,
        overrides,
    };
    let mut seeds = Vec::new();
    let named = config
        .raft
        .retry_join
        .iter()
        .map(|a| (a.as_str(), own_cell.as_str()))
        .chain(
            config
                .federation
                .peers
                .iter()
                .flat_map(|p| p.addrs.iter().map(|a| (a.as_str(), p.cell.as_str()))),
        )
        .chain(
            config
                .gossip
                .seeds
                .iter()
                .map(|s| (s.addr.as_str(), s.cell.as_str())),
        );
    for (a, cell) in named {
        if let Some(sa) = resolve(a).await {
            seeds.push((sa, cell.to_owned()));
        }
    }
    let me = Identity {
        cell: own_cell,
        node: pki.node.identity().node.as_str().to_owned(),
        addr,
    };
    let observer = Arc::new(Enforcer {
        node: Arc::downgrade(node),
        me: me.name(),
    });
    let mesh = Mesh::start(
        me,
        settings(config),
        seeds,
        Arc::new(dialer),
        observer,
        shutdown.clone(),
    )
    .await
    .context("cannot start the revocation mesh")?;
    node.revocations().attach_mesh(Arc::clone(&mesh));
    let authenticate: Authenticate = Arc::new(|ext, hello| {
        let peer = ext
            .get::<ClusterConnectInfo>()
            .map(|i| i.peer().clone())
            .ok_or_else(|| tonic::Status::unauthenticated("no verified peer certificate"))?;
        if peer.cell.as_str() != hello.cell || peer.node.as_str() != hello.node {
            return Err(tonic::Status::permission_denied(format!(
                "hello names {}/{} but the certificate names {}/{}",
                hello.cell.chars().take(64).collect::<String>(),
                hello.node.chars().take(64).collect::<String>(),
                peer.cell,
                peer.node
            )));
        }
        Ok(())
    });
    let server = mesh.server(authenticate);
    tasks.push(tokio::spawn(introduce_loop(
        Arc::downgrade(node),
        Arc::clone(&mesh),
        shutdown,
    )));
    tracing::info!(addr = %addr, "revocation mesh started");
    Ok(Some((mesh, server)))
}

/// Introduces the mesh to nodes it has not met: the cell's Raft members and
/// the cluster addresses in the cell registry.
async fn introduce_loop(node: Weak<Node>, mesh: Arc<Mesh>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(INTRODUCE_EVERY) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        let mut known: Vec<(String, String)> = Vec::new();
        if let Some(cell) = node.cell() {
            let own = mesh.identity().cell.clone();
            for (_, n) in cell.applied().membership.membership().nodes() {
                known.push((n.cluster_addr.clone(), own.clone()));
            }
        }
        if node.is_serving() {
            let registry = node
                .control()
                .read(|r| r.state().of_kind(Kind::Cell))
                .await
                .unwrap_or_default();
            for (k, v) in registry {
                if let (Key::Cell { id }, Value::Cell(info)) = (k, v) {
                    for a in info.cluster_addrs {
                        known.push((a, id.as_str().to_owned()));
                    }
                }
            }
        }
        let met: HashSet<SocketAddr> = mesh.members().await.into_iter().map(|m| m.addr).collect();
        for (a, cell) in known {
            let Ok(sa) = a.parse::<SocketAddr>() else {
                continue;
            };
            if !met.contains(&sa) {
                mesh.introduce(sa, &cell);
            }
        }
    }
}

/// One cell's convergence on a record: live nodes, how many applied it,
/// when the first and the last did (ms since the Unix epoch, by their
/// clocks), and which live nodes have not yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CellConvergence {
    pub cell: String,
    pub nodes_live: usize,
    pub nodes_applied: usize,
    pub first_applied_ms: Option<u64>,
    pub last_applied_ms: Option<u64>,
    pub pending: Vec<String>,
}

/// Convergence on record `id` across the mesh, cell by cell, from every
/// member's report of when it applied it. Members the failure detector
/// holds dead are left out (listed in `unreachable`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Convergence {
    pub nodes_live: usize,
    pub nodes_applied: usize,
    pub converged: bool,
    pub cells: Vec<CellConvergence>,
    pub unreachable: Vec<String>,
}

pub async fn convergence(mesh: &Mesh, id: &str) -> Convergence {
    let mut cells: BTreeMap<String, CellConvergence> = BTreeMap::new();
    let mut unreachable = Vec::new();
    for a in mesh.applications(id).await {
        let name = format!("{}/{}", a.member.cell, a.member.node);
        if !a.member.live {
            unreachable.push(name);
            continue;
        }
        let c = cells
            .entry(a.member.cell.clone())
            .or_insert_with(|| CellConvergence {
                cell: a.member.cell.clone(),
                nodes_live: 0,
                nodes_applied: 0,
                first_applied_ms: None,
                last_applied_ms: None,
                pending: Vec::new(),
            });
        c.nodes_live += 1;
        match a.applied_ms {
            Some(t) => {
                c.nodes_applied += 1;
                c.first_applied_ms = Some(c.first_applied_ms.map_or(t, |f| f.min(t)));
                c.last_applied_ms = Some(c.last_applied_ms.map_or(t, |l| l.max(t)));
            }
            None => c.pending.push(name),
        }
    }
    let cells: Vec<CellConvergence> = cells.into_values().collect();
    let nodes_live = cells.iter().map(|c| c.nodes_live).sum();
    let nodes_applied = cells.iter().map(|c| c.nodes_applied).sum();
    Convergence {
        nodes_live,
        nodes_applied,
        converged: nodes_live > 0 && nodes_applied == nodes_live,
        cells,
        unreachable,
    }
}
