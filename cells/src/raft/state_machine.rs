//! The replicated state: committed [`Command`]s applied to the state
//! RocksDB (`<data_dir>/state/<db>`), and snapshots of it.
//!
//! Applying checks each command's preconditions against the state as the
//! log defines it, so every replica reaches the same [`CommandResult`]. The
//! batch, the last applied log id, the membership and the applied request
//! id are written in one RocksDB write, without fsync: the Raft log is the
//! durable record, and after a crash the entries after the stored
//! `applied` id are applied again. A checkpoint taken for a snapshot flushes
//! the memtables first, so the log is only ever purged up to a durable point.
//!
//! Installing a snapshot unpacks it into a fresh directory, opens it, checks
//! that it holds the state the snapshot's metadata describes, then switches
//! the `CURRENT` pointer file (written and renamed atomically) and the
//! in-memory handle. A crash at any point leaves either the old or the new
//! state in use, never a mix.

// openraft's storage traits fix the error type, `StorageError`, which is
// large; the helpers here return it as the traits do.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::watch;

use super::snapshot::{self, SnapshotFile};
use super::{
    Command, CommandResult, Entry, LogId, NodeId, RaftStorageError, Snapshot, SnapshotMeta,
    StoredMembership, TypeConfig, decode, encode,
};
use crate::storage::rocks::{SM_META_CF, STATE_CF};
use crate::storage::{Op, RocksStorage};

const APPLIED_KEY: &[u8] = b"applied";
const MEMBERSHIP_KEY: &[u8] = b"membership";
/// `req/<id>` → index: request ids applied, for [`CommandResult::Duplicate`].
const REQ_PREFIX: &[u8] = b"req/";
/// `reqlog/<index><id>`: the same ids in log order, so old ones can be pruned.
const REQLOG_PREFIX: &[u8] = b"reqlog/";
/// How many log entries an applied request id is remembered for.
const REQ_RETENTION: u64 = 200_000;
/// Prune old request ids once per this many applied entries.
const PRUNE_EVERY: u64 = 4096;
const CURRENT_FILE: &str = "CURRENT";
const SNAPSHOT_DIR: &str = "snapshots";

/// The last applied log id and membership, published after every apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub log_id: Option<LogId>,
    pub membership: StoredMembership,
}

impl Applied {
    pub fn index(&self) -> u64 {
        self.log_id.map_or(0, |l| l.index)
    }
}

/// Key prefixes whose change other parts of the node must hear about
/// (seal material, mount and audit tables, policies): caches built from them
/// are rebuilt when a replicated write touches them.
pub const WATCHED_PREFIXES: &[&[u8]] = &[b"core/", b"logical/core/", b"logical/sys/policy/"];

struct Shared {
    dir: PathBuf,
    db: RwLock<RocksStorage>,
    applied: watch::Sender<Applied>,
    /// Bumped when an applied write touched a [`WATCHED_PREFIXES`] key, or a
    /// snapshot replaced the whole state.
    changes: watch::Sender<u64>,
    /// The latest snapshot built or installed, kept on disk.
    current: std::sync::Mutex<Option<(SnapshotMeta, PathBuf, u64)>>,
}

/// The state machine. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("dir", &self.shared.dir)
            .field("applied", &self.shared.applied.borrow().log_id)
            .finish()
    }
}

