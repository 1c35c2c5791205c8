//! JWT auth: tokens signed by a workload identity provider (SPIFFE,
//! Kubernetes, an OIDC issuer), verified offline against configured keys.
//! Vault's `jwt` auth method API without the browser OIDC flow, also
//! mounted as `kubernetes` with Kubernetes defaults (docs/auth.md, "JWT and
//! Kubernetes").
//!
//! - [`verify`]: signatures, with the algorithm-confusion defences.
//! - [`claims`]: validity windows, issuer, audience, subject and claim
//!   bindings.
//! - [`config`], [`role`]: what the operator writes.
//! - [`keys`]: JWKS and OIDC discovery fetching, cached per mount.
//! - [`identity`]: who a verified token says logged in.
//!
//! | key | value |
//! | --- | --- |
//! | `config` | [`config::Config`] |
//! | `role/<name>` | [`role::Role`] |

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use self::config::{Config, KeySource};
use self::identity::{LoginIdentity, ServiceAccount};
use self::keys::{Fetch, HttpFetch, KeyCache, Refresh};
use self::role::Role;
use self::verify::{JwtError, Verified, VerifyingKey};
use super::token_params::check_role_name;
use crate::api_error::ApiError;
use crate::engine::{Engine, EngineCtx, unsupported_path};
use crate::engines::kv::KeyLocks;
use crate::logical::{Operation, Request, Response};
use crate::params;

pub mod claims;
pub mod config;
pub mod identity;
pub mod keys;
pub mod role;
pub mod verify;

const CONFIG: &str = "config";

/// Which Vault auth method a mount imitates: the same API, with the
/// Kubernetes one adding service-account bindings and identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Jwt,
    Kubernetes,
}

impl Flavor {
    /// The mount type.
    pub fn kind(self) -> &'static str {
        match self {
            Flavor::Jwt => "jwt",
            Flavor::Kubernetes => "kubernetes",
        }
    }
}

#[derive(Debug)]
pub struct JwtEngine {
    flavor: Flavor,
    keys: KeyCache,
    /// Serialises role writes, so two partial updates do not lose one.
    locks: KeyLocks,
}

impl JwtEngine {
    pub fn new(flavor: Flavor) -> Self {
        Self::with_fetcher(flavor, Arc::new(HttpFetch::new()))
    }

    pub fn with_fetcher(flavor: Flavor, fetcher: Arc<dyn Fetch>) -> Self {
        Self {
            flavor,
            keys: KeyCache::new(fetcher),
            locks: KeyLocks::default(),
        }
    }
}

impl Engine for JwtEngine {
    fn kind(&self) -> &'static str {
        self.flavor.kind()
    }

    fn is_auth_method(&self) -> bool {
        true
    }

    /// The role's bindings and token settings; the config (issuer keys)
    /// is each cell's own.
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

impl JwtEngine {
    async fn route(&self, ctx: &EngineCtx<'_>, req: &Request) -> Result<Response, ApiError> {
        let op = req.operation;
        let write = matches!(op, Operation::Create | Operation::Update);
        let path = ctx.path.trim_end_matches('/');
        match (path, op) {
            ("login", _) if write => return self.login(ctx, req).await,
            ("login", _) => return Err(ApiError::UnsupportedOperation),
            ("config", Operation::Read) => return self.read_config(ctx),
            ("config", _) if write => return self.write_config(ctx, req).await,
            ("config", _) => return Err(ApiError::UnsupportedOperation),
            ("role", Operation::List | Operation::Read) => {
                return crate::engines::list_response(
                    ctx.view
                        .list("role/")?
                        .into_iter()
                        .filter(|k| !k.ends_with('/'))
                        .collect(),
                );
            }
            _ => {}
        }
        let Some(name) = path.strip_prefix("role/") else {
            return Err(unsupported_path(ctx.mount, ctx.path));
        };
        check_role_name(name)?;
        match op {
            Operation::Read => match ctx.view.get_json::<Role>(&role_key(name))? {
                Some(role) => Ok(Response::data(role.to_json(self.flavor))),
                None => Err(ApiError::NotFound(String::new())),
            },
            Operation::Create | Operation::Update => self.write_role(ctx, req, name).await,
            Operation::Delete => {
                ctx.view.delete(&role_key(name)).await?;
                Ok(Response::empty())
            }
            _ => Err(ApiError::UnsupportedOperation),
        }
    }

    // ---- config ----------------------------------------------------------

    fn read_config(&self, ctx: &EngineCtx<'_>) -> Result<Response, ApiError> {
        let config = ctx
            .view
            .get_json::<Config>(CONFIG)?
            .ok_or_else(|| ApiError::NotFound(String::new()))?;
        match config.to_json() {
            Value::Object(d) => Ok(Response::data(d)),
            _ => Ok(Response::empty()),
        }
    }

