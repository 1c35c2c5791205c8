//! The request and response every front end speaks to the pipeline
//! (docs/architecture.md, "Request pipeline").
//!
//! The HTTP and gRPC front ends parse their wire formats into one
//! [`Request`], the pipeline answers with one [`Response`], and each front end
//! renders it. Nothing past the front ends sees HTTP or protobuf types.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sigil_hsm::SecretString;

use crate::api_error::ApiError;

/// Request data and response data: a JSON object.
pub type Data = Map<String, Value>;

/// What a request does. `Create` and `Update` are both writes; the pipeline
/// tells them apart by asking the engine whether the target exists, as
/// Vault's ACL model requires (a `create`-only policy may not overwrite).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Operation {
    Read,
    List,
    Create,
    Update,
    Patch,
    Delete,
}

impl Operation {
    /// The name Vault uses in audit records and policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::List => "list",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Patch => "patch",
            Operation::Delete => "delete",
        }
    }

    pub fn is_write(self) -> bool {
        matches!(
            self,
            Operation::Create | Operation::Update | Operation::Patch | Operation::Delete
        )
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How fresh a read must be (docs/architecture.md, "Read consistency").
/// A single node always serves its own latest state; cells use this to choose
/// between a local read, a read-index round and waiting for an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Consistency {
    /// Bounded staleness: whatever this node has applied.
    #[default]
    Default,
    /// Linearizable: confirm leadership (read-index) before reading.
    Linearizable,
    /// Read-your-writes: wait until this node has applied `index`.
    AfterIndex(u64),
}

impl Consistency {
    /// From the request's `x-sigil-index` and `x-sigil-consistency` headers
    /// (HTTP) or metadata (gRPC); a value that is not text is passed as `""`.
    pub fn from_headers(index: Option<&str>, level: Option<&str>) -> Result<Self, String> {
        if let Some(v) = index {
            return v
                .trim()
                .parse()
                .map(Consistency::AfterIndex)
                .map_err(|_| "invalid x-sigil-index: want a log index".to_owned());
        }
        match level {
            None | Some("default" | "bounded") => Ok(Consistency::Default),
            Some("linearizable") => Ok(Consistency::Linearizable),
            Some(_) => Err("invalid x-sigil-consistency: want bounded or linearizable".to_owned()),
        }
    }
}

/// A wrap TTL header (`X-Vault-Wrap-TTL`, `x-sigil-wrap-ttl`): seconds or a
/// Go-style duration, and more than zero.
pub fn parse_wrap_ttl(text: &str) -> Result<Duration, String> {
    let ttl = crate::duration::parse_duration_str(text)?;
    if ttl.is_zero() {
        return Err("must be positive".into());
    }
    Ok(ttl)
}

/// One request, as both front ends build it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Request {
    /// Unique per request; echoed as `request_id` and in audit records.
    pub id: String,
    pub operation: Operation,
    /// Checked by [`check_path`]: no leading slash, no empty, `.` or `..`
    /// segments, no control characters.
    pub path: String,
    /// Body for writes; query parameters for reads and lists.
    pub data: Data,
    #[serde(with = "secret_serde::option")]
    pub token: Option<SecretString>,
    pub client_addr: Option<SocketAddr>,
    /// `X-Vault-Wrap-TTL` / `x-sigil-wrap-ttl`.
    pub wrap_ttl: Option<Duration>,
    pub consistency: Consistency,
    /// Media type of the body, for operations that require one (PATCH wants
    /// `application/merge-patch+json`).
    pub content_type: Option<String>,
    /// A raw body the front end did not read (a snapshot upload): the
    /// handler reads it only once the request is authorised. Never
    /// forwarded: paths that take one are served where they land.
    #[serde(skip)]
    pub upload: Upload,
}

/// A request body handed over unread. Cloning shares it; whoever takes it
/// first has it.
#[derive(Clone, Default)]
pub struct Upload(Arc<std::sync::Mutex<Option<axum::body::Body>>>);

impl Upload {
    pub fn new(body: axum::body::Body) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(body))))
    }

    /// The body, if there is one and nobody took it yet.
    pub fn take(&self) -> Option<axum::body::Body> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present = self.0.lock().map(|b| b.is_some()).unwrap_or(false);
        f.debug_tuple("Upload").field(&present).finish()
    }
}

/// A file the front end streams back as the response body (a snapshot),
/// deleted once the last holder drops it.
#[derive(Clone)]
pub struct Download {
    pub content_type: String,
    pub path: Arc<tempfile::TempPath>,
    pub len: u64,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("content_type", &self.content_type)
            .field("len", &self.len)
            .finish()
    }
}

impl PartialEq for Download {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.path, &other.path)
    }
}

