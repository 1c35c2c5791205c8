//! Errors of setting up the cluster PKI: issuing, loading and writing
//! certificates and building TLS configurations. These are configuration
//! problems, fatal to the node that meets them; failures of individual
//! connections are [`super::ConnectError`]s (dialling) or logged (accepting).

use std::path::PathBuf;

use super::identity::CellId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A cell or node id outside the grammar of [`CellId`].
    #[error("invalid {kind} id {value:?}: {reason}")]
    InvalidId {
        kind: &'static str,
        value: String,
        reason: &'static str,
    },

    /// A host for a node certificate that is neither an IP address nor a DNS name.
    #[error("invalid host {host:?} for a node certificate: {reason}")]
    InvalidHost { host: String, reason: &'static str },

    /// A node certificate without any address would pass no peer's server
    /// name check.
    #[error("a node certificate needs at least one host (an IP address or DNS name peers dial)")]
    NoHosts,

    /// The certificate does not carry exactly one well-formed Sigil node
    /// SPIFFE ID.
    #[error("certificate carries no sigil node identity: {reason}")]
    NoIdentity { reason: String },

    /// A node was given a certificate of another cell than the one it serves.
    #[error(
        "node certificate names cell {certificate}, but the node is configured for cell {expected}"
    )]
    CellMismatch {
        certificate: CellId,
        expected: CellId,
    },

    /// The CA certificate lacks the basic constraints of a CA.
    #[error("{what} is not a CA certificate (no basic constraints with cA set)")]
    NotCa { what: String },

    /// A PEM file that cannot be read or does not hold what it should.
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },

    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),

    /// rustls refused a key or certificate (for example a key that does not
    /// match its certificate).
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),

    #[error("tls verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),

    #[error("the system random number generator failed")]
    Random,
}
