//! The request pipeline: the one path every request takes, whichever front
//! end it came through (docs/architecture.md, "Request pipeline"):
//!
//! `check path → route → authenticate → revocation filter → ACL → spend a
//! use → audit request → engine → lease registration → wrap → audit
//! response`.
//!
//! Audit is fail-closed: with any audit device enabled, a request that no
//! device recorded fails with 500 before the engine runs, so nothing changes.
//!
//! A [`Pipeline`] is built from barrier contents (mount tables, policies,
//! audit devices) after each unseal and dropped on seal.

mod control_plane_api;
pub(crate) mod global_mounts;
#[cfg(test)]
mod lease_tests;
mod leases;
mod namespaces;
mod policies;
mod quotas;
mod raft_ops;
mod revocation_cleanup;
mod revocations_api;
mod sys;
pub(crate) mod token_auth;
mod wrapping;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};
use sigil_hsm::SecretString;
use time::OffsetDateTime;

pub use leases::ExpireRound;
pub(crate) use leases::idle_wait;
pub use policies::PolicyStore;

use crate::api_error::ApiError;
use crate::audit::{AuditAuth, AuditBroker, AuditError, AuditMount, AuditRequest, AuditResponse};
use crate::barrier::Barrier;
use crate::control_plane::ControlPlane;
use crate::engine::{CallerInfo, Engine, EngineCtx};
use crate::lease::{LeaseSettings, LeaseStore};
use crate::logical::{self, Operation, Request, Response};
use crate::metrics::Metrics;
use crate::mounts::{MountEntry, Router, Table};
use crate::policy::Acl;
use crate::revocations::Revocations;
use crate::seal::SealManager;
use crate::token::{TokenEntry, TokenStore};
use crate::view::BarrierView;

/// Barrier key of both mount tables.
const MOUNTS_KEY: &str = "core/mounts";

/// A request's authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: SecretString,
    pub entry: TokenEntry,
    pub acl: Arc<Acl>,
    pub info: CallerInfo,
    /// The request's path grants `sudo`.
    pub sudo: bool,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.entry.is_root()
    }
}

/// Paths (relative to `sys/`) that need `sudo` on top of the operation's
/// capability, as in Vault's system backend.
const SYS_SUDO: &[&str] = &[
    "auth/",
    "audit",
    "audit/",
    "audit-hash/",
    "remount",
    "rotate",
    "raw",
    "raw/",
    "leases/revoke-prefix/",
    "leases/revoke-force/",
    "leases/lookup/",
    "revoke-prefix/",
    "revoke-force/",
    "revocations",
    "revocations/",
    "storage/raft/",
    "step-down",
];
/// The same for `auth/token/`.
const TOKEN_SUDO: &[&str] = &["revoke-orphan", "accessors", "tidy"];

#[derive(Debug)]
pub struct Pipeline {
    barrier: Barrier,
    generation: u64,
    tokens: TokenStore,
    router: RwLock<Arc<Router>>,
    /// Serialises mount-table changes.
    mount_lock: tokio::sync::Mutex<()>,
    engines: BTreeMap<&'static str, Arc<dyn Engine>>,
    policies: PolicyStore,
    /// The cell's control-plane replica (policies are written through it).
    control: Arc<ControlPlane>,
    audit: AuditBroker,
    /// Devices in the audit table, started or not (fail-closed when some
    /// are configured but none runs).
    audit_expected: AtomicUsize,
    revocation: Arc<Revocations>,
    metrics: Arc<Metrics>,
    /// Recent remounts, for `sys/remount/status/:id`.
    remounts: std::sync::Mutex<BTreeMap<String, Value>>,
    /// Shared roles this cell refused to apply, and why (a database role
    /// whose connection this cell lacks); shown by `sys/control-plane/status`.
    roles_refused: std::sync::Mutex<BTreeMap<String, String>>,
    root_acl: Arc<Acl>,
    /// For `sys/seal`, `sys/rotate` and `sys/key-status`, which go through
    /// the pipeline like everything else (audited, `sudo` where Vault wants
    /// it).
    seal: Arc<SealManager>,
    /// The node's Raft, for `sys/storage/raft/*` and `sys/step-down`.
    cell: Option<crate::raft::RaftCell>,
    leases: LeaseStore,
    lease_settings: LeaseSettings,
    /// Wakes the expiration manager (a short lease, a revoked token).
    lease_wake: Arc<tokio::sync::Notify>,
    quotas: quotas::Quotas,
}

