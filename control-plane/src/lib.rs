//! Sigil's control plane: the metadata every cell of a federation shares.
//!
//! - [`model`]: what is shared (policies, global mounts and their roles, the
//!   cell registry, namespaces, revocations) and, by its types, what is not
//!   (key material, secret values, tokens, leases).
//! - [`hlc`]: hybrid logical clocks, which rank concurrent writes.
//! - [`state`]: the CRDT state, one multi-value register per key, and its
//!   conflict rule.
//! - [`replica`]: a cell's replica: op logs, version vectors, in-order
//!   delivery, snapshots for peers that fell too far behind, digests.
//! - [`sync`]: how replicas in different cells converge: a pure serving
//!   step, and its tonic runtime (a leader pulls from each peer cell over a
//!   `sigil.federation.v1` stream).
//!
//! The model, the state, the replica and the sync step are pure: no I/O, no
//! clock reads, no randomness. The cell persists a replica in its Raft state
//! (through [`sync::Store`]) and runs the sync runtime on its cluster port.

pub mod hlc;
pub mod model;
pub mod replica;
pub mod state;
pub mod sync;

pub use hlc::{Hlc, HlcClock};
pub use model::{CellId, Key, Kind, Value};
pub use replica::{Answer, Changes, Digest, Entry, Receipt, Replica, ReplicaError, StateSnapshot};
pub use state::{Conflict, ControlState, Put, Stamped};

#[cfg(test)]
mod replica_tests;
