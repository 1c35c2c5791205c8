//! One measured level: N client tasks in a closed loop.
//!
//! Each task sends one operation, awaits its response, records the latency
//! and sends the next: a closed loop, so the offered load is whatever the
//! server sustains at that concurrency. Operations *started* during the
//! warm-up are not recorded (connections, pools and caches settle there);
//! operations started during the measured window are, and no task starts
//! one after the window ends.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::client::Client;
use super::workload::{KeyPicker, Workload};
use crate::latency::{Latencies, Summary};

/// How a level is run.
#[derive(Debug, Clone, Copy)]
pub struct LevelPlan {
    pub workload: Workload,
    /// Number of keys to pick from.
    pub keys: usize,
    pub seed: u64,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What a level measured.
#[derive(Debug, Clone)]
pub struct LevelOutcome {
    pub latency: Summary,
    /// Successful operations started in the measured window.
    pub ops: u64,
    /// Failed operations started in the measured window.
    pub errors: u64,
    /// The first failure's message, if any.
    pub first_error: Option<String>,
    /// From the end of the warm-up until the last recorded operation
    /// completed (at least the planned duration).
    pub window: Duration,
}

impl LevelOutcome {
    /// Successful operations per second over the measured window.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }
}

/// What one client task (or writer thread) measured.
pub(super) struct TaskOutcome {
    pub(super) latencies: Latencies,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    pub(super) last_done: Instant,
}

impl TaskOutcome {
    /// Nothing recorded yet, for a level measured from `measure_from`.
    pub(super) fn new(measure_from: Instant) -> Self {
        Self {
            latencies: Latencies::new(),
            errors: 0,
            first_error: None,
            last_done: measure_from,
        }
    }

    /// Records one operation sent at `sent` and finished at `done`, unless
    /// it started during the warm-up.
    pub(super) fn record<E: ToString>(
        &mut self,
        sent: Instant,
        done: Instant,
        measure_from: Instant,
        result: Result<(), E>,
    ) {
        if sent < measure_from {
            return;
        }
        self.last_done = done;
        match result {
            Ok(()) => self.latencies.record(done - sent),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Merges what every task of a level measured; a task that failed to run
/// counts as one error.
pub(super) fn merge_tasks(
    tasks: impl IntoIterator<Item = Result<TaskOutcome, tokio::task::JoinError>>,
    measure_from: Instant,
    end: Instant,
) -> LevelOutcome {
    let mut latencies = Latencies::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut last_done = end;
    for joined in tasks {
        match joined {
            Ok(task) => {
                latencies.merge(task.latencies);
                errors += task.errors;
                if first_error.is_none() {
                    first_error = task.first_error;
                }
                last_done = last_done.max(task.last_done);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("client task failed: {e}"));
            }
        }
    }
    let ops = latencies.len() as u64;
    LevelOutcome {
        latency: latencies.summarize(),
        ops,
        errors,
        first_error,
        window: last_done.saturating_duration_since(measure_from),
    }
}

/// Runs `clients` (one task each) through warm-up and the measured window.
pub async fn run_level(clients: Vec<Client>, plan: LevelPlan) -> LevelOutcome {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;

    let mut tasks = JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        let picker = KeyPicker::new(plan.seed, index);
        tasks.spawn(client_loop(client, plan, picker, measure_from, end));
    }

    let mut joined = Vec::new();
    while let Some(task) = tasks.join_next().await {
        joined.push(task);
    }
    merge_tasks(joined, measure_from, end)
}

async fn client_loop(
    mut client: Client,
    plan: LevelPlan,
    mut picker: KeyPicker,
    measure_from: Instant,
    end: Instant,
) -> TaskOutcome {
    let mut out = TaskOutcome::new(measure_from);
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let key = picker.next_index(plan.keys);
        let result = client.run(plan.workload, key).await;
        out.record(sent, Instant::now(), measure_from, result.map_err(|e| e.0));
    }
    out
}
