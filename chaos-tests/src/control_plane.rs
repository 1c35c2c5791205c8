//! The control-plane scenarios of `sigil-chaos scenario`: real federated
//! cells ([`crate::federation`]), three nodes each, checked from outside
//! (docs/architecture.md, "The control plane").
//!
//! - `control-plane-propagation`: a policy written in cell A is enforced by
//!   every node of cell B (a token of B's, with that policy, can read a
//!   secret of B's that it could not read before); every node of both cells
//!   ends with the same replica.
//! - `control-plane-partition`: A and B are cut off from each other; each
//!   changes the same policy and a policy of its own, and both keep serving
//!   reads and writes throughout; nothing crosses while cut. After heal,
//!   every node of every cell holds the same replica, enforces the same
//!   text, holds both sides' own policies, and both cells report the same
//!   conflict; writing the policy again resolves it everywhere.
//! - `control-plane-simulation`: [`crate::control_plane_sim`] with five
//!   cells, as a scenario.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Error;
use crate::federation::Federation;
use crate::scenario::{Report, Rng, ScenarioConfig};

const CELLS: [&str; 2] = ["eu-west", "us-east"];
const SYNC_INTERVAL_MS: u64 = 1_000;
const CONVERGE: Duration = Duration::from_secs(60);

pub(crate) async fn propagation(
    config: &ScenarioConfig,
    dir: &std::path::Path,
    report: &mut Report,
) -> Result<(), Error> {
    let fed = Federation::start(&config.sigil, dir, &CELLS, 3, SYNC_INTERVAL_MS).await?;
    let mut rng = Rng::new(config.seed);
    let (a, b) = (0usize, 1usize);
    let policy = format!("shared-{}", rng.below(1_000_000));
    let cell_b = &fed.cells[b];
    let root_b = cell_b.root_token.clone();
    // A secret only B holds, and a token of B's with a policy no cell has yet.
    cell_b
        .expect(
            0,
            "POST",
            "sys/mounts/cp-kv",
            Some(&root_b),
            &json!({"type": "kv"}),
            204,
        )
        .await?;
    cell_b
        .expect(
            0,
            "PUT",
            "cp-kv/app",
            Some(&root_b),
            &json!({"user": "app"}),
            204,
        )
        .await?;
    let token = cell_b
        .expect(
            0,
            "POST",
            "auth/token/create",
            Some(&root_b),
            &json!({"policies": [policy]}),
            200,
        )
        .await?;
    let token = token["auth"]["client_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut denied = 0;
    for n in 0..cell_b.nodes.len() {
        let (code, _) = cell_b
            .call(n, "GET", "cp-kv/app", Some(&token), &Value::Null)
            .await?;
        denied += usize::from(code == 403);
    }
    report.check(
        "before: no node of B lets the token read",
        denied == cell_b.nodes.len(),
        format!("{denied} of {} nodes answered 403", cell_b.nodes.len()),
    );

    let writer = rng.below(3) as usize;
    let written = Instant::now();
    fed.write_policy(
        a,
        writer,
        &policy,
        "path \"cp-kv/*\" { capabilities = [\"read\"] }",
    )
    .await?;
    let acked = written.elapsed();
    let mut enforced_at = vec![None; cell_b.nodes.len()];
    let deadline = Instant::now() + CONVERGE;
    while enforced_at.iter().any(Option::is_none) && Instant::now() < deadline {
        for (n, at) in enforced_at.iter_mut().enumerate() {
            if at.is_some() {
                continue;
            }
            let (code, body) = cell_b
                .call(n, "GET", "cp-kv/app", Some(&token), &Value::Null)
                .await?;
            if code == 200 && body["data"]["user"] == "app" {
                *at = Some(written.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all = enforced_at.iter().all(Option::is_some);
    let last = enforced_at.iter().flatten().max().copied();
    report.check(
        "a policy written in A is enforced by every node of B",
        all,
        format!(
            "written through {}/node-{}, acknowledged in {} ms; enforced by {} of {} nodes of {}{}",
            CELLS[a],
            writer + 1,
            acked.as_millis(),
            enforced_at.iter().flatten().count(),
            enforced_at.len(),
            CELLS[b],
            last.map(|l| format!(", the last {} ms after the write", l.as_millis()))
                .unwrap_or_default()
        ),
    );
    if let Some(l) = last {
        report
            .figures
            .insert("write_to_enforced_in_b_ms".into(), json!(l.as_millis()));
    }
    match fed.converge(CONVERGE).await {
        Ok(t) => report.check(
            "every node of every cell holds the same replica",
            true,
            format!("{} ms after the checks above", t.as_millis()),
        ),
        Err(views) => report.check(
            "every node of every cell holds the same replica",
            false,
            views,
        ),
    }
    Ok(())
}

pub(crate) async fn partition(
    config: &ScenarioConfig,
    dir: &std::path::Path,
    report: &mut Report,
) -> Result<(), Error> {
    let fed = Federation::start(&config.sigil, dir, &CELLS, 3, SYNC_INTERVAL_MS).await?;
    let mut rng = Rng::new(config.seed);
    let (a, b) = (0usize, 1usize);
    let tag = rng.below(1_000_000);
    let shared = format!("shared-{tag}");
    fed.write_policy(
        a,
        0,
        &shared,
        "path \"base/*\" { capabilities = [\"read\"] }",
    )
    .await?;
    if let Err(v) = fed.converge(CONVERGE).await {
        return Err(Error::Fixture(format!(
            "no convergence before the partition: {v}"
        )));
    }

    fed.partition(a, b);
    let text =
        |cell: &str| format!("path \"{cell}-{tag}/*\" {{ capabilities = [\"read\", \"list\"] }}");
    let own = |cell: &str| format!("only-{cell}-{tag}");
    // Both sides change the same policy and one of their own, through a
    // node the seed picks, while cut off.
    let mut acked = 0;
    for c in [a, b] {
        let n = rng.below(3) as usize;
        let cell = CELLS[c];
        acked += usize::from(fed.write_policy(c, n, &shared, &text(cell)).await.is_ok());
        acked += usize::from(
            fed.write_policy(
                c,
                n,
                &own(cell),
                "path \"own/*\" { capabilities = [\"read\"] }",
            )
            .await
            .is_ok(),
        );
    }
    report.check(
        "both sides acknowledge policy writes while partitioned",
        acked == 4,
        format!("{acked} of 4 writes acknowledged"),
    );
    // Both keep serving secrets: a write and a read-back on every node.
    let mut served = 0;
    let mut tried = 0;
    let mut failed = Vec::new();
    for (c, cell) in fed.cells.iter().enumerate() {
        for n in 0..cell.nodes.len() {
            tried += 1;
            let path = format!("secret/data/partition-{c}-{n}");
            // Read-your-writes, as a client does it: the read carries the
            // write's index (a follower that forwarded the write may not
            // have applied it yet).
            let (wc, index, wb) = cell
                .call_with(
                    n,
                    "PUT",
                    &path,
                    Some(&cell.root_token),
                    &[],
                    &json!({"data": {"v": n}}),
                )
                .await?;
            let w = (wc, wb);
            let r = cell
                .call_with(
                    n,
                    "GET",
                    &path,
                    Some(&cell.root_token),
                    &[("X-Sigil-Index", index.to_string())],
                    &Value::Null,
                )
                .await
                .map(|(c, _, b)| (c, b))?;
            if w.0 == 200 && r.0 == 200 && r.1["data"]["data"]["v"] == n {
                served += 1;
            } else {
                failed.push(format!(
                    "{} node {n}: PUT {} {}, GET {} {}",
                    cell.id(),
                    w.0,
                    w.1,
                    r.0,
                    r.1
                ));
            }
        }
    }
    report.check(
        "both sides keep serving reads and writes while partitioned",
        served == tried,
        format!(
            "{served} of {tried} nodes wrote and read back a secret{}",
            if failed.is_empty() {
                String::new()
            } else {
                format!("; {}", failed.join("; "))
            }
        ),
    );
    tokio::time::sleep(Duration::from_millis(3 * SYNC_INTERVAL_MS)).await;
    let crossed = fed.policy(a, 0, &own("us-east")).await?.is_some()
        || fed.policy(b, 0, &own("eu-west")).await?.is_some();
    report.check(
        "nothing crosses the partition",
        !crossed,
        "after three sync intervals, neither cell has the other's own policy",
    );

    fed.heal();
    let healed = Instant::now();
    match fed.converge(CONVERGE).await {
        Ok(t) => {
            report
                .figures
                .insert("heal_to_identical_ms".into(), json!(t.as_millis()));
            report.check(
                "after heal every node of every cell holds the same replica",
                true,
                format!("{} ms after heal", t.as_millis()),
            );
        }
        Err(views) => report.check(
            "after heal every node of every cell holds the same replica",
            false,
            views,
        ),
    }
    let _ = healed;
    // Every node enforces the same text and holds both sides' policies.
    let mut texts = std::collections::BTreeSet::new();
    let mut missing = Vec::new();
    for (c, cell) in fed.cells.iter().enumerate() {
        for n in 0..cell.nodes.len() {
            texts.insert(fed.policy(c, n, &shared).await?.unwrap_or_default());
            for o in CELLS {
                if fed.policy(c, n, &own(o)).await?.is_none() {
                    missing.push(format!(
                        "{}/{} lacks {}",
                        cell.id(),
                        cell.nodes[n].name,
                        own(o)
                    ));
                }
            }
        }
    }
    let one_text = texts.len() == 1
        && texts
            .iter()
            .next()
            .is_some_and(|t| *t == text("eu-west") || *t == text("us-east"));
    report.check(
        "every node enforces the same value of the policy both sides changed",
        one_text,
        format!("{} distinct texts served", texts.len()),
    );
    report.check(
        "both sides' own policies survive the merge on every node",
        missing.is_empty(),
        if missing.is_empty() {
            "6 nodes × 2 policies".to_owned()
        } else {
            missing.join("; ")
        },
    );
    // The conflict is reported, the same way, by both cells.
    let mut winners = Vec::new();
    for cell in &fed.cells {
        let (code, body) = cell
            .call(
                0,
                "GET",
                "sys/control-plane/conflicts",
                Some(&cell.root_token),
                &Value::Null,
            )
            .await?;
        let conflict = body["data"]["conflicts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["key"]["name"] == shared.as_str())
            .cloned();
        winners.push((code, conflict));
    }
    let reported = winners.iter().all(|(code, c)| {
        *code == 200
            && c.as_ref()
                .is_some_and(|c| c["losers"].as_array().map(Vec::len) == Some(1))
    });
    let same = winners
        .windows(2)
        .all(|w| w[0].1.as_ref().map(|c| &c["winner"]) == w[1].1.as_ref().map(|c| &c["winner"]));
    report.check(
        "both cells report the conflict, with the same value in force",
        reported && same,
        winners
            .iter()
            .zip(CELLS)
            .map(|((code, c), cell)| {
                format!(
                    "{cell}: {code} winner {} over {}",
                    c.as_ref()
                        .map_or(Value::Null, |c| c["winner"]["origin"].clone()),
                    c.as_ref()
                        .map_or(Value::Null, |c| c["losers"][0]["origin"].clone())
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    );
    // An operator resolves it by writing the policy again, in either cell.
    let resolver = rng.below(2) as usize;
    fed.write_policy(resolver, 0, &shared, &text(CELLS[resolver]))
        .await?;
    let converged = fed.converge(CONVERGE).await.is_ok();
    let mut left = 0;
    for cell in &fed.cells {
        let (_, body) = cell
            .call(
                0,
                "GET",
                "sys/control-plane/conflicts",
                Some(&cell.root_token),
                &Value::Null,
            )
            .await?;
        left += body["data"]["keys"].as_array().map_or(0, Vec::len);
    }
    report.check(
        "writing the policy again resolves the conflict everywhere",
        converged && left == 0,
        format!(
            "resolved through {}; {left} conflicts left",
            CELLS[resolver]
        ),
    );
    report
        .figures
        .insert("cross_cell_bytes".into(), json!(fed.cross_cell_bytes()));
    Ok(())
}

/// Scenario (c): five cells in the deterministic simulation, with random
/// partitions, delays and crashes; every replica must end identical.
pub(crate) fn simulation(config: &ScenarioConfig, report: &mut Report) {
    let r = crate::control_plane_sim::run(&crate::control_plane_sim::SimConfig {
        cells: 5,
        seed: config.seed,
        seconds: 300,
        writes_per_sec: 20,
        log_per_origin: 200,
        random_faults: true,
        outage: None,
    });
    report.check(
        "five simulated cells end with identical replicas",
        r.identical,
        format!(
            "{} writes, {} partitions, {} crashes; {}",
            r.writes,
            r.partitions,
            r.crashes,
            r.heal_to_identical_ms.map_or_else(
                || "still different 300 s after the final heal".to_owned(),
                |ms| format!("identical {ms} ms (simulated) after the final heal"),
            )
        ),
    );
    report.check(
        "faults happened",
        r.partitions > 0 && r.crashes > 0,
        format!("{} partitions, {} crashes", r.partitions, r.crashes),
    );
    for (k, v) in crate::control_plane_sim::to_json(&r)
        .as_object()
        .into_iter()
        .flatten()
    {
        report.figures.insert(k.clone(), v.clone());
    }
}

/// How to run `sigil-chaos bench control-plane`.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub sigil: std::path::PathBuf,
    pub dir: std::path::PathBuf,
    pub cells: usize,
    pub nodes: usize,
    /// Policy writes measured, one at a time.
    pub ops: usize,
    /// One-way delay added to every cross-cell link (0: bare loopback).
    pub delay: Duration,
}

/// `sigil-chaos bench control-plane`: three federated cells on loopback
/// (three nodes each); one policy at a time is written in the first cell,
/// and every node of every other cell is polled until it serves it. The
/// figure per op is the time from the write's acknowledgement (it is then
/// committed in the first cell) to the last of those nodes serving it.
/// Bandwidth is what crossed the cross-cell proxies during the measured
/// writes, digests and TLS included, per op.
pub async fn bench(config: &BenchConfig) -> Result<serde_json::Map<String, Value>, Error> {
    let ids = crate::federation::cell_names(config.cells.max(2));
    let fed = Federation::start(&config.sigil, &config.dir, ids, config.nodes, 2_000).await?;
    fed.delay_all(config.delay);
    // Warm the streams: one write, everywhere.
    fed.write_policy(
        0,
        0,
        "bench-warmup",
        "path \"w/*\" { capabilities = [\"read\"] }",
    )
    .await?;
    if let Err(v) = fed.converge(CONVERGE).await {
        return Err(Error::Fixture(format!(
            "no convergence before measuring: {v}"
        )));
    }
    let targets: Vec<(usize, usize)> = (1..fed.cells.len())
        .flat_map(|c| (0..fed.cells[c].nodes.len()).map(move |n| (c, n)))
        .collect();
    let bytes_before = fed.cross_cell_bytes();
    let mut lat = Vec::new();
    let mut missed = 0;
    for i in 0..config.ops {
        let name = format!("bench-{i}");
        fed.write_policy(0, 0, &name, "path \"b/*\" { capabilities = [\"read\"] }")
            .await?;
        let acked = Instant::now();
        let polls = targets.iter().map(|&(c, n)| {
            let fed = &fed;
            let name = name.clone();
            async move {
                let deadline = acked + CONVERGE;
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = fed.policy(c, n, &name).await {
                        return Some(acked.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                None
            }
        });
        let seen = futures::future::join_all(polls).await;
        match seen.iter().copied().collect::<Option<Vec<Duration>>>() {
            Some(all) => lat.push(all.into_iter().max().unwrap_or_default()),
            None => missed += 1,
        }
    }
    let bytes = fed.cross_cell_bytes() - bytes_before;
    let pct = |p: f64| crate::latency::percentile_ms(&lat, p);
    // What the receiving leaders count: payload bytes and ops received.
    let mut payload = 0u64;
    let mut received = 0u64;
    for cell in &fed.cells[1..] {
        let (_, body) = cell
            .call(
                0,
                "GET",
                "sys/control-plane/status",
                Some(&cell.root_token),
                &Value::Null,
            )
            .await?;
        for p in body["data"]["peers"].as_array().into_iter().flatten() {
            payload += p["bytes_received"].as_u64().unwrap_or(0);
            received += p["entries_received"].as_u64().unwrap_or(0);
        }
    }
    let mut f = serde_json::Map::new();
    f.insert("bench".into(), json!("control-plane"));
    f.insert("cells".into(), json!(fed.cells.len()));
    f.insert("nodes_per_cell".into(), json!(config.nodes));
    f.insert(
        "added_one_way_delay_ms".into(),
        json!(config.delay.as_millis()),
    );
    f.insert("ops".into(), json!(config.ops));
    f.insert("missed".into(), json!(missed));
    f.insert("p50_ms".into(), json!(pct(50.0)));
    f.insert("p99_ms".into(), json!(pct(99.0)));
    f.insert("max_ms".into(), json!(pct(100.0)));
    f.insert(
        "wire_bytes_per_op".into(),
        json!(bytes as f64 / config.ops.max(1) as f64),
    );
    f.insert(
        "payload_bytes_per_op_received".into(),
        json!(if received == 0 {
            0.0
        } else {
            payload as f64 / received as f64
        }),
    );
    Ok(f)
}
