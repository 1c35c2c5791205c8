//! The Vault-compatible HTTP front end (`/v1/sys/...`).
//!
//! A thin adapter: it parses requests into [`Node`] calls and renders their
//! results in Vault's wire format (docs/architecture.md, "Front ends"):
//! `Content-Type` exactly `application/json`, `{"errors": [...]}` on failure,
//! 204 with an empty body when there is nothing to return, the standard
//! envelope where Vault uses one and bare bodies where it does not.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use sigil_hsm::SecretString;

use crate::api_error::ApiError;
use crate::logical::{self, Consistency, Operation, Outcome};
use crate::node::{Caller, Node};
use crate::seal::{GenerateRootStatus, InitParams, RekeyStatus, SealStatus};
use crate::shamir::Share;

#[derive(Debug, Clone)]
struct AppState {
    node: Arc<Node>,
    max_body: usize,
}

/// The router for a node; `max_body` bounds request bodies (413 beyond).
pub fn router(node: Arc<Node>, max_body: usize) -> Router {
    let state = AppState { node, max_body };
    Router::new()
        .route("/v1/sys/init", any(init))
        .route("/v1/sys/unseal", any(unseal))
        .route("/v1/sys/seal-status", any(seal_status))
        .route("/v1/sys/health", any(health))
        .route("/v1/sys/leader", any(leader))
        .route("/v1/sys/storage/raft/join", any(raft_join))
        .route("/v1/sys/rekey/init", any(|s, r| rekey_init(s, r, false)))
        .route(
            "/v1/sys/rekey/update",
            any(|s, r| rekey_update(s, r, false)),
        )
        .route(
            "/v1/sys/rekey-recovery-key/init",
            any(|s, r| rekey_init(s, r, true)),
        )
        .route(
            "/v1/sys/rekey-recovery-key/update",
            any(|s, r| rekey_update(s, r, true)),
        )
        .route("/v1/sys/generate-root/attempt", any(generate_root_attempt))
        .route("/v1/sys/generate-root/update", any(generate_root_update))
        .fallback(logical)
        .layer(axum::middleware::from_fn(trace_request))
        .with_state(state)
}

/// One span per request: method, path (never the query or headers), status.
async fn trace_request(req: Request, next: axum::middleware::Next) -> Response {
    let span = tracing::info_span!(
        "http_request",
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
    );
    let response = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.record("status", response.status().as_u16());
    response
}

/// Every other path goes through the request pipeline.
async fn logical(State(st): State<AppState>, req: Request) -> Response {
    let head = req.method() == Method::HEAD;
    let result = async {
        let r = logical_request(&st, req).await?;
        let id = r.id.clone();
        st.node.handle(r).await.map(|resp| (id, resp))
    }
    .await;
    match result {
        Ok((id, resp)) if head => {
            let mut r = render(resp, &id);
            *r.body_mut() = axum::body::Body::empty();
            r
        }
        Ok((id, resp)) => render(resp, &id),
        Err(e) => error_response(&e),
    }
}

