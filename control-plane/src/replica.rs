//! One cell's replica: the state, what it has applied from each origin, the
//! op logs it can serve to peers, and its clock.
//!
//! **Delivery.** Each cell numbers the ops it originates 1, 2, 3… A replica
//! applies each origin's ops in that order, once: an op already applied is a
//! duplicate and changes nothing, an op that arrives early waits in a bounded
//! buffer for the ones before it. What it has applied is its version vector
//! (`applied`: origin → last seq), which is what a peer asks with.
//!
//! **Relaying.** A replica keeps every origin's recent ops, not only its own,
//! so a cell that reaches only some of its peers still passes on what the
//! others wrote. When a peer needs ops older than the log keeps (it was down
//! for long, or restarted from an old snapshot), it is sent the whole state
//! instead, which merges into its own ([`Replica::merge_snapshot`]).
//!
//! **Repair.** Replicas exchange digests (version vector and a hash of the
//! state). Equal vectors with different hashes mean something was missed;
//! the two sides then merge each other's whole state.
//!
//! A replica records what each call changed ([`Replica::take_changes`]), so
//! the cell can persist exactly those registers and log entries in one Raft
//! write.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crdts::{CmRDT, Dot, VClock};
use serde::{Deserialize, Serialize};

use crate::hlc::{ClockAhead, Hlc, HlcClock};
use crate::model::{CellId, Key, ModelError, validate_put};
use crate::state::{ControlState, Put};

/// One op of an origin's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub origin: CellId,
    pub seq: u64,
    pub put: Put,
}

/// A replica's whole state, for a peer that cannot catch up from the logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSnapshot {
    pub state: ControlState,
    /// What `state` contains from each origin.
    pub applied: VClock<CellId>,
}

/// What a replica tells a peer to compare with its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub applied: VClock<CellId>,
    pub state: [u8; 32],
}

/// What a replica sends a peer that has applied `peer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Nothing the peer lacks.
    UpToDate,
    /// The ops the peer lacks, in order per origin (possibly only the first
    /// of them: ask again with the new version vector).
    Entries(Vec<Entry>),
    /// The peer needs ops the logs no longer hold: the whole state.
    Snapshot(Box<StateSnapshot>),
}

/// What a batch of received ops did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    pub applied: usize,
    pub duplicates: usize,
    /// Ops that arrived before an earlier op of their origin.
    pub buffered: usize,
    /// Ops dropped because their origin's buffer was full (they are asked for again).
    pub overflowed: usize,
    /// Peers whose clocks ran further ahead than the drift bound.
    pub clock_warnings: Vec<(CellId, ClockAhead)>,
}

/// Why received ops or a received state were refused. Nothing was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error("op {seq} of {origin} is invalid: {error}")]
    Invalid {
        origin: CellId,
        seq: u64,
        error: ModelError,
    },
    #[error("op {seq} of {origin} is malformed: {why}")]
    Malformed {
        origin: CellId,
        seq: u64,
        why: &'static str,
    },
    #[error("the state sent holds an invalid {key}: {error}")]
    InvalidState { key: Key, error: ModelError },
    #[error("{0}")]
    Model(#[from] ModelError),
    #[error("the revocation has already expired")]
    Expired,
}

/// What the last calls changed, for the cell to persist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Registers to write (or delete, if the state no longer holds them).
    pub keys: BTreeSet<Key>,
    /// Log entries added.
    pub logged: Vec<(CellId, u64)>,
    /// Log entries dropped (trimmed, or superseded by a whole state).
    pub dropped: Vec<(CellId, u64)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.logged.is_empty() && self.dropped.is_empty()
    }
}

/// Limits of a replica.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Ops kept per origin for peers to catch up from.
    pub log_per_origin: usize,
    /// Early ops buffered per origin.
    pub pending_per_origin: usize,
    /// How far ahead of our wall clock a peer's timestamps are followed.
    pub max_drift_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            log_per_origin: 10_000,
            pending_per_origin: 10_000,
            max_drift_ms: 60_000,
        }
    }
}

