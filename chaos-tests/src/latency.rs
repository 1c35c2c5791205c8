//! Exact latency percentiles.
//!
//! A bench level records every operation's latency, then sorts once at the
//! end. At the rates one machine reaches (well under a million operations per
//! level) that is a few megabytes and one sort, and the figures are exact
//! rather than bucketed, so no histogram dependency is needed.

use std::time::Duration;

/// The latencies of one or more client tasks, in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    nanos: Vec<u64>,
}

impl Latencies {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one operation's latency.
    pub fn record(&mut self, latency: Duration) {
        // u64 nanoseconds cover 584 years.
        self.nanos
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Moves every latency in `other` into `self` (one per client task).
    pub fn merge(&mut self, mut other: Latencies) {
        self.nanos.append(&mut other.nanos);
    }

    /// How many latencies were recorded.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// Sorts what was recorded and reads the percentiles off it.
    pub fn summarize(mut self) -> Summary {
        self.nanos.sort_unstable();
        let at = |p| Duration::from_nanos(percentile(&self.nanos, p).unwrap_or(0));
        Summary {
            count: self.nanos.len() as u64,
            p50: at(50.0),
            p99: at(99.0),
            max: Duration::from_nanos(self.nanos.last().copied().unwrap_or(0)),
        }
    }
}

/// The figures a bench row reports; all zero when nothing was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// The `p`-th percentile (0 < p ≤ 100) of ascending `sorted` values by the
/// nearest-rank method: the smallest value such that at least `p` percent of
/// the values are less than or equal to it, i.e. the value at 1-based rank
/// ⌈p/100 · n⌉. It is always a value that was recorded, never an
/// interpolation. `None` for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // Rank in 1..=n; the float product is exact for the n and p a bench uses,
    // and the clamp keeps p outside (0, 100] from indexing out of bounds.
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    let rank = rank.clamp(1, n);
    Some(sorted[rank - 1])
}

/// The `p`-th percentile of `durations` (nearest rank, as [`percentile`]),
/// in milliseconds; NaN when there are none.
pub fn percentile_ms(durations: &[Duration], p: f64) -> f64 {
    let mut nanos: Vec<u64> = durations
        .iter()
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .collect();
    nanos.sort_unstable();
    percentile(&nanos, p).map_or(f64::NAN, |n| n as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_one_to_a_hundred() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 1.0), Some(1));
    }

    #[test]
    fn nearest_rank_on_ten_values() {
        let v: Vec<u64> = (1..=10).map(|x| x * 10).collect();
        // rank ⌈0.5 · 10⌉ = 5, rank ⌈0.99 · 10⌉ = 10
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(100));
        // rank ⌈0.25 · 10⌉ = 3
        assert_eq!(percentile(&v, 25.0), Some(30));
    }

    #[test]
    fn small_and_empty_inputs() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[1, 2], 51.0), Some(2));
        // Out-of-range p is clamped to the first or last value.
        assert_eq!(percentile(&[1, 2, 3], 0.0), Some(1));
        assert_eq!(percentile(&[1, 2, 3], 250.0), Some(3));
    }

    #[test]
    fn summary_sorts_merged_tasks() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        // 1..=1000 µs spread over two tasks in scrambled order.
        for i in (1..=1000u64).rev() {
            let d = Duration::from_micros(i);
            if i % 3 == 0 { a.record(d) } else { b.record(d) }
        }
        a.merge(b);
        assert_eq!(a.len(), 1000);
        let s = a.summarize();
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50, Duration::from_micros(500));
        assert_eq!(s.p99, Duration::from_micros(990));
        assert_eq!(s.max, Duration::from_micros(1000));
    }

    #[test]
    fn empty_summary_is_zero() {
        let s = Latencies::new().summarize();
        assert_eq!(s.count, 0);
        assert_eq!(s.p50, Duration::ZERO);
        assert_eq!(s.max, Duration::ZERO);
    }
}
