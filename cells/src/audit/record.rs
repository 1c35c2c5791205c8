//! The audit record: Vault's JSON audit entry, with secrets replaced by their
//! HMAC (docs/audit.md, "Record format" and "HMAC").
//!
//! The pipeline builds plain [`AuditAuth`], [`AuditRequest`] and
//! [`AuditResponse`] values once per request; each device's [`Redactor`]
//! turns them into an [`Entry`] under its own salt and options. Nothing here
//! does I/O or reads the clock: the broker passes the time in.

use std::collections::BTreeMap;

use aws_lc_rs::hmac;
use serde::Serialize;
use serde_json::{Map, Value};
use sigil_hsm::{SecretBytes, SecretString};

use crate::logical::{Auth, Request, Response};
use crate::mounts::MountEntry;

/// What a redacted string starts with, as in Vault.
pub const HMAC_PREFIX: &str = "hmac-sha256:";

/// `hmac-sha256:<hex>` of HMAC-SHA256(`salt`, `input`): what every secret in
/// a record becomes, and what `sys/audit-hash` answers so an operator can
/// find a known token or value in the log.
pub fn hash_value(salt: &SecretBytes, input: &str) -> String {
    // The salt is keying material for this one MAC and never leaves it.
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt.expose());
    let tag = hmac::sign(&key, input.as_bytes());
    format!("{HMAC_PREFIX}{}", hex::encode(tag.as_ref()))
}

/// Who made the request, or the token a response issued: Vault's audit
/// `auth` block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditAuth {
    /// HMACed.
    pub client_token: Option<SecretString>,
    /// HMACed unless the device sets `hmac_accessor=false`.
    pub accessor: String,
    pub display_name: String,
    pub policies: Vec<String>,
    pub token_policies: Vec<String>,
    pub identity_policies: Vec<String>,
    /// Values HMACed, keys in clear.
    pub metadata: BTreeMap<String, String>,
    pub entity_id: String,
    pub token_type: String,
    /// Seconds.
    pub token_ttl: u64,
    /// Who the token was issued to (`approle:ci`, a SPIFFE ID,
    /// `kubernetes:ns/sa`): in clear, so responders can search by it.
    pub identity: Option<String>,
}

impl AuditAuth {
    /// The `auth` block of a response that issued or looked at a token.
    pub fn from_auth(auth: &Auth, display_name: &str) -> Self {
        Self {
            client_token: Some(auth.client_token.clone()),
            accessor: auth.accessor.clone(),
            display_name: display_name.to_owned(),
            policies: auth.policies.clone(),
            token_policies: auth.token_policies.clone(),
            identity_policies: auth.identity_policies.clone(),
            metadata: auth.metadata.clone(),
            entity_id: auth.entity_id.clone(),
            token_type: auth.token_type.clone(),
            token_ttl: auth.lease_duration,
            identity: auth.identity.clone(),
        }
    }
}

/// The mount that served a request, and its audit options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditMount {
    pub mount_type: String,
    pub mount_accessor: String,
    /// The mount's `audit_non_hmac_request_keys`: top-level request data
    /// keys whose values are logged in clear.
    pub non_hmac_request_keys: Vec<String>,
    /// The mount's `audit_non_hmac_response_keys`.
    pub non_hmac_response_keys: Vec<String>,
}

impl AuditMount {
    /// The mount the router chose for a request.
    pub fn from_mount(mount: &MountEntry) -> Self {
        Self {
            mount_type: mount.mount_type.clone(),
            mount_accessor: mount.accessor.clone(),
            non_hmac_request_keys: mount.config.audit_non_hmac_request_keys.clone(),
            non_hmac_response_keys: mount.config.audit_non_hmac_response_keys.clone(),
        }
    }
}

/// A request as the audit log sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRequest {
    pub id: String,
    pub operation: String,
    pub mount_type: String,
    pub mount_accessor: String,
    /// HMACed.
    pub client_token: Option<SecretString>,
    /// HMACed unless `hmac_accessor=false`.
    pub client_token_accessor: String,
    pub path: String,
    /// Every string leaf HMACed, except under `non_hmac_keys`.
    pub data: Map<String, Value>,
    pub remote_address: String,
    pub remote_port: u16,
    /// Seconds; 0 when the response is not wrapped.
    pub wrap_ttl: u64,
    pub non_hmac_keys: Vec<String>,
}

