//! Leases in the pipeline (docs/architecture.md, "Leases"): registering what
//! engines hand out, the `sys/leases/*` API, and the expiration manager's
//! rounds, which the node runs on the cell's leader.
//!
//! Every revocation goes through [`Pipeline::revoke_lease`], under the
//! lease's lock: the engine is asked to undo the secret, and only then is the
//! lease deleted. A failure is recorded on the lease (attempts, last error)
//! and the lease is rescheduled with backoff, or marked irrevocable after
//! the policy's last attempt. Bulk revocation keeps going past individual
//! failures and reports them.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Caller, Pipeline, data};
use crate::api_error::ApiError;
use crate::barrier::BarrierError;
use crate::engine::{Engine, EngineCtx, REVOKE_BATCH};
use crate::lease::{AfterFailure, DueAction, LeaseEntry, schedule};
use crate::logical::{Data, Lease, Operation, Outcome, Request, Response, SecretLease};
use crate::mounts::MountEntry;
use crate::params;
use crate::storage::StorageError;
use crate::view::BarrierView;

/// Longest lease ID (or prefix) accepted from a client: a request path and
/// a suffix.
const MAX_LEASE_ID: usize = crate::logical::MAX_PATH_LEN + 64;
/// Failures listed in a bulk revocation's answer (the rest are counted).
const MAX_REPORTED_FAILURES: usize = 100;
/// An engine's answer for each lease of a batch, in order.
type Answers = Vec<Result<(), ApiError>>;
/// Revoked leases deleted in one write (about 600 bytes of keys each).
const DELETE_BATCH: usize = 256;

/// How a revocation treats the engine's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevokeMode {
    /// The lease goes only if the engine revoked the secret.
    Normal,
    /// The lease goes whatever the engine says (`revoke-force`).
    Force,
}

/// What one round of the expiration manager did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireRound {
    /// Due-index entries read.
    pub examined: usize,
    pub revoked: usize,
    pub failed: usize,
    /// Stale index entries removed.
    pub dropped: usize,
}

/// What a bulk revocation did.
#[derive(Debug, Default)]
struct BulkReport {
    revoked: usize,
    failures: Vec<(String, String)>,
    failed: usize,
}

impl Pipeline {
    /// Registers the lease for a secret an engine just handed out, and puts
    /// it in the response. If the lease cannot be stored, the secret is
    /// revoked at once, so nothing is left that no lease would take back.
    pub(super) async fn register_lease(
        &self,
        req: &Request,
        ctx: &EngineCtx<'_>,
        engine: &dyn Engine,
        caller: &Caller,
        resp: &mut Response,
        secret: SecretLease,
    ) -> Result<(), ApiError> {
        let mount = ctx.mount;
        let grant = schedule::grant(
            Some(secret.ttl),
            Some(secret.max_ttl),
            mount.config.effective_default_ttl(),
            mount.config.effective_max_ttl(),
        );
        if grant.capped {
            resp.warnings
                .push(schedule::capped_warning(secret.ttl, grant.max_ttl));
        }
        let now = ctx.now.unix_timestamp();
        let lease_id = format!(
            "{}/{}",
            req.path.trim_end_matches('/'),
            crate::token::random_base62(24)
        );
        let entry = LeaseEntry {
            lease_id: lease_id.clone(),
            path: req.path.trim_end_matches('/').to_owned(),
            mount_uuid: mount.uuid.clone(),
            internal: secret.internal,
            token_hash: Some(caller.entry.hash.clone()),
            issue_unix: now,
            expire_unix: now.saturating_add(secs(grant.ttl)),
            last_renewal_unix: None,
            max_expire_unix: now.saturating_add(secs(grant.max_ttl)),
            ttl: grant.ttl,
            renewable: secret.renewable,
            revocation: Default::default(),
        };
        if let Err(e) = self.leases.create(&entry).await {
            tracing::error!(error = %e, path = %req.path, "could not store a lease; revoking its secret");
            if let Err(undo) = engine.revoke(ctx, &entry).await {
                tracing::error!(error = %undo, path = %req.path, "could not revoke a secret whose lease was not stored");
            }
            return Err(e.into());
        }
        self.metrics.lease_created();
        resp.lease = Some(Lease {
            lease_id,
            ttl: grant.ttl,
            renewable: secret.renewable,
        });
        // A short lease should not wait for the next tick to be noticed.
        if grant.ttl < self.lease_settings.tick.as_secs() {
            self.lease_wake.notify_one();
        }
        Ok(())
    }

