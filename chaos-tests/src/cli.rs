//! The `sigil-chaos` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::Error;
use crate::bench::{self, BenchConfig, Endpoints, Progress, Transport, Workload};
use crate::token::Token;

/// Sigil's harness: measures Sigil (and will break it) from the outside.
#[derive(Debug, Parser)]
#[command(name = "sigil-chaos", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load generator: closed-loop clients against a Sigil node (and/or the
    /// bare handlers), reporting ops/s and latency percentiles per level;
    /// `bench leases` runs the lease and identity suite instead.
    Bench(Box<BenchArgs>),
    /// Fault injection: a real three-node cell behind proxies, broken on
    /// purpose, checked by invariant checkers (exit 1 if a check fails).
    Scenario(ScenarioArgs),
    /// Deterministic simulation of the real code on a simulated network
    /// (same seed, same run; exit 1 if a check fails).
    Simulate {
        #[command(subcommand)]
        what: Simulation,
    },
    /// Fill a one-node cell, SIGKILL it, and time its restart to serving.
    Restart(RestartArgs),
    /// Check a saved client history (`history.json`) for linearizability.
    CheckHistory {
        /// The history file a scenario wrote.
        file: PathBuf,
    },
}

/// What `simulate` runs.
#[derive(Debug, Subcommand)]
pub enum Simulation {
    /// A federation's control plane: replicas and sync under partitions,
    /// delays and crashes, then a final heal; every replica must end
    /// identical.
    ControlPlane(SimulateControlPlaneArgs),
    /// The revocation mesh: one revocation spread through N nodes in C
    /// cells under latency, loss and an optional partition; prints when
    /// the nodes enforced it (exit 1 if some never did).
    Revocation(SimulateRevocationArgs),
}

#[derive(Debug, Args)]
pub struct SimulateRevocationArgs {
    /// Nodes in the mesh, over every cell.
    #[arg(long, default_value_t = 1_000)]
    pub nodes: usize,
    /// Cells the nodes are spread over.
    #[arg(long, default_value_t = 10)]
    pub cells: usize,
    /// Probability that a message is lost, as a fraction (0.01) or a
    /// percentage (1%).
    #[arg(long, default_value = "0", value_parser = parse_loss)]
    pub loss: f64,
    /// Cut the last CELLS cells off from the others for SECONDS, from 1 s
    /// before the revocation: CELLS:SECONDS.
    #[arg(long, value_parser = parse_partition)]
    pub partition: Option<(usize, u64)>,
    /// Seed of every random choice [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Rumour tick, milliseconds.
    #[arg(long, default_value_t = 20)]
    pub tick_ms: u64,
    /// Anti-entropy interval, milliseconds (a node's `gossip.anti_entropy_ms`).
    #[arg(long, default_value_t = 1_000)]
    pub anti_entropy_ms: u64,
    /// How often a node's digest summary reaches the others' membership
    /// state, milliseconds (a node's `gossip.membership_interval_ms`).
    #[arg(long, default_value_t = 500)]
    pub membership_ms: u64,
    /// Peers of a node's own cell each rumour batch goes to per tick.
    #[arg(long, default_value_t = 2)]
    pub fanout_local: usize,
    /// Peers of other cells each rumour batch goes to per tick.
    #[arg(long, default_value_t = 2)]
    pub fanout_remote: usize,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

fn parse_loss(s: &str) -> Result<f64, String> {
    let (text, scale) = match s.strip_suffix('%') {
        Some(t) => (t, 100.0),
        None => (s, 1.0),
    };
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    let v = v / scale;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err("loss must be at least 0 and below 1 (100%)".into())
    }
}

fn parse_partition(s: &str) -> Result<(usize, u64), String> {
    let bad = || format!("{s:?}: want CELLS:SECONDS, such as 3:60");
    let (c, secs) = s.split_once(':').ok_or_else(bad)?;
    let c: usize = c.trim().parse().map_err(|_| bad())?;
    let secs: u64 = secs.trim().parse().map_err(|_| bad())?;
    if c == 0 || secs == 0 {
        return Err(bad());
    }
    Ok((c, secs))
}