impl AuditRequest {
    /// From the pipeline's request, the mount that serves it and the
    /// accessor of the calling token (empty when there is none).
    pub fn new(request: &Request, mount: &AuditMount, token_accessor: &str) -> Self {
        Self {
            id: request.id.clone(),
            operation: request.operation.as_str().to_owned(),
            mount_type: mount.mount_type.clone(),
            mount_accessor: mount.mount_accessor.clone(),
            client_token: request.token.clone(),
            client_token_accessor: token_accessor.to_owned(),
            path: request.path.clone(),
            data: request.data.clone(),
            remote_address: request
                .client_addr
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
            remote_port: request.client_addr.map(|a| a.port()).unwrap_or_default(),
            wrap_ttl: request.wrap_ttl.map(|d| d.as_secs()).unwrap_or_default(),
            non_hmac_keys: mount.non_hmac_request_keys.clone(),
        }
    }
}

/// A response-wrapping token handed out instead of the data.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditWrapInfo {
    /// HMACed.
    pub token: SecretString,
    /// HMACed unless `hmac_accessor=false`, as is `wrapped_accessor`.
    pub accessor: String,
    pub ttl: u64,
    pub creation_time: String,
    pub creation_path: String,
    pub wrapped_accessor: String,
}

/// A response as the audit log sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditResponse {
    pub mount_type: String,
    pub mount_accessor: String,
    pub data: Option<Map<String, Value>>,
    pub auth: Option<AuditAuth>,
    pub lease_id: Option<String>,
    pub wrap_info: Option<AuditWrapInfo>,
    pub warnings: Vec<String>,
    pub non_hmac_keys: Vec<String>,
}

impl AuditResponse {
    /// From the pipeline's response and the mount that produced it.
    pub fn new(response: &Response, mount: &AuditMount) -> Self {
        Self {
            mount_type: mount.mount_type.clone(),
            mount_accessor: mount.mount_accessor.clone(),
            data: response.data.clone(),
            auth: response.auth.as_ref().map(|a| AuditAuth::from_auth(a, "")),
            lease_id: response.lease.as_ref().map(|l| l.lease_id.clone()),
            wrap_info: response.wrap_info.as_ref().map(|w| AuditWrapInfo {
                token: w.token.clone(),
                accessor: w.accessor.clone(),
                ttl: w.ttl,
                creation_time: w.creation_time.clone(),
                creation_path: w.creation_path.clone(),
                wrapped_accessor: w.wrapped_accessor.clone(),
            }),
            warnings: response.warnings.clone(),
            non_hmac_keys: mount.non_hmac_response_keys.clone(),
        }
    }
}

