//! Wires a node from its [`Config`] and serves both front ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sigil_hsm::{KeyLabel, KeyProvider, Pkcs11Config, Pkcs11KeyProvider, SecretString};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::barrier::{Barrier, BarrierConfig};
use crate::config::{Config, SealKind};
use crate::node::Node;
use crate::raft::replicated::ReplicatedStorage;
use crate::raft::service::{ClusterService, ForwardHandler};
use crate::raft::tls::{ClusterTls, TlsSource};
use crate::raft::{RaftCell, RaftSettings};
use crate::seal::{InitOutput, InitParams, SealBackend, SealManager};
use crate::storage::Storage;

/// A serving node. Dropping it does not stop it; call [`Running::shutdown`].
#[derive(Debug)]
pub struct Running {
    pub node: Arc<Node>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub tls: bool,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The HTTP API's base URL.
    pub fn http_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    /// Stops accepting, lets in-flight requests finish, seals nothing (keys
    /// are dropped with the process).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(cell) = self.node.cell() {
            cell.shutdown().await;
        }
    }

    /// Serves until SIGINT or SIGTERM, then shuts down. SIGHUP reopens the
    /// audit devices' files (after log rotation).
    pub async fn wait_for_signal(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut hup) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(h)) => (t, h),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for signals");
                return self.shutdown().await;
            }
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("interrupt received, shutting down");
                    break;
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM received, shutting down");
                    break;
                }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received, reopening audit devices");
                    if let Err(e) = self.node.reopen_audit().await {
                        tracing::error!(error = %e, "audit devices did not all reopen");
                    }
                }
            }
        }
        self.shutdown().await;
    }

    /// Dev mode: initialise with one share and unseal, if uninitialised.
    /// Returns the init output when it initialised.
    pub async fn dev_bootstrap(
        &self,
        root_token: Option<String>,
    ) -> anyhow::Result<Option<InitOutput>> {
        if self.node.init_status() {
            return Ok(None);
        }
        let out = self
            .node
            .init(InitParams {
                secret_shares: 1,
                secret_threshold: 1,
                root_token: root_token.map(SecretString::new),
                ..InitParams::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("dev init: {e}"))?;
        let key = hex::encode(out.keys[0].expose());
        self.node
            .unseal(Some(&key), false)
            .await
            .map_err(|e| anyhow::anyhow!("dev unseal: {e}"))?;
        // As a Vault dev server: KV version 2 at `secret/`.
        let mut data = crate::logical::Data::new();
        data.insert("type".into(), "kv".into());
        data.insert("options".into(), serde_json::json!({ "version": "2" }));
        let req =
            crate::logical::Request::new(crate::logical::Operation::Update, "sys/mounts/secret")
                .with_data(data)
                .with_token(Some(out.root_token.clone()));
        self.node
            .handle(req)
            .await
            .map_err(|e| anyhow::anyhow!("dev mount of secret/: {e}"))?;
        Ok(Some(out))
    }
}

/// How the seal backend reaches the HSM: opened lazily and re-opened after
/// failures, reading the PIN from the environment each time.
fn seal_backend(config: &Config) -> anyhow::Result<SealBackend> {
    match (config.seal.kind, &config.seal.pkcs11) {
        (SealKind::Shamir, _) => Ok(SealBackend::Shamir),
        (SealKind::Pkcs11, None) => {
            anyhow::bail!("config key `seal.pkcs11`: required when seal.type = \"pkcs11\"")
        }
        (SealKind::Pkcs11, Some(p)) => {
            let key_label = KeyLabel::new(&p.key_label)
                .map_err(|e| anyhow::anyhow!("config key `seal.pkcs11.key_label`: {e}"))?;
            let p = p.clone();
            let open = move || -> Result<Arc<dyn KeyProvider>, sigil_hsm::HsmError> {
                let pin = std::env::var(&p.pin_env).map_err(|_| sigil_hsm::HsmError::Login {
                    reason: format!(
                        "environment variable {} (seal.pkcs11.pin_env) is not set",
                        p.pin_env
                    ),
                })?;
                let provider = Pkcs11KeyProvider::open(Pkcs11Config {
                    module: p.module.clone(),
                    token_label: p.token_label.clone(),
                    pin: SecretString::new(pin),
                })?;
                Ok(Arc::new(provider))
            };
            Ok(SealBackend::Hsm {
                open: Arc::new(open),
                key_label,
            })
        }
    }
}

