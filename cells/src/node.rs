//! A running node and its system API: the single request path that both the
//! HTTP and the gRPC front ends call. Front ends parse their wire format into
//! these calls and render the results; they hold no logic of their own.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sigil_hsm::SecretString;

use crate::api_error::ApiError;
pub use crate::barrier::KeyStatus;
use crate::control_plane::ControlPlane;
use crate::lease::LeaseSettings;
use crate::logical::{Consistency, Operation, Request, Response};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::raft::RaftCell;
use crate::revocations::Revocations;
use crate::seal::machine::RekeyTarget;
use crate::seal::{
    self, ClusterInfo, GenerateRootStatus, InitOutput, InitParams, RekeyStatus, SealManager,
    SealStatus, SealType,
};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Who is calling: the token (if any) and where from.
#[derive(Debug, Default, Clone)]
pub struct Caller {
    pub token: Option<SecretString>,
    pub remote_addr: Option<SocketAddr>,
}

/// `sys/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub initialized: bool,
    pub sealed: bool,
    pub standby: bool,
    pub performance_standby: bool,
    pub server_time_utc: i64,
    pub version: String,
    pub cluster: Option<ClusterInfo>,
}

/// `sys/leader`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub ha_enabled: bool,
    pub is_self: bool,
    pub leader_address: String,
    pub leader_cluster_address: String,
}

/// One node of a cell.
#[derive(Debug)]
pub struct Node {
    seal: Arc<SealManager>,
    api_addr: String,
    /// The request pipeline of the current unseal; rebuilt when the barrier's
    /// generation moves on, dropped on seal.
    pipeline: RwLock<Option<Arc<Pipeline>>>,
    pipeline_build: tokio::sync::Mutex<()>,
    /// The revocations this node enforces, rebuilt from the control plane.
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
    /// The node's Raft when it runs in a cell (every `sigil server`); `None`
    /// for a node on local storage (tests of the layers above Raft).
    cell: Option<RaftCell>,
    lease_settings: LeaseSettings,
    /// The cell's control-plane replica, stored in the barrier.
    control: Arc<ControlPlane>,
}

/// Where a request is served (see [`Node::handle`]).
enum Route {
    Here,
    Leader,
}

impl Node {
    /// A node on local, unreplicated storage.
    pub fn new(seal: SealManager, api_addr: String) -> Arc<Self> {
        Self::build(seal, api_addr, None)
    }

    /// A node of a cell: its storage is `cell`'s replicated state.
    pub fn with_cell(seal: SealManager, api_addr: String, cell: RaftCell) -> Arc<Self> {
        Self::build(seal, api_addr, Some(cell))
    }

    /// A node with its lease settings from the configuration.
    pub fn with_settings(
        seal: SealManager,
        api_addr: String,
        cell: Option<RaftCell>,
        lease_settings: LeaseSettings,
        cell_id: sigil_control_plane::CellId,
        peers: Vec<sigil_control_plane::sync::Peer>,
    ) -> Arc<Self> {
        let mut node = Self::unshared(seal, api_addr, cell, cell_id, peers);
        node.lease_settings = lease_settings;
        Arc::new(node)
    }

    fn build(seal: SealManager, api_addr: String, cell: Option<RaftCell>) -> Arc<Self> {
        Arc::new(Self::unshared(
            seal,
            api_addr,
            cell,
            default_cell_id(),
            Vec::new(),
        ))
    }

    fn unshared(
        seal: SealManager,
        api_addr: String,
        cell: Option<RaftCell>,
        cell_id: sigil_control_plane::CellId,
        peers: Vec<sigil_control_plane::sync::Peer>,
    ) -> Self {
        let control = Arc::new(ControlPlane::federated(
            seal.barrier().clone(),
            cell_id,
            peers,
        ));
        Self {
            seal: Arc::new(seal),
            api_addr,
            pipeline: RwLock::new(None),
            pipeline_build: tokio::sync::Mutex::new(()),
            revocations: Arc::new(Revocations::new()),
            metrics: Arc::new(Metrics::new()),
            cell,
            lease_settings: LeaseSettings::default(),
            control,
        }
    }

