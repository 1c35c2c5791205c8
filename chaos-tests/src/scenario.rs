//! `sigil-chaos scenario NAME --seed S`: real `sigil server` processes
//! behind fault-injecting proxies ([`crate::cell`]), broken on purpose,
//! checked by invariant checkers. Each scenario prints its seed; the seed
//! fixes every random choice the harness makes (which keys, which operation,
//! which node), while process scheduling stays the operating system's.
//!
//! - `leader-kills`: three nodes, concurrent clients doing KV v2 writes,
//!   check-and-set writes and linearizable reads; the leader is SIGKILLed
//!   three times (and restarted). The client history must be linearizable
//!   (Wing & Gong search, [`crate::linearizability`]) and every acknowledged
//!   write must be readable at its version afterwards.
//! - `partition-leader`: the leader is cut off from both other nodes. The
//!   majority elects a new leader and keeps taking writes; the old leader
//!   acknowledges none; after healing it catches up to the majority's state.
//! - `snapshot-catchup`: a follower is down while the cell takes 50,000
//!   writes (more than the snapshot interval); restarted, it catches up
//!   through a snapshot and serves the data.
//! - `read-your-writes`: replication into one follower is delayed by
//!   300 ms; a write on the leader followed at once by a read on that
//!   follower carrying the write's `X-Sigil-Index` always sees the write.
//! - `control-plane-propagation` and `control-plane-partition`: two
//!   federated cells of three nodes each ([`crate::control_plane`]).
//! - `revocation-partition`: three federated cells, one cut off while an
//!   identity is revoked in another ([`crate::revocation_scenario`]).
//! - `control-plane-simulation`: five cells in the deterministic simulation
//!   of `simulate control-plane` ([`crate::control_plane_sim`]), with
//!   random partitions, delays and crashes; every replica must end identical.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Error;
use crate::cell::{Cell, CellOptions};
use crate::history::{History, Op, ReadResult, WriteResult};
use crate::linearizability::{Budget, CheckError, check_kv};

/// The scenarios `sigil-chaos scenario` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Name {
    LeaderKills,
    PartitionLeader,
    SnapshotCatchup,
    ReadYourWrites,
    ControlPlanePropagation,
    ControlPlanePartition,
    ControlPlaneSimulation,
    RevocationPartition,
}

impl Name {
    pub fn as_str(self) -> &'static str {
        match self {
            Name::LeaderKills => "leader-kills",
            Name::PartitionLeader => "partition-leader",
            Name::SnapshotCatchup => "snapshot-catchup",
            Name::ReadYourWrites => "read-your-writes",
            Name::ControlPlanePropagation => "control-plane-propagation",
            Name::ControlPlanePartition => "control-plane-partition",
            Name::ControlPlaneSimulation => "control-plane-simulation",
            Name::RevocationPartition => "revocation-partition",
        }
    }
}

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    pub name: Name,
    pub seed: u64,
    /// The `sigil` binary the nodes run.
    pub sigil: PathBuf,
    /// Keep the nodes' data and logs here (default: a temporary directory,
    /// removed afterwards unless the scenario fails).
    pub dir: Option<PathBuf>,
    /// Writes for `snapshot-catchup`.
    pub writes: u64,
}

/// One checked invariant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// What a scenario found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub seed: u64,
    pub passed: bool,
    pub checks: Vec<Check>,
    pub figures: serde_json::Map<String, Value>,
    /// Where the nodes' logs are (kept when a check failed).
    pub dir: String,
}

impl Report {
    pub(crate) fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.passed &= ok;
        self.checks.push(Check {
            name: name.to_owned(),
            ok,
            detail: detail.into(),
        });
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "scenario {} (seed {}): {}",
            self.scenario,
            self.seed,
            if self.passed { "PASSED" } else { "FAILED" }
        )?;
        for c in &self.checks {
            writeln!(
                f,
                "  [{}] {}: {}",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            )?;
        }
        for (k, v) in &self.figures {
            writeln!(f, "  {k}: {v}")?;
        }
        write!(f, "  nodes' data and logs: {}", self.dir)
    }
}

