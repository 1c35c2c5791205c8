//! Cell-to-cell sync: how replicas in different cells converge.
//!
//! **Pull, one stream per ordered pair of cells.** Each cell's Raft leader
//! opens a `sigil.federation.v1.Federation/Sync` stream to every peer cell
//! (any node of it: [`pull`]). On that stream it sends its [`crate::Digest`] when
//! the stream opens and every few seconds after; the serving node answers
//! with the ops the caller lacks, then keeps pushing new ops as its own
//! replica commits them ([`Serving`]). So data only ever flows *into* the
//! caller, and every op a cell receives is applied by its leader, as one Raft
//! write ([`Store::receive`]). A cell learns what a peer originated, and
//! what the peer relayed from others, from its own stream to that peer.
//!
//! **Catching up and repair.** A caller whose version vector is older than
//! the serving node's logs reach gets the whole state
//! ([`crate::Answer::Snapshot`]). A caller whose version vector equals the
//! serving replica's while their state hashes differ also gets the whole
//! state (a missed op, or a bug); merging is idempotent, so repair costs
//! bandwidth, never correctness.
//!
//! **Trust.** The serving side is handed an `authorize` function that turns
//! the stream's transport identity into a [`crate::CellId`] or refuses it; the
//! mutual-TLS checks themselves belong to the cell's cluster port.
//!
//! The protocol step ([`session`]) is pure and tested by the replies it
//! returns; [`service`] and [`pull`] are the thin tonic runtime around it.

pub mod pull;
pub mod service;
pub mod session;
pub mod status;
pub mod store;
pub mod wire;

pub use pull::{Dial, Peer, PullSettings, pull};
pub use service::FederationService;
pub use session::{Reply, Request, Serving};
pub use status::{PeerStatus, SyncStatus};
pub use store::{MemoryStore, Store, StoreError};

/// The wall clock in milliseconds since the Unix epoch: what the runtime
/// hands the pure core as `now_ms`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