/// One audit entry, ready to serialise. Field order follows Vault's.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub auth: EntryAuth,
    pub request: EntryRequest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<EntryResponse>,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryAuth {
    pub client_token: String,
    pub accessor: String,
    pub display_name: String,
    pub policies: Vec<String>,
    pub token_policies: Vec<String>,
    pub identity_policies: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub entity_id: String,
    pub token_type: String,
    pub token_ttl: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Namespace {
    pub id: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryRequest {
    pub id: String,
    pub operation: String,
    pub mount_type: String,
    pub mount_accessor: String,
    pub client_token: String,
    pub client_token_accessor: String,
    pub namespace: Namespace,
    pub path: String,
    pub data: Map<String, Value>,
    pub remote_address: String,
    pub remote_port: u16,
    pub wrap_ttl: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntrySecret {
    pub lease_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryWrapInfo {
    pub token: String,
    pub accessor: String,
    pub ttl: u64,
    pub creation_time: String,
    pub creation_path: String,
    pub wrapped_accessor: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryResponse {
    pub mount_type: String,
    pub mount_accessor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<EntryAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<EntrySecret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrap_info: Option<EntryWrapInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One device's way of hiding secrets: its salt and its `hmac_accessor` and
/// `log_raw` options.
#[derive(Debug, Clone)]
pub struct Redactor {
    salt: SecretBytes,
    hmac_accessor: bool,
    log_raw: bool,
}

impl Redactor {
    /// `log_raw` writes tokens and secret values in clear: anyone who can
    /// read the log can then use them. It exists for Vault compatibility and
    /// for debugging a throwaway node only.
    pub fn new(salt: SecretBytes, hmac_accessor: bool, log_raw: bool) -> Self {
        Self {
            salt,
            hmac_accessor,
            log_raw,
        }
    }

    pub fn salt(&self) -> &SecretBytes {
        &self.salt
    }

    /// A `type: "request"` entry, written before the request runs.
    pub fn request_entry(
        &self,
        time: &str,
        auth: &AuditAuth,
        request: &AuditRequest,
        error: Option<&str>,
    ) -> Entry {
        Entry {
            time: time.to_owned(),
            kind: "request",
            auth: self.auth(auth),
            request: self.request(request),
            response: None,
            error: error.unwrap_or_default().to_owned(),
        }
    }

    /// A `type: "response"` entry, written after the request ran.
    pub fn response_entry(
        &self,
        time: &str,
        auth: &AuditAuth,
        request: &AuditRequest,
        response: &AuditResponse,
        error: Option<&str>,
    ) -> Entry {
        Entry {
            time: time.to_owned(),
            kind: "response",
            auth: self.auth(auth),
            request: self.request(request),
            response: Some(self.response(response)),
            error: error.unwrap_or_default().to_owned(),
        }
    }

    fn hash(&self, s: &str) -> String {
        if self.log_raw {
            s.to_owned()
        } else {
            hash_value(&self.salt, s)
        }
    }

    /// Empty means "none": nothing to hide, and `""` stays readable.
    fn hash_nonempty(&self, s: &str) -> String {
        if s.is_empty() {
            String::new()
        } else {
            self.hash(s)
        }
    }

    fn accessor(&self, s: &str) -> String {
        if self.hmac_accessor {
            self.hash_nonempty(s)
        } else {
            s.to_owned()
        }
    }

    fn token(&self, t: Option<&SecretString>) -> String {
        t.map(|t| self.hash_nonempty(t.expose()))
            .unwrap_or_default()
    }

    fn auth(&self, a: &AuditAuth) -> EntryAuth {
        EntryAuth {
            client_token: self.token(a.client_token.as_ref()),
            accessor: self.accessor(&a.accessor),
            display_name: a.display_name.clone(),
            policies: a.policies.clone(),
            token_policies: a.token_policies.clone(),
            identity_policies: a.identity_policies.clone(),
            metadata: a
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), self.hash(v)))
                .collect(),
            entity_id: a.entity_id.clone(),
            token_type: a.token_type.clone(),
            token_ttl: a.token_ttl,
            identity: a.identity.clone(),
        }
    }

    fn request(&self, r: &AuditRequest) -> EntryRequest {
        EntryRequest {
            id: r.id.clone(),
            operation: r.operation.clone(),
            mount_type: r.mount_type.clone(),
            mount_accessor: r.mount_accessor.clone(),
            client_token: self.token(r.client_token.as_ref()),
            client_token_accessor: self.accessor(&r.client_token_accessor),
            namespace: Namespace { id: "root" },
            path: r.path.clone(),
            data: self.data(&r.data, &r.non_hmac_keys),
            remote_address: r.remote_address.clone(),
            remote_port: r.remote_port,
            wrap_ttl: r.wrap_ttl,
        }
    }

    fn response(&self, r: &AuditResponse) -> EntryResponse {
        EntryResponse {
            mount_type: r.mount_type.clone(),
            mount_accessor: r.mount_accessor.clone(),
            data: r.data.as_ref().map(|d| self.data(d, &r.non_hmac_keys)),
            auth: r.auth.as_ref().map(|a| self.auth(a)),
            secret: r.lease_id.as_ref().map(|id| EntrySecret {
                lease_id: id.clone(),
            }),
            wrap_info: r.wrap_info.as_ref().map(|w| EntryWrapInfo {
                token: self.token(Some(&w.token)),
                accessor: self.accessor(&w.accessor),
                ttl: w.ttl,
                creation_time: w.creation_time.clone(),
                creation_path: w.creation_path.clone(),
                wrapped_accessor: self.accessor(&w.wrapped_accessor),
            }),
            warnings: r.warnings.clone(),
        }
    }

    /// Request or response data: every string leaf HMACed, at any depth,
    /// except the values of the exempt top-level keys (Vault's
    /// `audit_non_hmac_*_keys` apply to top-level keys only).
    fn data(&self, data: &Map<String, Value>, exempt: &[String]) -> Map<String, Value> {
        data.iter()
            .map(|(k, v)| {
                let v = if self.log_raw || exempt.iter().any(|e| e == k) {
                    v.clone()
                } else {
                    self.value(v)
                };
                (k.clone(), v)
            })
            .collect()
    }

    fn value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.hash(s)),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.value(i)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.value(v)))
                    .collect(),
            ),
            Value::Null | Value::Bool(_) | Value::Number(_) => v.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::logical::{Lease, Operation, WrapInfo};

    const TOKEN: &str = "hvs.canary-token-zx81";
    const ACCESSOR: &str = "accessor-canary-q42";
    const PASSWORD: &str = "password-canary-7731";
    const NESTED: &str = "nested-canary-5512";

    fn salt() -> SecretBytes {
        SecretBytes::copy_from(b"0123456789abcdef0123456789abcdef")
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn sample() -> (AuditAuth, AuditRequest, AuditResponse) {
        let auth = AuditAuth {
            client_token: Some(SecretString::from(TOKEN)),
            accessor: ACCESSOR.into(),
            display_name: "token-alice".into(),
            policies: vec!["default".into(), "ops".into()],
            metadata: BTreeMap::from([("user".into(), "alice-meta-canary".into())]),
            token_type: "service".into(),
            identity: Some("spiffe://prod.example/ns/ops/sa/alice".into()),
            ..AuditAuth::default()
        };
        let mount = AuditMount {
            mount_type: "kv".into(),
            mount_accessor: "kv_1234".into(),
            non_hmac_request_keys: vec!["comment".into()],
            non_hmac_response_keys: vec!["version".into()],
        };
        let mut req = Request::new(Operation::Update, "secret/data/app")
            .with_data(obj(json!({
                "password": PASSWORD,
                "comment": "visible comment",
                "deep": {"list": [NESTED, 7, true, {"x": NESTED}]},
            })))
            .with_token(Some(SecretString::from(TOKEN)));
        req.client_addr = Some("10.1.2.3:4567".parse().expect("addr"));
        req.wrap_ttl = Some(Duration::from_secs(60));
        let request = AuditRequest::new(&req, &mount, ACCESSOR);
        let resp = Response {
            data: Some(obj(json!({"value": PASSWORD, "version": "3"}))),
            lease: Some(Lease {
                lease_id: "secret/lease/1".into(),
                ttl: 10,
                renewable: true,
            }),
            wrap_info: Some(WrapInfo {
                token: SecretString::from("hvs.wrap-canary-1"),
                accessor: "wrap-accessor-canary".into(),
                ttl: 60,
                creation_time: "2024-01-01T00:00:00Z".into(),
                creation_path: "secret/data/app".into(),
                wrapped_accessor: "wrapped-accessor-canary".into(),
            }),
            ..Response::default()
        };
        let response = AuditResponse::new(&resp, &mount);
        (auth, request, response)
    }

    fn line(r: &Redactor) -> String {
        let (auth, request, response) = sample();
        let e = r.response_entry("t", &auth, &request, &response, None);
        serde_json::to_string(&e).expect("serialise")
    }

    #[test]
    fn hash_value_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let key = SecretBytes::copy_from(b"Jefe");
        assert_eq!(
            hash_value(&key, "what do ya want for nothing?"),
            "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn secrets_never_appear_in_clear() {
        let r = Redactor::new(salt(), true, false);
        let text = line(&r);
        for secret in [
            TOKEN,
            ACCESSOR,
            PASSWORD,
            NESTED,
            "alice-meta-canary",
            "hvs.wrap-canary-1",
            "wrap-accessor-canary",
            "wrapped-accessor-canary",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        let v: Value = serde_json::from_str(&text).expect("json");
        let h = |s: &str| Value::String(hash_value(&salt(), s));
        assert_eq!(v["auth"]["client_token"], h(TOKEN));
        // The identity is recorded in clear: responders search by it.
        assert_eq!(
            v["auth"]["identity"],
            "spiffe://prod.example/ns/ops/sa/alice"
        );
        assert_eq!(v["auth"]["accessor"], h(ACCESSOR));
        assert_eq!(v["auth"]["display_name"], "token-alice");
        assert_eq!(v["auth"]["policies"], json!(["default", "ops"]));
        assert_eq!(v["request"]["client_token"], h(TOKEN));
        assert_eq!(v["request"]["client_token_accessor"], h(ACCESSOR));
        assert_eq!(v["request"]["namespace"]["id"], "root");
        assert_eq!(v["request"]["remote_address"], "10.1.2.3");
        assert_eq!(v["request"]["remote_port"], 4567);
        assert_eq!(v["request"]["wrap_ttl"], 60);
        assert_eq!(v["request"]["operation"], "update");
        assert_eq!(v["response"]["secret"]["lease_id"], "secret/lease/1");
        assert_eq!(v["response"]["wrap_info"]["token"], h("hvs.wrap-canary-1"));
        assert_eq!(v["type"], "response");
        assert_eq!(v["error"], "");
    }

    #[test]
    fn nested_strings_are_hashed_and_other_leaves_kept() {
        let r = Redactor::new(salt(), true, false);
        let v: Value = serde_json::from_str(&line(&r)).expect("json");
        let h = hash_value(&salt(), NESTED);
        assert_eq!(
            v["request"]["data"]["deep"],
            json!({"list": [h, 7, true, {"x": h}]})
        );
    }

    #[test]
    fn non_hmac_keys_are_exempt_at_top_level() {
        let r = Redactor::new(salt(), true, false);
        let v: Value = serde_json::from_str(&line(&r)).expect("json");
        assert_eq!(v["request"]["data"]["comment"], "visible comment");
        assert_eq!(v["response"]["data"]["version"], "3");
        assert_eq!(
            v["response"]["data"]["value"],
            Value::String(hash_value(&salt(), PASSWORD))
        );
    }

    #[test]
    fn hmac_accessor_false_leaves_accessors_in_clear() {
        let r = Redactor::new(salt(), false, false);
        let text = line(&r);
        assert!(!text.contains(TOKEN));
        assert!(!text.contains(PASSWORD));
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["auth"]["accessor"], ACCESSOR);
        assert_eq!(v["request"]["client_token_accessor"], ACCESSOR);
        assert_eq!(
            v["response"]["wrap_info"]["wrapped_accessor"],
            "wrapped-accessor-canary"
        );
    }

    #[test]
    fn log_raw_writes_everything_in_clear() {
        let r = Redactor::new(salt(), true, true);
        let text = line(&r);
        assert!(!text.contains(HMAC_PREFIX));
        for secret in [TOKEN, ACCESSOR, PASSWORD, NESTED, "hvs.wrap-canary-1"] {
            assert!(text.contains(secret), "{secret} missing");
        }
    }

    #[test]
    fn a_mount_entry_supplies_type_accessor_and_exempt_keys() {
        let mut entry = MountEntry::new(crate::mounts::Table::Secrets, "secret/", "kv");
        entry.config.audit_non_hmac_request_keys = vec!["comment".into()];
        let m = AuditMount::from_mount(&entry);
        assert_eq!(m.mount_type, "kv");
        assert_eq!(m.mount_accessor, entry.accessor);
        assert_eq!(m.non_hmac_request_keys, vec!["comment".to_owned()]);
    }

    #[test]
    fn different_salts_give_different_hashes() {
        let other = SecretBytes::copy_from(b"another salt of some length.....");
        assert_ne!(hash_value(&salt(), TOKEN), hash_value(&other, TOKEN));
    }
}
