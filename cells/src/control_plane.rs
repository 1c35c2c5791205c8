//! This cell's replica of the control plane (`sigil-control-plane`), kept in
//! the barrier, so that it is encrypted at rest and replicated by the cell's
//! Raft log like everything else.
//!
//! | barrier key | contents |
//! | --- | --- |
//! | `sys/control-plane/meta` | what was applied from each origin, and the clock |
//! | `sys/control-plane/reg/<hex>` | one key's register (the hex is the key, encoded) |
//! | `sys/control-plane/log/<origin>/<seq>` | a retained op, served to peers |
//!
//! Every change is one atomic batch: the registers an op touched, the op
//! itself, the version vector, and the **views** derived from the registers
//! (a policy's value in force is also written to `sys/policy/<name>`, where
//! the request path reads it). Ops are written on the leader; a batch
//! requires its new log entries to be absent, so a deposed leader whose
//! replica is stale cannot write a seq twice. After a failed write, or when
//! replication changed the keys on this node, the replica is read again from
//! the barrier before its next use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crdts::VClock;
use serde::{Deserialize, Serialize};
use sigil_control_plane::replica::{Limits, Parts};
use sigil_control_plane::sync::{Peer, Store, StoreError, SyncStatus, now_ms};
use sigil_control_plane::{
    CellId, Changes, Entry, Hlc, Key, Receipt, Replica, ReplicaError, StateSnapshot, Value,
};
use tokio::sync::watch;

use crate::api_error::ApiError;
use crate::barrier::Barrier;

const META_KEY: &str = "sys/control-plane/meta";
const REG_PREFIX: &str = "sys/control-plane/reg/";
const LOG_PREFIX: &str = "sys/control-plane/log/";
/// Where the request path reads policies (see `pipeline::policies`).
pub(crate) const POLICY_VIEW_PREFIX: &str = "sys/policy/";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    applied: VClock<CellId>,
    hlc: Hlc,
}

/// The cell's replica, loaded from the barrier on first use.
#[derive(Debug)]
pub struct ControlPlane {
    barrier: Barrier,
    me: CellId,
    limits: Limits,
    replica: tokio::sync::Mutex<Option<Replica>>,
    /// Replication changed the stored replica: read it again before use.
    stale: AtomicBool,
    /// Ticks on every change committed here or replicated to this node.
    changed: watch::Sender<u64>,
    /// The peer cells this node's configuration federates with.
    peers: Vec<Peer>,
    /// This node's sync with them (pulling, as leader) and its serving side.
    sync: Arc<SyncStatus>,
}

impl ControlPlane {
    pub fn new(barrier: Barrier, me: CellId) -> Self {
        Self::federated(barrier, me, Vec::new())
    }

    /// A replica that syncs with `peers`.
    pub fn federated(barrier: Barrier, me: CellId, peers: Vec<Peer>) -> Self {
        Self {
            barrier,
            me,
            limits: Limits::default(),
            replica: tokio::sync::Mutex::new(None),
            stale: AtomicBool::new(false),
            changed: watch::Sender::new(0),
            peers,
            sync: Arc::new(SyncStatus::new()),
        }
    }

    pub fn cell_id(&self) -> &CellId {
        &self.me
    }

    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    pub fn sync_status(&self) -> &Arc<SyncStatus> {
        &self.sync
    }

    /// Another node of the cell may have changed the stored replica, or the
    /// node sealed: read it again before the next use.
    pub fn forget(&self) {
        self.stale.store(true, Ordering::Release);
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The stored replica's version (its encoded version vector and clock):
    /// it changes with every op applied in the cell, and costs one local
    /// read, so callers can tell whether anything moved without loading
    /// the replica.
    pub fn stored_version(&self) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(self.barrier.get(META_KEY)?.map(|v| v.to_vec()))
    }

    /// Reads the replica with `f`.
    pub async fn read<T>(&self, f: impl FnOnce(&Replica) -> T) -> Result<T, ApiError> {
        let mut guard = self.replica.lock().await;
        Ok(f(self.loaded(&mut guard)?))
    }

    /// Writes `value` (`None` deletes) to `key` as an op of this cell, and
    /// returns once it is committed in the cell.
    ///
    /// Refused (503) while a peer is known to hold ops of this cell that
    /// this replica lacks (the cell was restored from an old backup): a new
    /// op would reuse a seq the peers already hold, and they would drop it
    /// as a duplicate. The cell takes its own ops back on its next sync.
    pub async fn write(&self, key: Key, value: Option<Value>) -> Result<Entry, ApiError> {
        self.refuse_if_behind_peers().await?;
        self.change(|r| r.originate(key.clone(), value.clone(), now_ms()))
            .await
    }

