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

/// Options every Sigil RocksDB opens with (state, Raft log).
pub(crate) fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // RocksDB's info LOG files hold no values, but keep them few and small.
    opts.set_keep_log_file_num(4);
    opts.set_max_log_file_size(4 << 20);
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
