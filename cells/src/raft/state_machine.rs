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

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use futures::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::watch;

use super::read_cache::{CacheStats, ReadCache};
use super::snapshot::{self, SnapshotFile};
use super::{
    Command, CommandResult, Entry, LogId, Proposal, RestoreStep, Snapshot, SnapshotMeta,
    StoredMembership, TypeConfig, decode, encode,
};
use crate::storage::rocks::{SM_META_CF, STATE_CF};
use crate::storage::{Op, RocksStorage, Storage, StorageError};

const APPLIED_KEY: &[u8] = b"applied";
const MEMBERSHIP_KEY: &[u8] = b"membership";
/// `req/<id>` → index: request ids applied, for [`CommandResult::Duplicate`].
const REQ_PREFIX: &[u8] = b"req/";
/// `reqlog/<index><id>`: the same ids in log order, so old ones can be pruned.
const REQLOG_PREFIX: &[u8] = b"reqlog/";
/// `restore/<id><seq>` → a staged piece of a snapshot being restored.
const RESTORE_PREFIX: &[u8] = b"restore/";
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
pub const WATCHED_PREFIXES: &[&[u8]] = &[
    b"core/",
    b"logical/core/",
    b"logical/sys/policy/",
    b"logical/sys/control-plane/",
];

struct Shared {
    dir: PathBuf,
    db: RwLock<RocksStorage>,
    applied: watch::Sender<Applied>,
    /// Bumped when an applied write touched a [`WATCHED_PREFIXES`] key, or a
    /// snapshot replaced the whole state.
    changes: watch::Sender<u64>,
    /// Bumped when an operator's snapshot restore replaced the whole state.
    restores: watch::Sender<u64>,
    /// The latest snapshot built or installed, kept on disk.
    current: std::sync::Mutex<Option<(SnapshotMeta, PathBuf, u64)>>,
    /// Entries of the `state` family, kept coherent by [`Self::apply_entries`]
    /// and [`Self::switch_to`].
    cache: ReadCache,
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
    /// Opens the state under `dir` (creating it if needed), with a read
    /// cache of at most `cache_bytes` (0: none).
    pub fn open(dir: &Path, cache_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir.join(SNAPSHOT_DIR)).map_err(sm_io)?;
        let current = match std::fs::read_to_string(dir.join(CURRENT_FILE)) {
            Ok(name) => name.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "db".to_owned(),
            Err(e) => return Err(sm_io(e)),
        };
        remove_stale_dirs(dir, &current);
        let db = RocksStorage::open(dir.join(&current)).map_err(sm_error)?;
        let applied = read_applied(&db)?;
        let snapshot = read_current_snapshot(dir);
        Ok(Self {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                db: RwLock::new(db),
                applied: watch::channel(applied).0,
                changes: watch::channel(0).0,
                restores: watch::channel(0).0,
                current: std::sync::Mutex::new(snapshot),
                cache: ReadCache::new(cache_bytes),
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

    /// The value of `key` in the `state` family, through the read cache.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.shared.cache.get_or_load(key, || self.db().get(key))
    }

    /// The read cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.shared.cache.stats()
    }

    /// Watches the last applied log id.
    pub fn applied(&self) -> watch::Receiver<Applied> {
        self.shared.applied.subscribe()
    }

    /// Watches changes to watched keys (see [`WATCHED_PREFIXES`]).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Watches operator restores: the state was replaced by a snapshot from
    /// outside the log (keyrings may have gone back in time).
    pub fn restores(&self) -> watch::Receiver<u64> {
        self.shared.restores.subscribe()
    }

