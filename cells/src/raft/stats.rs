//! A node's Raft figures for `sys/metrics`, named after etcd's where etcd
//! has one (`sigil_raft_log_sync_duration_seconds` is etcd's
//! `etcd_disk_wal_fsync_duration_seconds`).
//!
//! Recording is an atomic add, or one short lock for a histogram, per
//! proposal or per log sync: hundreds a second, not one per request.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::Histogram;

/// Counters and histograms the Raft code records into.
#[derive(Debug, Default)]
pub struct RaftStats {
    proposals: AtomicU64,
    proposed_commands: AtomicU64,
    failed_proposals: AtomicU64,
    commit: Mutex<Histogram>,
    log_syncs: AtomicU64,
    log_synced_appends: AtomicU64,
    log_sync: Mutex<Histogram>,
}

/// Point-in-time Raft figures, as `sys/metrics` renders them.
#[derive(Debug, Clone, Default)]
pub struct RaftFigures {
    /// 1 on the leader, else 0.
    pub is_leader: bool,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Index of the latest snapshot, 0 before any.
    pub snapshot_index: u64,
    /// Proposals this node made as leader (one log entry each).
    pub proposals: u64,
    /// Commands (client writes) those proposals carried.
    pub proposed_commands: u64,
    /// Proposals that ended in an error (lost leadership, shutdown).
    pub failed_proposals: u64,
    /// From proposal to the applied result, per proposal.
    pub commit: Histogram,
    /// Log syncs (fsyncs of the log's WAL), and the appends they covered.
    pub log_syncs: u64,
    pub log_synced_appends: u64,
    pub log_sync: Histogram,
    /// The state read cache: lookups answered from memory, lookups that went
    /// to RocksDB, and what it holds.
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_entries: u64,
    pub cache_bytes: u64,
}

impl RaftStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// A proposal of `commands` commands ended after `elapsed`.
    pub fn proposal(&self, commands: usize, elapsed: Duration, ok: bool) {
        self.proposals.fetch_add(1, Ordering::Relaxed);
        self.proposed_commands
            .fetch_add(commands as u64, Ordering::Relaxed);
        if ok {
            lock(&self.commit).observe(elapsed.as_secs_f64());
        } else {
            self.failed_proposals.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One sync of the log made `appends` appends durable in `elapsed`.
    pub fn log_sync(&self, appends: usize, elapsed: Duration) {
        self.log_syncs.fetch_add(1, Ordering::Relaxed);
        self.log_synced_appends
            .fetch_add(appends as u64, Ordering::Relaxed);
        lock(&self.log_sync).observe(elapsed.as_secs_f64());
    }

    /// The counters and histograms; the caller fills in the Raft state.
    pub fn figures(&self) -> RaftFigures {
        RaftFigures {
            proposals: self.proposals.load(Ordering::Relaxed),
            proposed_commands: self.proposed_commands.load(Ordering::Relaxed),
            failed_proposals: self.failed_proposals.load(Ordering::Relaxed),
            commit: lock(&self.commit).clone(),
            log_syncs: self.log_syncs.load(Ordering::Relaxed),
            log_synced_appends: self.log_synced_appends.load(Ordering::Relaxed),
            log_sync: lock(&self.log_sync).clone(),
            ..RaftFigures::default()
        }
    }
}

fn lock(h: &Mutex<Histogram>) -> std::sync::MutexGuard<'_, Histogram> {
    h.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_and_syncs_are_counted() {
        let s = RaftStats::new();
        s.proposal(7, Duration::from_millis(3), true);
        s.proposal(1, Duration::from_millis(40), true);
        s.proposal(2, Duration::from_millis(1), false);
        s.log_sync(3, Duration::from_micros(1500));
        let f = s.figures();
        assert_eq!(
            (f.proposals, f.proposed_commands, f.failed_proposals),
            (3, 10, 1)
        );
        assert_eq!(f.commit.count(), 2);
        assert_eq!((f.log_syncs, f.log_synced_appends), (1, 3));
        assert!((f.log_sync.sum() - 0.0015).abs() < 1e-9);
    }
}