impl Pipeline {
    /// Builds the pipeline from what the (unsealed) barrier holds, creating
    /// the default mounts the first time.
    pub async fn load(
        seal: Arc<SealManager>,
        revocation: Arc<Revocations>,
        metrics: Arc<Metrics>,
        cell: Option<crate::raft::RaftCell>,
        lease_settings: LeaseSettings,
        control: Arc<ControlPlane>,
    ) -> Result<Self, ApiError> {
        let barrier = seal.barrier().clone();
        let tokens = seal.tokens().clone();
        let generation = barrier.generation();
        let mounts: Vec<MountEntry> = match barrier.get(MOUNTS_KEY)? {
            Some(raw) => serde_json::from_slice(&raw)
                .map_err(|e| ApiError::Internal(format!("mount table is corrupt: {e}")))?,
            None => {
                let defaults = crate::mounts::default_mounts(false);
                barrier.put(MOUNTS_KEY, &to_json(&defaults)?).await?;
                defaults
            }
        };
        let engines = crate::engines::builtin()
            .into_iter()
            .map(|e| (e.kind(), e))
            .collect();
        let policies = PolicyStore::new(barrier.clone(), control.clone());
        let audit = AuditBroker::new();
        let pipeline = Self {
            generation,
            tokens,
            router: RwLock::new(Arc::new(Router::new(mounts))),
            mount_lock: tokio::sync::Mutex::new(()),
            engines,
            policies,
            control,
            audit,
            audit_expected: AtomicUsize::new(0),
            revocation,
            metrics,
            remounts: std::sync::Mutex::default(),
            roles_refused: std::sync::Mutex::default(),
            root_acl: Arc::new(Acl::root()),
            leases: LeaseStore::new(barrier.clone()),
            lease_settings,
            lease_wake: Arc::default(),
            quotas: quotas::Quotas::default(),
            barrier,
            seal,
            cell,
        };
        sys::load_audit_devices(&pipeline).await?;
        pipeline.load_quotas()?;
        Ok(pipeline)
    }