/// Opens storage, loads the seal, binds both listeners and starts serving.
/// An HSM-sealed node starts unsealing itself in the background.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    // tonic builds its TLS config from the process default provider.
    let _ = rustls::crypto::CryptoProvider::install_default(
        rustls::crypto::aws_lc_rs::default_provider(),
    );
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;

    let http_listener = TcpListener::bind(&config.listener.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on listener.http_addr {}",
                config.listener.http_addr
            )
        })?;
    let grpc_listener = TcpListener::bind(&config.listener.grpc_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on listener.grpc_addr {}",
                config.listener.grpc_addr
            )
        })?;
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;
    let tls = config.tls_enabled();
    let scheme = if tls { "https" } else { "http" };
    let api_addr = format!("{scheme}://{http_addr}");

    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // The cell: Raft over the mutual-TLS cluster port. The barrier's storage
    // is the replicated state.
    let (cluster, incoming) = start_cluster(config, &api_addr, rx.clone(), &mut tasks).await?;
    let storage: Arc<dyn Storage> = Arc::new(ReplicatedStorage::new(cluster.cell.clone()));
    let barrier = Barrier::new(storage, BarrierConfig::default());
    let backend = seal_backend(config)?;
    let seal = SealManager::open(barrier, backend, config.cluster_name.clone())
        .context("cannot load the seal")?;
    let node = Node::with_settings(
        seal,
        api_addr,
        Some(cluster.cell.clone()),
        config.leases.settings(),
        sigil_control_plane::CellId::new(config.cell.id.clone())
            .context("[cell] id cannot name a control-plane cell")?,
        cluster.peers.list(),
    );
    let mesh = crate::mesh::start(
        &node,
        config,
        &cluster.pki,
        &cluster.peers,
        &cluster.cell.node().cluster_addr,
        rx.clone(),
        &mut tasks,
    )
    .await?;
    serve_cluster(
        &cluster,
        incoming,
        &node,
        mesh.map(|(_, server)| server),
        rx.clone(),
        &mut tasks,
    );
    crate::federation::spawn(
        node.clone(),
        &cluster.pki.node,
        &cluster.peers,
        config,
        rx.clone(),
        &mut tasks,
    )?;
    cluster
        .service
        .set_forward_handler(Arc::new(NodeForwarder(node.clone())));
    {
        // Seal material, mounts, policies and audit devices changed by
        // other nodes of the cell.
        let node = node.clone();
        let mut changes = cluster.cell.state_machine().changes();
        let mut restores = cluster.cell.state_machine().restores();
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    restored = restores.changed() => {
                        if restored.is_err() {
                            return;
                        }
                        changes.mark_unchanged();
                        node.on_restored().await;
                    }
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        node.on_replicated_change().await;
                    }
                    _ = async { let _ = rx.wait_for(|s| *s).await; } => return,
                }
            }
        }));
    }
    let max_body = config.listener.max_request_size;
    let router = crate::http::router(node.clone(), max_body);

    let tls_config = match (
        &config.listener.tls_cert_file,
        &config.listener.tls_key_file,
    ) {
        (Some(c), Some(k)) => Some(crate::tls::server_config(c, k).map_err(anyhow::Error::msg)?),
        _ => None,
    };

    // HTTP
    match tls_config.clone() {
        None => {
            let mut rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                let svc = router.into_make_service_with_connect_info::<SocketAddr>();
                let served = axum::serve(http_listener, svc)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "http server failed");
                }
            }));
        }
        Some(tls) => {
            tasks.push(tokio::spawn(serve_https(
                http_listener,
                router,
                tls,
                rx.clone(),
            )));
        }
    }

    // gRPC
    {
        let mut rx = rx.clone();
        let mut builder = tonic::transport::Server::builder();
        if let (Some(c), Some(k)) = (
            &config.listener.tls_cert_file,
            &config.listener.tls_key_file,
        ) {
            let cert = std::fs::read(c).with_context(|| format!("cannot read {}", c.display()))?;
            let key = std::fs::read(k).with_context(|| format!("cannot read {}", k.display()))?;
            builder = builder
                .tls_config(
                    tonic::transport::ServerTlsConfig::new()
                        .identity(tonic::transport::Identity::from_pem(cert, key)),
                )
                .context("grpc tls")?;
        }
        let svc = crate::grpc::SysService::new(node.clone()).into_server(max_body);
        let (logical_svc, kv_svc) =
            crate::grpc::LogicalService::new(node.clone()).into_servers(max_body);
        let revocations_svc = crate::grpc::RevocationsService::new(node.clone()).into_server();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
        tasks.push(tokio::spawn(async move {
            let served = builder
                .add_service(svc)
                .add_service(logical_svc)
                .add_service(kv_svc)
                .add_service(revocations_svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "grpc server failed");
            }
        }));
    }

    // HSM auto-unseal
    {
        let node = node.clone();
        let mut rx = rx.clone();
        let retry = Duration::from_secs(config.seal.auto_unseal_retry_secs);
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = node.auto_unseal_loop(retry) => {}
                _ = rx.wait_for(|s| *s) => {}
            }
        }));
    }

    // Expired-token sweeper: keeps the token store from growing without bound.
    {
        let node = node.clone();
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = node.token_sweep_loop(Duration::from_secs(60)) => {}
                _ = rx.wait_for(|s| *s) => {}
            }
        }));
    }

    // Expiration manager: revokes due leases on the leader.
    {
        let node = node.clone();
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = node.lease_loop() => {}
                _ = rx.wait_for(|s| *s) => {}
            }
        }));
    }

    tracing::info!(http = %http_addr, grpc = %grpc_addr, cluster = %cluster.cell.node().cluster_addr, tls, node_id = %config.node_id, cell = %config.cell.id, "sigil node listening");
    Ok(Running {
        node,
        http_addr,
        grpc_addr,
        tls,
        shutdown,
        tasks,
    })
}

