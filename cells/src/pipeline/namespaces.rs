//! `sys/namespaces`: the federation's namespaces, shared by every cell
//! through the control plane (`Key::Namespace`), with Vault Enterprise's
//! API (`hvac`'s `sys.create_namespace`, `list_namespaces`,
//! `delete_namespace`).
//!
//! A namespace here is a name and its `custom_metadata`, created, changed
//! and deleted from any cell; nested namespaces (`team/payments/`) need
//! their parent. Requests are not yet scoped by namespace: the front ends
//! refuse a request that names a namespace (`X-Vault-Namespace`) other than
//! the root, rather than serve it from the root (docs/architecture.md,
//! "Not yet").

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};
use sigil_control_plane::model::NamespaceInfo;
use sigil_control_plane::{Key, Kind, Value};

use super::Pipeline;
use crate::api_error::ApiError;
use crate::logical::{Operation, Request, Response};
use crate::params;

/// Names Vault reserves for its own paths.
const RESERVED: [&str; 6] = ["root", "sys", "audit", "auth", "cubbyhole", "identity"];

/// A namespace path, normalised to end in `/`: segments of letters,
/// digits, `_` and `-`, none reserved.
pub(crate) fn normalise(path: &str) -> Result<String, ApiError> {
    let trimmed = path.trim_matches('/');
    let bad = |why: &str| {
        Err(ApiError::InvalidRequest(format!(
            "invalid namespace path {:?}: {why}",
            trimmed.chars().take(64).collect::<String>()
        )))
    };
    if trimmed.is_empty() {
        return bad("empty");
    }
    if trimmed.len() > 255 {
        return bad("longer than 255 bytes");
    }
    for seg in trimmed.split('/') {
        if seg.is_empty()
            || !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return bad("use segments of letters, digits, '_' and '-' separated by '/'");
        }
        if RESERVED.contains(&seg) {
            return bad("a segment is a reserved name");
        }
    }
    Ok(format!("{trimmed}/"))
}

pub(super) async fn handle(p: &Pipeline, req: &Request, rest: &str) -> Result<Response, ApiError> {
    let op = req.operation;
    if rest.trim_matches('/').is_empty() {
        return match op {
            Operation::List | Operation::Read => list(p).await,
            _ => Err(ApiError::UnsupportedOperation),
        };
    }
    let path = normalise(rest)?;
    match op {
        Operation::Read => read(p, &path).await,
        Operation::Create | Operation::Update => create(p, req, &path).await,
        Operation::Patch => patch(p, req, &path).await,
        Operation::Delete => delete(p, &path).await,
        Operation::List => Err(ApiError::UnsupportedOperation),
    }
}

/// Every namespace in force, by path.
async fn all(p: &Pipeline) -> Result<BTreeMap<String, NamespaceInfo>, ApiError> {
    p.control
        .read(|r| {
            r.state()
                .registers()
                .filter(|(k, _)| k.kind() == Kind::Namespace)
                .filter_map(|(k, _)| match (k, r.state().get(k)) {
                    (Key::Namespace { path }, Some(Value::Namespace(info))) => {
                        Some((path.clone(), info))
                    }
                    _ => None,
                })
                .collect()
        })
        .await
}

fn shown(path: &str, info: &NamespaceInfo) -> Json {
    json!({
        "id": path.trim_end_matches('/'),
        "path": path,
        "custom_metadata": info.custom_metadata,
    })
}

async fn list(p: &Pipeline) -> Result<Response, ApiError> {
    let all = all(p).await?;
    if all.is_empty() {
        return Err(ApiError::NotFound("nothing to list".into()));
    }
    let key_info: serde_json::Map<String, Json> = all
        .iter()
        .map(|(path, info)| (path.clone(), shown(path, info)))
        .collect();
    Ok(Response::from_json(json!({
        "keys": all.keys().collect::<Vec<_>>(),
        "key_info": key_info,
    })))
}

async fn read(p: &Pipeline, path: &str) -> Result<Response, ApiError> {
    let all = all(p).await?;
    match all.get(path) {
        Some(info) => Ok(Response::from_json(shown(path, info))),
        None => Err(ApiError::NotFound(String::new())),
    }
}

fn metadata(req: &Request) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    params::deny_unknown(&req.data, &["custom_metadata"])?;
    params::string_map(&req.data, "custom_metadata")
}

/// Creates a namespace (its parent must exist); writing an existing one
/// replaces its metadata when given, as Vault does.
async fn create(p: &Pipeline, req: &Request, path: &str) -> Result<Response, ApiError> {
    let meta = metadata(req)?;
    let all = all(p).await?;
    if let Some((parent, _)) = path.trim_end_matches('/').rsplit_once('/') {
        let parent = format!("{parent}/");
        if !all.contains_key(&parent) {
            return Err(ApiError::InvalidRequest(format!(
                "parent namespace {parent:?} does not exist"
            )));
        }
    }
    let info = match (all.get(path), meta) {
        (Some(old), None) => old.clone(),
        (_, meta) => NamespaceInfo {
            custom_metadata: meta.unwrap_or_default(),
        },
    };
    write(p, path, info.clone()).await?;
    Ok(Response::from_json(shown(path, &info)))
}

/// Merges `custom_metadata` into the namespace's (a value of `null`
/// removes that key).
async fn patch(p: &Pipeline, req: &Request, path: &str) -> Result<Response, ApiError> {
    params::deny_unknown(&req.data, &["custom_metadata"])?;
    let mut info = all(p)
        .await?
        .remove(path)
        .ok_or_else(|| ApiError::NotFound(String::new()))?;
    match req.data.get("custom_metadata") {
        None | Some(Json::Null) => {}
        Some(Json::Object(m)) => {
            for (k, v) in m {
                match v {
                    Json::Null => {
                        info.custom_metadata.remove(k);
                    }
                    Json::String(s) => {
                        info.custom_metadata.insert(k.clone(), s.clone());
                    }
                    _ => {
                        return Err(ApiError::InvalidRequest(format!(
                            "custom_metadata {k:?}: want a string or null"
                        )));
                    }
                }
            }
        }
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "custom_metadata must be an object".into(),
            ));
        }
    }
    write(p, path, info.clone()).await?;
    Ok(Response::from_json(shown(path, &info)))
}

async fn delete(p: &Pipeline, path: &str) -> Result<Response, ApiError> {
    let all = all(p).await?;
    if !all.contains_key(path) {
        return Ok(Response::empty());
    }
    if all.keys().any(|k| k != path && k.starts_with(path)) {
        return Err(ApiError::InvalidRequest(format!(
            "cannot delete namespace {path:?}: it has child namespaces"
        )));
    }
    p.control
        .write(
            Key::Namespace {
                path: path.to_owned(),
            },
            None,
        )
        .await?;
    Ok(Response::empty())
}

/// Writes a namespace; the control plane checks the value (sizes) and
/// answers 400 when it does not fit.
async fn write(p: &Pipeline, path: &str, info: NamespaceInfo) -> Result<(), ApiError> {
    p.control
        .write(
            Key::Namespace {
                path: path.to_owned(),
            },
            Some(Value::Namespace(info)),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_checked() {
        assert_eq!(normalise("team").expect("ok"), "team/");
        assert_eq!(normalise("/team/payments/").expect("ok"), "team/payments/");
        for bad in ["", "/", "a//b", "a b", "sys", "team/root", "a/../b", "ü"] {
            assert!(normalise(bad).is_err(), "{bad:?}");
        }
        assert!(normalise(&"a".repeat(300)).is_err());
    }
}
