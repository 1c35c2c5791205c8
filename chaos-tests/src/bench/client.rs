//! One bench client: the same calls over either transport.
//!
//! Connections: every client task has its own connection, reused for all of
//! its requests: its own `reqwest::Client` (a pool that, in a closed loop,
//! holds one connection) and its own tonic `Channel` (one HTTP/2
//! connection), rather than all tasks multiplexing on one HTTP/2 connection.
//! N clients means N connections on both transports and over TLS alike (where
//! a shared reqwest pool would negotiate HTTP/2 and multiplex), as N
//! independent workloads would open, and the server's per-connection work is
//! spread the same way.

use std::error::Error as StdError;
use std::time::Duration;

use super::grpc::GrpcKv;
use super::http::HttpKv;
use super::workload::{KeySpace, Workload};
use super::{Target, Transport};
use crate::Error;
use crate::token::Token;

/// How long one operation may take before it counts as an error, so a
/// stalled server cannot hold a level open past its end indefinitely.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where one target listens.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The HTTP API's base URL, e.g. `http://127.0.0.1:8200`.
    pub http: reqwest::Url,
    /// The gRPC endpoint as a URI, e.g. `http://127.0.0.1:8201`.
    pub grpc: String,
}

/// What every client of a run shares.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// The KV v2 mount, without slashes, e.g. `secret`.
    pub mount: String,
    pub keys: KeySpace,
    pub token: Token,
    /// The value every write stores.
    pub value: String,
    /// PEM CA certificate(s) to trust for `https` endpoints.
    pub ca_cert: Option<Vec<u8>>,
}

/// One failed operation, counted in its level's row. The message is the
/// server's status and error text (never the token or a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

/// A client of one transport.
#[derive(Debug, Clone)]
pub enum Client {
    Http(HttpKv),
    Grpc(GrpcKv),
}

impl Client {
    /// A client of `target` over `transport`, connected (gRPC) or ready to
    /// connect on first use (HTTP).
    pub async fn connect(
        target: Target,
        transport: Transport,
        endpoints: &Endpoints,
        spec: &ClientSpec,
    ) -> Result<Client, Error> {
        super::install_crypto_provider();
        let fail = |endpoint: &str, reason: String| Error::Connect {
            target,
            transport,
            endpoint: endpoint.to_owned(),
            reason,
        };
        match transport {
            Transport::Http => HttpKv::new(&endpoints.http, spec)
                .map(Client::Http)
                .map_err(|e| fail(endpoints.http.as_str(), e)),
            Transport::Grpc => GrpcKv::connect(&endpoints.grpc, spec)
                .await
                .map(Client::Grpc)
                .map_err(|e| fail(&endpoints.grpc, e)),
        }
    }

    /// `count` independent clients, each with its own connection.
    /// `count` clients, spread round robin over `endpoints` (the nodes of
    /// a cell, or one node).
    pub async fn connect_many(
        target: Target,
        transport: Transport,
        endpoints: &[Endpoints],
        spec: &ClientSpec,
        count: usize,
    ) -> Result<Vec<Client>, Error> {
        let mut clients = Vec::with_capacity(count);
        for i in 0..count {
            let node = &endpoints[i % endpoints.len()];
            clients.push(Client::connect(target, transport, node, spec).await?);
        }
        Ok(clients)
    }

    /// One operation of `workload` on key `key`.
    pub async fn run(&mut self, workload: Workload, key: usize) -> Result<(), OpError> {
        match workload {
            Workload::KvRead => self.read(key).await,
            Workload::KvWrite => self.write(key).await,
        }
    }

    /// Reads the latest version of key `key`.
    pub async fn read(&mut self, key: usize) -> Result<(), OpError> {
        match self {
            Client::Http(c) => c.read(key).await,
            Client::Grpc(c) => c.read(key).await,
        }
    }

    /// Writes the run's value to key `key`.
    pub async fn write(&mut self, key: usize) -> Result<(), OpError> {
        match self {
            Client::Http(c) => c.write(key).await,
            Client::Grpc(c) => c.write(key).await,
        }
    }
}

/// An error and its sources, `outer: inner: root`, since transport errors
/// keep the useful part ("connection refused") in their sources.
pub(crate) fn describe(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}
