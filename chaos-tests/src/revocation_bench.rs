//! `sigil-chaos bench revocation`: global revocation on federated cells of
//! real `sigil server` processes on loopback, started by the bench or
//! already running (`--topology`, from `sigil dev --cells ... --nodes N
//! --topology-out FILE`).
//!
//! Two measures, by `--match`:
//!
//! - **identity** (default): a workload logs in through a global AppRole
//!   role in every cell, so every cell holds a token of the identity
//!   `approle:bench`; every node of every cell keeps using its cell's
//!   token; the identity is revoked through the first cell's first node.
//! - **accessor**: one token, issued in the first cell, in use on every
//!   node of that cell (tokens are cell-local: no other cell ever accepted
//!   it); it is revoked by accessor through the *last* cell's first node,
//!   so the record has to cross cells before it kills anything.
//!
//! The figure per run is the time from the revocation's acknowledgement to
//! the last node refusing its token. Runs start once every node sees every
//! node live on the mesh (steady state).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::Error;
use crate::federation::Federation;

/// How long a run waits for every node to refuse the token.
const DEADLINE: Duration = Duration::from_secs(20);
/// The AppRole mount the bench creates (or reuses) in the first cell.
const MOUNT: &str = "bench-app";

/// What the bench revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Identity,
    Accessor,
}

/// Where the cells come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Start a federation of `cells` × `nodes` under `dir`.
    Start {
        sigil: std::path::PathBuf,
        dir: std::path::PathBuf,
        cells: usize,
        nodes: usize,
    },
    /// A running federation's topology file.
    Topology(std::path::PathBuf),
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub source: Source,
    pub runs: usize,
    pub matching: Match,
}

/// A cell as the bench uses it: its nodes' base URLs and its root token.
#[derive(Debug, Clone)]
struct Target {
    id: String,
    root: String,
    nodes: Vec<String>,
}

struct Bench {
    client: reqwest::Client,
    cells: Vec<Target>,
}

