//! An audit device: its configuration, the [`Sink`] it writes to, and the
//! writer task that owns its chain (docs/audit.md, "Devices").
//!
//! Each device has one writer task fed by a bounded queue. The broker never
//! waits for room in the queue: a full queue means the device is not keeping
//! up, and the record is dropped for that device alone (counted, and
//! reported in its chain as `missed`).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::AuditError;
use super::chain::Chain;
use super::record::{Entry, Redactor};

/// How a device is configured, as `sys/audit/:path` takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceConfig {
    /// `file` or `socket`.
    #[serde(rename = "type")]
    pub device_type: String,
    pub description: String,
    pub options: BTreeMap<String, String>,
    /// Not replicated to other clusters (kept for Vault compatibility).
    pub local: bool,
}

/// Where a file device writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileTarget {
    Path(PathBuf),
    Stdout,
    /// Accepts every record and keeps none (Vault's `discard`).
    Discard,
}

/// The device-specific part of the options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    File {
        target: FileTarget,
        /// `None` for `mode=0000`: leave the file's mode alone.
        mode: Option<u32>,
    },
    Socket {
        address: String,
    },
}

/// Options every device type takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonOptions {
    pub hmac_accessor: bool,
    /// Secrets in clear: see [`Redactor::new`].
    pub log_raw: bool,
    /// Written before each line's JSON and covered by the chain hash. It may
    /// not contain `{` or a line break, so a reader finds the JSON at the
    /// first `{`.
    pub prefix: String,
    /// How long the broker waits for this device to confirm a record, and
    /// how long a socket write may take.
    pub write_timeout: Duration,
}

impl Default for CommonOptions {
    fn default() -> Self {
        Self {
            hmac_accessor: true,
            log_raw: false,
            prefix: String::new(),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }
}

/// Parsed device options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOptions {
    pub common: CommonOptions,
    pub target: Target,
}

pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_FILE_MODE: u32 = 0o600;
const COMMON_KEYS: &[&str] = &[
    "hmac_accessor",
    "log_raw",
    "prefix",
    "write_timeout",
    "format",
];

fn invalid(option: &str, reason: impl Into<String>) -> AuditError {
    AuditError::InvalidOption {
        option: option.to_owned(),
        reason: reason.into(),
    }
}

impl DeviceOptions {
    /// Checks `config` for its device type: unknown options and missing
    /// required ones are errors that name the option.
    pub fn parse(config: &DeviceConfig) -> Result<Self, AuditError> {
        let opts = &config.options;
        let file = match config.device_type.as_str() {
            "file" => true,
            "socket" => false,
            other => return Err(AuditError::UnsupportedType(other.to_owned())),
        };
        let extra: &[&str] = if file {
            &["file_path", "path", "mode"]
        } else {
            &["address", "socket_type"]
        };
        check_known(opts, extra)?;
        let common = CommonOptions::parse(opts)?;
        let target = if file {
            parse_file(opts)?
        } else {
            parse_socket(opts)?
        };
        Ok(Self { common, target })
    }
}

impl CommonOptions {
    /// The options every device takes; other keys are ignored here.
    pub fn parse(opts: &BTreeMap<String, String>) -> Result<Self, AuditError> {
        let mut c = Self::default();
        if let Some(v) = opts.get("hmac_accessor") {
            c.hmac_accessor = parse_bool("hmac_accessor", v)?;
        }
        if let Some(v) = opts.get("log_raw") {
            c.log_raw = parse_bool("log_raw", v)?;
        }
        if let Some(v) = opts.get("prefix") {
            if v.contains(['{', '\n', '\r']) {
                return Err(invalid("prefix", "may not contain '{' or a line break"));
            }
            c.prefix = v.clone();
        }
        if let Some(v) = opts.get("write_timeout") {
            c.write_timeout = parse_duration("write_timeout", v)?;
        }
        if let Some(v) = opts.get("format")
            && v != "json"
        {
            return Err(invalid("format", "only \"json\" is supported"));
        }
        Ok(c)
    }
}