    /// Re-reads what other nodes of the cell may have changed through
    /// replication: the mount table, policies and the audit table (devices
    /// added elsewhere start here; removed ones stop).
    pub async fn refresh(&self) -> Result<(), ApiError> {
        let _guard = self.mount_lock.lock().await;
        if let Some(raw) = self.barrier.get(MOUNTS_KEY)? {
            let mounts: Vec<MountEntry> = serde_json::from_slice(&raw)
                .map_err(|e| ApiError::Internal(format!("mount table is corrupt: {e}")))?;
            *self.router.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Router::new(mounts));
        }
        self.policies.forget_all();
        self.control.forget();
        self.load_quotas()?;
        sys::sync_audit_devices(self).await
    }

    /// The cell's control-plane replica.
    pub fn control(&self) -> &Arc<ControlPlane> {
        &self.control
    }

    /// Revokes, in this cell's storage, what revocation records match and
    /// this cell has not cleaned up yet (the leader runs it).
    pub async fn clean_up_revocations(&self) -> Result<usize, ApiError> {
        revocation_cleanup::run(self).await
    }

    /// Enables and disables this cell's copies of global mounts to match
    /// the control plane (the leader runs it).
    pub async fn reconcile_global_mounts(&self) -> Result<(), ApiError> {
        global_mounts::reconcile(self).await
    }

    /// The node's Raft; a node on local storage has none.
    fn cell(&self) -> Result<&crate::raft::RaftCell, ApiError> {
        self.cell
            .as_ref()
            .ok_or_else(|| ApiError::InvalidRequest("this node does not use raft storage".into()))
    }

    /// The unseal this pipeline was built for.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Serves one request.
    pub async fn handle(&self, req: Request) -> Result<Response, ApiError> {
        let started = std::time::Instant::now();
        let op = req.operation;
        let (mount_label, result) = self.run(req).await;
        self.metrics
            .observe_request(op, &mount_label, started.elapsed(), result.as_ref().err());
        result
    }

    async fn run(&self, mut req: Request) -> (String, Result<Response, ApiError>) {
        if let Err(e) = logical::check_path(&req.path) {
            return (String::new(), Err(e));
        }
        let router = self.router();
        let Some((mount, rel)) = router.route(&req.path) else {
            return (
                String::new(),
                Err(ApiError::NotFound(format!(
                    "no handler for route {:?}. route entry not found.",
                    req.path
                ))),
            );
        };
        let label = mount.route_prefix();
        if let Err(e) = self.check_rate_limit(&req) {
            return (label, Err(e));
        }
        let rel = rel.to_owned();
        let result = self.run_routed(&mut req, &mount, &rel).await;
        (label, result)
    }

    async fn run_routed(
        &self,
        req: &mut Request,
        mount: &Arc<MountEntry>,
        rel: &str,
    ) -> Result<Response, ApiError> {
        let now = OffsetDateTime::now_utc();
        // Looking up a wrapping token, or unwrapping one named in the body,
        // needs no other credential: the wrapping token is the credential.
        if mount.mount_type == "system" && is_unauthenticated_wrapping(rel, req) {
            let audit_in = self.audit_input(req, mount, None);
            self.audit_request(&audit_in).await?;
            let result = if rel == "wrapping/lookup" {
                wrapping::lookup(self, req, now.unix_timestamp()).await
            } else {
                wrapping::unwrap_named(self, req).await
            }
            .map(|mut r| {
                r.mount_type = mount.mount_type.clone();
                r
            });
            self.audit_response(&audit_in, mount, result.as_ref())
                .await?;
            return result;
        }
        // An auth method's login needs no token: the method authenticates.
        if mount.table == Table::Auth
            && let Some(engine) = self.engines.get(mount.mount_type.as_str()).cloned()
            && engine.is_auth_method()
            && engine.unauthenticated(rel, req.operation)
        {
            return self.login(req, mount, rel, engine, now).await;
        }
        let mut caller = match self.authenticate(req, now.unix_timestamp()) {
            Ok(c) => c,
            // Unwrapping with a dead wrapping token is a bad request, not a
            // permission problem (as in Vault).
            Err(ApiError::PermissionDenied) if rel == "wrapping/unwrap" => {
                return self
                    .refused(req, mount, None, wrapping::invalid_token())
                    .await;
            }
            Err(e @ ApiError::PermissionDenied) => {
                return self.refused(req, mount, None, e).await;
            }
            Err(e) => return Err(e),
        };
        if self.revocation.is_revoked(&caller.entry) {
            self.metrics.revocation_token_refused();
            return self
                .refused(req, mount, Some(&caller), ApiError::PermissionDenied)
                .await;
        }
        let ctx = EngineCtx {
            view: BarrierView::new(self.barrier.clone(), &mount.storage_prefix()),
            mount,
            path: rel,
            caller: Some(&caller.info),
            now,
        };
        let engine = self.engines.get(mount.mount_type.as_str()).cloned();
        if req.operation == Operation::Update
            && let Some(engine) = &engine
            && engine.exists(&ctx, req)? == Some(false)
        {
            req.operation = Operation::Create;
        }
        let authorized = if is_self_filtering(mount, rel, req.operation) {
            // The handler shows only mounts the token can use at all.
            Ok(crate::policy::Authorized {
                sudo: false,
                root: caller.is_root(),
            })
        } else {
            caller
                .acl
                .authorize(req.operation, &req.path, &req.data, req.wrap_ttl)
        };
        let authorized = match authorized {
            Ok(a) if a.sudo || !needs_sudo(mount, rel) => a,
            Ok(_) => {
                tracing::debug!(path = %req.path, "request denied: needs sudo");
                return self
                    .refused(req, mount, Some(&caller), ApiError::PermissionDenied)
                    .await;
            }
            Err(denied) => {
                tracing::debug!(path = %req.path, reason = %denied, "request denied by policy");
                return self
                    .refused(req, mount, Some(&caller), ApiError::PermissionDenied)
                    .await;
            }
        };
        caller.sudo = authorized.sudo;
        // A lease-count quota stops a leased secret before it is made.
        if let Some(engine) = &engine
            && engine.issues_leases(rel, req.operation)
            && let Err(e) = self.check_lease_count(req)
        {
            return self.refused(req, mount, Some(&caller), e).await;
        }
        // Spend a use before the work: a token with no uses left is dead.
        let mut revoked_by_use = Vec::new();
        if caller.entry.num_uses > 0 {
            match self.tokens.spend_use(&caller.entry.hash).await? {
                None => {
                    return self
                        .refused(req, mount, Some(&caller), ApiError::PermissionDenied)
                        .await;
                }
                Some(spent) => revoked_by_use = spent.revoked,
            }
        }
        let audit_in = self.audit_input(req, mount, Some(&caller));
        self.audit_request(&audit_in).await?;

        let result = match mount.mount_type.as_str() {
            "system" => sys::handle(self, req, rel, &caller).await,
            "token" if mount.table == Table::Auth => {
                token_auth::handle(self, req, rel, &caller, mount).await
            }
            _ => match &engine {
                Some(engine) => match engine.handle(&ctx, req).await {
                    Ok(resp) if mount.global => {
                        global_mounts::share_role(self, engine.as_ref(), mount, rel, req.operation)
                            .await
                            .map(|()| resp)
                    }
                    other => other,
                },
                None => Err(ApiError::Internal(format!(
                    "no engine for mount type {:?}",
                    mount.mount_type
                ))),
            },
        };
        // Lease registration: a secret the engine handed out gets its lease
        // before anyone sees it.
        let result = match result {
            Ok(mut resp) => match (resp.secret.take(), &engine) {
                (Some(secret), Some(engine)) => self
                    .register_lease(req, &ctx, engine.as_ref(), &caller, &mut resp, secret)
                    .await
                    .map(|()| resp),
                _ => Ok(resp),
            },
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(mut resp) => {
                resp.mount_type = mount.mount_type.clone();
                match req.wrap_ttl {
                    Some(ttl) if should_wrap(&resp) && rel != "wrapping/unwrap" => {
                        wrapping::wrap(self, req, resp, ttl, now.unix_timestamp()).await
                    }
                    _ => Ok(resp),
                }
            }
            Err(e) => Err(e),
        };
        // The wrapping token's cubbyhole is read by the unwrap above; only
        // now may it go.
        self.cleanup_revoked(&revoked_by_use).await;
        self.audit_response(&audit_in, mount, result.as_ref())
            .await?;
        result
    }

    /// A login: the auth method checks the credential it was given, and
    /// the token it grants is issued here, as an orphan recording who
    /// logged in and through which mount.
    async fn login(
        &self,
        req: &Request,
        mount: &Arc<MountEntry>,
        rel: &str,
        engine: Arc<dyn Engine>,
        now: OffsetDateTime,
    ) -> Result<Response, ApiError> {
        let audit_in = self.audit_input(req, mount, None);
        self.audit_request(&audit_in).await?;
        let ctx = EngineCtx {
            view: BarrierView::new(self.barrier.clone(), &mount.storage_prefix()),
            mount,
            path: rel,
            caller: None,
            now,
        };
        let result = match engine.handle(&ctx, req).await {
            Ok(mut resp) => match resp.login.take() {
                Some(grant) if self.quarantined(mount, &grant, now) => {
                    Err(ApiError::PermissionDenied)
                }
                Some(grant) => self
                    .issue_login_token(req, mount, grant, now.unix_timestamp())
                    .await
                    .map(|(auth, warnings)| {
                        resp.auth = Some(auth);
                        resp.warnings.extend(warnings);
                        resp
                    }),
                None => Ok(resp),
            },
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(mut resp) => {
                resp.mount_type = mount.mount_type.clone();
                match req.wrap_ttl {
                    Some(ttl) if should_wrap(&resp) => {
                        wrapping::wrap(self, req, resp, ttl, now.unix_timestamp()).await
                    }
                    _ => Ok(resp),
                }
            }
            Err(e) => Err(e),
        };
        self.audit_response(&audit_in, mount, result.as_ref())
            .await?;
        result
    }

    /// Whether a quarantine refuses this login (its identity or role).
    fn quarantined(
        &self,
        mount: &MountEntry,
        grant: &logical::LoginGrant,
        now: OffsetDateTime,
    ) -> bool {
        let now_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let refused = self.revocation.login_refused(
            Some(grant.identity.as_str()).filter(|i| !i.is_empty()),
            &mount.route_prefix(),
            Some(grant.role.as_str()).filter(|r| !r.is_empty()),
            now_ms,
        );
        if let Some(id) = &refused {
            self.metrics.revocation_login_refused();
            tracing::info!(revocation = %id, identity = %grant.identity, mount = %mount.route_prefix(), "login refused by a quarantine");
        }
        refused.is_some()
    }

    /// Issues the token an auth method granted, within the auth mount's TTL
    /// limits (a TTL beyond the maximum is cut to it, with a warning, as in
    /// Vault).
    async fn issue_login_token(
        &self,
        req: &Request,
        mount: &MountEntry,
        grant: logical::LoginGrant,
        now: i64,
    ) -> Result<(logical::Auth, Vec<String>), ApiError> {
        let mut warnings = Vec::new();
        let mount_max = mount.config.effective_max_ttl();
        let mut max_ttl = match grant.max_ttl {
            0 => mount_max,
            m => m.min(mount_max),
        };
        if grant.explicit_max_ttl > 0 {
            max_ttl = max_ttl.min(grant.explicit_max_ttl);
        }
        let asked = match (grant.period, grant.ttl) {
            (p, _) if p > 0 => p,
            (_, 0) => mount.config.effective_default_ttl(),
            (_, t) => t,
        };
        let ttl = if asked > max_ttl && (grant.period == 0 || grant.explicit_max_ttl > 0) {
            warnings.push(crate::lease::schedule::capped_warning(asked, max_ttl));
            max_ttl
        } else {
            asked
        };
        let mut policies = grant.policies.clone();
        if !grant.no_default_policy && !policies.iter().any(|p| p == "default") {
            policies.push("default".into());
        }
        policies.sort();
        policies.dedup();
        let spec = crate::token::NewToken {
            parent: None,
            policies,
            display_name: grant.display_name,
            meta: grant.metadata,
            ttl,
            explicit_max_ttl: grant.explicit_max_ttl,
            max_ttl: if grant.period > 0 {
                grant.explicit_max_ttl
            } else {
                max_ttl
            },
            period: grant.period,
            renewable: true,
            num_uses: grant.num_uses,
            role: Some(grant.role).filter(|r| !r.is_empty()),
            path: req.path.clone(),
            identity: Some(grant.identity).filter(|i| !i.is_empty()),
            entity_id: String::new(),
            auth_mount: Some(mount.accessor.clone()),
            bound_cidrs: grant.bound_cidrs,
        };
        let (token, entry) = self.tokens.create(spec, now).await?;
        tracing::debug!(accessor = %entry.accessor, mount = %mount.route_prefix(), identity = ?entry.identity, "login");
        Ok((token_auth::auth_of(token, &entry, now), warnings))
    }

    /// Resolves the request's token to a caller with a compiled ACL.
    fn authenticate(&self, req: &Request, now: i64) -> Result<Caller, ApiError> {
        let token = req.token.clone().ok_or(ApiError::PermissionDenied)?;
        // A malformed token cannot exist; skip the lookup.
        if token.expose().is_empty() || token.expose().len() > 256 {
            return Err(ApiError::PermissionDenied);
        }
        let entry = self
            .tokens
            .lookup_live(&token, now)?
            .ok_or(ApiError::PermissionDenied)?;
        if !crate::auth::cidr::allows(&entry.bound_cidrs, req.client_addr.map(|a| a.ip())) {
            tracing::debug!(accessor = %entry.accessor, "token used from outside its bound CIDRs");
            return Err(ApiError::PermissionDenied);
        }
        let acl = if entry.is_root() {
            self.root_acl.clone()
        } else {
            self.policies.acl(&entry.policies)?
        };
        let info = CallerInfo {
            accessor: entry.accessor.clone(),
            token_hash: entry.hash.clone(),
            display_name: entry.display_name.clone(),
            policies: entry.policies.clone(),
        };
        Ok(Caller {
            token,
            entry,
            acl,
            info,
            sudo: false,
        })
    }

    /// Removes what belonged to revoked tokens: their leases are queued for
    /// revocation, their cubbyholes deleted.
    async fn cleanup_revoked(&self, hashes: &[String]) {
        if hashes.is_empty() {
            return;
        }
        if let Err(e) = self.expire_token_leases(hashes).await {
            // Their leases still expire on their own; sys/leases/tidy finds
            // leases of tokens that no longer exist.
            tracing::warn!(error = %e, "could not queue the leases of revoked tokens");
        }
        let Some(view) = self.cubbyhole_view() else {
            return;
        };
        for h in hashes {
            if let Err(e) = crate::engines::cubbyhole::destroy_for_token(&view, h).await {
                // No token can name it any more: it is unreachable ciphertext.
                tracing::warn!(error = %e, "could not clear a revoked token's cubbyhole");
            }
        }
    }

    /// The cubbyhole mount's view (every token's cubbyhole lies under it).
    fn cubbyhole_view(&self) -> Option<BarrierView> {
        let router = self.router();
        let cubby = router.all().find(|m| m.mount_type == "cubbyhole")?;
        Some(BarrierView::new(
            self.barrier.clone(),
            &cubby.storage_prefix(),
        ))
    }

    pub(crate) fn router(&self) -> Arc<Router> {
        self.router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reopens the audit devices' destinations (SIGHUP).
    pub async fn reopen_audit(&self) -> Result<(), ApiError> {
        self.audit
            .reopen()
            .await
            .map_err(|e| ApiError::Internal(format!("audit reopen: {e}")))
    }

    /// Revokes up to `limit` expired tokens and clears their cubbyholes.
    pub async fn sweep_expired_tokens(&self, limit: usize) -> Result<usize, ApiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let revoked = self.tokens.sweep_expired(now, limit).await?;
        self.cleanup_revoked(&revoked).await;
        if !revoked.is_empty() {
            tracing::info!(count = revoked.len(), "expired tokens revoked");
        }
        Ok(revoked.len())
    }

    /// What the audit log records of a request; `None` when no device is
    /// enabled (the hot path then builds nothing).
    fn audit_input(
        &self,
        req: &Request,
        mount: &MountEntry,
        caller: Option<&Caller>,
    ) -> Option<(AuditAuth, AuditRequest)> {
        if self.audit.is_empty() && self.audit_expected.load(Ordering::Acquire) == 0 {
            return None;
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let auth = caller
            .map(|c| AuditAuth {
                client_token: Some(c.token.clone()),
                accessor: c.entry.accessor.clone(),
                display_name: c.entry.display_name.clone(),
                policies: c.entry.policies.clone(),
                token_policies: c.entry.policies.clone(),
                identity_policies: Vec::new(),
                metadata: c.entry.meta.clone(),
                entity_id: c.entry.entity_id.clone(),
                token_type: "service".into(),
                token_ttl: c.entry.remaining_ttl(now),
                identity: c.entry.identity.clone(),
            })
            .unwrap_or_default();
        let accessor = caller
            .map(|c| c.entry.accessor.as_str())
            .unwrap_or_default();
        let request = AuditRequest::new(req, &AuditMount::from_mount(mount), accessor);
        Some((auth, request))
    }

    /// Records a refused request (unknown token, policy denial) when audit
    /// devices are configured: denials are what an auditor looks for. The
    /// refusal stands either way; a device that cannot record it turns it
    /// into the audit failure.
    async fn refused(
        &self,
        req: &Request,
        mount: &MountEntry,
        caller: Option<&Caller>,
        refusal: ApiError,
    ) -> Result<Response, ApiError> {
        let input = self.audit_input(req, mount, caller);
        if input.is_some() {
            self.audit_request(&input).await?;
            self.audit_response(&input, mount, Err(&refusal)).await?;
        }
        Err(refusal)
    }

    /// Fail-closed: with devices configured, the request goes on only if one
    /// of them recorded it. A configured device that could not start counts
    /// as configured, so a broken device never turns auditing off.
    async fn audit_request(
        &self,
        input: &Option<(AuditAuth, AuditRequest)>,
    ) -> Result<(), ApiError> {
        let Some((auth, request)) = input else {
            return Ok(());
        };
        if self.audit.is_empty() {
            return Err(self.audit_failed(AuditError::NoDeviceRecorded));
        }
        self.audit
            .log_request(auth, request, None)
            .await
            .map_err(|e| self.audit_failed(e))
    }

    async fn audit_response(
        &self,
        input: &Option<(AuditAuth, AuditRequest)>,
        mount: &MountEntry,
        result: Result<&Response, &ApiError>,
    ) -> Result<(), ApiError> {
        let Some((auth, request)) = input else {
            return Ok(());
        };
        if self.audit.is_empty() {
            // This request disabled the last device: nothing is left to
            // record its response, and nothing needs to.
            if self.audit_expected.load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            return Err(self.audit_failed(AuditError::NoDeviceRecorded));
        }
        let m = AuditMount::from_mount(mount);
        let empty = Response::empty();
        let (resp, error) = match result {
            Ok(r) => (r, None),
            Err(e) => (&empty, Some(e.to_string())),
        };
        self.audit
            .log_response(
                auth,
                request,
                &AuditResponse::new(resp, &m),
                error.as_deref(),
            )
            .await
            .map_err(|e| self.audit_failed(e))
    }

    fn audit_failed(&self, e: AuditError) -> ApiError {
        self.metrics.audit_failure();
        tracing::error!(error = %e, "no audit device recorded the request; refusing it");
        ApiError::Internal("internal error".into())
    }

    fn record_remount(&self, id: &str, info: Value) {
        let mut m = self.remounts.lock().unwrap_or_else(|p| p.into_inner());
        // Keep the most recent few; status is for the operator who just moved.
        if m.len() >= 64
            && let Some(k) = m.keys().next().cloned()
        {
            m.remove(&k);
        }
        m.insert(id.to_owned(), info);
    }

    fn remount_status(&self, id: &str) -> Option<Value> {
        let m = self.remounts.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id)
            .map(|info| json!({ "migration_id": id, "migration_info": info }))
    }

    fn metrics_response(&self, format: &str) -> Result<Response, ApiError> {
        let gauges = crate::metrics::Gauges {
            tokens: self.tokens.count().ok().map(|n| n as u64),
            audit_devices: self.audit.metrics().devices,
            raft: self.cell.as_ref().map(crate::raft::RaftCell::figures),
            revocation_records: Some(self.revocation.held() as u64),
            mesh: self.revocation.mesh().cloned(),
        };
        match format {
            "prometheus" => Ok(Response {
                raw: Some(logical::RawBody {
                    content_type: "text/plain; version=0.0.4".into(),
                    body: self.metrics.prometheus(&gauges).into_bytes(),
                }),
                ..Response::default()
            }),
            "" | "json" => Ok(data(self.metrics.json(&gauges))),
            other => Err(ApiError::InvalidRequest(format!(
                "unknown metrics format {other:?}: want prometheus or json"
            ))),
        }
    }

    /// Writes a new mount table and swaps the router. Callers hold
    /// `mount_lock`.
    async fn save_mounts(&self, entries: Vec<MountEntry>) -> Result<(), ApiError> {
        self.barrier.put(MOUNTS_KEY, &to_json(&entries)?).await?;
        *self.router.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Router::new(entries));
        Ok(())
    }
}

