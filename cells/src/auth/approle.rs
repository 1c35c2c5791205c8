//! AppRole: a machine logs in with a role ID (which names its role, like a
//! user name) and a secret ID (a credential issued for it, possibly
//! limited in uses, lifetime and source addresses). Vault's API, paths and
//! answers (docs/auth.md, "AppRole").
//!
//! Storage keys are not encrypted (only values are), so no credential
//! appears in a key: role IDs and secret IDs are indexed by an HMAC under a
//! per-mount key that lives inside the barrier.
//!
//! | key | value |
//! | --- | --- |
//! | `salt` | the mount's HMAC key |
//! | `role/<name>` | [`Role`] |
//! | `role_id/<hmac of role ID>` | the role's name |
//! | `secret_id/<role>/<hmac of secret ID>` | [`SecretIdEntry`] |
//! | `accessor/<role>/<accessor>` | the HMAC of its secret ID |

use std::collections::BTreeMap;
use std::net::IpAddr;

use aws_lc_rs::hmac;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sigil_hsm::SecretBytes;

use super::cidr;
use super::token_params::{self, TokenParams, check_role_name};
use crate::api_error::ApiError;
use crate::clock;
use crate::engine::{Engine, EngineCtx, unsupported_path};
use crate::engines::kv::KeyLocks;
use crate::logical::{Data, Operation, Request, Response};
use crate::params;

const SALT: &str = "salt";
/// The answer for every failed credential check, so that a caller cannot
/// tell an unknown role ID from a wrong secret ID.
const INVALID: &str = "invalid role or secret ID";
/// Longest role ID or secret ID accepted.
const MAX_ID_LEN: usize = 4096;

/// One AppRole role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Role {
    pub name: String,
    /// Inside the barrier only; the index key is its HMAC.
    pub role_id: String,
    pub bind_secret_id: bool,
    pub secret_id_bound_cidrs: Vec<String>,
    /// Uses of each new secret ID; 0 unlimited.
    pub secret_id_num_uses: u64,
    /// Lifetime of each new secret ID, seconds; 0 unlimited.
    pub secret_id_ttl: u64,
    pub local_secret_ids: bool,
    pub token: TokenParams,
}

/// A secret ID, stored under the HMAC of its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretIdEntry {
    pub accessor: String,
    pub creation_unix: i64,
    pub last_updated_unix: i64,
    pub expiration_unix: Option<i64>,
    /// Uses left; 0 unlimited.
    pub num_uses: u64,
    /// The TTL it was issued with (seconds; 0 none).
    pub ttl: u64,
    pub metadata: BTreeMap<String, String>,
    pub cidr_list: Vec<String>,
    pub token_bound_cidrs: Vec<String>,
}

#[derive(Debug, Default)]
pub struct AppRoleEngine {
    /// Serialises changes to one secret ID (spending a use) and to roles.
    locks: KeyLocks,
    /// Serialises creating a mount's HMAC key (taken inside the locks
    /// above, never around them).
    salt_lock: tokio::sync::Mutex<()>,
}

impl AppRoleEngine {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Engine for AppRoleEngine {
    fn kind(&self) -> &'static str {
        "approle"
    }

    fn is_auth_method(&self) -> bool {
        true
    }

    /// The role's settings; its role ID and secret IDs are this cell's own.
    fn shared_roles(&self) -> Option<&'static str> {
        Some("role/")
    }

    fn unauthenticated(&self, path: &str, op: Operation) -> bool {
        path == "login" && matches!(op, Operation::Create | Operation::Update)
    }

    fn handle<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        req: &'a Request,
    ) -> BoxFuture<'a, Result<Response, ApiError>> {
        Box::pin(self.route(ctx, req))
    }
}

