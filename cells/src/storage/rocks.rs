//! RocksDB-backed [`Storage`].
//!
//! The database holds one column family per concern; this type serves the
//! `state` family, where the barrier's ciphertext and the seal's wrapped keys
//! live. The Raft log and Raft metadata get families of their own in the same
//! database once the cell is replicated (docs/architecture.md, "Storage").
//!
//! Every write is a `WriteBatch` with `sync = true`, so an acknowledged write
//! survives a crash. Batches are serialised by a mutex so preconditions are
//! checked and applied atomically with respect to other writers of this node.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};

use super::{Batch, Entry, Op, Storage, StorageError, WriteFuture};

/// Column family holding the node's state (barrier entries, seal metadata).
pub const STATE_CF: &str = "state";
/// Column family of the Raft state machine's own records (last applied log
/// id, membership, applied request ids), written atomically with the state.
pub const SM_META_CF: &str = "sm_meta";

/// The bound on a database's write-ahead log files, together.
///
/// A WAL file is deleted only once every column family's writes in it are
/// flushed. The small, rarely flushed families (the Raft vote in `meta`, the
/// applied id in `sm_meta`) would otherwise keep every WAL since their last
/// flush alive, up to RocksDB's default of four memtables' worth (about
/// 1 GiB here), all of it replayed after a crash. Past this bound RocksDB
/// flushes the families holding the oldest WAL and retires it.
pub(crate) const MAX_TOTAL_WAL_BYTES: u64 = 128 << 20;

/// Options every Sigil RocksDB opens with (state, Raft log).
pub(crate) fn db_options() -> Options {
    db_options_with_wal_bound(MAX_TOTAL_WAL_BYTES)
}

fn db_options_with_wal_bound(max_total_wal_bytes: u64) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // RocksDB's info LOG files hold no values, but keep them few and small.
    opts.set_keep_log_file_num(4);
    opts.set_max_log_file_size(4 << 20);
    opts.set_max_total_wal_size(max_total_wal_bytes);
    opts
}

#[derive(Debug, Clone)]
pub struct RocksStorage {
    db: Arc<DB>,
    path: PathBuf,
    write_lock: Arc<Mutex<()>>,
}

impl RocksStorage {
    /// Applies `batch` synchronously (see [`Storage::apply`]).
    pub fn apply_now(&self, batch: Batch) -> Result<(), StorageError> {
        let cf = self.cf()?;
        let _guard = self
            .write_lock
            .lock()
            .map_err(|_| StorageError::Io("rocksdb write lock poisoned".into()))?;
        for (key, condition) in &batch.preconditions {
            let current = self.db.get_pinned_cf(cf, key).map_err(|e| io(&e))?;
            if !condition.holds(current.as_deref()) {
                return Err(StorageError::PreconditionFailed {
                    key: String::from_utf8_lossy(key).into_owned(),
                });
            }
        }
        let mut wb = WriteBatch::default();
        for op in &batch.ops {
            match op {
                Op::Put { key, value } => wb.put_cf(cf, key, value),
                Op::Delete { key } => wb.delete_cf(cf, key),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(wb, &wo).map_err(|e| io(&e))
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        let opts = db_options();
        let cfs = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, Options::default()),
            ColumnFamilyDescriptor::new(STATE_CF, Options::default()),
            ColumnFamilyDescriptor::new(SM_META_CF, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(|e| io(&e))?;
        Ok(Self {
            db: Arc::new(db),
            path,
            write_lock: Arc::new(Mutex::new(())),
        })
    }

    /// The database, for the Raft state machine's own batches.
    pub(crate) fn db(&self) -> &Arc<DB> {
        &self.db
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes memtables to SST files (tests use it to make sure values reach
    /// every on-disk format, not only the WAL).
    pub fn flush(&self) -> Result<(), StorageError> {
        let cf = self.cf()?;
        self.db.flush_cf(cf).map_err(|e| io(&e))?;
        self.db.flush_wal(true).map_err(|e| io(&e))
    }

    fn cf(&self) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db
            .cf_handle(STATE_CF)
            .ok_or_else(|| StorageError::Corrupt(format!("column family {STATE_CF} missing")))
    }
}

fn io(e: &rocksdb::Error) -> StorageError {
    StorageError::Io(e.to_string())
}

impl Storage for RocksStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let cf = self.cf()?;
        self.db.get_cf(cf, key).map_err(|e| io(&e))
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let cf = self.cf()?;
        let from: &[u8] = match start_after {
            Some(after) if after >= prefix => after,
            _ => prefix,
        };
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(from, Direction::Forward))
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(|e| io(&e))?;
            if !k.starts_with(prefix) {
                break;
            }
            if start_after.is_some_and(|after| k.as_ref() <= after) {
                continue;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn apply(&self, batch: Batch) -> WriteFuture<'_> {
        Box::pin(std::future::ready(self.apply_now(batch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Total size of the WAL files (`*.log`) in a database directory.
    fn wal_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .expect("database directory")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// Writes once to a small family, then 24 MiB to a busy one, and
    /// returns the WAL left on disk.
    fn wal_left_after_one_small_write(bound: u64) -> u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = db_options_with_wal_bound(bound);
        // Small memtables, so the busy family flushes on its own.
        opts.set_write_buffer_size(2 << 20);
        let cfs = ["busy", "small"].map(|n| ColumnFamilyDescriptor::new(n, opts.clone()));
        let db = DB::open_cf_descriptors(&opts, dir.path(), cfs).expect("open");
        let (busy, small) = (
            db.cf_handle("busy").expect("busy family"),
            db.cf_handle("small").expect("small family"),
        );
        db.put_cf(small, b"vote", b"term 1").expect("put");
        let value = vec![7u8; 64 << 10];
        for i in 0u32..384 {
            db.put_cf(busy, i.to_be_bytes(), &value).expect("put");
        }
        db.flush_wal(true).expect("sync");
        let left = wal_bytes(dir.path());
        // Whatever was retired, nothing written is lost.
        assert_eq!(
            db.get_cf(small, b"vote").expect("get").as_deref(),
            Some(&b"term 1"[..])
        );
        left
    }

    #[test]
    fn a_rarely_written_family_does_not_keep_old_wal_files_alive() {
        // Unbounded (RocksDB's own default is four times the memtables), the
        // small family's one write pins every WAL file since: all 24 MiB.
        let unbounded = wal_left_after_one_small_write(0);
        assert!(
            unbounded >= 20 << 20,
            "unbounded WAL kept {unbounded} bytes"
        );
        // Bounded, the small family is flushed and old files retire.
        let bounded = wal_left_after_one_small_write(4 << 20);
        assert!(bounded <= 8 << 20, "bounded WAL kept {bounded} bytes");
    }

    #[test]
    fn every_database_bounds_its_wal() {
        let opts = db_options();
        let dir = tempfile::tempdir().expect("tempdir");
        let db = DB::open(&opts, dir.path()).expect("open");
        let options = std::fs::read_dir(dir.path())
            .expect("database directory")
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with("OPTIONS-"))
            .map(|e| std::fs::read_to_string(e.path()).expect("OPTIONS file"))
            .expect("an OPTIONS file");
        drop(db);
        assert!(
            options.contains(&format!("max_total_wal_size={MAX_TOTAL_WAL_BYTES}")),
            "the OPTIONS file does not carry the bound"
        );
    }
}
