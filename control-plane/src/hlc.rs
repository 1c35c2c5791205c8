//! Hybrid logical clocks (Kulkarni et al., 2014).
//!
//! A timestamp is the wall clock in milliseconds plus a counter. It never goes
//! backwards on one replica, it stays close to real time, and it orders an
//! event after every event its replica has heard of, even when a peer's wall
//! clock runs ahead of ours. Control-plane values carry one, and concurrent
//! writes are ranked by it (`crate::state`).

use serde::{Deserialize, Serialize};

/// A hybrid logical clock timestamp. Ordered by wall clock, then counter.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch.
    pub wall_ms: u64,
    /// Orders events within one millisecond of `wall_ms`.
    pub logical: u32,
}

impl Hlc {
    pub const fn new(wall_ms: u64, logical: u32) -> Self {
        Self { wall_ms, logical }
    }

    /// The next timestamp after this one.
    fn successor(self) -> Self {
        match self.logical.checked_add(1) {
            Some(logical) => Self::new(self.wall_ms, logical),
            None => Self::new(self.wall_ms.saturating_add(1), 0),
        }
    }
}

impl std::fmt::Display for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

/// A remote timestamp further ahead of our wall clock than the clock accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a peer's clock is {ahead_ms} ms ahead of ours (at most {max_drift_ms} ms is followed)")]
pub struct ClockAhead {
    pub ahead_ms: u64,
    pub max_drift_ms: u64,
}

/// One replica's clock. The wall clock is passed in, so the clock itself is
/// pure and tests and simulations choose the time.
#[derive(Clone, Debug)]
pub struct HlcClock {
    last: Hlc,
    max_drift_ms: u64,
}

impl HlcClock {
    /// A clock that follows a peer's timestamps up to `max_drift_ms` ahead of
    /// its own wall clock. Further than that, the peer's clock is wrong, and
    /// following it would drag every later timestamp here into the future.
    pub fn new(max_drift_ms: u64) -> Self {
        Self {
            last: Hlc::default(),
            max_drift_ms,
        }
    }

    /// A clock resumed after a restart: never issues `last` or anything before it.
    pub fn resume(last: Hlc, max_drift_ms: u64) -> Self {
        Self { last, max_drift_ms }
    }

    /// A timestamp for a local event at wall-clock time `physical_ms`: greater
    /// than every timestamp this clock issued or observed.
    pub fn now(&mut self, physical_ms: u64) -> Hlc {
        self.last = if physical_ms > self.last.wall_ms {
            Hlc::new(physical_ms, 0)
        } else {
            self.last.successor()
        };
        self.last
    }

    /// Takes in a timestamp received from a peer, so that later local events
    /// are ordered after it. A timestamp beyond the drift bound is not
    /// followed (the error says by how much it is ahead); the caller still
    /// keeps the data it came with.
    pub fn observe(&mut self, remote: Hlc, physical_ms: u64) -> Result<(), ClockAhead> {
        let bound = physical_ms.saturating_add(self.max_drift_ms);
        if remote.wall_ms > bound {
            return Err(ClockAhead {
                ahead_ms: remote.wall_ms - physical_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        self.last = self.last.max(remote);
        Ok(())
    }

    /// The greatest timestamp issued or observed so far.
    pub fn last(&self) -> Hlc {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_increase_even_when_the_wall_clock_stalls_or_steps_back() {
        let mut c = HlcClock::new(1_000);
        let a = c.now(100);
        let b = c.now(100);
        let d = c.now(90);
        let e = c.now(101);
        assert!(a < b && b < d && d < e, "{a} {b} {d} {e}");
        assert_eq!(a, Hlc::new(100, 0));
        assert_eq!(d, Hlc::new(100, 2));
        assert_eq!(e, Hlc::new(101, 0));
    }

    #[test]
    fn a_peer_slightly_ahead_is_followed_and_one_far_ahead_is_not() {
        let mut c = HlcClock::new(1_000);
        c.observe(Hlc::new(1_500, 7), 1_000).expect("within drift");
        assert_eq!(c.now(1_000), Hlc::new(1_500, 8));

        let err = c.observe(Hlc::new(60_000, 0), 1_000).expect_err("too far");
        assert_eq!(err.ahead_ms, 59_000);
        assert_eq!(c.now(1_000), Hlc::new(1_500, 9), "not followed");
    }

    #[test]
    fn the_counter_overflowing_moves_to_the_next_millisecond() {
        let mut c = HlcClock::resume(Hlc::new(5, u32::MAX), 0);
        assert_eq!(c.now(5), Hlc::new(6, 0));
    }
}