    /// The mount a lease belongs to, by UUID (remounts keep it).
    fn lease_mount(&self, entry: &LeaseEntry) -> Option<Arc<MountEntry>> {
        self.router()
            .all()
            .find(|m| m.uuid == entry.mount_uuid)
            .cloned()
    }

    /// Revokes one lease now. `Ok(false)`: there was no such lease. On an
    /// engine failure (and not forced) the failure is recorded on the lease,
    /// which is retried later, and the engine's error is returned.
    pub(crate) async fn revoke_lease(
        &self,
        lease_id: &str,
        mode: RevokeMode,
    ) -> Result<bool, ApiError> {
        let _guard = self.leases.lock(lease_id).await;
        let Some(entry) = self.leases.get(lease_id)? else {
            return Ok(false);
        };
        self.revoke_locked(entry, mode).await.map(|()| true)
    }

    /// Revokes `entry`; the caller holds its lock.
    async fn revoke_locked(&self, entry: LeaseEntry, mode: RevokeMode) -> Result<(), ApiError> {
        self.revoke_locked_many(vec![entry], mode)
            .await
            .pop()
            .map_or(Ok(()), |(_, r)| r)
    }

    /// Revokes `entries`; the caller holds their locks. Each mount's engine
    /// gets its leases [`REVOKE_BATCH`] at a time, batches running
    /// concurrently; the leases revoked (or forced) are deleted
    /// [`DELETE_BATCH`] to a write; a failure is recorded on its lease.
    /// Answers for every entry, by lease ID.
    async fn revoke_locked_many(
        &self,
        entries: Vec<LeaseEntry>,
        mode: RevokeMode,
    ) -> Vec<(String, Result<(), ApiError>)> {
        let mut by_mount: Vec<(String, Vec<LeaseEntry>)> = Vec::new();
        for entry in entries {
            match by_mount.iter_mut().find(|(m, _)| *m == entry.mount_uuid) {
                Some((_, group)) => group.push(entry),
                None => by_mount.push((entry.mount_uuid.clone(), vec![entry])),
            }
        }
        let mut calls = Vec::new();
        for (_, group) in by_mount {
            let mount = self.lease_mount(&group[0]);
            let mut group = group.into_iter().peekable();
            while group.peek().is_some() {
                let batch: Vec<LeaseEntry> = group.by_ref().take(REVOKE_BATCH).collect();
                calls.push((mount.clone(), batch));
            }
        }
        let outcomes: Vec<(Vec<LeaseEntry>, Answers)> = futures::stream::iter(calls)
            .map(|(mount, batch)| async move {
                let results = match mount {
                    // The mount is gone, and with it whatever could be
                    // revoked.
                    None => batch.iter().map(|_| Ok(())).collect(),
                    Some(mount) => self.call_engine_revoke(&mount, &batch).await,
                };
                (batch, results)
            })
            .buffer_unordered(self.lease_settings.concurrency.max(1))
            .collect()
            .await;

        let mut answers = Vec::new();
        let mut revoked = Vec::new();
        let mut failed = Vec::new();
        for (batch, results) in outcomes {
            for (entry, result) in batch.into_iter().zip(results) {
                match result {
                    Ok(()) => revoked.push(entry),
                    Err(e) if mode == RevokeMode::Force => {
                        tracing::warn!(lease_id = %entry.lease_id, error = %e, "lease force-revoked; the engine failed to revoke its secret");
                        revoked.push(entry);
                    }
                    Err(e) => failed.push((entry, e)),
                }
            }
        }
        for chunk in revoked.chunks(DELETE_BATCH) {
            let stored = self.leases.delete_many(chunk).await.map_err(ApiError::from);
            for entry in chunk {
                if stored.is_ok() {
                    self.metrics.lease_revoked();
                    tracing::debug!(lease_id = %entry.lease_id, "lease revoked");
                }
                answers.push((entry.lease_id.clone(), stored.clone()));
            }
        }
        let recorded: Vec<(String, Result<(), ApiError>)> = futures::stream::iter(failed)
            .map(|(entry, e)| async move {
                let id = entry.lease_id.clone();
                match self.record_failure(entry, &e).await {
                    Ok(()) => (id, Err(e)),
                    Err(storage) => (id, Err(storage)),
                }
            })
            .buffer_unordered(self.lease_settings.concurrency.max(1))
            .collect()
            .await;
        answers.extend(recorded);
        answers
    }

