//! A bounded cache of the state machine's entries, in front of RocksDB.
//!
//! Every request reads a few entries before it does anything else: the
//! token, the KV metadata, the mount's config. Each is a RocksDB point lookup
//! (a memtable skiplist search, then the SST files), and under load those
//! lookups are a large part of a node's time. Vault keeps an LRU of physical
//! entries in front of its storage for the same reason (`cache_size`).
//!
//! What is cached is exactly what the state database holds: barrier
//! ciphertext (and the seal's wrapped keys), never plaintext. Absent keys are
//! cached too, since a write first checks whether its key exists.
//!
//! # Coherence
//!
//! The state machine is the only writer of the state database, and it writes
//! a whole apply batch with one RocksDB write. The rules that keep the cache
//! equal to the database:
//!
//! - A miss reads the database **while holding the key's shard lock** and
//!   inserts what it read before releasing it.
//! - The apply path writes RocksDB first, then stores each key's new value
//!   (or its absence) in the cache, taking the shard lock per key.
//!
//! A reader that read the old value did so before the writer took the shard
//! lock, so the writer's store comes after it and wins; a reader that comes
//! after the RocksDB write reads the new value. A snapshot install or restore
//! swaps the database, then [`ReadCache::clear`]s every shard; a miss takes
//! its database handle inside the shard lock, so it cannot insert a value from
//! the old database after its shard was cleared.
//!
//! Eviction is CLOCK (second chance) per shard, bounded by bytes: keys and
//! values plus a fixed per-entry overhead.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shards, each with its own lock, so concurrent requests rarely contend.
const SHARDS: usize = 32;

/// What an entry costs beyond its key and value bytes (map slot, queue slot,
/// allocation headers), roughly.
const ENTRY_OVERHEAD: usize = 96;

/// The default bound on the cache, in bytes.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

struct Slot {
    /// `None`: the key is known to be absent.
    value: Option<Box<[u8]>>,
    referenced: bool,
}

impl Slot {
    fn cost(key: &[u8], value: Option<&[u8]>) -> usize {
        key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Slot>,
    /// Every key of `map` exactly once, oldest first: the CLOCK's hand
    /// visits from the front.
    order: VecDeque<Box<[u8]>>,
    bytes: usize,
}

impl Shard {
    fn store(&mut self, key: &[u8], value: Option<&[u8]>, budget: usize) {
        let cost = Slot::cost(key, value);
        if cost > budget / 4 {
            // Too large to be worth a quarter of the shard: drop any older
            // copy so the shard never serves a stale one.
            self.remove(key);
            return;
        }
        match self.map.get_mut(key) {
            Some(slot) => {
                let old = Slot::cost(key, slot.value.as_deref());
                slot.value = value.map(Box::from);
                self.bytes = self.bytes - old + cost;
            }
            None => {
                let key: Box<[u8]> = Box::from(key);
                self.map.insert(
                    key.clone(),
                    Slot {
                        value: value.map(Box::from),
                        referenced: false,
                    },
                );
                self.order.push_back(key);
                self.bytes += cost;
            }
        }
        self.evict(budget);
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(slot) = self.map.remove(key) {
            self.bytes -= Slot::cost(key, slot.value.as_deref());
            if let Some(pos) = self.order.iter().position(|k| &**k == key) {
                self.order.remove(pos);
            }
        }
    }