fn needs_sudo(mount: &MountEntry, rel: &str) -> bool {
    let list = match (mount.table, mount.mount_type.as_str()) {
        (Table::Secrets, "system") => SYS_SUDO,
        (Table::Auth, "token") => TOKEN_SUDO,
        _ => return false,
    };
    list.iter().any(|p| {
        if p.ends_with('/') {
            rel.starts_with(p)
        } else {
            rel == *p || rel.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
        }
    })
}

/// `sys/internal/ui/mounts[/:path]`: any valid token may ask, as in Vault
/// (clients use it to find a path's mount and KV version); the answer lists
/// only mounts the token's policies grant something on.
fn is_self_filtering(mount: &MountEntry, rel: &str, op: Operation) -> bool {
    mount.mount_type == "system"
        && op == Operation::Read
        && (rel == "internal/ui/mounts" || rel.starts_with("internal/ui/mounts/"))
}

fn is_unauthenticated_wrapping(rel: &str, req: &Request) -> bool {
    if !matches!(req.operation, Operation::Update | Operation::Create) {
        return false;
    }
    match rel {
        "wrapping/lookup" => true,
        "wrapping/unwrap" => req
            .data
            .get("token")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty()),
        _ => false,
    }
}

fn should_wrap(resp: &Response) -> bool {
    resp.data.is_some() || resp.auth.is_some() || resp.lease.is_some()
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::Internal(format!("encoding: {e}")))
}

/// `json!` for response data.
fn data(v: Value) -> Response {
    Response::from_json(v)
}
