//! Audit devices: every request and response, written as Vault's JSON audit
//! log with secrets HMACed, to one or more devices, each line hash-chained
//! to the one before it (docs/audit.md).
//!
//! # Contract: fail-closed
//!
//! The pipeline calls [`AuditBroker::log_request`] before a request runs and
//! [`AuditBroker::log_response`] before its response leaves. Each call
//! returns `Ok` as soon as **one** enabled device has written the record,
//! and [`AuditError::NoDeviceRecorded`] when none did within its
//! `write_timeout`; the pipeline must then fail the request (Vault answers
//! 500). With no device enabled, auditing is off and every call succeeds.
//!
//! Unlike Vault, one blocked device does not block requests while another
//! works: a device whose queue is full has the record dropped for it alone,
//! counted in [`AuditBroker::metrics`] and marked in its chain as `missed`.
//!
//! # Layout
//!
//! [`record`] builds the entry and redacts it; [`chain`] adds `seq` and
//! `prev_hash`; [`device`] holds the options, the [`Sink`] trait and the
//! per-device writer task; [`file`], [`socket`] and [`memory`] are the sinks;
//! [`broker`] is the set of devices; [`verify`] checks a written log.

pub mod broker;
pub mod chain;
pub mod device;
pub mod file;
pub mod memory;
pub mod record;
pub mod socket;
pub mod verify;

use std::io;

pub use broker::{AuditBroker, AuditMetrics};
pub use device::{DeviceConfig, DeviceMetrics, Sink};
pub use record::{AuditAuth, AuditMount, AuditRequest, AuditResponse, AuditWrapInfo, hash_value};
pub use verify::{VerifyReport, verify_file, verify_reader};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Every device failed or timed out: the request must fail.
    #[error("no audit device recorded the request")]
    NoDeviceRecorded,
    #[error("audit device type {0:?} is not supported (use \"file\" or \"socket\")")]
    UnsupportedType(String),
    #[error("unknown audit device option {0:?}")]
    UnknownOption(String),
    #[error("missing required audit device option {0:?}")]
    MissingOption(&'static str),
    #[error("invalid audit device option {option:?}: {reason}")]
    InvalidOption { option: String, reason: String },
    #[error("invalid audit device path {0:?}")]
    InvalidPath(String),
    #[error("audit device path {0:?} is already in use")]
    PathInUse(String),
    #[error("no audit device at {0:?}")]
    NotFound(String),
    #[error("cannot open audit file {target}: {source}")]
    Open { target: String, source: io::Error },
    #[error("audit device {path}: {reason}")]
    Device { path: String, reason: String },
    #[error("audit devices need a tokio runtime")]
    NoRuntime,
}

impl AuditError {
    /// Errors caused by the caller's input (HTTP 400); the rest are 500,
    /// except [`AuditError::NotFound`] for a disable of an unknown path,
    /// which Vault also answers with 400.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            AuditError::NoDeviceRecorded | AuditError::Device { .. } | AuditError::NoRuntime
        )
    }
}