/// A small, seedable generator (the gossip core's SplitMix64): the
/// harness's only randomness.
#[derive(Debug, Clone)]
pub struct Rng(sigil_gossip::broadcast::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(sigil_gossip::broadcast::SplitMix64::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// Runs one scenario.
pub async fn run(config: &ScenarioConfig) -> Result<Report, Error> {
    let temp = tempfile::Builder::new()
        .prefix(&format!("sigil-chaos-{}-", config.name.as_str()))
        .tempdir()
        .map_err(|e| Error::Fixture(e.to_string()))?;
    let dir = config
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).map_err(|e| Error::Fixture(e.to_string()))?;
    let mut report = Report {
        scenario: config.name.as_str(),
        seed: config.seed,
        passed: true,
        checks: Vec::new(),
        figures: serde_json::Map::new(),
        dir: dir.display().to_string(),
    };
    if matches!(
        config.name,
        Name::ControlPlanePropagation
            | Name::ControlPlanePartition
            | Name::ControlPlaneSimulation
            | Name::RevocationPartition
    ) {
        let started = Instant::now();
        match config.name {
            Name::ControlPlanePropagation => {
                crate::control_plane::propagation(config, &dir, &mut report).await?;
            }
            Name::ControlPlanePartition => {
                crate::control_plane::partition(config, &dir, &mut report).await?;
            }
            Name::RevocationPartition => {
                crate::revocation_scenario::partition(config, &dir, &mut report).await?;
            }
            _ => crate::control_plane::simulation(config, &mut report),
        }
        report
            .figures
            .insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
        if report.passed && config.dir.is_none() {
            drop(temp);
        } else {
            let _ = temp.keep();
        }
        return Ok(report);
    }
    // The leader batches concurrent writes into one log entry (up to one
    // per writer), so the log grows by at least writes / 32 entries: snapshot
    // often enough that the down node's place in the log is purged.
    let snapshot_every = match config.name {
        Name::SnapshotCatchup => (config.writes / 100).max(20),
        _ => 20_000,
    };
    let mut cell = Cell::start(CellOptions {
        nodes: 3,
        sigil: config.sigil.clone(),
        dir: dir.clone(),
        snapshot_every,
        max_staleness_ms: 250,
        cell_id: "chaos".into(),
    })
    .await?;
    // Keep every version, so each acknowledged write can be read back.
    let root = cell.root_token.clone();
    let (code, body) = cell
        .call(
            0,
            "POST",
            "secret/config",
            Some(&root),
            &json!({ "max_versions": 1_000_000 }),
        )
        .await?;
    if code != 204 && code != 200 {
        return Err(Error::Fixture(format!("secret/config: {code} {body}")));
    }
    let started = Instant::now();
    match config.name {
        Name::LeaderKills => leader_kills(&mut cell, config.seed, &mut report).await?,
        Name::PartitionLeader => partition_leader(&mut cell, config.seed, &mut report).await?,
        Name::SnapshotCatchup => snapshot_catchup(&mut cell, config, &mut report).await?,
        Name::ReadYourWrites => read_your_writes(&mut cell, &mut report).await?,
        Name::ControlPlanePropagation
        | Name::ControlPlanePartition
        | Name::ControlPlaneSimulation
        | Name::RevocationPartition => {}
    }
    report
        .figures
        .insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
    drop(cell);
    if report.passed && config.dir.is_none() {
        drop(temp);
    } else {
        // Keep the logs of a failed run.
        let _ = temp.keep();
    }
    Ok(report)
}

/// What the clients share with the controller.
struct Shared {
    urls: Vec<String>,
    up: Mutex<Vec<bool>>,
    stop: AtomicBool,
    token: String,
    client: reqwest::Client,
}

const KEYS: u64 = 5;

/// One client: random operations on random keys on random running nodes.
async fn client_loop(shared: Arc<Shared>, history: History, id: u64, seed: u64) {
    let mut rng = Rng::new(seed ^ id.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let up: Vec<usize> = {
            let up = shared.up.lock().unwrap_or_else(|p| p.into_inner());
            (0..up.len()).filter(|i| up[*i]).collect()
        };
        if up.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        // A little think time: the scenario checks correctness under
        // failures, not throughput, and the nodes share two cores with it.
        tokio::time::sleep(Duration::from_millis(2 + rng.below(8))).await;
        let node = up[rng.below(up.len() as u64) as usize];
        let key = format!("k{}", rng.below(KEYS));
        let url = format!("{}/v1/secret/data/{key}", shared.urls[node]);
        n += 1;
        let roll = rng.below(10);
        if roll < 4 {
            let op = history.invoke(id, Op::Read { key: key.clone() });
            let resp = shared
                .client
                .get(&url)
                .header("X-Vault-Token", &shared.token)
                .header("X-Sigil-Consistency", "linearizable")
                .send()
                .await;
            match resp {
                Ok(r) if r.status().as_u16() == 404 => op.ok(ReadResult::Absent),
                Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                    Ok(b) => op.ok(ReadResult::Value {
                        value: b["data"]["data"]["v"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        version: b["data"]["metadata"]["version"].as_u64().unwrap_or(0),
                    }),
                    Err(_) => op.fail(),
                },
                _ => op.fail(),
            }
        } else {
            let value = format!("c{id}-{n}");
            let cas = (roll >= 8).then(|| rng.below(6));
            let op = match cas {
                Some(v) => history.invoke(
                    id,
                    Op::Cas {
                        key: key.clone(),
                        expected_version: v,
                        value: value.clone(),
                    },
                ),
                None => history.invoke(
                    id,
                    Op::Write {
                        key: key.clone(),
                        value: value.clone(),
                    },
                ),
            };
            let mut body = json!({ "data": { "v": value } });
            if let Some(v) = cas {
                body["options"] = json!({ "cas": v });
            }
            let resp = shared
                .client
                .put(&url)
                .header("X-Vault-Token", &shared.token)
                .json(&body)
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                    Ok(b) => match b["data"]["version"].as_u64() {
                        Some(version) => op.ok(WriteResult { version }),
                        None => op.unknown(),
                    },
                    Err(_) => op.unknown(),
                },
                Ok(r) if r.status().as_u16() == 400 => {
                    let text = r.text().await.unwrap_or_default();
                    if cas.is_some() && text.contains("check-and-set") {
                        op.cas_mismatch();
                    } else {
                        op.fail();
                    }
                }
                // Refused before any node took it.
                Err(e) if e.is_connect() => op.fail(),
                // 503s, timeouts, connections lost mid-request: the write
                // may or may not have been applied.
                _ => op.unknown(),
            }
        }
    }
}