    /// The engine's answer for each lease of `batch`, within the revocation
    /// timeout.
    async fn call_engine_revoke(
        &self,
        mount: &MountEntry,
        batch: &[LeaseEntry],
    ) -> Vec<Result<(), ApiError>> {
        let Some(engine) = self.engines.get(mount.mount_type.as_str()).cloned() else {
            return batch.iter().map(|_| Ok(())).collect();
        };
        let ctx = EngineCtx {
            view: BarrierView::new(self.barrier.clone(), &mount.storage_prefix()),
            mount,
            path: "",
            caller: None,
            now: OffsetDateTime::now_utc(),
        };
        let timeout = self.lease_settings.revoke_timeout;
        let failure = match tokio::time::timeout(timeout, engine.revoke_many(&ctx, batch)).await {
            Ok(results) if results.len() == batch.len() => return results,
            Ok(results) => ApiError::Internal(format!(
                "the engine answered for {} of {} leases",
                results.len(),
                batch.len()
            )),
            Err(_) => ApiError::Upstream(format!(
                "revocation did not finish within {}s",
                timeout.as_secs()
            )),
        };
        batch.iter().map(|_| Err(failure.clone())).collect()
    }

    /// Records a failed attempt: reschedules with backoff, or gives up.
    async fn record_failure(&self, entry: LeaseEntry, error: &ApiError) -> Result<(), ApiError> {
        let now = OffsetDateTime::now_utc();
        let now_ms = unix_ms(now);
        let mut next = entry.clone();
        let r = &mut next.revocation;
        r.attempts = r.attempts.saturating_add(1);
        r.last_error = Some(error.to_string());
        r.last_attempt_unix = Some(now.unix_timestamp());
        match self
            .lease_settings
            .retry
            .after_failure(r.attempts, now_ms, jitter())
        {
            AfterFailure::RetryAt(at) => {
                r.next_attempt_ms = Some(at);
                tracing::warn!(lease_id = %entry.lease_id, attempts = r.attempts, error = %error, retry_in_ms = at - now_ms, "lease revocation failed; will retry");
            }
            AfterFailure::GiveUp => {
                r.next_attempt_ms = None;
                r.irrevocable = true;
                self.metrics.lease_irrevocable();
                tracing::error!(lease_id = %entry.lease_id, attempts = r.attempts, error = %error, "lease is irrevocable: revocation failed too often; see sys/leases/lookup and revoke-force");
            }
        }
        self.metrics.lease_revoke_failed();
        match self.leases.update(&entry, &next).await {
            Ok(()) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks a lease for revocation as soon as the manager gets to it (its
    /// expiry becomes now). `Ok(false)`: no such lease.
    async fn expire_now(&self, lease_id: &str, now: i64) -> Result<bool, ApiError> {
        let _guard = self.leases.lock(lease_id).await;
        let Some(entry) = self.leases.get(lease_id)? else {
            return Ok(false);
        };
        let Some(next) = expiring_now(&entry, now) else {
            return Ok(true);
        };
        match self.leases.update(&entry, &next).await {
            Ok(()) => Ok(true),
            Err(e) if is_gone(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// [`expire_now`](Self::expire_now) for many leases, [`DELETE_BATCH`] to
    /// a write. Answers, for each ID, whether the lease exists.
    async fn expire_now_many(&self, ids: &[String], now: i64) -> Result<Vec<bool>, ApiError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(DELETE_BATCH) {
            let together = {
                let _guards = self
                    .leases
                    .lock_many(chunk.iter().map(String::as_str))
                    .await;
                let mut exists = Vec::with_capacity(chunk.len());
                let mut changes = Vec::new();
                for id in chunk {
                    let entry = self.leases.get(id)?;
                    exists.push(entry.is_some());
                    if let Some(entry) = entry
                        && let Some(next) = expiring_now(&entry, now)
                    {
                        changes.push((entry, next));
                    }
                }
                if changes.is_empty() {
                    Some(exists)
                } else {
                    match self.leases.update_many(&changes).await {
                        Ok(()) => Some(exists),
                        // A lease went meanwhile (a leader change): one by
                        // one.
                        Err(e) if is_gone(&e) => None,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            match together {
                Some(exists) => found.extend(exists),
                None => {
                    for id in chunk {
                        found.push(self.expire_now(id, now).await?);
                    }
                }
            }
        }
        Ok(found)
    }

    /// [`expire_now_many`](Self::expire_now_many), answering how many of
    /// the leases exist.
    async fn expire_now_counted(&self, ids: &[String], now: i64) -> Result<usize, ApiError> {
        let found = self.expire_now_many(ids, now).await?;
        Ok(found.into_iter().filter(|f| *f).count())
    }

    /// The leases of revoked tokens expire now; the manager revokes them
    /// (with retries), so a token's revocation never waits on a database.
    pub(super) async fn expire_token_leases(&self, hashes: &[String]) -> Result<usize, ApiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut n = 0;
        for hash in hashes {
            let ids = self.leases.by_token(hash)?;
            n += self.expire_now_counted(&ids, now).await?;
        }
        if n > 0 {
            tracing::info!(leases = n, "leases of revoked tokens queued for revocation");
            self.lease_wake.notify_one();
        }
        Ok(n)
    }

    /// One round of the expiration manager: revokes up to a batch of due
    /// leases, together (see [`Self::revoke_locked_many`]).
    pub async fn expire_due(&self) -> Result<ExpireRound, ApiError> {
        let now_ms = unix_ms(OffsetDateTime::now_utc());
        let due = self.leases.due(now_ms, self.lease_settings.batch.max(1))?;
        let mut round = ExpireRound {
            examined: due.len(),
            ..ExpireRound::default()
        };
        let _guards = self
            .leases
            .lock_many(due.iter().map(|(_, id)| id.as_str()))
            .await;
        let mut to_revoke = Vec::new();
        for (when, id) in due {
            let entry = self.leases.get(&id)?;
            match schedule::due_action(when, entry.as_ref(), now_ms) {
                DueAction::Wait => {}
                DueAction::Revoke if entry.is_some() => to_revoke.extend(entry),
                DueAction::Revoke | DueAction::DropIndex => {
                    self.leases.drop_due(when, &id).await?;
                    round.dropped += 1;
                }
            }
        }
        for (_, result) in self.revoke_locked_many(to_revoke, RevokeMode::Normal).await {
            match result {
                Ok(()) => round.revoked += 1,
                // Recorded on the lease; storage trouble is not.
                Err(ApiError::Sealed) => return Err(ApiError::Sealed),
                Err(_) => round.failed += 1,
            }
        }
        Ok(round)
    }

    /// Wakes the expiration manager's loop when a lease needs attention
    /// before its next tick.
    pub fn lease_wake(&self) -> Arc<tokio::sync::Notify> {
        self.lease_wake.clone()
    }

    /// Runs every mount's periodic work once (see [`Engine::tick`]).
    pub async fn tick_engines(&self) {
        let router = self.router();
        for mount in router.all() {
            let Some(engine) = self.engines.get(mount.mount_type.as_str()).cloned() else {
                continue;
            };
            let ctx = EngineCtx {
                view: BarrierView::new(self.barrier.clone(), &mount.storage_prefix()),
                mount,
                path: "",
                caller: None,
                now: OffsetDateTime::now_utc(),
            };
            let limit = self.lease_settings.revoke_timeout;
            match tokio::time::timeout(limit, engine.tick(&ctx)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(mount = %mount.route_prefix(), error = %e, "periodic work failed")
                }
                Err(_) => tracing::warn!(mount = %mount.route_prefix(), "periodic work timed out"),
            }
        }
    }

    /// When the earliest lease is due (unix ms).
    pub fn next_lease_due(&self) -> Result<Option<i64>, ApiError> {
        Ok(self.leases.next_due()?)
    }

    pub fn lease_settings(&self) -> crate::lease::LeaseSettings {
        self.lease_settings
    }

    /// Revokes every lease whose ID starts with `prefix`, a page at a time
    /// (see [`Self::revoke_locked_many`]), past individual failures.
    async fn revoke_bulk(&self, prefix: &str, mode: RevokeMode) -> Result<BulkReport, ApiError> {
        let mut report = BulkReport::default();
        let mut after: Option<String> = None;
        let page_size = self.lease_settings.batch.max(1);
        loop {
            let page = self
                .leases
                .ids_with_prefix(prefix, after.as_deref(), page_size)?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            let guards = self.leases.lock_many(page.iter().map(String::as_str)).await;
            let mut entries = Vec::with_capacity(page.len());
            for id in &page {
                // Gone since the page was read: revoked by someone else.
                entries.extend(self.leases.get(id)?);
            }
            let results = self.revoke_locked_many(entries, mode).await;
            drop(guards);
            for (id, r) in results {
                match r {
                    Ok(()) => report.revoked += 1,
                    Err(ApiError::Sealed) => return Err(ApiError::Sealed),
                    Err(e) => {
                        report.failed += 1;
                        if report.failures.len() < MAX_REPORTED_FAILURES {
                            report.failures.push((id, e.to_string()));
                        }
                    }
                }
            }
            after = Some(last);
        }
        Ok(report)
    }

    /// Queues every lease under `prefix` for the manager (asynchronous
    /// revoke-prefix).
    pub(super) async fn expire_bulk(&self, prefix: &str) -> Result<usize, ApiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut n = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .leases
                .ids_with_prefix(prefix, after.as_deref(), 1024)?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            n += self.expire_now_counted(&page, now).await?;
            after = Some(last);
        }
        self.lease_wake.notify_one();
        Ok(n)
    }

    /// Revokes every lease of a mount before it is disabled; any failure
    /// stops the unmount (as in Vault), so no secret outlives its engine.
    pub(super) async fn revoke_mount_leases(&self, mount: &MountEntry) -> Result<(), ApiError> {
        let report = self
            .revoke_bulk(&mount.route_prefix(), RevokeMode::Normal)
            .await?;
        if report.failed > 0 {
            let first = report
                .failures
                .first()
                .map(|(id, e)| format!(" (first: {id}: {e})"))
                .unwrap_or_default();
            return Err(ApiError::InvalidRequest(format!(
                "failed to revoke {} leases of {:?}{first}; the mount stays enabled. Fix the cause, or revoke them with sys/leases/revoke-force",
                report.failed,
                mount.route_prefix()
            )));
        }
        if report.revoked > 0 {
            tracing::info!(path = %mount.route_prefix(), leases = report.revoked, "leases of a disabled mount revoked");
        }
        Ok(())
    }

    /// Repairs the lease indexes: leases of tokens that no longer exist are
    /// queued for revocation, stale due entries removed, missing ones
    /// restored.
    async fn tidy_leases(&self) -> Result<Value, ApiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut orphaned = 0usize;
        let mut dangling_links = 0usize;
        for hash in self.leases.tokens_with_leases()? {
            if self.tokens.by_hash(&hash)?.is_some() {
                continue;
            }
            let ids = self.leases.by_token(&hash)?;
            let found = self.expire_now_many(&ids, now).await?;
            for (id, found) in ids.iter().zip(found) {
                if found {
                    orphaned += 1;
                } else {
                    self.leases.drop_token_link(&hash, id).await?;
                    dangling_links += 1;
                }
            }
        }
        let mut stale_due = 0usize;
        for (when, id) in self.leases.all_due()? {
            let _guard = self.leases.lock(&id).await;
            let entry = self.leases.get(&id)?;
            if entry.as_ref().and_then(LeaseEntry::due_ms) != Some(when) {
                self.leases.drop_due(when, &id).await?;
                stale_due += 1;
            }
        }
        let mut restored_due = 0usize;
        let mut after: Option<String> = None;
        loop {
            let page = self.leases.ids_with_prefix("", after.as_deref(), 1024)?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for id in page {
                let _guard = self.leases.lock(&id).await;
                if let Some(entry) = self.leases.get(&id)?
                    && let Some(when) = entry.due_ms()
                    && !self.leases.has_due(when, &id)?
                {
                    self.leases.restore_due(&entry).await?;
                    restored_due += 1;
                }
            }
            after = Some(last);
        }
        if orphaned > 0 {
            self.lease_wake.notify_one();
        }
        tracing::info!(
            orphaned,
            dangling_links,
            stale_due,
            restored_due,
            "lease indexes tidied"
        );
        Ok(json!({
            "leases_of_revoked_tokens": orphaned,
            "dangling_token_links": dangling_links,
            "stale_due_entries": stale_due,
            "restored_due_entries": restored_due,
        }))
    }
}

/// `sys/leases/*`, and the older `sys/renew`, `sys/revoke`,
/// `sys/revoke-prefix` and `sys/revoke-force`. `head` is the first segment
/// after `sys/`.
pub(super) async fn handle(
    p: &Pipeline,
    req: &Request,
    head: &str,
    rest: &str,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let op = req.operation;
    let write = matches!(op, Operation::Create | Operation::Update);
    let read = matches!(op, Operation::Read | Operation::List);
    let (verb, arg) = if head == "leases" {
        match rest.split_once('/') {
            Some((v, a)) => (v, Some(a)),
            None => (rest, None),
        }
    } else {
        (head, (!rest.is_empty()).then_some(rest))
    };
    let arg = arg.filter(|a| !a.is_empty());
    match (verb, arg) {
        ("lookup", None) if write => lookup(p, &lease_id_param(req, None)?),
        ("lookup", prefix) if read => list_dir(p, prefix.unwrap_or("")),
        ("renew", id) if write => renew(p, req, &lease_id_param(req, id)?).await,
        ("revoke", id) if write => {
            let id = lease_id_param(req, id)?;
            revoke(p, req, &id, caller).await
        }
        ("revoke-prefix", Some(prefix)) if write => {
            let sync = params::boolean(&req.data, "sync")?.unwrap_or(true);
            revoke_prefix(p, prefix, RevokeMode::Normal, sync, caller).await
        }
        ("revoke-force", Some(prefix)) if write => {
            revoke_prefix(p, prefix, RevokeMode::Force, true, caller).await
        }
        ("tidy", None) if write => Ok(data(p.tidy_leases().await?)),
        ("count", None) if op == Operation::Read => count(p, req),
        ("", None) if read => list_irrevocable(p, req),
        _ => Err(ApiError::UnsupportedOperation),
    }
}

/// The lease ID from the path or the body's `lease_id` (Vault accepts both).
fn lease_id_param(req: &Request, from_path: Option<&str>) -> Result<String, ApiError> {
    let id = match from_path {
        Some(id) => id.to_owned(),
        None => params::require_string(&req.data, "lease_id")?,
    };
    check_lease_id(&id)?;
    Ok(id)
}

fn check_lease_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_LEASE_ID || id.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest("invalid lease ID".into()));
    }
    Ok(())
}

