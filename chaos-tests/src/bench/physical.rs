//! The physical reference: raw RocksDB synced batch writes on the same disk.
//!
//! Every write Sigil acknowledges has been made durable by a synced RocksDB
//! WAL write (on the leader and on a majority of a cell). So the fastest a
//! cell could possibly write is what the disk sustains for synced RocksDB
//! batches at the same concurrency. This level measures that: one OS thread
//! per client, each writing one batch of one key with `sync = true` in a
//! closed loop, through RocksDB's own group commit, with no network, no
//! encryption and no consensus. Run beside the Sigil rows of the same bench,
//! it says how much of the disk Sigil's write path uses.

use std::path::Path;
use std::sync::Arc;
use tokio::time::Instant;

use super::level::{LevelOutcome, LevelPlan, TaskOutcome, merge_tasks};
use super::workload::{KeyPicker, KeySpace};
use crate::Error;

/// An open reference database in a directory of its own.
pub struct Reference {
    db: Arc<rocksdb::DB>,
    dir: tempfile::TempDir,
}

impl Reference {
    /// Opens a fresh database in a temporary directory under `parent` (the
    /// system's temporary directory when `None`).
    pub fn open(parent: Option<&Path>) -> Result<Self, Error> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("sigil-chaos-rocksdb-");
        let dir = match parent {
            Some(p) => builder.tempdir_in(p),
            None => builder.tempdir(),
        }
        .map_err(|e| Error::Config {
            key: "--rocksdb-dir",
            problem: format!("cannot make a directory for the reference database: {e}"),
        })?;
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = rocksdb::DB::open(&options, dir.path()).map_err(|e| Error::Config {
            key: "--rocksdb-dir",
            problem: format!("cannot open the reference database: {e}"),
        })?;
        Ok(Self {
            db: Arc::new(db),
            dir,
        })
    }

    /// Where the database lives (removed when `self` is dropped).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs one closed-loop level of `clients` synced writers.
    pub async fn run_level(
        &self,
        clients: usize,
        plan: LevelPlan,
        keys: &KeySpace,
        value: &[u8],
    ) -> LevelOutcome {
        let start = Instant::now();
        let measure_from = start + plan.warmup;
        let end = measure_from + plan.duration;
        let mut threads = Vec::with_capacity(clients);
        for index in 0..clients {
            let db = Arc::clone(&self.db);
            let keys = keys.clone();
            let value = value.to_vec();
            let picker = KeyPicker::new(plan.seed, index);
            threads.push(tokio::task::spawn_blocking(move || {
                writer_loop(&db, &keys, &value, picker, plan.keys, measure_from, end)
            }));
        }
        let mut joined = Vec::with_capacity(threads.len());
        for thread in threads {
            joined.push(thread.await);
        }
        merge_tasks(joined, measure_from, end)
    }
}

fn writer_loop(
    db: &rocksdb::DB,
    keys: &KeySpace,
    value: &[u8],
    mut picker: KeyPicker,
    key_count: usize,
    measure_from: Instant,
    end: Instant,
) -> TaskOutcome {
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    let mut out = TaskOutcome::new(measure_from);
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let key = keys.path(picker.next_index(key_count));
        let mut batch = rocksdb::WriteBatch::default();
        batch.put(key.as_bytes(), value);
        let result = db.write_opt(batch, &sync);
        out.record(sent, Instant::now(), measure_from, result);
    }
    out
}

/// The value the reference writes: as long as the ciphertext Sigil stores
/// for a KV v2 version of `value_size` bytes is, roughly (JSON, version
/// metadata, nonce and tag), so both write about the same bytes.
pub fn reference_value(value_size: usize) -> Vec<u8> {
    vec![0x5a; value_size + 160]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::Workload;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn synced_writers_land_in_the_database() {
        let reference = Reference::open(None).expect("open");
        let keys = KeySpace::new(8);
        let plan = LevelPlan {
            workload: Workload::KvWrite,
            keys: keys.len(),
            seed: 3,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(300),
        };
        let value = reference_value(16);
        let outcome = reference.run_level(2, plan, &keys, &value).await;
        assert_eq!(outcome.errors, 0, "{:?}", outcome.first_error);
        assert!(outcome.ops > 0);
        assert!(outcome.latency.p99 >= outcome.latency.p50);
        // The writes are really there: picked keys hold the value.
        let found = keys
            .paths()
            .iter()
            .filter_map(|k| reference.db.get(k.as_bytes()).ok().flatten())
            .filter(|v| v == &value)
            .count();
        assert!(found > 0, "no written key holds the value");
        let path = reference.path().to_path_buf();
        drop(reference);
        assert!(!path.exists(), "the reference database is removed");
    }
}
