//! `sigil-chaos bench` end to end against the in-process bare servers: the
//! binary's `--json` line, Sigil-versus-bare ratios (a second bare instance
//! standing in for Sigil), and failures counted or reported. Everything
//! listens on 127.0.0.1; nothing asserts a timing.

use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;
use serde_json::Value;
use sigil_chaos::bare::BareServers;
use sigil_chaos::bench::{
    self, BenchConfig, Client, ClientSpec, Endpoints, KeySpace, LevelPlan, Target, Transport,
    Workload, run_level,
};
use sigil_chaos::{Error, Token};

/// Runs the binary with `args`, with no Sigil address or token inherited
/// from the environment, and returns its stdout's last line as JSON.
fn bench_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sigil-chaos"))
        .arg("bench")
        .args(args)
        .env_remove("SIGIL_ADDR")
        .env_remove("VAULT_ADDR")
        .env_remove("SIGIL_TOKEN")
        .env_remove("VAULT_TOKEN")
        .output()
        .expect("run sigil-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sigil-chaos failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn assert_bare_rows(report: &Value, workload: &str) {
    assert_eq!(report["workload"], workload);
    assert_eq!(report["duration_s"], 1.0);
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{report}");
    for (row, transport) in results.iter().zip(["http", "grpc"]) {
        assert_eq!(row["target"], "bare");
        assert_eq!(row["transport"], transport);
        assert_eq!(row["clients"], 2);
        assert!(
            row["ops_per_sec"].as_f64().expect("ops_per_sec") > 0.0,
            "{row}"
        );
        assert_eq!(row["errors"], 0, "{row}");
        let p50 = row["p50_ms"].as_f64().expect("p50_ms");
        let p99 = row["p99_ms"].as_f64().expect("p99_ms");
        let max = row["max_ms"].as_f64().expect("max_ms");
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{row}");
    }
    // Nothing to compare bare with.
    assert_eq!(report["ratios"], Value::Array(vec![]));
}

#[test]
fn binary_kv_read_against_bare_prints_a_json_line() {
    let report = bench_json(&[
        "kv-read",
        "--bare",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--clients",
        "2",
        "--transport",
        "both",
        "--json",
    ]);
    assert_bare_rows(&report, "kv-read");
}

#[test]
fn binary_kv_write_against_bare_prints_a_json_line() {
    let report = bench_json(&[
        "kv-write",
        "--bare",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--clients",
        "2",
        "--transport",
        "both",
        "--json",
        "--keys",
        "10",
        "--value-size",
        "1024",
    ]);
    assert_bare_rows(&report, "kv-write");
}

#[test]
fn binary_kv_write_with_the_rocksdb_reference_adds_a_row_per_client_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = bench_json(&[
        "kv-write",
        "--bare",
        "--rocksdb-reference",
        "--rocksdb-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--clients",
        "1,3",
        "--transport",
        "http",
        "--json",
    ]);
    let results = report["results"].as_array().expect("results");
    let targets: Vec<(&str, usize)> = results
        .iter()
        .map(|r| {
            (
                r["target"].as_str().expect("target"),
                r["clients"].as_u64().expect("clients") as usize,
            )
        })
        .collect();
    // Back to back per client count: bare, then the reference.
    assert_eq!(
        targets,
        [("bare", 1), ("rocksdb", 1), ("bare", 3), ("rocksdb", 3)]
    );
    for row in results.iter().filter(|r| r["target"] == "rocksdb") {
        assert_eq!(row["transport"], Value::Null, "{row}");
        assert_eq!(row["errors"], 0, "{row}");
        assert!(row["ops_per_sec"].as_f64().expect("ops") > 0.0, "{row}");
    }
    // The reference database was made inside the directory and removed.
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("read dir").count(),
        0,
        "the reference database is cleaned up"
    );
}

