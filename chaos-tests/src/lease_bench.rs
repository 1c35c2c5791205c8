//! `sigil-chaos bench leases`: the figures of machine identity and leases on one
//! cell, measured from the outside against a real `sigil` process and a
//! real PostgreSQL (docs/benchmarks.md, "Leases and identity"):
//!
//! 1. **AppRole logins/s**: closed-loop clients log in with one role ID and
//!    an unlimited secret ID (each login writes a token).
//! 2. **Dynamic PostgreSQL credentials/s**: clients read `creds/` of a role
//!    whose statement creates a real user `VALID UNTIL` the lease's end.
//! 3. **revoke-prefix**: `revoke` leases with real users, then one
//!    `revoke-prefix` of them, timed end to end; afterwards no lease and no
//!    user may be left.
//! 4. **Unseal to serving with many live leases**: `live` leases (from a
//!    role whose statement creates nothing, so PostgreSQL is not the
//!    bottleneck of filling), then a SIGKILL and restart, timed to the
//!    unseal and to the first credentials served, with the node's memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sigil_cell::testkit::postgres::PgServer;

use crate::Error;
use crate::cell::{Cell, CellOptions};
use crate::latency::{Latencies, Summary};

#[derive(Debug, Clone)]
pub struct LeaseBenchConfig {
    pub sigil: PathBuf,
    pub dir: PathBuf,
    pub clients: usize,
    pub duration: Duration,
    /// Leases revoked by one `revoke-prefix`.
    pub revoke: u64,
    /// Live leases when the node is restarted.
    pub live: u64,
}

/// One throughput figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rate {
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseBenchReport {
    pub clients: usize,
    pub approle_logins: Rate,
    pub db_creds: Rate,
    pub revoke_prefix_leases: u64,
    pub revoke_prefix_fill_seconds: f64,
    pub revoke_prefix_seconds: f64,
    pub revoke_prefix_leases_left: u64,
    pub revoke_prefix_users_left: i64,
    pub live_leases: u64,
    pub live_fill_seconds: f64,
    pub restart_api_up_ms: f64,
    pub restart_unsealed_ms: f64,
    pub restart_serving_ms: f64,
    pub restart_rss_mib: f64,
}

impl std::fmt::Display for LeaseBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |f: &mut std::fmt::Formatter<'_>, name: &str, r: &Rate| {
            writeln!(
                f,
                "{name:<28} {:>8.0}/s  p50 {:>6.1} ms  p99 {:>6.1} ms  ({} ok, {} errors, {:.1}s)",
                r.per_second, r.p50_ms, r.p99_ms, r.ops, r.errors, r.seconds
            )
        };
        writeln!(f, "one-node cell, {} clients", self.clients)?;
        rate(f, "AppRole logins", &self.approle_logins)?;
        rate(f, "PostgreSQL credentials", &self.db_creds)?;
        writeln!(
            f,
            "revoke-prefix of {} leases    {:>8.1} s  (filled in {:.1}s; {} leases and {} users left)",
            self.revoke_prefix_leases,
            self.revoke_prefix_seconds,
            self.revoke_prefix_fill_seconds,
            self.revoke_prefix_leases_left,
            self.revoke_prefix_users_left
        )?;
        writeln!(
            f,
            "{} live leases (filled in {:.1}s), after SIGKILL and restart:",
            self.live_leases, self.live_fill_seconds
        )?;
        writeln!(
            f,
            "  API answering (sealed)   {:>9.1} ms",
            self.restart_api_up_ms
        )?;
        writeln!(
            f,
            "  unsealed                 {:>9.1} ms",
            self.restart_unsealed_ms
        )?;
        writeln!(
            f,
            "  credentials served       {:>9.1} ms",
            self.restart_serving_ms
        )?;
        write!(
            f,
            "  node memory (RSS)        {:>9.1} MiB",
            self.restart_rss_mib
        )
    }
}

