//! Request metrics for `sys/metrics`, in Prometheus text and JSON.
//!
//! Counters and latency histograms by operation and mount, errors by
//! status, audit failures. Recording takes one short lock per request; the
//! label space is bounded by the mount table (unknown paths share the label
//! `""`), so it cannot grow from client input.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::logical::Operation;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];

/// A latency histogram with the buckets above.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Cumulative counts per bucket, then +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len() + 1];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.counts[BUCKETS.len()] += 1;
        self.sum += secs;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the observations, seconds.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Prometheus `_bucket`, `_sum` and `_count` lines; `labels` is empty
    /// or `k="v",...`.
    fn write_prometheus(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let n = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braced} {}", self.count);
    }

    /// Vault's JSON sample shape, milliseconds.
    fn json_sample(&self, name: &str, labels: Value) -> Value {
        json!({
            "Name": name,
            "Count": self.count,
            "Sum": self.sum * 1000.0,
            "Mean": if self.count > 0 { self.sum * 1000.0 / self.count as f64 } else { 0.0 },
            "Labels": labels,
        })
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// By mount, then operation: a lookup by `&str` allocates nothing.
    requests: BTreeMap<String, BTreeMap<Operation, Histogram>>,
    errors: BTreeMap<(Operation, String, u16), u64>,
    audit_failures: u64,
}

/// The node's metrics registry.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    leases: LeaseCounters,
    revocations: RevocationCounters,
}

/// What global revocation did on this node.
#[derive(Debug, Default)]
struct RevocationCounters {
    issued: AtomicU64,
    tokens_refused: AtomicU64,
    logins_refused: AtomicU64,
    filter_rebuilds: AtomicU64,
    cleanup_tokens: AtomicU64,
    cleanup_leases: AtomicU64,
    heard: AtomicU64,
}

impl RevocationCounters {
    fn rows(&self) -> [(&'static str, &'static str, u64); 7] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "revocations_issued",
                "Revocation records committed through this node.",
                get(&self.issued),
            ),
            (
                "revocation_tokens_refused",
                "Requests refused because a revocation record matches their token.",
                get(&self.tokens_refused),
            ),
            (
                "revocation_logins_refused",
                "Logins refused by a quarantine.",
                get(&self.logins_refused),
            ),
            (
                "revocation_filter_rebuilds",
                "Times this node rebuilt its revocation filter from the control plane.",
                get(&self.filter_rebuilds),
            ),
            (
                "revocation_cleanup_tokens",
                "Tokens revoked in this cell's storage by revocation cleanup (leader).",
                get(&self.cleanup_tokens),
            ),
            (
                "revocation_cleanup_leases",
                "Leases queued for revocation by revocation cleanup (leader).",
                get(&self.cleanup_leases),
            ),
            (
                "revocations_heard",
                "Revocation records this node enforced on hearing them from the mesh.",
                get(&self.heard),
            ),
        ]
    }
}

/// What the lease machinery did on this node (counters; the leader does
/// the revoking).
#[derive(Debug, Default)]
struct LeaseCounters {
    created: AtomicU64,
    revoked: AtomicU64,
    revoke_failures: AtomicU64,
    irrevocable: AtomicU64,
}

impl LeaseCounters {
    fn rows(&self) -> [(&'static str, &'static str, u64); 4] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("leases_created", "Leases registered.", get(&self.created)),
            (
                "leases_revoked",
                "Leases revoked (expired, by token, or on request).",
                get(&self.revoked),
            ),
            (
                "lease_revocation_failures",
                "Failed revocation attempts (each is retried with backoff).",
                get(&self.revoke_failures),
            ),
            (
                "leases_irrevocable",
                "Leases given up on after repeated revocation failures.",
                get(&self.irrevocable),
            ),
        ]
    }
}

