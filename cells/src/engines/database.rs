//! The database secrets engine on PostgreSQL (docs/engines/database.md):
//! Vault's API for connections (`config/:name`, `rotate-root/:name`),
//! dynamic roles (`roles/:name`, `creds/:role`: a user and password per
//! call, under a lease, `VALID UNTIL` the lease's expiry) and static roles
//! (`static-roles/:name`, `static-creds/:name`, `rotate-role/:name`: one
//! existing user whose password Sigil rotates on a schedule).
//!
//! [`postgres`] talks to the database; [`password`] makes passwords.
//!
//! Passwords (the root's and static roles') live in the mount's barrier
//! view. A rotation writes the new password as *pending* before changing it
//! in the database, and commits it after; a crash in between leaves both
//! passwords known, and the next use finds which one the database accepts.
//!
//! | key | value |
//! | --- | --- |
//! | `config/<name>` | [`DbConfig`] |
//! | `role/<name>` | [`DynamicRole`] |
//! | `static-role/<name>` | [`StaticRole`] |

pub mod password;
pub mod postgres;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sigil_hsm::SecretString;
use time::OffsetDateTime;

use self::password::{CharsetRule, PasswordPolicy};
use self::postgres::{PostgresConfig, PostgresDb, PostgresError, Statements};
use crate::api_error::ApiError;
use crate::engine::{Engine, EngineCtx, unsupported_path};
use crate::engines::kv::KeyLocks;
use crate::lease::{LeaseEntry, schedule};
use crate::logical::{Data, Operation, Request, Response, SecretLease};
use crate::params;

const PLUGIN: &str = "postgresql-database-plugin";
/// Vault's floor for a static role's rotation period.
const MIN_ROTATION: u64 = 5;
/// How long a failed static rotation waits before the next try.
const ROTATION_RETRY: i64 = 10;

/// A connection, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DbConfig {
    pub plugin_name: String,
    pub connection_url: String,
    pub username: String,
    /// Inside the barrier only; never returned.
    pub password: String,
    /// A rotation in flight: the database may already have it.
    pub pending_password: Option<String>,
    pub allowed_roles: Vec<String>,
    pub max_open_connections: usize,
    pub password_policy: String,
    pub root_rotation_statements: Vec<String>,
    pub verify_connection: bool,
    /// Bumped on every change, so nodes rebuild their connection pools.
    pub generation: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DynamicRole {
    pub db_name: String,
    pub creation_statements: Vec<String>,
    pub revocation_statements: Vec<String>,
    pub rollback_statements: Vec<String>,
    pub renew_statements: Vec<String>,
    pub default_ttl: u64,
    pub max_ttl: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StaticRole {
    pub db_name: String,
    pub username: String,
    pub rotation_period: u64,
    pub rotation_statements: Vec<String>,
    /// The current password; inside the barrier only.
    pub password: String,
    pub pending_password: Option<String>,
    pub last_rotation_unix: i64,
    /// When the next rotation is due (or retried after a failure).
    pub next_rotation_unix: i64,
    pub last_error: Option<String>,
}

/// A connection pool's key: the mount's UUID and the connection's name.
type PoolKey = (String, String);

#[derive(Debug, Default)]
pub struct DatabaseEngine {
    locks: KeyLocks,
    /// Connection pools by mount UUID and connection name, with the config
    /// generation they were built from.
    pools: Mutex<HashMap<PoolKey, (u64, Arc<PostgresDb>)>>,
}

impl DatabaseEngine {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Engine for DatabaseEngine {
    fn kind(&self) -> &'static str {
        "database"
    }

    fn issues_leases(&self, path: &str, op: Operation) -> bool {
        op == Operation::Read && path.starts_with("creds/")
    }

    /// Dynamic roles only: a static role names an account of one cell's
    /// database.
    fn shared_roles(&self) -> Option<&'static str> {
        Some("roles/")
    }

    fn handle<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        req: &'a Request,
    ) -> BoxFuture<'a, Result<Response, ApiError>> {
        Box::pin(self.route(ctx, req))
    }

    fn revoke<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        lease: &'a LeaseEntry,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let (db_name, role, username) = lease_user(lease)?;
            let statements = self.role_statements(ctx, &role)?;
            let db = self.db(ctx, &db_name).await?;
            db.revoke_user(&statements, &username)
                .await
                .map_err(|e| upstream(&db_name, e))
        })
    }

    fn revoke_many<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        leases: &'a [LeaseEntry],
    ) -> BoxFuture<'a, Vec<Result<(), ApiError>>> {
        Box::pin(self.revoke_users(ctx, leases))
    }

    fn renew<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        lease: &'a LeaseEntry,
        expire_unix: i64,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let (db_name, role, username) = lease_user(lease)?;
            let statements = self.role_statements(ctx, &role)?;
            let db = self.db(ctx, &db_name).await?;
            let until = OffsetDateTime::from_unix_timestamp(expire_unix)
                .map_err(|e| ApiError::Internal(format!("expiry out of range: {e}")))?;
            db.renew_user(&statements, &username, until)
                .await
                .map_err(|e| upstream(&db_name, e))
        })
    }

    fn tick<'a>(&'a self, ctx: &'a EngineCtx<'a>) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(self.rotate_due(ctx))
    }
}

