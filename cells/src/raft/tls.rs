//! The cluster port's mutual TLS, wired to Raft: the cell CA and this
//! node's certificate (loaded, or generated for a one-node cell), and the
//! [`Connector`] that dials peers through [`ClusterConnector`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cluster_pki::{
    CaCertificate, CellCa, CellId, ClusterConnector, NodeCertificate, NodeId, PkiError,
    client_config,
};

use super::network::Connector;

/// Where a node without configured cluster certificates keeps generated
/// ones (`<data_dir>/cluster-tls`).
pub const GENERATED_DIR: &str = "cluster-tls";

/// The cell CA and this node's certificate.
#[derive(Debug)]
pub struct ClusterTls {
    pub ca: CaCertificate,
    pub node: NodeCertificate,
    pub cell: CellId,
}

/// Where the cluster certificates come from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// Operator-supplied PEM files: CA certificate, node certificate, key.
    Files {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
    /// Generated once under `dir` (a cell of one node, founded here).
    Generated { dir: PathBuf, hosts: Vec<String> },
}

impl ClusterTls {
    /// Loads (or generates) the material and checks that the node
    /// certificate names this cell and node.
    pub fn load(source: &TlsSource, cell: &str, node: &str) -> Result<Self, PkiError> {
        let cell = CellId::new(cell)?;
        let node_id = NodeId::new(node)?;
        let cert_path = match source {
            TlsSource::Files { cert, .. } => cert.clone(),
            TlsSource::Generated { dir, .. } => dir.join("node.pem"),
        };
        let (ca, cert) = match source {
            TlsSource::Files { ca, cert, key } => {
                (CaCertificate::load(ca)?, NodeCertificate::load(cert, key)?)
            }
            TlsSource::Generated { dir, hosts } => generated(dir, &cell, &node_id, hosts)?,
        };
        let id = cert.identity();
        if id.cell != cell || id.node != node_id {
            return Err(PkiError::File {
                path: cert_path,
                problem: format!(
                    "the certificate names {id}, but this node is {node} in cell {cell}"
                ),
            });
        }
        Ok(Self {
            ca,
            node: cert,
            cell,
        })
    }

    pub fn connector(&self) -> Result<Arc<dyn Connector>, PkiError> {
        let config = client_config(&self.ca, &self.node, &self.cell)?;
        Ok(Arc::new(MtlsConnector {
            config: Arc::new(config),
        }))
    }
}

fn generated(
    dir: &Path,
    cell: &CellId,
    node: &NodeId,
    hosts: &[String],
) -> Result<(CaCertificate, NodeCertificate), PkiError> {
    let ca_cert = dir.join("cluster-ca.pem");
    let ca_key = dir.join("cluster-ca-key.pem");
    let ca = if ca_cert.exists() {
        CellCa::load(&ca_cert, &ca_key)?
    } else {
        std::fs::create_dir_all(dir).map_err(|e| PkiError::Write {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let ca = CellCa::generate(cell)?;
        ca.write_to(dir)?;
        tracing::info!(dir = %dir.display(), cell = %cell, "generated a cluster CA for this cell");
        ca
    };
    let node_cert = dir.join("node.pem");
    let node_key = dir.join("node-key.pem");
    let cert = if node_cert.exists() {
        NodeCertificate::load(&node_cert, &node_key)?
    } else {
        let cert = ca.issue_node(cell, node, hosts)?;
        cert.write_to(dir)?;
        cert
    };
    Ok((ca.certificate().clone(), cert))
}

/// Dials peers over mutual TLS.
#[derive(Debug)]
pub struct MtlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl Connector for MtlsConnector {
    fn probe(
        &self,
        addr: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + '_>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            use tokio::io::AsyncReadExt;
            let (host, _) = addr.rsplit_once(':')?;
            let name = rustls::pki_types::ServerName::try_from(host.to_owned()).ok()?;
            let tcp = tokio::net::TcpStream::connect(&addr).await.ok()?;
            let connector = tokio_rustls::TlsConnector::from(self.config.clone());
            let mut tls = match connector.connect(name, tcp).await {
                Ok(t) => t,
                Err(e) => return Some(format!("tls handshake with {addr} failed: {e}")),
            };
            // A server that accepted the certificate waits for the client to
            // speak first; one that refused it sends an alert at once.
            let mut byte = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(500), tls.read(&mut byte)).await {
                Ok(Err(e)) => Some(format!("{addr} refused this node's certificate: {e}")),
                Ok(Ok(0)) => Some(format!(
                    "{addr} closed the connection after the tls handshake"
                )),
                _ => None,
            }
        })
    }

    fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, String> {
        Ok(super::network::endpoint(addr)?
            .connect_with_connector_lazy(ClusterConnector::new(self.config.clone())))
    }
}
