//! `sigil-chaos bench revocation`: federated cells of real `sigil server`
//! processes on loopback. Each run logs a workload in through a global
//! AppRole role in every cell (so every cell holds a token of the identity
//! `approle:bench`), keeps every node of every cell using its cell's token,
//! then revokes the identity through the first cell's first node. The
//! figure per run is the time from the revocation's acknowledgement to the
//! last node of any cell refusing its token.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::Error;
use crate::federation::Federation;

/// How long a run waits for every node to refuse the token.
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub sigil: std::path::PathBuf,
    pub dir: std::path::PathBuf,
    pub cells: usize,
    pub nodes: usize,
    pub runs: usize,
}

async fn lookup(fed: &Federation, c: usize, n: usize, token: &str) -> Option<u16> {
    fed.cells[c]
        .call(
            n,
            "GET",
            "auth/token/lookup-self",
            Some(token),
            &Value::Null,
        )
        .await
        .ok()
        .map(|(code, _)| code)
}

pub async fn bench(config: &BenchConfig) -> Result<serde_json::Map<String, Value>, Error> {
    let ids = crate::federation::cell_names(config.cells);
    let fed = Federation::start(&config.sigil, &config.dir, ids, config.nodes, 2_000).await?;
    let root0 = fed.cells[0].root_token.clone();
    fed.cells[0]
        .expect(
            0,
            "POST",
            "sys/auth/bench-app",
            Some(&root0),
            &json!({"type": "approle", "global": true}),
            204,
        )
        .await?;
    fed.cells[0]
        .expect(
            0,
            "POST",
            "auth/bench-app/role/bench",
            Some(&root0),
            &json!({"token_policies": ["default"]}),
            204,
        )
        .await?;
    // Every cell has the role before the first run.
    let ready = Instant::now() + DEADLINE;
    for c in 0..fed.cells.len() {
        let root = fed.cells[c].root_token.clone();
        loop {
            let (code, _) = fed.cells[c]
                .call(
                    0,
                    "GET",
                    "auth/bench-app/role/bench",
                    Some(&root),
                    &Value::Null,
                )
                .await?;
            if code == 200 {
                break;
            }
            if Instant::now() > ready {
                return Err(Error::Fixture(format!(
                    "cell {} never got the global role",
                    fed.cells[c].id()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let targets: Vec<(usize, usize)> = (0..fed.cells.len())
        .flat_map(|c| (0..fed.cells[c].nodes.len()).map(move |n| (c, n)))
        .collect();
    let mut last_node = Vec::new();
    let mut per_cell: Vec<Vec<Duration>> = vec![Vec::new(); fed.cells.len()];
    let mut missed = 0;
    for run in 0..config.runs {
        let mut tokens = Vec::new();
        for c in 0..fed.cells.len() {
            tokens.push(fed.cells[c].approle_login("bench-app", "bench").await?);
        }
        // Every node serves its cell's token before the revocation.
        for &(c, n) in &targets {
            let until = Instant::now() + DEADLINE;
            while lookup(&fed, c, n, &tokens[c]).await != Some(200) {
                if Instant::now() > until {
                    return Err(Error::Fixture(format!(
                        "node {n} of {} never served its token",
                        fed.cells[c].id()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let started = Instant::now();
        let polls = futures::future::join_all(targets.iter().map(|&(c, n)| {
            let (fed, token) = (&fed, tokens[c].clone());
            async move {
                while started.elapsed() < DEADLINE {
                    if lookup(fed, c, n, &token).await == Some(403) {
                        return Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                None
            }
        }));
        let revoke = async {
            let out = fed.cells[0]
                .expect(
                    0,
                    "POST",
                    "sys/revocations",
                    Some(&root0),
                    &json!({
                        "identity": "approle:bench",
                        "reason": format!("bench run {run}"),
                        "ttl": "10m",
                    }),
                    200,
                )
                .await;
            (out, Instant::now())
        };
        let (seen, (acked, acked_at)) = futures::join!(polls, revoke);
        acked?;
        match seen.iter().copied().collect::<Option<Vec<Instant>>>() {
            Some(all) => {
                let after = |t: &Instant| t.saturating_duration_since(acked_at);
                last_node.push(all.iter().map(after).max().unwrap_or_default());
                let mut this_run = vec![Duration::ZERO; fed.cells.len()];
                for (&(c, _), t) in targets.iter().zip(&all) {
                    this_run[c] = this_run[c].max(after(t));
                }
                for (c, d) in this_run.into_iter().enumerate() {
                    per_cell[c].push(d);
                }
            }
            None => missed += 1,
        }
    }
    let pct = crate::latency::percentile_ms;
    let mut f = serde_json::Map::new();
    f.insert("bench".into(), json!("revocation"));
    f.insert("cells".into(), json!(fed.cells.len()));
    f.insert("nodes_per_cell".into(), json!(config.nodes));
    f.insert("runs".into(), json!(config.runs));
    f.insert("missed".into(), json!(missed));
    f.insert("last_node_p50_ms".into(), json!(pct(&last_node, 50.0)));
    f.insert("last_node_p99_ms".into(), json!(pct(&last_node, 99.0)));
    f.insert("last_node_max_ms".into(), json!(pct(&last_node, 100.0)));
    for (c, v) in per_cell.iter().enumerate() {
        f.insert(
            format!("cell_{}_last_node_p99_ms", fed.cells[c].id()),
            json!(pct(v, 99.0)),
        );
    }
    Ok(f)
}