    /// Refuses (503) a new op of this cell while a peer is known to hold
    /// ops of this cell that this replica lacks (see [`Self::write`]).
    async fn refuse_if_behind_peers(&self) -> Result<(), ApiError> {
        let ours = self.read(|r| r.applied().get(&self.me)).await?;
        match self.sync.ahead_on(&self.me, ours) {
            Some((peer, theirs)) => Err(ApiError::Unavailable(format!(
                "cell {peer} holds {} ops of this cell that it has not applied (restored from an old backup?); it takes them back on its next sync: retry then",
                theirs - ours
            ))),
            None => Ok(()),
        }
    }

    /// Commits a revocation record heard from the mesh, unless the replica
    /// already holds it at the same or a newer version (lifted is newer),
    /// or it has expired. Idempotent by id: nodes of a cell that heard the
    /// same record race safely (the loser's retry finds it held). Returns
    /// whether this call committed it.
    pub async fn adopt_revocation(
        &self,
        id: &str,
        record: sigil_control_plane::model::RevocationRecord,
    ) -> Result<bool, ApiError> {
        let key = Key::Revocation { id: id.to_owned() };
        let now = now_ms();
        if record.expires_ms <= now {
            return Ok(false);
        }
        self.refuse_if_behind_peers().await?;
        self.change(|r| {
            let held = match r.state().get(&key) {
                Some(Value::Revocation(have)) => have.lifted || !record.lifted,
                _ => false,
            };
            if held {
                return Ok(false);
            }
            r.originate(
                key.clone(),
                Some(Value::Revocation(record.clone())),
                now_ms(),
            )
            .map(|_| true)
        })
        .await
    }

    /// Applies ops received from a peer cell.
    pub async fn receive(&self, entries: Vec<Entry>) -> Result<Receipt, ApiError> {
        self.change(|r| r.receive(entries.clone(), now_ms())).await
    }

    /// Merges a peer cell's whole state.
    pub async fn merge_snapshot(&self, snapshot: StateSnapshot) -> Result<(), ApiError> {
        self.change(|r| r.merge_snapshot(snapshot.clone(), now_ms()))
            .await
    }

    /// Drops expired revocation records.
    pub async fn collect_garbage(&self) -> Result<(), ApiError> {
        self.change(|r| {
            r.collect_garbage(now_ms());
            Ok::<_, ReplicaError>(())
        })
        .await
    }

    /// Runs `f` on the replica and commits what it changed in one batch. If
    /// the commit fails, the replica in memory may be ahead of storage: it is
    /// dropped and read again. A commit refused because another node wrote
    /// the same log entry first (this one was a stale leader) is tried once
    /// more on the replica read again.
    async fn change<T>(
        &self,
        f: impl Fn(&mut Replica) -> Result<T, ReplicaError>,
    ) -> Result<T, ApiError> {
        let mut guard = self.replica.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let replica = self.loaded(&mut guard)?;
            replica.take_changes();
            let out = match f(replica) {
                Ok(out) => out,
                Err(e) => {
                    // A refused batch changed nothing; a refused write may
                    // have ticked the clock only.
                    replica.take_changes();
                    return Err(ApiError::InvalidRequest(e.to_string()));
                }
            };
            let changes = replica.take_changes();
            if changes.is_empty() {
                return Ok(out);
            }
            let batch = self.batch(replica, &changes)?;
            match self.barrier.commit(batch).await {
                Ok(()) => {
                    self.changed.send_modify(|v| *v = v.wrapping_add(1));
                    return Ok(out);
                }
                Err(e) => {
                    *guard = None;
                    let raced = matches!(
                        e,
                        crate::barrier::BarrierError::Storage(
                            crate::storage::StorageError::PreconditionFailed { .. }
                        )
                    );
                    if raced && attempt < 2 {
                        continue;
                    }
                    if raced {
                        return Err(ApiError::Conflict(
                            "the control plane changed on another node; retry".into(),
                        ));
                    }
                    return Err(e.into());
                }
            }
        }
    }

    fn loaded<'g>(&self, guard: &'g mut Option<Replica>) -> Result<&'g mut Replica, ApiError> {
        if self.stale.swap(false, Ordering::AcqRel) {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.load()?);
        }
        guard
            .as_mut()
            .ok_or_else(|| ApiError::Internal("control-plane replica not loaded".into()))
    }

    fn load(&self) -> Result<Replica, ApiError> {
        let meta: Meta = match self.barrier.get(META_KEY)? {
            Some(raw) => decode(&raw, META_KEY)?,
            None => Meta::default(),
        };
        let mut state = sigil_control_plane::ControlState::new();
        for name in self.barrier.list(REG_PREFIX)? {
            let path = format!("{REG_PREFIX}{name}");
            let key: Key = hex::decode(&name)
                .ok()
                .and_then(|b| postcard::from_bytes(&b).ok())
                .ok_or_else(|| corrupt(&path))?;
            if let Some(raw) = self.barrier.get(&path)? {
                state.merge_register(key, decode(&raw, &path)?);
            }
        }
        let mut log = Vec::new();
        for name in self.barrier.list(LOG_PREFIX)? {
            let path = format!("{LOG_PREFIX}{name}");
            if let Some(raw) = self.barrier.get(&path)? {
                log.push(decode::<Entry>(&raw, &path)?);
            }
        }
        Ok(Replica::restore(
            self.me.clone(),
            Parts {
                state,
                applied: meta.applied,
                log,
                hlc: meta.hlc,
            },
            self.limits,
        ))
    }

    /// The batch that stores `changes` of `replica`, views included.
    fn batch(
        &self,
        replica: &Replica,
        changes: &Changes,
    ) -> Result<crate::barrier::BarrierBatch, ApiError> {
        let mut batch = self.barrier.batch();
        for key in &changes.keys {
            let path = reg_path(key);
            batch = match replica.state().register(key) {
                Some(reg) => batch.put(&path, &encode(reg)?)?,
                None => batch.delete(&path),
            };
            if let Key::Policy { name } = key {
                let view = format!("{POLICY_VIEW_PREFIX}{name}");
                batch = match replica.state().get(key) {
                    Some(Value::Policy(doc)) => batch.put(&view, doc.text.as_bytes())?,
                    _ => batch.delete(&view),
                };
            }
        }
        for (origin, seq) in &changes.dropped {
            batch = batch.delete(&log_path(origin, *seq));
        }
        for (origin, seq) in &changes.logged {
            // Trimmed again by the same change: nothing to store.
            let Some(entry) = replica.entry(origin, *seq) else {
                continue;
            };
            let path = log_path(origin, *seq);
            batch = batch.put(&path, &encode(entry)?)?.require(&path, false);
        }
        let meta = Meta {
            applied: replica.applied().clone(),
            hlc: replica.hlc(),
        };
        Ok(batch.put(META_KEY, &encode(&meta)?)?)
    }
}