#[derive(Debug, Args)]
pub struct SimulateControlPlaneArgs {
    /// Cells in the federation.
    #[arg(long, default_value_t = 5)]
    pub cells: usize,
    /// Seed of every random choice [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Simulated seconds of writes and faults before the final heal.
    #[arg(long, default_value_t = 300)]
    pub seconds: u64,
    /// Writes per simulated second, over all cells.
    #[arg(long, default_value_t = 20)]
    pub writes_per_sec: u64,
    /// Ops each replica keeps per origin.
    #[arg(long, default_value_t = 200)]
    pub log_per_origin: usize,
    /// Also take one cell down for a while: CELL,FROM_S,FOR_S (cell index
    /// from 0), such as `2,10,3600` for an hour.
    #[arg(long, value_parser = parse_outage)]
    pub outage: Option<(usize, u64, u64)>,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// MiB of values to write before the restart.
    #[arg(long, default_value_t = 1024)]
    pub size_mb: u64,
    /// KiB per value.
    #[arg(long, default_value_t = 64)]
    pub value_kb: usize,
    /// Concurrent writers while filling.
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// The `sigil` binary [default: `sigil` beside this binary].
    #[arg(long, value_name = "PATH")]
    pub sigil: Option<PathBuf>,
    /// Where the node's data goes [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LeasesArgs {
    /// Concurrent clients for the rates and for filling.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Measured seconds of each rate.
    #[arg(long, default_value_t = 15.0)]
    pub duration: f64,
    /// Leases (with real users) revoked by one revoke-prefix.
    #[arg(long, default_value_t = 100_000)]
    pub revoke: u64,
    /// Live leases when the node is killed and restarted.
    #[arg(long, default_value_t = 1_000_000)]
    pub live: u64,
    /// The `sigil` binary [default: `sigil` beside this binary].
    #[arg(long, value_name = "PATH")]
    pub sigil: Option<PathBuf>,
    /// Where the node's data goes [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// Which scenario to run.
    #[arg(value_enum)]
    pub name: crate::scenario::Name,
    /// Seed of every random choice the harness makes [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
    /// The `sigil` binary the nodes run [default: `sigil` beside this binary].
    #[arg(long, value_name = "PATH")]
    pub sigil: Option<PathBuf>,
    /// Keep the nodes' data, logs and the client history here.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Writes made while a node is down (`snapshot-catchup`).
    #[arg(long, default_value_t = 50_000)]
    pub writes: u64,
    /// Print the report as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// Which transports to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    Http,
    Grpc,
    Both,
}