/// An origin's retained ops: seqs `floor..floor + entries.len()`, contiguous.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OriginLog {
    floor: u64,
    entries: VecDeque<Entry>,
}

impl OriginLog {
    fn empty_from(floor: u64) -> Self {
        Self {
            floor,
            entries: VecDeque::new(),
        }
    }
}

/// A replica as stored, for [`Replica::restore`].
#[derive(Clone, Debug)]
pub struct Parts {
    pub state: ControlState,
    pub applied: VClock<CellId>,
    /// Every retained log entry, in any order.
    pub log: Vec<Entry>,
    pub hlc: Hlc,
}

/// One cell's replica.
#[derive(Clone, Debug)]
pub struct Replica {
    me: CellId,
    state: ControlState,
    applied: VClock<CellId>,
    logs: BTreeMap<CellId, OriginLog>,
    pending: BTreeMap<CellId, BTreeMap<u64, Entry>>,
    clock: HlcClock,
    limits: Limits,
    changes: Changes,
}

impl Replica {
    pub fn new(me: CellId, limits: Limits) -> Self {
        Self {
            me,
            state: ControlState::new(),
            applied: VClock::new(),
            logs: BTreeMap::new(),
            pending: BTreeMap::new(),
            clock: HlcClock::new(limits.max_drift_ms),
            limits,
            changes: Changes::default(),
        }
    }

    /// A replica loaded from storage. Log entries that do not form a
    /// contiguous run ending at what was applied are left out (the run is
    /// what peers can be served).
    pub fn restore(me: CellId, parts: Parts, limits: Limits) -> Self {
        let mut by_origin: BTreeMap<CellId, BTreeMap<u64, Entry>> = BTreeMap::new();
        for e in parts.log {
            by_origin
                .entry(e.origin.clone())
                .or_default()
                .insert(e.seq, e);
        }
        let mut logs = BTreeMap::new();
        for (origin, mut entries) in by_origin {
            let top = parts.applied.get(&origin);
            let mut run = VecDeque::new();
            let mut seq = top;
            while seq > 0 {
                match entries.remove(&seq) {
                    Some(e) => run.push_front(e),
                    None => break,
                }
                seq -= 1;
            }
            logs.insert(
                origin,
                OriginLog {
                    floor: seq + 1,
                    entries: run,
                },
            );
        }
        Self {
            me,
            state: parts.state,
            applied: parts.applied,
            logs,
            pending: BTreeMap::new(),
            clock: HlcClock::resume(parts.hlc, limits.max_drift_ms),
            limits,
            changes: Changes::default(),
        }
    }

    pub fn me(&self) -> &CellId {
        &self.me
    }

    pub fn state(&self) -> &ControlState {
        &self.state
    }

    /// What this replica has applied from each origin.
    pub fn applied(&self) -> &VClock<CellId> {
        &self.applied
    }

    /// The greatest timestamp this replica has issued or seen.
    pub fn hlc(&self) -> Hlc {
        self.clock.last()
    }

    /// The retained log entry `seq` of `origin`.
    pub fn entry(&self, origin: &CellId, seq: u64) -> Option<&Entry> {
        let log = self.logs.get(origin)?;
        let i = seq.checked_sub(log.floor)?;
        log.entries.get(usize::try_from(i).ok()?)
    }

    /// The retained log of `origin`, in order.
    pub fn log(&self, origin: &CellId) -> impl Iterator<Item = &Entry> {
        self.logs
            .get(origin)
            .into_iter()
            .flat_map(|l| l.entries.iter())
    }

    /// The first seq retained of each origin's log.
    pub fn floors(&self) -> impl Iterator<Item = (&CellId, u64)> {
        self.logs.iter().map(|(o, l)| (o, l.floor))
    }

    /// Ops waiting for an earlier op of their origin.
    pub fn pending(&self) -> usize {
        self.pending.values().map(BTreeMap::len).sum()
    }