fn lookup(p: &Pipeline, id: &str) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let entry = p
        .leases
        .get(id)?
        .ok_or_else(|| ApiError::InvalidRequest("invalid lease".into()))?;
    let r = &entry.revocation;
    Ok(data(json!({
        "id": entry.lease_id,
        "issue_time": crate::clock::rfc3339_unix(entry.issue_unix),
        "expire_time": crate::clock::rfc3339_unix(entry.expire_unix),
        "last_renewal": entry.last_renewal_unix.map(crate::clock::rfc3339_unix),
        "renewable": entry.renewable && !r.irrevocable && entry.expire_unix > now,
        "ttl": entry.remaining(now),
        "irrevocable": r.irrevocable,
        "revocation_attempts": r.attempts,
        "last_revocation_error": r.last_error,
        "last_revocation_attempt": r.last_attempt_unix.map(crate::clock::rfc3339_unix),
        "next_revocation_attempt": r.next_attempt_ms.map(|ms| crate::clock::rfc3339_unix(ms / 1000)),
    })))
}

fn list_dir(p: &Pipeline, prefix: &str) -> Result<Response, ApiError> {
    check_prefix(prefix)?;
    let dir = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    };
    crate::engines::list_response(p.leases.list_dir(&dir)?)
}

fn check_prefix(prefix: &str) -> Result<(), ApiError> {
    if prefix.len() > MAX_LEASE_ID || prefix.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest("invalid lease prefix".into()));
    }
    Ok(())
}