impl AppRoleEngine {
    async fn route(&self, ctx: &EngineCtx<'_>, req: &Request) -> Result<Response, ApiError> {
        let op = req.operation;
        let write = matches!(op, Operation::Create | Operation::Update);
        let path = ctx.path.trim_end_matches('/');
        if path == "login" && write {
            return self.login(ctx, req).await;
        }
        if path == "tidy/secret-id" && write {
            return self.tidy(ctx).await;
        }
        if path == "role" && matches!(op, Operation::List | Operation::Read) {
            return crate::engines::list_response(
                ctx.view
                    .list("role/")?
                    .into_iter()
                    .filter(|k| !k.ends_with('/'))
                    .collect(),
            );
        }
        let Some(rest) = path.strip_prefix("role/") else {
            return Err(unsupported_path(ctx.mount, ctx.path));
        };
        let (name, sub) = rest.split_once('/').unwrap_or((rest, ""));
        check_role_name(name)?;
        match (sub, op) {
            ("", Operation::Read) => self.read_role(ctx, name),
            ("", Operation::Create | Operation::Update) => self.write_role(ctx, req, name).await,
            ("", Operation::Delete) => self.delete_role(ctx, name).await,
            ("role-id", Operation::Read) => {
                let role = self.role(ctx, name)?;
                Ok(Response::from_json(json!({ "role_id": role.role_id })))
            }
            ("role-id", Operation::Create | Operation::Update) => {
                self.set_role_id(ctx, req, name).await
            }
            ("secret-id", Operation::Create | Operation::Update) => {
                let secret = uuid::Uuid::new_v4().to_string();
                self.issue_secret_id(ctx, req, name, secret).await
            }
            ("custom-secret-id", Operation::Create | Operation::Update) => {
                let secret = params::require_string(&req.data, "secret_id")?;
                check_id("secret_id", &secret)?;
                self.issue_secret_id(ctx, req, name, secret).await
            }
            ("secret-id", Operation::List) => {
                self.role(ctx, name)?;
                crate::engines::list_response(ctx.view.list(&format!("accessor/{name}/"))?)
            }
            ("secret-id/lookup", Operation::Create | Operation::Update) => {
                let secret = params::require_string(&req.data, "secret_id")?;
                check_id("secret_id", &secret)?;
                let key = self.secret_key(ctx, name, &secret)?;
                self.lookup_secret(ctx, &key)
            }
            ("secret-id/destroy", Operation::Create | Operation::Update | Operation::Delete) => {
                let secret = params::require_string(&req.data, "secret_id")?;
                check_id("secret_id", &secret)?;
                let key = self.secret_key(ctx, name, &secret)?;
                self.destroy_secret(ctx, name, &key).await
            }
            ("secret-id-accessor/lookup", Operation::Create | Operation::Update) => {
                let key = self.key_by_accessor(ctx, name, req)?;
                self.lookup_secret(ctx, &key)
            }
            (
                "secret-id-accessor/destroy",
                Operation::Create | Operation::Update | Operation::Delete,
            ) => {
                let key = self.key_by_accessor(ctx, name, req)?;
                self.destroy_secret(ctx, name, &key).await
            }
            (
                ""
                | "role-id"
                | "secret-id"
                | "custom-secret-id"
                | "secret-id/lookup"
                | "secret-id/destroy"
                | "secret-id-accessor/lookup"
                | "secret-id-accessor/destroy",
                _,
            ) => Err(ApiError::UnsupportedOperation),
            _ => Err(unsupported_path(ctx.mount, ctx.path)),
        }
    }

    // ---- roles -------------------------------------------------------------

