//! Response wrapping: instead of its data, a response carries a single-use
//! token whose cubbyhole holds the real response (`cubbyhole/response`).
//! Unwrapping spends the token's only use; a second unwrap finds nothing.

use std::time::Duration;

use serde_json::{Value, json};
use sigil_hsm::SecretString;
use time::OffsetDateTime;

use super::{Caller, Pipeline, data};
use crate::api_error::ApiError;
use crate::clock;
use crate::logical::{Auth, Lease, Request, Response, WrapInfo};
use crate::params;
use crate::token::{NewToken, TokenEntry};
use crate::view::BarrierView;

/// The policy wrapping tokens carry: it allows only the wrapping endpoints.
pub const WRAPPING_POLICY: &str = "response-wrapping";
const RESPONSE_KEY: &str = "response";

pub(super) fn invalid_token() -> ApiError {
    ApiError::InvalidRequest("wrapping token is not valid or does not exist".into())
}

fn is_wrapping(e: &TokenEntry) -> bool {
    e.policies.len() == 1 && e.policies[0] == WRAPPING_POLICY
}

/// The wrapping token's cubbyhole, laid out as the cubbyhole engine lays
/// out every token's, so the token can also read `cubbyhole/response`.
fn cubbyhole(p: &Pipeline, hash: &str) -> Result<BarrierView, ApiError> {
    let view = p
        .cubbyhole_view()
        .ok_or_else(|| ApiError::Internal("no cubbyhole mount".into()))?;
    crate::engines::cubbyhole::token_view(&view, hash)
}

/// Replaces `resp` with a wrapping token holding it.
pub(super) async fn wrap(
    p: &Pipeline,
    req: &Request,
    resp: Response,
    ttl: Duration,
    now: i64,
) -> Result<Response, ApiError> {
    let ttl = ttl.as_secs().max(1);
    let stored = stored_json(&resp);
    let wrapped_accessor = resp
        .auth
        .as_ref()
        .map(|a| a.accessor.clone())
        .unwrap_or_default();
    store_wrapped(
        p,
        &req.path,
        stored,
        ttl,
        now,
        wrapped_accessor,
        resp.mount_type,
    )
    .await
}

async fn store_wrapped(
    p: &Pipeline,
    creation_path: &str,
    stored: Value,
    ttl: u64,
    now: i64,
    wrapped_accessor: String,
    mount_type: String,
) -> Result<Response, ApiError> {
    let (token, entry) = p
        .tokens
        .create(
            NewToken {
                policies: vec![WRAPPING_POLICY.into()],
                display_name: WRAPPING_POLICY.into(),
                ttl,
                max_ttl: ttl,
                num_uses: 1,
                path: creation_path.to_owned(),
                ..NewToken::default()
            },
            now,
        )
        .await?;
    let raw = serde_json::to_vec(&stored).map_err(|e| ApiError::Internal(e.to_string()))?;
    cubbyhole(p, &entry.hash)?.put(RESPONSE_KEY, &raw).await?;
    let created = OffsetDateTime::from_unix_timestamp(now).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Ok(Response {
        wrap_info: Some(WrapInfo {
            token,
            accessor: entry.accessor,
            ttl,
            creation_time: clock::rfc3339(created),
            creation_path: creation_path.to_owned(),
            wrapped_accessor,
        }),
        mount_type,
        ..Response::default()
    })
}

/// The parts of a response a wrapping token keeps.
fn stored_json(resp: &Response) -> Value {
    let auth = resp.auth.as_ref().map(Auth::to_json);
    let lease = resp
        .lease
        .as_ref()
        .map(|l| json!({ "lease_id": l.lease_id, "ttl": l.ttl, "renewable": l.renewable }));
    json!({
        "data": resp.data,
        "auth": auth,
        "lease": lease,
        "warnings": resp.warnings,
        "mount_type": resp.mount_type,
    })
}

