//! The audit broker: the set of enabled devices, and the fail-closed
//! `log_request`/`log_response` the pipeline calls (docs/audit.md,
//! "Fail-closed, and what a slow device costs").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use sigil_hsm::SecretBytes;

use super::AuditError;
use super::device::{
    CommonOptions, Device, DeviceConfig, DeviceMetrics, DeviceOptions, FileTarget, Sink, Target,
};
use super::file::FileSink;
use super::record::{AuditAuth, AuditRequest, AuditResponse, Entry, Redactor, hash_value};
use super::socket::SocketSink;

/// Records a device may have queued before new ones are dropped for it.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// Counters for `sys/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditMetrics {
    pub devices: Vec<DeviceMetrics>,
    /// Log calls that failed because no device recorded the record: each
    /// one failed a request.
    pub unrecorded: u64,
}

/// The enabled audit devices. Cheap to share behind an `Arc`; every method
/// takes `&self`.
#[derive(Debug)]
pub struct AuditBroker {
    devices: RwLock<BTreeMap<String, Arc<Device>>>,
    queue_capacity: usize,
    unrecorded: AtomicU64,
}

impl Default for AuditBroker {
    fn default() -> Self {
        Self::with_queue_capacity(DEFAULT_QUEUE_CAPACITY)
    }
}