/// Benchmark suites that start what they measure themselves.
#[derive(Debug, Subcommand)]
pub enum BenchSuite {
    /// Leases and identity on a one-node cell with a real PostgreSQL:
    /// AppRole logins/s, credentials/s, revoke-prefix, and unseal to
    /// serving with many live leases.
    Leases(Box<LeasesArgs>),
    /// Control-plane propagation between federated cells on loopback: p50
    /// and p99 from a policy write's acknowledgement in one cell to every
    /// node of the others serving it, and bytes across cells per op.
    ControlPlane(ControlPlaneBenchArgs),
    /// Global revocation on loopback: federated cells of real processes
    /// (started here, or a running `sigil dev` federation with --topology),
    /// tokens in use on every node; p50/p99 from the revocation's
    /// acknowledgement to the last node refusing its token.
    Revocation(RevocationBenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RevocationMatch {
    /// A token of one identity in every cell, revoked by identity through
    /// the first cell.
    Identity,
    /// One token of the first cell, revoked by accessor through the last
    /// cell (the record crosses cells first).
    Accessor,
}

#[derive(Debug, Args)]
pub struct RevocationBenchArgs {
    /// What is revoked.
    #[arg(long = "match", value_enum, default_value_t = RevocationMatch::Identity)]
    pub matching: RevocationMatch,
    /// A running federation's topology (`sigil dev --cells A,B,C --nodes 3
    /// --topology-out FILE`) instead of starting one.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["cells", "nodes", "sigil", "dir"])]
    pub topology: Option<PathBuf>,
    /// Federated cells (1 to 5) to start.
    #[arg(long, default_value_t = 3)]
    pub cells: usize,
    /// Nodes per cell.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Revocations measured, one after another.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// The `sigil` binary [default: `sigil` beside this binary].
    #[arg(long, value_name = "PATH")]
    pub sigil: Option<PathBuf>,
    /// Where the nodes' data goes [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ControlPlaneBenchArgs {
    /// Federated cells (2 to 5); writes go to the first.
    #[arg(long, default_value_t = 3)]
    pub cells: usize,
    /// Nodes per cell.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Policy writes measured, one after another.
    #[arg(long, default_value_t = 200)]
    pub ops: usize,
    /// One-way delay added to every cross-cell link, in ms (inter-region
    /// latency); 0 is bare loopback.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// The `sigil` binary [default: `sigil` beside this binary].
    #[arg(long, value_name = "PATH")]
    pub sigil: Option<PathBuf>,
    /// Where the nodes' data goes [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchArgs {
    /// A suite instead of one workload.
    #[command(subcommand)]
    pub suite: Option<BenchSuite>,

    /// What each client does in its loop.
    #[arg(value_enum, required = true)]
    pub workload: Option<Workload>,

    /// Sigil's HTTP API [env: SIGIL_ADDR, then VAULT_ADDR; default
    /// http://127.0.0.1:8200]. With --bare, Sigil is measured only when this
    /// (or --grpc-addr) is given.
    #[arg(long, value_name = "URL")]
    pub addr: Option<String>,

    /// Sigil's gRPC API, HOST:PORT or a URL [default: 127.0.0.1:8201].
    #[arg(long, value_name = "HOST:PORT")]
    pub grpc_addr: Option<String>,

    /// Client token [env: SIGIL_TOKEN, then VAULT_TOKEN].
    #[arg(long, value_name = "T")]
    pub token: Option<String>,

    /// Concurrent clients; a list runs one level per count, in order.
    #[arg(long, value_name = "N", value_delimiter = ',', num_args = 1.., default_value = "16")]
    pub clients: Vec<usize>,

    /// Measured seconds per level.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub duration: f64,

    /// Unmeasured seconds before each level.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    pub warmup: f64,

    /// Which API(s) to load.
    #[arg(long, value_enum, default_value_t = TransportArg::Both)]
    pub transport: TransportArg,

    /// Also run the same clients against in-process bare axum/tonic handlers
    /// (fixed responses), and print Sigil ÷ bare.
    #[arg(long)]
    pub bare: bool,

    /// kv-write only: also measure raw RocksDB batch writes with sync on, one
    /// thread per client, in a fresh database: the physical reference for
    /// synced writes on this disk.
    #[arg(long)]
    pub rocksdb_reference: bool,

    /// Where the reference database is made (a temporary directory inside
    /// it, removed afterwards); put it on the disk the nodes use [default:
    /// the system's temporary directory].
    #[arg(long, value_name = "DIR", requires = "rocksdb_reference")]
    pub rocksdb_dir: Option<PathBuf>,

    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,

    /// The KV version 2 mount.
    #[arg(long, default_value = "secret")]
    pub mount: String,

    /// Keys written before measuring and picked from at random.
    #[arg(long, value_name = "K", default_value_t = 100)]
    pub keys: usize,

    /// Bytes in each written value.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub value_size: usize,

    /// Seed of the key choice (same seed, same key sequence per client).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// PEM CA certificate(s) to trust for https/TLS endpoints.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// A cell's topology JSON (`sigil dev --nodes N --topology-out FILE`):
    /// clients are spread over every node of its first cell, and its root
    /// token is used unless --token is given. Replaces --addr/--grpc-addr.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["addr", "grpc_addr"])]
    pub topology: Option<PathBuf>,

    /// With --topology: send every client to this node only (its `id` in
    /// the topology), the rest of the cell running as usual. The one-node
    /// figure a spread-out run is compared with.
    #[arg(long, value_name = "ID", requires = "topology")]
    pub node: Option<String>,

    /// With --topology: hold each node process of the cell to this many CPUs
    /// (0.5 is half of one) for the run, in a control group of its own, as
    /// if each node had a machine to itself. Needs root.
    #[arg(long, value_name = "CPUS", requires = "topology")]
    pub node_cpus: Option<f64>,
}

/// A node of a topology file.
#[derive(Debug, Clone)]
pub struct TopologyNode {
    pub id: String,
    pub pid: Option<u32>,
    pub endpoints: Endpoints,
}

/// The nodes and the root token of a topology file's first cell.
pub fn read_topology(path: &std::path::Path) -> Result<(Vec<TopologyNode>, Option<String>), Error> {
    let bad = |problem: String| Error::Config {
        key: "--topology",
        problem,
    };
    let text =
        std::fs::read(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let cell = &v["cells"][0];
    let nodes = cell["nodes"]
        .as_array()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad(format!("{}: no cells[0].nodes", path.display())))?;
    let mut out = Vec::new();
    for n in nodes {
        let http = n["http_addr"].as_str().unwrap_or_default();
        let http = reqwest::Url::parse(http)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| bad(format!("node http_addr `{http}` is not a URL")))?;
        let grpc = grpc_uri(n["grpc_addr"].as_str().unwrap_or_default()).map_err(|_| {
            bad(format!(
                "node grpc_addr {} is not HOST:PORT",
                n["grpc_addr"]
            ))
        })?;
        out.push(TopologyNode {
            id: n["id"].as_str().unwrap_or_default().to_owned(),
            pid: n["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
            endpoints: Endpoints { http, grpc },
        });
    }
    Ok((out, cell["root_token"].as_str().map(str::to_owned)))
}

const DEFAULT_ADDR: &str = "http://127.0.0.1:8200";
const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:8201";

/// `name`'s value if set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl BenchArgs {
    /// Resolves defaults and the environment, and parses every value.
    pub fn into_config(self) -> Result<BenchConfig, Error> {
        let (cell_nodes, cell_token) = match &self.topology {
            Some(path) => {
                let (nodes, token) = read_topology(path)?;
                (Some(nodes), token)
            }
            None => (None, None),
        };
        let addr = self
            .addr
            .or_else(|| env("SIGIL_ADDR"))
            .or_else(|| env("VAULT_ADDR"));
        let token = self
            .token
            .or_else(|| env("SIGIL_TOKEN"))
            .or_else(|| env("VAULT_TOKEN"))
            .or(cell_token)
            .map(Token::new);
        let (sigil, replicas) = if let Some(mut nodes) = cell_nodes {
            if let Some(only) = &self.node {
                let known: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
                let Some(i) = nodes.iter().position(|n| &n.id == only) else {
                    return Err(Error::Config {
                        key: "--node",
                        problem: format!(
                            "no node `{only}` in the topology (it has: {})",
                            known.join(", ")
                        ),
                    });
                };
                let n = nodes.swap_remove(i);
                (Some(n.endpoints), Vec::new())
            } else {
                let first = nodes.remove(0).endpoints;
                (
                    Some(first),
                    nodes.into_iter().map(|n| n.endpoints).collect(),
                )
            }
        } else if !(self.bare || self.rocksdb_reference)
            || addr.is_some()
            || self.grpc_addr.is_some()
        {
            let http = addr.as_deref().unwrap_or(DEFAULT_ADDR);
            let http = reqwest::Url::parse(http)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                .ok_or_else(|| Error::Config {
                    key: "--addr",
                    problem: format!("`{http}` is not an http:// or https:// URL"),
                })?;
            let grpc = self.grpc_addr.as_deref().unwrap_or(DEFAULT_GRPC_ADDR);
            (
                Some(Endpoints {
                    http,
                    grpc: grpc_uri(grpc)?,
                }),
                Vec::new(),
            )
        } else {
            (None, Vec::new())
        };
        let transports = match self.transport {
            TransportArg::Http => vec![Transport::Http],
            TransportArg::Grpc => vec![Transport::Grpc],
            TransportArg::Both => vec![Transport::Http, Transport::Grpc],
        };
        let ca_cert = match &self.ca_cert {
            Some(path) => Some(std::fs::read(path).map_err(|e| Error::Config {
                key: "--ca-cert",
                problem: format!("cannot read {}: {e}", path.display()),
            })?),
            None => None,
        };
        let workload = self.workload.ok_or(Error::Config {
            key: "WORKLOAD",
            problem: "a workload or a suite is required".to_owned(),
        })?;
        let config = BenchConfig {
            workload,
            sigil,
            replicas,
            bare: self.bare,
            rocksdb_reference: self.rocksdb_reference.then_some(self.rocksdb_dir),
            transports,
            clients: self.clients,
            duration: seconds("--duration", self.duration)?,
            warmup: seconds("--warmup", self.warmup)?,
            mount: self.mount.trim_matches('/').to_owned(),
            keys: self.keys,
            value_size: self.value_size,
            seed: self.seed,
            token,
            ca_cert,
        };
        config.validate()?;
        Ok(config)
    }
}

fn seconds(key: &'static str, s: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(s).map_err(|_| Error::Config {
        key,
        problem: format!("`{s}` is not a number of seconds ≥ 0"),
    })
}