/// Streams a file back (a snapshot), holding it until the last byte is
/// sent; the file is deleted when the stream ends or is dropped.
fn stream_file(download: logical::Download) -> Response {
    let path = download.path.to_path_buf();
    let stream = crate::file_stream::read_file(path, download.path.clone());
    let mut r = (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response();
    if let Ok(ct) = HeaderValue::from_str(&download.content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(download.len));
    r
}

/// Percent-decodes a URI path; malformed escapes and non-UTF-8 are errors.
fn percent_decode(path: &str) -> Result<String, ApiError> {
    let bad = || ApiError::InvalidRequest("invalid request path: bad percent-encoding".into());
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Builds the pipeline's request from an HTTP request.
async fn logical_request(st: &AppState, req: Request) -> Result<logical::Request, ApiError> {
    let raw_path = req.uri().path().to_owned();
    let path = raw_path
        .strip_prefix("/v1/")
        .ok_or_else(|| ApiError::NotFound(String::new()))?;
    let path = percent_decode(path)?;
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase());
    // Read the headers before the body takes the request.
    let (wrap_ttl, consistency) = {
        let header = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap_or(""));
        let wrap_ttl = header("x-vault-wrap-ttl")
            .map(|v| {
                logical::parse_wrap_ttl(v)
                    .map_err(|e| ApiError::InvalidRequest(format!("invalid X-Vault-Wrap-TTL: {e}")))
            })
            .transpose()?;
        // Vault clients that track read-your-writes send back the
        // `X-Vault-Index` they were given, which Sigil sets to its log index.
        let index = header("x-sigil-index").or_else(|| header("x-vault-index"));
        let consistency = Consistency::from_headers(index, header("x-sigil-consistency"))
            .map_err(ApiError::InvalidRequest)?;
        // Requests are not scoped by namespace yet: one that names a
        // namespace is refused rather than served from the root.
        if let Some(ns) = header("x-vault-namespace") {
            let ns = ns.trim_matches('/');
            if !ns.is_empty() && ns != "root" {
                return Err(ApiError::InvalidRequest(format!(
                    "X-Vault-Namespace {:?}: requests scoped to a namespace are not served yet; send them without the header (the root namespace)",
                    ns.chars().take(64).collect::<String>()
                )));
            }
        }
        (wrap_ttl, consistency)
    };
    let p = parse(st, req).await?;
    // Go's strconv.ParseBool, as Vault reads it (hvac sends `list=True`).
    let list_query = p
        .query
        .get("list")
        .and_then(|v| crate::params::parse_bool(v))
        .unwrap_or(false);
    let operation = match method.as_str() {
        "LIST" => Operation::List,
        "GET" | "HEAD" if list_query => Operation::List,
        "GET" | "HEAD" => Operation::Read,
        "POST" | "PUT" => Operation::Update,
        "PATCH" => Operation::Patch,
        "DELETE" => Operation::Delete,
        _ => return Err(ApiError::UnsupportedOperation),
    };
    let data = match operation {
        Operation::Read | Operation::List | Operation::Delete => {
            let mut d = logical::Data::new();
            for (k, v) in p.query {
                if k != "list" {
                    d.insert(k, Value::String(v));
                }
            }
            // A DELETE may carry a body too.
            if let Value::Object(body) = p.body {
                d.extend(body);
            }
            d
        }
        _ => match p.body {
            Value::Object(m) => m,
            _ => logical::Data::new(),
        },
    };
    let mut r = logical::Request::new(operation, path);
    r.data = data;
    r.token = p.caller.token;
    r.client_addr = p.caller.remote_addr;
    r.content_type = content_type;
    r.wrap_ttl = wrap_ttl;
    r.consistency = consistency;
    r.upload = p.upload;
    Ok(r)
}

/// Renders a pipeline response in Vault's wire format.
fn render(resp: logical::Response, request_id: &str) -> Response {
    let index = resp.index;
    let mut r = render_body(resp, request_id);
    if index > 0 {
        let v = HeaderValue::from(index);
        r.headers_mut().insert("x-sigil-index", v.clone());
        r.headers_mut().insert("x-vault-index", v);
    }
    r
}

