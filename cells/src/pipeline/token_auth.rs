//! The token auth method: Vault's `auth/token/*` endpoints over the
//! [`TokenStore`](crate::token::TokenStore).

use serde_json::{Value, json};
use sigil_hsm::SecretString;
use time::OffsetDateTime;

use super::{Caller, Pipeline, data};
use crate::api_error::ApiError;
use crate::clock;
use crate::logical::{Auth, Operation, Request, Response};
use crate::mounts::MountEntry;
use crate::params;
use crate::token::{NewToken, TokenEntry, TokenRole, check_role_name};

pub(super) async fn handle(
    p: &Pipeline,
    req: &Request,
    rel: &str,
    caller: &Caller,
    mount: &MountEntry,
) -> Result<Response, ApiError> {
    let op = req.operation;
    let write = matches!(op, Operation::Create | Operation::Update);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    match rel {
        "create" if write => create(p, req, caller, mount, None, false, now).await,
        "create-orphan" if write => create(p, req, caller, mount, None, true, now).await,
        r if write && r.starts_with("create/") => {
            let role = &r["create/".len()..];
            create(p, req, caller, mount, Some(role), false, now).await
        }
        "lookup" if write || op == Operation::Read => {
            let token = token_param(req)?;
            let entry = p
                .tokens
                .lookup_live(&token, now)?
                .ok_or(ApiError::PermissionDenied)?;
            Ok(data(lookup_json(&entry, Some(&token), now)))
        }
        "lookup-self" if write || op == Operation::Read => {
            Ok(data(lookup_json(&caller.entry, Some(&caller.token), now)))
        }
        "lookup-accessor" if write => {
            let entry = by_accessor(p, req, now)?;
            Ok(data(lookup_json(&entry, None, now)))
        }
        "renew" if write => {
            let token = token_param(req)?;
            let entry = p
                .tokens
                .lookup_live(&token, now)?
                .ok_or(ApiError::PermissionDenied)?;
            renew(p, req, &entry, Some(token), now).await
        }
        "renew-self" if write => {
            renew(p, req, &caller.entry, Some(caller.token.clone()), now).await
        }
        "renew-accessor" if write => {
            let entry = by_accessor(p, req, now)?;
            renew(p, req, &entry, None, now).await
        }
        "revoke" if write => {
            let token = token_param(req)?;
            if let Some(entry) = p.tokens.lookup(&token)? {
                revoke_tree(p, &entry.hash).await?;
            }
            Ok(Response::empty())
        }
        "revoke-self" if write => {
            revoke_tree(p, &caller.entry.hash).await?;
            Ok(Response::empty())
        }
        "revoke-accessor" if write => {
            let accessor = params::require_string(&req.data, "accessor")?;
            if let Some(entry) = p.tokens.by_accessor(&accessor)? {
                revoke_tree(p, &entry.hash).await?;
            }
            Ok(Response::empty())
        }
        "revoke-orphan" if write => {
            let token = token_param(req)?;
            if let Some(entry) = p.tokens.lookup(&token)? {
                p.tokens.revoke_orphan(&entry.hash).await?;
                p.cleanup_revoked(std::slice::from_ref(&entry.hash)).await;
            }
            Ok(Response::empty())
        }
        "roles" | "roles/" if op == Operation::List => list(p.tokens.roles()?),
        r if r.starts_with("roles/") => {
            let name = &r["roles/".len()..];
            check_role_name(name).map_err(ApiError::InvalidRequest)?;
            match op {
                Operation::Read => {
                    let role = p
                        .tokens
                        .role(name)?
                        .ok_or_else(|| ApiError::NotFound(String::new()))?;
                    Ok(data(role_json(&role)))
                }
                Operation::Create | Operation::Update => {
                    let mut role = p.tokens.role(name)?.unwrap_or_else(|| TokenRole::new(name));
                    update_role(&mut role, &req.data)?;
                    p.tokens.put_role(&role).await?;
                    Ok(Response::empty())
                }
                Operation::Delete => {
                    p.tokens.delete_role(name).await?;
                    Ok(Response::empty())
                }
                _ => Err(ApiError::UnsupportedOperation),
            }
        }
        "tidy" if write => {
            let (report, revoked) = p.tokens.tidy(now).await?;
            p.cleanup_revoked(&revoked).await;
            tracing::info!(
                expired_revoked = report.expired_revoked,
                dangling_accessors = report.dangling_accessors,
                dangling_parent_links = report.dangling_parent_links,
                orphaned_children = report.orphaned_children,
                dangling_expiry = report.dangling_expiry,
                "token store tidied"
            );
            // Vault answers with a warning and no data; clients parse it so.
            Ok(Response::empty().with_warning(format!(
                "Tidy operation finished: {} expired tokens revoked, {} dangling accessors, {} dangling parent links and {} stale expiry entries removed, {} children orphaned",
                report.expired_revoked,
                report.dangling_accessors,
                report.dangling_parent_links,
                report.dangling_expiry,
                report.orphaned_children
            )))
        }
        "accessors" | "accessors/" if op == Operation::List => list(p.tokens.accessors()?),
        "create" | "create-orphan" | "lookup" | "lookup-self" | "lookup-accessor" | "renew"
        | "renew-self" | "renew-accessor" | "revoke" | "revoke-self" | "revoke-accessor"
        | "revoke-orphan" | "tidy" | "roles" | "accessors" => Err(ApiError::UnsupportedOperation),
        _ => Err(crate::engine::unsupported_path(mount, rel)),
    }
}