fn set_up(shared: &Shared, node: usize, up: bool) {
    shared.up.lock().unwrap_or_else(|p| p.into_inner())[node] = up;
}

async fn leader_kills(cell: &mut Cell, seed: u64, report: &mut Report) -> Result<(), Error> {
    let mut rng = Rng::new(seed);
    let shared = Arc::new(Shared {
        urls: cell.nodes.iter().map(|n| n.url()).collect(),
        up: Mutex::new(vec![true; cell.nodes.len()]),
        stop: AtomicBool::new(false),
        token: cell.root_token.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(8))
            .build()
            .map_err(|e| Error::Fixture(e.to_string()))?,
    });
    let history = History::new();
    let clients: Vec<_> = (0..4)
        .map(|id| tokio::spawn(client_loop(shared.clone(), history.clone(), id, seed)))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut kills = Vec::new();
    for round in 0..3 {
        let all: Vec<usize> = (0..cell.nodes.len()).collect();
        let leader = cell
            .wait_leader(&all, None, Duration::from_secs(60))
            .await?;
        set_up(&shared, leader, false);
        cell.kill(leader);
        let killed_at = Instant::now();
        let rest: Vec<usize> = all.iter().copied().filter(|i| *i != leader).collect();
        let new_leader = cell
            .wait_leader(&rest, Some(leader), Duration::from_secs(60))
            .await?;
        let failover = killed_at.elapsed();
        kills.push(json!({ "round": round + 1, "killed": cell.nodes[leader].name, "new_leader": cell.nodes[new_leader].name, "failover_ms": failover.as_millis() as u64 }));
        tokio::time::sleep(Duration::from_millis(1000 + rng.below(1000))).await;
        cell.restart(leader).await?;
        set_up(&shared, leader, true);
        tokio::time::sleep(Duration::from_millis(1500 + rng.below(1000))).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let events = history.events();
    let path = PathBuf::from(&report.dir).join("history.json");
    let _ = history.write_json(&path);
    let ops = events.len() / 2;
    let acked = acknowledged_writes(&events);
    report.figures.insert("operations".into(), json!(ops));
    report
        .figures
        .insert("acknowledged_writes".into(), json!(acked.len()));
    report.figures.insert("kills".into(), json!(kills));
    report.check(
        "three leader kills",
        kills.len() == 3,
        format!("{} kills, each followed by a new leader", kills.len()),
    );
    match check_kv(&events, &Budget::default()) {
        Ok(()) => report.check(
            "linearizable",
            true,
            format!(
                "{ops} operations over {KEYS} keys; history in {}",
                path.display()
            ),
        ),
        Err(CheckError::Violation(v)) => report.check(
            "linearizable",
            false,
            format!("{}; history in {}", v.explanation, path.display()),
        ),
        Err(e) => report.check(
            "linearizable",
            false,
            format!("{e}; history in {}", path.display()),
        ),
    }
    let missing = missing_writes(cell, &acked).await?;
    report.check(
        "every acknowledged write is present",
        missing.is_empty(),
        if missing.is_empty() {
            format!(
                "{} of {} read back at their versions",
                acked.len(),
                acked.len()
            )
        } else {
            format!("missing: {missing:?}")
        },
    );
    Ok(())
}