fn check_known(opts: &BTreeMap<String, String>, extra: &[&str]) -> Result<(), AuditError> {
    match opts
        .keys()
        .find(|k| !COMMON_KEYS.contains(&k.as_str()) && !extra.contains(&k.as_str()))
    {
        Some(k) => Err(AuditError::UnknownOption(k.clone())),
        None => Ok(()),
    }
}

fn parse_file(opts: &BTreeMap<String, String>) -> Result<Target, AuditError> {
    // Vault accepts `path` as an older spelling of `file_path`.
    let path = opts
        .get("file_path")
        .or_else(|| opts.get("path"))
        .ok_or(AuditError::MissingOption("file_path"))?;
    let target = match path.as_str() {
        "" => return Err(invalid("file_path", "is empty")),
        "stdout" => FileTarget::Stdout,
        "discard" => FileTarget::Discard,
        p => FileTarget::Path(PathBuf::from(p)),
    };
    let mode = match opts.get("mode") {
        None => Some(DEFAULT_FILE_MODE),
        Some(m) => match u32::from_str_radix(m, 8) {
            Ok(0) => None,
            Ok(m) if m <= 0o7777 => Some(m),
            _ => return Err(invalid("mode", "must be an octal file mode such as 0600")),
        },
    };
    Ok(Target::File { target, mode })
}

fn parse_socket(opts: &BTreeMap<String, String>) -> Result<Target, AuditError> {
    match opts.get("socket_type").map(String::as_str) {
        None | Some("tcp") => {}
        Some(other) => {
            return Err(invalid(
                "socket_type",
                format!(
                    "{other:?} is not supported; only \"tcp\" is (a datagram cannot confirm that a record arrived)"
                ),
            ));
        }
    }
    let address = opts
        .get("address")
        .ok_or(AuditError::MissingOption("address"))?;
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(invalid("address", "must be host:port"));
    }
    Ok(Target::Socket {
        address: address.clone(),
    })
}

/// Go's `strconv.ParseBool`, which Vault uses for these options.
fn parse_bool(option: &str, v: &str) -> Result<bool, AuditError> {
    crate::params::parse_bool(v).ok_or_else(|| invalid(option, "must be true or false"))
}

/// Whole seconds (`"5"`) or a duration string (`"2s"`, `"500ms"`, `"1m30s"`).
fn parse_duration(option: &str, v: &str) -> Result<Duration, AuditError> {
    let d = crate::duration::parse_duration_str(v)
        .map_err(|_| invalid(option, "must be seconds or a duration such as \"2s\""))?;
    if d.is_zero() {
        return Err(invalid(option, "must be greater than zero"));
    }
    Ok(d)
}

/// Where a device's lines go. One writer task owns each sink and calls it
/// one line at a time; a sink bounds its own blocking where it can (the
/// broker bounds how long a request waits regardless).
pub trait Sink: Send + 'static {
    /// Writes one complete line, newline included, or fails.
    fn write_line(&mut self, line: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes and reopens the destination (log rotation). The chain goes on.
    fn reopen(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// Counters for one device, read by [`super::AuditBroker::metrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Lines the sink accepted.
    pub written: AtomicU64,
    /// Lines the sink refused (I/O error or socket timeout).
    pub failed: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records the broker stopped waiting for.
    pub timed_out: AtomicU64,
}

/// One device's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceMetrics {
    pub path: String,
    pub device_type: String,
    pub written: u64,
    pub failed: u64,
    pub dropped: u64,
    pub timed_out: u64,
}

/// Warn on the first event and then once every this many, so a broken
/// device cannot flood the operational log.
const WARN_EVERY: u64 = 1000;

fn should_warn(count: u64) -> bool {
    count % WARN_EVERY == 1
}

pub(crate) enum Job {
    Record {
        entry: Box<Entry>,
        ack: oneshot::Sender<bool>,
    },
    Reopen {
        done: oneshot::Sender<io::Result<()>>,
    },
}