/// A fresh request ID in UUID form: a random per-process prefix and a
/// counter. IDs are unique and correlate a request across logs and audit;
/// they are not secrets, so the hot path spends no system call on them.
pub fn new_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        // On failure the prefix is zero: IDs stay unique within the process.
        let _ = aws_lc_rs::rand::fill(&mut b);
        u64::from_be_bytes(b)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        prefix >> 32,
        (prefix >> 16) & 0xffff,
        prefix & 0x0fff,
        (n >> 48) & 0x0fff,
        n & 0xffff_ffff_ffff
    )
}

impl Request {
    pub fn new(operation: Operation, path: impl Into<String>) -> Self {
        Self {
            id: new_request_id(),
            operation,
            path: path.into(),
            data: Data::new(),
            token: None,
            client_addr: None,
            wrap_ttl: None,
            consistency: Consistency::Default,
            content_type: None,
            upload: Upload::default(),
        }
    }

    pub fn with_data(mut self, data: Data) -> Self {
        self.data = data;
        self
    }

    pub fn with_token(mut self, token: Option<SecretString>) -> Self {
        self.token = token;
        self
    }
}

/// The `auth` block of a response: a token was issued or looked at.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Auth {
    #[serde(with = "secret_serde")]
    pub client_token: SecretString,
    pub accessor: String,
    pub policies: Vec<String>,
    pub token_policies: Vec<String>,
    pub identity_policies: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub lease_duration: u64,
    pub renewable: bool,
    pub entity_id: String,
    pub token_type: String,
    pub orphan: bool,
    pub num_uses: u64,
    /// Who the token was issued to (`approle:ci`, a SPIFFE ID): recorded
    /// in audit records; not part of Vault's wire format.
    #[serde(default)]
    pub identity: Option<String>,
}

impl Auth {
    /// The `auth` object of Vault's response envelope. It holds the client
    /// token in clear: only for the wire, or for storage inside the barrier.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "client_token": self.client_token.expose(),
            "accessor": self.accessor,
            "policies": self.policies,
            "token_policies": self.token_policies,
            "identity_policies": self.identity_policies,
            "metadata": self.metadata,
            "lease_duration": self.lease_duration,
            "renewable": self.renewable,
            "entity_id": self.entity_id,
            "token_type": self.token_type,
            "orphan": self.orphan,
            "mfa_requirement": null,
            "num_uses": self.num_uses,
        })
    }
}

/// A lease attached to a secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub lease_id: String,
    pub ttl: u64,
    pub renewable: bool,
}

/// A secret an engine hands out under a lease: the pipeline registers the
/// lease and answers with [`Lease`]. `internal` is what the engine needs to
/// renew and revoke it later (a database user name); it is kept in the
/// barrier with the lease and never returned to the client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretLease {
    /// Seconds; 0 takes the mount's default.
    pub ttl: u64,
    /// Seconds after issue beyond which it cannot be renewed; 0 takes the
    /// mount's maximum (it can never exceed it).
    pub max_ttl: u64,
    pub renewable: bool,
    pub internal: Data,
}

/// What an auth method decided at a login: the pipeline issues a token
/// from it (with the auth mount's TTL limits) and puts it in `auth`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginGrant {
    pub policies: Vec<String>,
    /// Leave out the `default` policy.
    pub no_default_policy: bool,
    /// Prefixed with the mount type (`approle`, `jwt-…`).
    pub display_name: String,
    pub metadata: BTreeMap<String, String>,
    /// Seconds; 0 takes the mount's default.
    pub ttl: u64,
    /// Seconds; 0 takes the mount's maximum.
    pub max_ttl: u64,
    pub explicit_max_ttl: u64,
    pub period: u64,
    pub num_uses: u64,
    /// CIDR blocks the token may be used from.
    pub bound_cidrs: Vec<String>,
    /// Who logged in: `approle:<role>`, a SPIFFE ID,
    /// `kubernetes:<namespace>/<service account>`.
    pub identity: String,
    /// The auth method's role.
    pub role: String,
}

/// What a wrapped response returns instead of its data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WrapInfo {
    #[serde(with = "secret_serde")]
    pub token: SecretString,
    pub accessor: String,
    pub ttl: u64,
    pub creation_time: String,
    pub creation_path: String,
    pub wrapped_accessor: String,
}

/// Whether the response reports success or an absent thing that still has a
/// body (a soft-deleted KV version is a 404 that carries its metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    #[default]
    Ok,
    NotFound,
    /// Work was queued rather than done (HTTP 202).
    Accepted,
}

/// A body the front end sends as is (Prometheus text, for one).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RawBody {
    pub content_type: String,
    pub body: Vec<u8>,
}

