//! `sigil-gossip`: how a revocation reaches every node of every cell.
//!
//! - [`record`]: a revocation record: what it kills (an accessor, a lease
//!   or lease prefix, an identity pattern, a role, a certificate), since
//!   when, until when, and whether it is a plain revocation or a
//!   quarantine.
//! - [`filter`]: the index every node checks each request against, with
//!   lookups that do not scan the records.
//! - [`broadcast`]: epidemic spreading of new records to random peers of
//!   every cell, bounded in rounds, with digest-based anti-entropy to
//!   repair what rumours miss.
//! - [`glob`]: the `*` matching identity patterns and role bindings use.
//! - [`mesh`]: the node runtime: chitchat membership and the broadcast
//!   core over one gRPC stream per pair of nodes.
//!
//! The core (`record`, `filter`, `broadcast`) is pure (no I/O, no clock,
//! no randomness of its own), so the same code runs in the node and in
//! the deterministic simulation.

pub mod broadcast;
pub mod filter;
pub mod glob;
pub mod mesh;
pub mod record;

pub use filter::{Applied, Credential, Filter};
pub use record::{Kind, RecordError, Revocation, Target};