    pub fn cell(&self) -> Option<&RaftCell> {
        self.cell.as_ref()
    }

    /// The cell's control-plane replica.
    pub fn control(&self) -> &Arc<ControlPlane> {
        &self.control
    }

    /// Serves a request through the pipeline (every path but the seal
    /// lifecycle endpoints), here or on the leader (docs/architecture.md,
    /// "Reads, writes and forwarding"):
    /// - writes run on the leader; a follower forwards them, and requests
    ///   made with limited-use tokens, whose uses are counted there;
    /// - `linearizable` reads confirm the read index with the leader, then
    ///   are served here once this node has applied it;
    /// - reads carrying an index (read-your-writes) wait, bounded, until this
    ///   node has applied it, else go to the leader;
    /// - `bounded` reads are served here while this node is within
    ///   `max_staleness` of the cell, else go to the leader.
    ///
    /// The response carries the index this node (or the leader) had applied.
    pub async fn handle(&self, req: Request) -> Result<Response, ApiError> {
        let Some(cell) = &self.cell else {
            return self.handle_here(req).await;
        };
        match self.route(cell, &req).await? {
            Route::Here => self.handle_here(req).await,
            Route::Leader => self.forward(cell, req).await,
        }
    }

    async fn route(&self, cell: &RaftCell, req: &Request) -> Result<Route, ApiError> {
        // Sealing is per node, wherever the request lands.
        // So are this node's own view of the cell and its seal.
        if matches!(
            req.path.as_str(),
            "sys/seal"
                | "sys/step-down"
                | "sys/storage/raft/configuration"
                // Snapshots stream to and from the node they reach; a
                // restore's pieces reach the leader through the log.
                | "sys/storage/raft/snapshot"
                | "sys/storage/raft/snapshot-force"
        ) {
            return Ok(Route::Here);
        }
        let write = !matches!(req.operation, Operation::Read | Operation::List);
        let leader = cell.is_leader();
        // The leader runs control-plane sync, so it alone knows its state.
        // `local=true` asks this node's own replica instead (every node of
        // a cell should hold the same).
        if req.path == "sys/control-plane/status"
            && !leader
            && cell.leader().is_some()
            && crate::params::boolean(&req.data, "local")? != Some(true)
        {
            return Ok(Route::Leader);
        }
        if write {
            return Ok(if leader { Route::Here } else { Route::Leader });
        }
        // A limited-use token spends a use even on a read. Uses are counted
        // on the leader, one request at a time, so two followers cannot both
        // spend the same last use.
        if !leader
            && let Some(token) = &req.token
            && !self.seal.is_sealed()
            && let Ok(Some(entry)) = self.seal.tokens().lookup(token)
            && entry.num_uses > 0
        {
            return Ok(Route::Leader);
        }
        let max = cell.settings().max_staleness;
        match req.consistency {
            Consistency::Linearizable => {
                cell.linearize()
                    .await
                    .map_err(|e| ApiError::Unavailable(e.to_string()))?;
                Ok(Route::Here)
            }
            Consistency::AfterIndex(index) => {
                let wait = cell.settings().write_timeout.min(Duration::from_secs(2));
                match cell.wait_applied(index, wait).await {
                    Ok(()) => Ok(Route::Here),
                    Err(_) if !leader => Ok(Route::Leader),
                    Err(e) => Err(ApiError::Unavailable(e.to_string())),
                }
            }
            Consistency::Default => match cell.staleness() {
                Some(age) if age <= max => Ok(Route::Here),
                _ if !leader && cell.leader().is_some() => Ok(Route::Leader),
                age => Err(ApiError::Unavailable(format!(
                    "this node may be stale (last confirmed up to date {}) and no leader is reachable; retry, or ask another node",
                    age.map_or("never".to_owned(), |a| format!("{} ms ago", a.as_millis()))
                ))),
            },
        }
    }