fn render_body(resp: logical::Response, request_id: &str) -> Response {
    if let Some(download) = resp.download {
        return stream_file(download);
    }
    if let Some(raw) = resp.raw {
        let mut r = (StatusCode::OK, raw.body).into_response();
        if let Ok(ct) = HeaderValue::from_str(&raw.content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        return r;
    }
    if resp.is_empty() && resp.outcome == Outcome::Ok {
        return no_content();
    }
    let status = match resp.outcome {
        Outcome::Ok => StatusCode::OK,
        Outcome::NotFound => StatusCode::NOT_FOUND,
        Outcome::Accepted => StatusCode::ACCEPTED,
    };
    json_response(status, &response_body(resp, request_id))
}

/// The standard envelope for a pipeline response.
pub(crate) fn response_body(resp: logical::Response, request_id: &str) -> Value {
    let (lease_id, lease_duration, renewable) = resp
        .lease
        .as_ref()
        .map(|l| (l.lease_id.clone(), l.ttl, l.renewable))
        .unwrap_or_default();
    let auth = resp.auth.as_ref().map(logical::Auth::to_json);
    let wrap_info = resp.wrap_info.as_ref().map(|w| {
        json!({
            "token": w.token.expose(),
            "accessor": w.accessor,
            "ttl": w.ttl,
            "creation_time": w.creation_time,
            "creation_path": w.creation_path,
            "wrapped_accessor": w.wrapped_accessor,
        })
    });
    let warnings = (!resp.warnings.is_empty()).then_some(&resp.warnings);
    // Legacy endpoints repeat `data` at the top level; only they keep a copy.
    let top_level = resp.legacy_top_level.then(|| resp.data.clone()).flatten();
    let data = match (resp.data, &resp.wrap_info) {
        (_, Some(_)) | (None, _) => Value::Null,
        (Some(d), None) => Value::Object(d),
    };
    let mut body = json!({
        "request_id": request_id,
        "lease_id": lease_id,
        "renewable": renewable,
        "lease_duration": lease_duration,
        "data": data,
        "wrap_info": wrap_info,
        "warnings": warnings,
        "auth": auth,
        "mount_type": resp.mount_type,
    });
    if let (Some(obj), Some(d)) = (body.as_object_mut(), top_level) {
        for (k, v) in d {
            obj.entry(k).or_insert(v);
        }
    }
    body
}

// ---- request parsing --------------------------------------------------------

/// The parts of a request every handler may need.
struct Parsed {
    method: Method,
    caller: Caller,
    body: Value,
    query: HashMap<String, String>,
    /// The unread body of an upload path (see [`is_upload`]).
    upload: logical::Upload,
}

/// Paths whose body is a raw file (a snapshot to restore), handed to the
/// handler unread and unlimited by `max_request_size`: it is read only
/// after the request passes authentication and the sudo check.
fn is_upload(method: &Method, path: &str) -> bool {
    matches!(method.as_str(), "POST" | "PUT")
        && matches!(
            path,
            "sys/storage/raft/snapshot" | "sys/storage/raft/snapshot-force"
        )
}

async fn parse(state: &AppState, req: Request) -> Result<Parsed, ApiError> {
    let upload_path = req
        .uri()
        .path()
        .strip_prefix("/v1/")
        .is_some_and(|p| is_upload(req.method(), p));
    let (parts, body) = req.into_parts();
    let remote_addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let method = if parts.method.as_str() == "LIST" {
        Method::GET
    } else {
        parts.method.clone()
    };
    if upload_path {
        return Ok(Parsed {
            method,
            caller: Caller {
                token: token_from(&parts.headers),
                remote_addr,
            },
            body: Value::Object(Default::default()),
            query,
            upload: logical::Upload::new(body),
        });
    }
    let bytes = axum::body::to_bytes(body, state.max_body)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::InvalidRequest(format!("failed to parse JSON input: {e}")))?;
        if !v.is_object() {
            return Err(ApiError::InvalidRequest(
                "failed to parse JSON input: expected a JSON object".into(),
            ));
        }
        v
    };
    Ok(Parsed {
        method,
        caller: Caller {
            token: token_from(&parts.headers),
            remote_addr,
        },
        body,
        query,
        upload: logical::Upload::default(),
    })
}

/// `X-Vault-Token`, else `Authorization: Bearer`.
fn token_from(headers: &HeaderMap) -> Option<SecretString> {
    if let Some(v) = headers.get("x-vault-token").and_then(|v| v.to_str().ok())
        && !v.is_empty()
    {
        return Some(SecretString::from(v));
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .filter(|t| !t.is_empty())
        .map(|t| SecretString::from(t.trim()))
}

fn is_write(m: &Method) -> bool {
    m == Method::PUT || m == Method::POST
}

/// Deserialises the body into `T`, naming the bad field on error.
fn body_as<T: for<'de> Deserialize<'de>>(body: &Value) -> Result<T, ApiError> {
    serde_json::from_value(body.clone())
        .map_err(|e| ApiError::InvalidRequest(format!("invalid request body: {e}")))
}

// ---- responses ---------------------------------------------------------------

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    // hvac compares the header exactly; no charset suffix.
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn ok(body: Value) -> Response {
    json_response(StatusCode::OK, &body)
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let errors: Vec<String> = match e {
        ApiError::NotFound(_) => Vec::new(),
        e => vec![e.to_string()],
    };
    json_response(status, &json!({ "errors": errors }))
}

fn unsupported() -> Response {
    error_response(&ApiError::UnsupportedOperation)
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| error_response(&e))
}

fn shares_hex(shares: &[Share]) -> Vec<String> {
    shares.iter().map(|s| hex::encode(s.expose())).collect()
}

fn shares_b64(shares: &[Share]) -> Vec<String> {
    shares
        .iter()
        .map(|s| base64::engine::general_purpose::STANDARD.encode(s.expose()))
        .collect()
}

