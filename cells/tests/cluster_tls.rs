//! Mutual TLS on the cluster port, over real sockets on 127.0.0.1: tonic
//! serving through `ClusterIncoming` and dialling through
//! `ClusterConnector`, and every way a peer of the wrong cell, CA or no
//! certificate at all is turned away, with the reason in the server's log.
//!
//! Each test runs on a current-thread runtime so that the log capture,
//! installed for the test's thread, sees what the server's tasks log.

use std::convert::Infallible;
use std::future::Ready;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::ServerName;
use sigil_cell::cluster_pki::{
    CellCa, CellId, ClusterConnectInfo, ClusterConnector, ClusterIncoming, ClusterStream,
    ConnectError, NodeCertificate, NodeId, client_config, peer_identity, server_config,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::{Endpoint, Server};
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(10);

fn cell(s: &str) -> CellId {
    CellId::new(s).expect("cell id")
}

fn issue(ca: &CellCa, c: &str, n: &str) -> NodeCertificate {
    ca.issue_node(
        &cell(c),
        &NodeId::new(n).expect("node id"),
        &["127.0.0.1".to_owned(), "localhost".to_owned()],
    )
    .expect("issue")
}

/// A cell `a` with its CA, a server node and a client node.
struct Cell {
    ca: CellCa,
    server: NodeCertificate,
    client: NodeCertificate,
}

impl Cell {
    fn new() -> Self {
        let ca = CellCa::generate(&cell("a")).expect("ca");
        let server = issue(&ca, "a", "server");
        let client = issue(&ca, "a", "client");
        Self { ca, server, client }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        server_config(self.ca.certificate(), &self.server, &cell("a")).expect("server config")
    }

    fn connector(&self) -> ClusterConnector {
        ClusterConnector::new(
            client_config(self.ca.certificate(), &self.client, &cell("a")).expect("client config"),
        )
    }

    /// A client config that trusts this cell's CA but presents `cert`,
    /// however it was issued: an impostor the server has to refuse.
    fn impostor(&self, cert: Option<&NodeCertificate>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca.certificate().der().clone())
            .expect("root");
        let builder = rustls::ClientConfig::builder_with_provider(sigil_cell::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(cert) => builder
                .with_client_auth_cert(vec![cert.certificate().clone()], cert.key().to_rustls())
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        config
    }
}

/// Everything the code under test logs on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }

    /// Waits until a `warn` line containing every one of `parts` shows up.
    async fn wait_for_warning(&self, parts: &[&str]) -> String {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(line) = self
                    .text()
                    .lines()
                    .find(|l| l.contains("WARN") && parts.iter().all(|p| l.contains(p)))
                {
                    return line.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no warning with {parts:?} in:\n{}", self.text()))
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serves `config` on a random port and hands over every connection that
/// completes its handshake.
async fn accept_into_channel(
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
) -> (SocketAddr, mpsc::UnboundedReceiver<ClusterStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let incoming = ClusterIncoming::new(listener, config).with_handshake_timeout(handshake_timeout);
    let addr = incoming.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        while let Some(Ok(stream)) = incoming.next().await {
            if tx.send(stream).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// Dials `addr` with a raw rustls client. `Err` with the client's view of
/// the failure when the server refuses; `Ok` if the server kept the
/// connection open without a word until the wait ran out. In TLS
/// 1.3 the server judges the client's certificate after the client has
/// finished, so a refusal shows on the first read.
async fn dial(config: rustls::ClientConfig, addr: SocketAddr) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(WAIT, tls.read(&mut byte)).await {
        Err(_) => Ok(()),
        Ok(Ok(0)) => Err("closed by server".to_owned()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

/// Every message in an error's chain, outermost first.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}

/// A route answering with the caller's SPIFFE ID and address, as tonic
/// hands them to a handler.
#[derive(Clone)]
struct WhoAmI;

impl tonic::server::NamedService for WhoAmI {
    const NAME: &'static str = "sigil.test.WhoAmI";
}

impl tower::Service<http::Request<tonic::body::Body>> for WhoAmI {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let request = tonic::Request::from_http(request);
        let who = peer_identity(&request).map_or_else(|| "nobody".to_owned(), |p| p.to_string());
        let from = request
            .extensions()
            .get::<ClusterConnectInfo>()
            .map(|info| info.remote_addr().ip().to_string())
            .unwrap_or_default();
        let body = tonic::body::Body::new(Full::new(Bytes::from(format!("{who} {from}"))));
        std::future::ready(Ok(http::Response::new(body)))
    }
}

async fn ask_who(channel: tonic::transport::Channel) -> String {
    let request = http::Request::builder()
        .method("POST")
        .uri("/sigil.test.WhoAmI/Who")
        .body(tonic::body::Body::empty())
        .expect("request");
    let response = channel.oneshot(request).await.expect("response");
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8(body.to_vec()).expect("utf-8")
}

#[tokio::test]
async fn tonic_route_sees_the_verified_peer_identity() {
    let (_logs, _guard) = Logs::capture();
    let cell_a = Cell::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let incoming = ClusterIncoming::new(listener, cell_a.server_config());
    let port = incoming.local_addr().expect("addr").port();
    let server = tokio::spawn(
        Server::builder()
            .add_service(WhoAmI)
            .serve_with_incoming(incoming),
    );

    // By IP address, eagerly.
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(WAIT)
        .connect_with_connector(cell_a.connector())
        .await
        .expect("connect");
    assert_eq!(
        ask_who(channel).await,
        "spiffe://a.sigil/node/client 127.0.0.1"
    );

    // By DNS name, lazily.
    let channel = Endpoint::from_shared(format!("http://localhost:{port}"))
        .expect("endpoint")
        .connect_with_connector_lazy(cell_a.connector());
    assert_eq!(
        ask_who(channel).await,
        "spiffe://a.sigil/node/client 127.0.0.1"
    );
    server.abort();
}

#[tokio::test]
async fn streams_exchange_bytes_and_know_their_peer() {
    let (_logs, _guard) = Logs::capture();
    let cell_a = Cell::new();
    let (addr, mut accepted) = accept_into_channel(cell_a.server_config(), WAIT).await;

    let uri: http::Uri = format!("http://{addr}").parse().expect("uri");
    let client = cell_a.connector().oneshot(uri).await.expect("connect");
    let mut client = client.into_inner();
    let mut server = tokio::time::timeout(WAIT, accepted.recv())
        .await
        .expect("accepted in time")
        .expect("a stream");
    assert_eq!(server.peer().to_string(), "spiffe://a.sigil/node/client");
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    client.write_all(b"ping").await.expect("client write");
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.expect("server read");
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").await.expect("server write");
    client.read_exact(&mut buf).await.expect("client read");
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn client_of_another_cells_ca_is_refused() {
    let (logs, _guard) = Logs::capture();
    let cell_a = Cell::new();
    let (addr, mut accepted) = accept_into_channel(cell_a.server_config(), WAIT).await;

    // Cell b's CA vouching for a node that claims to be in cell a.
    let ca_b = CellCa::generate(&cell("b")).expect("b's ca");
    let err = dial(cell_a.impostor(Some(&issue(&ca_b, "a", "client"))), addr)
        .await
        .expect_err("refused");
    assert!(err.contains("alert"), "{err}");
    logs.wait_for_warning(&[
        "cluster tls handshake failed",
        "peer=127.0.0.1:",
        "UnknownIssuer",
    ])
    .await;

    // A CA posing as cell a's: same subject, another key.
    let forger = CellCa::generate(&cell("a")).expect("forger");
    let err = dial(cell_a.impostor(Some(&issue(&forger, "a", "client"))), addr)
        .await
        .expect_err("refused");
    assert!(err.contains("alert"), "{err}");
    logs.wait_for_warning(&["cluster tls handshake failed", "BadSignature"])
        .await;
    assert!(accepted.try_recv().is_err(), "nothing accepted");
}

#[tokio::test]
async fn client_naming_another_cell_is_refused() {
    let (logs, _guard) = Logs::capture();
    let cell_a = Cell::new();
    // The right CA, but a certificate for cell "b".
    let other_cell = issue(&cell_a.ca, "b", "client");
    let (addr, mut accepted) = accept_into_channel(cell_a.server_config(), WAIT).await;

    let err = dial(cell_a.impostor(Some(&other_cell)), addr)
        .await
        .expect_err("refused");
    assert!(err.contains("HandshakeFailure"), "{err}");
    logs.wait_for_warning(&[
        "cluster tls handshake failed",
        "peer certificate names cell b, expected a",
    ])
    .await;
    assert!(accepted.try_recv().is_err(), "nothing accepted");
}

#[tokio::test]
async fn client_without_a_certificate_is_refused() {
    let (logs, _guard) = Logs::capture();
    let cell_a = Cell::new();
    let (addr, mut accepted) = accept_into_channel(cell_a.server_config(), WAIT).await;

    let err = dial(cell_a.impostor(None), addr)
        .await
        .expect_err("refused");
    assert!(err.contains("CertificateRequired"), "{err}");
    logs.wait_for_warning(&["cluster tls handshake failed", "peer sent no certificates"])
        .await;
    assert!(accepted.try_recv().is_err(), "nothing accepted");
}

#[tokio::test]
async fn server_naming_another_cell_is_refused_by_the_client() {
    let (_logs, _guard) = Logs::capture();
    let cell_a = Cell::new();
    // The right CA, but the server's certificate is for cell "b".
    let server_b = issue(&cell_a.ca, "b", "server");
    let config = server_config(cell_a.ca.certificate(), &server_b, &cell("b")).expect("config");
    let (addr, _accepted) = accept_into_channel(config, WAIT).await;

    let uri: http::Uri = format!("http://{addr}").parse().expect("uri");
    let err = cell_a.connector().oneshot(uri).await.expect_err("refused");
    assert!(matches!(err, ConnectError::Tls { .. }), "{err}");
    let text = chain(&err);
    assert!(
        text.contains("peer certificate names cell b, expected a"),
        "{text}"
    );

    // Through tonic the reason survives in the error chain too.
    let err = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_with_connector(cell_a.connector())
        .await
        .expect_err("refused");
    let text = chain(&err);
    assert!(
        text.contains("peer certificate names cell b, expected a"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_self_signed_server_is_refused_by_the_client() {
    let (_logs, _guard) = Logs::capture();
    let cell_a = Cell::new();
    let self_signed =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("self-signed");
    let key =
        rustls::pki_types::PrivateKeyDer::Pkcs8(self_signed.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(sigil_cell::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![self_signed.cert.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });

    let uri: http::Uri = format!("http://{addr}").parse().expect("uri");
    let err = cell_a.connector().oneshot(uri).await.expect_err("refused");
    let text = chain(&err);
    assert!(text.contains("UnknownIssuer"), "{text}");
}

#[tokio::test]
async fn incoming_survives_failed_and_stalled_handshakes() {
    let (logs, _guard) = Logs::capture();
    let cell_a = Cell::new();
    let (addr, mut accepted) =
        accept_into_channel(cell_a.server_config(), Duration::from_secs(1)).await;

    // A peer that connects and never speaks holds a handshake open...
    let _stalled = TcpStream::connect(addr).await.expect("stalled connect");
    // ...one that speaks something other than TLS fails at once...
    let mut garbage = TcpStream::connect(addr).await.expect("garbage connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("garbage write");
    // ...as does one naming another cell.
    let other_cell = issue(&cell_a.ca, "b", "client");
    dial(cell_a.impostor(Some(&other_cell)), addr)
        .await
        .expect_err("refused");

    // None of them keeps a good peer out, the stalled one included.
    let uri: http::Uri = format!("http://{addr}").parse().expect("uri");
    cell_a
        .connector()
        .oneshot(uri.clone())
        .await
        .expect("good client after bad ones");
    let first = tokio::time::timeout(WAIT, accepted.recv())
        .await
        .expect("accepted in time")
        .expect("a stream");
    assert_eq!(first.peer().node, "client");

    logs.wait_for_warning(&["cluster tls handshake failed", "InvalidContentType"])
        .await;
    logs.wait_for_warning(&["names cell b, expected a"]).await;
    logs.wait_for_warning(&["tls handshake did not complete within 1s"])
        .await;

    // And after the stalled one timed out, the port still takes peers.
    cell_a
        .connector()
        .oneshot(uri)
        .await
        .expect("good client after a timeout");
    let second = tokio::time::timeout(WAIT, accepted.recv())
        .await
        .expect("accepted in time")
        .expect("a stream");
    assert_eq!(second.peer().cell, "a");
}
