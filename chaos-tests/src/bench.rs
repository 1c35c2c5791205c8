//! `sigil-chaos bench`: the load generator.
//!
//! A run is a list of *rows*, one per target × transport × client count.
//! For each transport the run first sets every target up (writes the key
//! space, so reads find data and a bad token or mount fails at once), then
//! runs each client count against each target in turn: Sigil and bare rows
//! of the same level are measured back to back, so drift on a shared machine
//! hits both alike.

mod client;
mod grpc;
mod http;
mod level;
mod physical;
mod workload;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use client::{Client, ClientSpec, Endpoints, OpError};
pub use level::{LevelOutcome, LevelPlan, run_level};
pub use workload::{KeyPicker, KeySpace, Workload, value};

use crate::Error;
use crate::bare::BareServers;
use crate::report::{Ratio, Report, Row};
use crate::token::Token;

/// What is measured: a Sigil node, the in-process bare handlers, or raw
/// synced RocksDB writes (the physical reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Sigil,
    Bare,
    Rocksdb,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Sigil => "sigil",
            Target::Bare => "bare",
            Target::Rocksdb => "rocksdb",
        })
    }
}

/// The API a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The Vault-compatible HTTP API (`/v1/...`).
    Http,
    /// The `sigil.v1.Kv` gRPC service.
    Grpc,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
        })
    }
}

/// A bench run, parsed and checked.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub workload: Workload,
    /// The Sigil node to measure; `None` measures only the bare handlers.
    pub sigil: Option<Endpoints>,
    /// The other nodes of the same cell (`--topology`): clients are spread
    /// over `sigil` and these, round robin; keys are set up through `sigil`.
    pub replicas: Vec<Endpoints>,
    /// Also measure the bare handlers, for the ratio.
    pub bare: bool,
    /// Also measure raw synced RocksDB batch writes (kv-write only), in a
    /// fresh database under this directory (`Some(None)`: the system's
    /// temporary directory).
    pub rocksdb_reference: Option<Option<PathBuf>>,
    pub transports: Vec<Transport>,
    /// The client counts, one level each, in order.
    pub clients: Vec<usize>,
    pub duration: Duration,
    pub warmup: Duration,
    pub mount: String,
    pub keys: usize,
    pub value_size: usize,
    pub seed: u64,
    /// Required when `sigil` is set; the bare handlers accept anything.
    pub token: Option<Token>,
    pub ca_cert: Option<Vec<u8>>,
}

impl BenchConfig {
    /// Checks what the types do not.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key, problem: &str| {
            Err(Error::Config {
                key,
                problem: problem.to_owned(),
            })
        };
        if self.sigil.is_none() && !self.bare && self.rocksdb_reference.is_none() {
            return bad(
                "--addr",
                "nothing to measure: give a Sigil address, --bare or --rocksdb-reference",
            );
        }
        if self.rocksdb_reference.is_some() && self.workload != Workload::KvWrite {
            return bad(
                "--rocksdb-reference",
                "the RocksDB reference measures synced writes: use it with kv-write",
            );
        }
        if self.sigil.is_some() && self.token.is_none() {
            return bad(
                "--token",
                "a token is required to measure Sigil: pass --token or set SIGIL_TOKEN or VAULT_TOKEN",
            );
        }
        if self.transports.is_empty() {
            return bad("--transport", "no transport selected");
        }
        if self.clients.is_empty() || self.clients.contains(&0) {
            return bad("--clients", "each client count must be at least 1");
        }
        if self.duration.is_zero() {
            return bad("--duration", "must be more than 0 seconds");
        }
        if self.keys == 0 {
            return bad("--keys", "must be at least 1");
        }
        if self.mount.is_empty() || self.mount.contains(['?', '#']) {
            return bad("--mount", "must be a non-empty path such as `secret`");
        }
        Ok(())
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if self.sigil.is_some() {
            targets.push(Target::Sigil);
        }
        if self.bare {
            targets.push(Target::Bare);
        }
        targets
    }
}

/// What a run reports as it goes, for a progress display.
#[derive(Debug)]
#[non_exhaustive]
pub enum Progress<'a> {
    /// The bare servers are listening.
    BareListening { http: &'a str, grpc: &'a str },
    /// Writing the key space before measuring.
    SettingUp {
        target: Target,
        transport: Transport,
        keys: usize,
    },
    /// The RocksDB reference database is open at `path`.
    ReferenceOpened { path: &'a std::path::Path },
    /// A level is starting (`transport` is `None` for the RocksDB reference).
    Level {
        target: Target,
        transport: Option<Transport>,
        clients: usize,
    },
    /// A level ended; `first_error` is its first failure, if any.
    Row {
        row: &'a Row,
        first_error: Option<&'a str>,
    },
}

