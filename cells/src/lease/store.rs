//! Where leases live in the barrier, and the indexes kept beside them
//! (layout in the [module docs](super)). Every change of a lease writes the
//! entry and its index entries in one atomic batch; an update also requires
//! the entry to still exist, so a late writer can never bring back a lease
//! another one revoked.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, MutexGuard};

use crate::barrier::{Barrier, BarrierBatch, BarrierError};
use crate::logical::Data;

const ID_PREFIX: &str = "sys/expire/id/";
const DUE_PREFIX: &str = "sys/expire/due/";
const TOKEN_PREFIX: &str = "sys/expire/token/";
const IRREVOCABLE_PREFIX: &str = "sys/expire/irrevocable/";
/// Lock stripes: operations on one lease are serialised.
const STRIPES: usize = 64;

/// The lock stripe of a lease.
fn stripe(lease_id: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(lease_id);
    usize::try_from(h % STRIPES as u64).unwrap_or(0)
}

/// One lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseEntry {
    pub lease_id: String,
    /// The request path that created it (`database/creds/app`).
    pub path: String,
    /// The mount whose engine renews and revokes it; by UUID, so a remount
    /// does not orphan it.
    pub mount_uuid: String,
    /// What the engine needs to renew and revoke (a database user name).
    /// Kept inside the barrier; never returned to clients.
    #[serde(default)]
    pub internal: Data,
    /// Keyed hash of the token that created it.
    #[serde(default)]
    pub token_hash: Option<String>,
    pub issue_unix: i64,
    pub expire_unix: i64,
    #[serde(default)]
    pub last_renewal_unix: Option<i64>,
    /// Renewals never take it past this.
    pub max_expire_unix: i64,
    /// The TTL it was granted (seconds): a renewal without an increment
    /// asks for this again.
    pub ttl: u64,
    pub renewable: bool,
    #[serde(default)]
    pub revocation: RevocationState,
}

/// How revoking a lease has gone so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationState {
    /// Failed attempts.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub last_attempt_unix: Option<i64>,
    /// When the next attempt is due (unix ms); `None`: at expiry.
    pub next_attempt_ms: Option<i64>,
    /// Given up on after `attempts` failures; kept for an operator.
    pub irrevocable: bool,
}

impl LeaseEntry {
    /// When the manager next acts on it (unix ms); `None` once irrevocable.
    pub fn due_ms(&self) -> Option<i64> {
        if self.revocation.irrevocable {
            return None;
        }
        Some(
            self.revocation
                .next_attempt_ms
                .unwrap_or_else(|| self.expire_unix.saturating_mul(1000)),
        )
    }

    /// Seconds left.
    pub fn remaining(&self, now: i64) -> u64 {
        u64::try_from(self.expire_unix - now).unwrap_or(0)
    }
}

/// The lease storage of one unsealed node.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    barrier: Barrier,
    locks: Arc<Vec<Mutex<()>>>,
}

impl LeaseStore {
    pub fn new(barrier: Barrier) -> Self {
        Self {
            barrier,
            locks: Arc::new((0..STRIPES).map(|_| Mutex::new(())).collect()),
        }
    }