async fn renew(p: &Pipeline, req: &Request, id: &str) -> Result<Response, ApiError> {
    let increment = params::seconds(&req.data, "increment")?;
    let _guard = p.leases.lock(id).await;
    let now = OffsetDateTime::now_utc();
    let now_s = now.unix_timestamp();
    let entry = p
        .leases
        .get(id)?
        .ok_or_else(|| ApiError::InvalidRequest("lease not found".into()))?;
    if entry.revocation.irrevocable || entry.expire_unix <= now_s {
        return Err(ApiError::InvalidRequest(
            "lease expired or is being revoked".into(),
        ));
    }
    if !entry.renewable {
        return Err(ApiError::InvalidRequest("lease is not renewable".into()));
    }
    let (expire, capped) = schedule::renewal(&entry, increment, now_s);
    if let Some(mount) = p.lease_mount(&entry)
        && let Some(engine) = p.engines.get(mount.mount_type.as_str()).cloned()
    {
        let rel = relative_path(&mount, &entry.path);
        let ctx = EngineCtx {
            view: BarrierView::new(p.barrier.clone(), &mount.storage_prefix()),
            mount: &mount,
            path: &rel,
            caller: None,
            now,
        };
        engine.renew(&ctx, &entry, expire).await?;
    }
    let mut next = entry.clone();
    next.expire_unix = expire;
    next.last_renewal_unix = Some(now_s);
    p.leases.update(&entry, &next).await.map_err(|e| {
        if is_gone(&e) {
            ApiError::InvalidRequest("lease not found".into())
        } else {
            e.into()
        }
    })?;
    let ttl = u64::try_from(expire - now_s).unwrap_or(0);
    let mut resp = Response {
        lease: Some(Lease {
            lease_id: entry.lease_id.clone(),
            ttl,
            renewable: true,
        }),
        ..Response::default()
    };
    if capped {
        let asked = increment.filter(|i| *i > 0).unwrap_or(entry.ttl);
        let max = u64::try_from(entry.max_expire_unix - entry.issue_unix).unwrap_or(0);
        resp.warnings.push(schedule::capped_warning(asked, max));
    }
    Ok(resp)
}