/// Vault's path rule: no leading slash, one trailing slash (`file` and
/// `/file/` are both `file/`).
pub fn normalize_path(path: &str) -> Result<String, AuditError> {
    let trimmed = path.trim_matches('/');
    let ok = !trimmed.is_empty()
        && trimmed
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && !trimmed.chars().any(|c| c.is_control() || c == '\\');
    if ok {
        Ok(format!("{trimmed}/"))
    } else {
        Err(AuditError::InvalidPath(path.to_owned()))
    }
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

impl AuditBroker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A broker whose devices queue at most `capacity` records each.
    pub fn with_queue_capacity(capacity: usize) -> Self {
        Self {
            devices: RwLock::new(BTreeMap::new()),
            queue_capacity: capacity.max(1),
            unrecorded: AtomicU64::new(0),
        }
    }

    /// Enables a `file` or `socket` device at `path` whose records are
    /// HMACed with `salt`. A file device opens its file now: a path that
    /// cannot be opened is an error here, not on the first request. A socket
    /// device connects on its first record.
    pub async fn enable(
        &self,
        path: &str,
        config: DeviceConfig,
        salt: SecretBytes,
    ) -> Result<(), AuditError> {
        let path = normalize_path(path)?;
        self.check_free(&path)?;
        let options = DeviceOptions::parse(&config)?;
        match options.target {
            Target::File { target, mode } => {
                let shown = match &target {
                    FileTarget::Path(p) => p.display().to_string(),
                    FileTarget::Stdout => "stdout".to_owned(),
                    FileTarget::Discard => "discard".to_owned(),
                };
                let sink = tokio::task::spawn_blocking(move || FileSink::open(target, mode))
                    .await
                    .map_err(|_| AuditError::NoRuntime)?
                    .map_err(|source| AuditError::Open {
                        target: shown,
                        source,
                    })?;
                self.insert(path, config, &options.common, salt, sink)
            }
            Target::Socket { address } => {
                let sink = SocketSink::new(address, options.common.write_timeout);
                self.insert(path, config, &options.common, salt, sink)
            }
        }
    }

    /// Enables a device writing to `sink` (an in-memory sink in tests, or a
    /// device type this module does not know). Only the options every
    /// device takes are read from `config`.
    pub fn enable_with_sink<S: Sink>(
        &self,
        path: &str,
        config: DeviceConfig,
        salt: SecretBytes,
        sink: S,
    ) -> Result<(), AuditError> {
        let path = normalize_path(path)?;
        let common = CommonOptions::parse(&config.options)?;
        self.insert(path, config, &common, salt, sink)
    }

    fn check_free(&self, path: &str) -> Result<(), AuditError> {
        let devices = self.devices.read().unwrap_or_else(PoisonError::into_inner);
        // Vault also refuses a path that is a prefix of another, or the reverse.
        match devices
            .keys()
            .find(|p| p.starts_with(path) || path.starts_with(p.as_str()))
        {
            Some(p) => Err(AuditError::PathInUse(p.clone())),
            None => Ok(()),
        }
    }

    fn insert<S: Sink>(
        &self,
        path: String,
        config: DeviceConfig,
        common: &CommonOptions,
        salt: SecretBytes,
        sink: S,
    ) -> Result<(), AuditError> {
        self.check_free(&path)?;
        let redactor = Redactor::new(salt, common.hmac_accessor, common.log_raw);
        let device = Device::start(
            path.clone(),
            config,
            common,
            redactor,
            sink,
            self.queue_capacity,
        )?;
        let mut devices = self.devices.write().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the write lock: two enables may race.
        if let Some(p) = devices
            .keys()
            .find(|p| p.starts_with(&path) || path.starts_with(p.as_str()))
        {
            return Err(AuditError::PathInUse(p.clone()));
        }
        tracing::info!(device = %path, device_type = %device.config.device_type, "audit device enabled");
        devices.insert(path, Arc::new(device));
        Ok(())
    }

    /// Disables the device at `path`. Its writer finishes what it has
    /// queued, or is stopped if it is stuck.
    pub fn disable(&self, path: &str) -> Result<(), AuditError> {
        let path = normalize_path(path)?;
        let mut devices = self.devices.write().unwrap_or_else(PoisonError::into_inner);
        match devices.remove(&path) {
            Some(_) => {
                tracing::info!(device = %path, "audit device disabled");
                Ok(())
            }
            None => Err(AuditError::NotFound(path)),
        }
    }

    /// Enabled devices and their configuration, ordered by path.
    pub fn list(&self) -> Vec<(String, DeviceConfig)> {
        self.snapshot()
            .into_iter()
            .map(|d| (d.path.clone(), d.config.clone()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// `sys/audit-hash/:path`: `input` as the device at `path` would log it.
    pub fn hash(&self, path: &str, input: &str) -> Result<String, AuditError> {
        let path = normalize_path(path)?;
        let devices = self.devices.read().unwrap_or_else(PoisonError::into_inner);
        let device = devices.get(&path).ok_or(AuditError::NotFound(path))?;
        Ok(hash_value(device.redactor.salt(), input))
    }

    /// Reopens every device's destination (SIGHUP, after log rotation).
    /// Chains continue. Every device is tried; the first error is returned.
    pub async fn reopen(&self) -> Result<(), AuditError> {
        let mut first_error = None;
        for device in self.snapshot() {
            if let Err(e) = device.reopen().await {
                tracing::warn!(device = %device.path, error = %e, "audit device reopen failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Counters per device, for `sys/metrics`.
    pub fn metrics(&self) -> AuditMetrics {
        AuditMetrics {
            devices: self.snapshot().iter().map(|d| d.metrics()).collect(),
            unrecorded: self.unrecorded.load(Ordering::Relaxed),
        }
    }

    /// Records a request before it runs. `Ok` once one device has written
    /// it; see the module docs of [`crate::audit`] for the contract.
    #[tracing::instrument(skip_all, fields(request_id = %request.id))]
    pub async fn log_request(
        &self,
        auth: &AuditAuth,
        request: &AuditRequest,
        error: Option<&str>,
    ) -> Result<(), AuditError> {
        let time = now_rfc3339();
        self.log(|r| r.request_entry(&time, auth, request, error))
            .await
    }

    /// Records a response (or the error a request ended with).
    #[tracing::instrument(skip_all, fields(request_id = %request.id))]
    pub async fn log_response(
        &self,
        auth: &AuditAuth,
        request: &AuditRequest,
        response: &AuditResponse,
        error: Option<&str>,
    ) -> Result<(), AuditError> {
        let time = now_rfc3339();
        self.log(|r| r.response_entry(&time, auth, request, response, error))
            .await
    }

    fn snapshot(&self) -> Vec<Arc<Device>> {
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Redacts once per device (each has its own salt), queues everywhere
    /// without waiting for room, then waits for the first confirmation.
    /// Dropping the remaining waits does not cancel the other devices'
    /// writes: they still write the record, the request just does not wait.
    async fn log(&self, build: impl Fn(&Redactor) -> Entry) -> Result<(), AuditError> {
        let devices = self.snapshot();
        if devices.is_empty() {
            return Ok(());
        }
        let mut waits = FuturesUnordered::new();
        for device in &devices {
            if let Some(ack) = device.submit(build(&device.redactor)) {
                waits.push(device.confirmed(ack));
            }
        }
        while let Some(written) = waits.next().await {
            if written {
                return Ok(());
            }
        }
        let n = self.unrecorded.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(
            unrecorded = n,
            "no audit device recorded the request; failing it"
        );
        Err(AuditError::NoDeviceRecorded)
    }
}
