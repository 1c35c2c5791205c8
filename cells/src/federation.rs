//! This cell's part in the federation: serving control-plane sync to peer
//! cells on the cluster port, pulling from each of them while this node
//! leads, and keeping the cell's own entry in the cell registry
//! (docs/architecture.md, "The control plane").
//!
//! Peers come from `[federation] peers`. Each is trusted through its own CA:
//! the cluster port accepts a peer node's certificate only if that peer's
//! CA issued it and it names that peer, and the Federation and Mesh
//! services are the only ones a peer may call (the Raft service admits
//! this cell alone).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sigil_control_plane::model::{CellInfo, CellStatus};
use sigil_control_plane::sync::{self, Dial, FederationService, Peer, PullSettings};
use sigil_control_plane::{Key, Value};
use sigil_proto::federation::v1::federation_server::FederationServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster_pki::{
    CaCertificate, CellId, ClusterConnectInfo, ClusterConnector, NodeCertificate,
    federation_client_config,
};
use crate::config::Config;
use crate::control_plane::ControlPlane;
use crate::node::Node;

/// How often the leader checks its registry entry, expired revocation
/// records and global mounts (also checked whenever the control plane
/// changes).
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// How often a node checks whether it leads (and so pulls).
const ROLE_POLL: Duration = Duration::from_millis(200);

/// The federated peers of a configuration, with their CAs loaded.
#[derive(Debug, Clone)]
pub struct Peers {
    pub peers: Vec<(Peer, CaCertificate)>,
}

impl Peers {
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let mut peers = Vec::new();
        for p in &config.federation.peers {
            let cell = sigil_control_plane::CellId::new(p.cell.clone())
                .with_context(|| format!("federation peer {}", p.cell))?;
            let ca = CaCertificate::load(&p.ca_file).with_context(|| {
                format!(
                    "federation peer {}: cannot load ca_file {}",
                    p.cell,
                    p.ca_file.display()
                )
            })?;
            peers.push((
                Peer {
                    cell,
                    addrs: p.addrs.clone(),
                },
                ca,
            ));
        }
        Ok(Self { peers })
    }

    /// The peers' cells and CAs, for the cluster port's verifier.
    pub fn cas(&self) -> anyhow::Result<Vec<(CellId, CaCertificate)>> {
        self.peers
            .iter()
            .map(|(p, ca)| Ok((CellId::new(p.cell.as_str())?, ca.clone())))
            .collect()
    }

    pub fn list(&self) -> Vec<Peer> {
        self.peers.iter().map(|(p, _)| p.clone()).collect()
    }
}

/// The Federation service for the cluster port: admits the configured peer
/// cells, each through its own CA (checked by the TLS verifier).
pub fn service(
    control: Arc<ControlPlane>,
    shutdown: watch::Receiver<bool>,
) -> FederationServer<FederationService<ControlPlane>> {
    let allowed: Vec<sigil_control_plane::CellId> =
        control.peers().iter().map(|p| p.cell.clone()).collect();
    let authorize: sync::service::Authorize = Arc::new(move |ext: &tonic::Extensions| {
        let peer = ext
            .get::<ClusterConnectInfo>()
            .map(|i| i.peer().clone())
            .ok_or_else(|| tonic::Status::unauthenticated("no verified peer certificate"))?;
        allowed
            .iter()
            .find(|c| c.as_str() == peer.cell.as_str())
            .cloned()
            .ok_or_else(|| {
                tonic::Status::permission_denied(format!(
                    "cell {} is not a federated peer of this cell",
                    peer.cell
                ))
            })
    });
    let status = control.sync_status().clone();
    FederationService::new(control, authorize, status)
        .with_shutdown(shutdown)
        .into_server()
}