fn list(keys: Vec<String>) -> Result<Response, ApiError> {
    if keys.is_empty() {
        return Err(ApiError::NotFound(String::new()));
    }
    Ok(data(json!({ "keys": keys })))
}

fn token_param(req: &Request) -> Result<SecretString, ApiError> {
    let t = params::require_string(&req.data, "token")?;
    Ok(SecretString::new(t))
}

fn by_accessor(p: &Pipeline, req: &Request, now: i64) -> Result<TokenEntry, ApiError> {
    let accessor = params::require_string(&req.data, "accessor")?;
    p.tokens
        .by_accessor(&accessor)?
        .filter(|e| !e.is_expired(now))
        .ok_or_else(|| ApiError::InvalidRequest("invalid accessor".into()))
}

async fn revoke_tree(p: &Pipeline, hash: &str) -> Result<(), ApiError> {
    let revoked = p.tokens.revoke_tree(hash).await?;
    p.cleanup_revoked(&revoked).await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn create(
    p: &Pipeline,
    req: &Request,
    caller: &Caller,
    mount: &MountEntry,
    role_name: Option<&str>,
    orphan_path: bool,
    now: i64,
) -> Result<Response, ApiError> {
    let d = &req.data;
    params::deny_unknown(
        d,
        &[
            "id",
            "role_name",
            "policies",
            "meta",
            "no_parent",
            "no_default_policy",
            "renewable",
            "ttl",
            "lease",
            "explicit_max_ttl",
            "display_name",
            "num_uses",
            "period",
            "type",
            "entity_alias",
        ],
    )?;
    if params::string(d, "id")?.is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::InvalidRequest(
            "custom token IDs are not supported: tokens are always random".into(),
        ));
    }
    if params::string(d, "entity_alias")?.is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::InvalidRequest(
            "entity_alias is not supported".into(),
        ));
    }
    match params::string(d, "type")?.as_deref() {
        None | Some("" | "service" | "default" | "default-service") => {}
        Some("batch") => {
            return Err(ApiError::InvalidRequest(
                "batch tokens are not supported; use a service token".into(),
            ));
        }
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "invalid token type {other:?}"
            )));
        }
    }
    let role_name = role_name
        .map(str::to_owned)
        .or(params::string(d, "role_name")?);
    let role = match &role_name {
        Some(name) => {
            check_role_name(name).map_err(ApiError::InvalidRequest)?;
            Some(
                p.tokens
                    .role(name)?
                    .ok_or_else(|| ApiError::InvalidRequest(format!("unknown role {name}")))?,
            )
        }
        None => None,
    };
    let privileged = caller.is_root() || caller.sudo;
    let no_parent = params::boolean(d, "no_parent")?.unwrap_or(false);
    if no_parent && !privileged && !orphan_path {
        return Err(ApiError::InvalidRequest(
            "root or sudo privileges required to create orphan token".into(),
        ));
    }
    let orphan = orphan_path || no_parent || role.as_ref().is_some_and(|r| r.orphan);

    // Policies: asked for, else the role's allowed list, else the parent's.
    let mut policies: Vec<String> = params::string_list(d, "policies")?
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.to_lowercase())
        .collect();
    if policies.is_empty() {
        policies = match &role {
            Some(r) if r.has_allowed_list() => r.allowed_policies.clone(),
            _ => caller.entry.policies.clone(),
        };
    }
    let no_default = params::boolean(d, "no_default_policy")?.unwrap_or(false)
        || role.as_ref().is_some_and(|r| r.token_no_default_policy);
    if no_default {
        policies.retain(|p| p != "default");
    } else if !policies.iter().any(|p| p == "root") {
        policies.push("default".into());
    }
    policies.sort();
    policies.dedup();
    match &role {
        Some(r) => {
            if let Some(bad) = policies.iter().find(|p| !r.permits(p)) {
                return Err(ApiError::InvalidRequest(format!(
                    "token policies ({bad:?}) must be allowed by the role"
                )));
            }
            if !r.has_allowed_list() && !caller.is_root() {
                subset_of_parent(&policies, caller)?;
            }
        }
        None if !caller.is_root() => subset_of_parent(&policies, caller)?,
        None => {}
    }

    // TTLs, Vault's way: periodic tokens live by their period; others get
    // the asked TTL (or the mount default), never beyond the maximum.
    let period = match role.as_ref().map(|r| r.token_period).filter(|p| *p > 0) {
        Some(p) => p,
        None => {
            let p = params::seconds(d, "period")?.unwrap_or(0);
            if p > 0 && !privileged {
                return Err(ApiError::InvalidRequest(
                    "root or sudo privileges required to create periodic token".into(),
                ));
            }
            p
        }
    };
    let explicit_max = params::seconds(d, "explicit_max_ttl")?.unwrap_or(0);
    let explicit_max = match role.as_ref().map(|r| r.token_explicit_max_ttl) {
        Some(rm) if rm > 0 && (explicit_max == 0 || rm < explicit_max) => rm,
        _ => explicit_max,
    };
    let asked_ttl = match params::seconds(d, "ttl")? {
        Some(t) => Some(t),
        None => params::seconds(d, "lease")?,
    };
    let mut warnings = Vec::new();
    let (ttl, max_ttl) = if period > 0 {
        let ttl = if explicit_max > 0 {
            period.min(explicit_max)
        } else {
            period
        };
        (ttl, explicit_max)
    } else {
        let mount_max = mount.config.effective_max_ttl();
        let max = if explicit_max > 0 {
            explicit_max.min(mount_max)
        } else {
            mount_max
        };
        let root_forever = policies.iter().any(|p| p == "root") && asked_ttl.unwrap_or(0) == 0;
        if root_forever {
            (0, 0)
        } else {
            let want = asked_ttl
                .filter(|t| *t > 0)
                .unwrap_or_else(|| mount.config.effective_default_ttl());
            if want > max {
                warnings.push(format!(
                    "TTL of {want}s exceeded the effective max_ttl of {max}s; TTL value is capped accordingly"
                ));
            }
            (want.min(max), max)
        }
    };
    let renewable = params::boolean(d, "renewable")?.unwrap_or(true)
        && role.as_ref().is_none_or(|r| r.renewable)
        && ttl > 0;
    let num_uses = match params::uint(d, "num_uses")? {
        Some(n) => n,
        None => role.as_ref().map_or(0, |r| r.token_num_uses),
    };
    let display_name = match params::string(d, "display_name")? {
        Some(n) if !n.is_empty() => format!("token-{}", sanitise_display_name(&n)),
        _ => "token".to_owned(),
    };
    let meta = params::string_map(d, "meta")?.unwrap_or_default();
    let path = match &role {
        Some(r) if !r.path_suffix.is_empty() => {
            format!("auth/token/create/{}/{}", r.name, r.path_suffix)
        }
        Some(r) => format!("auth/token/create/{}", r.name),
        None if orphan_path => "auth/token/create-orphan".into(),
        None => "auth/token/create".into(),
    };
    let spec = NewToken {
        parent: (!orphan).then(|| caller.entry.hash.clone()),
        policies,
        display_name,
        meta,
        ttl,
        explicit_max_ttl: explicit_max,
        max_ttl,
        period,
        renewable,
        num_uses,
        bound_cidrs: role
            .as_ref()
            .map(|r| r.token_bound_cidrs.clone())
            .unwrap_or_default(),
        role: role.map(|r| r.name),
        path,
        // A token made from another carries its identity; one made by a
        // token with none is a plain token.
        identity: Some(
            caller
                .entry
                .identity
                .clone()
                .unwrap_or_else(|| "token".to_owned()),
        ),
        entity_id: caller.entry.entity_id.clone(),
        auth_mount: caller.entry.auth_mount.clone(),
    };
    let (token, entry) = p.tokens.create(spec, now).await?;
    let mut resp = Response {
        auth: Some(auth_of(token, &entry, now)),
        ..Response::default()
    };
    resp.warnings = warnings;
    Ok(resp)
}

