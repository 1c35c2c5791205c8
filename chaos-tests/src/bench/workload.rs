//! What a client does in a loop, and on which keys.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// A bench workload. Both use the KV version 2 engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Read the latest version of an existing key.
    KvRead,
    /// Write a new version of a key.
    KvWrite,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::KvRead => "kv-read",
            Workload::KvWrite => "kv-write",
        })
    }
}

/// The keys a bench touches, as paths within the mount. Setup writes every
/// one of them, so reads always find data.
#[derive(Debug, Clone)]
pub struct KeySpace {
    paths: Arc<[String]>,
}

impl KeySpace {
    /// `count` keys under `sigil-chaos/bench/` (count ≥ 1, checked by the
    /// configuration).
    pub fn new(count: usize) -> Self {
        Self {
            paths: (0..count)
                .map(|i| format!("sigil-chaos/bench/{i:06}"))
                .collect(),
        }
    }

    /// The path of key `index` (`index < len()`).
    pub fn path(&self, index: usize) -> &str {
        &self.paths[index]
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Every path, in index order.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }
}

/// Picks the key for each operation of one client task: uniformly at random
/// from a seeded SplitMix64 stream, so the same seed and task index give the
/// same sequence of keys on every run.
#[derive(Debug, Clone)]
pub struct KeyPicker {
    state: u64,
}

impl KeyPicker {
    /// The picker of client task `task` in a run seeded with `seed`.
    pub fn new(seed: u64, task: usize) -> Self {
        // Spread task indices apart so neighbouring tasks do not start on
        // neighbouring states.
        let state = seed
            ^ (task as u64)
                .wrapping_add(1)
                .wrapping_mul(0xA076_1D64_78BD_642F);
        Self { state }
    }

    /// The next 64 pseudo-random bits (SplitMix64, Steele, Lea and Flood,
    /// "Fast splittable pseudorandom number generators", OOPSLA 2014).
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A key index in `0..n` (n ≥ 1), by multiply-shift (Lemire), whose bias
    /// is at most n / 2⁶⁴.
    pub fn next_index(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// The value a write stores: `size` printable ASCII bytes, so its JSON form
/// is exactly `size` bytes between the quotes.
pub fn value(size: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..size)
        .map(|i| char::from(ALPHABET[i % ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_keys() {
        let a: Vec<usize> = {
            let mut p = KeyPicker::new(7, 3);
            (0..100).map(|_| p.next_index(100)).collect()
        };
        let b: Vec<usize> = {
            let mut p = KeyPicker::new(7, 3);
            (0..100).map(|_| p.next_index(100)).collect()
        };
        assert_eq!(a, b);
        let mut other_task = KeyPicker::new(7, 4);
        let c: Vec<usize> = (0..100).map(|_| other_task.next_index(100)).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn indices_stay_in_range_and_cover_it() {
        let mut p = KeyPicker::new(1, 0);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let i = p.next_index(10);
            assert!(i < 10);
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(p.next_index(1), 0);
    }

    #[test]
    fn value_has_the_requested_size() {
        assert_eq!(value(0), "");
        assert_eq!(value(5), "abcde");
        assert_eq!(value(1000).len(), 1000);
    }

    #[test]
    fn key_paths() {
        let k = KeySpace::new(3);
        assert_eq!(k.len(), 3);
        assert_eq!(k.path(2), "sigil-chaos/bench/000002");
    }
}