    fn role(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<Role, ApiError> {
        ctx.view
            .get_json::<Role>(&format!("role/{name}"))?
            .ok_or_else(|| ApiError::InvalidRequest(format!("role {name:?} does not exist")))
    }

    fn read_role(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<Response, ApiError> {
        let Some(r) = ctx.view.get_json::<Role>(&format!("role/{name}"))? else {
            return Err(ApiError::NotFound(String::new()));
        };
        let mut d = match r.token.to_json() {
            Value::Object(m) => m,
            _ => Data::new(),
        };
        for (k, v) in [
            ("bind_secret_id", json!(r.bind_secret_id)),
            ("secret_id_bound_cidrs", json!(r.secret_id_bound_cidrs)),
            ("secret_id_num_uses", json!(r.secret_id_num_uses)),
            ("secret_id_ttl", json!(r.secret_id_ttl)),
            ("local_secret_ids", json!(r.local_secret_ids)),
        ] {
            d.insert(k.into(), v);
        }
        Ok(Response::data(d))
    }

    async fn write_role(
        &self,
        ctx: &EngineCtx<'_>,
        req: &Request,
        name: &str,
    ) -> Result<Response, ApiError> {
        let d = &req.data;
        let mut known = vec![
            "role_id",
            "bind_secret_id",
            "secret_id_bound_cidrs",
            "bound_cidr_list",
            "secret_id_num_uses",
            "secret_id_ttl",
            "local_secret_ids",
            "enable_local_secret_ids",
        ];
        known.extend_from_slice(token_params::FIELDS);
        params::deny_unknown(d, &known)?;
        let _guard = self.locks.lock(ctx.view.prefix(), "role").await;
        let old = ctx.view.get_json::<Role>(&format!("role/{name}"))?;
        let mut role = old.clone().unwrap_or_else(|| Role {
            name: name.to_owned(),
            bind_secret_id: true,
            ..Role::default()
        });
        if let Some(v) = params::boolean(d, "bind_secret_id")? {
            role.bind_secret_id = v;
        }
        for f in ["bound_cidr_list", "secret_id_bound_cidrs"] {
            if let Some(v) = params::string_list(d, f)? {
                cidr::parse_list(&v).map_err(ApiError::InvalidRequest)?;
                role.secret_id_bound_cidrs = v;
            }
        }
        if let Some(v) = params::uint(d, "secret_id_num_uses")? {
            role.secret_id_num_uses = v;
        }
        if let Some(v) = params::seconds(d, "secret_id_ttl")? {
            role.secret_id_ttl = v;
        }
        for f in ["local_secret_ids", "enable_local_secret_ids"] {
            if let Some(v) = params::boolean(d, f)? {
                role.local_secret_ids = v;
            }
        }
        role.token.update(d)?;
        // Without a secret ID, something else must bind the login.
        if !role.bind_secret_id
            && role.secret_id_bound_cidrs.is_empty()
            && role.token.bound_cidrs.is_empty()
        {
            return Err(ApiError::InvalidRequest(
                "at least one constraint should be enabled on the role: bind_secret_id, secret_id_bound_cidrs or token_bound_cidrs".into(),
            ));
        }
        let new_role_id = match params::string(d, "role_id")? {
            Some(id) => {
                check_id("role_id", &id)?;
                Some(id)
            }
            None if old.is_none() => Some(uuid::Uuid::new_v4().to_string()),
            None => None,
        };
        let mut batch = ctx.view.batch();
        if let Some(id) = new_role_id.filter(|id| *id != role.role_id) {
            let salt = self.salt(ctx).await?;
            let index = format!("role_id/{}", mac(&salt, "role_id", &id));
            if ctx.view.get(&index)?.is_some() {
                return Err(ApiError::InvalidRequest("role_id already in use".into()));
            }
            if !role.role_id.is_empty() {
                batch =
                    batch.delete(&format!("role_id/{}", mac(&salt, "role_id", &role.role_id)))?;
            }
            batch = batch.put(&index, name.as_bytes())?;
            role.role_id = id;
        }
        batch = batch.put_json(&format!("role/{name}"), &role)?;
        ctx.view.commit(batch).await?;
        Ok(Response::empty())
    }

    async fn set_role_id(
        &self,
        ctx: &EngineCtx<'_>,
        req: &Request,
        name: &str,
    ) -> Result<Response, ApiError> {
        params::deny_unknown(&req.data, &["role_id"])?;
        let id = params::require_string(&req.data, "role_id")?;
        check_id("role_id", &id)?;
        let _guard = self.locks.lock(ctx.view.prefix(), "role").await;
        let mut role = self.role(ctx, name)?;
        if role.role_id == id {
            return Ok(Response::empty());
        }
        let salt = self.salt(ctx).await?;
        let index = format!("role_id/{}", mac(&salt, "role_id", &id));
        if ctx.view.get(&index)?.is_some() {
            return Err(ApiError::InvalidRequest("role_id already in use".into()));
        }
        let batch = ctx
            .view
            .batch()
            .delete(&format!("role_id/{}", mac(&salt, "role_id", &role.role_id)))?
            .put(&index, name.as_bytes())?;
        role.role_id = id;
        let batch = batch.put_json(&format!("role/{name}"), &role)?;
        ctx.view.commit(batch).await?;
        Ok(Response::empty())
    }

    async fn delete_role(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<Response, ApiError> {
        let _guard = self.locks.lock(ctx.view.prefix(), "role").await;
        let Some(role) = ctx.view.get_json::<Role>(&format!("role/{name}"))? else {
            return Ok(Response::empty());
        };
        // Secret IDs first: a crash part-way leaves a role that can be
        // deleted again, never credentials without a role.
        let secrets = ctx.view.sub(&format!("secret_id/{name}/"))?;
        secrets.clear().await?;
        ctx.view.sub(&format!("accessor/{name}/"))?.clear().await?;
        let salt = self.salt(ctx).await?;
        let batch = ctx
            .view
            .batch()
            .delete(&format!("role_id/{}", mac(&salt, "role_id", &role.role_id)))?
            .delete(&format!("role/{name}"))?;
        ctx.view.commit(batch).await?;
        Ok(Response::empty())
    }

    // ---- secret IDs ----------------------------------------------------------

    async fn issue_secret_id(
        &self,
        ctx: &EngineCtx<'_>,
        req: &Request,
        name: &str,
        secret: String,
    ) -> Result<Response, ApiError> {
        let d = &req.data;
        params::deny_unknown(
            d,
            &[
                "secret_id",
                "metadata",
                "cidr_list",
                "token_bound_cidrs",
                "ttl",
                "num_uses",
            ],
        )?;
        let role = self.role(ctx, name)?;
        let metadata = metadata_param(d)?;
        let cidr_list = params::string_list(d, "cidr_list")?.unwrap_or_default();
        cidr::parse_list(&cidr_list).map_err(ApiError::InvalidRequest)?;
        subset_of(&cidr_list, &role.secret_id_bound_cidrs, "cidr_list")?;
        let token_bound_cidrs = params::string_list(d, "token_bound_cidrs")?.unwrap_or_default();
        cidr::parse_list(&token_bound_cidrs).map_err(ApiError::InvalidRequest)?;
        subset_of(
            &token_bound_cidrs,
            &role.token.bound_cidrs,
            "token_bound_cidrs",
        )?;
        let ttl = match params::seconds(d, "ttl")? {
            Some(t) if role.secret_id_ttl > 0 && t > role.secret_id_ttl => {
                return Err(ApiError::InvalidRequest(
                    "ttl cannot be longer than the role's secret_id_ttl".into(),
                ));
            }
            Some(t) if t > 0 => t,
            _ => role.secret_id_ttl,
        };
        let num_uses = match params::uint(d, "num_uses")? {
            Some(n) if role.secret_id_num_uses > 0 && (n == 0 || n > role.secret_id_num_uses) => {
                return Err(ApiError::InvalidRequest(
                    "num_uses cannot be higher than the role's secret_id_num_uses".into(),
                ));
            }
            Some(n) => n,
            None => role.secret_id_num_uses,
        };
        let now = ctx.now.unix_timestamp();
        let entry = SecretIdEntry {
            accessor: uuid::Uuid::new_v4().to_string(),
            creation_unix: now,
            last_updated_unix: now,
            expiration_unix: (ttl > 0).then(|| now.saturating_add(secs(ttl))),
            num_uses,
            ttl,
            metadata,
            cidr_list,
            token_bound_cidrs,
        };
        let key = self.secret_key_salted(ctx, name, &secret).await?;
        if ctx.view.get(&key)?.is_some() {
            return Err(ApiError::InvalidRequest(
                "secret_id is already registered".into(),
            ));
        }
        let hmac_part = key.rsplit('/').next().unwrap_or_default().to_owned();
        let batch = ctx.view.batch().put_json(&key, &entry)?.put(
            &format!("accessor/{name}/{}", entry.accessor),
            hmac_part.as_bytes(),
        )?;
        ctx.view.commit(batch).await?;
        Ok(Response::from_json(json!({
            "secret_id": secret,
            "secret_id_accessor": entry.accessor,
            "secret_id_ttl": entry.ttl,
            "secret_id_num_uses": entry.num_uses,
        })))
    }

    fn lookup_secret(&self, ctx: &EngineCtx<'_>, key: &str) -> Result<Response, ApiError> {
        let Some(e) = ctx.view.get_json::<SecretIdEntry>(key)? else {
            // Vault answers an unknown secret ID with no data.
            return Ok(Response::empty());
        };
        Ok(Response::from_json(json!({
            "secret_id_accessor": e.accessor,
            "creation_time": clock::rfc3339_unix(e.creation_unix),
            "last_updated_time": clock::rfc3339_unix(e.last_updated_unix),
            "expiration_time": e.expiration_unix.map(clock::rfc3339_unix),
            "secret_id_num_uses": e.num_uses,
            "secret_id_ttl": e.ttl,
            "metadata": e.metadata,
            "cidr_list": e.cidr_list,
            "token_bound_cidrs": e.token_bound_cidrs,
        })))
    }

    async fn destroy_secret(
        &self,
        ctx: &EngineCtx<'_>,
        name: &str,
        key: &str,
    ) -> Result<Response, ApiError> {
        let _guard = self.locks.lock(ctx.view.prefix(), key).await;
        if let Some(e) = ctx.view.get_json::<SecretIdEntry>(key)? {
            let batch = ctx
                .view
                .batch()
                .delete(key)?
                .delete(&format!("accessor/{name}/{}", e.accessor))?;
            ctx.view.commit(batch).await?;
        }
        Ok(Response::empty())
    }

    fn key_by_accessor(
        &self,
        ctx: &EngineCtx<'_>,
        name: &str,
        req: &Request,
    ) -> Result<String, ApiError> {
        let accessor = params::require_string(&req.data, "secret_id_accessor")?;
        if uuid::Uuid::parse_str(&accessor).is_err() {
            return Err(ApiError::InvalidRequest(
                "invalid secret_id_accessor".into(),
            ));
        }
        let hmac_part = ctx
            .view
            .get(&format!("accessor/{name}/{accessor}"))?
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "failed to find accessor entry for secret_id_accessor: {accessor:?}"
                ))
            })?;
        Ok(format!(
            "secret_id/{name}/{}",
            String::from_utf8_lossy(&hmac_part)
        ))
    }

    async fn tidy(&self, ctx: &EngineCtx<'_>) -> Result<Response, ApiError> {
        let now = ctx.now.unix_timestamp();
        let mut expired = 0usize;
        let mut dangling = 0usize;
        for role_dir in ctx.view.list("secret_id/")? {
            let name = role_dir.trim_end_matches('/');
            for hmac_part in ctx.view.list(&format!("secret_id/{name}/"))? {
                let key = format!("secret_id/{name}/{hmac_part}");
                let _guard = self.locks.lock(ctx.view.prefix(), &key).await;
                if let Some(e) = ctx.view.get_json::<SecretIdEntry>(&key)?
                    && e.expiration_unix.is_some_and(|t| t <= now)
                {
                    let batch = ctx
                        .view
                        .batch()
                        .delete(&key)?
                        .delete(&format!("accessor/{name}/{}", e.accessor))?;
                    ctx.view.commit(batch).await?;
                    expired += 1;
                }
            }
        }
        for role_dir in ctx.view.list("accessor/")? {
            let name = role_dir.trim_end_matches('/');
            for acc in ctx.view.list(&format!("accessor/{name}/"))? {
                let acc_key = format!("accessor/{name}/{acc}");
                let Some(h) = ctx.view.get(&acc_key)? else {
                    continue;
                };
                let key = format!("secret_id/{name}/{}", String::from_utf8_lossy(&h));
                if ctx.view.get(&key)?.is_none() {
                    ctx.view.delete(&acc_key).await?;
                    dangling += 1;
                }
            }
        }
        tracing::info!(mount = %ctx.mount.route_prefix(), expired, dangling, "approle secret IDs tidied");
        Ok(Response::empty().with_warning(format!(
            "Tidy operation finished: {expired} expired secret IDs and {dangling} dangling accessors removed"
        )))
    }

    // ---- login ---------------------------------------------------------------

    async fn login(&self, ctx: &EngineCtx<'_>, req: &Request) -> Result<Response, ApiError> {
        let d = &req.data;
        let role_id = params::require_string(d, "role_id")?;
        if role_id.len() > MAX_ID_LEN {
            return Err(ApiError::InvalidRequest(INVALID.into()));
        }
        let salt = self.salt(ctx).await?;
        let name = ctx
            .view
            .get(&format!("role_id/{}", mac(&salt, "role_id", &role_id)))?
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .ok_or_else(|| ApiError::InvalidRequest(INVALID.into()))?;
        let role = ctx
            .view
            .get_json::<Role>(&format!("role/{name}"))?
            .filter(|r| r.role_id == role_id)
            .ok_or_else(|| ApiError::InvalidRequest(INVALID.into()))?;
        let client = req.client_addr.map(|a| a.ip());
        check_source(&role.secret_id_bound_cidrs, client, "the role")?;
        let mut metadata = BTreeMap::new();
        let mut token_cidrs = role.token.bound_cidrs.clone();
        if role.bind_secret_id {
            let secret = params::require_string(d, "secret_id")?;
            if secret.len() > MAX_ID_LEN {
                return Err(ApiError::InvalidRequest(INVALID.into()));
            }
            let entry = self
                .spend_secret_id(ctx, &salt, &name, &secret, client)
                .await?;
            metadata = entry.metadata;
            if !entry.token_bound_cidrs.is_empty() {
                token_cidrs = entry.token_bound_cidrs;
            }
        }
        metadata.insert("role_name".into(), name.clone());
        let mut grant = role
            .token
            .grant(format!("approle:{name}"), &name, "approle".into());
        grant.metadata = metadata;
        grant.bound_cidrs = token_cidrs;
        Ok(Response {
            login: Some(grant),
            ..Response::default()
        })
    }

    /// Checks a secret ID and spends one of its uses (deleting it with its
    /// last), under its lock so two logins cannot share one use.
    async fn spend_secret_id(
        &self,
        ctx: &EngineCtx<'_>,
        salt: &SecretBytes,
        name: &str,
        secret: &str,
        client: Option<IpAddr>,
    ) -> Result<SecretIdEntry, ApiError> {
        let key = format!("secret_id/{name}/{}", mac(salt, "secret_id", secret));
        let _guard = self.locks.lock(ctx.view.prefix(), &key).await;
        let entry = ctx
            .view
            .get_json::<SecretIdEntry>(&key)?
            .ok_or_else(|| ApiError::InvalidRequest(INVALID.into()))?;
        let now = ctx.now.unix_timestamp();
        let accessor_key = format!("accessor/{name}/{}", entry.accessor);
        if entry.expiration_unix.is_some_and(|t| t <= now) {
            let batch = ctx.view.batch().delete(&key)?.delete(&accessor_key)?;
            ctx.view.commit(batch).await?;
            return Err(ApiError::InvalidRequest(INVALID.into()));
        }
        check_source(&entry.cidr_list, client, "the secret ID")?;
        match entry.num_uses {
            0 => {}
            1 => {
                let batch = ctx.view.batch().delete(&key)?.delete(&accessor_key)?;
                ctx.view.commit(batch).await?;
            }
            n => {
                let mut spent = entry.clone();
                spent.num_uses = n - 1;
                spent.last_updated_unix = now;
                ctx.view.put_json(&key, &spent).await?;
            }
        }
        Ok(entry)
    }

    // ---- keys ------------------------------------------------------------------

    /// The mount's HMAC key, created on first use.
    async fn salt(&self, ctx: &EngineCtx<'_>) -> Result<SecretBytes, ApiError> {
        if let Some(s) = ctx.view.get(SALT)? {
            return Ok(SecretBytes::copy_from(&s));
        }
        let _guard = self.salt_lock.lock().await;
        if let Some(s) = ctx.view.get(SALT)? {
            return Ok(SecretBytes::copy_from(&s));
        }
        let salt = SecretBytes::random(32);
        ctx.view.put(SALT, salt.expose()).await?;
        Ok(salt)
    }

    fn secret_key(
        &self,
        ctx: &EngineCtx<'_>,
        name: &str,
        secret: &str,
    ) -> Result<String, ApiError> {
        let salt = ctx
            .view
            .get(SALT)?
            .map(|s| SecretBytes::copy_from(&s))
            .ok_or_else(|| ApiError::InvalidRequest(format!("role {name:?} has no secret IDs")))?;
        Ok(format!(
            "secret_id/{name}/{}",
            mac(&salt, "secret_id", secret)
        ))
    }

    async fn secret_key_salted(
        &self,
        ctx: &EngineCtx<'_>,
        name: &str,
        secret: &str,
    ) -> Result<String, ApiError> {
        let salt = self.salt(ctx).await?;
        Ok(format!(
            "secret_id/{name}/{}",
            mac(&salt, "secret_id", secret)
        ))
    }
}