    /// Serialises changes to one lease on this node (the leader, which makes
    /// every lease change in a cell).
    pub async fn lock(&self, lease_id: &str) -> MutexGuard<'_, ()> {
        self.locks[stripe(lease_id)].lock().await
    }

    /// Locks every lease of `lease_ids` at once, for a batch. Stripes are
    /// taken in ascending order, so two batches cannot deadlock, and each
    /// stripe once.
    pub async fn lock_many<'i>(
        &self,
        lease_ids: impl IntoIterator<Item = &'i str>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let stripes: std::collections::BTreeSet<usize> =
            lease_ids.into_iter().map(stripe).collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.locks[i].lock().await);
        }
        guards
    }

    pub fn get(&self, lease_id: &str) -> Result<Option<LeaseEntry>, BarrierError> {
        let Some(raw) = self.barrier.get(&format!("{ID_PREFIX}{lease_id}"))? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| BarrierError::Corrupt(format!("lease entry: {e}")))
    }

    /// Stores a new lease with its indexes.
    pub async fn create(&self, entry: &LeaseEntry) -> Result<(), BarrierError> {
        let id_key = format!("{ID_PREFIX}{}", entry.lease_id);
        let mut batch = self
            .barrier
            .batch()
            .require(&id_key, false)
            .put(&id_key, &to_json(entry)?)?;
        batch = add_indexes(batch, entry)?;
        self.barrier.commit(batch).await
    }

    /// Replaces `old` by `new` (same lease), moving index entries that
    /// changed. Fails with a precondition error if the lease is gone.
    pub async fn update(&self, old: &LeaseEntry, new: &LeaseEntry) -> Result<(), BarrierError> {
        let batch = add_update(self.barrier.batch(), old, new)?;
        self.barrier.commit(batch).await
    }

    /// [`update`](Self::update) of many leases in one write; if any lease is
    /// gone, nothing is written and the precondition error is returned.
    pub async fn update_many(
        &self,
        changes: &[(LeaseEntry, LeaseEntry)],
    ) -> Result<(), BarrierError> {
        let mut batch = self.barrier.batch();
        for (old, new) in changes {
            batch = add_update(batch, old, new)?;
        }
        self.barrier.commit(batch).await
    }

    /// Deletes the lease and every index entry pointing at it.
    pub async fn delete(&self, entry: &LeaseEntry) -> Result<(), BarrierError> {
        self.delete_many(std::slice::from_ref(entry)).await
    }

    /// Deletes many leases and their index entries in one write.
    pub async fn delete_many(&self, entries: &[LeaseEntry]) -> Result<(), BarrierError> {
        let mut batch = self.barrier.batch();
        for entry in entries {
            batch = batch
                .delete(&format!("{ID_PREFIX}{}", entry.lease_id))
                .delete(&format!("{IRREVOCABLE_PREFIX}{}", entry.lease_id));
            // Both the expiry and a pending retry may have had index
            // entries over the lease's life; deleting an absent key costs
            // nothing.
            batch = batch.delete(&due_key(
                entry.expire_unix.saturating_mul(1000),
                &entry.lease_id,
            ));
            if let Some(at) = entry.revocation.next_attempt_ms {
                batch = batch.delete(&due_key(at, &entry.lease_id));
            }
            if let Some(t) = &entry.token_hash {
                batch = batch.delete(&format!("{TOKEN_PREFIX}{t}/{}", entry.lease_id));
            }
        }
        self.barrier.commit(batch).await
    }

    /// Up to `limit` due-index entries at or before `now_ms`, in time order:
    /// `(when_ms, lease id)`. Only the front of the index is read.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<(i64, String)>, BarrierError> {
        let mut out = Vec::new();
        for key in self.barrier.list_page(DUE_PREFIX, None, limit)? {
            let Some((when, id)) = parse_due(&key) else {
                continue;
            };
            if when > now_ms {
                break;
            }
            out.push((when, id.to_owned()));
        }
        Ok(out)
    }

    /// When the earliest lease is due (unix ms), if any.
    pub fn next_due(&self) -> Result<Option<i64>, BarrierError> {
        Ok(self
            .barrier
            .list_page(DUE_PREFIX, None, 1)?
            .first()
            .and_then(|k| parse_due(k))
            .map(|(when, _)| when))
    }

    /// Deletes one due-index entry (a stale one).
    pub async fn drop_due(&self, when_ms: i64, lease_id: &str) -> Result<(), BarrierError> {
        self.barrier.delete(&due_key(when_ms, lease_id)).await
    }

    /// Lease IDs of a token.
    pub fn by_token(&self, token_hash: &str) -> Result<Vec<String>, BarrierError> {
        self.barrier.list(&format!("{TOKEN_PREFIX}{token_hash}/"))
    }

    /// One page of lease IDs starting with `prefix`, in order, after
    /// `after` (a full lease ID).
    pub fn ids_with_prefix(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BarrierError> {
        let after = after.map(|a| a.strip_prefix(prefix).unwrap_or(a));
        Ok(self
            .barrier
            .list_page(&format!("{ID_PREFIX}{prefix}"), after, limit)?
            .into_iter()
            .map(|rest| format!("{prefix}{rest}"))
            .collect())
    }

    /// One level of lease IDs under `prefix` (ends with `/` or is empty), as
    /// `LIST sys/leases/lookup/:prefix` shows them.
    pub fn list_dir(&self, prefix: &str) -> Result<Vec<String>, BarrierError> {
        self.barrier.list_dir(&format!("{ID_PREFIX}{prefix}"))
    }

    /// How many leases start with `prefix` (a key scan; not for hot paths).
    pub fn count(&self, prefix: &str) -> Result<usize, BarrierError> {
        let mut n = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self.ids_with_prefix(prefix, after.as_deref(), 4096)?;
            n += page.len();
            match page.into_iter().last() {
                Some(last) => after = Some(last),
                None => return Ok(n),
            }
        }
    }

    /// Up to `limit` irrevocable lease IDs (all of them with `usize::MAX`).
    pub fn irrevocable(&self, limit: usize) -> Result<Vec<String>, BarrierError> {
        self.barrier.list_page(IRREVOCABLE_PREFIX, None, limit)
    }

    /// Token hashes that have leases (for tidy).
    pub fn tokens_with_leases(&self) -> Result<Vec<String>, BarrierError> {
        Ok(self
            .barrier
            .list_dir(TOKEN_PREFIX)?
            .into_iter()
            .map(|d| d.trim_end_matches('/').to_owned())
            .collect())
    }

    /// Every due-index entry (for tidy).
    pub fn all_due(&self) -> Result<Vec<(i64, String)>, BarrierError> {
        Ok(self
            .barrier
            .list(DUE_PREFIX)?
            .iter()
            .filter_map(|k| parse_due(k).map(|(w, id)| (w, id.to_owned())))
            .collect())
    }

    /// Re-adds a lease's due-index entry (tidy found it missing).
    pub async fn restore_due(&self, entry: &LeaseEntry) -> Result<(), BarrierError> {
        match entry.due_ms() {
            Some(when) => self.barrier.put(&due_key(when, &entry.lease_id), b"").await,
            None => Ok(()),
        }
    }

    /// Whether a due-index entry exists.
    pub fn has_due(&self, when_ms: i64, lease_id: &str) -> Result<bool, BarrierError> {
        Ok(self.barrier.get(&due_key(when_ms, lease_id))?.is_some())
    }

    /// Deletes a token-index entry (tidy found it dangling).
    pub async fn drop_token_link(
        &self,
        token_hash: &str,
        lease_id: &str,
    ) -> Result<(), BarrierError> {
        self.barrier
            .delete(&format!("{TOKEN_PREFIX}{token_hash}/{lease_id}"))
            .await
    }
}

