//! Ordered key-value storage under the barrier.
//!
//! Everything a node persists goes through [`Storage`]: a flat, ordered byte
//! keyspace with atomic batches and optional preconditions. The barrier sits on
//! top, so implementations only ever see ciphertext (plus the non-secret seal
//! configuration). Two implementations pass the same [`conformance`] suite:
//! [`RocksStorage`] for real nodes and [`MemoryStorage`] for tests and
//! simulation.
//!
//! Reads are synchronous, like raft-rs's `Storage`: they are served from the
//! node's local copy, and RocksDB reads are short. Writes return a future:
//! on a replicated node a write is a Raft proposal that resolves once the
//! batch is committed and applied locally ([`crate::raft`]); local stores
//! resolve at once. Local stores also offer a synchronous `apply_now`.

pub mod conformance;
mod memory;
pub(crate) mod rocks;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use memory::MemoryStorage;
pub use rocks::RocksStorage;

/// One write in a [`Batch`].
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

impl fmt::Debug for Op {
    // Values are ciphertext, but there is no reason to print them either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { key, value } => f
                .debug_struct("Put")
                .field("key", &String::from_utf8_lossy(key))
                .field("value_len", &value.len())
                .finish(),
            Op::Delete { key } => f
                .debug_struct("Delete")
                .field("key", &String::from_utf8_lossy(key))
                .finish(),
        }
    }
}

/// A condition on the current value of a key, checked atomically with the batch.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Precondition {
    /// The key must not exist.
    Absent,
    /// The key must exist, with any value.
    Present,
    /// The key must hold exactly this value.
    Equals(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl fmt::Debug for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precondition::Absent => f.write_str("Absent"),
            Precondition::Present => f.write_str("Present"),
            Precondition::Equals(v) => write!(f, "Equals({} bytes)", v.len()),
        }
    }
}

impl Precondition {
    pub(crate) fn holds(&self, current: Option<&[u8]>) -> bool {
        match (self, current) {
            (Precondition::Absent, None) => true,
            (Precondition::Present, Some(_)) => true,
            (Precondition::Equals(want), Some(have)) => want.as_slice() == have,
            _ => false,
        }
    }
}

/// Writes applied all together or not at all, after every precondition held.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Batch {
    pub preconditions: Vec<(Vec<u8>, Precondition)>,
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    pub fn delete(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    pub fn require(mut self, key: impl Into<Vec<u8>>, condition: Precondition) -> Self {
        self.preconditions.push((key.into(), condition));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A key and its value, as scans return them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Storage failures. I/O errors are fatal for the node; a failed precondition
/// is an ordinary, recoverable outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("precondition failed on key {key:?}")]
    PreconditionFailed { key: String },
    #[error("storage i/o error: {0}")]
    Io(String),
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    /// The write could not be committed now (no leader, no quorum); retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl StorageError {
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            StorageError::PreconditionFailed { .. } | StorageError::Unavailable(_)
        )
    }
}

/// The future a write returns.
pub type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + 'a>>;

/// Ordered key-value storage.
///
/// Keys order bytewise. Every successful write is durable before its future
/// resolves, and visible to reads on this node from then on.
pub trait Storage: Send + Sync + fmt::Debug {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    fn put(&self, key: &[u8], value: &[u8]) -> WriteFuture<'_> {
        self.apply(Batch::new().put(key, value))
    }

    /// Deleting an absent key is not an error.
    fn delete(&self, key: &[u8]) -> WriteFuture<'_> {
        self.apply(Batch::new().delete(key))
    }

    /// Entries whose key starts with `prefix`, in key order, strictly after
    /// `start_after` when given, at most `limit` of them.
    fn scan_prefix(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError>;

    /// Applies `batch` atomically: either every precondition holds and every op
    /// is applied, or nothing changes and the first failed precondition is
    /// reported.
    fn apply(&self, batch: Batch) -> WriteFuture<'_>;
}

/// Runs a write to completion from synchronous code that is not on an async
/// worker thread (the seal manager runs on blocking threads; see
/// `Node::with_seal`). Local stores complete at once; a replicated store's
/// future is driven by the Raft tasks on the runtime.
pub fn wait<T>(fut: impl Future<Output = T>) -> T {
    futures::executor::block_on(fut)
}