#[test]
fn the_rocksdb_reference_is_refused_for_reads() {
    let out = Command::new(env!("CARGO_BIN_EXE_sigil-chaos"))
        .args(["bench", "kv-read", "--bare", "--rocksdb-reference"])
        .output()
        .expect("run sigil-chaos");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--rocksdb-reference") && stderr.contains("kv-write"),
        "{stderr}"
    );
}

fn config(sigil: Option<Endpoints>) -> BenchConfig {
    BenchConfig {
        workload: Workload::KvRead,
        sigil,
        replicas: Vec::new(),
        bare: true,
        rocksdb_reference: None,
        transports: vec![Transport::Http, Transport::Grpc],
        clients: vec![1, 3],
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(100),
        mount: "secret".to_owned(),
        keys: 5,
        value_size: 32,
        seed: 9,
        token: Some(Token::new("root")),
        ca_cert: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigil_and_bare_in_one_run_give_a_ratio_per_level() {
    // A second bare instance stands in for a Sigil node.
    let stand_in = BareServers::start(32).expect("start stand-in");
    let report = bench::run(&config(Some(stand_in.endpoints().clone())), |_| {})
        .await
        .expect("bench runs");
    let levels: Vec<_> = report
        .results
        .iter()
        .map(|r| (r.transport.expect("a transport"), r.clients, r.target))
        .collect();
    use Target::{Bare, Sigil};
    use Transport::{Grpc, Http};
    assert_eq!(
        levels,
        vec![
            (Http, 1, Sigil),
            (Http, 1, Bare),
            (Http, 3, Sigil),
            (Http, 3, Bare),
            (Grpc, 1, Sigil),
            (Grpc, 1, Bare),
            (Grpc, 3, Sigil),
            (Grpc, 3, Bare),
        ]
    );
    assert!(
        report
            .results
            .iter()
            .all(|r| r.errors == 0 && r.ops_per_sec > 0.0)
    );
    let ratios: Vec<_> = report
        .ratios
        .iter()
        .map(|r| (r.transport, r.clients, r.ops_ratio.is_some()))
        .collect();
    assert_eq!(
        ratios,
        vec![
            (Http, 1, true),
            (Http, 3, true),
            (Grpc, 1, true),
            (Grpc, 3, true)
        ]
    );
    let table = report.to_string();
    assert_eq!(table.matches("\nratio ").count(), 4, "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_sigil_fails_setup_with_a_clear_error() {
    // Bind and drop, so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let endpoints = Endpoints {
        http: format!("http://127.0.0.1:{port}").parse().expect("url"),
        grpc: format!("http://127.0.0.1:{port}"),
    };
    let err = bench::run(&config(Some(endpoints)), |_| {})
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(
            err,
            Error::Setup {
                target: Target::Sigil,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("sigil over http"), "{text}");
    assert!(!text.contains("root"), "the token leaked: {text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn non_2xx_responses_are_counted_as_errors() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = Router::new().route(
        "/{*path}",
        any(|| async { (StatusCode::FORBIDDEN, r#"{"errors":["permission denied"]}"#) }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let endpoints = Endpoints {
        http: format!("http://{addr}").parse().expect("url"),
        grpc: format!("http://{addr}"),
    };
    let spec = ClientSpec {
        mount: "secret".to_owned(),
        keys: KeySpace::new(3),
        token: Token::new("t"),
        value: "v".to_owned(),
        ca_cert: None,
    };
    let clients = Client::connect_many(
        Target::Sigil,
        Transport::Http,
        std::slice::from_ref(&endpoints),
        &spec,
        2,
    )
    .await
    .expect("clients");
    let outcome = run_level(
        clients,
        LevelPlan {
            workload: Workload::KvRead,
            keys: 3,
            seed: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(200),
        },
    )
    .await;
    server.abort();
    assert_eq!(outcome.ops, 0);
    assert!(outcome.errors > 0);
    let first = outcome.first_error.expect("first error kept");
    assert!(first.starts_with("HTTP 403"), "{first}");
    assert!(first.contains("permission denied"), "{first}");
}