impl Bench {
    async fn call(
        &self,
        c: usize,
        n: usize,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<(u16, Value), Error> {
        let url = format!("{}/v1/{path}", self.cells[c].nodes[n]);
        crate::cell::request(&self.client, &url, method, token, &[], body)
            .await
            .map(|(code, _, out)| (code, out))
    }

    async fn expect(
        &self,
        c: usize,
        method: &str,
        path: &str,
        body: &Value,
        want: &[u16],
    ) -> Result<Value, Error> {
        let root = self.cells[c].root.clone();
        let (code, out) = self.call(c, 0, method, path, Some(&root), body).await?;
        if want.contains(&code) {
            Ok(out)
        } else {
            Err(Error::Fixture(format!(
                "{method} {path} in {}: {code} {out}",
                self.cells[c].id
            )))
        }
    }

    async fn login(&self, c: usize) -> Result<String, Error> {
        let cell = &self.cells[c];
        crate::cell::approle_login(&self.client, &cell.nodes[0], &cell.root, MOUNT, "bench").await
    }

    async fn lookup(&self, c: usize, n: usize, token: &str) -> Option<u16> {
        self.call(
            c,
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
}

fn read_topology(path: &std::path::Path) -> Result<Vec<Target>, Error> {
    let bad = |problem: String| Error::Config {
        key: "--topology",
        problem,
    };
    let text =
        std::fs::read(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let v: Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let cells = v["cells"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad(format!("{}: no cells", path.display())))?;
    cells
        .iter()
        .map(|c| {
            let id = c["id"].as_str().unwrap_or("?").to_owned();
            let root = c["root_token"]
                .as_str()
                .ok_or_else(|| bad(format!("cell {id}: no root_token")))?
                .to_owned();
            let nodes: Vec<String> = c["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n["http_addr"].as_str())
                .map(|a| a.trim_end_matches('/').to_owned())
                .collect();
            if nodes.is_empty() {
                return Err(bad(format!("cell {id}: no nodes with an http_addr")));
            }
            Ok(Target { id, root, nodes })
        })
        .collect()
}

pub async fn bench(config: &BenchConfig) -> Result<serde_json::Map<String, Value>, Error> {
    // Keeps a started federation alive for the whole bench.
    let mut _fed: Option<Federation> = None;
    let cells = match &config.source {
        Source::Start {
            sigil,
            dir,
            cells,
            nodes,
        } => {
            let ids = crate::federation::cell_names(*cells);
            let fed = Federation::start(sigil, dir, ids, *nodes, 2_000).await?;
            let targets = fed
                .cells
                .iter()
                .map(|c| Target {
                    id: c.id().to_owned(),
                    root: c.root_token.clone(),
                    nodes: c.nodes.iter().map(|n| n.url()).collect(),
                })
                .collect();
            _fed = Some(fed);
            targets
        }
        Source::Topology(path) => read_topology(path)?,
    };
    let b = Bench {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Fixture(e.to_string()))?,
        cells,
    };
    // A global AppRole mount and role; 400 when a previous bench made them.
    b.expect(
        0,
        "POST",
        &format!("sys/auth/{MOUNT}"),
        &json!({"type": "approle", "global": true}),
        &[204, 400],
    )
    .await?;
    b.expect(
        0,
        "POST",
        &format!("auth/{MOUNT}/role/bench"),
        &json!({"token_policies": ["default"]}),
        &[204],
    )
    .await?;
    // Every cell has the role before the first run.
    let ready = Instant::now() + DEADLINE;
    for c in 0..b.cells.len() {
        loop {
            let root = b.cells[c].root.clone();
            let (code, _) = b
                .call(
                    c,
                    0,
                    "GET",
                    &format!("auth/{MOUNT}/role/bench"),
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
                    b.cells[c].id
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Measure the mesh formed: every node sees every node live (nodes
    // without the mesh report no such gauge and are not waited for).
    let total: u64 = b.cells.iter().map(|c| c.nodes.len() as u64).sum();
    let formed = Instant::now() + DEADLINE;
    for c in 0..b.cells.len() {
        for n in 0..b.cells[c].nodes.len() {
            loop {
                let root = b.cells[c].root.clone();
                let (_, m) = b
                    .call(c, n, "GET", "sys/metrics", Some(&root), &Value::Null)
                    .await?;
                let live = m["data"]["Gauges"].as_array().and_then(|g| {
                    g.iter()
                        .find(|x| x["Name"] == "sigil.gossip.members.live")
                        .and_then(|x| x["Value"].as_u64())
                });
                if live.is_none_or(|l| l >= total) {
                    break;
                }
                if Instant::now() > formed {
                    return Err(Error::Fixture(format!(
                        "node {n} of {} sees {} of {total} mesh members live",
                        b.cells[c].id,
                        live.unwrap_or(0)
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Which cells hold a token, and where the revocation is issued.
    let (token_cells, issuer): (Vec<usize>, usize) = match config.matching {
        Match::Identity => ((0..b.cells.len()).collect(), 0),
        Match::Accessor => (vec![0], b.cells.len() - 1),
    };
    let targets: Vec<(usize, usize)> = token_cells
        .iter()
        .flat_map(|&c| (0..b.cells[c].nodes.len()).map(move |n| (c, n)))
        .collect();
    let mut last_node = Vec::new();
    let mut per_cell: Vec<Vec<Duration>> = vec![Vec::new(); b.cells.len()];
    let mut missed = 0;
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    for run in 0..config.runs {
        let mut tokens = vec![String::new(); b.cells.len()];
        for &c in &token_cells {
            tokens[c] = b.login(c).await?;
        }
        // Every node serves its cell's token before the revocation.
        for &(c, n) in &targets {
            let until = Instant::now() + DEADLINE;
            while b.lookup(c, n, &tokens[c]).await != Some(200) {
                if Instant::now() > until {
                    return Err(Error::Fixture(format!(
                        "node {n} of {} never served its token",
                        b.cells[c].id
                    )));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let target = match config.matching {
            Match::Identity => json!({"identity": "approle:bench"}),
            Match::Accessor => {
                let (_, me) = b
                    .call(
                        0,
                        0,
                        "GET",
                        "auth/token/lookup-self",
                        Some(&tokens[0]),
                        &Value::Null,
                    )
                    .await?;
                json!({"accessor": me["data"]["accessor"]})
            }
        };
        let mut body = target;
        body["reason"] = json!(format!("bench {started_at} run {run}"));
        body["ttl"] = json!("10m");
        let started = Instant::now();
        let polls = futures::future::join_all(targets.iter().map(|&(c, n)| {
            let (b, token) = (&b, tokens[c].clone());
            async move {
                while started.elapsed() < DEADLINE {
                    if b.lookup(c, n, &token).await == Some(403) {
                        return Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                None
            }
        }));
        let revoke = async {
            let out = b
                .expect(issuer, "POST", "sys/revocations", &body, &[200])
                .await;
            (out, Instant::now())
        };
        let (seen, (acked, acked_at)) = futures::join!(polls, revoke);
        acked?;
        match seen.iter().copied().collect::<Option<Vec<Instant>>>() {
            Some(all) => {
                let after = |t: &Instant| t.saturating_duration_since(acked_at);
                last_node.push(all.iter().map(after).max().unwrap_or_default());
                let mut this_run = vec![None; b.cells.len()];
                for (&(c, _), t) in targets.iter().zip(&all) {
                    let d = after(t);
                    this_run[c] = Some(this_run[c].map_or(d, |x: Duration| x.max(d)));
                }
                for (c, d) in this_run.into_iter().enumerate() {
                    if let Some(d) = d {
                        per_cell[c].push(d);
                    }
                }
            }
            None => missed += 1,
        }
    }
    let pct = crate::latency::percentile_ms;
    let mut f = serde_json::Map::new();
    f.insert("bench".into(), json!("revocation"));
    f.insert(
        "match".into(),
        json!(match config.matching {
            Match::Identity => "identity",
            Match::Accessor => "accessor",
        }),
    );
    f.insert("issued_in".into(), json!(b.cells[issuer].id));
    f.insert("cells".into(), json!(b.cells.len()));
    f.insert("nodes_measured".into(), json!(targets.len()));
    f.insert("runs".into(), json!(config.runs));
    f.insert("missed".into(), json!(missed));
    f.insert("last_node_p50_ms".into(), json!(pct(&last_node, 50.0)));
    f.insert("last_node_p99_ms".into(), json!(pct(&last_node, 99.0)));
    f.insert("last_node_max_ms".into(), json!(pct(&last_node, 100.0)));
    for (c, v) in per_cell.iter().enumerate() {
        if !v.is_empty() {
            f.insert(
                format!("cell_{}_last_node_p99_ms", b.cells[c].id),
                json!(pct(v, 99.0)),
            );
        }
    }
    Ok(f)
}