pub(crate) fn seal_status_json(s: &SealStatus) -> Value {
    let mut v = json!({
        "type": s.seal_type.as_str(),
        "initialized": s.initialized,
        "sealed": s.sealed,
        "t": s.threshold,
        "n": s.shares,
        "progress": s.progress,
        "nonce": s.nonce,
        "version": crate::node::VERSION,
        "build_date": "",
        "migration": false,
        "recovery_seal": s.recovery_seal,
        "storage_type": "rocksdb",
    });
    if let (Some(c), Some(obj)) = (&s.cluster, v.as_object_mut()) {
        obj.insert("cluster_name".into(), json!(c.cluster_name));
        obj.insert("cluster_id".into(), json!(c.cluster_id));
    }
    v
}

fn rekey_json(s: &RekeyStatus) -> Value {
    if s.complete {
        return json!({
            "complete": true,
            "nonce": s.nonce,
            "keys": shares_hex(&s.keys),
            "keys_base64": shares_b64(&s.keys),
            "pgp_fingerprints": null,
            "backup": false,
            "verification_required": false,
        });
    }
    json!({
        "started": s.started,
        "nonce": s.nonce,
        "t": s.threshold_out,
        "n": s.shares_out,
        "progress": s.progress,
        "required": s.required,
        "pgp_fingerprints": null,
        "backup": false,
        "verification_required": false,
    })
}

fn generate_root_json(s: &GenerateRootStatus) -> Value {
    json!({
        "started": s.started,
        "nonce": s.nonce,
        "progress": s.progress,
        "required": s.required,
        "complete": s.complete,
        "encoded_token": s.encoded_token,
        "encoded_root_token": s.encoded_token,
        "pgp_fingerprint": "",
        "otp": s.otp.as_ref().map(|o| o.expose().to_owned()).unwrap_or_default(),
        "otp_length": s.otp_length,
    })
}

// ---- handlers ----------------------------------------------------------------

/// Clients send `null` for parameters they leave unset (hvac does), so every
/// field is optional.
#[derive(Deserialize)]
struct InitBody {
    #[serde(default)]
    secret_shares: Option<u32>,
    #[serde(default)]
    secret_threshold: Option<u32>,
    #[serde(default)]
    recovery_shares: Option<u32>,
    #[serde(default)]
    recovery_threshold: Option<u32>,
    #[serde(default)]
    pgp_keys: Option<Vec<String>>,
    #[serde(default)]
    recovery_pgp_keys: Option<Vec<String>>,
    #[serde(default)]
    root_token_pgp_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    /// A member's cluster address (IP:PORT).
    leader_cluster_addr: Option<String>,
    /// Vault's field: Sigil joins over the cluster port, so this is refused
    /// with a pointer to `leader_cluster_addr`.
    leader_api_addr: Option<String>,
}

/// `POST sys/storage/raft/join`: unauthenticated, as in Vault. It only
/// acts on a node that belongs to no cell yet, and the cell admits the node
/// only if its cluster certificate was issued by the cell's CA.
async fn raft_join(State(st): State<AppState>, req: Request) -> Response {
    respond(
        async {
            let p = parse(&st, req).await?;
            if !is_write(&p.method) {
                return Err(ApiError::UnsupportedOperation);
            }
            let b: JoinBody = body_as(&p.body)?;
            let leader = match (b.leader_cluster_addr, b.leader_api_addr) {
                (Some(a), _) if !a.trim().is_empty() => a,
                (_, Some(_)) => {
                    return Err(ApiError::InvalidRequest(
                        "Sigil nodes join over the cluster port: give leader_cluster_addr \
                         (a member's raft.cluster_addr), not leader_api_addr"
                            .into(),
                    ));
                }
                _ => {
                    return Err(ApiError::InvalidRequest(
                        "leader_cluster_addr is required".into(),
                    ));
                }
            };
            st.node
                .join(leader.trim(), std::time::Duration::from_secs(30))
                .await?;
            Ok(ok(json!({ "joined": true })))
        }
        .await,
    )
}

async fn init(State(st): State<AppState>, req: Request) -> Response {
    respond(
        async {
            let p = parse(&st, req).await?;
            match p.method {
                Method::GET => Ok(ok(json!({ "initialized": st.node.init_status() }))),
                m if is_write(&m) => {
                    let b: InitBody = body_as(&p.body)?;
                    if b.pgp_keys.is_some_and(|k| !k.is_empty())
                        || b.recovery_pgp_keys.is_some_and(|k| !k.is_empty())
                        || b.root_token_pgp_key.is_some_and(|k| !k.is_empty())
                    {
                        return Err(ApiError::InvalidRequest(
                            "PGP-encrypted key shares are not supported".into(),
                        ));
                    }
                    let out = st
                        .node
                        .init(InitParams {
                            secret_shares: b.secret_shares.unwrap_or(0),
                            secret_threshold: b.secret_threshold.unwrap_or(0),
                            recovery_shares: b.recovery_shares.unwrap_or(0),
                            recovery_threshold: b.recovery_threshold.unwrap_or(0),
                            root_token: None,
                        })
                        .await?;
                    Ok(ok(json!({
                        "keys": shares_hex(&out.keys),
                        "keys_base64": shares_b64(&out.keys),
                        "recovery_keys": shares_hex(&out.recovery_keys),
                        "recovery_keys_base64": shares_b64(&out.recovery_keys),
                        "root_token": out.root_token.expose(),
                    })))
                }
                _ => Ok(unsupported()),
            }
        }
        .await,
    )
}

