//! A bench run's figures: the table people read and the JSON line scripts
//! parse.

use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::Serialize;

use crate::bench::{LevelOutcome, Target, Transport, Workload};

/// Everything one `sigil-chaos bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: Workload,
    /// The measured window of each level, in seconds.
    pub duration_s: f64,
    pub warmup_s: f64,
    pub seed: u64,
    pub value_size: usize,
    pub keys: usize,
    pub results: Vec<Row>,
    /// Sigil ÷ bare, for each transport and client count measured on both.
    pub ratios: Vec<Ratio>,
}

/// One level: a target, over a transport, at a client count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub target: Target,
    /// `None` (JSON `null`) for the RocksDB reference, which has no API.
    pub transport: Option<Transport>,
    pub clients: usize,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
}

impl Row {
    /// The row for `outcome`, rounded to 0.1 op/s and 1 µs.
    pub fn new(
        target: Target,
        transport: Option<Transport>,
        clients: usize,
        o: &LevelOutcome,
    ) -> Self {
        Self {
            target,
            transport,
            clients,
            ops_per_sec: round(o.ops_per_sec(), 1),
            p50_ms: ms(o.latency.p50),
            p99_ms: ms(o.latency.p99),
            max_ms: ms(o.latency.max),
            errors: o.errors,
        }
    }
}

/// How Sigil's throughput compares with the bare handlers' over the same
/// client code, transport and client count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    pub transport: Transport,
    pub clients: usize,
    /// Sigil ops/s ÷ bare ops/s; `null` when the bare row did no work.
    pub ops_ratio: Option<f64>,
}

impl Ratio {
    /// One ratio per Sigil row that has a bare row to compare with, in the
    /// order the Sigil rows appear.
    pub fn pair(rows: &[Row]) -> Vec<Ratio> {
        rows.iter()
            .filter(|r| r.target == Target::Sigil)
            .filter_map(|sigil| {
                let transport = sigil.transport?;
                let bare = rows.iter().find(|r| {
                    r.target == Target::Bare
                        && r.transport == sigil.transport
                        && r.clients == sigil.clients
                })?;
                Some(Ratio {
                    transport,
                    clients: sigil.clients,
                    ops_ratio: (bare.ops_per_sec > 0.0)
                        .then(|| round(sigil.ops_per_sec / bare.ops_per_sec, 3)),
                })
            })
            .collect()
    }
}

impl Report {
    /// The one-line JSON object `--json` prints last.
    pub fn to_json_line(&self) -> String {
        // Only plain structs, strings and finite numbers: cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The human-readable table: one row per level, then one per ratio.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<7} {:<9} {:<9} {:>7} {:>12} {:>9} {:>9} {:>9} {:>7}",
            "target",
            "transport",
            "workload",
            "clients",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors"
        );
        for r in &self.results {
            let _ = writeln!(
                out,
                "{:<7} {:<9} {:<9} {:>7} {:>12.1} {:>9.3} {:>9.3} {:>9.3} {:>7}",
                r.target.to_string(),
                r.transport
                    .map_or_else(|| "-".to_owned(), |t| t.to_string()),
                self.workload.to_string(),
                r.clients,
                r.ops_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.errors
            );
        }
        for r in &self.ratios {
            let ratio = match r.ops_ratio {
                Some(x) => format!("{x:.3}x"),
                None => "n/a".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<7} {:<9} {:<9} {:>7} {:>12}   sigil ops/s / bare ops/s",
                "ratio",
                r.transport.to_string(),
                self.workload.to_string(),
                r.clients,
                ratio
            );
        }
        let _ = write!(
            out,
            "{:.1} s measured per row after {:.1} s warm-up; seed {}; {} keys, {}-byte values",
            self.duration_s, self.warmup_s, self.seed, self.keys, self.value_size
        );
        if self.results.iter().any(|r| r.target == Target::Bare) {
            let _ = write!(
                out,
                "\nbare = in-process axum/tonic handlers returning fixed responses: \
                 the same client code with no Sigil behind it"
            );
        }
        if self.results.iter().any(|r| r.target == Target::Rocksdb) {
            let _ = write!(
                out,
                "\nrocksdb = raw RocksDB batch writes with sync on, one thread per client, \
                 on this machine's disk: the physical reference for synced writes"
            );
        }
        f.write_str(&out)
    }
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0, 3)
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: Target, transport: Transport, clients: usize, ops: f64) -> Row {
        Row {
            target,
            transport: Some(transport),
            clients,
            ops_per_sec: ops,
            p50_ms: 0.5,
            p99_ms: 1.0,
            max_ms: 2.0,
            errors: 0,
        }
    }

    #[test]
    fn ratios_pair_sigil_with_bare_of_the_same_level() {
        let rows = vec![
            row(Target::Sigil, Transport::Http, 1, 500.0),
            row(Target::Bare, Transport::Http, 1, 2000.0),
            row(Target::Sigil, Transport::Http, 16, 1000.0),
            row(Target::Bare, Transport::Http, 16, 0.0),
            row(Target::Sigil, Transport::Grpc, 1, 300.0),
            row(Target::Bare, Transport::Grpc, 1, 900.0),
            row(Target::Bare, Transport::Grpc, 16, 900.0),
        ];
        let ratios = Ratio::pair(&rows);
        assert_eq!(
            ratios,
            vec![
                Ratio {
                    transport: Transport::Http,
                    clients: 1,
                    ops_ratio: Some(0.25)
                },
                Ratio {
                    transport: Transport::Http,
                    clients: 16,
                    ops_ratio: None
                },
                Ratio {
                    transport: Transport::Grpc,
                    clients: 1,
                    ops_ratio: Some(0.333)
                },
            ]
        );
    }

    #[test]
    fn json_line_has_the_documented_shape() {
        let rows = vec![
            row(Target::Sigil, Transport::Http, 4, 100.0),
            row(Target::Bare, Transport::Http, 4, 400.0),
        ];
        let report = Report {
            workload: Workload::KvRead,
            duration_s: 1.0,
            warmup_s: 0.0,
            seed: 1,
            value_size: 64,
            keys: 10,
            ratios: Ratio::pair(&rows),
            results: rows,
        };
        let line = report.to_json_line();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["workload"], "kv-read");
        assert_eq!(v["results"][0]["target"], "sigil");
        assert_eq!(v["results"][1]["transport"], "http");
        assert_eq!(v["results"][1]["clients"], 4);
        assert_eq!(v["ratios"][0]["ops_ratio"], 0.25);
        let table = report.to_string();
        assert!(table.contains("ratio   http"));
        assert!(table.contains("bare = in-process"));
    }

    #[test]
    fn rounding() {
        assert_eq!(ms(Duration::from_nanos(1_234_567)), 1.235);
        assert_eq!(round(2.0 / 3.0, 3), 0.667);
    }
}
