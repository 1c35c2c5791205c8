//! The `sigil server` configuration file (TOML).
//!
//! ```toml
//! node_id = "node-1"
//! data_dir = "/var/lib/sigil"
//! [listener]
//! http_addr = "127.0.0.1:8200"
//! grpc_addr = "127.0.0.1:8201"
//! # tls_cert_file = "..."; tls_key_file = "..."
//! [cell]
//! id = "eu-west"             # the cell (region) this node belongs to
//! # region = "eu-west"       # shown in the cell registry; the id when unset
//! [raft]
//! cluster_addr = "127.0.0.1:8202"          # Raft, forwarding and federation, mutual TLS
//! retry_join = ["10.0.1.11:8202"]          # empty: found a new cell
//! # bootstrap = false: with no retry_join, wait to be joined
//! # (`sys/storage/raft/join`) or to found a cell at `sys/init`
//! # tls_ca_file / tls_cert_file / tls_key_file: the cell CA and this node's
//! # certificate; generated under data_dir/cluster-tls when unset
//! [federation]                # the cells whose control planes this cell shares
//! # sync_interval_ms = 2000   # how often a digest goes to each peer
//! # [[federation.peers]] cell = "us-east", addrs = ["10.2.0.11:8202"], ca_file = "/etc/sigil/us-east-ca.pem"
//! [gossip]                    # the revocation mesh, on the cluster port
//! # enabled = true; tick_ms = 20; anti_entropy_ms = 1000; membership_interval_ms = 500
//! # fanout_local = 2; fanout_remote = 2; retransmit_mult = 2
//! # [[gossip.seeds]] cell = "us-east", addr = "10.2.0.12:8202"   # besides retry_join and federation peers
//! [seal]
//! type = "shamir"            # or "pkcs11"
//! # [seal.pkcs11] module = "/usr/lib/softhsm/libsofthsm2.so", token_label = "sigil", pin_env = "SIGIL_HSM_PIN", key_label = "sigil-root-wrap"
//! ```
//!
//! Unknown keys are errors, so a typo cannot silently fall back to a default.
//! Every error names the key and the problem.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node_id: String,
    pub data_dir: PathBuf,
    /// Shown in health and seal-status; generated at init when unset.
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Skip `mlockall` (for hosts without CAP_IPC_LOCK). Keys may then be
    /// swapped to disk; use encrypted swap or none.
    #[serde(default)]
    pub disable_mlock: bool,
    /// MiB of state entries (ciphertext) kept in memory in front of RocksDB
    /// for reads; 0 turns the cache off (Vault's `cache_size` and
    /// `disable_cache`, bounded by bytes rather than entries).
    #[serde(default = "default_cache_size_mb")]
    pub cache_size_mb: u64,
    #[serde(default)]
    pub listener: ListenerConfig,
    #[serde(default)]
    pub cell: CellConfig,
    #[serde(default)]
    pub raft: RaftConfig,
    #[serde(default)]
    pub federation: FederationConfig,
    #[serde(default)]
    pub gossip: GossipConfig,
    #[serde(default)]
    pub seal: SealConfig,
    #[serde(default)]
    pub leases: LeasesConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(default = "default_http")]
    pub http_addr: String,
    #[serde(default = "default_grpc")]
    pub grpc_addr: String,
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Largest accepted request body, bytes (Vault's default: 32 MiB).
    #[serde(default = "default_max_body")]
    pub max_request_size: usize,
}

fn default_cache_size_mb() -> u64 {
    crate::raft::read_cache::DEFAULT_CACHE_BYTES >> 20
}

/// The largest `cache_size_mb` accepted: 1 TiB, far beyond any sane cache,
/// but small enough that the byte count cannot overflow.
const MAX_CACHE_SIZE_MB: u64 = 1 << 20;