async fn revoke(
    p: &Pipeline,
    req: &Request,
    id: &str,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let sync = params::boolean(&req.data, "sync")?.unwrap_or(true);
    if !sync {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        p.expire_now(id, now).await?;
        p.lease_wake.notify_one();
        return Ok(accepted());
    }
    match p.revoke_lease(id, RevokeMode::Normal).await {
        Ok(found) => {
            if found {
                tracing::info!(lease_id = %id, accessor = %caller.entry.accessor, "lease revoked by request");
            }
            Ok(Response::empty())
        }
        Err(e) => Err(ApiError::Upstream(format!(
            "failed to revoke lease {id:?}: {e}; it will be retried"
        ))),
    }
}

async fn revoke_prefix(
    p: &Pipeline,
    prefix: &str,
    mode: RevokeMode,
    sync: bool,
    caller: &Caller,
) -> Result<Response, ApiError> {
    check_prefix(prefix)?;
    // A prefix that names one lease revokes that lease; otherwise it is a
    // path prefix, aligned on segments as Vault aligns it.
    let prefix = if prefix.ends_with('/') || p.leases.get(prefix)?.is_some() {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    };
    if !sync {
        let queued = p.expire_bulk(&prefix).await?;
        tracing::info!(prefix = %prefix, leases = queued, accessor = %caller.entry.accessor, "revoke-prefix queued");
        let mut d = Data::new();
        d.insert("queued".into(), queued.into());
        return Ok(Response {
            data: Some(d),
            outcome: Outcome::Accepted,
            ..Response::default()
        });
    }
    let started = std::time::Instant::now();
    let report = p.revoke_bulk(&prefix, mode).await?;
    tracing::info!(
        prefix = %prefix,
        revoked = report.revoked,
        failed = report.failed,
        force = mode == RevokeMode::Force,
        elapsed_ms = started.elapsed().as_millis() as u64,
        accessor = %caller.entry.accessor,
        "revoke-prefix finished"
    );
    let failures: Vec<Value> = report
        .failures
        .iter()
        .map(|(id, e)| json!({ "lease_id": id, "error": e }))
        .collect();
    let mut resp = data(json!({
        "revoked": report.revoked,
        "failed": report.failed,
        "failures": failures,
    }));
    if report.failed > 0 {
        resp.warnings.push(format!(
            "{} leases could not be revoked; each is retried with backoff and shows its last error in sys/leases/lookup",
            report.failed
        ));
    }
    Ok(resp)
}

