//! The expiration manager's decisions, as pure functions of their inputs
//! (the clock and the random jitter are arguments), so every rule is tested
//! without storage, engines or time passing.

use std::time::Duration;

use super::LeaseEntry;

/// How failed revocations are retried before a lease is given up on.
///
/// After the n-th failure the next attempt waits `base * 2^(n-1)`, at most
/// `max_delay`, with "equal jitter" (half fixed, half random), so leases that
/// failed together (a database went down) do not all retry in the same
/// instant. After `max_attempts` failures the lease is marked irrevocable,
/// keeps its last error, and is not tried again until an operator acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max_delay: Duration,
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// Vault's numbers: six attempts, ten seconds doubling (about five
    /// minutes in all before a lease is irrevocable).
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            max_delay: Duration::from_secs(600),
            max_attempts: 6,
        }
    }
}

/// What follows a failed revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time (unix milliseconds).
    RetryAt(i64),
    /// Stop trying: the lease is irrevocable.
    GiveUp,
}

impl RetryPolicy {
    /// The delay before attempt `failures + 1`, before jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.base
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }

    /// After the `failures`-th failed attempt (counting this one) at `now_ms`;
    /// `jitter` is a random number in `[0, 1)`.
    pub fn after_failure(&self, failures: u32, now_ms: i64, jitter: f64) -> AfterFailure {
        if failures >= self.max_attempts {
            return AfterFailure::GiveUp;
        }
        let full = self.delay(failures);
        let half = full / 2;
        let wait = half + half.mul_f64(jitter.clamp(0.0, 1.0));
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        AfterFailure::RetryAt(now_ms.saturating_add(wait_ms.max(1)))
    }
}

/// What the manager does with an entry of the due index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueAction {
    /// Revoke the lease now.
    Revoke,
    /// The index entry is stale (the lease is gone, renewed, rescheduled or
    /// irrevocable): delete the index entry, leave the lease alone.
    DropIndex,
    /// Not yet due (the index is read in time order: stop here).
    Wait,
}

/// Decides what to do with the due-index entry `(when_ms, lease)`.
pub fn due_action(when_ms: i64, lease: Option<&LeaseEntry>, now_ms: i64) -> DueAction {
    if when_ms > now_ms {
        return DueAction::Wait;
    }
    match lease {
        Some(l) if l.due_ms() == Some(when_ms) => DueAction::Revoke,
        _ => DueAction::DropIndex,
    }
}

/// The TTL a new lease gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Seconds until it expires.
    pub ttl: u64,
    /// Seconds after issue beyond which renewals cannot take it.
    pub max_ttl: u64,
    /// The TTL asked for was cut to the maximum (the response warns).
    pub capped: bool,
}

/// Vault's rule: an engine's TTL (or the mount's default when it gives
/// none), never beyond the engine's maximum nor the mount's.
pub fn grant(
    requested_ttl: Option<u64>,
    requested_max: Option<u64>,
    mount_default: u64,
    mount_max: u64,
) -> Grant {
    let max_ttl = requested_max
        .filter(|m| *m > 0)
        .map_or(mount_max, |m| m.min(mount_max));
    let want = requested_ttl.filter(|t| *t > 0).unwrap_or(mount_default);
    Grant {
        ttl: want.min(max_ttl),
        max_ttl,
        capped: want > max_ttl,
    }
}

/// A renewal: the new expiry (unix seconds) and whether the maximum cut it.
/// `increment` 0 or absent asks for the lease's original TTL again.
pub fn renewal(lease: &LeaseEntry, increment: Option<u64>, now: i64) -> (i64, bool) {
    let want = increment.filter(|i| *i > 0).unwrap_or(lease.ttl);
    let expire = now.saturating_add(i64::try_from(want).unwrap_or(i64::MAX));
    if expire > lease.max_expire_unix {
        (lease.max_expire_unix, true)
    } else {
        (expire, false)
    }
}

