//! `sys/revocations`: global revocation (docs/runbooks/incident.md).
//!
//! - `POST sys/revocations`: `kind` (`revoke`, the default, or
//!   `quarantine`), exactly one target — `accessor`, `lease_id`,
//!   `lease_prefix`, `identity` (a pattern), `role` (`<mount>/<role>`, such
//!   as `auth/approle/billing`) or `cert_serial` — a `reason`, and an
//!   optional `ttl` (default: the longest lease TTL any mount allows).
//!   The record is committed in this cell's control plane before the answer
//!   (durable, and enforced by this node), then reaches every node of
//!   every cell through the mesh.
//! - `LIST sys/revocations`, `GET sys/revocations/:id` (with `convergence`:
//!   per cell, live nodes, how many applied the record, first and last
//!   apply time, the nodes still pending).
//! - `DELETE sys/revocations/:id` lifts a quarantine: new logins are let
//!   in again; what it killed stays dead. A plain revocation cannot be
//!   lifted: it ends when it expires.
//!
//! Every path needs `sudo`.

use serde_json::{Value as Json, json};
use sigil_control_plane::model::{RevocationKind, RevocationRecord, RevocationTarget};
use sigil_control_plane::sync::now_ms;
use sigil_control_plane::{Hlc, Key, Kind, Value};

use super::Pipeline;
use crate::api_error::ApiError;
use crate::logical::{Operation, Request, Response};
use crate::params;
use crate::revocations::to_filter_record;

const TARGETS: [&str; 6] = [
    "accessor",
    "lease_id",
    "lease_prefix",
    "identity",
    "role",
    "cert_serial",
];

pub(super) async fn handle(p: &Pipeline, req: &Request, rest: &str) -> Result<Response, ApiError> {
    let id = rest.trim_matches('/');
    match (id.is_empty(), req.operation) {
        (true, Operation::List | Operation::Read) => list(p).await,
        (true, Operation::Create | Operation::Update) => create(p, req).await,
        (false, Operation::Read) => read(p, id).await,
        (false, Operation::Delete) => lift(p, id).await,
        _ => Err(ApiError::UnsupportedOperation),
    }
}

fn target_of(req: &Request) -> Result<RevocationTarget, ApiError> {
    let given: Vec<(&str, String)> = TARGETS
        .iter()
        .filter_map(|f| match params::string(&req.data, f) {
            Ok(Some(v)) if !v.is_empty() => Some(Ok((*f, v))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    let [(field, value)] = given.as_slice() else {
        return Err(ApiError::InvalidRequest(format!(
            "give exactly one of {}",
            TARGETS.join(", ")
        )));
    };
    let value = value.clone();
    Ok(match *field {
        "accessor" => RevocationTarget::Accessor(value),
        "lease_id" => RevocationTarget::LeaseId(value),
        "lease_prefix" => RevocationTarget::LeasePrefix(value),
        "identity" => RevocationTarget::Identity(value),
        "cert_serial" => RevocationTarget::CertSerial(value.to_ascii_lowercase()),
        _ => {
            let trimmed = value.trim_matches('/');
            let Some((mount, role)) = trimmed.rsplit_once('/') else {
                return Err(ApiError::InvalidRequest(
                    "role must be <mount>/<role>, such as auth/approle/billing".into(),
                ));
            };
            RevocationTarget::Role {
                mount: format!("{mount}/"),
                role: role.to_owned(),
            }
        }
    })
}

/// The longest lease or token TTL any mount of this cell allows: how long
/// a credential a record may kill can live.
fn default_ttl_s(p: &Pipeline) -> u64 {
    p.router()
        .all()
        .map(|m| m.config.effective_max_ttl())
        .max()
        .unwrap_or(crate::mounts::SYSTEM_DEFAULT_TTL)
}

async fn create(p: &Pipeline, req: &Request) -> Result<Response, ApiError> {
    let mut known = vec!["kind", "reason", "ttl"];
    known.extend_from_slice(&TARGETS);
    params::deny_unknown(&req.data, &known)?;
    let kind = match params::string(&req.data, "kind")?.as_deref() {
        None | Some("") | Some("revoke") => RevocationKind::Revoke,
        Some("quarantine") => RevocationKind::Quarantine,
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "kind must be \"revoke\" or \"quarantine\", not {:?}",
                other.chars().take(32).collect::<String>()
            )));
        }
    };
    let target = target_of(req)?;
    let reason = params::require_string(&req.data, "reason")?;
    let ttl_s = match params::seconds(&req.data, "ttl")? {
        Some(0) => {
            return Err(ApiError::InvalidRequest("ttl must be positive".into()));
        }
        Some(t) => t,
        None => default_ttl_s(p),
    };
    let now = now_ms();
    let record = RevocationRecord {
        kind,
        target,
        reason,
        issued_at: Hlc::new(now, 0),
        expires_ms: now.saturating_add(ttl_s.saturating_mul(1_000)),
        lifted: false,
    };
    let id = new_id(p);
    // The checks every node will make (a pattern must have a literal part).
    to_filter_record(&id, &record)
        .validate()
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    p.control
        .write(
            Key::Revocation { id: id.clone() },
            Some(Value::Revocation(record.clone())),
        )
        .await?;
    // Enforced here before the answer. The mesh takes it from this node to
    // every node of every cell; replication and sync bring it durably.
    p.revocation.originate(&id, &record);
    p.revocation.reload(&p.control).await?;
    p.metrics.revocation_issued();
    tracing::warn!(revocation = %id, target = ?record.target, kind = ?record.kind, "revocation issued");
    Ok(Response::from_json(shown(&id, &record, p)))
}