fn count(p: &Pipeline, req: &Request) -> Result<Response, ApiError> {
    let kind = params::string(&req.data, "type")?.unwrap_or_default();
    let router = p.router();
    let mut counts = serde_json::Map::new();
    let mut total = 0usize;
    match kind.as_str() {
        "all" => {
            for m in router.all() {
                let n = p.leases.count(&m.route_prefix())?;
                if n > 0 {
                    counts.insert(m.route_prefix(), n.into());
                    total += n;
                }
            }
        }
        "irrevocable" => {
            for id in p.leases.irrevocable(usize::MAX)? {
                let mount = router
                    .route(&id)
                    .map(|(m, _)| m.route_prefix())
                    .unwrap_or_default();
                let slot = counts.entry(mount).or_insert(Value::from(0u64));
                *slot = Value::from(slot.as_u64().unwrap_or(0) + 1);
                total += 1;
            }
        }
        _ => {
            return Err(ApiError::InvalidRequest(
                "invalid or missing \"type\": want \"irrevocable\" or \"all\"".into(),
            ));
        }
    }
    Ok(data(json!({ "lease_count": total, "counts": counts })))
}

fn list_irrevocable(p: &Pipeline, req: &Request) -> Result<Response, ApiError> {
    let kind = params::string(&req.data, "type")?.unwrap_or_default();
    if kind != "irrevocable" {
        return Err(ApiError::InvalidRequest(
            "invalid or missing \"type\": only \"irrevocable\" leases can be listed".into(),
        ));
    }
    let limit = match params::string(&req.data, "limit")?.as_deref() {
        None | Some("") => 10_000,
        Some("none") => usize::MAX,
        Some(n) => n.parse::<usize>().map_err(|_| {
            ApiError::InvalidRequest("invalid \"limit\": want a number or \"none\"".into())
        })?,
    };
    let ids = p.leases.irrevocable(limit.saturating_add(1))?;
    if ids.len() > limit {
        return Err(ApiError::InvalidRequest(format!(
            "more than {limit} irrevocable leases; use limit=none to list them all"
        )));
    }
    let mut leases = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(e) = p.leases.get(&id)? {
            leases.push(json!({
                "lease_id": e.lease_id,
                "mount_id": e.mount_uuid,
                "namespace": "",
                "expire_time": crate::clock::rfc3339_unix(e.expire_unix),
                "error": e.revocation.last_error,
            }));
        }
    }
    Ok(data(
        json!({ "lease_count": leases.len(), "leases": leases }),
    ))
}