/// `host:port` becomes `http://host:port`; URLs pass through.
fn grpc_uri(addr: &str) -> Result<String, Error> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    match reqwest::Url::parse(&uri) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(uri),
        _ => Err(Error::Config {
            key: "--grpc-addr",
            problem: format!("`{addr}` is not HOST:PORT or an http(s) URL"),
        }),
    }
}

/// Runs the CLI; the return value is the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    bench::install_crypto_provider();
    // The same runtime the `sigil` binary builds: multi-thread, one worker
    // per core.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Bench(mut args) => match args.suite.take() {
            Some(BenchSuite::Leases(leases)) => runtime.block_on(run_leases(*leases)),
            Some(BenchSuite::ControlPlane(cp)) => runtime.block_on(run_control_plane_bench(cp)),
            Some(BenchSuite::Revocation(r)) => runtime.block_on(run_revocation_bench(r)),
            None => runtime.block_on(run_bench(*args)),
        },
        Command::Scenario(args) => runtime.block_on(run_scenario(args)),
        Command::Simulate {
            what: Simulation::ControlPlane(args),
        } => simulate_control_plane(&args),
        Command::Simulate {
            what: Simulation::Revocation(args),
        } => simulate_revocation(&args),
        Command::CheckHistory { file } => check_history(&file),
        Command::Restart(args) => runtime.block_on(run_restart(args)),
    }
}

fn sigil_beside(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("sigil")))
            .filter(|p| p.exists())
    })
}

/// A temporary directory for a harness run; on failure, the exit code.
fn work_dir(prefix: &str) -> Result<tempfile::TempDir, ExitCode> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| {
            eprintln!("Error: {e}");
            ExitCode::from(1)
        })
}