/// Point-in-time values the registry does not own (read when rendering).
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub tokens: Option<u64>,
    /// Per audit device: records written, failed, dropped (queue full) and
    /// timed out.
    pub audit_devices: Vec<crate::audit::DeviceMetrics>,
    /// The node's Raft, when it stores through one.
    pub raft: Option<crate::raft::stats::RaftFigures>,
    /// Revocation records this node enforces.
    pub revocation_records: Option<u64>,
    /// The node's share of the revocation mesh, when it runs one.
    pub mesh: Option<std::sync::Arc<sigil_gossip::mesh::Mesh>>,
}

/// The mesh's counters: name, help, value.
fn mesh_counters(m: &sigil_gossip::mesh::Mesh) -> Vec<(&'static str, &'static str, u64)> {
    let (b, l) = (m.stats(), m.link_stats());
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    vec![
        (
            "gossip_rumours_sent",
            "Revocation records sent as rumours (per peer).",
            get(&b.rumours_sent),
        ),
        (
            "gossip_rumours_received",
            "Revocation records received as rumours.",
            get(&b.rumours_received),
        ),
        (
            "gossip_rumours_duplicate",
            "Rumoured records this node already held.",
            get(&b.rumours_duplicate),
        ),
        (
            "gossip_digests_sent",
            "Anti-entropy digests sent.",
            get(&b.digests_sent),
        ),
        (
            "gossip_records_repaired",
            "Records this node learned through anti-entropy.",
            get(&b.records_repaired),
        ),
        (
            "gossip_messages_refused",
            "Revocation messages from peers refused (malformed or invalid).",
            get(&b.messages_refused),
        ),
        (
            "gossip_frames_sent",
            "Mesh frames queued to peers.",
            get(&l.frames_sent),
        ),
        (
            "gossip_frames_received",
            "Mesh frames received from peers.",
            get(&l.frames_received),
        ),
        (
            "gossip_frames_dropped",
            "Mesh frames dropped (queue full, peer unreachable or of an unknown cell).",
            get(&l.frames_dropped),
        ),
        (
            "gossip_bytes_sent",
            "Payload bytes queued to peers.",
            get(&l.bytes_sent),
        ),
        (
            "gossip_bytes_received",
            "Payload bytes received from peers.",
            get(&l.bytes_received),
        ),
        (
            "gossip_streams_opened",
            "Mesh streams opened, either way.",
            get(&l.streams_opened),
        ),
    ]
}