/// An enabled device as the broker holds it.
#[derive(Debug)]
pub(crate) struct Device {
    pub path: String,
    pub config: DeviceConfig,
    pub redactor: Redactor,
    pub write_timeout: Duration,
    tx: mpsc::Sender<Job>,
    pub counters: Arc<Counters>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Record { .. } => "Job::Record",
            Job::Reopen { .. } => "Job::Reopen",
        })
    }
}

impl Device {
    /// Starts the writer task on the current tokio runtime.
    pub fn start<S: Sink>(
        path: String,
        config: DeviceConfig,
        common: &CommonOptions,
        redactor: Redactor,
        sink: S,
        queue_capacity: usize,
    ) -> Result<Self, AuditError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AuditError::NoRuntime)?;
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            path: path.clone(),
            sink,
            chain: Chain::new(&path),
            prefix: common.prefix.clone(),
            counters: counters.clone(),
            dropped_seen: 0,
        };
        let task = runtime.spawn(writer.run(rx));
        Ok(Self {
            path,
            config,
            redactor,
            write_timeout: common.write_timeout,
            tx,
            counters,
            task: Some(task),
        })
    }

    /// Queues `entry` without waiting. `None` when the device cannot take
    /// it: the record is dropped for this device.
    pub fn submit(&self, entry: Entry) -> Option<oneshot::Receiver<bool>> {
        let (ack, rx) = oneshot::channel();
        let job = Job::Record {
            entry: Box::new(entry),
            ack,
        };
        match self.tx.try_send(job) {
            Ok(()) => Some(rx),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if should_warn(n) {
                    tracing::warn!(device = %self.path, dropped = n, "audit device queue full; record dropped for this device");
                }
                None
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Whether the device confirmed the record within its write timeout.
    pub async fn confirmed(&self, ack: oneshot::Receiver<bool>) -> bool {
        match tokio::time::timeout(self.write_timeout, ack).await {
            Ok(Ok(written)) => written,
            Ok(Err(_)) => false,
            Err(_) => {
                self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Reopens the sink after the records queued before it.
    pub async fn reopen(&self) -> Result<(), AuditError> {
        let (done, rx) = oneshot::channel();
        let failed = |reason: String| AuditError::Device {
            path: self.path.clone(),
            reason,
        };
        let wait = async {
            self.tx
                .send(Job::Reopen { done })
                .await
                .map_err(|_| failed("writer stopped".into()))?;
            rx.await.map_err(|_| failed("writer stopped".into()))
        };
        // The queue may be full of records for a slow device: allow for
        // draining it as well as for the reopen itself.
        match tokio::time::timeout(self.write_timeout.saturating_mul(4), wait).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(failed(format!("reopen failed: {e}"))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(failed("reopen timed out".into())),
        }
    }

    pub fn metrics(&self) -> DeviceMetrics {
        DeviceMetrics {
            path: self.path.clone(),
            device_type: self.config.device_type.clone(),
            written: self.counters.written.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            timed_out: self.counters.timed_out.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Device {
    /// The writer drains what is queued and stops when the queue closes; one
    /// that is stuck on its sink is stopped after a grace period.
    fn drop(&mut self) {
        let Some(mut task) = self.task.take() else {
            return;
        };
        let grace = self.write_timeout.saturating_mul(2);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if tokio::time::timeout(grace, &mut task).await.is_err() {
                        task.abort();
                    }
                });
            }
            Err(_) => task.abort(),
        }
    }
}

/// The writer task: the only owner of a device's sink and chain, so lines
/// reach the sink in chain order.
struct Writer<S> {
    path: String,
    sink: S,
    chain: Chain,
    prefix: String,
    counters: Arc<Counters>,
    dropped_seen: u64,
}

impl<S: Sink> Writer<S> {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.recv().await {
            match job {
                Job::Record { entry, ack } => {
                    let written = self.write(&entry).await;
                    // The broker may have stopped waiting; that is fine.
                    let _ = ack.send(written);
                }
                Job::Reopen { done } => {
                    let _ = done.send(self.sink.reopen().await);
                }
            }
        }
    }

    async fn write(&mut self, entry: &Entry) -> bool {
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
        self.chain.skip(dropped.saturating_sub(self.dropped_seen));
        self.dropped_seen = dropped;
        let line = match self.chain.seal(&self.prefix, entry) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(device = %self.path, error = %e, "cannot serialise audit record");
                self.chain.skip(1);
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        match self.sink.write_line(line.bytes.clone()).await {
            Ok(()) => {
                self.chain.written(&line);
                self.counters.written.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.chain.failed(&line);
                let n = self.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if should_warn(n) {
                    tracing::warn!(device = %self.path, error = %e, failed = n, "audit device write failed");
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(device_type: &str, opts: &[(&str, &str)]) -> DeviceConfig {
        DeviceConfig {
            device_type: device_type.into(),
            options: opts
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..DeviceConfig::default()
        }
    }

    #[test]
    fn file_options_parse_with_vault_defaults() {
        let o = DeviceOptions::parse(&config("file", &[("file_path", "/var/log/a.log")]))
            .expect("parse");
        assert_eq!(o.common, CommonOptions::default());
        assert_eq!(
            o.target,
            Target::File {
                target: FileTarget::Path("/var/log/a.log".into()),
                mode: Some(0o600)
            }
        );
        let o = DeviceOptions::parse(&config(
            "file",
            &[
                ("path", "stdout"),
                ("mode", "0000"),
                ("hmac_accessor", "false"),
                ("log_raw", "t"),
                ("prefix", "audit: "),
                ("write_timeout", "500ms"),
            ],
        ))
        .expect("parse");
        assert_eq!(
            o.target,
            Target::File {
                target: FileTarget::Stdout,
                mode: None
            }
        );
        assert!(!o.common.hmac_accessor);
        assert!(o.common.log_raw);
        assert_eq!(o.common.prefix, "audit: ");
        assert_eq!(o.common.write_timeout, Duration::from_millis(500));
        let o = DeviceOptions::parse(&config(
            "file",
            &[("file_path", "discard"), ("write_timeout", "3")],
        ))
        .expect("parse");
        assert_eq!(o.common.write_timeout, Duration::from_secs(3));
    }

    #[test]
    fn bad_options_are_named() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            ("file", &[], "file_path"),
            ("file", &[("file_path", "/x"), ("colour", "red")], "colour"),
            ("file", &[("file_path", "/x"), ("mode", "0999")], "mode"),
            (
                "file",
                &[("file_path", "/x"), ("log_raw", "yes")],
                "log_raw",
            ),
            ("file", &[("file_path", "/x"), ("prefix", "{")], "prefix"),
            (
                "file",
                &[("file_path", "/x"), ("write_timeout", "0")],
                "write_timeout",
            ),
            (
                "file",
                &[("file_path", "/x"), ("format", "jsonx")],
                "format",
            ),
            (
                "file",
                &[("file_path", "/x"), ("address", "h:1")],
                "address",
            ),
            ("socket", &[], "address"),
            ("socket", &[("address", "nohost")], "address"),
            (
                "socket",
                &[("address", "h:1"), ("socket_type", "udp")],
                "socket_type",
            ),
            (
                "socket",
                &[("address", "h:1"), ("file_path", "/x")],
                "file_path",
            ),
        ];
        for (ty, opts, named) in cases {
            let err = DeviceOptions::parse(&config(ty, opts)).expect_err("must fail");
            assert!(err.to_string().contains(named), "{ty} {opts:?}: {err}");
        }
        let err = DeviceOptions::parse(&config("syslog", &[])).expect_err("must fail");
        assert!(err.to_string().contains("syslog"), "{err}");
    }

    #[test]
    fn socket_options_parse() {
        let o = DeviceOptions::parse(&config(
            "socket",
            &[("address", "127.0.0.1:9090"), ("socket_type", "tcp")],
        ))
        .expect("parse");
        assert_eq!(
            o.target,
            Target::Socket {
                address: "127.0.0.1:9090".into()
            }
        );
    }
}