    fn apply_entries(&self, entries: Vec<Entry>) -> io::Result<Vec<Vec<CommandResult>>> {
        let db = self.db();
        let rdb = db.db();
        let state = state_cf(&db)?;
        let meta = meta_cf(&db)?;
        let cache = &self.shared.cache;
        let mut pending = Pending::default();
        let mut wb = WriteBatch::default();
        let mut results = Vec::with_capacity(entries.len());
        let mut applied = self.shared.applied.borrow().clone();
        let before = applied.index();
        let mut touched_watched = false;
        for entry in entries {
            applied.log_id = Some(entry.log_id);
            let index = entry.log_id.index;
            match entry.payload {
                EntryPayload::Blank => results.push(Vec::new()),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    results.push(Vec::new());
                }
                EntryPayload::Normal(Proposal(commands)) => {
                    let mut out = Vec::with_capacity(commands.len());
                    for command in commands {
                        out.push(apply_command(
                            rdb,
                            state,
                            meta,
                            cache,
                            &mut wb,
                            &mut pending,
                            &mut touched_watched,
                            index,
                            command,
                        )?);
                    }
                    results.push(out);
                }
            }
        }
        let after = applied.index();
        wb.put_cf(
            meta,
            APPLIED_KEY,
            encode(&applied.log_id).map_err(sm_error)?,
        );
        wb.put_cf(
            meta,
            MEMBERSHIP_KEY,
            encode(&applied.membership).map_err(sm_error)?,
        );
        if after / PRUNE_EVERY != before / PRUNE_EVERY && after > REQ_RETENTION {
            prune_request_ids(&db, &mut wb, after - REQ_RETENTION)?;
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        rdb.write_opt(wb, &wo).map_err(sm_error)?;
        // After the write, never before it (see `read_cache`).
        for (key, value) in &pending.state {
            cache.store(key, value.as_deref());
        }
        self.shared.applied.send_replace(applied);
        if touched_watched {
            self.shared.changes.send_modify(|n| *n += 1);
        }
        Ok(results)
    }

    /// Takes a RocksDB checkpoint of the current state into a scratch
    /// directory (blocking) and reads what it holds. The caller removes the
    /// directory.
    fn checkpoint(&self) -> io::Result<(PathBuf, Applied)> {
        let db = self.db();
        let work = self
            .shared
            .dir
            .join(SNAPSHOT_DIR)
            .join(format!("build-{}", uuid::Uuid::new_v4()));
        rocksdb::checkpoint::Checkpoint::new(db.db())
            .and_then(|c| c.create_checkpoint(&work))
            .map_err(snap_error)?;
        // The checkpoint's own records say exactly what it holds.
        let applied = RocksStorage::open(&work)
            .map_err(snap_error)
            .and_then(|copy| read_applied(&copy));
        match applied {
            Ok(applied) => Ok((work, applied)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                Err(e)
            }
        }
    }

    /// Packs the state as it is now into `out` (blocking): the file an
    /// operator saves (`GET sys/storage/raft/snapshot`). Returns its size
    /// and the log index it covers.
    pub fn export(&self, out: &Path) -> io::Result<(u64, u64)> {
        let (work, applied) = self.checkpoint()?;
        let packed = snapshot::pack(&work, out).map_err(snap_error);
        let _ = std::fs::remove_dir_all(&work);
        Ok((packed?, applied.index()))
    }