/// Starts pulling from every peer while this node leads, and the leader's
/// housekeeping: global mounts and their roles, the cleanup of new
/// revocations in this cell, its own registry entry, expired revocations.
pub fn spawn(
    node: Arc<Node>,
    own: &NodeCertificate,
    peers: &Peers,
    config: &Config,
    shutdown: watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<()> {
    let (active_tx, active) = watch::channel(false);
    {
        let node = node.clone();
        let mut shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let leads = node.is_serving() && node.leads();
                active_tx.send_if_modified(|a| std::mem::replace(a, leads) != leads);
                tokio::select! {
                    () = tokio::time::sleep(ROLE_POLL) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        }));
    }
    let settings = PullSettings {
        digest_every: Duration::from_millis(config.federation.sync_interval_ms),
        ..PullSettings::default()
    };
    let control = node.control().clone();
    for (peer, ca) in &peers.peers {
        let peer_cell = CellId::new(peer.cell.as_str())?;
        let tls = Arc::new(
            federation_client_config(ca, own, &peer_cell)
                .with_context(|| format!("federation peer {}", peer.cell))?,
        );
        let dial: Dial = Arc::new(move |addr: &str| {
            Ok(crate::raft::network::endpoint(addr)?
                .connect_with_connector_lazy(ClusterConnector::new(tls.clone())))
        });
        let mut shutdown = shutdown.clone();
        let run = sync::pull(
            control.clone(),
            peer.clone(),
            dial,
            active.clone(),
            control.sync_status().clone(),
            settings,
        );
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = run => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
        }));
    }
    let region = config.cell.region().to_owned();
    let mut shutdown = shutdown.clone();
    let mut changes = sigil_control_plane::sync::Store::changes(&*control);
    tasks.push(tokio::spawn(async move {
        let mut last_full = tokio::time::Instant::now();
        loop {
            let changed = tokio::select! {
                () = tokio::time::sleep(HOUSEKEEPING) => false,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    true
                }
                _ = shutdown.wait_for(|s| *s) => return,
            };
            if changed {
                // Let a burst of ops land before reconciling.
                tokio::time::sleep(Duration::from_millis(50)).await;
                changes.mark_unchanged();
            }
            if !(node.is_serving() && node.leads()) {
                continue;
            }
            if let Ok(p) = node.pipeline().await {
                if let Err(e) = p.reconcile_global_mounts().await {
                    tracing::warn!(error = %e, "cannot reconcile global mounts; retrying");
                }
                if let Err(e) = p.clean_up_revocations().await {
                    tracing::warn!(error = %e, "cannot clean up revocations; retrying");
                }
            }
            if last_full.elapsed() < HOUSEKEEPING {
                continue;
            }
            last_full = tokio::time::Instant::now();
            if let Err(e) = register(&node, &region).await {
                tracing::warn!(error = %e, "cannot update this cell's registry entry");
            }
            if let Err(e) = node.control().collect_garbage().await {
                tracing::warn!(error = %e, "cannot drop expired revocation records");
            }
        }
    }));
    Ok(())
}

/// Writes this cell's registry entry when its members' addresses changed.
pub async fn register(node: &Node, region: &str) -> Result<(), crate::api_error::ApiError> {
    let Some(cell) = node.cell() else {
        return Ok(());
    };
    let membership = cell.applied().membership;
    let (mut api_addrs, mut cluster_addrs): (Vec<String>, Vec<String>) = membership
        .membership()
        .nodes()
        .map(|(_, n)| (n.api_addr.clone(), n.cluster_addr.clone()))
        .unzip();
    api_addrs.sort();
    cluster_addrs.sort();
    let info = Value::Cell(CellInfo {
        region: region.to_owned(),
        api_addrs,
        cluster_addrs,
        status: CellStatus::Active,
    });
    let control = node.control();
    let key = Key::Cell {
        id: control.cell_id().clone(),
    };
    let current = control.read(|r| r.state().get(&key)).await?;
    if current.as_ref() != Some(&info) {
        control.write(key, Some(info)).await?;
        tracing::info!(cell = %control.cell_id(), "cell registry entry updated");
    }
    Ok(())
}