/// (key, version, value) of every write a client saw acknowledged.
fn acknowledged_writes(events: &[crate::history::Event]) -> Vec<(String, u64, String)> {
    use crate::history::{EventKind, Outcome, Output};
    let mut invoked = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in events {
        match &e.kind {
            EventKind::Invoke(op) => {
                invoked.insert(e.op, op.clone());
            }
            EventKind::Return(Outcome::Ok(Output::Written(WriteResult { version }))) => {
                match invoked.get(&e.op) {
                    Some(Op::Write { key, value }) | Some(Op::Cas { key, value, .. }) => {
                        out.push((key.clone(), *version, value.clone()));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// The acknowledged writes that cannot be read back at their version.
async fn missing_writes(
    cell: &Cell,
    acked: &[(String, u64, String)],
) -> Result<Vec<String>, Error> {
    let root = cell.root_token.clone();
    let node = cell
        .running()
        .first()
        .copied()
        .ok_or_else(|| Error::Fixture("no node running".into()))?;
    let mut missing = Vec::new();
    for (key, version, value) in acked {
        let (code, _, body) = cell
            .call_with(
                node,
                "GET",
                &format!("secret/data/{key}?version={version}"),
                Some(&root),
                &[("X-Sigil-Consistency", "linearizable".to_owned())],
                &Value::Null,
            )
            .await?;
        if code != 200 || body["data"]["data"]["v"].as_str() != Some(value) {
            missing.push(format!("{key}@{version}={value} (got {code})"));
        }
    }
    Ok(missing)
}

async fn partition_leader(cell: &mut Cell, seed: u64, report: &mut Report) -> Result<(), Error> {
    let mut rng = Rng::new(seed);
    let root = cell.root_token.clone();
    let all: Vec<usize> = (0..cell.nodes.len()).collect();
    let old = cell
        .wait_leader(&all, None, Duration::from_secs(60))
        .await?;
    let majority: Vec<usize> = all.iter().copied().filter(|i| *i != old).collect();
    let before = write(cell, majority[0], &root, "p", "before").await?;
    report.check(
        "write before the partition",
        before.0 == 200,
        format!("status {}", before.0),
    );

    cell.isolate(&[old]);
    let cut = Instant::now();
    let new = cell
        .wait_leader(&majority, Some(old), Duration::from_secs(60))
        .await;
    let elected = cut.elapsed();
    report.check(
        "majority elects a new leader",
        new.is_ok(),
        match &new {
            Ok(l) => format!(
                "{} leads after {} ms",
                cell.nodes[*l].name,
                elected.as_millis()
            ),
            Err(e) => e.to_string(),
        },
    );
    report
        .figures
        .insert("election_ms".into(), json!(elected.as_millis() as u64));
    let mut majority_ok = 0;
    for i in 0..20 {
        let node = majority[rng.below(majority.len() as u64) as usize];
        if write(cell, node, &root, "p", &format!("during-{i}"))
            .await?
            .0
            == 200
        {
            majority_ok += 1;
        }
    }
    report.check(
        "majority keeps taking writes",
        majority_ok == 20,
        format!("{majority_ok} of 20 acknowledged"),
    );
    let mut minority_acked = 0;
    let mut minority_codes = Vec::new();
    for i in 0..3 {
        let (code, _) = write(cell, old, &root, "p", &format!("minority-{i}"))
            .await
            .unwrap_or((0, Value::Null));
        minority_codes.push(code);
        if code == 200 {
            minority_acked += 1;
        }
    }
    report.check(
        "the isolated old leader acknowledges no write",
        minority_acked == 0,
        format!("statuses {minority_codes:?}"),
    );
    // A bounded read on the isolated node must not serve state older than
    // max_staleness: it refuses (503) once it has lost its quorum.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (code, _, _) = cell
        .call_with(old, "GET", "secret/data/p", Some(&root), &[], &Value::Null)
        .await
        .unwrap_or((0, 0, Value::Null));
    report.check(
        "the isolated node stops serving bounded reads",
        code == 503,
        format!("status {code}"),
    );

    // Now cut a follower of the new leader off too: a write sent to it
    // cannot reach any leader and must fail within the write timeout
    // (5 s), not hang.
    if let Ok(new) = new {
        let lone = majority
            .iter()
            .copied()
            .find(|i| *i != new)
            .unwrap_or(majority[0]);
        cell.isolate(&[lone]);
        let asked = Instant::now();
        let (code, _) = write(cell, lone, &root, "p", "lone-follower")
            .await
            .unwrap_or((0, Value::Null));
        let waited = asked.elapsed();
        report.figures.insert(
            "lone_follower_write_ms".into(),
            json!(waited.as_millis() as u64),
        );
        report.check(
            "a follower with no reachable leader answers 503, not a hang",
            // The client gives up after 10 s: a hang shows as status 0.
            code == 503,
            format!("status {code} after {} ms", waited.as_millis()),
        );
    }

    cell.heal();
    let healed = Instant::now();
    let (_, latest) = write(cell, majority[0], &root, "p", "after-heal").await?;
    let want = latest["data"]["version"].as_u64().unwrap_or(0);
    let mut caught_up = false;
    while healed.elapsed() < Duration::from_secs(60) {
        if let Ok((200, _, body)) = cell
            .call_with(
                old,
                "GET",
                "secret/data/p",
                Some(&root),
                &[("X-Sigil-Consistency", "linearizable".to_owned())],
                &Value::Null,
            )
            .await
            && body["data"]["metadata"]["version"].as_u64() == Some(want)
            && body["data"]["data"]["v"] == "after-heal"
        {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.figures.insert(
        "catch_up_ms".into(),
        json!(healed.elapsed().as_millis() as u64),
    );
    report.check(
        "the old leader catches up after healing",
        caught_up,
        format!("version {want} visible on {}", cell.nodes[old].name),
    );
    // None of the minority's attempted writes exist anywhere.
    let mut leaked = Vec::new();
    for v in 1..=want {
        let (code, _, body) = cell
            .call_with(
                majority[0],
                "GET",
                &format!("secret/data/p?version={v}"),
                Some(&root),
                &[],
                &Value::Null,
            )
            .await?;
        if code == 200
            && body["data"]["data"]["v"]
                .as_str()
                .is_some_and(|s| s.starts_with("minority-") || s == "lone-follower")
        {
            leaked.push(v);
        }
    }
    report.check(
        "no write accepted by the minority survives",
        leaked.is_empty(),
        format!("{} versions checked", want),
    );
    Ok(())
}

async fn write(
    cell: &Cell,
    node: usize,
    token: &str,
    key: &str,
    value: &str,
) -> Result<(u16, Value), Error> {
    cell.call(
        node,
        "PUT",
        &format!("secret/data/{key}"),
        Some(token),
        &json!({ "data": { "v": value } }),
    )
    .await
}

async fn snapshot_catchup(
    cell: &mut Cell,
    config: &ScenarioConfig,
    report: &mut Report,
) -> Result<(), Error> {
    let root = cell.root_token.clone();
    let all: Vec<usize> = (0..cell.nodes.len()).collect();
    let leader = cell
        .wait_leader(&all, None, Duration::from_secs(60))
        .await?;
    let down = (leader + 1) % cell.nodes.len();
    cell.kill(down);
    let live: Vec<usize> = all.iter().copied().filter(|i| *i != down).collect();
    let started = Instant::now();
    // Concurrent writers against the live nodes.
    let writes = config.writes;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let urls: Vec<String> = live.iter().map(|i| cell.nodes[*i].url()).collect();
    let client = cell.client().clone();
    let tasks: Vec<_> = (0..32)
        .map(|w| {
            let (next, failed, first_failure, urls, client, root) = (
                next.clone(),
                failed.clone(),
                first_failure.clone(),
                urls.clone(),
                client.clone(),
                root.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= writes {
                        return;
                    }
                    let url = format!(
                        "{}/v1/secret/data/s{}",
                        urls[(w + n as usize) % urls.len()],
                        n % 1000
                    );
                    let outcome = client
                        .put(&url)
                        .header("X-Vault-Token", &root)
                        .json(&json!({ "data": { "n": n } }))
                        .send()
                        .await;
                    let why = match outcome {
                        Ok(r) if r.status().is_success() => None,
                        Ok(r) => Some(format!(
                            "{}: {}",
                            r.status().as_u16(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(why) = why {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_failure.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert(why);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let took = started.elapsed();
    let failed = failed.load(Ordering::Relaxed);
    report.figures.insert("writes".into(), json!(writes));
    report.figures.insert(
        "writes_per_sec_with_a_node_down".into(),
        json!((writes as f64 / took.as_secs_f64()).round()),
    );
    report.check(
        "writes while a node is down",
        failed == 0,
        match first_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            None => format!(
                "{} of {writes} acknowledged in {:.1}s",
                writes - failed,
                took.as_secs_f64()
            ),
            Some(first) => format!(
                "{} of {writes} acknowledged in {:.1}s; first failure: {first}",
                writes - failed,
                took.as_secs_f64()
            ),
        },
    );

    let restarted = Instant::now();
    cell.restart(down).await?;
    // The restarted node must have installed a snapshot (its log was
    // purged on the others) and must serve the latest data.
    let mut caught_up = false;
    let probe = format!("s{}", (writes - 1) % 1000);
    let (_, _, want) = cell
        .call_with(
            leader,
            "GET",
            &format!("secret/data/{probe}"),
            Some(&root),
            &[("X-Sigil-Consistency", "linearizable".to_owned())],
            &Value::Null,
        )
        .await?;
    while restarted.elapsed() < Duration::from_secs(120) {
        if let Ok((200, _, body)) = cell
            .call_with(
                down,
                "GET",
                &format!("secret/data/{probe}"),
                Some(&root),
                &[("X-Sigil-Consistency", "linearizable".to_owned())],
                &Value::Null,
            )
            .await
            && body["data"]["metadata"]["version"] == want["data"]["metadata"]["version"]
        {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report.figures.insert(
        "catch_up_ms".into(),
        json!(restarted.elapsed().as_millis() as u64),
    );
    report.check(
        "the node catches up",
        caught_up,
        format!(
            "{probe} at version {} on {}",
            want["data"]["metadata"]["version"], cell.nodes[down].name
        ),
    );
    // The node can serve the installed state a moment before its log line
    // about the install is written: wait for the line a while.
    let mut installed = false;
    let looked = Instant::now();
    while looked.elapsed() < Duration::from_secs(10) {
        if cell.nodes[down].log().contains("snapshot installed") {
            installed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.check(
        "it caught up through a snapshot",
        installed,
        "its log records \"snapshot installed\"",
    );
    Ok(())
}

async fn read_your_writes(cell: &mut Cell, report: &mut Report) -> Result<(), Error> {
    let root = cell.root_token.clone();
    let all: Vec<usize> = (0..cell.nodes.len()).collect();
    let leader = cell
        .wait_leader(&all, None, Duration::from_secs(60))
        .await?;
    let follower = (leader + 1) % cell.nodes.len();
    let delay = Duration::from_millis(300);
    cell.delay_into(follower, delay);
    let rounds = 20;
    let (mut seen, mut stale_without_index) = (0, 0);
    for i in 0..rounds {
        let value = format!("ryw-{i}");
        let (code, index, _) = cell
            .call_with(
                leader,
                "PUT",
                "secret/data/ryw",
                Some(&root),
                &[],
                &json!({ "data": { "v": value } }),
            )
            .await?;
        if code != 200 || index == 0 {
            report.check(
                "write on the leader",
                false,
                format!("status {code}, index {index}"),
            );
            return Ok(());
        }
        // Without the index, the delayed follower may well answer with an
        // older version (bounded staleness): count it, to show the delay bites.
        let (_, _, plain) = cell
            .call_with(
                follower,
                "GET",
                "secret/data/ryw",
                Some(&root),
                &[],
                &Value::Null,
            )
            .await?;
        if plain["data"]["data"]["v"] != value {
            stale_without_index += 1;
        }
        let (code, _, body) = cell
            .call_with(
                follower,
                "GET",
                "secret/data/ryw",
                Some(&root),
                &[("X-Sigil-Index", index.to_string())],
                &Value::Null,
            )
            .await?;
        if code == 200 && body["data"]["data"]["v"] == value {
            seen += 1;
        }
    }
    cell.heal();
    report.figures.insert(
        "replication_delay_ms".into(),
        json!(delay.as_millis() as u64),
    );
    report.figures.insert(
        "reads_without_index_that_were_stale".into(),
        json!(stale_without_index),
    );
    report.check(
        "a read carrying the write's index sees the write",
        seen == rounds,
        format!("{seen} of {rounds} on the delayed follower"),
    );
    Ok(())
}