fn default_http() -> String {
    "127.0.0.1:8200".into()
}
fn default_grpc() -> String {
    "127.0.0.1:8201".into()
}
fn default_max_body() -> usize {
    32 << 20
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            http_addr: default_http(),
            grpc_addr: default_grpc(),
            tls_cert_file: None,
            tls_key_file: None,
            max_request_size: default_max_body(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellConfig {
    /// The cell's id: a DNS label, carried in every node certificate.
    #[serde(default = "default_cell")]
    pub id: String,
    /// The region the cell serves, for the cell registry; the id when unset.
    #[serde(default)]
    pub region: Option<String>,
}

fn default_cell() -> String {
    "dev".into()
}

impl Default for CellConfig {
    fn default() -> Self {
        Self {
            id: default_cell(),
            region: None,
        }
    }
}

impl CellConfig {
    pub fn region(&self) -> &str {
        self.region.as_deref().unwrap_or(&self.id)
    }
}

/// The `[federation]` section: the other cells whose control planes this
/// cell shares (docs/architecture.md, "The control plane"). Each peer is
/// trusted through its own cell CA: a node of cell `us-east` must present a
/// certificate that `us-east`'s CA (and no other) issued, naming `us-east`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// How often this cell's leader sends each peer its digest (lag reports
    /// and repair); new ops are pushed as they commit, not on this timer.
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    #[serde(default)]
    pub peers: Vec<FederationPeer>,
}

fn default_sync_interval_ms() -> u64 {
    2_000
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            sync_interval_ms: default_sync_interval_ms(),
            peers: Vec::new(),
        }
    }
}

/// The `[gossip]` section: the revocation mesh every node of every cell
/// joins on its cluster port (docs/architecture.md, "The revocation mesh").
/// Seeds are this cell's `raft.retry_join`, every federation peer's
/// `addrs`, the cell registry's cluster addresses once known, and `seeds`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipConfig {
    /// Off: revocations reach other nodes through the control plane only
    /// (replication in the cell, sync between cells).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How often rumour batches go out.
    #[serde(default = "default_gossip_tick_ms")]
    pub tick_ms: u64,
    /// How often a node compares digests with a peer that differs.
    #[serde(default = "default_anti_entropy_ms")]
    pub anti_entropy_ms: u64,
    /// Membership's gossip interval (liveness, node state).
    #[serde(default = "default_membership_interval_ms")]
    pub membership_interval_ms: u64,
    /// Peers of this node's cell sent each rumour batch per tick.
    #[serde(default = "default_fanout")]
    pub fanout_local: usize,
    /// Peers of other cells sent each rumour batch per tick.
    #[serde(default = "default_fanout")]
    pub fanout_remote: usize,
    /// Ticks a rumour is sent for: this times ⌈log10(members)⌉.
    #[serde(default = "default_retransmit_mult")]
    pub retransmit_mult: u32,
    /// More nodes to join the mesh through.
    #[serde(default)]
    pub seeds: Vec<GossipSeed>,
    /// Advertised cluster address → address actually dialled, for nodes of
    /// any cell (`raft.dial_overrides` applies too, after these).
    #[serde(default)]
    pub dial_overrides: std::collections::BTreeMap<String, String>,
}

fn default_gossip_tick_ms() -> u64 {
    20
}
fn default_anti_entropy_ms() -> u64 {
    1_000
}
fn default_membership_interval_ms() -> u64 {
    500
}
fn default_fanout() -> usize {
    2
}
fn default_retransmit_mult() -> u32 {
    2
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_ms: default_gossip_tick_ms(),
            anti_entropy_ms: default_anti_entropy_ms(),
            membership_interval_ms: default_membership_interval_ms(),
            fanout_local: default_fanout(),
            fanout_remote: default_fanout(),
            retransmit_mult: default_retransmit_mult(),
            seeds: Vec::new(),
            dial_overrides: Default::default(),
        }
    }
}

/// A node to join the mesh through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipSeed {
    /// Its cell (this node's own, or a federation peer's).
    pub cell: String,
    /// Its cluster address (IP:PORT).
    pub addr: String,
}

/// One peer cell.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationPeer {
    /// The peer's cell id, as its node certificates name it.
    pub cell: String,
    /// Cluster-port addresses of the peer's nodes (IP:PORT); any of them serves.
    pub addrs: Vec<String>,
    /// The peer cell's CA certificate (PEM).
    pub ca_file: PathBuf,
}

