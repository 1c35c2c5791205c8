//! A mount on an in-memory barrier for engine tests.

use std::sync::Arc;

use serde_json::Value;
use sigil_hsm::SecretBytes;
use time::OffsetDateTime;

use crate::api_error::ApiError;
use crate::barrier::{Barrier, BarrierConfig};
use crate::engine::{CallerInfo, Engine, EngineCtx};
use crate::logical::{Data, Request, Response};
use crate::mounts::{MountEntry, Table};
use crate::storage::MemoryStorage;
use crate::view::BarrierView;

pub(crate) struct Harness {
    pub view: BarrierView,
    pub mount: MountEntry,
    pub now: OffsetDateTime,
    pub root: CallerInfo,
}

impl Harness {
    pub fn new(path: &str, kind: &str, options: &[(&str, &str)]) -> Self {
        let barrier = Barrier::new(Arc::new(MemoryStorage::new()), BarrierConfig::default());
        let init = barrier.initialize(&SecretBytes::random(32)).expect("ok");
        crate::storage::wait(barrier.storage().apply(init)).expect("ok");
        let mut mount = MountEntry::new(Table::Secrets, path, kind);
        for (k, v) in options {
            mount.options.insert((*k).into(), (*v).into());
        }
        let view = BarrierView::new(barrier, &mount.storage_prefix());
        Self {
            view,
            mount,
            now: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).expect("ok"),
            root: Self::make_caller("root"),
        }
    }

    fn make_caller(name: &str) -> CallerInfo {
        CallerInfo {
            accessor: format!("acc-{name}"),
            token_hash: format!("hash{name}"),
            display_name: name.into(),
            policies: vec!["root".into()],
        }
    }

    pub fn caller(&self, name: &str) -> CallerInfo {
        Self::make_caller(name)
    }

    pub fn ctx<'a>(&'a self, path: &'a str, caller: Option<&'a CallerInfo>) -> EngineCtx<'a> {
        EngineCtx {
            view: self.view.clone(),
            mount: &self.mount,
            path,
            caller,
            now: self.now,
        }
    }

    pub async fn run_as(
        &self,
        engine: &dyn Engine,
        path: &str,
        req: &Request,
        caller: Option<&CallerInfo>,
    ) -> Result<Response, ApiError> {
        let ctx = self.ctx(path, caller);
        engine.handle(&ctx, req).await
    }

    /// Runs `req` as root at `now` plus `later_secs`.
    pub async fn run_at(
        &self,
        engine: &dyn Engine,
        path: &str,
        req: &Request,
        later_secs: i64,
    ) -> Result<Response, ApiError> {
        let mut ctx = self.ctx(path, Some(&self.root));
        ctx.now += time::Duration::seconds(later_secs);
        engine.handle(&ctx, req).await
    }

    pub async fn run(
        &self,
        engine: &dyn Engine,
        path: &str,
        req: &Request,
    ) -> Result<Response, ApiError> {
        self.run_as(engine, path, req, Some(&self.root)).await
    }
}

