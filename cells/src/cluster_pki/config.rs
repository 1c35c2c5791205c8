//! rustls configurations for the two ends of a cluster connection.
//!
//! Both ends speak TLS 1.3 only (every node runs this code, so there is no
//! older peer to accommodate) and offer only `h2` over ALPN, since the port
//! carries gRPC. Session resumption is off: a resumed session skips
//! certificate verification, and connections on this port are few and
//! long-lived, so every handshake verifies the peer in full.

use std::sync::Arc;

use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::ca::CaCertificate;
use super::error::PkiError;
use super::identity::CellId;
use super::node_certificate::NodeCertificate;
use super::verify::{CellServerVerifier, FederatedClientVerifier};

const ALPN_H2: &[u8] = b"h2";

fn roots(ca: &CaCertificate) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone())?;
    Ok(Arc::new(roots))
}

/// A node serves its own cell only; a certificate for another cell is a
/// deployment mistake best reported before any peer sees it.
fn check_own_cell(node: &NodeCertificate, expected_cell: &CellId) -> Result<(), PkiError> {
    if node.identity().cell != *expected_cell {
        return Err(PkiError::CellMismatch {
            certificate: node.identity().cell.clone(),
            expected: expected_cell.clone(),
        });
    }
    Ok(())
}

/// The cluster port's server config: presents `node`, and requires a client
/// certificate that chains to `ca` and names `expected_cell`.
pub fn server_config(
    ca: &CaCertificate,
    node: &NodeCertificate,
    expected_cell: &CellId,
) -> Result<Arc<ServerConfig>, PkiError> {
    check_own_cell(node, expected_cell)?;
    let verifier =
        FederatedClientVerifier::new((expected_cell.clone(), webpki_clients(ca)?), Vec::new());
    serving(Arc::new(verifier), node)
}

/// The cluster port's server config for a federated cell: presents `node`,
/// and requires a client certificate naming `expected_cell` and issued by
/// `ca`, or naming one of `peers`' cells and issued by that cell's CA.
pub fn federated_server_config(
    ca: &CaCertificate,
    node: &NodeCertificate,
    expected_cell: &CellId,
    peers: &[(CellId, CaCertificate)],
) -> Result<Arc<ServerConfig>, PkiError> {
    if peers.is_empty() {
        return server_config(ca, node, expected_cell);
    }
    check_own_cell(node, expected_cell)?;
    let peers = peers
        .iter()
        .map(|(cell, ca)| Ok((cell.clone(), webpki_clients(ca)?)))
        .collect::<Result<Vec<_>, PkiError>>()?;
    let verifier =
        FederatedClientVerifier::new((expected_cell.clone(), webpki_clients(ca)?), peers);
    serving(Arc::new(verifier), node)
}

/// WebPKI verification of client certificates against `ca` alone.
fn webpki_clients(ca: &CaCertificate) -> Result<Arc<dyn ClientCertVerifier>, PkiError> {
    Ok(WebPkiClientVerifier::builder_with_provider(roots(ca)?, crate::tls::provider()).build()?)
}