/// Sync reads and writes the replica stored in the barrier. Ops received
/// from peers are applied here only on the leader (the pulling side runs
/// there), each batch one Raft write.
impl Store for ControlPlane {
    async fn read<T: Send>(&self, f: impl FnOnce(&Replica) -> T + Send) -> Result<T, StoreError> {
        ControlPlane::read(self, f).await.map_err(store_error)
    }

    async fn receive(&self, entries: Vec<Entry>) -> Result<Receipt, StoreError> {
        ControlPlane::receive(self, entries)
            .await
            .map_err(store_error)
    }

    async fn merge_snapshot(&self, snapshot: StateSnapshot) -> Result<(), StoreError> {
        ControlPlane::merge_snapshot(self, snapshot)
            .await
            .map_err(store_error)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

fn store_error(e: ApiError) -> StoreError {
    match e {
        ApiError::InvalidRequest(m) => StoreError::Refused(m),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn reg_path(key: &Key) -> String {
    let bytes = postcard::to_stdvec(key).unwrap_or_default();
    format!("{REG_PREFIX}{}", hex::encode(bytes))
}

fn log_path(origin: &CellId, seq: u64) -> String {
    format!("{LOG_PREFIX}{origin}/{seq:020}")
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    postcard::to_stdvec(v).map_err(|e| ApiError::Internal(format!("control-plane encoding: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(raw: &[u8], path: &str) -> Result<T, ApiError> {
    postcard::from_bytes(raw).map_err(|_| corrupt(path))
}

fn corrupt(path: &str) -> ApiError {
    tracing::error!(%path, "stored control-plane entry does not decode");
    ApiError::Internal(format!("stored control-plane entry {path} is corrupt"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sigil_control_plane::model::PolicyDoc;

    use super::*;
    use crate::barrier::BarrierConfig;
    use crate::storage::MemoryStorage;

    fn unsealed_barrier() -> Barrier {
        let barrier = Barrier::new(Arc::new(MemoryStorage::new()), BarrierConfig::default());
        let root = sigil_hsm::SecretBytes::new(vec![7u8; 32]);
        let batch = barrier.initialize(&root).expect("init");
        futures::executor::block_on(barrier.storage().apply(batch)).expect("store keyring");
        barrier.unseal(root).expect("unseal");
        barrier
    }

    fn cell(id: &str) -> CellId {
        CellId::new(id).expect("cell")
    }

    fn policy(name: &str, text: &str) -> (Key, Option<Value>) {
        (
            Key::Policy { name: name.into() },
            Some(Value::Policy(PolicyDoc { text: text.into() })),
        )
    }

    #[tokio::test]
    async fn writes_are_stored_with_their_policy_view_and_survive_a_reload() {
        let barrier = unsealed_barrier();
        let cp = ControlPlane::new(barrier.clone(), cell("eu-west"));
        let (k, v) = policy("payments", "path \"kv/*\" { capabilities = [\"read\"] }");
        let e = cp.write(k.clone(), v).await.expect("write");
        assert_eq!(e.seq, 1);
        let view = barrier
            .get("sys/policy/payments")
            .expect("get")
            .expect("view");
        assert_eq!(&view[..], b"path \"kv/*\" { capabilities = [\"read\"] }");

        // A fresh replica (another node, or after a restart) reads the same.
        let again = ControlPlane::new(barrier.clone(), cell("eu-west"));
        let digest = again.read(|r| r.digest()).await.expect("load");
        assert_eq!(digest, cp.read(|r| r.digest()).await.expect("read"));
        let e2 = again.write(k.clone(), None).await.expect("delete");
        assert_eq!(e2.seq, 2, "seqs continue after a reload");
        assert!(barrier.get("sys/policy/payments").expect("get").is_none());
        assert_eq!(
            again.read(|r| r.log(r.me()).count()).await.expect("read"),
            2
        );
    }

    #[tokio::test]
    async fn a_stale_replica_cannot_write_a_seq_twice_and_recovers() {
        let barrier = unsealed_barrier();
        let a = ControlPlane::new(barrier.clone(), cell("eu-west"));
        let b = ControlPlane::new(barrier.clone(), cell("eu-west"));
        let (k, v) = policy("p", "path \"a\" {}");
        a.read(|_| ()).await.expect("load");
        b.write(k.clone(), v).await.expect("b writes seq 1");

        // `a` still believes seq 1 is free (a deposed leader's view): its
        // batch is refused, and it writes again from what is stored.
        let (k2, v2) = policy("q", "path \"b\" {}");
        let e = a.write(k2, v2).await.expect("written after reloading");
        assert_eq!(e.seq, 2);
        assert_eq!(
            barrier
                .list("sys/control-plane/log/eu-west/")
                .expect("list")
                .len(),
            2
        );
        assert!(barrier.get("sys/policy/p").expect("get").is_some());
        assert!(barrier.get("sys/policy/q").expect("get").is_some());
    }

    #[tokio::test]
    async fn a_cell_behind_its_own_ops_at_a_peer_refuses_writes_until_it_takes_them_back() {
        let barrier = unsealed_barrier();
        let a = ControlPlane::new(barrier, cell("eu-west"));
        let elsewhere = ControlPlane::new(unsealed_barrier(), cell("eu-west"));
        // The ops this cell wrote before the backup it was restored from
        // was taken, as a peer still holds them.
        let (k, v) = policy("p", "path \"a\" {}");
        let lost = elsewhere.write(k.clone(), v.clone()).await.expect("write");
        let peer_digest = elsewhere.read(|r| r.digest()).await.expect("digest");
        a.sync_status().update(&cell("us-east"), |s| {
            s.peer_applied = Some(peer_digest.applied.clone());
        });
        let err = a.write(k.clone(), v.clone()).await.expect_err("refused");
        assert!(matches!(err, ApiError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("us-east"), "{err}");
        assert_eq!(
            a.read(|r| r.applied().get(&cell("eu-west")))
                .await
                .expect("read"),
            0
        );

        // Once its own op is back, it writes after it.
        a.receive(vec![lost]).await.expect("take it back");
        let e = a.write(k, v).await.expect("written");
        assert_eq!(e.seq, 2);
    }

    #[tokio::test]
    async fn ops_from_another_cell_update_the_views_and_bad_ops_change_nothing() {
        let barrier_a = unsealed_barrier();
        let barrier_b = unsealed_barrier();
        let a = ControlPlane::new(barrier_a, cell("eu-west"));
        let b = ControlPlane::new(barrier_b.clone(), cell("us-east"));
        let (k, v) = policy("shared", "path \"x\" {}");
        let e = a.write(k, v).await.expect("write");

        let mut forged = e.clone();
        forged.put.stamped.origin = cell("ap-south");
        let err = b.receive(vec![forged]).await.expect_err("forged");
        assert!(matches!(err, ApiError::InvalidRequest(_)), "{err}");
        assert!(barrier_b.get("sys/policy/shared").expect("get").is_none());
        assert!(
            barrier_b
                .list("sys/control-plane/")
                .expect("list")
                .is_empty()
        );

        let r = b.receive(vec![e.clone()]).await.expect("receive");
        assert_eq!(r.applied, 1);
        let view = barrier_b
            .get("sys/policy/shared")
            .expect("get")
            .expect("view");
        assert_eq!(&view[..], b"path \"x\" {}");
        assert!(
            barrier_b
                .list("sys/control-plane/log/eu-west/")
                .expect("list")
                .len()
                == 1,
            "relayable"
        );
        let again = b.receive(vec![e]).await.expect("replay");
        assert_eq!(again.duplicates, 1);
    }
}