    /// Builds a snapshot of the current state (blocking: checkpoint and pack).
    fn build(&self) -> io::Result<(SnapshotMeta, PathBuf, u64)> {
        let (work, applied) = self.checkpoint()?;
        let last = applied.log_id;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: applied.membership,
        };
        let id = snapshot_file_name(&meta);
        let path = self
            .shared
            .dir
            .join(SNAPSHOT_DIR)
            .join(format!("{id}.snap"));
        let packed = snapshot::pack(&work, &path).map_err(snap_error);
        let _ = std::fs::remove_dir_all(&work);
        let size = packed?;
        self.set_current_snapshot(meta.clone(), path.clone(), size)?;
        tracing::info!(snapshot = %id, bytes = size, "snapshot built");
        Ok((meta, path, size))
    }

    /// Records `path` as the current snapshot and removes older ones.
    fn set_current_snapshot(&self, meta: SnapshotMeta, path: PathBuf, size: u64) -> io::Result<()> {
        let record = serde_json::to_vec(&(&meta, &path, size)).map_err(snap_error)?;
        write_atomically(
            &self.shared.dir.join(SNAPSHOT_DIR).join("current.json"),
            &record,
        )
        .map_err(snap_error)?;
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
    fn install(&self, meta: &SnapshotMeta, file: SnapshotFile) -> io::Result<()> {
        snapshot::verify(&file.path).map_err(snap_error)?;
        let name = format!("db-{}", uuid::Uuid::new_v4().simple());
        let dest = self.shared.dir.join(&name);
        snapshot::unpack(&file.path, &dest).map_err(snap_error)?;
        let db = RocksStorage::open(&dest).map_err(snap_error)?;
        let applied = read_applied(&db)?;
        if applied.log_id != meta.last_log_id {
            drop(db);
            let _ = std::fs::remove_dir_all(&dest);
            return Err(snap_error(format!(
                "snapshot holds state up to {:?}, its metadata says {:?}",
                applied.log_id, meta.last_log_id
            )));
        }
        self.switch_to(&name, db, applied).map_err(snap_error)?;
        // Keep what was installed as this node's current snapshot.
        let kept = self
            .shared
            .dir
            .join(SNAPSHOT_DIR)
            .join(format!("{}.snap", snapshot_file_name(meta)));
        let size = file.size;
        if std::fs::rename(&file.path, &kept).is_ok() {
            let _ = file.keep();
            self.set_current_snapshot(meta.clone(), kept, size)?;
        }
        tracing::info!(index = ?meta.last_log_id.map(|l| l.index), "snapshot installed");
        Ok(())
    }
}

/// Applies one command of an entry at `index` into `wb`, reading through
/// `pending` (what earlier commands of the same apply wrote) and the cache.
#[allow(clippy::too_many_arguments)]
fn apply_command(
    rdb: &rocksdb::DB,
    state: &rocksdb::ColumnFamily,
    meta: &rocksdb::ColumnFamily,
    cache: &ReadCache,
    wb: &mut WriteBatch,
    pending: &mut Pending,
    touched_watched: &mut bool,
    index: u64,
    command: Command,
) -> io::Result<CommandResult> {
    let Command {
        request_id,
        batch,
        restore,
    } = command;
    let seen = pending.requests.contains(&request_id)
        || rdb
            .get_pinned_cf(meta, req_key(request_id))
            .map_err(sm_error)?
            .is_some();
    if seen {
        return Ok(CommandResult::Duplicate);
    }
    let remember = |wb: &mut WriteBatch, pending: &mut Pending| {
        remember_request(wb, meta, request_id, index);
        pending.requests.insert(request_id);
    };
    match restore {
        Some(RestoreStep::Chunk { id, seq, bytes }) => {
            wb.put_cf(meta, restore_key(id, seq), &bytes);
            remember(wb, pending);
            return Ok(CommandResult::Applied);
        }
        // A commit travels alone and is applied by `apply_restore`; one
        // batched with other commands is refused the same way everywhere.
        Some(RestoreStep::Commit { .. }) => {
            remember(wb, pending);
            return Ok(CommandResult::PreconditionFailed {
                key: "snapshot: a restore commit must be its own log entry".into(),
            });
        }
        None => {}
    }
    for (key, condition) in &batch.preconditions {
        let current = match pending.state.get(key) {
            Some(v) => v.clone(),
            None => cache.get_or_load(key, || rdb.get_cf(state, key).map_err(sm_error))?,
        };
        if !condition.holds(current.as_deref()) {
            return Ok(CommandResult::PreconditionFailed {
                key: String::from_utf8_lossy(key).into_owned(),
            });
        }
    }
    for op in batch.ops {
        match op {
            Op::Put { key, value } => {
                *touched_watched |= is_watched(&key);
                wb.put_cf(state, &key, &value);
                pending.state.insert(key, Some(value));
            }
            Op::Delete { key } => {
                *touched_watched |= is_watched(&key);
                wb.delete_cf(state, &key);
                pending.state.insert(key, None);
            }
        }
    }
    remember(wb, pending);
    Ok(CommandResult::Applied)
}

/// What the commands of one apply have written so far, read by the commands
/// after them: state keys (a value, or `None` for deleted) and request ids.
#[derive(Default)]
struct Pending {
    state: HashMap<Vec<u8>, Option<Vec<u8>>>,
    requests: HashSet<u128>,
}