/// Adds to `batch` the replacement of `old` by `new` (same lease), on
/// condition that the lease still exists, moving index entries that changed.
fn add_update(
    batch: BarrierBatch,
    old: &LeaseEntry,
    new: &LeaseEntry,
) -> Result<BarrierBatch, BarrierError> {
    let id_key = format!("{ID_PREFIX}{}", new.lease_id);
    let mut batch = batch.require(&id_key, true).put(&id_key, &to_json(new)?)?;
    if old.due_ms() != new.due_ms() {
        if let Some(when) = old.due_ms() {
            batch = batch.delete(&due_key(when, &old.lease_id));
        }
        if let Some(when) = new.due_ms() {
            batch = batch.put(&due_key(when, &new.lease_id), b"")?;
        }
    }
    if old.revocation.irrevocable != new.revocation.irrevocable {
        let key = format!("{IRREVOCABLE_PREFIX}{}", new.lease_id);
        batch = if new.revocation.irrevocable {
            batch.put(&key, b"")?
        } else {
            batch.delete(&key)
        };
    }
    Ok(batch)
}

fn add_indexes(mut batch: BarrierBatch, entry: &LeaseEntry) -> Result<BarrierBatch, BarrierError> {
    if let Some(when) = entry.due_ms() {
        batch = batch.put(&due_key(when, &entry.lease_id), b"")?;
    }
    if let Some(t) = &entry.token_hash {
        batch = batch.put(&format!("{TOKEN_PREFIX}{t}/{}", entry.lease_id), b"")?;
    }
    if entry.revocation.irrevocable {
        batch = batch.put(&format!("{IRREVOCABLE_PREFIX}{}", entry.lease_id), b"")?;
    }
    Ok(batch)
}

/// Fixed-width hex keeps lexical order equal to time order (times before
/// 1970 are clamped: nothing is due then).
fn due_key(when_ms: i64, lease_id: &str) -> String {
    format!("{DUE_PREFIX}{:016x}/{lease_id}", when_ms.max(0))
}