fn subset_of_parent(policies: &[String], caller: &Caller) -> Result<(), ApiError> {
    for p in policies {
        if p == "default" {
            continue;
        }
        if p == "root" || !caller.entry.policies.contains(p) {
            return Err(ApiError::InvalidRequest(
                "child policies must be subset of parent".into(),
            ));
        }
    }
    Ok(())
}

pub(crate) fn sanitise_display_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect()
}

async fn renew(
    p: &Pipeline,
    req: &Request,
    entry: &TokenEntry,
    token: Option<SecretString>,
    now: i64,
) -> Result<Response, ApiError> {
    let increment = params::seconds(&req.data, "increment")?;
    let renewed = match p.tokens.renew(&entry.hash, increment, now).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(ApiError::PermissionDenied),
        Err(crate::token::TokenError::NotRenewable) => {
            return Err(ApiError::InvalidRequest("lease is not renewable".into()));
        }
        Err(crate::token::TokenError::Barrier(e)) => return Err(e.into()),
    };
    let mut resp = Response {
        auth: Some(auth_of(token.unwrap_or_default(), &renewed.entry, now)),
        ..Response::default()
    };
    if renewed.capped {
        resp.warnings.push(
            "TTL was capped by the token's maximum TTL; it cannot be renewed beyond it".into(),
        );
    }
    Ok(resp)
}