impl StateMachine {
    /// Applies a restore's commit step (blocking). Every replica reaches the
    /// same outcome from the same staged bytes: the state is replaced, or
    /// (a piece missing, a checksum wrong) nothing but the applied index
    /// changes and the staged pieces are dropped.
    fn apply_restore(&self, entry: Entry) -> io::Result<CommandResult> {
        let EntryPayload::Normal(Proposal(mut commands)) = entry.payload else {
            return Err(sm_error("not a restore commit"));
        };
        let Some(Command {
            request_id,
            restore: Some(RestoreStep::Commit { id, chunks, size }),
            ..
        }) = commands.pop()
        else {
            return Err(sm_error("not a restore commit"));
        };
        let mut applied = self.shared.applied.borrow().clone();
        applied.log_id = Some(entry.log_id);
        let db = self.db();
        let meta = meta_cf(&db)?;
        let seen = db
            .db()
            .get_cf(meta, req_key(request_id))
            .map_err(sm_error)?
            .is_some();
        let outcome = if seen {
            Err(None)
        } else {
            self.swap_in_restore(&db, id, chunks, size, &applied, request_id)
                .map_err(Some)
        };
        match outcome {
            Ok(()) => Ok(CommandResult::Applied),
            Err(why) => {
                let mut wb = WriteBatch::default();
                let (from, to) = restore_range(id);
                wb.delete_range_cf(meta, from, to);
                wb.put_cf(
                    meta,
                    APPLIED_KEY,
                    encode(&applied.log_id).map_err(sm_error)?,
                );
                remember_request(&mut wb, meta, request_id, entry.log_id.index);
                db.db().write(wb).map_err(sm_error)?;
                self.shared.applied.send_replace(applied);
                Ok(match why {
                    None => CommandResult::Duplicate,
                    Some(why) => {
                        tracing::error!(error = %why, "snapshot restore refused; the state is unchanged");
                        CommandResult::PreconditionFailed {
                            key: format!("snapshot: {why}"),
                        }
                    }
                })
            }
        }
    }

    /// Assembles restore `id`'s pieces, checks them, and switches the state
    /// to the snapshot they make, recording `applied` (this cell's log id
    /// and membership, not the snapshot's) in it first.
    fn swap_in_restore(
        &self,
        db: &RocksStorage,
        id: u128,
        chunks: u32,
        size: u64,
        applied: &Applied,
        request_id: u128,
    ) -> Result<(), String> {
        use std::io::Write;
        let file = self
            .shared
            .dir
            .join(SNAPSHOT_DIR)
            .join(format!("restore-{id:032x}.snap"));
        let name = format!("db-{}", uuid::Uuid::new_v4().simple());
        let dest = self.shared.dir.join(&name);
        let result = (|| -> Result<RocksStorage, String> {
            let meta = meta_cf(db).map_err(|e| e.to_string())?;
            let mut out = std::fs::File::create(&file).map_err(|e| e.to_string())?;
            let (from, to) = restore_range(id);
            let iter = db.db().iterator_cf(
                meta,
                rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward),
            );
            let (mut next, mut written) = (0u32, 0u64);
            for item in iter {
                let (k, v) = item.map_err(|e| e.to_string())?;
                if k.as_ref() >= to.as_slice() {
                    break;
                }
                let seq = k
                    .get(from.len()..)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes);
                if seq != Some(next) {
                    return Err(format!("piece {next} of the snapshot is missing"));
                }
                out.write_all(&v).map_err(|e| e.to_string())?;
                next += 1;
                written += v.len() as u64;
            }
            if next != chunks || written != size {
                return Err(format!(
                    "the snapshot arrived incomplete: {next} of {chunks} pieces, {written} of {size} bytes"
                ));
            }
            out.sync_all().map_err(|e| e.to_string())?;
            drop(out);
            snapshot::verify(&file).map_err(|e| e.to_string())?;
            snapshot::unpack(&file, &dest).map_err(|e| e.to_string())?;
            let new = RocksStorage::open(&dest).map_err(|e| e.to_string())?;
            // The snapshot's own log position and membership belong to the
            // cell it was taken from; this cell's are recorded instead,
            // durably, before the switch makes the new state current.
            let new_meta = meta_cf(&new).map_err(|e| e.to_string())?;
            let mut wb = WriteBatch::default();
            wb.delete_range_cf(new_meta, RESTORE_PREFIX, &prefix_end(RESTORE_PREFIX)[..]);
            wb.put_cf(
                new_meta,
                APPLIED_KEY,
                encode(&applied.log_id).map_err(|e| e.to_string())?,
            );
            wb.put_cf(
                new_meta,
                MEMBERSHIP_KEY,
                encode(&applied.membership).map_err(|e| e.to_string())?,
            );
            remember_request(&mut wb, new_meta, request_id, applied.index());
            let mut sync = WriteOptions::default();
            sync.set_sync(true);
            new.db().write_opt(wb, &sync).map_err(|e| e.to_string())?;
            Ok(new)
        })();
        let _ = std::fs::remove_file(&file);
        let new = match result {
            Ok(new) => new,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dest);
                return Err(e);
            }
        };
        self.switch_to(&name, new, applied.clone())
            .map_err(|e| format!("cannot switch to the restored state: {e}"))?;
        self.shared.restores.send_modify(|n| *n += 1);
        tracing::warn!(
            index = applied.index(),
            bytes = size,
            "state replaced by a restored snapshot"
        );
        Ok(())
    }
}