fn mesh_prometheus(out: &mut String, m: &sigil_gossip::mesh::Mesh) {
    for (name, help, n) in mesh_counters(m) {
        let _ = writeln!(out, "# HELP sigil_{name}_total {help}");
        let _ = writeln!(out, "# TYPE sigil_{name}_total counter");
        let _ = writeln!(out, "sigil_{name}_total {n}");
    }
    out.push_str(
        "# HELP sigil_gossip_members_live Live mesh members this node sees, itself included.\n",
    );
    out.push_str("# TYPE sigil_gossip_members_live gauge\n");
    let _ = writeln!(out, "sigil_gossip_members_live {}", m.live_members());
    out.push_str("# HELP sigil_gossip_streams_open Peers this node has a mesh stream with.\n");
    out.push_str("# TYPE sigil_gossip_streams_open gauge\n");
    let _ = writeln!(out, "sigil_gossip_streams_open {}", m.open_streams());
    let (buckets, count, sum) = m.stats().convergence();
    out.push_str("# HELP sigil_revocation_apply_latency_ms Time from a record's issue to its application on this node, in milliseconds.\n");
    out.push_str("# TYPE sigil_revocation_apply_latency_ms histogram\n");
    for (le, n) in buckets {
        let _ = writeln!(
            out,
            "sigil_revocation_apply_latency_ms_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "sigil_revocation_apply_latency_ms_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "sigil_revocation_apply_latency_ms_sum {sum}");
    let _ = writeln!(out, "sigil_revocation_apply_latency_ms_count {count}");
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn observe_request(
        &self,
        op: Operation,
        mount: &str,
        elapsed: Duration,
        error: Option<&ApiError>,
    ) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let by_op = match g.requests.get_mut(mount) {
            Some(m) => m,
            None => g.requests.entry(mount.to_owned()).or_default(),
        };
        by_op.entry(op).or_default().observe(elapsed.as_secs_f64());
        if let Some(e) = error {
            *g.errors
                .entry((op, mount.to_owned(), e.http_status()))
                .or_default() += 1;
        }
    }

    pub fn lease_created(&self) {
        self.leases.created.fetch_add(1, Ordering::Relaxed);
    }

    pub fn lease_revoked(&self) {
        self.leases.revoked.fetch_add(1, Ordering::Relaxed);
    }

    pub fn lease_revoke_failed(&self) {
        self.leases.revoke_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn lease_irrevocable(&self) {
        self.leases.irrevocable.fetch_add(1, Ordering::Relaxed);
    }

    pub fn revocation_issued(&self) {
        self.revocations.issued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn revocation_token_refused(&self) {
        self.revocations
            .tokens_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn revocation_login_refused(&self) {
        self.revocations
            .logins_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn revocation_heard(&self, n: u64) {
        self.revocations.heard.fetch_add(n, Ordering::Relaxed);
    }

    pub fn revocation_filter_rebuilt(&self) {
        self.revocations
            .filter_rebuilds
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn revocation_cleaned(&self, tokens: u64, leases: u64) {
        self.revocations
            .cleanup_tokens
            .fetch_add(tokens, Ordering::Relaxed);
        self.revocations
            .cleanup_leases
            .fetch_add(leases, Ordering::Relaxed);
    }

    pub fn audit_failure(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .audit_failures += 1;
    }

    /// Requests observed for `op` on `mount` (for tests and the CLI).
    pub fn request_count(&self, op: Operation, mount: &str) -> u64 {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.requests
            .get(mount)
            .and_then(|m| m.get(&op))
            .map_or(0, |h| h.count)
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn prometheus(&self, gauges: &Gauges) -> String {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str(
            "# HELP sigil_request_duration_seconds Request latency by operation and mount.\n",
        );
        out.push_str("# TYPE sigil_request_duration_seconds histogram\n");
        let rows = g
            .requests
            .iter()
            .flat_map(|(mount, by_op)| by_op.iter().map(move |(op, h)| (op, mount, h)));
        for (op, mount, h) in rows {
            let labels = format!("operation=\"{op}\",mount=\"{}\"", escape(mount));
            h.write_prometheus(&mut out, "sigil_request_duration_seconds", &labels);
        }
        out.push_str("# HELP sigil_request_errors_total Failed requests by operation, mount and HTTP status.\n");
        out.push_str("# TYPE sigil_request_errors_total counter\n");
        for ((op, mount, status), n) in &g.errors {
            let _ = writeln!(
                out,
                "sigil_request_errors_total{{operation=\"{op}\",mount=\"{}\",status=\"{status}\"}} {n}",
                escape(mount)
            );
        }
        out.push_str("# HELP sigil_audit_failures_total Requests refused because no audit device recorded them.\n");
        out.push_str("# TYPE sigil_audit_failures_total counter\n");
        let _ = writeln!(out, "sigil_audit_failures_total {}", g.audit_failures);
        if !gauges.audit_devices.is_empty() {
            out.push_str(
                "# HELP sigil_audit_device_records_total Audit records per device by outcome.\n",
            );
            out.push_str("# TYPE sigil_audit_device_records_total counter\n");
            for d in &gauges.audit_devices {
                for (outcome, n) in outcomes(d) {
                    let _ = writeln!(
                        out,
                        "sigil_audit_device_records_total{{device=\"{}\",type=\"{}\",outcome=\"{outcome}\"}} {n}",
                        escape(&d.path),
                        escape(&d.device_type)
                    );
                }
            }
        }
        for (name, help, n) in self
            .leases
            .rows()
            .into_iter()
            .chain(self.revocations.rows())
        {
            let _ = writeln!(out, "# HELP sigil_{name}_total {help}");
            let _ = writeln!(out, "# TYPE sigil_{name}_total counter");
            let _ = writeln!(out, "sigil_{name}_total {n}");
        }
        if let Some(n) = gauges.revocation_records {
            out.push_str(
                "# HELP sigil_revocation_records Revocation records this node enforces.\n",
            );
            out.push_str("# TYPE sigil_revocation_records gauge\n");
            let _ = writeln!(out, "sigil_revocation_records {n}");
        }
        if let Some(t) = gauges.tokens {
            out.push_str("# HELP sigil_tokens Service tokens in the token store.\n");
            out.push_str("# TYPE sigil_tokens gauge\n");
            let _ = writeln!(out, "sigil_tokens {t}");
        }
        if let Some(r) = &gauges.raft {
            raft_prometheus(&mut out, r);
        }
        if let Some(m) = &gauges.mesh {
            mesh_prometheus(&mut out, m);
        }
        out
    }

    /// The JSON form (Vault's `sys/metrics` shape: Gauges, Counters,
    /// Samples).
    pub fn json(&self, gauges: &Gauges) -> Value {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut samples: Vec<Value> = g
            .requests
            .iter()
            .flat_map(|(mount, by_op)| by_op.iter().map(move |(op, h)| (op, mount, h)))
            .map(|(op, mount, h)| {
                h.json_sample(
                    "sigil.request.duration",
                    json!({ "operation": op.as_str(), "mount": mount }),
                )
            })
            .collect();
        let mut counters: Vec<Value> = g
            .errors
            .iter()
            .map(|((op, mount, status), n)| {
                json!({
                    "Name": "sigil.request.errors",
                    "Count": n,
                    "Labels": { "operation": op.as_str(), "mount": mount, "status": status },
                })
            })
            .collect();
        counters.push(
            json!({ "Name": "sigil.audit.failures", "Count": g.audit_failures, "Labels": {} }),
        );
        for d in &gauges.audit_devices {
            for (outcome, n) in outcomes(d) {
                counters.push(json!({
                    "Name": "sigil.audit.device.records",
                    "Count": n,
                    "Labels": { "device": d.path, "type": d.device_type, "outcome": outcome },
                }));
            }
        }
        for (name, _, n) in self
            .leases
            .rows()
            .into_iter()
            .chain(self.revocations.rows())
        {
            counters.push(json!({ "Name": format!("sigil.{}", name.replace('_', ".")), "Count": n, "Labels": {} }));
        }
        let mut gauge_list = Vec::new();
        if let Some(n) = gauges.revocation_records {
            gauge_list
                .push(json!({ "Name": "sigil.revocation.records", "Value": n, "Labels": {} }));
        }
        if let Some(t) = gauges.tokens {
            gauge_list.push(json!({ "Name": "sigil.tokens", "Value": t, "Labels": {} }));
        }
        if let Some(r) = &gauges.raft {
            for (name, _, v) in raft_gauges(r) {
                gauge_list
                    .push(json!({ "Name": format!("sigil.{}", name.replace('_', ".")), "Value": v, "Labels": {} }));
            }
            for (name, _, n) in raft_counters(r) {
                counters.push(json!({ "Name": format!("sigil.{}", name.replace('_', ".")), "Count": n, "Labels": {} }));
            }
            samples.push(
                r.commit
                    .json_sample("sigil.raft.commit.duration", json!({})),
            );
            samples.push(
                r.log_sync
                    .json_sample("sigil.raft.log.sync.duration", json!({})),
            );
        }
        if let Some(m) = &gauges.mesh {
            for (name, _, n) in mesh_counters(m) {
                counters.push(json!({ "Name": format!("sigil.{}", name.replace('_', ".")), "Count": n, "Labels": {} }));
            }
            gauge_list.push(json!({ "Name": "sigil.gossip.members.live", "Value": m.live_members(), "Labels": {} }));
            gauge_list.push(json!({ "Name": "sigil.gossip.streams.open", "Value": m.open_streams(), "Labels": {} }));
            let (_, count, sum) = m.stats().convergence();
            samples.push(json!({
                "Name": "sigil.revocation.apply.latency.ms",
                "Count": count,
                "Sum": sum,
                "Labels": {},
            }));
        }
        json!({
            "Timestamp": crate::clock::rfc3339(time::OffsetDateTime::now_utc()),
            "Gauges": gauge_list,
            "Counters": counters,
            "Samples": samples,
        })
    }
}

/// A Raft figure: name without the `sigil_` prefix (and, for a counter,
/// without `_total`), help text, value.
type RaftFigure = (&'static str, &'static str, u64);

fn raft_gauges(r: &crate::raft::stats::RaftFigures) -> [RaftFigure; 7] {
    [
        (
            "raft_is_leader",
            "1 if this node leads its cell, else 0.",
            u64::from(r.is_leader),
        ),
        ("raft_term", "The node's current Raft term.", r.term),
        (
            "raft_last_log_index",
            "Index of the last entry in the node's log.",
            r.last_log_index,
        ),
        (
            "raft_applied_index",
            "Index of the last entry applied to the node's state.",
            r.applied_index,
        ),
        (
            "raft_snapshot_index",
            "Index the node's latest snapshot covers.",
            r.snapshot_index,
        ),
        (
            "storage_cache_entries",
            "State entries (ciphertext) held in the read cache.",
            r.cache_entries,
        ),
        (
            "storage_cache_bytes",
            "Bytes the read cache holds, overhead included.",
            r.cache_bytes,
        ),
    ]
}

fn raft_counters(r: &crate::raft::stats::RaftFigures) -> [RaftFigure; 7] {
    [
        (
            "raft_proposals",
            "Log entries this node proposed as leader.",
            r.proposals,
        ),
        (
            "raft_proposed_commands",
            "Client writes those entries carried (batched).",
            r.proposed_commands,
        ),
        (
            "raft_failed_proposals",
            "Proposals that ended in an error.",
            r.failed_proposals,
        ),
        (
            "raft_log_syncs",
            "Syncs of the Raft log's write-ahead log.",
            r.log_syncs,
        ),
        (
            "raft_log_synced_appends",
            "Log appends those syncs made durable.",
            r.log_synced_appends,
        ),
        (
            "storage_cache_hits",
            "State lookups answered by the read cache.",
            r.cache_hits,
        ),
        (
            "storage_cache_misses",
            "State lookups that went to RocksDB.",
            r.cache_misses,
        ),
    ]
}

fn raft_prometheus(out: &mut String, r: &crate::raft::stats::RaftFigures) {
    for (name, help, v) in raft_gauges(r) {
        let _ = writeln!(out, "# HELP sigil_{name} {help}");
        let _ = writeln!(out, "# TYPE sigil_{name} gauge");
        let _ = writeln!(out, "sigil_{name} {v}");
    }
    for (name, help, v) in raft_counters(r) {
        let _ = writeln!(out, "# HELP sigil_{name}_total {help}");
        let _ = writeln!(out, "# TYPE sigil_{name}_total counter");
        let _ = writeln!(out, "sigil_{name}_total {v}");
    }
    out.push_str("# HELP sigil_raft_commit_duration_seconds From a leader's proposal to its applied result.\n");
    out.push_str("# TYPE sigil_raft_commit_duration_seconds histogram\n");
    r.commit
        .write_prometheus(out, "sigil_raft_commit_duration_seconds", "");
    out.push_str("# HELP sigil_raft_log_sync_duration_seconds One fsync of the Raft log.\n");
    out.push_str("# TYPE sigil_raft_log_sync_duration_seconds histogram\n");
    r.log_sync
        .write_prometheus(out, "sigil_raft_log_sync_duration_seconds", "");
}

/// An audit device's counters by outcome label.
fn outcomes(d: &crate::audit::DeviceMetrics) -> [(&'static str, u64); 4] {
    [
        ("written", d.written),
        ("failed", d.failed),
        ("dropped", d.dropped),
        ("timed_out", d.timed_out),
    ]
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_histograms_errors_and_gauges() {
        let m = Metrics::new();
        m.observe_request(Operation::Read, "secret/", Duration::from_micros(300), None);
        m.observe_request(
            Operation::Read,
            "secret/",
            Duration::from_millis(3),
            Some(&ApiError::PermissionDenied),
        );
        m.audit_failure();
        m.revocation_issued();
        m.revocation_token_refused();
        m.revocation_token_refused();
        m.revocation_cleaned(4, 7);
        let text = m.prometheus(&Gauges {
            tokens: Some(3),
            revocation_records: Some(2),
            audit_devices: vec![crate::audit::DeviceMetrics {
                path: "file/".into(),
                device_type: "file".into(),
                written: 5,
                failed: 0,
                dropped: 2,
                timed_out: 1,
            }],
            raft: None,
            mesh: None,
        });
        assert!(text.contains(
            "sigil_audit_device_records_total{device=\"file/\",type=\"file\",outcome=\"dropped\"} 2"
        ));
        assert!(text.contains(
            "sigil_request_duration_seconds_bucket{operation=\"read\",mount=\"secret/\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "sigil_request_duration_seconds_count{operation=\"read\",mount=\"secret/\"} 2"
        ));
        assert!(text.contains(
            "sigil_request_errors_total{operation=\"read\",mount=\"secret/\",status=\"403\"} 1"
        ));
        assert!(text.contains("sigil_audit_failures_total 1"));
        assert!(text.contains("sigil_tokens 3"));
        for line in [
            "sigil_revocations_issued_total 1",
            "sigil_revocation_tokens_refused_total 2",
            "sigil_revocation_logins_refused_total 0",
            "sigil_revocation_cleanup_tokens_total 4",
            "sigil_revocation_cleanup_leases_total 7",
            "sigil_revocation_records 2",
        ] {
            assert!(text.contains(line), "{line}");
        }
        assert!(
            !text.contains("sigil_raft"),
            "no Raft figures without a Raft"
        );
        let j = m.json(&Gauges::default());
        assert_eq!(j["Samples"][0]["Count"], 2);
        assert_eq!(m.request_count(Operation::Read, "secret/"), 2);
    }

    #[test]
    fn raft_figures_render_as_gauges_counters_and_histograms() {
        let stats = crate::raft::stats::RaftStats::new();
        stats.proposal(6, Duration::from_millis(4), true);
        stats.log_sync(2, Duration::from_micros(1_200));
        let figures = crate::raft::stats::RaftFigures {
            is_leader: true,
            term: 3,
            applied_index: 41,
            cache_hits: 9,
            cache_misses: 2,
            cache_entries: 5,
            ..stats.figures()
        };
        let gauges = Gauges {
            raft: Some(figures),
            ..Gauges::default()
        };
        let text = Metrics::new().prometheus(&gauges);
        for line in [
            "sigil_raft_is_leader 1",
            "sigil_raft_term 3",
            "sigil_raft_applied_index 41",
            "sigil_storage_cache_hits_total 9",
            "sigil_storage_cache_misses_total 2",
            "sigil_storage_cache_entries 5",
            "sigil_raft_proposals_total 1",
            "sigil_raft_proposed_commands_total 6",
            "sigil_raft_log_synced_appends_total 2",
            "# TYPE sigil_raft_commit_duration_seconds histogram",
            "sigil_raft_commit_duration_seconds_bucket{le=\"0.0025\"} 0",
            "sigil_raft_commit_duration_seconds_bucket{le=\"0.005\"} 1",
            "sigil_raft_log_sync_duration_seconds_bucket{le=\"+Inf\"} 1",
            "sigil_raft_log_sync_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        let j = Metrics::new().json(&gauges);
        let gauge = |name: &str| {
            j["Gauges"]
                .as_array()
                .and_then(|a| a.iter().find(|g| g["Name"] == name))
                .map(|g| g["Value"].clone())
        };
        assert_eq!(gauge("sigil.raft.is.leader"), Some(json!(1)));
        let commit = j["Samples"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["Name"] == "sigil.raft.commit.duration"))
            .expect("commit sample");
        assert_eq!(commit["Count"], 1);
    }
}
