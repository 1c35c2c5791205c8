//! The interface between the pipeline and a secrets engine.
//!
//! An engine is mounted at one or more paths; each mount gives it a private
//! [`BarrierView`] and its own [`MountEntry`] (options such as the KV
//! version, TTL defaults). The pipeline has already authenticated the caller,
//! checked policy and audited the request when [`Engine::handle`] runs, so an
//! engine only does its own job on its own view.

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::future::BoxFuture;
use time::OffsetDateTime;

use crate::api_error::ApiError;
use crate::lease::LeaseEntry;
use crate::logical::{Operation, Request, Response};
use crate::mounts::MountEntry;
use crate::view::BarrierView;

/// Most leases in one [`Engine::revoke_many`] call.
pub const REVOKE_BATCH: usize = 128;
/// Revocations in flight at once in the default [`Engine::revoke_many`].
const REVOKE_MANY_PARALLEL: usize = 8;

/// Who is calling, as far as an engine needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerInfo {
    /// Stable, non-secret identifier of the calling token.
    pub accessor: String,
    /// Keyed hash of the calling token: the key of its cubbyhole.
    pub token_hash: String,
    pub display_name: String,
    pub policies: Vec<String>,
}

/// Everything an engine gets with a request.
#[derive(Debug, Clone)]
pub struct EngineCtx<'a> {
    /// The mount's private storage.
    pub view: BarrierView,
    pub mount: &'a MountEntry,
    /// The request path relative to the mount (no leading `/`; may be empty
    /// or end in `/`).
    pub path: &'a str,
    pub caller: Option<&'a CallerInfo>,
    pub now: OffsetDateTime,
}

pub trait Engine: Send + Sync + Debug {
    /// The mount `type` this engine serves (`kv`, `cubbyhole`, ...).
    fn kind(&self) -> &'static str;

    /// Checks and normalises mount options when the engine is mounted or
    /// tuned (KV fills in `version`); unknown or invalid options are 400.
    fn check_options(
        &self,
        options: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        if let Some(k) = options.keys().next() {
            return Err(ApiError::InvalidRequest(format!(
                "{} mounts take no option {k:?}",
                self.kind()
            )));
        }
        Ok(BTreeMap::new())
    }

    /// Whether this is an auth method (mounted under `auth/`), not a
    /// secrets engine.
    fn is_auth_method(&self) -> bool {
        false
    }

    /// Where the role definitions live that a global mount of this engine
    /// shares with every cell of the federation: the path prefix, relative
    /// to the mount, of its role endpoint (`roles/` for database, `role/`
    /// for AppRole and JWT). A role's definition is what a read of
    /// `<prefix><name>` answers, and writing those same fields back must
    /// recreate it; it names no credential (secret IDs, role IDs, passwords
    /// and static roles stay in their cell). `None`: nothing is shared.
    fn shared_roles(&self) -> Option<&'static str> {
        None
    }

    /// Whether a request to `path` (relative to the mount) needs no token:
    /// an auth method's login. Such requests skip authentication and ACL
    /// checks; the engine authenticates the caller itself.
    fn unauthenticated(&self, path: &str, op: Operation) -> bool {
        let _ = (path, op);
        false
    }

    /// Whether a request may hand out a leased secret (lease-count quotas
    /// are checked before such requests run).
    fn issues_leases(&self, path: &str, op: Operation) -> bool {
        let _ = (path, op);
        false
    }

    /// For a write, whether its target already exists, which makes the
    /// request an `update` rather than a `create` for policy purposes.
    /// `None`: the engine does not tell them apart, and every write is an
    /// `update` (as in Vault without an existence check).
    fn exists(&self, ctx: &EngineCtx<'_>, req: &Request) -> Result<Option<bool>, ApiError> {
        let _ = (ctx, req);
        Ok(None)
    }

    /// Serves one request.
    fn handle<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        req: &'a Request,
    ) -> BoxFuture<'a, Result<Response, ApiError>>;

    /// Revokes what `lease` stands for (drops a database user). The
    /// expiration manager calls it on the cell's leader, and may call it
    /// again for the same lease (a retry, or a new leader finishing an old
    /// one's work): it must succeed when nothing is left to revoke.
    /// `ctx.path` is empty; the lease's request path is `lease.path`. The
    /// default has nothing to undo.
    fn revoke<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        lease: &'a LeaseEntry,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        let _ = (ctx, lease);
        Box::pin(async { Ok(()) })
    }

    /// Revokes many leases of one mount, answering for each in order. Bulk
    /// revocation and the expiration manager call this with up to
    /// [`REVOKE_BATCH`] leases, under one revocation timeout; the same rules
    /// as [`revoke`](Self::revoke) hold for each. An engine whose backend
    /// does better with batches (one database transaction for many users)
    /// overrides it; the default revokes them one by one, a few at a time.
    fn revoke_many<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        leases: &'a [LeaseEntry],
    ) -> BoxFuture<'a, Vec<Result<(), ApiError>>> {
        use futures::StreamExt;
        Box::pin(
            futures::stream::iter(leases)
                .map(move |lease| self.revoke(ctx, lease))
                .buffered(REVOKE_MANY_PARALLEL)
                .collect(),
        )
    }

    /// Extends what `lease` stands for until `expire_unix` (a database
    /// user's `VALID UNTIL`). Runs before the lease's new expiry is stored;
    /// an error leaves the lease as it was. The default has nothing to do.
    fn renew<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        lease: &'a LeaseEntry,
        expire_unix: i64,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        let _ = (ctx, lease, expire_unix);
        Box::pin(async { Ok(()) })
    }

    /// Periodic work of a mount (a static database role's scheduled
    /// rotation). The cell's leader calls it about once a second for every
    /// mount of the engine; errors are logged. The default does nothing.
    fn tick<'a>(&'a self, ctx: &'a EngineCtx<'a>) -> BoxFuture<'a, Result<(), ApiError>> {
        let _ = ctx;
        Box::pin(async { Ok(()) })
    }

    /// Runs after the mount's options change through tune (KV upgrades v1
    /// data to v2 here). The default does nothing.
    fn options_changed<'a>(
        &'a self,
        view: &'a BarrierView,
        old: &'a BTreeMap<String, String>,
        new: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        let _ = (view, old, new);
        Box::pin(async { Ok(()) })
    }
}

/// The answer for a path an engine has no handler for.
pub fn unsupported_path(mount: &MountEntry, path: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no handler for route \"{}{path}\". route entry not found.",
        mount.route_prefix()
    ))
}