impl StateMachine {
    /// Makes the database `name` (already open as `db`, holding `applied`)
    /// the current state: `CURRENT` is switched atomically, readers move
    /// to the new handle, and the old database is retired.
    fn switch_to(&self, name: &str, db: RocksStorage, applied: Applied) -> std::io::Result<()> {
        write_atomically(&self.shared.dir.join(CURRENT_FILE), name.as_bytes())?;
        let old = {
            let mut guard = self.shared.db.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *guard, db)
        };
        // Misses take their database handle under a shard lock, so once a
        // shard is cleared nothing from the old database enters it again.
        self.shared.cache.clear();
        self.shared.applied.send_replace(applied);
        self.shared.changes.send_modify(|n| *n += 1);
        retire(old);
        Ok(())
    }
}

/// A fresh file name for a snapshot covering `meta`: term and index, so an
/// operator can tell snapshots apart, and a random part, so two snapshots of
/// the same index never share a file.
fn snapshot_file_name(meta: &SnapshotMeta) -> String {
    let (term, index) = meta
        .last_log_id
        .map_or((0, 0), |l| (l.leader_id.term, l.index));
    format!("{term}-{index}-{}", uuid::Uuid::new_v4().simple())
}

fn is_restore_commit(entry: &Entry) -> bool {
    matches!(&entry.payload, EntryPayload::Normal(p) if p.is_restore_commit())
}

fn restore_key(id: u128, seq: u32) -> Vec<u8> {
    let mut k = RESTORE_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The keys of restore `id`'s pieces: `[from, to)`.
fn restore_range(id: u128) -> (Vec<u8>, Vec<u8>) {
    let mut from = RESTORE_PREFIX.to_vec();
    from.extend_from_slice(&id.to_be_bytes());
    let to = prefix_end(&from);
    (from, to)
}

/// The first key after every key starting with `prefix` (which does not end
/// in 0xff bytes only).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            break;
        }
    }
    end
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

fn read_applied(db: &RocksStorage) -> io::Result<Applied> {
    let cf = meta_cf(db)?;
    let get = |key: &[u8]| db.db().get_cf(cf, key).map_err(sm_error);
    let log_id = match get(APPLIED_KEY)? {
        Some(b) => decode::<Option<LogId>>(&b).map_err(sm_error)?,
        None => None,
    };
    let membership = match get(MEMBERSHIP_KEY)? {
        Some(b) => decode::<StoredMembership>(&b).map_err(sm_error)?,
        None => StoredMembership::default(),
    };
    Ok(Applied { log_id, membership })
}

