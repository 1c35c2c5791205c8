//! The client side of the cluster port for tonic: a connector doing TCP and
//! then TLS with [`super::client_config`], for
//! `Endpoint::connect_with_connector` and `connect_with_connector_lazy`.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why dialling a peer failed. All are worth retrying except
/// [`ConnectError::InvalidUri`], which is a configuration mistake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("cluster endpoint {uri}: {reason}")]
    InvalidUri { uri: String, reason: &'static str },
    #[error("cannot connect to {host}:{port}: {source}")]
    Tcp {
        host: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    /// The handshake failed; the source says why, such as the peer's
    /// certificate naming another cell.
    #[error("tls handshake with {host}:{port} failed: {source}")]
    Tls {
        host: String,
        port: u16,
        #[source]
        source: io::Error,
    },
}

/// Connects to `http://host:port` URIs over TCP and TLS. The host is both
/// where to connect and the name the server's certificate must be valid for;
/// IP addresses work, matched against the certificate's IP SANs.
///
/// Set `Endpoint::connect_timeout` to bound the TCP connect and TLS
/// handshake together.
#[derive(Clone)]
pub struct ClusterConnector {
    tls: TlsConnector,
}

impl ClusterConnector {
    pub fn new(config: impl Into<Arc<ClientConfig>>) -> Self {
        Self {
            tls: TlsConnector::from(config.into()),
        }
    }
}

impl std::fmt::Debug for ClusterConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConnector").finish_non_exhaustive()
    }
}

/// Where to dial and what name to verify, from an endpoint URI.
fn target(uri: &Uri) -> Result<(String, u16, ServerName<'static>), ConnectError> {
    let invalid = |reason| ConnectError::InvalidUri {
        uri: uri.to_string(),
        reason,
    };
    if uri.scheme_str() == Some("https") {
        // tonic would look for its own TLS settings and refuse the
        // connection after we had done the handshake.
        return Err(invalid(
            "use the http scheme; the cluster connector does TLS itself",
        ));
    }
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let port = uri
        .port_u16()
        .ok_or_else(|| invalid("no port; the cluster port has no default"))?;
    // http::Uri keeps IPv6 literals in brackets.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let name = match bare.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(bare.to_owned())
            .map_err(|_| invalid("host is neither an IP address nor a DNS name"))?,
    };
    Ok((bare.to_owned(), port, name))
}

impl tower::Service<Uri> for ClusterConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let (host, port, name) = target(&uri)?;
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|source| ConnectError::Tcp {
                    host: host.clone(),
                    port,
                    source,
                })?;
            // Raft messages are small and latency-bound.
            let _ = tcp.set_nodelay(true);
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|source| ConnectError::Tls { host, port, source })?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_http_uris() {
        let (host, port, name) = target(&Uri::from_static("http://127.0.0.1:7401")).expect("ipv4");
        assert_eq!((host.as_str(), port), ("127.0.0.1", 7401));
        assert!(matches!(name, ServerName::IpAddress(_)));

        let (host, _, name) = target(&Uri::from_static("http://[::1]:7401")).expect("ipv6");
        assert_eq!(host, "::1");
        assert!(matches!(name, ServerName::IpAddress(_)));

        let (host, _, name) =
            target(&Uri::from_static("http://node-1.cell.internal:7401/")).expect("dns");
        assert_eq!(host, "node-1.cell.internal");
        assert!(matches!(name, ServerName::DnsName(_)));

        for (uri, why) in [
            ("https://127.0.0.1:7401", "http scheme"),
            ("http://127.0.0.1", "no port"),
            ("/path/only", "no host"),
        ] {
            let err = target(&Uri::from_static(uri)).expect_err(uri);
            assert!(err.to_string().contains(why), "{uri}: {err}");
        }
    }
}