/// The `auth` block for a token (`client_token` empty when unknown, as for
/// renew-accessor).
pub(super) fn auth_of(token: SecretString, e: &TokenEntry, now: i64) -> Auth {
    Auth {
        client_token: token,
        accessor: e.accessor.clone(),
        policies: e.policies.clone(),
        token_policies: e.policies.clone(),
        identity_policies: Vec::new(),
        metadata: e.meta.clone(),
        lease_duration: e.remaining_ttl(now),
        renewable: e.renewable,
        entity_id: e.entity_id.clone(),
        token_type: "service".into(),
        orphan: e.is_orphan(),
        num_uses: e.num_uses,
        identity: e.identity.clone(),
    }
}

/// Vault's token lookup body. `id` is the token when the caller gave it.
pub(super) fn lookup_json(e: &TokenEntry, token: Option<&SecretString>, now: i64) -> Value {
    let meta: Value = if e.meta.is_empty() {
        Value::Null
    } else {
        json!(e.meta)
    };
    let mut v = json!({
        "accessor": e.accessor,
        "creation_time": e.created_unix,
        "creation_ttl": e.ttl,
        "display_name": e.display_name,
        "entity_id": e.entity_id,
        "expire_time": e.expire_unix.map(clock::rfc3339_unix),
        "explicit_max_ttl": e.explicit_max_ttl,
        "id": token.map(|t| t.expose().to_owned()).unwrap_or_default(),
        "issue_time": clock::rfc3339_unix(e.created_unix),
        "meta": meta,
        "num_uses": e.num_uses,
        "orphan": e.is_orphan(),
        "path": e.path,
        "policies": e.policies,
        "renewable": e.renewable,
        "ttl": e.remaining_ttl(now),
        "type": "service",
    });
    if let Some(obj) = v.as_object_mut() {
        if e.period > 0 {
            obj.insert("period".into(), json!(e.period));
        }
        if let Some(r) = &e.role {
            obj.insert("role".into(), json!(r));
        }
        // Who the token was issued to, and by which auth mount: what the
        // global revocation console revokes by.
        obj.insert("identity".into(), json!(e.identity));
        obj.insert("auth_mount".into(), json!(e.auth_mount));
        if !e.bound_cidrs.is_empty() {
            obj.insert("bound_cidrs".into(), json!(e.bound_cidrs));
        }
    }
    v
}