/// Prints a harness report (and its JSON line with `--json`), or the error.
fn print_report<R: std::fmt::Display + serde::Serialize>(
    result: Result<R, Error>,
    json: bool,
) -> ExitCode {
    match result {
        Ok(report) => {
            println!("{report}");
            if json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run_leases(args: LeasesArgs) -> ExitCode {
    let Some(sigil) = sigil_beside(args.sigil) else {
        eprintln!("Error: no `sigil` binary beside sigil-chaos; pass --sigil PATH");
        return ExitCode::from(2);
    };
    if args.clients == 0
        || !args.duration.is_finite()
        || args.duration <= 0.0
        || args.revoke == 0
        || args.live == 0
    {
        eprintln!("Error: --clients, --duration, --revoke and --live must be greater than 0");
        return ExitCode::from(2);
    }
    let temp = match work_dir("sigil-chaos-leases-") {
        Ok(t) => t,
        Err(code) => return code,
    };
    let config = crate::lease_bench::LeaseBenchConfig {
        sigil,
        dir: args.dir.unwrap_or_else(|| temp.path().to_path_buf()),
        clients: args.clients,
        duration: Duration::from_secs_f64(args.duration),
        revoke: args.revoke,
        live: args.live,
    };
    print_report(crate::lease_bench::run(&config).await, args.json)
}

async fn run_restart(args: RestartArgs) -> ExitCode {
    let Some(sigil) = sigil_beside(args.sigil) else {
        eprintln!("Error: no `sigil` binary beside sigil-chaos; pass --sigil PATH");
        return ExitCode::from(2);
    };
    if args.value_kb == 0 || args.writers == 0 || args.size_mb == 0 {
        eprintln!("Error: --size-mb, --value-kb and --writers must be greater than 0");
        return ExitCode::from(2);
    }
    let temp = match work_dir("sigil-chaos-restart-") {
        Ok(t) => t,
        Err(code) => return code,
    };
    let dir = args.dir.unwrap_or_else(|| temp.path().to_path_buf());
    let config = crate::restart::RestartConfig {
        sigil,
        dir,
        size: args.size_mb << 20,
        value_size: args.value_kb << 10,
        writers: args.writers,
    };
    print_report(crate::restart::run(&config).await, args.json)
}

/// A temporary directory for a suite's nodes (kept only as long as the
/// suite runs), or the one the caller named.
fn suite_dir(
    prefix: &str,
    given: Option<PathBuf>,
) -> Result<(tempfile::TempDir, PathBuf), ExitCode> {
    let temp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| {
            eprintln!("Error: {e}");
            ExitCode::from(1)
        })?;
    let dir = given.unwrap_or_else(|| temp.path().to_path_buf());
    Ok((temp, dir))
}

/// Prints a suite's figures under `title` (and as JSON when asked).
fn print_figures(
    title: String,
    figures: Result<serde_json::Map<String, serde_json::Value>, crate::Error>,
    json: bool,
) -> ExitCode {
    match figures {
        Ok(f) => {
            println!("{title}");
            for (k, v) in &f {
                println!("  {k}: {v}");
            }
            if json {
                println!("{}", serde_json::Value::Object(f));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run_control_plane_bench(args: ControlPlaneBenchArgs) -> ExitCode {
    let Some(sigil) = sigil_beside(args.sigil) else {
        eprintln!("Error: no `sigil` binary beside sigil-chaos; pass --sigil PATH");
        return ExitCode::from(2);
    };
    if !(2..=5).contains(&args.cells) || args.nodes == 0 || args.ops == 0 {
        eprintln!("Error: --cells must be 2 to 5, --nodes and --ops at least 1");
        return ExitCode::from(2);
    }
    let (_temp, dir) = match suite_dir("sigil-chaos-control-plane-", args.dir.clone()) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let config = crate::control_plane::BenchConfig {
        sigil,
        dir,
        cells: args.cells,
        nodes: args.nodes,
        ops: args.ops,
        delay: Duration::from_millis(args.delay_ms),
    };
    print_figures(
        format!(
            "control-plane propagation: {} cells x {} nodes, {} ops, +{} ms one-way between cells",
            args.cells, args.nodes, args.ops, args.delay_ms
        ),
        crate::control_plane::bench(&config).await,
        args.json,
    )
}

async fn run_revocation_bench(args: RevocationBenchArgs) -> ExitCode {
    use crate::revocation_bench::{BenchConfig, Match, Source};
    if !(1..=5).contains(&args.cells) || args.nodes == 0 || args.runs == 0 {
        eprintln!("Error: --cells must be 1 to 5, --nodes and --runs at least 1");
        return ExitCode::from(2);
    }
    let mut _temp = None;
    let (source, shape) = match &args.topology {
        Some(path) => (
            Source::Topology(path.clone()),
            format!("the federation in {}", path.display()),
        ),
        None => {
            let Some(sigil) = sigil_beside(args.sigil.clone()) else {
                eprintln!("Error: no `sigil` binary beside sigil-chaos; pass --sigil PATH");
                return ExitCode::from(2);
            };
            let (temp, dir) = match suite_dir("sigil-chaos-revocation-", args.dir.clone()) {
                Ok(d) => d,
                Err(code) => return code,
            };
            _temp = Some(temp);
            (
                Source::Start {
                    sigil,
                    dir,
                    cells: args.cells,
                    nodes: args.nodes,
                },
                format!("{} cells x {} nodes", args.cells, args.nodes),
            )
        }
    };
    let matching = match args.matching {
        RevocationMatch::Identity => Match::Identity,
        RevocationMatch::Accessor => Match::Accessor,
    };
    let config = BenchConfig {
        source,
        runs: args.runs,
        matching,
    };
    print_figures(
        format!(
            "revocation by {:?}: {shape}, {} runs, acknowledgement to the last node refusing the token",
            args.matching, args.runs
        ),
        crate::revocation_bench::bench(&config).await,
        args.json,
    )
}

fn parse_outage(s: &str) -> Result<(usize, u64, u64), String> {
    let parts: Vec<&str> = s.split(',').collect();
    let bad = || format!("{s:?} is not CELL,FROM_S,FOR_S (three whole numbers)");
    match parts.as_slice() {
        [c, f, d] => Ok((
            c.trim().parse().map_err(|_| bad())?,
            f.trim().parse().map_err(|_| bad())?,
            d.trim().parse().map_err(|_| bad())?,
        )),
        _ => Err(bad()),
    }
}

fn simulate_revocation(args: &SimulateRevocationArgs) -> ExitCode {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    if args.nodes < 2 || args.cells == 0 || args.cells > args.nodes {
        eprintln!("Error: want at least 2 nodes and between 1 and --nodes cells");
        return ExitCode::from(2);
    }
    if let Some((c, _)) = args.partition
        && c >= args.cells
    {
        eprintln!("Error: --partition must leave at least one cell on the other side");
        return ExitCode::from(2);
    }
    eprintln!("simulate revocation seed {seed}");
    let mut cfg = crate::revocation_sim::SimConfig::new(args.nodes, args.cells, args.loss, seed);
    cfg.partition = args
        .partition
        .map(|(cells, seconds)| crate::revocation_sim::Partition { cells, seconds });
    cfg.tick_ms = args.tick_ms.max(1);
    cfg.anti_entropy_ms = args.anti_entropy_ms.max(1);
    cfg.membership_ms = args.membership_ms.max(1);
    cfg.settings.fanout_local = args.fanout_local;
    cfg.settings.fanout_remote = args.fanout_remote;
    let report = crate::revocation_sim::run(&cfg);
    print!("{report}");
    if args.json {
        println!("{}", crate::revocation_sim::to_json(&report));
    }
    if report.converged() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn simulate_control_plane(args: &SimulateControlPlaneArgs) -> ExitCode {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    if args.cells < 2 {
        eprintln!("Error: --cells must be at least 2");
        return ExitCode::from(2);
    }
    eprintln!("simulate control-plane seed {seed}");
    let report = crate::control_plane_sim::run(&crate::control_plane_sim::SimConfig {
        cells: args.cells,
        seed,
        seconds: args.seconds,
        writes_per_sec: args.writes_per_sec,
        log_per_origin: args.log_per_origin,
        random_faults: true,
        outage: args.outage,
    });
    print!("{report}");
    if args.json {
        println!("{}", crate::control_plane_sim::to_json(&report));
    }
    if report.identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn run_scenario(args: ScenarioArgs) -> ExitCode {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let Some(sigil) = sigil_beside(args.sigil) else {
        eprintln!("Error: no `sigil` binary beside sigil-chaos; pass --sigil PATH");
        return ExitCode::from(2);
    };
    eprintln!("scenario {} seed {seed}", args.name.as_str());
    let config = crate::scenario::ScenarioConfig {
        name: args.name,
        seed,
        sigil,
        dir: args.dir,
        writes: args.writes,
    };
    match crate::scenario::run(&config).await {
        Ok(report) => {
            println!("{report}");
            if args.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            }
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("Error (seed {seed}): {e}");
            ExitCode::from(1)
        }
    }
}

async fn run_bench(args: BenchArgs) -> ExitCode {
    let json = args.json;
    let budget_for = args.topology.clone().zip(args.node_cpus);
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(2);
        }
    };
    let _budget = match budget_for.map(|(path, cpus)| hold_nodes(&path, cpus)) {
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            eprintln!("Error: {e}");
            return ExitCode::from(2);
        }
        None => None,
    };
    match bench::run(&config, print_progress).await {
        Ok(report) => {
            println!("{report}");
            if json {
                println!("{}", report.to_json_line());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Holds every node process of the topology at `path` to `cpus` CPUs.
fn hold_nodes(path: &std::path::Path, cpus: f64) -> Result<crate::cpu_budget::CpuBudget, Error> {
    let (nodes, _) = read_topology(path)?;
    let pids = nodes
        .iter()
        .map(|n| {
            n.pid
                .map(|p| (n.id.clone(), p))
                .ok_or_else(|| Error::Config {
                    key: "--node-cpus",
                    problem: format!("node `{}` has no pid in the topology", n.id),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let budget = crate::cpu_budget::CpuBudget::apply(&pids, cpus)?;
    eprintln!("holding each of {} nodes to {cpus} CPUs", budget.len());
    Ok(budget)
}

/// Progress goes to stderr, so stdout holds only the table and JSON line.
fn print_progress(p: Progress<'_>) {
    match p {
        Progress::BareListening { http, grpc } => {
            eprintln!("bare servers listening: http {http}, grpc {grpc}");
        }
        Progress::SettingUp {
            target,
            transport,
            keys,
        } => eprintln!("{target} {transport}: writing {keys} keys"),
        Progress::ReferenceOpened { path } => {
            eprintln!("rocksdb reference database: {}", path.display());
        }
        Progress::Level {
            target,
            transport: Some(transport),
            clients,
        } => eprintln!("{target} {transport}: {clients} clients"),
        Progress::Level {
            target,
            transport: None,
            clients,
        } => eprintln!("{target}: {clients} synced writers"),
        Progress::Row { row, first_error } => {
            eprintln!(
                "  {:.1} ops/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {} errors",
                row.ops_per_sec, row.p50_ms, row.p99_ms, row.max_ms, row.errors
            );
            if let Some(e) = first_error {
                eprintln!("  first error: {e}");
            }
        }
    }
}

fn check_history(file: &std::path::Path) -> ExitCode {
    let events: Vec<crate::history::Event> = match std::fs::read(file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("Error: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let result =
        crate::linearizability::check_kv(&events, &crate::linearizability::Budget::default());
    let took = started.elapsed();
    match result {
        Ok(()) => {
            println!(
                "linearizable: {} operations, checked in {:.3}s",
                events.len() / 2,
                took.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("NOT linearizable ({:.3}s): {e}", took.as_secs_f64());
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> BenchArgs {
        let mut argv = vec!["sigil-chaos", "bench"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Bench(b),
            }) => *b,
            Ok(other) => panic!("parsed as another command: {other:?}"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn scenarios_parse_with_seed_and_bad_names_are_refused() {
        let cli = Cli::try_parse_from(["sigil-chaos", "scenario", "leader-kills", "--seed", "9"])
            .expect("parse");
        match cli.command {
            Command::Scenario(a) => {
                assert_eq!(a.name, crate::scenario::Name::LeaderKills);
                assert_eq!(a.seed, Some(9));
                assert_eq!(a.writes, 50_000);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["sigil-chaos", "scenario", "no-such"]).is_err());
        assert!(
            Cli::try_parse_from(["sigil-chaos", "scenario", "leader-kills", "--seed", "x"])
                .is_err()
        );
    }

    #[test]
    fn topology_spreads_over_every_node_and_brings_its_token() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("cell.json");
        std::fs::write(
            &path,
            r#"{"cells":[{"id":"dev","root_token":"hvs.root","unseal_keys":["k"],"nodes":[
                {"id":"node-1","http_addr":"http://127.0.0.1:8200","grpc_addr":"127.0.0.1:8201","cluster_addr":"127.0.0.1:8202","data_dir":"/d1","pid":1},
                {"id":"node-2","http_addr":"http://127.0.0.1:8210","grpc_addr":"127.0.0.1:8211","cluster_addr":"127.0.0.1:8212","data_dir":"/d2","pid":2},
                {"id":"node-3","http_addr":"http://127.0.0.1:8220","grpc_addr":"127.0.0.1:8221","cluster_addr":"127.0.0.1:8222","data_dir":"/d3","pid":3}]}]}"#,
        )
        .expect("write");
        let topo = path.display().to_string();
        let c = parse(&["kv-read", "--topology", &topo])
            .into_config()
            .expect("config");
        let first = c.sigil.expect("first node");
        assert_eq!(first.http.as_str(), "http://127.0.0.1:8200/");
        assert_eq!(c.replicas.len(), 2);
        assert_eq!(c.replicas[1].grpc, "http://127.0.0.1:8221");
        assert_eq!(
            c.token.map(|t| t.expose().to_owned()),
            Some("hvs.root".to_owned())
        );
        // `--node` sends every client to one node of the cell.
        let one = parse(&["kv-read", "--topology", &topo, "--node", "node-3"])
            .into_config()
            .expect("config");
        assert_eq!(
            one.sigil.expect("node").http.as_str(),
            "http://127.0.0.1:8220/"
        );
        assert!(one.replicas.is_empty());
        let e = parse(&["kv-read", "--topology", &topo, "--node", "node-9"])
            .into_config()
            .expect_err("unknown node")
            .to_string();
        assert!(
            e.contains("node-9") && e.contains("node-1, node-2, node-3"),
            "{e}"
        );
        // --node and --node-cpus only make sense with a topology.
        for flag in [["--node", "node-1"], ["--node-cpus", "0.5"]] {
            let lone = Cli::try_parse_from(["sigil-chaos", "bench", "kv-read", flag[0], flag[1]]);
            assert!(lone.is_err(), "{flag:?} without --topology");
        }
        // An explicit address and a topology together are refused.
        let both = Cli::try_parse_from([
            "sigil-chaos",
            "bench",
            "kv-read",
            "--topology",
            &topo,
            "--addr",
            "http://x:1",
        ]);
        assert!(both.is_err());
        std::fs::write(&path, r#"{"cells":[]}"#).expect("write");
        assert!(
            parse(&["kv-read", "--topology", &topo])
                .into_config()
                .is_err()
        );
    }

    #[test]
    fn the_lease_suite_parses_under_bench_and_a_workload_is_otherwise_required() {
        let a = parse(&["leases", "--revoke", "500", "--live", "2000", "--json"]);
        match a.suite {
            Some(BenchSuite::Leases(l)) => {
                assert_eq!((l.revoke, l.live, l.clients), (500, 2000, 16));
                assert!(l.json);
            }
            other => panic!("not the lease suite: {other:?}"),
        }
        assert!(a.workload.is_none());
        assert!(Cli::try_parse_from(["sigil-chaos", "bench"]).is_err());
        assert!(Cli::try_parse_from(["sigil-chaos", "bench", "leases", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["sigil-chaos", "bench", "kv-read", "leases"]).is_err());
    }

    #[test]
    fn client_lists_and_defaults() {
        let a = parse(&["kv-read", "--clients", "1,16,64"]);
        assert_eq!(a.clients, vec![1, 16, 64]);
        assert_eq!(a.workload, Some(Workload::KvRead));
        assert_eq!(a.transport, TransportArg::Both);
        assert_eq!(a.mount, "secret");
        assert_eq!(a.keys, 100);
        let a = parse(&["kv-write", "--clients", "2", "4"]);
        assert_eq!(a.clients, vec![2, 4]);
    }

    #[test]
    fn the_control_plane_bench_and_simulation_parse() {
        let cli = Cli::try_parse_from([
            "sigil-chaos",
            "bench",
            "control-plane",
            "--ops",
            "50",
            "--delay-ms",
            "40",
        ])
        .expect("parse");
        match cli.command {
            Command::Bench(b) => match b.suite {
                Some(BenchSuite::ControlPlane(c)) => {
                    assert_eq!((c.cells, c.nodes, c.ops, c.delay_ms), (3, 3, 50, 40));
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["sigil-chaos", "simulate", "control-plane", "--seed", "9"])
            .expect("parse");
        match cli.command {
            Command::Simulate {
                what: Simulation::ControlPlane(s),
            } => assert_eq!((s.cells, s.seed, s.seconds), (5, Some(9), 300)),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["sigil-chaos", "simulate", "nothing"]).is_err());
        let cli = Cli::try_parse_from([
            "sigil-chaos",
            "simulate",
            "revocation",
            "--nodes",
            "50",
            "--cells",
            "5",
            "--loss",
            "25%",
            "--partition",
            "2:60",
            "--seed",
            "3",
        ])
        .expect("parses");
        match cli.command {
            Command::Simulate {
                what: Simulation::Revocation(r),
            } => {
                assert_eq!(
                    (r.nodes, r.cells, r.partition, r.seed),
                    (50, 5, Some((2, 60)), Some(3))
                );
                assert!((r.loss - 0.25).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            ["--loss", "100%"],
            ["--loss", "-1"],
            ["--loss", "x"],
            ["--partition", "3"],
            ["--partition", "0:60"],
            ["--partition", "3:0"],
        ] {
            let mut args = vec!["sigil-chaos", "simulate", "revocation"];
            args.extend(bad);
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
        assert_eq!(parse_outage("2,10,3600"), Ok((2, 10, 3600)));
        assert!(parse_outage("2,10").is_err() && parse_outage("a,b,c").is_err());
    }

    #[test]
    fn bare_alone_measures_no_sigil() {
        if env("SIGIL_ADDR").is_none() && env("VAULT_ADDR").is_none() {
            let c = parse(&["kv-read", "--bare"]).into_config().expect("config");
            assert!(c.sigil.is_none());
        }
        let c = parse(&[
            "kv-read",
            "--bare",
            "--grpc-addr",
            "127.0.0.1:9",
            "--token",
            "t",
        ])
        .into_config()
        .expect("config");
        let sigil = c.sigil.expect("sigil measured when an address is given");
        assert_eq!(sigil.grpc, "http://127.0.0.1:9");
    }

    #[test]
    fn bad_values_name_their_option() {
        let err = |args: &[&str]| parse(args).into_config().expect_err("invalid").to_string();
        assert!(err(&["kv-read", "--bare", "--clients", "0"]).contains("--clients"));
        assert!(err(&["kv-read", "--bare", "--duration", "0"]).contains("--duration"));
        assert!(err(&["kv-read", "--bare", "--warmup=-1"]).contains("--warmup"));
        assert!(err(&["kv-read", "--bare", "--keys", "0"]).contains("--keys"));
        assert!(err(&["kv-read", "--addr", "ftp://x", "--token", "t"]).contains("--addr"));
        assert!(err(&["kv-read", "--grpc-addr", "::bad", "--token", "t"]).contains("--grpc-addr"));
    }
}
