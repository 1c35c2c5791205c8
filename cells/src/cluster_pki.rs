//! Mutual TLS for the cell's cluster port.
//!
//! The nodes of one cell talk to each other (Raft append, vote and snapshot
//! streaming, request forwarding) over gRPC on a separate cluster port. Every
//! connection there is mutually authenticated: both ends present a node
//! certificate issued by the cell's own CA, and both ends check that the
//! peer's certificate names the same cell.
//!
//! - [`CellCa`]: the cell CA, generated at bootstrap (dev mode) or loaded
//!   from operator-supplied PEM files. Only the node that issues certificates
//!   needs its key; every node needs its certificate ([`CaCertificate`]).
//! - [`NodeCertificate`]: a node's leaf certificate and [`PrivateKey`]. Its
//!   identity ([`NodeIdentity`]) is a SPIFFE ID in the single URI SAN,
//!   `spiffe://<cell>.sigil/node/<node>`, beside DNS/IP SANs for the
//!   addresses peers dial.
//! - [`server_config`] / [`client_config`]: rustls configurations that only
//!   trust the cell CA and reject a peer of another cell.
//! - [`ClusterIncoming`] (for `Server::serve_with_incoming`) and
//!   [`ClusterConnector`] (for `Endpoint::connect_with_connector`): tonic's
//!   own TLS settings cannot carry custom verifiers, so TLS is done here and
//!   tonic sees plain byte streams. Handlers read the caller with
//!   [`peer_identity`].
//!
//! ```
//! use sigil_cell::cluster_pki::{CellCa, CellId, NodeId, client_config, server_config};
//!
//! let cell: CellId = "eu-west-1".parse()?;
//! let ca = CellCa::generate(&cell)?;
//! let node = ca.issue_node(&cell, &"node-1".parse::<NodeId>()?, &["127.0.0.1".to_owned()])?;
//! assert_eq!(node.identity().to_string(), "spiffe://eu-west-1.sigil/node/node-1");
//!
//! let server = server_config(ca.certificate(), &node, &cell)?;
//! let client = client_config(ca.certificate(), &node, &cell)?;
//! assert_eq!(server.alpn_protocols, vec![b"h2".to_vec()]);
//! assert_eq!(client.alpn_protocols, vec![b"h2".to_vec()]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Cluster endpoints are written `http://host:port`: the connector does TLS
//! itself, and tonic refuses an `https` URI it has no TLS settings for.

mod ca;
mod config;
mod connector;
mod error;
mod identity;
mod incoming;
mod node_certificate;
mod pem;
mod private_key;
mod verify;

pub use ca::{CaCertificate, CellCa};
pub use config::{client_config, federated_server_config, federation_client_config, server_config};
pub use connector::{ClusterConnector, ConnectError};
pub use error::PkiError;
pub use identity::{CellId, NodeId, NodeIdentity};
pub use incoming::{
    ClusterConnectInfo, ClusterIncoming, ClusterStream, DEFAULT_HANDSHAKE_TIMEOUT, peer_identity,
};
pub use node_certificate::NodeCertificate;
pub use private_key::PrivateKey;