/// TLS 1.3, h2 only, no resumption, presenting `node`.
fn serving(
    verifier: Arc<dyn ClientCertVerifier>,
    node: &NodeCertificate,
) -> Result<Arc<ServerConfig>, PkiError> {
    let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(node.certified_key())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client config with which a node of this cell dials a federated peer
/// cell: trusts the peer's CA alone, requires the server's certificate to
/// be valid for the dialled host and to name `peer_cell`, and presents
/// `node` (this cell's certificate).
pub fn federation_client_config(
    peer_ca: &CaCertificate,
    node: &NodeCertificate,
    peer_cell: &CellId,
) -> Result<ClientConfig, PkiError> {
    dialling(peer_ca, node, peer_cell)
}

/// The cluster port's client config: trusts `ca` alone (no system roots),
/// requires the server's certificate to be valid for the dialled host and
/// to name `expected_cell`, and presents `node`.
pub fn client_config(
    ca: &CaCertificate,
    node: &NodeCertificate,
    expected_cell: &CellId,
) -> Result<ClientConfig, PkiError> {
    check_own_cell(node, expected_cell)?;
    dialling(ca, node, expected_cell)
}

/// TLS 1.3, h2 only, no resumption: trusts `ca` for servers naming `cell`,
/// presents `node`.
fn dialling(
    ca: &CaCertificate,
    node: &NodeCertificate,
    cell: &CellId,
) -> Result<ClientConfig, PkiError> {
    let provider = crate::tls::provider();
    let webpki =
        WebPkiServerVerifier::builder_with_provider(roots(ca)?, Arc::clone(&provider)).build()?;
    let verifier = CellServerVerifier::new(webpki, cell.clone());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(node.certified_key())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::super::ca::CellCa;
    use super::super::identity::NodeId;
    use super::super::verify::check_cell;
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::server::danger::ClientCertVerifier;

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

    fn client_verifier(ca: &CellCa, c: &str) -> FederatedClientVerifier {
        let provider = crate::tls::provider();
        let inner = WebPkiClientVerifier::builder_with_provider(
            roots(ca.certificate()).expect("roots"),
            provider,
        )
        .build()
        .expect("verifier");
        FederatedClientVerifier::new((cell(c), inner), Vec::new())
    }

    fn server_verifier(ca: &CellCa, c: &str) -> CellServerVerifier {
        let provider = crate::tls::provider();
        let inner = WebPkiServerVerifier::builder_with_provider(
            roots(ca.certificate()).expect("roots"),
            provider,
        )
        .build()
        .expect("verifier");
        CellServerVerifier::new(inner, cell(c))
    }

    fn verify_as_client(v: &FederatedClientVerifier, node: &NodeCertificate) -> Result<(), String> {
        v.verify_client_cert(node.certificate(), &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn verify_as_server(v: &CellServerVerifier, node: &NodeCertificate) -> Result<(), String> {
        let name = ServerName::try_from("localhost").expect("name");
        v.verify_server_cert(node.certificate(), &[], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn verifiers_accept_the_cell_and_refuse_everything_else() {
        let ca = CellCa::generate(&cell("a")).expect("ca");
        let good = issue(&ca, "a", "n1");
        let other_cell = issue(&ca, "b", "n1");
        // Cell b's CA issuing a certificate that claims cell a.
        let foreign = issue(&CellCa::generate(&cell("b")).expect("b's ca"), "a", "n1");
        // A CA posing as cell a's, same subject, other key.
        let forged = issue(&CellCa::generate(&cell("a")).expect("forger"), "a", "n1");

        let client = client_verifier(&ca, "a");
        let server = server_verifier(&ca, "a");
        assert!(client.client_auth_mandatory());
        assert_eq!(verify_as_client(&client, &good), Ok(()));
        assert_eq!(verify_as_server(&server, &good), Ok(()));

        for result in [
            verify_as_client(&client, &other_cell),
            verify_as_server(&server, &other_cell),
        ] {
            let err = result.expect_err("other cell");
            assert!(
                err.contains("peer certificate names cell b, expected a"),
                "{err}"
            );
        }
        for result in [
            verify_as_client(&client, &foreign),
            verify_as_server(&server, &foreign),
        ] {
            let err = result.expect_err("foreign ca");
            assert!(err.contains("UnknownIssuer"), "{err}");
        }
        for result in [
            verify_as_client(&client, &forged),
            verify_as_server(&server, &forged),
        ] {
            let err = result.expect_err("forged ca");
            assert!(err.contains("BadSignature"), "{err}");
        }
    }

    #[test]
    fn a_federated_verifier_checks_each_cell_against_its_own_ca() {
        let a = CellCa::generate(&cell("a")).expect("a's ca");
        let b = CellCa::generate(&cell("b")).expect("b's ca");
        let webpki = |ca: &CellCa| webpki_clients(ca.certificate()).expect("verifier");
        let v =
            FederatedClientVerifier::new((cell("a"), webpki(&a)), vec![(cell("b"), webpki(&b))]);
        assert_eq!(verify_as_client(&v, &issue(&a, "a", "n1")), Ok(()));
        assert_eq!(verify_as_client(&v, &issue(&b, "b", "n1")), Ok(()));
        // Each CA vouches for its own cell only.
        let err = verify_as_client(&v, &issue(&b, "a", "n1")).expect_err("b's CA claiming a");
        assert!(err.contains("names cell a, expected b"), "{err}");
        let err = verify_as_client(&v, &issue(&a, "b", "n1")).expect_err("a's CA claiming b");
        assert!(err.contains("names cell b, expected a"), "{err}");
        // A cell with a CA of its own that is not configured.
        let c = CellCa::generate(&cell("c")).expect("c's ca");
        let err = verify_as_client(&v, &issue(&c, "c", "n1")).expect_err("unknown cell");
        assert!(err.contains("UnknownIssuer"), "{err}");
    }

    #[test]
    fn server_verifier_still_checks_the_dialled_name() {
        let ca = CellCa::generate(&cell("a")).expect("ca");
        let good = issue(&ca, "a", "n1");
        let server = server_verifier(&ca, "a");
        let name = ServerName::try_from("node-2.example").expect("name");
        let err = server
            .verify_server_cert(good.certificate(), &[], &name, &[], UnixTime::now())
            .expect_err("wrong name");
        assert!(err.to_string().contains("not valid for name"), "{err}");
    }

    #[test]
    fn a_self_signed_certificate_is_refused() {
        let ca = CellCa::generate(&cell("a")).expect("ca");
        let self_signed =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("self-signed");
        let client = client_verifier(&ca, "a");
        let err = client
            .verify_client_cert(self_signed.cert.der(), &[], UnixTime::now())
            .expect_err("self-signed");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        // Without a chain to the CA, its lack of a SPIFFE ID is never reached;
        // on its own it is refused with a reason too.
        let err = check_cell(self_signed.cert.der(), &cell("a")).expect_err("no id");
        assert!(
            err.to_string().contains("no URI subject alternative name"),
            "{err}"
        );
    }

    #[test]
    fn configs_offer_h2_over_tls13_without_resumption() {
        let ca = CellCa::generate(&cell("a")).expect("ca");
        let node = issue(&ca, "a", "n1");
        let server = server_config(ca.certificate(), &node, &cell("a")).expect("server");
        assert_eq!(server.alpn_protocols, vec![b"h2".to_vec()]);
        assert_eq!(server.send_tls13_tickets, 0);
        let client = client_config(ca.certificate(), &node, &cell("a")).expect("client");
        assert_eq!(client.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(client.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn configs_refuse_a_node_certificate_of_another_cell() {
        let ca = CellCa::generate(&cell("a")).expect("ca");
        let node = issue(&ca, "b", "n1");
        for err in [
            server_config(ca.certificate(), &node, &cell("a")).expect_err("server"),
            client_config(ca.certificate(), &node, &cell("a")).expect_err("client"),
        ] {
            assert!(
                matches!(&err, PkiError::CellMismatch { certificate, expected }
                    if certificate == "b" && expected == "a"),
                "{err}"
            );
        }
    }
}