fn response_from(stored: &Value) -> Response {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let auth = stored.get("auth").filter(|a| a.is_object()).map(|a| Auth {
        client_token: SecretString::new(s(&a["client_token"])),
        accessor: s(&a["accessor"]),
        policies: strings(&a["policies"]),
        token_policies: strings(&a["token_policies"]),
        identity_policies: strings(&a["identity_policies"]),
        metadata: a["metadata"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
            .unwrap_or_default(),
        lease_duration: a["lease_duration"].as_u64().unwrap_or(0),
        renewable: a["renewable"].as_bool().unwrap_or(false),
        entity_id: s(&a["entity_id"]),
        token_type: s(&a["token_type"]),
        orphan: a["orphan"].as_bool().unwrap_or(false),
        num_uses: a["num_uses"].as_u64().unwrap_or(0),
        identity: None,
    });
    let lease = stored
        .get("lease")
        .filter(|l| l.is_object())
        .map(|l| Lease {
            lease_id: s(&l["lease_id"]),
            ttl: l["ttl"].as_u64().unwrap_or(0),
            renewable: l["renewable"].as_bool().unwrap_or(false),
        });
    Response {
        data: stored.get("data").and_then(Value::as_object).cloned(),
        auth,
        lease,
        warnings: strings(&stored["warnings"]),
        mount_type: s(&stored["mount_type"]),
        ..Response::default()
    }
}

async fn read_stored(p: &Pipeline, hash: &str) -> Result<Value, ApiError> {
    let view = cubbyhole(p, hash)?;
    view.get_json::<Value>(RESPONSE_KEY)?
        .ok_or_else(invalid_token)
}

/// The live wrapping token `token` names, or the wrapping error.
fn live_wrapping_entry(
    p: &Pipeline,
    token: &SecretString,
    now: i64,
) -> Result<TokenEntry, ApiError> {
    p.tokens
        .lookup_live(token, now)?
        .filter(is_wrapping)
        .ok_or_else(invalid_token)
}

/// `sys/wrapping/lookup`: what a wrapping token is, without spending it.
pub(super) async fn lookup(p: &Pipeline, req: &Request, now: i64) -> Result<Response, ApiError> {
    let token = match params::string(&req.data, "token")? {
        Some(t) if !t.is_empty() => SecretString::new(t),
        _ => req.token.clone().ok_or_else(invalid_token)?,
    };
    let entry = live_wrapping_entry(p, &token, now)?;
    let created = OffsetDateTime::from_unix_timestamp(entry.created_unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Ok(data(json!({
        "creation_path": entry.path,
        "creation_time": clock::rfc3339(created),
        "creation_ttl": entry.ttl,
    })))
}

/// `sys/wrapping/unwrap` with the wrapping token as the request's token:
/// the pipeline already spent its only use.
pub(super) async fn unwrap(
    p: &Pipeline,
    _req: &Request,
    caller: &Caller,
) -> Result<Response, ApiError> {
    if !is_wrapping(&caller.entry) {
        return Err(invalid_token());
    }
    let stored = read_stored(p, &caller.entry.hash).await?;
    Ok(response_from(&stored))
}

/// `sys/wrapping/unwrap` with the wrapping token named in the body.
pub(super) async fn unwrap_named(p: &Pipeline, req: &Request) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let token = SecretString::new(params::require_string(&req.data, "token")?);
    let entry = live_wrapping_entry(p, &token, now)?;
    let spent = p
        .tokens
        .spend_use(&entry.hash)
        .await?
        .ok_or_else(invalid_token)?;
    let stored = read_stored(p, &entry.hash).await;
    p.cleanup_revoked(&spent.revoked).await;
    Ok(response_from(&stored?))
}

/// `sys/wrapping/wrap`: wraps the request body itself.
pub(super) async fn wrap_data(_p: &Pipeline, req: &Request) -> Result<Response, ApiError> {
    if req.wrap_ttl.is_none() {
        return Err(ApiError::InvalidRequest(
            "no wrap TTL given: set the X-Vault-Wrap-TTL header".into(),
        ));
    }
    if req.data.is_empty() {
        return Err(ApiError::InvalidRequest("no data provided to wrap".into()));
    }
    Ok(Response::data(req.data.clone()))
}

/// `sys/wrapping/rewrap`: a fresh wrapping token for the same response, with
/// the same TTL; the old token dies.
pub(super) async fn rewrap(p: &Pipeline, req: &Request) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let token = SecretString::new(params::require_string(&req.data, "token")?);
    let entry = live_wrapping_entry(p, &token, now)?;
    let stored = read_stored(p, &entry.hash).await?;
    let wrapped_accessor = stored["auth"]["accessor"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mount_type = stored["mount_type"].as_str().unwrap_or_default().to_owned();
    let resp = store_wrapped(
        p,
        &entry.path,
        stored,
        entry.ttl.max(1),
        now,
        wrapped_accessor,
        mount_type,
    )
    .await?;
    let revoked = p.tokens.revoke_tree(&entry.hash).await?;
    p.cleanup_revoked(&revoked).await;
    Ok(resp)
}