impl StateMachine {
    /// Opens the state under `dir` (creating it if needed).
    pub fn open(dir: &Path) -> Result<Self, RaftStorageError> {
        std::fs::create_dir_all(dir.join(SNAPSHOT_DIR)).map_err(|e| sm_io(ErrorVerb::Write, e))?;
        let current = match std::fs::read_to_string(dir.join(CURRENT_FILE)) {
            Ok(name) => name.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "db".to_owned(),
            Err(e) => return Err(sm_io(ErrorVerb::Read, e)),
        };
        remove_stale_dirs(dir, &current);
        let db =
            RocksStorage::open(dir.join(&current)).map_err(|e| sm_error(ErrorVerb::Read, e))?;
        let applied = read_applied(&db)?;
        let snapshot = read_current_snapshot(dir);
        Ok(Self {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                db: RwLock::new(db),
                applied: watch::channel(applied).0,
                changes: watch::channel(0).0,
                current: std::sync::Mutex::new(snapshot),
            }),
        })
    }

    /// The state database as it is now. A snapshot install swaps it, so hold
    /// the returned handle only for one operation.
    pub fn db(&self) -> RocksStorage {
        self.shared
            .db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Watches the last applied log id.
    pub fn applied(&self) -> watch::Receiver<Applied> {
        self.shared.applied.subscribe()
    }

    /// Watches changes to watched keys (see [`WATCHED_PREFIXES`]).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    fn apply_entries(&self, entries: Vec<Entry>) -> Result<Vec<CommandResult>, RaftStorageError> {
        let db = self.db();
        let rdb = db.db();
        let state = state_cf(&db)?;
        let meta = meta_cf(&db)?;
        let mut overlay: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let mut wb = WriteBatch::default();
        let mut results = Vec::with_capacity(entries.len());
        let mut applied = self.shared.applied.borrow().clone();
        let before = applied.index();
        let mut touched_watched = false;
        for entry in entries {
            applied.log_id = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => results.push(CommandResult::Applied),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    results.push(CommandResult::Applied);
                }
                EntryPayload::Normal(Command { request_id, batch }) => {
                    let rkey = req_key(request_id);
                    let seen = match overlay.get(&rkey) {
                        Some(v) => v.is_some(),
                        None => rdb
                            .get_cf(meta, &rkey)
                            .map_err(|e| sm_error(ErrorVerb::Read, e))?
                            .is_some(),
                    };
                    if seen {
                        results.push(CommandResult::Duplicate);
                        continue;
                    }
                    let mut failed = None;
                    for (key, condition) in &batch.preconditions {
                        let current = match overlay.get(key) {
                            Some(v) => v.clone(),
                            None => rdb
                                .get_cf(state, key)
                                .map_err(|e| sm_error(ErrorVerb::Read, e))?,
                        };
                        if !condition.holds(current.as_deref()) {
                            failed = Some(String::from_utf8_lossy(key).into_owned());
                            break;
                        }
                    }
                    if let Some(key) = failed {
                        results.push(CommandResult::PreconditionFailed { key });
                        continue;
                    }
                    for op in batch.ops {
                        match op {
                            Op::Put { key, value } => {
                                touched_watched |= is_watched(&key);
                                wb.put_cf(state, &key, &value);
                                overlay.insert(key, Some(value));
                            }
                            Op::Delete { key } => {
                                touched_watched |= is_watched(&key);
                                wb.delete_cf(state, &key);
                                overlay.insert(key, None);
                            }
                        }
                    }
                    let index = entry.log_id.index;
                    wb.put_cf(meta, &rkey, index.to_be_bytes());
                    wb.put_cf(meta, reqlog_key(index, request_id), b"");
                    overlay.insert(rkey, Some(Vec::new()));
                    results.push(CommandResult::Applied);
                }
            }
        }
        let after = applied.index();
        wb.put_cf(
            meta,
            APPLIED_KEY,
            encode(&applied.log_id).map_err(|e| sm_error(ErrorVerb::Write, e))?,
        );
        wb.put_cf(
            meta,
            MEMBERSHIP_KEY,
            encode(&applied.membership).map_err(|e| sm_error(ErrorVerb::Write, e))?,
        );
        if after / PRUNE_EVERY != before / PRUNE_EVERY && after > REQ_RETENTION {
            prune_request_ids(&db, &mut wb, after - REQ_RETENTION)?;
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        rdb.write_opt(wb, &wo)
            .map_err(|e| sm_error(ErrorVerb::Write, e))?;
        self.shared.applied.send_replace(applied);
        if touched_watched {
            self.shared.changes.send_modify(|n| *n += 1);
        }
        Ok(results)
    }

    /// Builds a snapshot of the current state (blocking: checkpoint and pack).
    fn build(&self) -> Result<(SnapshotMeta, PathBuf, u64), RaftStorageError> {
        let db = self.db();
        let work = self
            .shared
            .dir
            .join(SNAPSHOT_DIR)
            .join(format!("build-{}", uuid::Uuid::new_v4()));
        rocksdb::checkpoint::Checkpoint::new(db.db())
            .and_then(|c| c.create_checkpoint(&work))
            .map_err(|e| snap_error(ErrorVerb::Write, e))?;
        let result = (|| -> Result<(SnapshotMeta, PathBuf, u64), RaftStorageError> {
            // The checkpoint's own records say exactly what it holds.
            let copy = RocksStorage::open(&work).map_err(|e| snap_error(ErrorVerb::Read, e))?;
            let applied = read_applied(&copy)?;
            drop(copy);
            let last = applied.log_id;
            let id = match last {
                Some(l) => format!(
                    "{}-{}-{}",
                    l.leader_id.term,
                    l.index,
                    uuid::Uuid::new_v4().simple()
                ),
                None => format!("0-0-{}", uuid::Uuid::new_v4().simple()),
            };
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: applied.membership,
                snapshot_id: id.clone(),
            };
            let path = self
                .shared
                .dir
                .join(SNAPSHOT_DIR)
                .join(format!("{id}.snap"));
            let size = snapshot::pack(&work, &path).map_err(|e| snap_error(ErrorVerb::Write, e))?;
            Ok((meta, path, size))
        })();
        let _ = std::fs::remove_dir_all(&work);
        let (meta, path, size) = result?;
        self.set_current_snapshot(meta.clone(), path.clone(), size)?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = size, "snapshot built");
        Ok((meta, path, size))
    }

    /// Records `path` as the current snapshot and removes older ones.
    fn set_current_snapshot(
        &self,
        meta: SnapshotMeta,
        path: PathBuf,
        size: u64,
    ) -> Result<(), RaftStorageError> {
        let record = serde_json::to_vec(&(&meta, &path, size))
            .map_err(|e| snap_error(ErrorVerb::Write, e))?;
        write_atomically(
            &self.shared.dir.join(SNAPSHOT_DIR).join("current.json"),
            &record,
        )
        .map_err(|e| snap_error(ErrorVerb::Write, e))?;
        let mut current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, old, _)) = current.replace((meta, path.clone(), size))
            && old != path
        {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }

    /// Installs the packed snapshot (blocking).
    fn install(&self, meta: &SnapshotMeta, file: SnapshotFile) -> Result<(), RaftStorageError> {
        snapshot::verify(&file.path).map_err(|e| snap_error(ErrorVerb::Read, e))?;
        let name = format!("db-{}", uuid::Uuid::new_v4().simple());
        let dest = self.shared.dir.join(&name);
        snapshot::unpack(&file.path, &dest).map_err(|e| snap_error(ErrorVerb::Read, e))?;
        let db = RocksStorage::open(&dest).map_err(|e| snap_error(ErrorVerb::Read, e))?;
        let applied = read_applied(&db)?;
        if applied.log_id != meta.last_log_id {
            drop(db);
            let _ = std::fs::remove_dir_all(&dest);
            return Err(snap_error(
                ErrorVerb::Read,
                format!(
                    "snapshot {} holds state up to {:?}, its metadata says {:?}",
                    meta.snapshot_id, applied.log_id, meta.last_log_id
                ),
            ));
        }
        write_atomically(&self.shared.dir.join(CURRENT_FILE), name.as_bytes())
            .map_err(|e| snap_error(ErrorVerb::Write, e))?;
        let old = {
            let mut guard = self.shared.db.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *guard, db)
        };
        self.shared.applied.send_replace(applied);
        self.shared.changes.send_modify(|n| *n += 1);
        retire(old);
        // Keep what was installed as this node's current snapshot.
        let kept = self
            .shared
            .dir
            .join(SNAPSHOT_DIR)
            .join(format!("{}.snap", meta.snapshot_id));
        let size = file.size;
        if std::fs::rename(&file.path, &kept).is_ok() {
            let _ = file.keep();
            self.set_current_snapshot(meta.clone(), kept, size)?;
        }
        tracing::info!(snapshot = %meta.snapshot_id, index = ?meta.last_log_id.map(|l| l.index), "snapshot installed");
        Ok(())
    }
}