/// A JSON object literal as request or response data.
pub(crate) fn data(v: Value) -> Data {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// What [`LeaseTestEngine`] handed out on one mount, and what it was told
/// since. Keyed by mount UUID so tests running at once do not meet.
#[derive(Debug, Default, Clone)]
pub(crate) struct LeaseTestState {
    /// Users handed out and not yet revoked.
    pub live: std::collections::BTreeSet<String>,
    /// Users revoked, in order.
    pub revoked: Vec<String>,
    /// Renewals: user and new expiry.
    pub renewed: Vec<(String, i64)>,
    /// Revocations attempted.
    pub revoke_calls: usize,
    /// The size of each batch [`Engine::revoke_many`] was given.
    pub revoke_batches: Vec<usize>,
    /// While set, revocation fails as an unreachable database would, for
    /// every user whose name contains this text (all users: empty text).
    pub failing: Option<String>,
}

impl LeaseTestState {
    fn fails_for(&self, user: &str) -> bool {
        self.failing.as_deref().is_some_and(|m| user.contains(m))
    }
}

static LEASE_TEST: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, LeaseTestState>>,
> = std::sync::LazyLock::new(Default::default);

/// The state of the `lease-test` mount with UUID `uuid`.
pub(crate) fn lease_test_state(uuid: &str) -> LeaseTestState {
    LEASE_TEST
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(uuid)
        .cloned()
        .unwrap_or_default()
}

fn with_state<T>(uuid: &str, f: impl FnOnce(&mut LeaseTestState) -> T) -> T {
    let mut g = LEASE_TEST.lock().unwrap_or_else(|p| p.into_inner());
    f(g.entry(uuid.to_owned()).or_default())
}

/// A secrets engine for tests of the lease machinery (type `lease-test`,
/// only in test builds): `creds/:name` hands out a user under a lease
/// (`ttl`, `max_ttl` and `renewable` from the request), `fail` with
/// `{"on": bool}` makes revocation fail like an unreachable database. It
/// stands beside the real database engine, never instead of it.
#[derive(Debug)]
pub(crate) struct LeaseTestEngine;

impl Engine for LeaseTestEngine {
    fn kind(&self) -> &'static str {
        "lease-test"
    }

    fn issues_leases(&self, path: &str, _op: crate::logical::Operation) -> bool {
        path.starts_with("creds/")
    }

    fn handle<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        req: &'a Request,
    ) -> futures::future::BoxFuture<'a, Result<Response, ApiError>> {
        Box::pin(async move {
            let uuid = &ctx.mount.uuid;
            if ctx.path == "fail" {
                let on = crate::params::boolean(&req.data, "on")?.unwrap_or(true);
                let matching = crate::params::string(&req.data, "match")?.unwrap_or_default();
                with_state(uuid, |s| s.failing = on.then_some(matching));
                return Ok(Response::empty());
            }
            let Some(name) = ctx.path.strip_prefix("creds/") else {
                return Err(crate::engine::unsupported_path(ctx.mount, ctx.path));
            };
            let user = format!("u-{name}-{}", crate::token::random_base62(8));
            with_state(uuid, |s| s.live.insert(user.clone()));
            let mut internal = Data::new();
            internal.insert("user".into(), user.clone().into());
            let mut resp = Response::data(data(serde_json::json!({ "username": user })));
            resp.secret = Some(crate::logical::SecretLease {
                ttl: crate::params::seconds(&req.data, "ttl")?.unwrap_or(0),
                max_ttl: crate::params::seconds(&req.data, "max_ttl")?.unwrap_or(0),
                renewable: crate::params::boolean(&req.data, "renewable")?.unwrap_or(true),
                internal,
            });
            Ok(resp)
        })
    }

    fn revoke_many<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        leases: &'a [crate::lease::LeaseEntry],
    ) -> futures::future::BoxFuture<'a, Vec<Result<(), ApiError>>> {
        with_state(&ctx.mount.uuid, |s| s.revoke_batches.push(leases.len()));
        Box::pin(futures::future::join_all(
            leases.iter().map(|lease| self.revoke(ctx, lease)),
        ))
    }

    fn revoke<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        lease: &'a crate::lease::LeaseEntry,
    ) -> futures::future::BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let user = lease
                .internal
                .get("user")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            with_state(&ctx.mount.uuid, |s| {
                s.revoke_calls += 1;
                if s.fails_for(&user) {
                    return Err(ApiError::Upstream(
                        "database \"test\" is unreachable: connection refused".into(),
                    ));
                }
                if s.live.remove(&user) {
                    s.revoked.push(user);
                }
                Ok(())
            })
        })
    }

    fn renew<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        lease: &'a crate::lease::LeaseEntry,
        expire_unix: i64,
    ) -> futures::future::BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let user = lease
                .internal
                .get("user")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            with_state(&ctx.mount.uuid, |s| {
                if s.fails_for(&user) {
                    return Err(ApiError::Upstream(
                        "database \"test\" is unreachable".into(),
                    ));
                }
                s.renewed.push((user, expire_unix));
                Ok(())
            })
        })
    }
}
