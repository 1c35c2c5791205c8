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
    crate::clock::rfc3339(time::OffsetDateTime::now_utc())
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
                    .unwrap_or_else(|_| Err(std::io::Error::other("open task failed")))
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
        if common.log_raw {
            tracing::warn!(device = %path, "audit device has log_raw set: tokens and secrets are written in clear");
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Map, Value, json};
    use sigil_hsm::SecretString;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::audit::memory::{MemoryMode, MemorySink};
    use crate::audit::record::AuditMount;
    use crate::audit::verify::{verify_file, verify_reader};
    use crate::logical::{Operation, Request, Response};

    const TOKEN: &str = "hvs.broker-canary-token";
    const PASSWORD: &str = "broker-canary-password";

    fn salt() -> SecretBytes {
        SecretBytes::copy_from(b"broker test salt, 32 bytes long!")
    }

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

    fn data(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn records(big: usize) -> (AuditAuth, AuditRequest, AuditResponse) {
        let auth = AuditAuth {
            client_token: Some(SecretString::from(TOKEN)),
            accessor: "broker-accessor".into(),
            policies: vec!["default".into()],
            ..AuditAuth::default()
        };
        let mount = AuditMount {
            mount_type: "kv".into(),
            non_hmac_request_keys: vec!["padding".into()],
            ..AuditMount::default()
        };
        let req = Request::new(Operation::Update, "secret/data/x")
            .with_token(Some(SecretString::from(TOKEN)))
            .with_data(data(
                json!({"password": PASSWORD, "padding": "p".repeat(big)}),
            ));
        let request = AuditRequest::new(&req, &mount, "broker-accessor");
        let response =
            AuditResponse::new(&Response::data(data(json!({"password": PASSWORD}))), &mount);
        (auth, request, response)
    }

    async fn log_pair(broker: &AuditBroker, big: usize) -> Result<(), AuditError> {
        let (auth, request, response) = records(big);
        broker.log_request(&auth, &request, None).await?;
        broker.log_response(&auth, &request, &response, None).await
    }

    fn device<'a>(m: &'a AuditMetrics, path: &str) -> &'a DeviceMetrics {
        m.devices
            .iter()
            .find(|d| d.path == path)
            .expect("device metrics")
    }

    #[tokio::test]
    async fn with_no_device_logging_succeeds() {
        let broker = AuditBroker::new();
        assert!(broker.is_empty());
        log_pair(&broker, 0).await.expect("no devices: ok");
    }

    #[tokio::test]
    async fn a_file_device_writes_a_verifiable_log_without_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let broker = AuditBroker::new();
        let file_path = path.to_str().expect("utf8 path");
        broker
            .enable("file", config("file", &[("file_path", file_path)]), salt())
            .await
            .expect("enable");
        for _ in 0..3 {
            log_pair(&broker, 0).await.expect("log");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 6);
        assert!(!text.contains(TOKEN));
        assert!(!text.contains(PASSWORD));
        assert!(text.contains(&hash_value(&salt(), TOKEN)));
        assert_eq!(
            broker.hash("file/", TOKEN).expect("hash"),
            hash_value(&salt(), TOKEN)
        );
        let first: Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        assert_eq!(first["type"], "request");
        let time = first["time"].as_str().expect("time");
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339 time");
        assert_eq!(first["seq"], 1);
        let report = verify_file(&path).expect("verify");
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.summary(), "ok: 6 records, seq 1..6, chain intact");
        assert_eq!(device(&broker.metrics(), "file/").written, 6);
    }

    #[tokio::test]
    async fn enable_rejects_bad_paths_options_and_unopenable_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = AuditBroker::new();
        let missing = dir.path().join("no-such-dir").join("audit.log");
        let err = broker
            .enable(
                "file",
                config("file", &[("file_path", missing.to_str().expect("utf8"))]),
                salt(),
            )
            .await
            .expect_err("unopenable");
        assert!(matches!(err, AuditError::Open { .. }), "{err}");
        assert!(err.is_client_error());
        let err = broker
            .enable("file", config("file", &[]), salt())
            .await
            .expect_err("missing file_path");
        assert!(err.to_string().contains("file_path"), "{err}");
        assert!(broker.is_empty());

        broker
            .enable("/a/", config("file", &[("file_path", "discard")]), salt())
            .await
            .expect("enable");
        let again = broker
            .enable("a", config("file", &[("file_path", "discard")]), salt())
            .await;
        assert!(matches!(again, Err(AuditError::PathInUse(_))));
        let nested = broker
            .enable("a/b", config("file", &[("file_path", "discard")]), salt())
            .await;
        assert!(matches!(nested, Err(AuditError::PathInUse(_))));
        assert!(matches!(
            broker.enable("..", config("file", &[]), salt()).await,
            Err(AuditError::InvalidPath(_))
        ));
        assert_eq!(broker.list().len(), 1);
        assert_eq!(broker.list()[0].0, "a/");
        broker.disable("a").expect("disable");
        assert!(matches!(broker.disable("a/"), Err(AuditError::NotFound(_))));
        assert!(broker.is_empty());
    }

    /// `/dev/full` opens but every write fails with ENOSPC, root or not: the
    /// only device cannot write, so the request must fail.
    #[tokio::test]
    async fn the_request_fails_when_the_only_device_cannot_write() {
        let broker = AuditBroker::new();
        broker
            .enable(
                "full",
                config("file", &[("file_path", "/dev/full")]),
                salt(),
            )
            .await
            .expect("enable: /dev/full opens");
        let (auth, request, _) = records(0);
        let result = broker.log_request(&auth, &request, None).await;
        assert!(
            matches!(result, Err(AuditError::NoDeviceRecorded)),
            "{result:?}"
        );
        let m = broker.metrics();
        assert_eq!(device(&m, "full/").failed, 1);
        assert_eq!(device(&m, "full/").written, 0);
        assert_eq!(m.unrecorded, 1);
    }

    #[tokio::test]
    async fn the_request_fails_when_the_only_device_fails_or_hangs_after_enable() {
        let broker = AuditBroker::new();
        let sink = MemorySink::new();
        let opts = config("memory", &[("write_timeout", "100ms")]);
        broker
            .enable_with_sink("mem", opts, salt(), sink.clone())
            .expect("enable");
        log_pair(&broker, 0).await.expect("healthy");
        sink.set_mode(MemoryMode::Fail);
        assert!(matches!(
            log_pair(&broker, 0).await,
            Err(AuditError::NoDeviceRecorded)
        ));
        sink.set_mode(MemoryMode::Hang);
        assert!(matches!(
            log_pair(&broker, 0).await,
            Err(AuditError::NoDeviceRecorded)
        ));
        assert!(device(&broker.metrics(), "mem/").timed_out >= 1);
    }

    #[tokio::test]
    async fn one_working_device_is_enough() {
        let broker = AuditBroker::new();
        let bad = MemorySink::new();
        bad.set_mode(MemoryMode::Fail);
        let good = MemorySink::new();
        broker
            .enable_with_sink("bad", config("memory", &[]), salt(), bad)
            .expect("enable");
        broker
            .enable_with_sink("good", config("memory", &[]), salt(), good.clone())
            .expect("enable");
        log_pair(&broker, 0).await.expect("one device wrote");
        assert_eq!(good.lines().len(), 2);
    }

    /// A device stuck in a write: its queue fills, records are dropped for
    /// it alone, and once it recovers its chain says how many it missed.
    #[tokio::test]
    async fn a_hung_device_drops_records_and_reports_them_as_missed() {
        let broker = AuditBroker::with_queue_capacity(2);
        let stuck = MemorySink::new();
        stuck.set_mode(MemoryMode::Hang);
        let healthy = MemorySink::new();
        broker
            .enable_with_sink("stuck", config("memory", &[]), salt(), stuck.clone())
            .expect("enable");
        broker
            .enable_with_sink("healthy", config("memory", &[]), salt(), healthy.clone())
            .expect("enable");
        for _ in 0..10 {
            log_pair(&broker, 0).await.expect("healthy device confirms");
        }
        assert_eq!(healthy.lines().len(), 20);
        let m = broker.metrics();
        // One record in the stuck write, two queued, the rest dropped.
        assert_eq!(device(&m, "stuck/").dropped, 17);
        stuck.set_mode(MemoryMode::Accept);
        let landed = |n: usize| {
            let stuck = stuck.clone();
            async move {
                for _ in 0..500 {
                    if stuck.lines().len() >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        // The recovered device writes the three records it held, then the
        // next pair (after which it would not wait, hence the polling).
        landed(3).await;
        log_pair(&broker, 0).await.expect("log");
        landed(5).await;
        let report = verify_reader(&stuck.contents()[..]).expect("verify");
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 5);
        assert_eq!(report.gaps.iter().map(|g| g.missed).sum::<u64>(), 17);
        assert_eq!(report.last_seq, Some(22));
        assert!(
            verify_reader(&healthy.contents()[..])
                .expect("verify")
                .is_intact()
        );
    }

    /// A socket collector that never reads, and records big enough to fill
    /// the kernel's buffers: the socket device times out and drops, while
    /// every request succeeds on the file device and it has every record.
    #[tokio::test]
    async fn a_hung_socket_does_not_fail_requests_while_a_file_device_works() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let broker = AuditBroker::with_queue_capacity(4);
        broker
            .enable(
                "socket",
                config(
                    "socket",
                    &[("address", &address), ("write_timeout", "200ms")],
                ),
                salt(),
            )
            .await
            .expect("enable socket");
        broker
            .enable(
                "file",
                config("file", &[("file_path", path.to_str().expect("utf8"))]),
                salt(),
            )
            .await
            .expect("enable file");
        let (auth, request, _) = records(512 * 1024);
        for _ in 0..48 {
            broker
                .log_request(&auth, &request, None)
                .await
                .expect("the file device confirms");
        }
        // A call returns on the first confirmation, which may be the
        // socket's while the file's write is still finishing.
        for _ in 0..1000 {
            if device(&broker.metrics(), "file/").written == 48 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let report = verify_file(&path).expect("verify");
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 48);
        assert!(report.gaps.is_empty());
        let m = broker.metrics();
        assert_eq!(device(&m, "file/").written, 48);
        let socket = device(&m, "socket/");
        assert!(socket.written < 48, "{socket:?}");
        assert!(socket.dropped + socket.failed > 0, "{socket:?}");
        drop(listener);
    }

    #[tokio::test]
    async fn a_socket_collector_receives_a_verifiable_stream() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let broker = AuditBroker::new();
        broker
            .enable(
                "net",
                config("socket", &[("address", &address), ("socket_type", "tcp")]),
                salt(),
            )
            .await
            .expect("enable");
        for _ in 0..3 {
            log_pair(&broker, 0).await.expect("log");
        }
        let (conn, _) = listener.accept().await.expect("accept");
        let mut reader = tokio::io::BufReader::new(conn);
        let mut received = Vec::new();
        for _ in 0..6 {
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line).await.expect("read");
            received.extend(line);
        }
        let text = String::from_utf8(received.clone()).expect("utf8");
        assert!(!text.contains(TOKEN) && !text.contains(PASSWORD));
        let report = verify_reader(&received[..]).expect("verify");
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 6);
    }

    /// Log rotation: rename the file, reopen, keep logging. The two files
    /// together are one chain; the new one alone starts mid-chain.
    #[tokio::test]
    async fn reopen_after_rotation_continues_the_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let broker = AuditBroker::new();
        broker
            .enable(
                "file",
                config(
                    "file",
                    &[
                        ("file_path", path.to_str().expect("utf8")),
                        ("prefix", "sigil-audit: "),
                    ],
                ),
                salt(),
            )
            .await
            .expect("enable");
        log_pair(&broker, 0).await.expect("log");
        std::fs::rename(&path, &rotated).expect("rename");
        broker.reopen().await.expect("reopen");
        log_pair(&broker, 0).await.expect("log");
        let old = std::fs::read(&rotated).expect("read");
        let new = std::fs::read(&path).expect("read");
        assert!(new.starts_with(b"sigil-audit: {"));
        let report = verify_reader(&[old, new.clone()].concat()[..]).expect("verify");
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 4);
        let report = verify_reader(&new[..]).expect("verify");
        assert!(report.is_intact() && report.starts_mid_chain, "{report:?}");
        assert_eq!(report.first_seq, Some(3));
    }
}