/// The `[raft]` section: how this node replicates with the rest of its cell.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftConfig {
    /// Where the cluster port listens (Raft RPCs, forwarding; mutual TLS).
    /// The default, an ephemeral loopback port, suits a one-node cell.
    #[serde(default = "default_cluster")]
    pub cluster_addr: String,
    /// The address other nodes dial, when it differs from `cluster_addr`
    /// (a wildcard bind, NAT).
    #[serde(default)]
    pub advertise_addr: Option<String>,
    /// Cluster addresses of existing members to join through. Empty: this
    /// node founds a new cell the first time it starts.
    #[serde(default)]
    pub retry_join: Vec<String>,
    /// With no `retry_join`: found a new cell at start (the default), or,
    /// when false, wait until an operator joins this node to a cell
    /// (`sys/storage/raft/join`) or initialises it (`sys/init` then founds a
    /// one-node cell), as a Vault node on integrated storage does.
    #[serde(default = "default_true")]
    pub bootstrap: bool,
    /// Dial another address than a peer advertises: `{ "advertised:port" =
    /// "actual:port" }`. For networks where a peer is reached through a
    /// relay, and for fault-injection tests that put a proxy on every link.
    #[serde(default)]
    pub dial_overrides: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// Minimum election timeout; the maximum is twice this.
    #[serde(default = "default_election")]
    pub election_timeout_ms: u64,
    /// Log entries between snapshots.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// How stale a `bounded` read served by a follower may be.
    #[serde(default = "default_staleness")]
    pub max_staleness_ms: u64,
    /// How long a write waits for a leader before failing with 503.
    #[serde(default = "default_write_timeout")]
    pub write_timeout_ms: u64,
}

fn default_true() -> bool {
    true
}

fn default_cluster() -> String {
    "127.0.0.1:0".into()
}
// openraft gives each AppendEntries one heartbeat interval to complete
// (a follower's fsync included), so the interval is not set lower.
fn default_heartbeat() -> u64 {
    100
}
fn default_election() -> u64 {
    1000
}
fn default_snapshot_every() -> u64 {
    20_000
}
fn default_staleness() -> u64 {
    250
}
fn default_write_timeout() -> u64 {
    5_000
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            cluster_addr: default_cluster(),
            advertise_addr: None,
            retry_join: Vec::new(),
            bootstrap: true,
            dial_overrides: Default::default(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            heartbeat_ms: default_heartbeat(),
            election_timeout_ms: default_election(),
            snapshot_every: default_snapshot_every(),
            max_staleness_ms: default_staleness(),
            write_timeout_ms: default_write_timeout(),
        }
    }
}

/// The expiration manager (`[leases]`); see docs/architecture.md, "Leases".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeasesConfig {
    /// How often the leader looks for due leases, at most.
    #[serde(default = "default_lease_tick")]
    pub tick_ms: u64,
    /// Due leases revoked per round.
    #[serde(default = "default_lease_batch")]
    pub batch: usize,
    /// Engine revocation calls (one lease, or a batch) in flight at once.
    #[serde(default = "default_lease_concurrency")]
    pub concurrency: usize,
    /// How long one engine revocation call (one lease, or a batch of up to
    /// [`crate::engine::REVOKE_BATCH`]) may take.
    #[serde(default = "default_revoke_timeout")]
    pub revoke_timeout_ms: u64,
    /// Delay after the first failed revocation; it doubles with each
    /// further failure, up to `revoke_retry_max_ms`.
    #[serde(default = "default_retry_base")]
    pub revoke_retry_base_ms: u64,
    #[serde(default = "default_retry_max")]
    pub revoke_retry_max_ms: u64,
    /// Failed attempts before a lease is marked irrevocable.
    #[serde(default = "default_max_attempts")]
    pub revoke_max_attempts: u32,
}

fn default_lease_tick() -> u64 {
    1_000
}
fn default_lease_batch() -> usize {
    512
}
fn default_lease_concurrency() -> usize {
    16
}
fn default_revoke_timeout() -> u64 {
    30_000
}
fn default_retry_base() -> u64 {
    10_000
}
fn default_retry_max() -> u64 {
    600_000
}
fn default_max_attempts() -> u32 {
    6
}

