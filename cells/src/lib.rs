//! A Sigil cell node.
//!
//! Bottom up (docs/architecture.md):
//! [`storage`] (RocksDB or in-memory) → [`barrier`] (AES-256-GCM under a
//! keyring) → [`seal`] (Shamir or PKCS#11, a pure [`seal::machine`] plus a
//! shell) → [`node`] (the system API both front ends call) → [`http`]
//! (Vault-compatible) and [`grpc`] (`sigil.v1`). [`server`] wires a node from
//! a [`config`], and [`cli`] is the `sigil` binary. [`audit`] records every
//! request and response to the enabled audit devices, fail-closed.
#![forbid(unsafe_code)]

pub mod aead;
pub mod api_error;
pub mod audit;
pub mod auth;
pub mod barrier;
pub mod cli;
pub mod clock;
pub mod cluster_pki;
pub mod config;
pub mod control_plane;
pub mod duration;
pub mod engine;
pub mod engines;
pub mod federation;
pub mod file_stream;
pub mod grpc;
pub mod http;
pub mod lease;
pub mod logical;
pub mod mesh;
pub mod metrics;
pub mod mounts;
pub mod node;
pub mod params;
pub mod pipeline;
pub mod policy;
pub mod process;
pub mod raft;
pub mod revocations;
pub mod seal;
pub mod server;
pub mod shamir;
pub mod storage;
pub mod telemetry;
pub mod testkit;
pub mod tls;
pub mod token;
pub mod view;

pub use api_error::ApiError;

#[cfg(test)]
mod canary_tests;
#[cfg(test)]
pub(crate) mod node_testing;
pub use node::Node;