fn accepted() -> Response {
    Response {
        outcome: Outcome::Accepted,
        ..Response::default()
    }
}

/// `path` relative to `mount` (the lease remembers the full request path).
fn relative_path(mount: &MountEntry, path: &str) -> String {
    path.strip_prefix(&mount.route_prefix())
        .unwrap_or(path)
        .to_owned()
}

/// Whether a write failed because the lease was deleted meanwhile.
/// `entry` with its expiry brought to `now`; `None` if it is already due
/// (or irrevocable, which only an operator changes).
fn expiring_now(entry: &LeaseEntry, now: i64) -> Option<LeaseEntry> {
    if entry.expire_unix <= now || entry.revocation.irrevocable {
        return None;
    }
    let mut next = entry.clone();
    next.expire_unix = now;
    Some(next)
}

fn is_gone(e: &BarrierError) -> bool {
    matches!(
        e,
        BarrierError::Storage(StorageError::PreconditionFailed { .. })
    )
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// A random number in `[0, 1)` for retry jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_be_bytes(b)) / 4_294_967_296.0
}

/// How long the manager sleeps when it has nothing due before its tick.
pub(crate) fn idle_wait(next_due_ms: Option<i64>, now_ms: i64, tick: Duration) -> Duration {
    match next_due_ms {
        Some(at) if at > now_ms => {
            Duration::from_millis(u64::try_from(at - now_ms).unwrap_or(0)).min(tick)
        }
        // Still due after a round that had room for it: it failed and was
        // rescheduled meanwhile, or is being handled; look again shortly
        // rather than spin.
        Some(_) => Duration::from_millis(50).min(tick),
        None => tick,
    }
}