fn new_id(p: &Pipeline) -> String {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("system random number generator failed");
    format!("rev-{}-{}", p.control.cell_id(), hex::encode(b))
}

fn target_json(t: &RevocationTarget) -> Json {
    match t {
        RevocationTarget::Accessor(a) => json!({ "accessor": a }),
        RevocationTarget::LeaseId(l) => json!({ "lease_id": l }),
        RevocationTarget::LeasePrefix(l) => json!({ "lease_prefix": l }),
        RevocationTarget::Identity(i) => json!({ "identity": i }),
        RevocationTarget::Role { mount, role } => json!({ "role": format!("{mount}{role}") }),
        RevocationTarget::CertSerial(s) => json!({ "cert_serial": s }),
    }
}

fn rfc3339_ms(ms: u64) -> String {
    crate::clock::rfc3339_unix(i64::try_from(ms / 1_000).unwrap_or(i64::MAX))
}

fn shown(id: &str, r: &RevocationRecord, p: &Pipeline) -> Json {
    json!({
        "id": id,
        "kind": match r.kind {
            RevocationKind::Revoke => "revoke",
            RevocationKind::Quarantine => "quarantine",
        },
        "match": target_json(&r.target),
        "reason": r.reason,
        "issued_at": rfc3339_ms(r.issued_at.wall_ms),
        "issued_at_ms": r.issued_at.wall_ms,
        "expires_at": rfc3339_ms(r.expires_ms),
        "lifted": r.lifted,
        "enforced_here": p.revocation.enforces(id),
        "cleanup_here": super::revocation_cleanup::report(p, id).ok().flatten(),
    })
}

async fn record(p: &Pipeline, id: &str) -> Result<Option<RevocationRecord>, ApiError> {
    let key = Key::Revocation { id: id.to_owned() };
    p.control
        .read(|r| match r.state().get(&key) {
            Some(Value::Revocation(rec)) => Some(rec),
            _ => None,
        })
        .await
}

/// Every revocation record in force, by id.
pub(super) async fn all_records(p: &Pipeline) -> Result<Vec<(String, RevocationRecord)>, ApiError> {
    p.control
        .read(|r| {
            r.state()
                .registers()
                .filter(|(k, _)| k.kind() == Kind::Revocation)
                .filter_map(|(k, _)| match (k, r.state().get(k)) {
                    (Key::Revocation { id }, Some(Value::Revocation(rec))) => {
                        Some((id.clone(), rec))
                    }
                    _ => None,
                })
                .collect()
        })
        .await
}

async fn list(p: &Pipeline) -> Result<Response, ApiError> {
    let all = all_records(p).await?;
    if all.is_empty() {
        return Err(ApiError::NotFound("nothing to list".into()));
    }
    let key_info: serde_json::Map<String, Json> = all
        .iter()
        .map(|(id, r)| (id.clone(), shown(id, r, p)))
        .collect();
    Ok(Response::from_json(json!({
        "keys": all.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "key_info": key_info,
    })))
}

async fn read(p: &Pipeline, id: &str) -> Result<Response, ApiError> {
    let Some(r) = record(p, id).await? else {
        return Err(ApiError::NotFound(String::new()));
    };
    let mut body = shown(id, &r, p);
    body["convergence"] = match p.revocation.mesh() {
        Some(mesh) => {
            serde_json::to_value(crate::mesh::convergence(mesh, id).await).unwrap_or(Json::Null)
        }
        None => Json::Null,
    };
    Ok(Response::from_json(body))
}

async fn lift(p: &Pipeline, id: &str) -> Result<Response, ApiError> {
    let Some(mut r) = record(p, id).await? else {
        return Err(ApiError::NotFound(String::new()));
    };
    if r.kind == RevocationKind::Revoke {
        return Err(ApiError::InvalidRequest(format!(
            "a revocation cannot be lifted: it ends when it expires, at {}",
            rfc3339_ms(r.expires_ms)
        )));
    }
    if r.lifted {
        return Ok(Response::empty());
    }
    r.lifted = true;
    p.control
        .write(
            Key::Revocation { id: id.to_owned() },
            Some(Value::Revocation(r.clone())),
        )
        .await?;
    p.revocation.originate(id, &r);
    p.revocation.reload(&p.control).await?;
    tracing::warn!(revocation = %id, "quarantine lifted");
    Ok(Response::empty())
}