    /// What the calls since the last `take_changes` changed.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Writes `value` (`None` deletes) to `key` as an op of this cell, at
    /// wall-clock time `now_ms`, and returns the op to send to peers.
    pub fn originate(
        &mut self,
        key: Key,
        value: Option<crate::Value>,
        now_ms: u64,
    ) -> Result<Entry, ReplicaError> {
        validate_put(&key, value.as_ref())?;
        if let Some(crate::Value::Revocation(r)) = &value
            && r.expires_ms <= now_ms
        {
            return Err(ReplicaError::Expired);
        }
        let hlc = self.clock.now(now_ms);
        let put = self.state.prepare(key, value, hlc, &self.me);
        let entry = Entry {
            origin: self.me.clone(),
            seq: self.applied.get(&self.me) + 1,
            put,
        };
        self.apply_next(entry.clone(), now_ms);
        Ok(entry)
    }

    /// Takes in ops from a peer: each origin's in order and once. The batch
    /// is checked whole first; if any op is invalid, none is applied.
    pub fn receive(&mut self, entries: Vec<Entry>, now_ms: u64) -> Result<Receipt, ReplicaError> {
        for e in &entries {
            check_entry(e)?;
        }
        let mut receipt = Receipt::default();
        for e in entries {
            if let Err(ahead) = self.clock.observe(e.put.stamped.hlc, now_ms) {
                receipt.clock_warnings.push((e.origin.clone(), ahead));
            }
            let next = self.applied.get(&e.origin) + 1;
            if e.seq < next {
                receipt.duplicates += 1;
            } else if e.seq == next {
                let origin = e.origin.clone();
                self.apply_next(e, now_ms);
                receipt.applied += 1 + self.drain_pending(&origin, now_ms);
            } else {
                let buf = self.pending.entry(e.origin.clone()).or_default();
                if buf.contains_key(&e.seq) {
                    receipt.duplicates += 1;
                } else if buf.len() < self.limits.pending_per_origin {
                    buf.insert(e.seq, e);
                    receipt.buffered += 1;
                } else {
                    receipt.overflowed += 1;
                }
            }
        }
        Ok(receipt)
    }

    /// Merges a peer's whole state into this one. Origins it is ahead on are
    /// then applied up to where it was; their logs here restart after that
    /// point, since the ops in between were never seen one by one.
    pub fn merge_snapshot(
        &mut self,
        snapshot: StateSnapshot,
        now_ms: u64,
    ) -> Result<(), ReplicaError> {
        for (key, reg) in snapshot.state.registers() {
            for s in reg.read().val {
                validate_put(key, s.value.as_ref()).map_err(|error| {
                    ReplicaError::InvalidState {
                        key: key.clone(),
                        error,
                    }
                })?;
            }
        }
        let newest = snapshot
            .state
            .registers()
            .flat_map(|(_, r)| r.read().val.into_iter().map(|s| s.hlc))
            .max();
        if let Some(hlc) = newest {
            // A peer far ahead is not followed; its values are still merged.
            let _ = self.clock.observe(hlc, now_ms);
        }
        for (key, reg) in snapshot.state.into_registers() {
            let before = self.state.register(&key).cloned();
            self.state.merge_register(key.clone(), reg);
            if before.as_ref() != self.state.register(&key) {
                self.changes.keys.insert(key);
            }
        }
        for dot in snapshot.applied.iter() {
            let origin = dot.actor.clone();
            if dot.counter > self.applied.get(&origin) {
                self.applied.apply(Dot::new(origin.clone(), dot.counter));
                let old = self
                    .logs
                    .insert(origin.clone(), OriginLog::empty_from(dot.counter + 1));
                self.changes.dropped.extend(
                    old.into_iter()
                        .flat_map(|l| l.entries)
                        .map(|e| (e.origin, e.seq)),
                );
                self.drain_pending(&origin, now_ms);
            }
        }
        self.collect_garbage(now_ms);
        Ok(())
    }