fn fixture(e: impl std::fmt::Display) -> Error {
    Error::Fixture(e.to_string())
}

/// Runs `clients` closed loops of `op` for `duration`.
async fn closed_loop<F, Fut>(clients: usize, duration: Duration, op: F) -> Rate
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let op = Arc::new(op);
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (op, errors) = (op.clone(), errors.clone());
            tokio::spawn(async move {
                let mut lat = Latencies::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if op(c).await {
                        lat.record(t.elapsed());
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                lat
            })
        })
        .collect();
    let mut all = Latencies::new();
    for t in tasks {
        if let Ok(l) = t.await {
            all.merge(l);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let s: Summary = all.summarize();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Rate {
        ops: s.count,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        per_second: s.count as f64 / seconds,
        p50_ms: ms(s.p50),
        p99_ms: ms(s.p99),
    }
}

/// Reads `creds/<role>` `count` times with `clients` at once; returns the
/// seconds it took.
async fn fill(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    role: &str,
    count: u64,
    clients: usize,
) -> Result<f64, Error> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (next, client) = (next.clone(), client.clone());
            let (url, token, role) = (url.to_owned(), token.to_owned(), role.to_owned());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let resp = client
                        .get(format!("{url}/v1/database/creds/{role}"))
                        .header("X-Vault-Token", &token)
                        .send()
                        .await
                        .map_err(fixture)?;
                    if !resp.status().is_success() {
                        let status = resp.status();
                        let body = resp.text().await.unwrap_or_default();
                        return Err(Error::Fixture(format!("creds/{role}: {status} {body}")));
                    }
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(fixture)??;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn expect_ok(
    cell: &Cell,
    method: &str,
    path: &str,
    token: &str,
    body: Value,
) -> Result<Value, Error> {
    let (code, b) = cell.call(0, method, path, Some(token), &body).await?;
    if !(200..300).contains(&code) {
        return Err(Error::Fixture(format!("{method} {path}: {code} {b}")));
    }
    Ok(b)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

pub async fn run(config: &LeaseBenchConfig) -> Result<LeaseBenchReport, Error> {
    let pg = PgServer::start().await.map_err(fixture)?;
    let mut cell = Cell::start(CellOptions {
        nodes: 1,
        sigil: config.sigil.clone(),
        dir: config.dir.clone(),
        snapshot_every: 20_000,
        max_staleness_ms: 250,
        cell_id: "chaos".into(),
    })
    .await?;
    let root = cell.root_token.clone();
    let url = cell.nodes[0].url();
    let http = cell.client().clone();

    // --- AppRole -------------------------------------------------------------
    expect_ok(
        &cell,
        "POST",
        "sys/auth/approle",
        &root,
        json!({"type": "approle"}),
    )
    .await?;
    expect_ok(
        &cell,
        "POST",
        "auth/approle/role/bench",
        &root,
        json!({"token_policies": ["default"], "token_ttl": "10m"}),
    )
    .await?;
    let role_id = expect_ok(
        &cell,
        "GET",
        "auth/approle/role/bench/role-id",
        &root,
        Value::Null,
    )
    .await?["data"]["role_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let secret_id = expect_ok(
        &cell,
        "POST",
        "auth/approle/role/bench/secret-id",
        &root,
        json!({}),
    )
    .await?["data"]["secret_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let login_body = json!({ "role_id": role_id, "secret_id": secret_id });
    let approle_logins = {
        let (http, url) = (http.clone(), url.clone());
        closed_loop(config.clients, config.duration, move |_| {
            let req = http
                .post(format!("{url}/v1/auth/approle/login"))
                .json(&login_body);
            async move { req.send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await
    };

    // --- Database credentials -------------------------------------------------
    expect_ok(
        &cell,
        "POST",
        "sys/mounts/database",
        &root,
        json!({"type": "database"}),
    )
    .await?;
    expect_ok(
        &cell,
        "POST",
        "database/config/pg",
        &root,
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": pg.connection_url_template(),
            "username": pg.superuser(),
            "password": pg.password(),
            "allowed_roles": ["bench", "revoke", "live"],
            "max_open_connections": config.clients.clamp(4, 32),
        }),
    )
    .await?;
    let create_user =
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';";
    for (role, statements) in [
        ("bench", create_user),
        ("revoke", create_user),
        ("live", "SELECT 1;"),
    ] {
        expect_ok(
            &cell,
            "POST",
            &format!("database/roles/{role}"),
            &root,
            json!({"db_name": "pg", "creation_statements": statements, "default_ttl": "24h"}),
        )
        .await?;
    }
    let db_creds = {
        let (http, url, root) = (http.clone(), url.clone(), root.clone());
        closed_loop(config.clients, config.duration, move |_| {
            let req = http
                .get(format!("{url}/v1/database/creds/bench"))
                .header("X-Vault-Token", &root);
            async move { req.send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await
    };
    // The benchmark's own users go before the revoke figure is taken.
    expect_ok(
        &cell,
        "PUT",
        "sys/leases/revoke-prefix/database/creds/bench",
        &root,
        json!({}),
    )
    .await?;

    // --- revoke-prefix ----------------------------------------------------------
    let revoke_fill = fill(&http, &url, &root, "revoke", config.revoke, config.clients).await?;
    // One synchronous request for all of them: no client timeout.
    let patient = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .map_err(fixture)?;
    let t = Instant::now();
    let resp = patient
        .put(format!(
            "{url}/v1/sys/leases/revoke-prefix/database/creds/revoke"
        ))
        .header("X-Vault-Token", &root)
        .json(&json!({}))
        .send()
        .await
        .map_err(fixture)?;
    let code = resp.status().as_u16();
    let report: Value = resp.json().await.unwrap_or(Value::Null);
    let revoke_seconds = t.elapsed().as_secs_f64();
    if code != 200 || report["data"]["failed"].as_u64() != Some(0) {
        return Err(Error::Fixture(format!("revoke-prefix: {code} {report}")));
    }
    let count = expect_ok(
        &cell,
        "GET",
        "sys/leases/count?type=all",
        &root,
        Value::Null,
    )
    .await?;
    let leases_left = count["data"]["counts"]["database/"].as_u64().unwrap_or(0);
    let pg_client = pg.client().await.map_err(fixture)?;
    let users_left: i64 = pg_client
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-root-revoke-%'",
            &[],
        )
        .await
        .map_err(fixture)?
        .get(0);

    // --- unseal to serving with live leases --------------------------------------
    let live_fill = fill(&http, &url, &root, "live", config.live, config.clients).await?;
    cell.kill(0);
    let t0 = Instant::now();
    cell.spawn(0)?;
    cell.wait_up(0).await?;
    let api_up = t0.elapsed();
    cell.unseal(0).await?;
    let unsealed = t0.elapsed();
    loop {
        let (code, _) = cell
            .call(0, "GET", "database/creds/live", Some(&root), &Value::Null)
            .await?;
        if code == 200 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            return Err(Error::Fixture(format!(
                "credentials not served after restart ({code})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let serving = t0.elapsed();
    let rss = cell.pid(0).map_or(0.0, rss_mib);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(LeaseBenchReport {
        clients: config.clients,
        approle_logins,
        db_creds,
        revoke_prefix_leases: config.revoke,
        revoke_prefix_fill_seconds: revoke_fill,
        revoke_prefix_seconds: revoke_seconds,
        revoke_prefix_leases_left: leases_left,
        revoke_prefix_users_left: users_left,
        live_leases: config.live,
        live_fill_seconds: live_fill,
        restart_api_up_ms: ms(api_up),
        restart_unsealed_ms: ms(unsealed),
        restart_serving_ms: ms(serving),
        restart_rss_mib: rss,
    })
}
