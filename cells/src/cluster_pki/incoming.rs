//! The server side of the cluster port for tonic: a stream of mutually
//! authenticated TLS connections to hand to `serve_with_incoming`.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use super::error::PkiError;
use super::identity::NodeIdentity;

/// How long a peer has to complete its TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once. Past this the listener is left alone
/// until some finish, so a flood of stalled connections costs bounded memory
/// and queues in the kernel's backlog instead.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// Pause after an accept error that is not about one connection (such as
/// running out of file descriptors), so the loop does not spin on it.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

type Handshake =
    Pin<Box<dyn Future<Output = (SocketAddr, Result<ClusterStream, HandshakeError>)> + Send>>;

/// Why one incoming connection was dropped. Logged, never returned: one
/// peer's failure must not stop the port.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("tls handshake did not complete within {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Tls(io::Error),
    #[error("no client certificate after the handshake")]
    NoClientCertificate,
    #[error("{0}")]
    Identity(PkiError),
}

/// Accepted connections that completed the mutual TLS handshake, for
/// `tonic::transport::Server::serve_with_incoming`.
///
/// Each accepted TCP connection's handshake runs under a timeout,
/// concurrently with the others and with accepting. A failed or timed-out
/// handshake is logged at `warn` with the peer address and dropped; the
/// stream goes on. Handshakes advance while the stream is polled, which the
/// server's accept loop does continuously. The stream never ends and never
/// yields an error.
pub struct ClusterIncoming {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    handshakes: FuturesUnordered<Handshake>,
    paused: Option<Pin<Box<Sleep>>>,
}

impl ClusterIncoming {
    /// `config` should come from [`super::server_config`], whose verifier
    /// guarantees every yielded connection has a verified peer identity.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> Self {
        Self {
            listener,
            acceptor: TlsAcceptor::from(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            handshakes: FuturesUnordered::new(),
            paused: None,
        }
    }

    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts handshakes for every connection waiting in the backlog, up
    /// to the limit.
    fn accept_waiting(&mut self, cx: &mut Context<'_>) {
        while self.handshakes.len() < MAX_PENDING_HANDSHAKES {
            if let Some(pause) = self.paused.as_mut() {
                if pause.as_mut().poll(cx).is_pending() {
                    return;
                }
                self.paused = None;
            }
            match self.listener.poll_accept(cx) {
                Poll::Pending => return,
                Poll::Ready(Ok((tcp, remote))) => {
                    let acceptor = self.acceptor.clone();
                    let timeout = self.handshake_timeout;
                    self.handshakes.push(Box::pin(async move {
                        (remote, handshake(acceptor, tcp, remote, timeout).await)
                    }));
                }
                Poll::Ready(Err(e)) if is_connection_error(&e) => {
                    debug!(error = %e, "cluster connection closed before it was accepted");
                }
                Poll::Ready(Err(e)) => {
                    warn!(error = %e, pause = ?ACCEPT_ERROR_PAUSE, "cluster listener cannot accept");
                    self.paused = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                }
            }
        }
    }
}

impl Stream for ClusterIncoming {
    type Item = Result<ClusterStream, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            // Accept again on every turn: a finished handshake frees a slot,
            // and the listener must be polled to be woken for new ones.
            this.accept_waiting(cx);
            match this.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some((_, Ok(stream)))) => return Poll::Ready(Some(Ok(stream))),
                Poll::Ready(Some((remote, Err(error)))) => {
                    warn!(peer = %remote, error = %error, "cluster tls handshake failed");
                }
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl fmt::Debug for ClusterIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterIncoming")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("handshake_timeout", &self.handshake_timeout)
            .field("pending_handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    timeout: Duration,
) -> Result<ClusterStream, HandshakeError> {
    // Raft messages are small and latency-bound; serve_with_incoming leaves
    // socket options to whoever accepted the socket.
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(peer = %remote, error = %e, "cannot set tcp_nodelay on cluster connection");
    }
    let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| HandshakeError::TimedOut(timeout))?
        .map_err(HandshakeError::Tls)?;
    let peer = {
        let (_, connection) = tls.get_ref();
        let certificate = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or(HandshakeError::NoClientCertificate)?;
        NodeIdentity::from_der(certificate).map_err(HandshakeError::Identity)?
    };
    debug!(peer = %remote, identity = %peer, "cluster peer connected");
    Ok(ClusterStream {
        inner: tls,
        info: ClusterConnectInfo {
            remote_addr: remote,
            peer,
        },
    })
}

/// Errors about one connection that went away between the kernel accepting
/// it and us picking it up; the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What tonic puts in each request's extensions for a cluster connection:
/// the peer's address and verified identity. See [`peer_identity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConnectInfo {
    remote_addr: SocketAddr,
    peer: NodeIdentity,
}

impl ClusterConnectInfo {
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// The identity in the client certificate, verified in the handshake.
    pub fn peer(&self) -> &NodeIdentity {
        &self.peer
    }
}

/// A cluster connection whose handshake completed and whose peer is
/// known.
#[derive(Debug)]
pub struct ClusterStream {
    inner: TlsStream<TcpStream>,
    info: ClusterConnectInfo,
}

impl ClusterStream {
    pub fn peer(&self) -> &NodeIdentity {
        &self.info.peer
    }
}

impl Connected for ClusterStream {
    type ConnectInfo = ClusterConnectInfo;

    fn connect_info(&self) -> ClusterConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for ClusterStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClusterStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The verified identity of the node that sent `request`, when it came in
/// through [`ClusterIncoming`]; `None` for requests from anywhere else.
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<NodeIdentity> {
    request
        .extensions()
        .get::<ClusterConnectInfo>()
        .map(|info| info.peer.clone())
}
