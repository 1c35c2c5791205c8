//! Replication: the nodes of a cell agree on one log of storage batches
//! with Raft (openraft 0.10, `docs/architecture.md`, "Raft").
//!
//! - [`log_store`]: the Raft log and vote in their own RocksDB, with group
//!   commit (many appends, one fsync);
//! - [`state_machine`]: applies committed batches of barrier *ciphertext* to
//!   the state RocksDB, checking their preconditions; builds and installs
//!   snapshots;
//! - [`snapshot`]: the snapshot file (a packed RocksDB checkpoint with a
//!   SHA-256 trailer, verified before install);
//! - [`network`] and [`service`]: the cluster RPCs over tonic;
//! - [`replicated`]: the [`crate::storage::Storage`] the barrier writes
//!   through: reads are local, writes are proposals (forwarded to the leader
//!   from a follower);
//! - [`tls`]: the cluster port's mutual TLS (cell CA, node certificates);
//! - [`stats`]: proposal, commit and log-sync figures for `sys/metrics`;
//! - [`cell`]: a node's Raft instance, assembled and started.
//!
//! Log entries and snapshots hold only what the barrier wrote, which is
//! ciphertext, plus the non-secret seal configuration and wrapped keys.

pub mod cell;
pub mod log_store;
pub mod network;
pub mod read_cache;
pub mod replicated;
pub mod service;
pub mod snapshot;
pub mod state_machine;
pub mod stats;
pub mod tls;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::storage::Batch;

pub use cell::{RaftCell, RaftSettings};
pub use snapshot::SnapshotFile;

/// A node's id inside its cell's Raft group, derived from its configured name
/// ([`node_id_of`]).
pub type NodeId = u64;

/// What the cell knows about a member: its name and where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellNode {
    /// The configured node name (`node_id` in the config file).
    pub name: String,
    /// `host:port` of the cluster port (Raft and forwarding, mutual TLS).
    pub cluster_addr: String,
    /// Base URL of the client API, for redirects and `sys/leader`.
    pub api_addr: String,
}

impl fmt::Display for CellNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.cluster_addr)
    }
}

/// The Raft id of the node named `name`: the first eight bytes of its
/// SHA-256. Names are what operators see; ids are what Raft stores.
pub fn node_id_of(name: &str) -> NodeId {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(id)
}

/// A state-machine command: one atomic batch with its preconditions, or a
/// step of an operator's snapshot restore.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Identifies the proposal, so that a proposal retried after a leader
    /// change can be recognised as already applied.
    pub request_id: u128,
    pub batch: Batch,
    /// Set (with an empty batch) for the steps of a restore.
    pub restore: Option<RestoreStep>,
}

impl Command {
    /// A command writing `batch`, under a fresh request id.
    pub fn write(batch: Batch) -> Self {
        Self {
            request_id: random_request_id(),
            batch,
            restore: None,
        }
    }

    /// A step of a restore, under a fresh request id.
    pub fn restore_step(step: RestoreStep) -> Self {
        Self {
            request_id: random_request_id(),
            batch: Batch::new(),
            restore: Some(step),
        }
    }

    /// Roughly how many bytes this command adds to a log entry.
    pub fn weight(&self) -> usize {
        let ops: usize = self
            .batch
            .ops
            .iter()
            .map(|op| match op {
                crate::storage::Op::Put { key, value } => key.len() + value.len(),
                crate::storage::Op::Delete { key } => key.len(),
            })
            .sum();
        let pre: usize = self
            .batch
            .preconditions
            .iter()
            .map(|(k, c)| match c {
                crate::storage::Precondition::Equals(v) => k.len() + v.len(),
                _ => k.len(),
            })
            .sum();
        let restore = match &self.restore {
            Some(RestoreStep::Chunk { bytes, .. }) => bytes.len(),
            _ => 0,
        };
        32 + ops + pre + restore
    }

    /// Whether this is a restore's commit step.
    pub fn is_restore_commit(&self) -> bool {
        matches!(self.restore, Some(RestoreStep::Commit { .. }))
    }
}

/// One log entry's payload: the commands of concurrent proposals, batched
/// by the leader (see `RaftCell`'s proposal batcher) so that one log append,
/// and one fsync, carries many writes. Applied in order; each command has
/// its own result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal(pub Vec<Command>);

impl Proposal {
    /// Whether this is a restore's commit step, which replaces the whole
    /// state and so always travels alone.
    pub fn is_restore_commit(&self) -> bool {
        matches!(self.0.as_slice(), [c] if c.is_restore_commit())
    }

    /// Roughly how many bytes this proposal adds to the log.
    pub fn weight(&self) -> usize {
        self.0.iter().map(Command::weight).sum()
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proposal of {} command(s)", self.0.len())
    }
}

/// A snapshot restore travels through the log like any write, so every
/// node, and every node that catches up later from the log or from a
/// snapshot, replaces its state at the same log index with the same bytes.
/// The packed snapshot is proposed in [`RESTORE_CHUNK`]-sized pieces, which
/// the state machine stages in its own metadata (so a snapshot taken
/// mid-restore carries them); the commit step checks the whole file and
/// swaps the state in one go.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreStep {
    /// Piece `seq` (from 0) of restore `id`.
    Chunk {
        id: u128,
        seq: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Restore `id` is complete: `chunks` pieces, `size` bytes in all.
    Commit { id: u128, chunks: u32, size: u64 },
}