impl DatabaseEngine {
    async fn route(&self, ctx: &EngineCtx<'_>, req: &Request) -> Result<Response, ApiError> {
        let op = req.operation;
        let write = matches!(op, Operation::Create | Operation::Update);
        let list = matches!(op, Operation::List);
        let path = ctx.path.trim_end_matches('/');
        let (head, name) = path.split_once('/').unwrap_or((path, ""));
        if !name.is_empty() {
            crate::auth::token_params::check_role_name(name)?;
        }
        match (head, name.is_empty(), op) {
            ("config", true, _) if list || op == Operation::Read => {
                crate::engines::list_response(ctx.view.list("config/")?)
            }
            ("roles", true, _) if list || op == Operation::Read => {
                crate::engines::list_response(ctx.view.list("role/")?)
            }
            ("static-roles", true, _) if list || op == Operation::Read => {
                crate::engines::list_response(ctx.view.list("static-role/")?)
            }
            ("config", false, Operation::Read) => self.read_config(ctx, name),
            ("config", false, _) if write => self.write_config(ctx, req, name).await,
            ("config", false, Operation::Delete) => {
                ctx.view.delete(&format!("config/{name}")).await?;
                self.forget_pool(ctx, name);
                Ok(Response::empty())
            }
            ("reset", false, _) if write => {
                self.forget_pool(ctx, name);
                self.db(ctx, name).await?;
                Ok(Response::empty())
            }
            ("rotate-root", false, _) if write => self.rotate_root(ctx, name).await,
            ("roles", false, Operation::Read) => self.read_role(ctx, name),
            ("roles", false, _) if write => self.write_role(ctx, req, name).await,
            ("roles", false, Operation::Delete) => {
                ctx.view.delete(&format!("role/{name}")).await?;
                Ok(Response::empty())
            }
            ("creds", false, Operation::Read) => self.creds(ctx, name).await,
            ("static-roles", false, Operation::Read) => self.read_static(ctx, name),
            ("static-roles", false, _) if write => self.write_static(ctx, req, name).await,
            ("static-roles", false, Operation::Delete) => {
                ctx.view.delete(&format!("static-role/{name}")).await?;
                Ok(Response::empty())
            }
            ("static-creds", false, Operation::Read) => self.static_creds(ctx, name),
            ("rotate-role", false, _) if write => {
                self.rotate_static(ctx, name).await?;
                Ok(Response::empty())
            }
            (
                "config" | "reset" | "rotate-root" | "roles" | "creds" | "static-roles"
                | "static-creds" | "rotate-role",
                _,
                _,
            ) => Err(ApiError::UnsupportedOperation),
            _ => Err(unsupported_path(ctx.mount, ctx.path)),
        }
    }

    // ---- connections ---------------------------------------------------------