/// One response, rendered by each front end in its own format. `data: None`
/// with nothing else set is "nothing to return" (HTTP 204).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Response {
    pub data: Option<Data>,
    pub auth: Option<Auth>,
    pub lease: Option<Lease>,
    pub warnings: Vec<String>,
    pub wrap_info: Option<WrapInfo>,
    pub outcome: Outcome,
    /// Older `sys/` endpoints also copy `data` to the top level of the body.
    pub legacy_top_level: bool,
    /// Set by the pipeline from the mount that served the request.
    pub mount_type: String,
    pub raw: Option<RawBody>,
    /// A file to stream as the body; only on paths served where they land.
    #[serde(skip)]
    pub download: Option<Download>,
    /// A secret to lease (set by engines, consumed by the pipeline, which
    /// puts a [`Lease`] in its place); never leaves the node that made it.
    #[serde(skip)]
    pub secret: Option<SecretLease>,
    /// A login an auth method granted (consumed by the pipeline, which
    /// issues the token and fills `auth`).
    #[serde(skip)]
    pub login: Option<LoginGrant>,
    /// The log index the serving node had applied when it answered: a read
    /// that passes it back (`X-Sigil-Index`) sees at least this state.
    #[serde(default)]
    pub index: u64,
}

impl Response {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn data(data: Data) -> Self {
        Self {
            data: Some(data),
            ..Self::default()
        }
    }

    /// A response whose data is the JSON object `v` (anything else gives
    /// no data).
    pub fn from_json(v: serde_json::Value) -> Self {
        match v {
            Value::Object(m) => Self::data(m),
            _ => Self::default(),
        }
    }

    /// A 404 that still carries `data`.
    pub fn not_found_with(data: Data) -> Self {
        Self {
            data: Some(data),
            outcome: Outcome::NotFound,
            ..Self::default()
        }
    }

    pub fn legacy(mut self) -> Self {
        self.legacy_top_level = true;
        self
    }

    pub fn with_warning(mut self, w: impl Into<String>) -> Self {
        self.warnings.push(w.into());
        self
    }

    /// Nothing to return: HTTP answers 204.
    pub fn is_empty(&self) -> bool {
        self.data.is_none()
            && self.auth.is_none()
            && self.lease.is_none()
            && self.wrap_info.is_none()
            && self.warnings.is_empty()
            && self.raw.is_none()
            && self.download.is_none()
    }
}

/// Longest request path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Most segments a request path may have.
pub const MAX_PATH_SEGMENTS: usize = 256;

/// Checks a request path (already percent-decoded, without `/v1/`): it may
/// end in `/` (a directory, for lists) but has no empty, `.` or `..`
/// segments, no control characters and no backslashes, so no engine ever
/// sees a path that could name something outside its own view.
pub fn check_path(path: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::InvalidRequest(format!(
            "invalid request path: {why}"
        )))
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("too long");
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return bad("control character or backslash");
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let mut segments = 0usize;
    for seg in trimmed.split('/') {
        segments += 1;
        if segments > MAX_PATH_SEGMENTS {
            return bad("too many segments");
        }
        match seg {
            "" => return bad("empty segment"),
            "." | ".." => return bad("relative segment"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_escape_a_view_are_rejected() {
        for ok in [
            "secret/data/a",
            "secret/metadata/",
            "sys/mounts",
            "a/b.c/d..e",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        let long = "a/".repeat(MAX_PATH_SEGMENTS + 1);
        for bad in [
            "",
            "/secret/a",
            "secret//a",
            "secret/../sys",
            "secret/./a",
            "..",
            "secret/a\0b",
            "secret\\..\\a",
            "secret/a\n",
            long.as_str(),
        ] {
            assert!(
                matches!(check_path(bad), Err(ApiError::InvalidRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn consistency_and_wrap_ttl_headers_parse_or_name_the_problem() {
        assert_eq!(
            Consistency::from_headers(None, None),
            Ok(Consistency::Default)
        );
        assert_eq!(
            Consistency::from_headers(None, Some("linearizable")),
            Ok(Consistency::Linearizable)
        );
        assert_eq!(
            Consistency::from_headers(Some(" 42 "), Some("bounded")),
            Ok(Consistency::AfterIndex(42))
        );
        for (index, level) in [(Some("x"), None), (Some(""), None), (None, Some("strong"))] {
            let e = Consistency::from_headers(index, level).expect_err("refused");
            assert!(e.starts_with("invalid x-sigil-"), "{e}");
        }
        assert_eq!(parse_wrap_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_wrap_ttl("300"), Ok(Duration::from_secs(300)));
        assert!(parse_wrap_ttl("0").is_err());
        assert!(parse_wrap_ttl("banana").is_err());
    }

    #[test]
    fn request_ids_are_unique_and_uuid_shaped() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{a}");
        assert!(a.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn empty_response_is_only_the_default() {
        assert!(Response::empty().is_empty());
        assert!(!Response::data(Data::new()).is_empty());
        assert!(!Response::empty().with_warning("w").is_empty());
    }
}

/// Serde for secrets inside values that travel only between the nodes of a
/// cell (a forwarded request and its response, over mutual TLS). Nothing
/// serialised with it is logged or stored.
mod secret_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use sigil_hsm::SecretString;

    pub fn serialize<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        Ok(SecretString::new(String::deserialize(d)?))
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(v.expose()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SecretString>, D::Error> {
            Ok(Option::<String>::deserialize(d)?.map(SecretString::new))
        }
    }
}
