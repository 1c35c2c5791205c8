//! Certificate verifiers for the cluster port: rustls's WebPKI verifiers
//! (chain to the cell CA, validity, key purpose, and for servers the dialled
//! name), then a check that the peer's SPIFFE ID names our cell.
//!
//! The cell check matters even with one CA per cell: an operator may supply
//! one CA for several cells, and a certificate issued for another cell must
//! not be able to join this one.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::identity::{CellId, NodeIdentity};

/// The identity in a verified peer certificate, if it names `expected`.
/// The error text is what ends up in both ends' logs, so it says what was
/// presented and what was wanted.
pub(super) fn check_cell(
    end_entity: &CertificateDer<'_>,
    expected: &CellId,
) -> Result<NodeIdentity, rustls::Error> {
    let identity = NodeIdentity::from_der(end_entity)
        .map_err(|e| rustls::Error::General(format!("peer certificate: {e}")))?;
    if identity.cell != *expected {
        return Err(rustls::Error::General(format!(
            "peer certificate names cell {}, expected {expected}",
            identity.cell
        )));
    }
    Ok(identity)
}

/// Server side: a client certificate must chain to the CA configured for
/// the cell it names — this cell's own, or a federated peer's — so one
/// cell's CA cannot vouch for a node of another. Without peers, only this
/// cell's nodes get in. Which services a peer cell may then call is for the
/// services to decide (the Raft service admits this cell only).
#[derive(Debug)]
pub(super) struct FederatedClientVerifier {
    own_cell: CellId,
    own: Arc<dyn ClientCertVerifier>,
    /// Each federated cell's verifier (this cell's is `own`).
    peers: std::collections::BTreeMap<CellId, Arc<dyn ClientCertVerifier>>,
}

impl FederatedClientVerifier {
    /// `own` verifies this cell's nodes; `peers` each federated cell's.
    pub(super) fn new(
        own: (CellId, Arc<dyn ClientCertVerifier>),
        peers: Vec<(CellId, Arc<dyn ClientCertVerifier>)>,
    ) -> Self {
        let peers = peers.into_iter().filter(|(c, _)| *c != own.0).collect();
        Self {
            own_cell: own.0,
            own: own.1,
            peers,
        }
    }
}

impl ClientCertVerifier for FederatedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Clients have one certificate each; hints would only list CAs.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The chain is checked before anything is read from the
        // certificate: against this cell's CA, then each peer's. The CA that
        // vouches for it decides which cell it must name.
        let mut refusal = None;
        for (cell, inner) in std::iter::once((&self.own_cell, &self.own)).chain(&self.peers) {
            match inner.verify_client_cert(end_entity, intermediates, now) {
                Ok(verified) => {
                    check_cell(end_entity, cell)?;
                    return Ok(verified);
                }
                Err(e) => {
                    refusal.get_or_insert(e);
                }
            }
        }
        Err(refusal.unwrap_or(rustls::Error::General(
            "no CA to verify the peer certificate".into(),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.own.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.own.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.own.supported_verify_schemes()
    }
}

/// Client side: accepts a server certificate from the cell CA, valid for
/// the dialled name, naming the cell.
#[derive(Debug)]
pub(super) struct CellServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    cell: CellId,
}

impl CellServerVerifier {
    pub(super) fn new(inner: Arc<WebPkiServerVerifier>, cell: CellId) -> Self {
        Self { inner, cell }
    }
}

impl ServerCertVerifier for CellServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        check_cell(end_entity, &self.cell)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}
