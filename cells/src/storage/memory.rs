//! In-memory [`Storage`] for tests and simulation (raft-rs `MemStorage`'s role).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use super::{Batch, Entry, Op, Storage, StorageError, WriteFuture};

/// A `BTreeMap` behind a mutex. Not durable, by design.
type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Default)]
pub struct MemoryStorage {
    map: Mutex<Map>,
}

impl MemoryStorage {
    /// Applies `batch` synchronously (see [`Storage::apply`]).
    pub fn apply_now(&self, batch: Batch) -> Result<(), StorageError> {
        let mut map = self.lock()?;
        for (key, condition) in &batch.preconditions {
            if !condition.holds(map.get(key).map(Vec::as_slice)) {
                return Err(StorageError::PreconditionFailed {
                    key: String::from_utf8_lossy(key).into_owned(),
                });
            }
        }
        for op in batch.ops {
            match op {
                Op::Put { key, value } => {
                    map.insert(key, value);
                }
                Op::Delete { key } => {
                    map.remove(&key);
                }
            }
        }
        Ok(())
    }

    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Map>, StorageError> {
        self.map
            .lock()
            .map_err(|_| StorageError::Io("memory storage lock poisoned".into()))
    }

    /// Every stored value, for tests that inspect what reached storage.
    pub fn dump(&self) -> Vec<Entry> {
        self.lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

impl Storage for MemoryStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock()?.get(key).cloned())
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let map = self.lock()?;
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        Ok(map
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, batch: Batch) -> WriteFuture<'_> {
        Box::pin(std::future::ready(self.apply_now(batch)))
    }
}