/// The warning Vault gives when a TTL is capped.
pub fn capped_warning(asked: u64, max: u64) -> String {
    format!(
        "TTL of \"{}\" exceeded the effective max_ttl of \"{}\"; TTL value is capped accordingly",
        crate::duration::format_go_duration(Duration::from_secs(asked)),
        crate::duration::format_go_duration(Duration::from_secs(max))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::RevocationState;

    fn lease(expire: i64) -> LeaseEntry {
        LeaseEntry {
            lease_id: "db/creds/r/x".into(),
            path: "db/creds/r".into(),
            mount_uuid: "u".into(),
            internal: Default::default(),
            token_hash: None,
            issue_unix: 100,
            expire_unix: expire,
            last_renewal_unix: None,
            max_expire_unix: 1000,
            ttl: 60,
            renewable: true,
            revocation: RevocationState::default(),
        }
    }

    #[test]
    fn retries_double_up_to_the_cap_then_give_up() {
        let p = RetryPolicy {
            base: Duration::from_secs(10),
            max_delay: Duration::from_secs(50),
            max_attempts: 5,
        };
        let delays: Vec<u64> = (1..=5).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 50, 50]);
        // No jitter: half the delay; full jitter: all of it.
        assert_eq!(p.after_failure(1, 0, 0.0), AfterFailure::RetryAt(5_000));
        assert_eq!(
            p.after_failure(2, 0, 0.999_999),
            AfterFailure::RetryAt(19_999)
        );
        assert_eq!(
            p.after_failure(3, 1_000, 0.5),
            AfterFailure::RetryAt(31_000)
        );
        assert_eq!(p.after_failure(5, 0, 0.5), AfterFailure::GiveUp);
        assert_eq!(p.after_failure(9, 0, 0.5), AfterFailure::GiveUp);
        // Out-of-range jitter cannot push the retry outside [half, full].
        assert_eq!(p.after_failure(1, 0, 7.0), AfterFailure::RetryAt(10_000));
        assert_eq!(p.after_failure(1, 0, -1.0), AfterFailure::RetryAt(5_000));
        // A huge failure count does not overflow.
        let huge = RetryPolicy {
            max_attempts: u32::MAX,
            ..p
        };
        assert_eq!(huge.delay(u32::MAX - 1), Duration::from_secs(50));
    }

    #[test]
    fn due_entries_are_revoked_only_when_they_match_the_lease() {
        let l = lease(200);
        assert_eq!(due_action(200_000, Some(&l), 199_999), DueAction::Wait);
        assert_eq!(due_action(200_000, Some(&l), 200_000), DueAction::Revoke);
        // Renewed since: the old index entry is stale.
        assert_eq!(due_action(150_000, Some(&l), 300_000), DueAction::DropIndex);
        // Gone.
        assert_eq!(due_action(200_000, None, 300_000), DueAction::DropIndex);
        // Waiting for a retry: only the retry time's entry counts.
        let mut retrying = lease(200);
        retrying.revocation.next_attempt_ms = Some(250_000);
        assert_eq!(
            due_action(200_000, Some(&retrying), 300_000),
            DueAction::DropIndex
        );
        assert_eq!(
            due_action(250_000, Some(&retrying), 300_000),
            DueAction::Revoke
        );
        let mut given_up = lease(200);
        given_up.revocation.irrevocable = true;
        assert_eq!(
            due_action(200_000, Some(&given_up), 300_000),
            DueAction::DropIndex
        );
    }

    #[test]
    fn grants_take_the_default_and_never_exceed_either_maximum() {
        assert_eq!(
            grant(None, None, 3600, 7200),
            Grant {
                ttl: 3600,
                max_ttl: 7200,
                capped: false
            }
        );
        assert_eq!(
            grant(Some(600), Some(900), 3600, 7200),
            Grant {
                ttl: 600,
                max_ttl: 900,
                capped: false
            }
        );
        assert_eq!(
            grant(Some(10_000), None, 3600, 7200),
            Grant {
                ttl: 7200,
                max_ttl: 7200,
                capped: true
            }
        );
        // The engine's maximum cannot raise the mount's.
        assert_eq!(grant(Some(5000), Some(99_999), 3600, 7200).max_ttl, 7200);
        assert_eq!(grant(Some(0), Some(0), 60, 7200).ttl, 60);
    }

    #[test]
    fn renewals_respect_the_maximum() {
        let l = lease(160);
        assert_eq!(renewal(&l, Some(120), 500), (620, false));
        assert_eq!(renewal(&l, None, 500), (560, false), "the original TTL");
        assert_eq!(renewal(&l, Some(10_000), 500), (1000, true));
        assert_eq!(renewal(&l, Some(u64::MAX), 500), (1000, true));
        assert_eq!(
            capped_warning(7200, 3600),
            "TTL of \"2h0m0s\" exceeded the effective max_ttl of \"1h0m0s\"; TTL value is capped accordingly"
        );
    }
}