/// Token the bare handlers are sent when none is given: the same length as a
/// typical service token, so requests are the same size either way.
const BARE_TOKEN: &str = "hvs.sigil-chaos-bare-placeholder-token";

/// Runs the bench `config` describes (after [`BenchConfig::validate`]).
pub async fn run(
    config: &BenchConfig,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Report, Error> {
    config.validate()?;
    let bare = if config.bare {
        let servers = BareServers::start(config.value_size)?;
        progress(Progress::BareListening {
            http: servers.endpoints().http.as_str(),
            grpc: &servers.endpoints().grpc,
        });
        Some(servers)
    } else {
        None
    };
    let sigil_nodes: Vec<Endpoints> = config
        .sigil
        .iter()
        .chain(&config.replicas)
        .cloned()
        .collect();
    let bare_nodes: Vec<Endpoints> = bare.iter().map(|b| b.endpoints().clone()).collect();
    let endpoints = |target| -> Option<&[Endpoints]> {
        let nodes = match target {
            Target::Sigil => sigil_nodes.as_slice(),
            Target::Bare => bare_nodes.as_slice(),
            Target::Rocksdb => &[],
        };
        (!nodes.is_empty()).then_some(nodes)
    };
    let spec = ClientSpec {
        mount: config.mount.clone(),
        keys: KeySpace::new(config.keys),
        // Only the bare target can run without a token (checked above).
        token: config
            .token
            .clone()
            .unwrap_or_else(|| Token::new(BARE_TOKEN)),
        value: value(config.value_size),
        ca_cert: config.ca_cert.clone(),
    };
    let plan = LevelPlan {
        workload: config.workload,
        keys: config.keys,
        seed: config.seed,
        warmup: config.warmup,
        duration: config.duration,
    };

    let reference = match &config.rocksdb_reference {
        Some(dir) => {
            let reference = physical::Reference::open(dir.as_deref())?;
            progress(Progress::ReferenceOpened {
                path: reference.path(),
            });
            Some(reference)
        }
        None => None,
    };
    let reference_value = physical::reference_value(config.value_size);

    let targets = config.targets();
    let mut rows = Vec::new();
    for (pass, &transport) in config.transports.iter().enumerate() {
        for &target in &targets {
            let Some(endpoints) = endpoints(target) else {
                continue;
            };
            progress(Progress::SettingUp {
                target,
                transport,
                keys: config.keys,
            });
            set_up(target, transport, &endpoints[0], &spec).await?;
        }
        for &clients in &config.clients {
            for &target in &targets {
                let Some(endpoints) = endpoints(target) else {
                    continue;
                };
                progress(Progress::Level {
                    target,
                    transport: Some(transport),
                    clients,
                });
                let conns =
                    Client::connect_many(target, transport, endpoints, &spec, clients).await?;
                let outcome = run_level(conns, plan).await;
                let row = Row::new(target, Some(transport), clients, &outcome);
                progress(Progress::Row {
                    row: &row,
                    first_error: outcome.first_error.as_deref(),
                });
                rows.push(row);
            }
            // The reference has no transport: measured once per client
            // count, right after the first transport's rows of that count.
            if let (Some(reference), 0) = (&reference, pass) {
                progress(Progress::Level {
                    target: Target::Rocksdb,
                    transport: None,
                    clients,
                });
                let outcome = reference
                    .run_level(clients, plan, &spec.keys, &reference_value)
                    .await;
                let row = Row::new(Target::Rocksdb, None, clients, &outcome);
                progress(Progress::Row {
                    row: &row,
                    first_error: outcome.first_error.as_deref(),
                });
                rows.push(row);
            }
        }
    }
    drop(bare);
    drop(reference);

    let ratios = Ratio::pair(&rows);
    Ok(Report {
        workload: config.workload,
        duration_s: config.duration.as_secs_f64(),
        warmup_s: config.warmup.as_secs_f64(),
        seed: config.seed,
        value_size: config.value_size,
        keys: config.keys,
        results: rows,
        ratios,
    })
}

/// Makes aws-lc-rs the process's rustls provider (the node's only crypto
/// library), as the `sigil` binary does: reqwest is built without a provider
/// of its own and tonic takes the process default. Idempotent; a provider
/// installed earlier by the embedding program is kept.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::CryptoProvider::install_default(
        rustls::crypto::aws_lc_rs::default_provider(),
    );
}

/// Writes every key once, stopping at the first failure.
async fn set_up(
    target: Target,
    transport: Transport,
    endpoints: &Endpoints,
    spec: &ClientSpec,
) -> Result<(), Error> {
    let mut client = Client::connect(target, transport, endpoints, spec).await?;
    for key in 0..spec.keys.len() {
        client.write(key).await.map_err(|e| Error::Setup {
            target,
            transport,
            mount: spec.mount.clone(),
            path: spec.keys.path(key).to_owned(),
            reason: e.0,
        })?;
    }
    Ok(())
}
