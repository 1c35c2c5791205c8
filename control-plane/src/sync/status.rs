//! What a node knows of its sync with each peer cell, for
//! `sys/control-plane/status` and the benchmarks.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crdts::VClock;

use crate::model::CellId;

/// One peer cell, as this node's pull from it sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// The address of the stream now open, if one is.
    pub connected: Option<String>,
    /// When the stream last delivered something (ms since the epoch).
    pub last_sync_ms: Option<u64>,
    /// The peer's version vector, from its last digest.
    pub peer_applied: Option<VClock<CellId>>,
    /// Why the last stream ended or could not open.
    pub last_error: Option<String>,
    pub entries_received: u64,
    pub states_received: u64,
    /// Payload bytes received (encoded ops and states).
    pub bytes_received: u64,
}

/// Every peer's status, and this node's counters as a serving side.
#[derive(Debug, Default)]
pub struct SyncStatus {
    peers: Mutex<BTreeMap<CellId, PeerStatus>>,
    /// Ops sent to pulling peers.
    pub entries_sent: AtomicU64,
    /// Whole states sent to pulling peers.
    pub states_sent: AtomicU64,
    /// Payload bytes sent (ops, states and digests).
    pub bytes_sent: AtomicU64,
}

impl SyncStatus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes one peer's status.
    pub fn update(&self, peer: &CellId, f: impl FnOnce(&mut PeerStatus)) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        f(peers.entry(peer.clone()).or_default());
    }

    /// Every peer's status.
    pub fn peers(&self) -> BTreeMap<CellId, PeerStatus> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A peer whose last digest shows more ops of `origin` than `ours`,
    /// and how many it has.
    pub fn ahead_on(&self, origin: &CellId, ours: u64) -> Option<(CellId, u64)> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.iter().find_map(|(cell, s)| {
            let theirs = s.peer_applied.as_ref()?.get(origin);
            (theirs > ours).then(|| (cell.clone(), theirs))
        })
    }

    pub(crate) fn sent(&self, entries: u64, states: u64, bytes: u64) {
        self.entries_sent.fetch_add(entries, Ordering::Relaxed);
        self.states_sent.fetch_add(states, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// How far `ours` is behind `theirs`: per origin, the ops they applied that
/// we have not. Origins we are level with or ahead on are left out.
pub fn lag(ours: &VClock<CellId>, theirs: &VClock<CellId>) -> BTreeMap<CellId, u64> {
    theirs
        .iter()
        .filter_map(|d| {
            let behind = d.counter.saturating_sub(ours.get(d.actor));
            (behind > 0).then(|| (d.actor.clone(), behind))
        })
        .collect()
}