#[derive(Deserialize)]
struct UnsealBody {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    reset: Option<bool>,
    #[serde(default)]
    migrate: Option<bool>,
}

async fn unseal(State(st): State<AppState>, req: Request) -> Response {
    respond(
        async {
            let p = parse(&st, req).await?;
            if !is_write(&p.method) {
                return Ok(unsupported());
            }
            let b: UnsealBody = body_as(&p.body)?;
            if b.migrate == Some(true) {
                return Err(ApiError::InvalidRequest(
                    "seal migration is not supported".into(),
                ));
            }
            let status = st
                .node
                .unseal(b.key.as_deref(), b.reset == Some(true))
                .await?;
            Ok(ok(seal_status_json(&status)))
        }
        .await,
    )
}

async fn seal_status(State(st): State<AppState>, req: Request) -> Response {
    respond(
        async {
            let p = parse(&st, req).await?;
            if p.method != Method::GET {
                return Ok(unsupported());
            }
            Ok(ok(seal_status_json(&st.node.seal_status())))
        }
        .await,
    )
}

/// Status codes per Vault: 200 active, 429 standby, 473 performance standby,
/// 501 uninitialised, 503 sealed, each overridable by query parameter.
async fn health(State(st): State<AppState>, req: Request) -> Response {
    respond(
        async {
            let head = req.method() == Method::HEAD;
            let p = parse(&st, req).await?;
            if p.method != Method::GET && !head {
                return Ok(unsupported());
            }
            let h = st.node.health();
            let flag = |name: &str| -> Result<bool, ApiError> {
                match p.query.get(name).map(String::as_str) {
                    None => Ok(false),
                    Some("" | "true" | "1") => Ok(true),
                    Some("false" | "0") => Ok(false),
                    Some(v) => Err(ApiError::InvalidRequest(format!(
                        "invalid value {v:?} for {name}: want true or false"
                    ))),
                }
            };
            let code = |name: &str, default: u16| -> Result<u16, ApiError> {
                match p.query.get(name) {
                    None => Ok(default),
                    Some(v) => v
                        .parse::<u16>()
                        .ok()
                        .filter(|c| (100..=999).contains(c))
                        .ok_or_else(|| {
                            ApiError::InvalidRequest(format!(
                                "invalid value {v:?} for {name}: want an HTTP status code"
                            ))
                        }),
                }
            };
            let status = if !h.initialized {
                code("uninitcode", 501)?
            } else if h.sealed {
                code("sealedcode", 503)?
            } else if h.performance_standby && !flag("perfstandbyok")? {
                // Vault checks this before plain standby: a follower that
                // serves reads is a performance standby (473).
                code("performancestandbycode", 473)?
            } else if h.standby && !flag("standbyok")? {
                code("standbycode", 429)?
            } else {
                code("activecode", 200)?
            };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            if head {
                return Ok(status.into_response());
            }
            let (cluster_name, cluster_id) = h
                .cluster
                .map(|c| (c.cluster_name, c.cluster_id))
                .unwrap_or_default();
            Ok(json_response(
                status,
                &json!({
                    "initialized": h.initialized,
                    "sealed": h.sealed,
                    "standby": h.standby,
                    "performance_standby": h.performance_standby,
                    "replication_performance_mode": "disabled",
                    "replication_dr_mode": "disabled",
                    "server_time_utc": h.server_time_utc,
                    "version": h.version,
                    "cluster_name": cluster_name,
                    "cluster_id": cluster_id,
                }),
            ))
        }
        .await,
    )
}