impl Default for LeasesConfig {
    fn default() -> Self {
        Self {
            tick_ms: default_lease_tick(),
            batch: default_lease_batch(),
            concurrency: default_lease_concurrency(),
            revoke_timeout_ms: default_revoke_timeout(),
            revoke_retry_base_ms: default_retry_base(),
            revoke_retry_max_ms: default_retry_max(),
            revoke_max_attempts: default_max_attempts(),
        }
    }
}

impl LeasesConfig {
    pub fn settings(&self) -> crate::lease::LeaseSettings {
        use std::time::Duration;
        crate::lease::LeaseSettings {
            tick: Duration::from_millis(self.tick_ms),
            batch: self.batch,
            concurrency: self.concurrency,
            revoke_timeout: Duration::from_millis(self.revoke_timeout_ms),
            retry: crate::lease::RetryPolicy {
                base: Duration::from_millis(self.revoke_retry_base_ms),
                max_delay: Duration::from_millis(self.revoke_retry_max_ms),
                max_attempts: self.revoke_max_attempts,
            },
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.tick_ms == 0 || self.tick_ms > 60_000 {
            return Err(invalid("leases.tick_ms", "must be between 1 and 60000"));
        }
        if !(1..=100_000).contains(&self.batch) {
            return Err(invalid("leases.batch", "must be between 1 and 100000"));
        }
        if !(1..=1024).contains(&self.concurrency) {
            return Err(invalid("leases.concurrency", "must be between 1 and 1024"));
        }
        if self.revoke_timeout_ms == 0 {
            return Err(invalid(
                "leases.revoke_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.revoke_retry_base_ms == 0 || self.revoke_retry_max_ms < self.revoke_retry_base_ms {
            return Err(invalid(
                "leases.revoke_retry_base_ms",
                "must be greater than 0 and at most revoke_retry_max_ms",
            ));
        }
        if self.revoke_max_attempts == 0 {
            return Err(invalid("leases.revoke_max_attempts", "must be at least 1"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SealKind {
    #[default]
    Shamir,
    Pkcs11,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    #[serde(rename = "type", default)]
    pub kind: SealKind,
    #[serde(default)]
    pub pkcs11: Option<Pkcs11Config>,
    /// Seconds between auto-unseal attempts while the HSM is unavailable.
    #[serde(default = "default_retry")]
    pub auto_unseal_retry_secs: u64,
}

fn default_retry() -> u64 {
    10
}

impl Default for SealConfig {
    fn default() -> Self {
        Self {
            kind: SealKind::default(),
            pkcs11: None,
            auto_unseal_retry_secs: default_retry(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    pub token_label: String,
    /// Name of the environment variable holding the user PIN. The PIN itself
    /// never appears in the file.
    #[serde(default = "default_pin_env")]
    pub pin_env: String,
    #[serde(default = "default_key_label")]
    pub key_label: String,
}

fn default_pin_env() -> String {
    "SIGIL_HSM_PIN".into()
}
fn default_key_label() -> String {
    "sigil-root-wrap".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint (e.g. `http://127.0.0.1:4317`); spans are exported
    /// when set.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    #[serde(default)]
    pub service_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `sigil_cell=debug`.
    #[serde(default = "default_level")]
    pub level: String,
    #[serde(default)]
    pub json: bool,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_level(),
            json: false,
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { reason, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            reason: e.message().to_owned() + &span_hint(text, e.span()),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id.trim().is_empty() {
            return Err(invalid("node_id", "must not be empty"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.cache_size_mb > MAX_CACHE_SIZE_MB {
            return Err(invalid(
                "cache_size_mb",
                format!(
                    "{} is over the limit of {MAX_CACHE_SIZE_MB}",
                    self.cache_size_mb
                ),
            ));
        }
        self.leases.validate()?;
        crate::cluster_pki::NodeId::new(self.node_id.clone())
            .map_err(|e| invalid("node_id", e.to_string()))?;
        crate::cluster_pki::CellId::new(self.cell.id.clone())
            .map_err(|e| invalid("cell.id", e.to_string()))?;
        parse_addr("raft.cluster_addr", &self.raft.cluster_addr)?;
        if let Some(a) = &self.raft.advertise_addr {
            parse_addr("raft.advertise_addr", a)?;
        }
        for a in &self.raft.retry_join {
            parse_addr("raft.retry_join", a)?;
        }
        for (from, to) in &self.raft.dial_overrides {
            parse_addr("raft.dial_overrides", from)?;
            parse_addr("raft.dial_overrides", to)?;
        }
        let tls = [
            &self.raft.tls_ca_file,
            &self.raft.tls_cert_file,
            &self.raft.tls_key_file,
        ];
        if tls.iter().any(|f| f.is_some()) && !tls.iter().all(|f| f.is_some()) {
            return Err(invalid(
                "raft.tls_ca_file",
                "set tls_ca_file, tls_cert_file and tls_key_file together",
            ));
        }
        if !self.raft.retry_join.is_empty() && self.raft.tls_ca_file.is_none() {
            return Err(invalid(
                "raft.tls_ca_file",
                "a node joining a cell needs the cell's CA and a certificate it issued",
            ));
        }
        if self.raft.heartbeat_ms == 0 || self.raft.election_timeout_ms < 3 * self.raft.heartbeat_ms
        {
            return Err(invalid(
                "raft.election_timeout_ms",
                "must be at least three heartbeats (raft.heartbeat_ms > 0)",
            ));
        }
        if self.raft.snapshot_every == 0 || self.raft.write_timeout_ms == 0 {
            return Err(invalid(
                "raft.snapshot_every",
                "snapshot_every and write_timeout_ms must be greater than 0",
            ));
        }
        let http = parse_addr("listener.http_addr", &self.listener.http_addr)?;
        let grpc = parse_addr("listener.grpc_addr", &self.listener.grpc_addr)?;
        if http == grpc && http.port() != 0 {
            return Err(invalid(
                "listener.grpc_addr",
                "must differ from listener.http_addr",
            ));
        }
        match (&self.listener.tls_cert_file, &self.listener.tls_key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "listener.tls_key_file",
                    "required with tls_cert_file",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "listener.tls_cert_file",
                    "required with tls_key_file",
                ));
            }
            (None, None) => {
                for (key, addr) in [("listener.http_addr", http), ("listener.grpc_addr", grpc)] {
                    if !addr.ip().is_loopback() {
                        return Err(invalid(
                            key,
                            format!(
                                "{addr} is not a loopback address: set listener.tls_cert_file and listener.tls_key_file to serve it (plain text is allowed on loopback only)"
                            ),
                        ));
                    }
                }
            }
            (Some(_), Some(_)) => {}
        }
        if self.listener.max_request_size == 0 {
            return Err(invalid(
                "listener.max_request_size",
                "must be greater than 0",
            ));
        }
        match (self.seal.kind, &self.seal.pkcs11) {
            (SealKind::Pkcs11, None) => {
                return Err(invalid(
                    "seal.pkcs11",
                    "required when seal.type = \"pkcs11\"",
                ));
            }
            (SealKind::Pkcs11, Some(p)) => {
                if p.token_label.is_empty() {
                    return Err(invalid("seal.pkcs11.token_label", "must not be empty"));
                }
                if p.pin_env.is_empty() {
                    return Err(invalid(
                        "seal.pkcs11.pin_env",
                        "must name an environment variable",
                    ));
                }
                sigil_hsm::KeyLabel::new(&p.key_label)
                    .map_err(|e| invalid("seal.pkcs11.key_label", e.to_string()))?;
            }
            (SealKind::Shamir, Some(_)) => {
                return Err(invalid(
                    "seal.pkcs11",
                    "set only with seal.type = \"pkcs11\"",
                ));
            }
            (SealKind::Shamir, None) => {}
        }
        self.validate_federation()?;
        self.validate_gossip()?;
        if self.seal.auto_unseal_retry_secs == 0 {
            return Err(invalid("seal.auto_unseal_retry_secs", "must be at least 1"));
        }
        if let Some(ep) = &self.telemetry.otlp_endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", e.to_string()))?;
        Ok(())
    }

    fn validate_gossip(&self) -> Result<(), ConfigError> {
        let g = &self.gossip;
        if !(1..=1_000).contains(&g.tick_ms) {
            return Err(invalid("gossip.tick_ms", "must be between 1 and 1000"));
        }
        if !(10..=600_000).contains(&g.anti_entropy_ms) {
            return Err(invalid(
                "gossip.anti_entropy_ms",
                "must be between 10 and 600000",
            ));
        }
        if !(10..=60_000).contains(&g.membership_interval_ms) {
            return Err(invalid(
                "gossip.membership_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        if g.fanout_local > 64 || g.fanout_remote > 64 || g.fanout_local + g.fanout_remote == 0 {
            return Err(invalid(
                "gossip.fanout_local",
                "fanout_local and fanout_remote must be at most 64 each, and not both 0",
            ));
        }
        if !(1..=16).contains(&g.retransmit_mult) {
            return Err(invalid(
                "gossip.retransmit_mult",
                "must be between 1 and 16",
            ));
        }
        for seed in &g.seeds {
            parse_addr("gossip.seeds.addr", &seed.addr)?;
            let known = seed.cell == self.cell.id
                || self.federation.peers.iter().any(|p| p.cell == seed.cell);
            if !known {
                return Err(invalid(
                    "gossip.seeds.cell",
                    format!(
                        "{:?} is neither this node's cell nor a federation peer",
                        seed.cell
                    ),
                ));
            }
        }
        for (from, to) in &g.dial_overrides {
            parse_addr("gossip.dial_overrides", from)?;
            parse_addr("gossip.dial_overrides", to)?;
        }
        Ok(())
    }

    fn validate_federation(&self) -> Result<(), ConfigError> {
        let f = &self.federation;
        if f.sync_interval_ms < 100 {
            return Err(invalid(
                "federation.sync_interval_ms",
                "must be at least 100",
            ));
        }
        if let Some(r) = &self.cell.region
            && (r.is_empty() || r.len() > 128)
        {
            return Err(invalid("cell.region", "must be 1 to 128 bytes long"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &f.peers {
            let cell = crate::cluster_pki::CellId::new(p.cell.clone())
                .map_err(|e| invalid("federation.peers.cell", e.to_string()))?;
            if cell.as_str() == self.cell.id {
                return Err(invalid(
                    "federation.peers.cell",
                    format!("{cell} is this node's own cell"),
                ));
            }
            if !seen.insert(p.cell.clone()) {
                return Err(invalid(
                    "federation.peers.cell",
                    format!("{cell} is listed twice"),
                ));
            }
            if p.addrs.is_empty() {
                return Err(invalid(
                    "federation.peers.addrs",
                    format!("cell {cell} has no addresses"),
                ));
            }
            for a in &p.addrs {
                parse_addr("federation.peers.addrs", a)?;
            }
        }
        Ok(())
    }

    pub fn http_addr(&self) -> SocketAddr {
        // Validated in `validate`.
        self.listener
            .http_addr
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8200)))
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.listener
            .grpc_addr
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8201)))
    }

    pub fn tls_enabled(&self) -> bool {
        self.listener.tls_cert_file.is_some()
    }
}

fn parse_addr(key: &'static str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|_| invalid(key, format!("{v:?} is not an address of the form IP:PORT")))
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) => {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "node_id = \"n1\"\ndata_dir = \"/tmp/x\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.listener.http_addr, "127.0.0.1:8200");
        assert_eq!(c.seal.kind, SealKind::Shamir);
        assert_eq!(c.listener.max_request_size, 32 << 20);
        assert!(!c.disable_mlock);
        assert_eq!(c.cache_size_mb, 64);
        let off = Config::parse(&format!("cache_size_mb = 0\n{MINIMAL}")).expect("valid");
        assert_eq!(off.cache_size_mb, 0);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("data_dir = \"/x\"\n", "node_id"),
            ("node_id = \"\"\ndata_dir = \"/x\"\n", "node_id"),
            (
                &format!("{MINIMAL}[listener]\nhttp_addr = \"nope\"\n"),
                "listener.http_addr",
            ),
            (
                &format!("{MINIMAL}[listener]\nhttp_addr = \"0.0.0.0:8200\"\n"),
                "listener.http_addr",
            ),
            (
                &format!("{MINIMAL}[seal]\ntype = \"pkcs11\"\n"),
                "seal.pkcs11",
            ),
            (&format!("{MINIMAL}[seal]\ntype = \"awskms\"\n"), "awskms"),
            (&format!("{MINIMAL}typo_key = 1\n"), "typo_key"),
            (
                &format!("cache_size_mb = 99999999999\n{MINIMAL}"),
                "cache_size_mb",
            ),
            (&format!("cache_size_mb = -1\n{MINIMAL}"), "line 1"),
            (
                &format!("{MINIMAL}[listener]\ntls_cert_file = \"/c\"\n"),
                "listener.tls_key_file",
            ),
            (
                &format!("{MINIMAL}[telemetry]\notlp_endpoint = \"localhost:4317\"\n"),
                "telemetry.otlp_endpoint",
            ),
            (
                &format!(
                    "{MINIMAL}[seal]\ntype = \"pkcs11\"\n[seal.pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\nkey_label = \"\"\n"
                ),
                "seal.pkcs11.key_label",
            ),
        ];
        for (text, needle) in cases {
            let err = Config::parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn gossip_defaults_and_bad_values() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert!(c.gossip.enabled);
        assert_eq!((c.gossip.tick_ms, c.gossip.anti_entropy_ms), (20, 1_000));
        let ok = Config::parse(&format!(
            "{MINIMAL}[cell]\nid = \"eu-west\"\n[gossip]\ntick_ms = 50\n[[gossip.seeds]]\ncell = \"eu-west\"\naddr = \"127.0.0.1:8202\"\n"
        ))
        .expect("valid");
        assert_eq!(ok.gossip.seeds.len(), 1);
        for (body, needle) in [
            ("tick_ms = 0\n", "gossip.tick_ms"),
            ("anti_entropy_ms = 1\n", "gossip.anti_entropy_ms"),
            (
                "membership_interval_ms = 0\n",
                "gossip.membership_interval_ms",
            ),
            (
                "fanout_local = 0\nfanout_remote = 0\n",
                "gossip.fanout_local",
            ),
            ("retransmit_mult = 0\n", "gossip.retransmit_mult"),
            (
                "dial_overrides = { \"a\" = \"127.0.0.1:1\" }\n",
                "gossip.dial_overrides",
            ),
            (
                "[[gossip.seeds]]\ncell = \"mars\"\naddr = \"127.0.0.1:1\"\n",
                "gossip.seeds.cell",
            ),
            (
                "[[gossip.seeds]]\ncell = \"eu-west\"\naddr = \"nope\"\n",
                "gossip.seeds.addr",
            ),
            ("colour = 1\n", "colour"),
        ] {
            let text = format!("{MINIMAL}[cell]\nid = \"eu-west\"\n[gossip]\n{body}");
            let err = Config::parse(&text).expect_err(&text).to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn tls_allows_non_loopback() {
        let text = format!(
            "{MINIMAL}[listener]\nhttp_addr = \"0.0.0.0:8200\"\ngrpc_addr = \"0.0.0.0:8201\"\ntls_cert_file = \"/c\"\ntls_key_file = \"/k\"\n"
        );
        assert!(Config::parse(&text).expect("valid").tls_enabled());
    }

    #[test]
    fn pkcs11_section_parses_with_defaults() {
        let text = format!(
            "{MINIMAL}[seal]\ntype = \"pkcs11\"\n[seal.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"sigil\"\n"
        );
        let c = Config::parse(&text).expect("valid");
        let p = c.seal.pkcs11.expect("pkcs11");
        assert_eq!(p.pin_env, "SIGIL_HSM_PIN");
        assert_eq!(p.key_label, "sigil-root-wrap");
    }
}
