//! The bare servers: the floor a Sigil figure is compared with.
//!
//! `--bare` starts, in this process, an axum server and a tonic server that
//! answer the bench's requests with fixed, Vault-shaped responses of the same
//! size Sigil would send, doing no other work. Running the same client code
//! against them measures what the client, the transports and this machine
//! cost on their own, so Sigil ÷ bare is the share of the floor Sigil keeps.
//!
//! They run on their own multi-thread tokio runtime, built the way the
//! `sigil` binary builds its own (`new_multi_thread().enable_all()`, one
//! worker per core): the client's runtime and the server's compete for the
//! cores as they do when the bench and a local Sigil node share a machine.

mod bodies;
mod grpc;
mod http;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use crate::Error;
use crate::bench::Endpoints;

pub use bodies::Bodies;

/// The running bare servers; dropping this stops them.
#[derive(Debug)]
pub struct BareServers {
    endpoints: Endpoints,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    /// `Option` only so `Drop` can take it.
    runtime: Option<tokio::runtime::Runtime>,
}

impl BareServers {
    /// Binds both servers on 127.0.0.1, port 0, and starts serving reads and
    /// writes of `value_size`-byte values.
    pub fn start(value_size: usize) -> Result<Self, Error> {
        let bodies = Bodies::new(value_size);
        let bind = || -> std::io::Result<TcpListener> {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            // tokio adopts only non-blocking sockets.
            listener.set_nonblocking(true)?;
            Ok(listener)
        };
        let http_listener = bind().map_err(Error::Bare)?;
        let grpc_listener = bind().map_err(Error::Bare)?;
        let http_addr = http_listener.local_addr().map_err(Error::Bare)?;
        let grpc_addr = grpc_listener.local_addr().map_err(Error::Bare)?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bare-server")
            .build()
            .map_err(Error::Bare)?;
        runtime.spawn(http::serve(http_listener, bodies.clone()));
        runtime.spawn(grpc::serve(grpc_listener, bodies));

        let endpoints = Endpoints {
            http: reqwest::Url::parse(&format!("http://{http_addr}"))
                .map_err(|e| Error::Bare(std::io::Error::other(e)))?,
            grpc: format!("http://{grpc_addr}"),
        };
        Ok(Self {
            endpoints,
            http_addr,
            grpc_addr,
            runtime: Some(runtime),
        })
    }

    /// Where the bench's clients reach them.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The axum server's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The tonic server's address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }
}

impl Drop for BareServers {
    fn drop(&mut self) {
        // A runtime cannot be dropped (which blocks) from inside another
        // runtime's task; the bench drops this from async code.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