/// Closes a replaced database once no reader holds it, then deletes it.
fn retire(old: RocksStorage) {
    let path = old.path().to_path_buf();
    std::thread::spawn(move || {
        let mut old = Some(old);
        for _ in 0..600 {
            if let Some(db) = old.take() {
                if Arc::strong_count(db.db()) == 1 {
                    drop(db);
                    break;
                }
                old = Some(db);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        drop(old);
        if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove replaced state database");
        }
    });
}

/// Removes database directories a crash left behind (not `CURRENT`'s).
fn remove_stale_dirs(dir: &Path, current: &str) {
    let Ok(items) = std::fs::read_dir(dir) else {
        return;
    };
    for item in items.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if (name == "db" || name.starts_with("db-")) && name != current {
            tracing::info!(dir = %item.path().display(), "removing stale state database");
            let _ = std::fs::remove_dir_all(item.path());
        }
    }
    let snaps = dir.join(SNAPSHOT_DIR);
    if let Ok(items) = std::fs::read_dir(&snaps) {
        for item in items.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with("build-") || name.starts_with("incoming-") {
                let _ = std::fs::remove_dir_all(item.path());
                let _ = std::fs::remove_file(item.path());
            }
        }
    }
}

fn read_current_snapshot(dir: &Path) -> Option<(SnapshotMeta, PathBuf, u64)> {
    let bytes = std::fs::read(dir.join(SNAPSHOT_DIR).join("current.json")).ok()?;
    let (meta, path, size): (SnapshotMeta, PathBuf, u64) = serde_json::from_slice(&bytes).ok()?;
    path.exists().then_some((meta, path, size))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn read_applied(db: &RocksStorage) -> Result<Applied, RaftStorageError> {
    let cf = meta_cf(db)?;
    let get = |key: &[u8]| {
        db.db()
            .get_cf(cf, key)
            .map_err(|e| sm_error(ErrorVerb::Read, e))
    };
    let log_id = match get(APPLIED_KEY)? {
        Some(b) => decode::<Option<LogId>>(&b).map_err(|e| sm_error(ErrorVerb::Read, e))?,
        None => None,
    };
    let membership = match get(MEMBERSHIP_KEY)? {
        Some(b) => decode::<StoredMembership>(&b).map_err(|e| sm_error(ErrorVerb::Read, e))?,
        None => StoredMembership::default(),
    };
    Ok(Applied { log_id, membership })
}

fn prune_request_ids(
    db: &RocksStorage,
    wb: &mut WriteBatch,
    below: u64,
) -> Result<(), RaftStorageError> {
    let cf = meta_cf(db)?;
    let mut end = REQLOG_PREFIX.to_vec();
    end.extend_from_slice(&below.to_be_bytes());
    let iter = db.db().iterator_cf(
        cf,
        rocksdb::IteratorMode::From(REQLOG_PREFIX, rocksdb::Direction::Forward),
    );
    for item in iter {
        let (k, _) = item.map_err(|e| sm_error(ErrorVerb::Read, e))?;
        if !k.starts_with(REQLOG_PREFIX) || k.as_ref() >= end.as_slice() {
            break;
        }
        if let Some(id) = k
            .get(REQLOG_PREFIX.len() + 8..)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
        {
            wb.delete_cf(cf, req_key(u128::from_be_bytes(id)));
        }
        wb.delete_cf(cf, &k);
    }
    Ok(())
}

fn is_watched(key: &[u8]) -> bool {
    WATCHED_PREFIXES.iter().any(|p| key.starts_with(p))
}

fn req_key(id: u128) -> Vec<u8> {
    let mut k = REQ_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn reqlog_key(index: u64, id: u128) -> Vec<u8> {
    let mut k = REQLOG_PREFIX.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn state_cf(db: &RocksStorage) -> Result<&rocksdb::ColumnFamily, RaftStorageError> {
    db.db()
        .cf_handle(STATE_CF)
        .ok_or_else(|| sm_error(ErrorVerb::Read, "state column family missing"))
}

fn meta_cf(db: &RocksStorage) -> Result<&rocksdb::ColumnFamily, RaftStorageError> {
    db.db()
        .cf_handle(SM_META_CF)
        .ok_or_else(|| sm_error(ErrorVerb::Read, "state-machine column family missing"))
}

fn sm_error(verb: ErrorVerb, e: impl ToString) -> RaftStorageError {
    openraft::StorageIOError::<NodeId>::new(ErrorSubject::StateMachine, verb, AnyError::error(e))
        .into()
}

fn sm_io(verb: ErrorVerb, e: std::io::Error) -> RaftStorageError {
    openraft::StorageIOError::<NodeId>::new(ErrorSubject::StateMachine, verb, AnyError::error(e))
        .into()
}

fn snap_error(verb: ErrorVerb, e: impl ToString) -> RaftStorageError {
    openraft::StorageIOError::<NodeId>::new(ErrorSubject::Snapshot(None), verb, AnyError::error(e))
        .into()
}

/// Runs blocking state-machine work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RaftStorageError> + Send + 'static,
) -> Result<T, RaftStorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| sm_error(ErrorVerb::Write, format!("state machine task failed: {e}")))?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, RaftStorageError> {
        let sm = self.clone();
        let (meta, path, size) = blocking(move || sm.build()).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile::kept(path, size)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        let a = self.shared.applied.borrow().clone();
        Ok((a.log_id, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.apply_entries(entries)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, RaftStorageError> {
        let path = self.incoming_path();
        std::fs::File::create(&path).map_err(|e| snap_error(ErrorVerb::Write, e))?;
        Ok(Box::new(SnapshotFile::temporary(path, 0)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), RaftStorageError> {
        let sm = self.clone();
        let meta = meta.clone();
        blocking(move || sm.install(&meta, *snapshot)).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, RaftStorageError> {
        let current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some((meta, path, size)) = current else {
            return Ok(None);
        };
        // Hand out a hard link, so a newer snapshot replacing this one
        // cannot pull the file from under a transfer in progress.
        let link = self.incoming_path();
        std::fs::hard_link(&path, &link).map_err(|e| snap_error(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile::temporary(link, size)),
        }))
    }
}

impl StateMachine {
    /// A fresh path for a snapshot file on its way in or out.
    pub fn incoming_path(&self) -> PathBuf {
        self.shared
            .dir
            .join(SNAPSHOT_DIR)
            .join(format!("incoming-{}.snap", uuid::Uuid::new_v4().simple()))
    }
}