    /// Sends `req` to the leader's pipeline. Retried on another leader only
    /// when the old one refused it before running it.
    async fn forward(&self, cell: &RaftCell, mut req: Request) -> Result<Response, ApiError> {
        req.consistency = Consistency::Default;
        let body = serde_json::to_vec(&req).map_err(|e| ApiError::Internal(e.to_string()))?;
        let deadline = std::time::Instant::now() + cell.settings().write_timeout;
        loop {
            let Some((_, leader)) = cell.leader().filter(|(id, _)| *id != cell.id()) else {
                if std::time::Instant::now() >= deadline {
                    return Err(ApiError::Unavailable("no leader is reachable".into()));
                }
                tokio::time::sleep(cell.settings().heartbeat * 2).await;
                if cell.is_leader() {
                    return self.handle_here(req).await;
                }
                continue;
            };
            let mut client = cell
                .peers()
                .client(&leader.cluster_addr)
                .map_err(ApiError::Unavailable)?;
            let mut rpc = tonic::Request::new(sigil_proto::cluster::v1::ForwardRequest {
                request: body.clone().into(),
            });
            rpc.set_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
            match client.forward(rpc).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    let outcome: Result<Response, ApiError> = serde_json::from_slice(&reply.reply)
                        .map_err(|e| {
                            ApiError::Internal(format!("undecodable forwarded reply: {e}"))
                        })?;
                    return outcome.map(|mut r| {
                        r.index = r.index.max(reply.index);
                        r
                    });
                }
                // Refused before running: safe to send to the new leader.
                Err(s)
                    if s.code() == tonic::Code::FailedPrecondition
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(cell.settings().heartbeat * 2).await;
                }
                Err(s)
                    if matches!(req.operation, Operation::Read | Operation::List)
                        && std::time::Instant::now() < deadline =>
                {
                    tracing::debug!(error = %s.message(), "forwarded read failed; retrying");
                    cell.peers().forget(&leader.cluster_addr);
                    tokio::time::sleep(cell.settings().heartbeat * 2).await;
                }
                Err(s) => {
                    cell.peers().forget(&leader.cluster_addr);
                    return Err(ApiError::Unavailable(format!(
                        "the leader did not answer ({}); the request may or may not have been applied (request id {})",
                        s.message(),
                        req.id
                    )));
                }
            }
        }
    }

    /// Runs a request forwarded by a follower (this node leads).
    pub async fn handle_forwarded(&self, request: &[u8]) -> (Vec<u8>, u64) {
        let outcome = match serde_json::from_slice::<Request>(request) {
            Ok(req) => self.handle_here(req).await,
            Err(e) => Err(ApiError::InvalidRequest(format!(
                "undecodable forwarded request: {e}"
            ))),
        };
        let index = self.applied_index();
        let bytes = serde_json::to_vec(&outcome).unwrap_or_else(|e| {
            serde_json::to_vec(&Err::<Response, ApiError>(ApiError::Internal(
                e.to_string(),
            )))
            .unwrap_or_default()
        });
        (bytes, index)
    }

    /// The log index this node has applied (0 off Raft).
    pub fn applied_index(&self) -> u64 {
        self.cell.as_ref().map_or(0, |c| c.applied().index())
    }

    /// Re-reads replicated seal material and caches after another node
    /// changed them (see [`crate::raft::state_machine::WATCHED_PREFIXES`]).
    pub async fn on_replicated_change(&self) {
        if let Err(e) = self.blocking(|s| s.reload()).await {
            tracing::error!(error = %e, "reloading replicated seal state failed");
        }
        let pipeline = self
            .pipeline
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(p) = pipeline {
            if let Err(e) = p.refresh().await {
                tracing::error!(error = %e, "refreshing replicated tables failed");
            }
            match self.revocations.reload(&self.control).await {
                Ok(true) => {
                    self.metrics.revocation_filter_rebuilt();
                    tracing::debug!("revocation filter rebuilt");
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "rebuilding the revocation filter failed"),
            }
        }
    }

    /// The revocations this node enforces.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// The node's metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The cell's state was replaced by an operator's snapshot: reload the
    /// seal material (a keyring this node's root key cannot open seals it),
    /// and rebuild everything built from the old state.
    pub async fn on_restored(&self) {
        // Token caches, audit salts, lease timers and mounts all came from
        // the old state: the next request builds a fresh pipeline.
        self.pipeline
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.on_replicated_change().await;
    }

    /// Runs `req` through this node's pipeline. On a leader, only once it has
    /// applied everything committed before its term (every path that serves
    /// here as leader comes through this one check).
    async fn handle_here(&self, req: Request) -> Result<Response, ApiError> {
        if let Some(cell) = &self.cell
            && cell.is_leader()
        {
            cell.ready_to_lead()
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        }
        let result = self.pipeline().await?.handle(req).await;
        if self.seal.barrier().is_sealed() {
            // The request sealed the node: the pipeline's audit salts, token
            // caches and open devices go with the keys.
            self.pipeline
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
        result.map(|mut r| {
            r.index = self.applied_index();
            r
        })
    }

    /// The pipeline for the current unseal, built on first use.
    pub async fn pipeline(&self) -> Result<Arc<Pipeline>, ApiError> {
        self.require_unsealed()?;
        let generation = self.seal.barrier().generation();
        let current = || {
            self.pipeline
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .filter(|p| p.generation() == generation)
        };
        if let Some(p) = current() {
            return Ok(p);
        }
        let _building = self.pipeline_build.lock().await;
        if let Some(p) = current() {
            return Ok(p);
        }
        // A new unseal, or a restored snapshot: nothing cached is trusted.
        self.control.forget();
        // Revocations are enforced from the first request on.
        self.revocations.clear();
        self.revocations.reload(&self.control).await?;
        let p = Arc::new(
            Pipeline::load(
                self.seal.clone(),
                self.revocations.clone(),
                self.metrics.clone(),
                self.cell.clone(),
                self.lease_settings,
                self.control.clone(),
            )
            .await?,
        );
        *self.pipeline.write().unwrap_or_else(|p| p.into_inner()) = Some(p.clone());
        Ok(p)
    }

    /// Reopens every audit device's file (log rotation). A sealed node has
    /// none open.
    pub async fn reopen_audit(&self) -> Result<(), ApiError> {
        if !self.is_serving() {
            return Ok(());
        }
        self.pipeline().await?.reopen_audit().await
    }

    /// Revokes expired tokens every `every`, in bounded batches, while the
    /// node is unsealed.
    pub async fn token_sweep_loop(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if !self.is_serving() || !self.leads() {
                continue;
            }
            match self.pipeline().await {
                Ok(p) => {
                    if let Err(e) = p.sweep_expired_tokens(1000).await {
                        tracing::warn!(error = %e, "token sweep failed; retrying next round");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "token sweep skipped"),
            }
        }
    }

    /// Whether this node does the cell's background writes (sweeps, lease
    /// revocation): the leader of its cell, or a node on local storage.
    /// Followers would only race the leader.
    pub fn leads(&self) -> bool {
        self.cell.as_ref().is_none_or(RaftCell::is_leader)
    }

    /// The expiration manager: while this node is unsealed and leads its
    /// cell, revokes due leases in bounded rounds, then sleeps until the
    /// next lease is due, its tick passes, or something wakes it (a short
    /// lease, a revoked token). Nothing is loaded up front: each round reads
    /// the front of the due index.
    pub async fn lease_loop(self: Arc<Self>) {
        let tick = self.lease_settings.tick;
        let mut last_engine_tick = std::time::Instant::now();
        loop {
            let pipeline = if self.is_serving() && self.leads() {
                self.pipeline().await.ok()
            } else {
                None
            };
            let Some(p) = pipeline else {
                tokio::time::sleep(tick).await;
                continue;
            };
            let wake = p.lease_wake();
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let batch = p.lease_settings().batch;
            if last_engine_tick.elapsed() >= Duration::from_secs(1) {
                last_engine_tick = std::time::Instant::now();
                p.tick_engines().await;
            }
            let busy = match p.expire_due().await {
                Ok(round) => {
                    if round.revoked + round.failed > 0 {
                        tracing::info!(
                            revoked = round.revoked,
                            failed = round.failed,
                            "expired leases processed"
                        );
                    }
                    round.examined >= batch
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease expiration round failed; retrying");
                    drop(p);
                    tokio::time::sleep(tick).await;
                    continue;
                }
            };
            if busy {
                // More is due: go on at once, but let other work in.
                tokio::task::yield_now().await;
                continue;
            }
            let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
            let next = p.next_lease_due().ok().flatten();
            let wait =
                crate::pipeline::idle_wait(next, i64::try_from(now_ms).unwrap_or(i64::MAX), tick);
            drop(p);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut woken => {}
            }
        }
    }

    /// Keeps trying to unseal an HSM-sealed node until it succeeds, backing
    /// off from `retry` to ten times it. A rejected PIN is not retried: many
    /// HSMs lock the user after a few failed logins, so the node stays sealed
    /// until an operator fixes the PIN and restarts it.
    pub async fn auto_unseal_loop(self: Arc<Self>, retry: Duration) {
        if self.seal.seal_type() != SealType::Pkcs11 {
            return;
        }
        if !self.seal.is_initialized() {
            let seal = self.seal.clone();
            match tokio::task::spawn_blocking(move || seal.probe_hsm()).await {
                Ok(Ok(())) => tracing::info!("hsm reachable; waiting for init"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "hsm seal is not usable: init will fail until it is fixed")
                }
                Err(e) => tracing::error!(error = %e, "hsm probe task failed"),
            }
        }
        let mut delay = retry;
        loop {
            if self.seal.is_initialized() {
                if !self.seal.is_sealed() {
                    return;
                }
                let seal = self.seal.clone();
                match tokio::task::spawn_blocking(move || seal.auto_unseal()).await {
                    Ok(Ok(())) => return,
                    Ok(Err(seal::SealError::Hsm(e @ sigil_hsm::HsmError::Login { .. }))) => {
                        tracing::error!(error = %e, "hsm login failed; not retrying, to avoid locking the hsm user: fix the pin and restart the node");
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, retry_in = ?delay, "auto-unseal through the hsm failed; node stays sealed");
                        delay = (delay * 2).min(retry * 10);
                    }
                    Err(e) => tracing::error!(error = %e, "auto-unseal task failed"),
                }
            }
            // Uninitialised nodes wait here: init unseals an HSM node itself.
            tokio::time::sleep(delay).await;
        }
    }

    // ---- unauthenticated -------------------------------------------------

    pub fn init_status(&self) -> bool {
        self.seal.is_initialized()
    }

    pub async fn init(&self, params: InitParams) -> Result<InitOutput, ApiError> {
        if let Some(cell) = &self.cell
            && !cell.is_member()
        {
            // A node left waiting (`bootstrap = false`) founds its own cell
            // when an operator initialises it rather than joining it.
            if self.seal.is_initialized() {
                return Err(seal::SealError::AlreadyInitialized.into());
            }
            cell.found()
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?;
            tracing::info!("founded a new cell at init");
        }
        self.blocking(move |s| s.init(params)).await
    }

    /// `sys/storage/raft/join`: joins this node, which belongs to no cell
    /// yet, to the cell reachable at `leader` (a member's cluster address),
    /// retrying while the cell elects or catches it up, for up to `within`.
    pub async fn join(&self, leader: &str, within: Duration) -> Result<(), ApiError> {
        let cell = self.cell.as_ref().ok_or_else(|| {
            ApiError::InvalidRequest("this node does not use raft storage".into())
        })?;
        if cell.is_member() {
            return Err(ApiError::InvalidRequest(
                "this node is already a member of a cell; remove it from that cell first".into(),
            ));
        }
        if leader.parse::<SocketAddr>().is_err() {
            return Err(ApiError::InvalidRequest(format!(
                "leader_cluster_addr {leader:?} is not an address of the form IP:PORT"
            )));
        }
        let deadline = std::time::Instant::now() + within;
        loop {
            match cell.try_join(leader).await {
                Ok(()) => {
                    tracing::info!(through = %leader, "joined the cell");
                    return Ok(());
                }
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(ApiError::Unavailable(format!(
                        "cannot join the cell through {leader}: {e}"
                    )));
                }
                Err(e) => {
                    tracing::debug!(through = %leader, error = %e, "join attempt failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    pub fn seal_status(&self) -> SealStatus {
        self.seal.status()
    }

    /// One share (hex or base64), or a reset when `reset` is set.
    pub async fn unseal(&self, key: Option<&str>, reset: bool) -> Result<SealStatus, ApiError> {
        if reset {
            return Ok(self.seal.unseal_reset());
        }
        if !self.seal.is_initialized() {
            return Err(seal::SealError::NotInitialized.into());
        }
        if self.seal.seal_type() == SealType::Pkcs11 && self.seal.is_sealed() {
            return Err(seal::SealError::AutoUnsealOnly.into());
        }
        if !self.seal.is_sealed() {
            return Ok(self.seal.status());
        }
        let key = key.filter(|k| !k.trim().is_empty()).ok_or_else(|| {
            ApiError::InvalidRequest(
                "'key' must be specified in request body as JSON, or 'reset' set to true".into(),
            )
        })?;
        let share = seal::decode_share(key)?;
        self.blocking(move |s| s.unseal(share)).await
    }

    pub fn health(&self) -> Health {
        let status = self.seal.status();
        // A follower serves reads: a performance standby in Vault's terms.
        let follower = self.cell.as_ref().is_some_and(|c| !c.is_leader());
        Health {
            initialized: status.initialized,
            sealed: status.sealed,
            standby: follower,
            performance_standby: follower,
            server_time_utc: crate::clock::unix_now(),
            version: VERSION.to_owned(),
            cluster: status.cluster,
        }
    }

    pub fn leader(&self) -> Result<Leader, ApiError> {
        if !self.seal.is_initialized() || self.seal.is_sealed() {
            return Err(ApiError::Sealed);
        }
        let Some(cell) = &self.cell else {
            return Ok(Leader {
                ha_enabled: false,
                is_self: true,
                leader_address: self.api_addr.clone(),
                leader_cluster_address: String::new(),
            });
        };
        let leader = cell.leader();
        Ok(Leader {
            ha_enabled: true,
            is_self: leader.as_ref().is_some_and(|(id, _)| *id == cell.id()),
            leader_address: leader
                .as_ref()
                .map(|(_, n)| n.api_addr.clone())
                .unwrap_or_default(),
            leader_cluster_address: leader
                .map(|(_, n)| format!("https://{}", n.cluster_addr))
                .unwrap_or_default(),
        })
    }

    pub async fn rekey_init(
        &self,
        recovery: bool,
        shares: u32,
        threshold: u32,
    ) -> Result<RekeyStatus, ApiError> {
        let target = rekey_target(recovery);
        self.blocking(move |s| s.rekey_init(target, shares, threshold))
            .await
    }

    pub async fn rekey_update(
        &self,
        recovery: bool,
        nonce: &str,
        key: &str,
    ) -> Result<RekeyStatus, ApiError> {
        let share = seal::decode_share(key)?;
        let nonce = nonce.to_owned();
        let target = rekey_target(recovery);
        self.blocking(move |s| s.rekey_update(target, &nonce, share))
            .await
    }

    pub fn rekey_status(&self, recovery: bool) -> Result<RekeyStatus, ApiError> {
        self.require_unsealed()?;
        Ok(self.seal.rekey_status(rekey_target(recovery)))
    }

    pub fn rekey_cancel(&self, recovery: bool) -> Result<(), ApiError> {
        self.require_unsealed()?;
        Ok(self.seal.rekey_cancel(rekey_target(recovery))?)
    }

    pub fn generate_root_init(&self, otp: Option<String>) -> Result<GenerateRootStatus, ApiError> {
        self.require_unsealed()?;
        Ok(self.seal.generate_root_init(otp)?)
    }

    pub async fn generate_root_update(
        &self,
        nonce: &str,
        key: &str,
    ) -> Result<GenerateRootStatus, ApiError> {
        let share = seal::decode_share(key)?;
        let nonce = nonce.to_owned();
        self.blocking(move |s| s.generate_root_update(&nonce, share))
            .await
    }

    pub fn generate_root_status(&self) -> Result<GenerateRootStatus, ApiError> {
        self.require_unsealed()?;
        Ok(self.seal.generate_root_status())
    }

    pub fn generate_root_cancel(&self) -> Result<(), ApiError> {
        self.require_unsealed()?;
        Ok(self.seal.generate_root_cancel()?)
    }

    /// Whether the node serves requests beyond init, unseal and status.
    pub fn is_serving(&self) -> bool {
        self.seal.is_initialized() && !self.seal.is_sealed()
    }

    // ---- root token required ---------------------------------------------

    /// `sys/seal`, through the pipeline (audited; needs `sudo`).
    pub async fn seal(&self, caller: &Caller) -> Result<(), ApiError> {
        self.handle(Self::sys_request(Operation::Update, "sys/seal", caller))
            .await
            .map(|_| ())
    }

    /// `sys/rotate`, through the pipeline (audited; needs `sudo`).
    pub async fn rotate(&self, caller: &Caller) -> Result<KeyStatus, ApiError> {
        self.handle(Self::sys_request(Operation::Update, "sys/rotate", caller))
            .await?;
        Ok(self.seal.barrier().key_status()?)
    }

    /// `sys/key-status`, through the pipeline.
    pub async fn key_status(&self, caller: &Caller) -> Result<KeyStatus, ApiError> {
        self.handle(Self::sys_request(Operation::Read, "sys/key-status", caller))
            .await?;
        Ok(self.seal.barrier().key_status()?)
    }

    fn sys_request(op: Operation, path: &str, caller: &Caller) -> Request {
        let mut r = Request::new(op, path).with_token(caller.token.clone());
        r.client_addr = caller.remote_addr;
        r
    }

    fn require_unsealed(&self) -> Result<(), ApiError> {
        if !self.seal.is_initialized() {
            return Err(ApiError::FailedPrecondition(
                "Vault is not initialized".into(),
            ));
        }
        if self.seal.is_sealed() {
            return Err(ApiError::Sealed);
        }
        Ok(())
    }

    /// Runs a seal operation off the async runtime: HSM calls block.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SealManager) -> Result<T, seal::SealError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let seal = self.seal.clone();
        tokio::task::spawn_blocking(move || f(&seal))
            .await
            .map_err(|e| ApiError::Internal(format!("seal task failed: {e}")))?
            .map_err(ApiError::from)
    }
}

fn rekey_target(recovery: bool) -> RekeyTarget {
    if recovery {
        RekeyTarget::Recovery
    } else {
        RekeyTarget::Root
    }
}

/// The cell id of a node built without configuration (`[cell] id`'s default).
fn default_cell_id() -> sigil_control_plane::CellId {
    sigil_control_plane::CellId::new("dev").unwrap_or_else(|e| unreachable!("{e}"))
}