fn parse_due(key: &str) -> Option<(i64, &str)> {
    let (when, id) = key.split_once('/')?;
    if when.len() != 16 {
        return None;
    }
    Some((i64::from_str_radix(when, 16).ok()?, id))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, BarrierError> {
    serde_json::to_vec(v).map_err(|e| BarrierError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barrier::BarrierConfig;
    use crate::storage::{MemoryStorage, Storage, wait};
    use sigil_hsm::SecretBytes;

    fn store() -> (LeaseStore, Arc<MemoryStorage>) {
        let mem = Arc::new(MemoryStorage::new());
        let barrier = Barrier::new(mem.clone(), BarrierConfig::default());
        let init = barrier.initialize(&SecretBytes::random(32)).expect("init");
        wait(mem.apply(init)).expect("init");
        (LeaseStore::new(barrier), mem)
    }

    fn lease(id: &str, expire: i64, token: Option<&str>) -> LeaseEntry {
        let mut internal = Data::new();
        internal.insert("username".into(), "v-app-Zq81".into());
        LeaseEntry {
            lease_id: id.into(),
            path: id.rsplit_once('/').map(|(p, _)| p).unwrap_or(id).into(),
            mount_uuid: "m".into(),
            internal,
            token_hash: token.map(str::to_owned),
            issue_unix: 100,
            expire_unix: expire,
            last_renewal_unix: None,
            max_expire_unix: 10_000,
            ttl: 60,
            renewable: true,
            revocation: RevocationState::default(),
        }
    }

    #[test]
    fn the_due_index_is_read_in_time_order_and_only_up_to_now() {
        let (s, _) = store();
        for (id, at) in [
            ("db/creds/a/1", 300),
            ("db/creds/a/2", 100),
            ("db/creds/b/3", 200),
        ] {
            wait(s.create(&lease(id, at, None))).expect("create");
        }
        assert_eq!(
            s.due(250_000, 10).expect("due"),
            [
                (100_000, "db/creds/a/2".into()),
                (200_000, "db/creds/b/3".into())
            ]
        );
        assert_eq!(s.due(250_000, 1).expect("due").len(), 1, "bounded");
        assert_eq!(s.next_due().expect("next"), Some(100_000));
        assert!(s.due(99_999, 10).expect("due").is_empty());
    }

    #[test]
    fn updates_move_indexes_and_cannot_resurrect_a_deleted_lease() {
        let (s, _) = store();
        let old = lease("db/creds/a/1", 300, Some("tok"));
        wait(s.create(&old)).expect("create");
        assert!(wait(s.create(&old)).is_err(), "an ID is never reused");
        let mut new = old.clone();
        new.revocation.attempts = 1;
        new.revocation.next_attempt_ms = Some(400_500);
        wait(s.update(&old, &new)).expect("update");
        assert_eq!(
            s.due(i64::MAX, 10).expect("due"),
            [(400_500, old.lease_id.clone())]
        );
        let mut dead = new.clone();
        dead.revocation.irrevocable = true;
        wait(s.update(&new, &dead)).expect("update");
        assert!(s.due(i64::MAX, 10).expect("due").is_empty());
        assert_eq!(
            s.irrevocable(10).expect("list"),
            std::slice::from_ref(&old.lease_id)
        );
        assert_eq!(
            s.by_token("tok").expect("list"),
            std::slice::from_ref(&old.lease_id)
        );

        wait(s.delete(&dead)).expect("delete");
        assert_eq!(s.get(&old.lease_id).expect("get"), None);
        assert!(s.irrevocable(10).expect("list").is_empty());
        assert!(s.by_token("tok").expect("list").is_empty());
        assert!(
            wait(s.update(&dead, &new)).is_err(),
            "an update of a deleted lease must fail"
        );
        assert_eq!(s.get(&old.lease_id).expect("get"), None);
        assert!(s.due(i64::MAX, 10).expect("due").is_empty());
    }

    #[test]
    fn prefixes_page_and_list_like_paths() {
        let (s, _) = store();
        for id in ["db/creds/a/1", "db/creds/a/2", "db/creds/ab/3", "kv/x/4"] {
            wait(s.create(&lease(id, 500, None))).expect("create");
        }
        let page = s.ids_with_prefix("db/creds/", None, 2).expect("page");
        assert_eq!(page, ["db/creds/a/1", "db/creds/a/2"]);
        let next = s
            .ids_with_prefix("db/creds/", page.last().map(String::as_str), 2)
            .expect("page");
        assert_eq!(next, ["db/creds/ab/3"]);
        assert_eq!(s.count("db/creds/a/").expect("count"), 2);
        assert_eq!(s.count("").expect("count"), 4);
        assert_eq!(s.list_dir("db/creds/").expect("dir"), ["a/", "ab/"]);
        assert_eq!(s.list_dir("db/creds/a/").expect("dir"), ["1", "2"]);
    }

    #[test]
    fn nothing_a_lease_holds_is_stored_in_plaintext() {
        let (s, mem) = store();
        wait(s.create(&lease("db/creds/a/1", 500, Some("tok")))).expect("create");
        for (k, v) in mem.dump() {
            let hay = [k, v].concat();
            assert!(
                !hay.windows(b"v-app-Zq81".len()).any(|w| w == b"v-app-Zq81"),
                "internal data leaked"
            );
        }
    }
}
