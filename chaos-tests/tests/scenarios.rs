//! The fault-injection scenarios against real `sigil server` processes
//! (docs/chaos.md), with fixed seeds, as part of the test suite. Each test
//! fails with the scenario's report (checks, seed, where the logs are).
//!
//! They need the `sigil` binary beside the test binaries' directory, which
//! `cargo test --workspace` builds (sigil-cell's integration tests use it).

use std::path::PathBuf;

use sigil_chaos::scenario::{self, Name, ScenarioConfig};

fn sigil() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/sigil
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("sigil"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        bin.display()
    );
    bin
}

/// One cell at a time: three nodes per scenario already share two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(name: Name, seed: u64, writes: u64) {
    let _one_at_a_time = SERIAL.lock().await;
    let config = ScenarioConfig {
        name,
        seed,
        sigil: sigil(),
        dir: None,
        writes,
    };
    let report = scenario::run(&config).await.unwrap_or_else(|e| {
        panic!(
            "scenario {} (seed {seed}) could not run: {e}",
            name.as_str()
        )
    });
    assert!(report.passed, "{report}");
    assert!(!report.checks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kills_keep_the_history_linearizable() {
    run(Name::LeaderKills, 11, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_takes_no_writes_and_catches_up() {
    run(Name::PartitionLeader, 7, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_through_a_snapshot() {
    // 5,000 writes here (snapshot every 1,000); the scenario's default of
    // 50,000 runs from the command line (docs/chaos.md).
    run(Name::SnapshotCatchup, 5, 5_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_carrying_an_index_see_the_write_despite_replication_delay() {
    run(Name::ReadYourWrites, 3, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_written_in_one_cell_is_enforced_by_every_node_of_another() {
    run(Name::ControlPlanePropagation, 7, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_of_a_partition_keep_serving_and_merge_with_the_conflict_reported() {
    run(Name::ControlPlanePartition, 11, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_simulated_cells_with_partitions_and_crashes_end_identical() {
    run(Name::ControlPlaneSimulation, 5, 0).await;
}

/// The revocation bench end to end on a small federation: every node of
/// every cell refuses the revoked identity's token in every run (the
/// figures themselves are for `sigil-chaos bench revocation`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_bench_sees_every_node_refuse_the_token() {
    let _one_at_a_time = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    use sigil_chaos::revocation_bench::{BenchConfig, Match, Source, bench};
    for (matching, measured) in [(Match::Identity, 4), (Match::Accessor, 2)] {
        let sub = dir.path().join(format!("{matching:?}"));
        let f = bench(&BenchConfig {
            source: Source::Start {
                sigil: sigil(),
                dir: sub,
                cells: 2,
                nodes: 2,
            },
            runs: 3,
            matching,
        })
        .await
        .expect("bench runs");
        assert_eq!(f["missed"], 0, "{f:?}");
        assert_eq!(f["runs"], 3);
        assert_eq!(f["nodes_measured"], measured, "{f:?}");
        assert!(
            f["last_node_p99_ms"].as_f64().is_some_and(f64::is_finite),
            "{f:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_cell_keeps_serving_and_enforces_a_revocation_after_the_heal() {
    run(Name::RevocationPartition, 3, 0).await;
}