fn prune_request_ids(db: &RocksStorage, wb: &mut WriteBatch, below: u64) -> io::Result<()> {
    let cf = meta_cf(db)?;
    let mut end = REQLOG_PREFIX.to_vec();
    end.extend_from_slice(&below.to_be_bytes());
    let iter = db.db().iterator_cf(
        cf,
        rocksdb::IteratorMode::From(REQLOG_PREFIX, rocksdb::Direction::Forward),
    );
    for item in iter {
        let (k, _) = item.map_err(sm_error)?;
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

/// Records that request `id` was applied at `index` (see
/// [`CommandResult::Duplicate`]).
fn remember_request(wb: &mut WriteBatch, meta: &rocksdb::ColumnFamily, id: u128, index: u64) {
    wb.put_cf(meta, req_key(id), index.to_be_bytes());
    wb.put_cf(meta, reqlog_key(index, id), b"");
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

fn state_cf(db: &RocksStorage) -> io::Result<&rocksdb::ColumnFamily> {
    db.db()
        .cf_handle(STATE_CF)
        .ok_or_else(|| sm_error("state column family missing"))
}

fn meta_cf(db: &RocksStorage) -> io::Result<&rocksdb::ColumnFamily> {
    db.db()
        .cf_handle(SM_META_CF)
        .ok_or_else(|| sm_error("state-machine column family missing"))
}

fn sm_error(e: impl ToString) -> io::Error {
    io::Error::other(format!("state machine: {}", e.to_string()))
}

fn sm_io(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("state machine: {e}"))
}

fn snap_error(e: impl ToString) -> io::Error {
    io::Error::other(format!("snapshot: {}", e.to_string()))
}

/// Runs blocking state-machine work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| sm_error(format!("task failed: {e}")))?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let sm = self.clone();
        let (meta, path, size) = blocking(move || sm.build()).await?;
        Ok(Snapshot {
            meta,
            snapshot: SnapshotFile::kept(path, size),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let a = self.shared.applied.borrow().clone();
        Ok((a.log_id, a.membership))
    }

    async fn apply<S>(&mut self, entries: S) -> io::Result<()>
    where
        S: futures::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        // The stream is the run of committed entries openraft read from the
        // log for this apply; all of it is written in one RocksDB write, but
        // a restore commit replaces the database: what comes before it is
        // written to the old one, what comes after to the new one.
        let items: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let mut pending = Vec::new();
        let mut responders = Vec::new();
        for (entry, responder) in items {
            if is_restore_commit(&entry) {
                if !pending.is_empty() {
                    let results = self.apply_entries(std::mem::take(&mut pending))?;
                    respond(std::mem::take(&mut responders), results);
                }
                let sm = self.clone();
                let result = blocking(move || sm.apply_restore(entry)).await?;
                if let Some(r) = responder {
                    r.send(vec![result]);
                }
            } else {
                pending.push(entry);
                responders.push(responder);
            }
        }
        if !pending.is_empty() {
            let results = self.apply_entries(pending)?;
            respond(responders, results);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> io::Result<()> {
        let sm = self.clone();
        let meta = meta.clone();
        blocking(move || sm.install(&meta, snapshot)).await
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
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
        std::fs::hard_link(&path, &link).map_err(snap_error)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: SnapshotFile::temporary(link, size),
        }))
    }
}

/// Hands each applied entry's results to the client waiting for it, if any.
fn respond(
    responders: Vec<Option<openraft::storage::ApplyResponder<TypeConfig>>>,
    results: Vec<Vec<CommandResult>>,
) {
    for (responder, result) in responders.into_iter().zip(results) {
        if let Some(r) = responder {
            r.send(result);
        }
    }
}

impl StateMachine {
    /// An empty file for a snapshot on its way in from the leader.
    pub fn begin_receiving_snapshot(&self) -> io::Result<SnapshotFile> {
        let path = self.incoming_path();
        std::fs::File::create(&path).map_err(snap_error)?;
        Ok(SnapshotFile::temporary(path, 0))
    }

    /// A fresh path for a snapshot file on its way in or out.
    pub fn incoming_path(&self) -> PathBuf {
        self.shared
            .dir
            .join(SNAPSHOT_DIR)
            .join(format!("incoming-{}.snap", uuid::Uuid::new_v4().simple()))
    }
}