fn role_json(r: &TokenRole) -> Value {
    json!({
        "name": r.name,
        "allowed_policies": r.allowed_policies,
        "disallowed_policies": r.disallowed_policies,
        "allowed_policies_glob": r.allowed_policies_glob,
        "disallowed_policies_glob": r.disallowed_policies_glob,
        "orphan": r.orphan,
        "renewable": r.renewable,
        "path_suffix": r.path_suffix,
        "allowed_entity_aliases": r.allowed_entity_aliases,
        "explicit_max_ttl": r.token_explicit_max_ttl,
        "token_explicit_max_ttl": r.token_explicit_max_ttl,
        "period": r.token_period,
        "token_period": r.token_period,
        "token_num_uses": r.token_num_uses,
        "token_no_default_policy": r.token_no_default_policy,
        "token_type": r.token_type,
        "token_bound_cidrs": r.token_bound_cidrs,
    })
}

fn update_role(role: &mut TokenRole, d: &crate::logical::Data) -> Result<(), ApiError> {
    params::deny_unknown(
        d,
        &[
            "allowed_policies",
            "disallowed_policies",
            "allowed_policies_glob",
            "disallowed_policies_glob",
            "orphan",
            "renewable",
            "path_suffix",
            "allowed_entity_aliases",
            "token_explicit_max_ttl",
            "explicit_max_ttl",
            "token_period",
            "period",
            "token_num_uses",
            "token_no_default_policy",
            "token_type",
            "token_bound_cidrs",
        ],
    )?;
    let lower = |v: Vec<String>| v.into_iter().map(|s| s.to_lowercase()).collect::<Vec<_>>();
    if let Some(v) = params::string_list(d, "allowed_policies")? {
        role.allowed_policies = lower(v);
    }
    if let Some(v) = params::string_list(d, "disallowed_policies")? {
        role.disallowed_policies = lower(v);
    }
    if let Some(v) = params::string_list(d, "allowed_policies_glob")? {
        role.allowed_policies_glob = lower(v);
    }
    if let Some(v) = params::string_list(d, "disallowed_policies_glob")? {
        role.disallowed_policies_glob = lower(v);
    }
    if let Some(v) = params::boolean(d, "orphan")? {
        role.orphan = v;
    }
    if let Some(v) = params::boolean(d, "renewable")? {
        role.renewable = v;
    }
    if let Some(v) = params::string(d, "path_suffix")? {
        if v.contains("..") || v.starts_with('/') || v.chars().any(char::is_control) {
            return Err(ApiError::InvalidRequest(
                "path_suffix may not contain '..', control characters or start with '/'".into(),
            ));
        }
        role.path_suffix = v;
    }
    if let Some(v) = params::string_list(d, "allowed_entity_aliases")? {
        role.allowed_entity_aliases = v;
    }
    for f in ["token_explicit_max_ttl", "explicit_max_ttl"] {
        if let Some(v) = params::seconds(d, f)? {
            role.token_explicit_max_ttl = v;
        }
    }
    for f in ["token_period", "period"] {
        if let Some(v) = params::seconds(d, f)? {
            role.token_period = v;
        }
    }
    if let Some(v) = params::uint(d, "token_num_uses")? {
        role.token_num_uses = v;
    }
    if let Some(v) = params::boolean(d, "token_no_default_policy")? {
        role.token_no_default_policy = v;
    }
    if let Some(v) = params::string(d, "token_type")? {
        crate::auth::token_params::check_token_type(&v)?;
        role.token_type = v;
    }
    if let Some(v) = params::string_list(d, "token_bound_cidrs")? {
        crate::auth::cidr::parse_list(&v).map_err(ApiError::InvalidRequest)?;
        role.token_bound_cidrs = v;
    }
    Ok(())
}