async fn leader(State(st): State<AppState>, req: Request) -> Response {
    respond(
        async {
            let p = parse(&st, req).await?;
            if p.method != Method::GET {
                return Ok(unsupported());
            }
            let l = st.node.leader()?;
            Ok(ok(json!({
                "ha_enabled": l.ha_enabled,
                "is_self": l.is_self,
                "active_time": "0001-01-01T00:00:00Z",
                "leader_address": l.leader_address,
                "leader_cluster_address": l.leader_cluster_address,
                "performance_standby": false,
                "performance_standby_last_remote_wal": 0,
            })))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct RekeyInitBody {
    #[serde(default)]
    secret_shares: Option<u32>,
    #[serde(default)]
    secret_threshold: Option<u32>,
    #[serde(default)]
    pgp_keys: Option<Vec<String>>,
    #[serde(default)]
    backup: Option<bool>,
    #[serde(default)]
    require_verification: Option<bool>,
}

async fn rekey_init(State(st): State<AppState>, req: Request, recovery: bool) -> Response {
    respond(
        async {
            let p = parse(&st, req).await?;
            match p.method {
                Method::GET => Ok(ok(rekey_json(&st.node.rekey_status(recovery)?))),
                Method::DELETE => {
                    st.node.rekey_cancel(recovery)?;
                    Ok(no_content())
                }
                m if is_write(&m) => {
                    let b: RekeyInitBody = body_as(&p.body)?;
                    if b.pgp_keys.is_some_and(|k| !k.is_empty())
                        || b.backup == Some(true)
                        || b.require_verification == Some(true)
                    {
                        return Err(ApiError::InvalidRequest(
                            "pgp_keys, backup and require_verification are not supported".into(),
                        ));
                    }
                    let s = st
                        .node
                        .rekey_init(
                            recovery,
                            b.secret_shares.unwrap_or(0),
                            b.secret_threshold.unwrap_or(0),
                        )
                        .await?;
                    Ok(ok(rekey_json(&s)))
                }
                _ => Ok(unsupported()),
            }
        }
        .await,
    )
}

#[derive(Deserialize)]
struct KeyNonceBody {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

async fn rekey_update(State(st): State<AppState>, req: Request, recovery: bool) -> Response {
    respond(
        async {
            let p = parse(&st, req).await?;
            if !is_write(&p.method) {
                return Ok(unsupported());
            }
            let b: KeyNonceBody = body_as(&p.body)?;
            let (key, nonce) = require_key_nonce(b)?;
            let s = st.node.rekey_update(recovery, &nonce, &key).await?;
            Ok(ok(rekey_json(&s)))
        }
        .await,
    )
}

fn require_key_nonce(b: KeyNonceBody) -> Result<(String, String), ApiError> {
    let key = b.key.filter(|k| !k.trim().is_empty());
    let key = key.ok_or_else(|| ApiError::InvalidRequest("'key' must be specified".into()))?;
    let nonce = b.nonce.filter(|n| !n.trim().is_empty());
    let nonce =
        nonce.ok_or_else(|| ApiError::InvalidRequest("'nonce' must be specified".into()))?;
    Ok((key, nonce))
}

#[derive(Deserialize)]
struct GenerateRootInitBody {
    #[serde(default)]
    otp: Option<String>,
    #[serde(default)]
    pgp_key: Option<String>,
}

async fn generate_root_attempt(State(st): State<AppState>, req: Request) -> Response {
    respond(
        async {
            let p = parse(&st, req).await?;
            match p.method {
                Method::GET => Ok(ok(generate_root_json(&st.node.generate_root_status()?))),
                Method::DELETE => {
                    st.node.generate_root_cancel()?;
                    Ok(no_content())
                }
                m if is_write(&m) => {
                    let b: GenerateRootInitBody = body_as(&p.body)?;
                    if b.pgp_key.is_some_and(|k| !k.is_empty()) {
                        return Err(ApiError::InvalidRequest(
                            "pgp_key is not supported; use an otp".into(),
                        ));
                    }
                    let s = st.node.generate_root_init(b.otp)?;
                    Ok(ok(generate_root_json(&s)))
                }
                _ => Ok(unsupported()),
            }
        }
        .await,
    )
}

async fn generate_root_update(State(st): State<AppState>, req: Request) -> Response {
    respond(
        async {
            let p = parse(&st, req).await?;
            if !is_write(&p.method) {
                return Ok(unsupported());
            }
            let b: KeyNonceBody = body_as(&p.body)?;
            let (key, nonce) = require_key_nonce(b)?;
            let s = st.node.generate_root_update(&nonce, &key).await?;
            Ok(ok(generate_root_json(&s)))
        }
        .await,
    )
}