    /// This replica's whole state.
    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            state: self.state.clone(),
            applied: self.applied.clone(),
        }
    }

    pub fn digest(&self) -> Digest {
        Digest {
            applied: self.applied.clone(),
            state: self.state.digest(),
        }
    }

    /// Whether a peer's digest shows that the two replicas diverged: they
    /// applied the same ops yet hold different states. Both then send their
    /// whole state.
    pub fn diverged_from(&self, peer: &Digest) -> bool {
        peer.applied == self.applied && peer.state != self.state.digest()
    }

    /// What a peer that has applied `peer` lacks: at most `max` ops, or the
    /// whole state if the logs no longer reach back far enough.
    pub fn answer(&self, peer: &VClock<CellId>, max: usize) -> Answer {
        let mut out = Vec::new();
        for dot in self.applied.iter() {
            let theirs = peer.get(dot.actor);
            if theirs >= dot.counter {
                continue;
            }
            let from = theirs + 1;
            match self.logs.get(dot.actor) {
                Some(log) if log.floor <= from => {
                    let skip = usize::try_from(from - log.floor).unwrap_or(usize::MAX);
                    let room = max.saturating_sub(out.len());
                    out.extend(log.entries.iter().skip(skip).take(room).cloned());
                }
                _ => return Answer::Snapshot(Box::new(self.snapshot())),
            }
            if out.len() >= max {
                break;
            }
        }
        if out.is_empty() {
            Answer::UpToDate
        } else {
            Answer::Entries(out)
        }
    }

    /// Drops expired revocation records.
    pub fn collect_garbage(&mut self, now_ms: u64) {
        let gone = self.state.collect_garbage(now_ms);
        self.changes.keys.extend(gone);
    }

    /// Applies the op that follows what was applied of its origin.
    fn apply_next(&mut self, e: Entry, now_ms: u64) {
        debug_assert_eq!(e.seq, self.applied.get(&e.origin) + 1);
        self.applied.apply(Dot::new(e.origin.clone(), e.seq));
        self.changes.keys.insert(e.put.key.clone());
        self.changes.logged.push((e.origin.clone(), e.seq));
        self.state.apply(e.put.clone(), now_ms);
        let log = self
            .logs
            .entry(e.origin.clone())
            .or_insert_with(|| OriginLog::empty_from(e.seq));
        log.entries.push_back(e);
        while log.entries.len() > self.limits.log_per_origin {
            if let Some(old) = log.entries.pop_front() {
                log.floor = old.seq + 1;
                self.changes.dropped.push((old.origin, old.seq));
            }
        }
    }

    /// Applies buffered ops of `origin` that are now next; returns how many.
    fn drain_pending(&mut self, origin: &CellId, now_ms: u64) -> usize {
        let mut n = 0;
        loop {
            let next = self.applied.get(origin) + 1;
            let Some(buf) = self.pending.get_mut(origin) else {
                break;
            };
            // Buffered ops that a snapshot already covered.
            while buf.first_key_value().is_some_and(|(s, _)| *s < next) {
                buf.pop_first();
            }
            match buf.remove(&next) {
                Some(e) => {
                    self.apply_next(e, now_ms);
                    n += 1;
                }
                None => break,
            }
        }
        if self.pending.get(origin).is_some_and(BTreeMap::is_empty) {
            self.pending.remove(origin);
        }
        n
    }
}

/// Checks an op received from a peer before anything of its batch is applied.
fn check_entry(e: &Entry) -> Result<(), ReplicaError> {
    let malformed = |why| ReplicaError::Malformed {
        origin: e.origin.clone(),
        seq: e.seq,
        why,
    };
    if e.seq == 0 {
        return Err(malformed("seqs start at 1"));
    }
    if e.put.stamped.origin != e.origin {
        return Err(malformed("its value names another origin"));
    }
    if e.put.clock.get(&e.origin) == 0 {
        return Err(malformed("its clock has no dot of its origin"));
    }
    validate_put(&e.put.key, e.put.stamped.value.as_ref()).map_err(|error| ReplicaError::Invalid {
        origin: e.origin.clone(),
        seq: e.seq,
        error,
    })
}