/// The node's Raft, its cluster service, its certificates and federated
/// peers. The cluster port is served once the node exists
/// ([`serve_cluster`]).
struct Cluster {
    cell: RaftCell,
    service: ClusterService,
    pki: ClusterTls,
    peers: crate::federation::Peers,
}

/// Serves the cluster port: Raft and forwarding for this cell's nodes,
/// control-plane sync for federated peer cells, and the revocation mesh
/// for both.
fn serve_cluster(
    cluster: &Cluster,
    incoming: crate::cluster_pki::ClusterIncoming,
    node: &Arc<Node>,
    mesh: Option<sigil_proto::mesh::v1::mesh_server::MeshServer<sigil_gossip::mesh::MeshService>>,
    rx: watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) {
    let raft = cluster
        .service
        .clone()
        .into_server_for(cluster.pki.cell.clone());
    let federation = crate::federation::service(node.control().clone(), rx.clone());
    let mut rx = rx;
    tasks.push(tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(raft)
            .add_service(federation)
            .add_optional_service(mesh)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "cluster server failed");
        }
    }));
}

async fn start_cluster(
    config: &Config,
    api_addr: &str,
    rx: watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<(Cluster, crate::cluster_pki::ClusterIncoming)> {
    let listener = TcpListener::bind(&config.raft.cluster_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on raft.cluster_addr {}",
                config.raft.cluster_addr
            )
        })?;
    let bound = listener.local_addr()?;
    let cluster_addr = config
        .raft
        .advertise_addr
        .clone()
        .unwrap_or_else(|| bound.to_string());
    let source = match (
        &config.raft.tls_ca_file,
        &config.raft.tls_cert_file,
        &config.raft.tls_key_file,
    ) {
        (Some(ca), Some(cert), Some(key)) => TlsSource::Files {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => TlsSource::Generated {
            dir: config.data_dir.join(crate::raft::tls::GENERATED_DIR),
            hosts: vec![bound.ip().to_string(), "localhost".into()],
        },
    };
    let pki = ClusterTls::load(&source, &config.cell.id, &config.node_id).context("cluster tls")?;
    let peers = crate::federation::Peers::load(config)?;
    let server_tls =
        crate::cluster_pki::federated_server_config(&pki.ca, &pki.node, &pki.cell, &peers.cas()?)
            .context("cluster tls")?;
    let connector = pki.connector().context("cluster tls")?;
    let r = &config.raft;
    let mut settings = RaftSettings::new(&config.node_id, &cluster_addr, api_addr);
    settings.heartbeat = Duration::from_millis(r.heartbeat_ms);
    settings.election_timeout = (
        Duration::from_millis(r.election_timeout_ms),
        Duration::from_millis(r.election_timeout_ms * 2),
    );
    settings.snapshot_every = r.snapshot_every;
    settings.max_staleness = Duration::from_millis(r.max_staleness_ms);
    settings.write_timeout = Duration::from_millis(r.write_timeout_ms);
    settings.dial_overrides = r.dial_overrides.clone();
    settings.read_cache_bytes = config.cache_size_mb << 20;
    let cell = RaftCell::open(&config.data_dir, settings, connector)
        .await
        .context("cannot start raft")?;
    let service = ClusterService::new(cell.clone());
    let incoming = crate::cluster_pki::ClusterIncoming::new(listener, server_tls);
    if !config.raft.retry_join.is_empty() {
        let cell = cell.clone();
        let addrs = config.raft.retry_join.clone();
        tasks.push(tokio::spawn(async move { cell.join(&addrs, rx).await }));
    } else if config.raft.bootstrap {
        if cell.found().await? {
            tracing::info!(cell = %config.cell.id, "founded a new cell");
        }
    } else if !cell.is_member() {
        tracing::info!(
            "waiting to be joined to a cell (sys/storage/raft/join) or initialised (sys/init)"
        );
    }
    Ok((
        Cluster {
            cell,
            service,
            pki,
            peers,
        },
        incoming,
    ))
}

/// Hands requests forwarded by followers to this node's pipeline.
struct NodeForwarder(Arc<Node>);

impl ForwardHandler for NodeForwarder {
    fn forward(
        &self,
        request: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = (Vec<u8>, u64)> + Send + '_>> {
        Box::pin(async move { self.0.handle_forwarded(&request).await })
    }
}

async fn serve_https(
    listener: TcpListener,
    router: axum::Router,
    tls: Arc<rustls::ServerConfig>,
    mut rx: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = rx.wait_for(|s| *s) => return,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "tls handshake failed");
                    return;
                }
            };
            let svc = tower::ServiceExt::map_request(
                router,
                move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req
                },
            );
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            if let Err(e) =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), svc)
                    .await
            {
                tracing::debug!(peer = %peer, error = %e, "https connection ended with an error");
            }
        });
    }
}
