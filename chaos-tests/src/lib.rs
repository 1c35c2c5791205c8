//! `sigil-chaos`: Sigil's harness, the one entry point for measuring and
//! breaking Sigil (`docs/` and `DESIGN.md`, "The harness").
//!
//! It talks to Sigil over the network like any client, through the wire
//! definitions in `sigil-proto` and the Vault-compatible HTTP API, never by
//! linking the node.
//!
//! The load generator, `sigil-chaos bench`:
//! - [`bench`]: workloads, clients for both transports, the closed loop and
//!   the run that ties them together;
//! - [`bare`]: in-process axum/tonic servers with fixed answers, the floor a
//!   Sigil figure is compared with;
//! - [`latency`]: exact percentiles;
//! - [`report`]: the table and the `--json` line;
//! - [`cli`]: the command line;
//! - [`cpu_budget`]: a CPU share per node process (control groups), so a
//!   cell on one machine is measured as if each node had its own.
//!
//! The building blocks of the fault-injection scenarios (real `sigil`
//! processes on loopback, a proxy on every node-to-node link):
//! - [`proxy`]: a TCP proxy whose delay, connection drops and one- or two-way
//!   partitions are set at run time;
//! - [`history`]: what concurrent clients invoked and what they got back;
//! - [`linearizability`]: Wing & Gong's checker with Lowe's memoisation, and
//!   the KV version 2 model a history is checked against;
//! - [`federation`]: several federated cells, a proxy on every cross-cell
//!   link, for [`control_plane`]'s scenarios.
//!
//! ```no_run
//! # async fn example() -> Result<(), sigil_chaos::Error> {
//! use std::time::Duration;
//! use sigil_chaos::bench::{self, BenchConfig, Transport, Workload};
//!
//! // Bare handlers only: what the client and this machine manage alone.
//! let config = BenchConfig {
//!     workload: Workload::KvRead,
//!     sigil: None,
//!     replicas: Vec::new(),
//!     bare: true,
//!     rocksdb_reference: None,
//!     transports: vec![Transport::Http, Transport::Grpc],
//!     clients: vec![1, 16],
//!     duration: Duration::from_secs(5),
//!     warmup: Duration::from_secs(1),
//!     mount: "secret".to_owned(),
//!     keys: 100,
//!     value_size: 64,
//!     seed: 1,
//!     token: None,
//!     ca_cert: None,
//! };
//! let report = bench::run(&config, |_| {}).await?;
//! println!("{report}");
//! println!("{}", report.to_json_line());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod bare;
pub mod bench;
pub mod cell;
pub mod cli;
pub mod control_plane;
pub mod control_plane_sim;
pub mod cpu_budget;
mod error;
pub mod federation;
pub mod history;
pub mod latency;
pub mod lease_bench;
pub mod linearizability;
pub mod proxy;
pub mod report;
pub mod restart;
pub mod revocation_bench;
pub mod revocation_scenario;
pub mod revocation_sim;
pub mod scenario;
mod token;

pub use error::Error;
pub use token::Token;
