//! Leases and the expiration manager (docs/architecture.md, "Leases").
//!
//! A lease stands for something an engine handed out that has to be taken
//! back: a database user, a cloud credential. It is revoked when it expires,
//! when the token that asked for it is revoked, or on demand.
//!
//! Vault's expiration manager loads every lease into memory when it unseals
//! or gains leadership; with tens of thousands of leases that outlasts
//! liveness probes, and with millions it runs out of memory. Sigil loads
//! nothing: leases live in the barrier with two indexes, and the manager
//! reads only the front of the "due" index, a page at a time.
//!
//! Layout under `sys/expire/` (all barrier-encrypted):
//!
//! | key | value |
//! | --- | --- |
//! | `id/<lease id>` | [`LeaseEntry`] |
//! | `due/<unix ms, 16 hex digits>/<lease id>` | empty: when the manager next acts on the lease (its expiry, or its next revocation attempt) |
//! | `token/<token hash>/<lease id>` | empty: leases of a token, revoked with it |
//! | `irrevocable/<lease id>` | empty: leases given up on after repeated failures |
//!
//! A lease ID is the path of the request that created it and a random
//! suffix (`database/creds/app/Fq2…`), so `revoke-prefix` is a range scan
//! of `id/`.
//!
//! [`schedule`] is the pure core (what to do with a due lease, when to try a
//! failed revocation again, how long a lease may live); [`LeaseStore`] is the
//! storage layout; the pipeline drives both, on the cell's leader.

pub mod schedule;
mod store;

use std::time::Duration;

pub use schedule::{AfterFailure, DueAction, Grant, RetryPolicy};
pub use store::{LeaseEntry, LeaseStore, RevocationState};

/// How the expiration manager runs (config section `[leases]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// How often the manager looks for due leases when nothing wakes it
    /// sooner.
    pub tick: Duration,
    /// Due leases read and revoked per round.
    pub batch: usize,
    /// Revocations in flight at once (each may call a database).
    pub concurrency: usize,
    /// How long one revocation may take before it counts as failed.
    pub revoke_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            batch: 512,
            concurrency: 16,
            revoke_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}
