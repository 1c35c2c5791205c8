//! Where a replica lives while it syncs: the cell's Raft state in
//! production (`sigil_cell::control_plane::ControlPlane`), memory in tests
//! and simulations ([`MemoryStore`]).

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::watch;

use super::now_ms;
use crate::replica::{Receipt, Replica, ReplicaError, StateSnapshot};
use crate::{Entry, Key, Value};

/// Why a store call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The input was refused and nothing changed: the peer sent invalid
    /// ops or an invalid state.
    #[error("refused: {0}")]
    Refused(String),
    /// The store cannot serve now (sealed, not the leader, storage failed);
    /// worth retrying later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<ReplicaError> for StoreError {
    fn from(e: ReplicaError) -> Self {
        Self::Refused(e.to_string())
    }
}

/// A replica that sync reads and writes.
pub trait Store: Send + Sync + 'static {
    /// Reads the replica with `f`.
    fn read<T: Send>(
        &self,
        f: impl FnOnce(&Replica) -> T + Send,
    ) -> impl Future<Output = Result<T, StoreError>> + Send;

    /// Applies ops received from a peer, durably, before returning.
    fn receive(
        &self,
        entries: Vec<Entry>,
    ) -> impl Future<Output = Result<Receipt, StoreError>> + Send;

    /// Merges a peer's whole state, durably, before returning.
    fn merge_snapshot(
        &self,
        snapshot: StateSnapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ticks whenever the replica may have changed.
    fn changes(&self) -> watch::Receiver<u64>;
}

/// A replica in memory, with the wall clock passed in or read from the
/// system.
#[derive(Debug)]
pub struct MemoryStore {
    replica: Mutex<Replica>,
    changed: watch::Sender<u64>,
}

impl MemoryStore {
    pub fn new(replica: Replica) -> Self {
        Self {
            replica: Mutex::new(replica),
            changed: watch::Sender::new(0),
        }
    }

    /// Writes `value` to `key` as an op of this replica's cell.
    pub fn write(&self, key: Key, value: Option<Value>) -> Result<Entry, StoreError> {
        let e = self.lock().originate(key, value, now_ms())?;
        self.changed.send_modify(|v| *v += 1);
        Ok(e)
    }

    /// A copy of the replica.
    pub fn replica(&self) -> Replica {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Replica> {
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemoryStore {
    async fn read<T: Send>(&self, f: impl FnOnce(&Replica) -> T + Send) -> Result<T, StoreError> {
        Ok(f(&self.lock()))
    }

    async fn receive(&self, entries: Vec<Entry>) -> Result<Receipt, StoreError> {
        let receipt = self.lock().receive(entries, now_ms())?;
        if receipt.applied > 0 {
            self.changed.send_modify(|v| *v += 1);
        }
        Ok(receipt)
    }

    async fn merge_snapshot(&self, snapshot: StateSnapshot) -> Result<(), StoreError> {
        self.lock().merge_snapshot(snapshot, now_ms())?;
        self.changed.send_modify(|v| *v += 1);
        Ok(())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