    fn config(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<DbConfig, ApiError> {
        ctx.view
            .get_json::<DbConfig>(&format!("config/{name}"))?
            .ok_or_else(|| ApiError::InvalidRequest(format!("database {name:?} is not configured")))
    }

    fn read_config(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<Response, ApiError> {
        let Some(c) = ctx.view.get_json::<DbConfig>(&format!("config/{name}"))? else {
            return Err(ApiError::NotFound(String::new()));
        };
        Ok(Response::from_json(json!({
            "plugin_name": c.plugin_name,
            "connection_details": {
                // A password written into the URL (rather than through
                // `{{password}}`) is not shown either.
                "connection_url": postgres::redact_url(&c.connection_url),
                "username": c.username,
                "max_open_connections": c.max_open_connections,
            },
            "allowed_roles": c.allowed_roles,
            "password_policy": c.password_policy,
            "root_credentials_rotate_statements": c.root_rotation_statements,
            "verify_connection": c.verify_connection,
        })))
    }

    async fn write_config(
        &self,
        ctx: &EngineCtx<'_>,
        req: &Request,
        name: &str,
    ) -> Result<Response, ApiError> {
        let d = &req.data;
        params::deny_unknown(
            d,
            &[
                "plugin_name",
                "plugin_version",
                "connection_url",
                "username",
                "password",
                "allowed_roles",
                "max_open_connections",
                "max_idle_connections",
                "max_connection_lifetime",
                "verify_connection",
                "password_policy",
                "root_rotation_statements",
                "username_template",
                "disable_escaping",
            ],
        )?;
        if params::string(d, "username_template")?.is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::InvalidRequest(
                "username_template is not supported: usernames are v-<display name>-<role>-<random>-<time>".into(),
            ));
        }
        let _guard = self
            .locks
            .lock(ctx.view.prefix(), &format!("config/{name}"))
            .await;
        let old = ctx.view.get_json::<DbConfig>(&format!("config/{name}"))?;
        let mut c = old.clone().unwrap_or(DbConfig {
            verify_connection: true,
            max_open_connections: postgres::DEFAULT_MAX_OPEN_CONNECTIONS,
            ..DbConfig::default()
        });
        if let Some(p) = params::string(d, "plugin_name")? {
            c.plugin_name = p;
        }
        if c.plugin_name != PLUGIN {
            return Err(ApiError::InvalidRequest(format!(
                "plugin_name must be {PLUGIN:?} (the only database plugin offered)"
            )));
        }
        if let Some(v) = params::string(d, "connection_url")? {
            c.connection_url = v;
        }
        if let Some(v) = params::string(d, "username")? {
            c.username = v;
        }
        if let Some(v) = params::string(d, "password")? {
            c.password = v;
            c.pending_password = None;
        }
        if let Some(v) = params::string_list(d, "allowed_roles")? {
            c.allowed_roles = v;
        }
        if let Some(v) = params::uint(d, "max_open_connections")? {
            c.max_open_connections = usize::try_from(v).unwrap_or(usize::MAX);
        }
        if let Some(v) = params::boolean(d, "verify_connection")? {
            c.verify_connection = v;
        }
        if let Some(v) = params::string(d, "password_policy")? {
            if !v.trim().is_empty() {
                parse_password_policy(&v)?;
            }
            c.password_policy = v;
        }
        if let Some(v) = statements_param(d, "root_rotation_statements")? {
            c.root_rotation_statements = v;
        }
        if c.connection_url.is_empty() {
            return Err(ApiError::InvalidRequest(
                "missing required field \"connection_url\"".into(),
            ));
        }
        c.generation = old.map_or(1, |o| o.generation + 1);
        let db = build_db(&c, name)?;
        if c.verify_connection {
            db.verify().await.map_err(|e| upstream(name, e))?;
        }
        ctx.view.put_json(&format!("config/{name}"), &c).await?;
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key(ctx, name), (c.generation, Arc::new(db)));
        tracing::info!(mount = %ctx.mount.route_prefix(), name, "database connection configured");
        Ok(Response::empty())
    }

    fn forget_pool(&self, ctx: &EngineCtx<'_>, name: &str) {
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key(ctx, name));
    }

    /// The connection pool for `name`, built from the stored config (and
    /// finishing a root rotation a crash interrupted).
    async fn db(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<Arc<PostgresDb>, ApiError> {
        let c = self.config(ctx, name)?;
        if let Some((generation, db)) = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key(ctx, name))
            && *generation == c.generation
            && c.pending_password.is_none()
        {
            return Ok(db.clone());
        }
        let c = match &c.pending_password {
            Some(_) => self.settle_root_rotation(ctx, name).await?,
            None => c,
        };
        let db = Arc::new(build_db(&c, name)?);
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key(ctx, name), (c.generation, db.clone()));
        Ok(db)
    }

    /// A root rotation was interrupted: keeps whichever password the
    /// database accepts.
    async fn settle_root_rotation(
        &self,
        ctx: &EngineCtx<'_>,
        name: &str,
    ) -> Result<DbConfig, ApiError> {
        let _guard = self
            .locks
            .lock(ctx.view.prefix(), &format!("config/{name}"))
            .await;
        let mut c = self.config(ctx, name)?;
        let Some(pending) = c.pending_password.take() else {
            return Ok(c);
        };
        let mut trial = c.clone();
        trial.password = pending;
        if build_db(&trial, name)?.verify().await.is_ok() {
            c.password = trial.password;
        }
        c.generation += 1;
        ctx.view.put_json(&format!("config/{name}"), &c).await?;
        tracing::warn!(name, "an interrupted root rotation was settled");
        Ok(c)
    }

    async fn rotate_root(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<Response, ApiError> {
        let db = self.db(ctx, name).await?;
        let _guard = self
            .locks
            .lock(ctx.view.prefix(), &format!("config/{name}"))
            .await;
        let mut c = self.config(ctx, name)?;
        if c.username.is_empty() || c.password.is_empty() {
            return Err(ApiError::InvalidRequest(
                "rotate-root needs username and password in the connection's config".into(),
            ));
        }
        let new = policy_of(&c.password_policy)?
            .generate()
            .map_err(|e| ApiError::Internal(format!("password generation: {e}")))?;
        c.pending_password = Some(new.expose().to_owned());
        ctx.view.put_json(&format!("config/{name}"), &c).await?;
        let outcome = db.rotate_root(&new).await;
        c.pending_password = None;
        if outcome.is_ok() {
            c.password = new.expose().to_owned();
        }
        c.generation += 1;
        ctx.view.put_json(&format!("config/{name}"), &c).await?;
        self.forget_pool(ctx, name);
        outcome.map_err(|e| upstream(name, e))?;
        tracing::info!(mount = %ctx.mount.route_prefix(), name, "database root password rotated");
        Ok(Response::empty())
    }

    // ---- dynamic roles ---------------------------------------------------------

    fn read_role(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<Response, ApiError> {
        let Some(r) = ctx.view.get_json::<DynamicRole>(&format!("role/{name}"))? else {
            return Err(ApiError::NotFound(String::new()));
        };
        Ok(Response::from_json(json!({
            "db_name": r.db_name,
            "creation_statements": r.creation_statements,
            "revocation_statements": r.revocation_statements,
            "rollback_statements": r.rollback_statements,
            "renew_statements": r.renew_statements,
            "default_ttl": r.default_ttl,
            "max_ttl": r.max_ttl,
            "credential_type": "password",
        })))
    }

    async fn write_role(
        &self,
        ctx: &EngineCtx<'_>,
        req: &Request,
        name: &str,
    ) -> Result<Response, ApiError> {
        let d = &req.data;
        params::deny_unknown(
            d,
            &[
                "db_name",
                "creation_statements",
                "revocation_statements",
                "rollback_statements",
                "renew_statements",
                "default_ttl",
                "max_ttl",
                "credential_type",
            ],
        )?;
        if params::string(d, "credential_type")?.is_some_and(|t| !t.is_empty() && t != "password") {
            return Err(ApiError::InvalidRequest(
                "credential_type must be \"password\"".into(),
            ));
        }
        let mut r = ctx
            .view
            .get_json::<DynamicRole>(&format!("role/{name}"))?
            .unwrap_or_default();
        if let Some(v) = params::string(d, "db_name")? {
            r.db_name = v;
        }
        for (f, slot) in [
            ("creation_statements", &mut r.creation_statements),
            ("revocation_statements", &mut r.revocation_statements),
            ("rollback_statements", &mut r.rollback_statements),
            ("renew_statements", &mut r.renew_statements),
        ] {
            if let Some(v) = statements_param(d, f)? {
                *slot = v;
            }
        }
        if let Some(v) = params::seconds(d, "default_ttl")? {
            r.default_ttl = v;
        }
        if let Some(v) = params::seconds(d, "max_ttl")? {
            r.max_ttl = v;
        }
        if r.db_name.is_empty() {
            return Err(ApiError::InvalidRequest(
                "missing required field \"db_name\"".into(),
            ));
        }
        if r.creation_statements.is_empty() {
            return Err(ApiError::InvalidRequest(
                "missing required field \"creation_statements\"".into(),
            ));
        }
        if r.max_ttl > 0 && r.default_ttl > r.max_ttl {
            return Err(ApiError::InvalidRequest(
                "default_ttl must not be greater than max_ttl".into(),
            ));
        }
        self.config(ctx, &r.db_name)?;
        ctx.view.put_json(&format!("role/{name}"), &r).await?;
        Ok(Response::empty())
    }

    /// The revocation and renewal statements of `role`; the defaults when
    /// the role is gone (its leases must still be revocable).
    /// [`Engine::revoke_many`]: the users of each connection and role are
    /// revoked together ([`PostgresDb::revoke_users`]).
    async fn revoke_users(
        &self,
        ctx: &EngineCtx<'_>,
        leases: &[LeaseEntry],
    ) -> Vec<Result<(), ApiError>> {
        let mut results: Vec<Option<Result<(), ApiError>>> = vec![None; leases.len()];
        // (connection, role) -> (positions, usernames)
        let mut groups: BTreeMap<(String, String), (Vec<usize>, Vec<String>)> = BTreeMap::new();
        for (i, lease) in leases.iter().enumerate() {
            match lease_user(lease) {
                Ok((db_name, role, username)) => {
                    let group = groups.entry((db_name, role)).or_default();
                    group.0.push(i);
                    group.1.push(username);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        for ((db_name, role), (positions, usernames)) in groups {
            let outcome = match self.role_statements(ctx, &role) {
                Ok(statements) => match self.db(ctx, &db_name).await {
                    Ok(db) => {
                        let names: Vec<&str> = usernames.iter().map(String::as_str).collect();
                        Ok(db
                            .revoke_users(&statements, &names)
                            .await
                            .into_iter()
                            .map(|r| r.map_err(|e| upstream(&db_name, e)))
                            .collect::<Vec<_>>())
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match outcome {
                Ok(each) => {
                    for (i, r) in positions.into_iter().zip(each) {
                        results[i] = Some(r);
                    }
                }
                Err(e) => {
                    for i in positions {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ApiError::Internal("lease left unanswered".into()))))
            .collect()
    }

    fn role_statements(&self, ctx: &EngineCtx<'_>, role: &str) -> Result<Statements, ApiError> {
        let r = ctx
            .view
            .get_json::<DynamicRole>(&format!("role/{role}"))?
            .unwrap_or_default();
        Ok(Statements {
            creation: r.creation_statements,
            revocation: r.revocation_statements,
            rollback: r.rollback_statements,
            renewal: r.renew_statements,
            rotation: Vec::new(),
        })
    }

    async fn creds(&self, ctx: &EngineCtx<'_>, role_name: &str) -> Result<Response, ApiError> {
        let role = ctx
            .view
            .get_json::<DynamicRole>(&format!("role/{role_name}"))?
            .ok_or_else(|| ApiError::InvalidRequest(format!("unknown role: {role_name}")))?;
        let c = self.config(ctx, &role.db_name)?;
        if !role_allowed(&c.allowed_roles, role_name) {
            return Err(ApiError::InvalidRequest(format!(
                "{role_name:?} is not an allowed role of database {:?}",
                role.db_name
            )));
        }
        let grant = schedule::grant(
            Some(role.default_ttl),
            Some(role.max_ttl),
            ctx.mount.config.effective_default_ttl(),
            ctx.mount.config.effective_max_ttl(),
        );
        let display = ctx.caller.map_or("token", |c| c.display_name.as_str());
        let username = postgres::generate_username(display, role_name, ctx.now)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let password = policy_of(&c.password_policy)?
            .generate()
            .map_err(|e| ApiError::Internal(format!("password generation: {e}")))?;
        let expires = ctx.now + Duration::from_secs(grant.ttl);
        let db = self.db(ctx, &role.db_name).await?;
        let statements = Statements {
            creation: role.creation_statements.clone(),
            rollback: role.rollback_statements.clone(),
            ..Statements::default()
        };
        db.create_user(&statements, &username, &password, expires)
            .await
            .map_err(|e| upstream(&role.db_name, e))?;
        let mut internal = Data::new();
        internal.insert("username".into(), username.clone().into());
        internal.insert("role".into(), role_name.into());
        internal.insert("db_name".into(), role.db_name.clone().into());
        let mut resp =
            Response::from_json(json!({ "username": username, "password": password.expose() }));
        resp.secret = Some(SecretLease {
            ttl: grant.ttl,
            max_ttl: grant.max_ttl,
            renewable: true,
            internal,
        });
        if grant.capped {
            resp.warnings
                .push(schedule::capped_warning(role.default_ttl, grant.max_ttl));
        }
        Ok(resp)
    }

    // ---- static roles ------------------------------------------------------------

    fn static_role(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<StaticRole, ApiError> {
        ctx.view
            .get_json::<StaticRole>(&format!("static-role/{name}"))?
            .ok_or_else(|| ApiError::InvalidRequest(format!("unknown static role: {name}")))
    }

    fn read_static(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<Response, ApiError> {
        let Some(r) = ctx
            .view
            .get_json::<StaticRole>(&format!("static-role/{name}"))?
        else {
            return Err(ApiError::NotFound(String::new()));
        };
        Ok(Response::from_json(json!({
            "db_name": r.db_name,
            "username": r.username,
            "rotation_period": r.rotation_period,
            "rotation_statements": r.rotation_statements,
            "last_vault_rotation": crate::clock::rfc3339_unix(r.last_rotation_unix),
            "next_vault_rotation": crate::clock::rfc3339_unix(r.next_rotation_unix),
            "last_rotation_error": r.last_error,
        })))
    }

    async fn write_static(
        &self,
        ctx: &EngineCtx<'_>,
        req: &Request,
        name: &str,
    ) -> Result<Response, ApiError> {
        let d = &req.data;
        params::deny_unknown(
            d,
            &[
                "db_name",
                "username",
                "rotation_period",
                "rotation_statements",
                "credential_type",
            ],
        )?;
        let key = format!("static-role/{name}");
        let old = ctx.view.get_json::<StaticRole>(&key)?;
        let mut r = old.clone().unwrap_or_default();
        if let Some(v) = params::string(d, "db_name")? {
            r.db_name = v;
        }
        if let Some(v) = params::string(d, "username")? {
            if old.as_ref().is_some_and(|o| o.username != v) {
                return Err(ApiError::InvalidRequest(
                    "cannot change the username of a static role".into(),
                ));
            }
            postgres::validate_username(&v).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
            r.username = v;
        }
        if let Some(v) = params::seconds(d, "rotation_period")? {
            r.rotation_period = v;
        }
        if let Some(v) = statements_param(d, "rotation_statements")? {
            r.rotation_statements = v;
        }
        if r.db_name.is_empty() || r.username.is_empty() {
            return Err(ApiError::InvalidRequest(
                "db_name and username are required".into(),
            ));
        }
        if r.rotation_period < MIN_ROTATION {
            return Err(ApiError::InvalidRequest(format!(
                "rotation_period must be at least {MIN_ROTATION} seconds"
            )));
        }
        let c = self.config(ctx, &r.db_name)?;
        if !role_allowed(&c.allowed_roles, name) {
            return Err(ApiError::InvalidRequest(format!(
                "{name:?} is not an allowed role of database {:?}",
                r.db_name
            )));
        }
        let now = ctx.now.unix_timestamp();
        if old.is_none() {
            // Sigil takes the account over now: a first rotation.
            r.next_rotation_unix = now;
            ctx.view.put_json(&key, &r).await?;
            if let Err(e) = self.rotate_static(ctx, name).await {
                ctx.view.delete(&key).await?;
                return Err(e);
            }
        } else {
            r.next_rotation_unix = r.last_rotation_unix.saturating_add(secs(r.rotation_period));
            ctx.view.put_json(&key, &r).await?;
        }
        Ok(Response::empty())
    }

    fn static_creds(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<Response, ApiError> {
        let r = self.static_role(ctx, name)?;
        let now = ctx.now.unix_timestamp();
        Ok(Response::from_json(json!({
            "username": r.username,
            "password": r.password,
            "last_vault_rotation": crate::clock::rfc3339_unix(r.last_rotation_unix),
            "rotation_period": r.rotation_period,
            "ttl": u64::try_from(r.next_rotation_unix - now).unwrap_or(0),
        })))
    }

    /// Rotates a static role's password now: pending first, then the
    /// database, then committed. A failure keeps the old password and
    /// schedules a retry.
    async fn rotate_static(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<(), ApiError> {
        let key = format!("static-role/{name}");
        let _guard = self.locks.lock(ctx.view.prefix(), &key).await;
        let mut r = self.static_role(ctx, name)?;
        let c = self.config(ctx, &r.db_name)?;
        let new = policy_of(&c.password_policy)?
            .generate()
            .map_err(|e| ApiError::Internal(format!("password generation: {e}")))?;
        r.pending_password = Some(new.expose().to_owned());
        ctx.view.put_json(&key, &r).await?;
        let statements = Statements {
            rotation: r.rotation_statements.clone(),
            ..Statements::default()
        };
        let outcome = match self.db(ctx, &r.db_name).await {
            Ok(db) => db
                .set_password(&statements, &r.username, &new)
                .await
                .map_err(|e| upstream(&r.db_name, e)),
            Err(e) => Err(e),
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        r.pending_password = None;
        match &outcome {
            Ok(()) => {
                r.password = new.expose().to_owned();
                r.last_rotation_unix = now;
                r.next_rotation_unix = now.saturating_add(secs(r.rotation_period));
                r.last_error = None;
                tracing::info!(mount = %ctx.mount.route_prefix(), role = name, "static role password rotated");
            }
            Err(e) => {
                r.next_rotation_unix = now + ROTATION_RETRY;
                r.last_error = Some(e.to_string());
                tracing::warn!(mount = %ctx.mount.route_prefix(), role = name, error = %e, "static role rotation failed; will retry");
            }
        }
        ctx.view.put_json(&key, &r).await?;
        outcome
    }

    /// Rotates every static role whose time has come (run by the leader).
    async fn rotate_due(&self, ctx: &EngineCtx<'_>) -> Result<(), ApiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for name in ctx.view.list("static-role/")? {
            if name.ends_with('/') {
                continue;
            }
            let due = ctx
                .view
                .get_json::<StaticRole>(&format!("static-role/{name}"))?
                .is_some_and(|r| r.next_rotation_unix <= now);
            if due {
                // Failures are recorded on the role and retried.
                let _ = self.rotate_static(ctx, &name).await;
            }
        }
        Ok(())
    }
}

fn key(ctx: &EngineCtx<'_>, name: &str) -> PoolKey {
    (ctx.mount.uuid.clone(), name.to_owned())
}

fn build_db(c: &DbConfig, name: &str) -> Result<PostgresDb, ApiError> {
    PostgresDb::new(PostgresConfig {
        connection_url: c.connection_url.clone(),
        username: c.username.clone(),
        password: SecretString::new(c.password.clone()),
        max_open_connections: c.max_open_connections.max(1),
        root_rotation_statements: c.root_rotation_statements.clone(),
        ..PostgresConfig::default()
    })
    .map_err(|e| ApiError::InvalidRequest(format!("database {name:?}: {e}")))
}

/// A database failure as the client sees it: a bad statement is the
/// operator's to fix (400); anything else is the database's (502).
fn upstream(name: &str, e: PostgresError) -> ApiError {
    match e {
        PostgresError::InvalidConfig { .. }
        | PostgresError::InvalidUsername { .. }
        | PostgresError::InvalidPassword { .. }
        | PostgresError::MissingStatements { .. }
        | PostgresError::NulByte { .. } => {
            ApiError::InvalidRequest(format!("database {name:?}: {e}"))
        }
        e => ApiError::Upstream(format!("database {name:?}: {e}")),
    }
}

fn lease_user(lease: &LeaseEntry) -> Result<(String, String, String), ApiError> {
    let field = |k: &str| {
        lease
            .internal
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Internal(format!("lease is missing its {k}")))
    };
    Ok((field("db_name")?, field("role")?, field("username")?))
}

/// `allowed_roles`: names or globs; empty allows none (as in Vault).
fn role_allowed(allowed: &[String], role: &str) -> bool {
    allowed
        .iter()
        .any(|p| crate::auth::glob::glob_match(p, role))
}

/// Statements as a list, or one string (Vault accepts both).
fn statements_param(d: &Data, field: &str) -> Result<Option<Vec<String>>, ApiError> {
    match d.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(
            Some(s.clone())
                .filter(|s| !s.trim().is_empty())
                .into_iter()
                .collect(),
        )),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::InvalidRequest(format!("{field} must be strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Some(v.into_iter().filter(|s| !s.trim().is_empty()).collect())),
        Some(_) => Err(ApiError::InvalidRequest(format!(
            "{field} must be a string or a list of strings"
        ))),
    }
}

fn policy_of(text: &str) -> Result<PasswordPolicy, ApiError> {
    if text.trim().is_empty() {
        return Ok(PasswordPolicy::default());
    }
    parse_password_policy(text)
}

/// A password policy document, in Vault's format (HCL or JSON):
/// `length = 24` and `rule "charset" { charset = "..." min-chars = 1 }`.
pub fn parse_password_policy(text: &str) -> Result<PasswordPolicy, ApiError> {
    use crate::policy::hcl;
    let bad = |m: String| ApiError::InvalidRequest(format!("password_policy: {m}"));
    let entries =
        hcl::parse(text).map_err(|e| bad(format!("line {}: {}", e.pos.line, e.message)))?;
    let mut policy = PasswordPolicy {
        length: 0,
        rules: Vec::new(),
    };
    for e in entries {
        match (e.key.as_str(), &e.value.value) {
            ("length", hcl::Value::Number(n)) => {
                policy.length = n
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| bad("length must be a positive integer".into()))?;
            }
            ("rule", hcl::Value::Object(body))
                if e.labels.first().is_some_and(|l| l.0 == "charset") =>
            {
                let mut charset = None;
                let mut min = 0usize;
                for f in body {
                    match (f.key.as_str(), &f.value.value) {
                        ("charset", hcl::Value::Str(s)) => charset = Some(s.clone()),
                        ("min-chars" | "min_chars", hcl::Value::Number(n)) => {
                            min = n
                                .as_u64()
                                .and_then(|n| usize::try_from(n).ok())
                                .ok_or_else(|| bad("min-chars must be an integer".into()))?;
                        }
                        (k, _) => {
                            return Err(bad(format!("unknown field {k:?} in a charset rule")));
                        }
                    }
                }
                let charset = charset.ok_or_else(|| bad("a charset rule needs charset".into()))?;
                policy.rules.push(CharsetRule::new(charset, min));
            }
            (k, _) => return Err(bad(format!("unknown or malformed entry {k:?}"))),
        }
    }
    policy.validate().map_err(|e| bad(e.to_string()))?;
    Ok(policy)
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