    fn evict(&mut self, budget: usize) {
        while self.bytes > budget {
            let Some(key) = self.order.pop_front() else {
                self.bytes = 0;
                return;
            };
            match self.map.get_mut(&key) {
                Some(slot) if slot.referenced => {
                    slot.referenced = false;
                    self.order.push_back(key);
                }
                Some(_) => {
                    if let Some(slot) = self.map.remove(&key) {
                        self.bytes -= Slot::cost(&key, slot.value.as_deref());
                    }
                }
                None => {}
            }
        }
    }
}

/// Hits, misses and what the cache holds, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// The cache. A budget of zero disables it: every read goes to RocksDB.
pub struct ReadCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    shard_budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No shard locks here: formatting must never wait on, or deadlock
        // with, a lookup in progress.
        f.debug_struct("ReadCache")
            .field("shard_budget", &self.shard_budget)
            .field("hits", &self.hits.load(Ordering::Relaxed))
            .field("misses", &self.misses.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ReadCache {
    /// A cache holding at most about `budget_bytes`.
    pub fn new(budget_bytes: u64) -> Self {
        let budget = usize::try_from(budget_bytes).unwrap_or(usize::MAX);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            shard_budget: budget / SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.shard_budget > 0
    }

    fn shard(&self, key: &[u8]) -> std::sync::MutexGuard<'_, Shard> {
        // The hash picks the shard; the seed is per process, so clients
        // cannot aim their keys at one shard.
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key`: from the cache, or from `load` (run under the
    /// shard's lock, see the module docs) and then cached.
    pub fn get_or_load<E>(
        &self,
        key: &[u8],
        load: impl FnOnce() -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Option<Vec<u8>>, E> {
        if !self.is_enabled() {
            return load();
        }
        let mut shard = self.shard(key);
        if let Some(slot) = shard.map.get_mut(key) {
            slot.referenced = true;
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(slot.value.as_deref().map(<[u8]>::to_vec));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let value = load()?;
        shard.store(key, value.as_deref(), self.shard_budget);
        Ok(value)
    }

    /// Records what the database now holds for `key`, after the write that
    /// put it there (see the module docs).
    pub fn store(&self, key: &[u8], value: Option<&[u8]>) {
        if self.is_enabled() {
            self.shard(key).store(key, value, self.shard_budget);
        }
    }

    /// Forgets everything (the database under it was replaced).
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
            *s = Shard::default();
        }
    }

    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            ..CacheStats::default()
        };
        for shard in self.shards.iter() {
            let s = shard.lock().unwrap_or_else(|p| p.into_inner());
            stats.entries += s.map.len() as u64;
            stats.bytes += s.bytes as u64;
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_from(db: &HashMap<Vec<u8>, Vec<u8>>, key: &[u8]) -> Result<Option<Vec<u8>>, ()> {
        Ok(db.get(key).cloned())
    }

    #[test]
    fn hits_after_the_first_read_and_absent_keys_are_cached() {
        let cache = ReadCache::new(1 << 20);
        let db: HashMap<Vec<u8>, Vec<u8>> = [(b"a".to_vec(), b"1".to_vec())].into();
        let mut loads = 0;
        for _ in 0..3 {
            let v = cache.get_or_load(b"a", || {
                loads += 1;
                load_from(&db, b"a")
            });
            assert_eq!(v, Ok(Some(b"1".to_vec())));
        }
        for _ in 0..2 {
            let v = cache.get_or_load(b"missing", || {
                loads += 1;
                load_from(&db, b"missing")
            });
            assert_eq!(v, Ok(None));
        }
        assert_eq!(loads, 2);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.entries), (3, 2, 2));
    }

    #[test]
    fn a_store_replaces_what_a_read_cached() {
        let cache = ReadCache::new(1 << 20);
        let _ = cache.get_or_load(b"k", || Ok::<_, ()>(Some(b"old".to_vec())));
        cache.store(b"k", Some(b"new"));
        let v = cache.get_or_load(b"k", || -> Result<_, ()> { panic!("must hit") });
        assert_eq!(v, Ok(Some(b"new".to_vec())));
        cache.store(b"k", None);
        let v = cache.get_or_load(b"k", || -> Result<_, ()> { panic!("must hit") });
        assert_eq!(v, Ok(None));
    }

    #[test]
    fn a_load_error_caches_nothing() {
        let cache = ReadCache::new(1 << 20);
        assert_eq!(
            cache.get_or_load(b"k", || Err::<Option<Vec<u8>>, _>("io")),
            Err("io")
        );
        let v = cache.get_or_load(b"k", || Ok::<_, ()>(Some(b"v".to_vec())));
        assert_eq!(v, Ok(Some(b"v".to_vec())));
        assert_eq!(cache.stats().misses, 2);
    }

    #[test]
    fn clear_forgets_every_entry() {
        let cache = ReadCache::new(1 << 20);
        for i in 0..100u32 {
            cache.store(&i.to_be_bytes(), Some(b"v"));
        }
        assert_eq!(cache.stats().entries, 100);
        cache.clear();
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(cache.stats().bytes, 0);
        let v = cache.get_or_load(&7u32.to_be_bytes(), || Ok::<_, ()>(None));
        assert_eq!(v, Ok(None));
    }

    #[test]
    fn stays_within_its_budget_and_keeps_what_is_read_again() {
        let budget = 64 * 1024;
        let cache = ReadCache::new(budget);
        let value = vec![7u8; 200];
        // A hot key, read between every cold insert.
        let hot = b"hot-key".to_vec();
        cache.store(&hot, Some(&value));
        let mut hot_loads = 0;
        for i in 0..10_000u32 {
            cache.store(format!("cold/{i}").as_bytes(), Some(&value));
            let _ = cache.get_or_load(&hot, || {
                hot_loads += 1;
                Ok::<_, ()>(Some(value.clone()))
            });
        }
        let s = cache.stats();
        assert!(s.bytes <= budget, "{} bytes held, budget {budget}", s.bytes);
        assert!(s.entries < 10_000, "nothing was evicted: {s:?}");
        assert!(
            hot_loads <= 1,
            "the hot key was evicted {hot_loads} times despite being read"
        );
    }

    #[test]
    fn values_too_large_for_a_shard_are_not_cached_and_drop_older_copies() {
        let cache = ReadCache::new(SHARDS as u64 * 4096);
        cache.store(b"k", Some(b"small"));
        cache.store(b"k", Some(&vec![0u8; 8192]));
        let mut loads = 0;
        let v = cache.get_or_load(b"k", || {
            loads += 1;
            Ok::<_, ()>(Some(vec![1u8; 8192]))
        });
        assert_eq!(v, Ok(Some(vec![1u8; 8192])));
        assert_eq!(loads, 1, "a stale small copy must not be served");
    }

    /// The race the module docs rule out, forced: a miss has read the old
    /// value from the database when the writer writes the new one and
    /// stores it. The writer's store must wait for the miss to finish, so
    /// the cache ends with the new value, not the one the miss read.
    #[test]
    fn a_store_during_a_slow_miss_is_not_overwritten_by_the_miss() {
        use std::sync::{Arc, RwLock, mpsc};
        use std::time::Duration;
        let cache = Arc::new(ReadCache::new(1 << 20));
        let db = Arc::new(RwLock::new(b"old".to_vec()));
        let (loaded_tx, loaded_rx) = mpsc::channel();
        let reader = {
            let (cache, db) = (cache.clone(), db.clone());
            std::thread::spawn(move || {
                cache.get_or_load(b"k", || {
                    let v = db.read().expect("db").clone();
                    loaded_tx.send(()).expect("send");
                    // A slow read: the writer goes ahead meanwhile.
                    std::thread::sleep(Duration::from_millis(200));
                    Ok::<_, ()>(Some(v))
                })
            })
        };
        loaded_rx.recv().expect("the miss read the database");
        *db.write().expect("db") = b"new".to_vec();
        cache.store(b"k", Some(b"new"));
        assert_eq!(
            reader.join().expect("reader"),
            Ok(Some(b"old".to_vec())),
            "the miss returns what it read"
        );
        let cached = cache.get_or_load(b"k", || -> Result<_, ()> { panic!("must hit") });
        assert_eq!(cached, Ok(Some(b"new".to_vec())), "the store came last");
    }

    #[test]
    fn a_zero_budget_disables_the_cache() {
        let cache = ReadCache::new(0);
        assert!(!cache.is_enabled());
        let mut loads = 0;
        for _ in 0..3 {
            let _ = cache.get_or_load(b"k", || {
                loads += 1;
                Ok::<_, ()>(Some(b"v".to_vec()))
            });
        }
        cache.store(b"k", Some(b"v"));
        assert_eq!(loads, 3);
        assert_eq!(cache.stats(), CacheStats::default());
    }
}