impl fmt::Debug for RestoreStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreStep::Chunk { id, seq, bytes } => f
                .debug_struct("Chunk")
                .field("id", &format_args!("{id:032x}"))
                .field("seq", seq)
                .field("len", &bytes.len())
                .finish(),
            RestoreStep::Commit { id, chunks, size } => f
                .debug_struct("Commit")
                .field("id", &format_args!("{id:032x}"))
                .field("chunks", chunks)
                .field("size", size)
                .finish(),
        }
    }
}

/// The size of one restore piece: a full AppendEntries batch of them stays
/// well inside the cluster port's message limit.
pub const RESTORE_CHUNK: usize = 256 << 10;

/// A fresh random proposal id.
pub fn random_request_id() -> u128 {
    let mut b = [0u8; 16];
    // A failed RNG would make ids collide only with each other's zeroes;
    // fall back to time so retries stay distinguishable.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        return now;
    }
    u128::from_be_bytes(b)
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("request_id", &format_args!("{:032x}", self.request_id))
            .field("ops", &self.batch.ops.len())
            .field("preconditions", &self.batch.preconditions.len())
            .field("restore", &self.restore)
            .finish()
    }
}

/// What applying a [`Command`] did. Every replica reaches the same outcome:
/// preconditions are checked against the replicated state at apply time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    #[default]
    Applied,
    /// A precondition did not hold; nothing was written.
    PreconditionFailed { key: String },
    /// The same request id was applied before; nothing was written again.
    Duplicate,
}

openraft::declare_raft_types!(
    /// Sigil's Raft types.
    pub TypeConfig:
        D = Proposal,
        R = Vec<CommandResult>,
        NodeId = NodeId,
        Node = CellNode,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type EntryPayload = openraft::type_config::alias::EntryPayloadOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotFile>;
pub type RaftStorageError = openraft::StorageError<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;

/// Encodes a value for the log, the vote record or the wire.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

/// Decodes what [`encode`] produced. Never panics on bad input.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id_of("node-1"), node_id_of("node-1"));
        assert_ne!(node_id_of("node-1"), node_id_of("node-2"));
    }

    #[test]
    fn commands_round_trip_and_bad_bytes_are_errors() {
        let cmd = Command {
            request_id: 7,
            batch: Batch::new().put("k", "v").delete("gone"),
            restore: None,
        };
        let bytes = encode(&cmd).expect("encode");
        assert_eq!(decode::<Command>(&bytes).expect("decode"), cmd);
        assert!(decode::<Command>(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode::<Command>(&[0xff; 3]).is_err());
    }

    /// Byte strings are encoded as one run (`serde_bytes`); postcard gives
    /// that the same bytes as a sequence of `u8`, so logs and snapshots
    /// written with the plain encoding decode unchanged, and the other way.
    #[test]
    fn byte_strings_encode_as_the_plain_sequence_encoding_did() {
        use crate::storage::Precondition;
        #[derive(Serialize, Deserialize)]
        enum PlainOp {
            Put { key: Vec<u8>, value: Vec<u8> },
            Delete { key: Vec<u8> },
        }
        // Every variant, in order, so the variant numbers match.
        #[allow(dead_code)]
        #[derive(Serialize, Deserialize)]
        enum PlainPrecondition {
            Absent,
            Present,
            Equals(Vec<u8>),
        }
        #[derive(Serialize, Deserialize)]
        struct PlainBatch {
            preconditions: Vec<(Vec<u8>, PlainPrecondition)>,
            ops: Vec<PlainOp>,
        }
        #[allow(dead_code)]
        #[derive(Serialize, Deserialize)]
        enum PlainRestore {
            Chunk { id: u128, seq: u32, bytes: Vec<u8> },
            Commit { id: u128, chunks: u32, size: u64 },
        }
        #[derive(Serialize, Deserialize)]
        struct PlainCommand {
            request_id: u128,
            batch: PlainBatch,
            restore: Option<PlainRestore>,
        }
        let big: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let cmd = Command {
            request_id: u128::MAX - 5,
            batch: Batch::new()
                .require("p", Precondition::Equals(big.clone()))
                .require("q", Precondition::Absent)
                .put("k", big.clone())
                .delete("gone"),
            restore: Some(RestoreStep::Chunk {
                id: 9,
                seq: 2,
                bytes: big.clone(),
            }),
        };
        let plain = PlainCommand {
            request_id: u128::MAX - 5,
            batch: PlainBatch {
                preconditions: vec![
                    (b"p".to_vec(), PlainPrecondition::Equals(big.clone())),
                    (b"q".to_vec(), PlainPrecondition::Absent),
                ],
                ops: vec![
                    PlainOp::Put {
                        key: b"k".to_vec(),
                        value: big.clone(),
                    },
                    PlainOp::Delete {
                        key: b"gone".to_vec(),
                    },
                ],
            },
            restore: Some(PlainRestore::Chunk {
                id: 9,
                seq: 2,
                bytes: big,
            }),
        };
        let new = encode(&cmd).expect("encode");
        assert_eq!(new, encode(&plain).expect("encode plain"));
        assert_eq!(decode::<Command>(&new).expect("decode"), cmd);
    }
}
