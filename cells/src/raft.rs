//! Replication: the nodes of a cell agree on one log of storage batches
//! with Raft (openraft 0.9, `docs/architecture.md`, "Raft").
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
//! - [`cell`]: a node's Raft instance, assembled and started.
//!
//! Log entries and snapshots hold only what the barrier wrote, which is
//! ciphertext, plus the non-secret seal configuration and wrapped keys.

pub mod cell;
pub mod log_store;
pub mod network;
pub mod replicated;
pub mod service;
pub mod snapshot;
pub mod state_machine;
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

/// A state-machine command: one atomic batch with its preconditions.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Identifies the proposal, so that a proposal retried after a leader
    /// change can be recognised as already applied.
    pub request_id: u128,
    pub batch: Batch,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("request_id", &format_args!("{:032x}", self.request_id))
            .field("ops", &self.batch.ops.len())
            .field("preconditions", &self.batch.preconditions.len())
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
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = CellNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, CellNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, CellNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type RaftStorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, CellNode>;

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
        };
        let bytes = encode(&cmd).expect("encode");
        assert_eq!(decode::<Command>(&bytes).expect("decode"), cmd);
        assert!(decode::<Command>(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode::<Command>(&[0xff; 3]).is_err());
    }
}