/// HMAC-SHA256 of `value` under the mount's key, with a label so a role ID
/// and a secret ID with the same text never share a key.
fn mac(salt: &SecretBytes, label: &str, value: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt.expose());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(label.as_bytes());
    ctx.update(&[0]);
    ctx.update(value.as_bytes());
    hex::encode(ctx.sign().as_ref())
}

fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(format!("invalid {field}")));
    }
    Ok(())
}

/// Refuses a login from outside `blocks`.
fn check_source(blocks: &[String], client: Option<IpAddr>, what: &str) -> Result<(), ApiError> {
    if cidr::allows(blocks, client) {
        return Ok(());
    }
    let addr = client.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    Err(ApiError::InvalidRequest(format!(
        "source address {addr:?} unauthorized through CIDR restrictions on {what}"
    )))
}

/// Every block of `inner` must lie within one of `outer` (when `outer`
/// restricts anything).
fn subset_of(inner: &[String], outer: &[String], field: &str) -> Result<(), ApiError> {
    if outer.is_empty() {
        return Ok(());
    }
    let outer = cidr::parse_list(outer).map_err(ApiError::InvalidRequest)?;
    for b in cidr::parse_list(inner).map_err(ApiError::InvalidRequest)? {
        if !outer.iter().any(|o| o.covers(&b)) {
            return Err(ApiError::InvalidRequest(format!(
                "{field}: {b} is not within the role's blocks"
            )));
        }
    }
    Ok(())
}

/// `metadata`: a JSON object of strings, or that object as a JSON string
/// (Vault's CLI sends the latter).
fn metadata_param(d: &Data) -> Result<BTreeMap<String, String>, ApiError> {
    let bad = || ApiError::InvalidRequest("metadata must be a JSON object of strings".into());
    let obj = match d.get("metadata") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::String(s)) if s.is_empty() => return Ok(BTreeMap::new()),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|_| bad())?,
        Some(v) => v.clone(),
    };
    let Value::Object(m) = obj else {
        return Err(bad());
    };
    m.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            _ => Err(bad()),
        })
        .collect()
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}
