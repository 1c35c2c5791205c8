//! `revocation-partition`: three federated cells of two nodes each. A
//! workload identity (`approle:payments`) and a bystander
//! (`approle:search`) hold tokens in every cell through a global AppRole
//! mount, and every node keeps using the bystander's token throughout. The
//! third cell is cut off; the payments identity is revoked in the first.
//! Checks: the first two cells refuse the payments tokens at once; the
//! cut-off cell keeps serving its workloads (its payments token still
//! works there: it cannot know); after the heal it refuses it too; the
//! bystander never sees one failed request. Figures: time from the
//! acknowledgement to the last node of the first two cells refusing, and
//! from the heal to the cut-off cell's last node refusing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Error;
use crate::cell::Cell;
use crate::federation::Federation;
use crate::scenario::{Report, Rng, ScenarioConfig};

const DEADLINE: Duration = Duration::from_secs(30);

async fn status(cell: &Cell, n: usize, token: &str) -> Option<u16> {
    cell.call(
        n,
        "GET",
        "auth/token/lookup-self",
        Some(token),
        &Value::Null,
    )
    .await
    .ok()
    .map(|(c, _)| c)
}

/// Polls every node of `cells` until each refuses its cell's token; the
/// time of the last refusal, or `None` past the deadline.
async fn all_refuse(
    fed: &Federation,
    cells: &[usize],
    tokens: &[String],
    since: Instant,
) -> Option<Duration> {
    let polls = cells
        .iter()
        .flat_map(|&c| (0..fed.cells[c].nodes.len()).map(move |n| (c, n)));
    let waits = polls.map(|(c, n)| async move {
        while since.elapsed() < DEADLINE {
            if status(&fed.cells[c], n, &tokens[c]).await == Some(403) {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    });
    futures::future::join_all(waits)
        .await
        .into_iter()
        .collect::<Option<Vec<Duration>>>()
        .map(|v| v.into_iter().max().unwrap_or_default())
}

pub(crate) async fn partition(
    config: &ScenarioConfig,
    dir: &std::path::Path,
    report: &mut Report,
) -> Result<(), Error> {
    let fed = Arc::new(
        Federation::start(
            &config.sigil,
            dir,
            crate::federation::cell_names(3),
            2,
            1_000,
        )
        .await?,
    );
    let mut rng = Rng::new(config.seed);
    let (a, c) = (0usize, 2usize);
    let root_a = fed.cells[a].root_token.clone();
    fed.cells[a]
        .expect(
            0,
            "POST",
            "sys/auth/app",
            Some(&root_a),
            &json!({"type": "approle", "global": true}),
            204,
        )
        .await?;
    for role in ["payments", "search"] {
        fed.cells[a]
            .expect(
                0,
                "POST",
                &format!("auth/app/role/{role}"),
                Some(&root_a),
                &json!({"token_policies": ["default"]}),
                204,
            )
            .await?;
    }
    for cell in &fed.cells {
        let until = Instant::now() + DEADLINE;
        loop {
            let (p, _) = cell
                .call(
                    0,
                    "GET",
                    "auth/app/role/payments",
                    Some(&cell.root_token),
                    &Value::Null,
                )
                .await?;
            let (s, _) = cell
                .call(
                    0,
                    "GET",
                    "auth/app/role/search",
                    Some(&cell.root_token),
                    &Value::Null,
                )
                .await?;
            if p == 200 && s == 200 {
                break;
            }
            if Instant::now() > until {
                return Err(Error::Fixture(format!("{} never got the roles", cell.id())));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut payments = Vec::new();
    let mut search = Vec::new();
    for cell in &fed.cells {
        payments.push(cell.approle_login("app", "payments").await?);
        search.push(cell.approle_login("app", "search").await?);
    }
    // Wait until every node serves both tokens of its cell.
    for (ci, cell) in fed.cells.iter().enumerate() {
        for n in 0..cell.nodes.len() {
            let until = Instant::now() + DEADLINE;
            while status(cell, n, &payments[ci]).await != Some(200)
                || status(cell, n, &search[ci]).await != Some(200)
            {
                if Instant::now() > until {
                    return Err(Error::Fixture("tokens never served".into()));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    // The bystander: every node, in a loop, until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut bystanders = Vec::new();
    for (ci, token) in search.iter().enumerate() {
        for n in 0..fed.cells[ci].nodes.len() {
            let (fed, stop, ok, failed, token) = (
                fed.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
                token.clone(),
            );
            bystanders.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match status(&fed.cells[ci], n, &token).await {
                        Some(200) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
    }

    fed.isolate(c);
    tokio::time::sleep(Duration::from_millis(200 + rng.below(300))).await;
    let rev = fed.cells[a]
        .expect(
            rng.below(2) as usize,
            "POST",
            "sys/revocations",
            Some(&root_a),
            &json!({"identity": "approle:payments", "reason": "scenario revocation-partition"}),
            200,
        )
        .await;
    let acked = Instant::now();
    let rev = rev?;
    let id = rev["data"]["id"].as_str().unwrap_or_default().to_owned();
    let reached = all_refuse(&fed, &[0, 1], &payments, acked).await;
    report.check(
        "the revocation is enforced by every node of the cells it can reach",
        reached.is_some(),
        match reached {
            Some(t) => format!("all 4 nodes of eu-west and us-east refuse the token {} ms after the acknowledgement", t.as_millis()),
            None => "some node still accepts the token".into(),
        },
    );
    if let Some(t) = reached {
        report
            .figures
            .insert("ack_to_reachable_cells_ms".into(), json!(t.as_millis()));
    }
    // Cut off for a while: ap-south keeps serving, and cannot know.
    let cut_for = Duration::from_secs(3);
    tokio::time::sleep(cut_for).await;
    let mut c_serves = 0;
    for n in 0..fed.cells[c].nodes.len() {
        c_serves += usize::from(status(&fed.cells[c], n, &payments[c]).await == Some(200));
    }
    report.check(
        "the cut-off cell keeps serving its own workloads",
        c_serves == fed.cells[c].nodes.len(),
        format!(
            "{c_serves} of {} ap-south nodes still serve its payments token {} s into the partition (exposure until the heal)",
            fed.cells[c].nodes.len(),
            cut_for.as_secs()
        ),
    );

    fed.heal();
    let healed = Instant::now();
    let caught_up = all_refuse(&fed, &[c], &payments, healed).await;
    report.check(
        "after the heal the cut-off cell enforces the revocation",
        caught_up.is_some(),
        match caught_up {
            Some(t) => format!(
                "both ap-south nodes refuse the token {} ms after the heal (target: within 2 s)",
                t.as_millis()
            ),
            None => "ap-south still accepts the token".into(),
        },
    );
    if let Some(t) = caught_up {
        report
            .figures
            .insert("heal_to_cut_off_cell_ms".into(), json!(t.as_millis()));
    }
    stop.store(true, Ordering::Relaxed);
    for b in bystanders {
        let _ = b.await;
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    report.check(
        "the bystander identity never fails",
        failed == 0 && ok > 0,
        format!("{ok} requests with approle:search across all 6 nodes, {failed} failed"),
    );
    let (_, shown) = fed.cells[c]
        .call(
            0,
            "GET",
            &format!("sys/revocations/{id}"),
            Some(&fed.cells[c].root_token),
            &Value::Null,
        )
        .await?;
    report.check(
        "the cut-off cell holds the record after the heal",
        shown["data"]["id"] == id.as_str(),
        format!(
            "sys/revocations/{id} in ap-south: {}",
            shown["data"]["match"]
        ),
    );
    Ok(())
}