    async fn write_config(&self, ctx: &EngineCtx<'_>, req: &Request) -> Result<Response, ApiError> {
        let config = Config::from_request(&req.data)?;
        // Fetch remote keys now, as Vault does, so a wrong URL or CA is
        // found while the operator is looking.
        if let KeySource::Remote(remote) = config.key_source()? {
            self.keys
                .keys(
                    ctx.view.prefix(),
                    &remote,
                    ctx.now.unix_timestamp(),
                    Refresh::Always,
                )
                .await
                .map_err(ApiError::Upstream)?;
        } else {
            self.keys.forget(ctx.view.prefix());
        }
        ctx.view.put_json(CONFIG, &config).await?;
        Ok(Response::empty())
    }

    // ---- roles -------------------------------------------------------------

    async fn write_role(
        &self,
        ctx: &EngineCtx<'_>,
        req: &Request,
        name: &str,
    ) -> Result<Response, ApiError> {
        let key = role_key(name);
        let _guard = self.locks.lock(ctx.view.prefix(), &key).await;
        let mut role = ctx.view.get_json::<Role>(&key)?.unwrap_or_default();
        role.update(&req.data, self.flavor)?;
        ctx.view.put_json(&key, &role).await?;
        Ok(Response::empty())
    }

    // ---- login ---------------------------------------------------------------

    /// Verifies the token, checks it against the role, and grants a token.
    /// Every refusal is a 400 naming the reason; none contains the token.
    async fn login(&self, ctx: &EngineCtx<'_>, req: &Request) -> Result<Response, ApiError> {
        let d = &req.data;
        params::deny_unknown(d, &["role", "jwt"])?;
        let config = ctx.view.get_json::<Config>(CONFIG)?.ok_or_else(|| {
            ApiError::InvalidRequest("could not load configuration: write config first".into())
        })?;
        let name = match params::string(d, "role")? {
            Some(name) if !name.is_empty() => name,
            _ if !config.default_role.is_empty() => config.default_role.clone(),
            _ => return Err(refused("missing role")),
        };
        check_role_name(&name)?;
        let role = ctx
            .view
            .get_json::<Role>(&role_key(&name))?
            .ok_or_else(|| refused(format!("role {name:?} could not be found")))?;
        let jwt = params::require_string(d, "jwt")?;

        let now = ctx.now.unix_timestamp();
        let (verified, discovered_issuer) = self.verify(ctx, &config, &jwt, now).await?;
        let bound_issuer = Some(config.bound_issuer.clone())
            .filter(|issuer| !issuer.is_empty())
            .or(discovered_issuer);
        let claims = &verified.claims;
        let found = claims::validate(claims, &role.constraints(bound_issuer), now)
            .map_err(|e| refused(e.to_string()))?;

        let service_account = match self.flavor {
            Flavor::Kubernetes => {
                let sa = ServiceAccount::from_claims(claims).map_err(|e| refused(e.to_string()))?;
                role.check_service_account(&sa)?;
                Some(sa)
            }
            Flavor::Jwt => None,
        };
        let identity = LoginIdentity::of(claims, service_account.as_ref(), &found.alias_name)
            .map_err(|e| refused(e.to_string()))?;

        let display_name = crate::pipeline::token_auth::sanitise_display_name(&format!(
            "{}-{}",
            self.flavor.kind(),
            found.alias_name
        ));
        let mut metadata: BTreeMap<String, String> = found.metadata;
        metadata.insert("role".into(), name.clone());
        if let Some(sa) = &service_account {
            metadata.insert("service_account_namespace".into(), sa.namespace.clone());
            metadata.insert("service_account_name".into(), sa.name.clone());
        }
        let mut grant = role.token.grant(identity.to_string(), &name, display_name);
        grant.metadata = metadata;
        Ok(Response {
            login: Some(grant),
            ..Response::default()
        })
    }

    /// Checks the signature against the mount's keys. Returns the issuer a
    /// discovery document declared, which tokens must then carry unless
    /// `bound_issuer` says otherwise.
    async fn verify(
        &self,
        ctx: &EngineCtx<'_>,
        config: &Config,
        jwt: &str,
        now: i64,
    ) -> Result<(Verified, Option<String>), ApiError> {
        let algs = config.algs();
        let check = |keys: &[VerifyingKey]| verify::verify(jwt, keys, &algs);
        let remote = match config.key_source()? {
            KeySource::Inline(keys) => {
                return check(&keys)
                    .map(|v| (v, None))
                    .map_err(|e| refused(e.to_string()));
            }
            KeySource::Remote(remote) => remote,
        };
        let mount = ctx.view.prefix();
        let fetched = self
            .keys
            .keys(mount, &remote, now, Refresh::IfStale)
            .await
            .map_err(ApiError::Upstream)?;
        match check(&fetched.keys) {
            // The issuer may have rotated to a key we have not seen yet.
            Err(JwtError::UnknownKid { .. }) => {
                let again = self
                    .keys
                    .keys(mount, &remote, now, Refresh::UnknownKid)
                    .await
                    .map_err(ApiError::Upstream)?;
                check(&again.keys)
                    .map(|v| (v, again.issuer))
                    .map_err(|e| refused(e.to_string()))
            }
            other => other
                .map(|v| (v, fetched.issuer))
                .map_err(|e| refused(e.to_string())),
        }
    }
}

fn role_key(name: &str) -> String {
    format!("role/{name}")
}

fn refused(reason: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest(reason.into())
}
