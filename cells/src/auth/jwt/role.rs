//! A JWT role: which tokens may log in through it and what the issued token
//! gets (Vault's `auth/jwt/role/:name`, plus the service-account bindings of
//! Vault's Kubernetes auth method on `kubernetes` mounts).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Flavor;
use super::claims::{BoundClaimsType, ClaimConstraints, ClaimValue, DEFAULT_LEEWAY_SECS};
use super::config::OIDC_REFUSAL;
use super::identity::ServiceAccount;
use crate::api_error::ApiError;
use crate::auth::glob::glob_match;
use crate::auth::token_params::{self, TokenParams};
use crate::logical::Data;
use crate::params;

const FIELDS: &[&str] = &[
    "role_type",
    "bound_audiences",
    "bound_subject",
    "bound_claims",
    "bound_claims_type",
    "claim_mappings",
    "user_claim",
    "user_claim_json_pointer",
    "clock_skew_leeway",
    "expiration_leeway",
    "not_before_leeway",
    "groups_claim",
];
const KUBERNETES_FIELDS: &[&str] = &[
    "bound_service_account_names",
    "bound_service_account_namespaces",
];
/// Vault role fields that only make sense for the browser OIDC flow.
const OIDC_FIELDS: &[&str] = &[
    "allowed_redirect_uris",
    "oidc_scopes",
    "max_age",
    "verbose_oidc_logging",
];
/// Metadata keys the login sets itself, which `claim_mappings` may not
/// target: a token could otherwise choose what they say.
const RESERVED_METADATA: &[&str] = &["role", "service_account_name", "service_account_namespace"];

/// One role. Leeways are seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Role {
    pub role_type: String,
    pub bound_audiences: Vec<String>,
    /// A glob pattern (`*` only) for `sub`.
    pub bound_subject: String,
    pub bound_claims: BTreeMap<String, Vec<ClaimValue>>,
    pub bound_claims_type: BoundClaimsType,
    pub claim_mappings: BTreeMap<String, String>,
    pub user_claim: String,
    pub user_claim_json_pointer: bool,
    pub clock_skew_leeway: u64,
    pub expiration_leeway: u64,
    pub not_before_leeway: u64,
    /// Stored for compatibility; groups are not used.
    pub groups_claim: String,
    /// Kubernetes mounts only: globs for the service account's name and
    /// namespace.
    pub bound_service_account_names: Vec<String>,
    pub bound_service_account_namespaces: Vec<String>,
    pub token: TokenParams,
}

impl Default for Role {
    fn default() -> Self {
        Self {
            role_type: "jwt".into(),
            bound_audiences: Vec::new(),
            bound_subject: String::new(),
            bound_claims: BTreeMap::new(),
            bound_claims_type: BoundClaimsType::String,
            claim_mappings: BTreeMap::new(),
            user_claim: "sub".into(),
            user_claim_json_pointer: false,
            clock_skew_leeway: DEFAULT_LEEWAY_SECS,
            expiration_leeway: 0,
            not_before_leeway: 0,
            groups_claim: String::new(),
            bound_service_account_names: Vec::new(),
            bound_service_account_namespaces: Vec::new(),
            token: TokenParams::default(),
        }
    }
}

impl Role {
    /// Applies the fields present in `d` (a role write updates the fields
    /// it names, as in Vault), then checks the whole role.
    pub fn update(&mut self, d: &Data, flavor: Flavor) -> Result<(), ApiError> {
        let bad = |m: String| ApiError::InvalidRequest(m);
        for field in OIDC_FIELDS {
            if d.get(*field).is_some_and(|v| !v.is_null()) {
                return Err(bad(format!("{field}: {OIDC_REFUSAL}")));
            }
        }
        let mut known: Vec<&str> = FIELDS.to_vec();
        if flavor == Flavor::Kubernetes {
            known.extend_from_slice(KUBERNETES_FIELDS);
        }
        known.extend_from_slice(token_params::FIELDS);
        params::deny_unknown(d, &known)?;

        if let Some(v) = params::string(d, "role_type")? {
            match v.as_str() {
                "" | "jwt" => self.role_type = "jwt".into(),
                "oidc" => return Err(bad(format!("role_type \"oidc\": {OIDC_REFUSAL}"))),
                other => return Err(bad(format!("invalid role_type {other:?}: use \"jwt\""))),
            }
        }
        if let Some(v) = params::string_list(d, "bound_audiences")? {
            self.bound_audiences = v;
        }
        if let Some(v) = params::string(d, "bound_subject")? {
            self.bound_subject = v;
        }
        if let Some(v) = bound_claims(d)? {
            self.bound_claims = v;
        }
        if let Some(v) = params::string(d, "bound_claims_type")? {
            self.bound_claims_type = match v.as_str() {
                "" | "string" => BoundClaimsType::String,
                "glob" => BoundClaimsType::Glob,
                other => {
                    return Err(bad(format!(
                        "invalid bound_claims_type {other:?}: use \"string\" or \"glob\""
                    )));
                }
            };
        }
        if let Some(v) = params::string_map(d, "claim_mappings")? {
            self.claim_mappings = v;
        }
        if let Some(v) = params::string(d, "user_claim")? {
            self.user_claim = v;
        }
        if let Some(v) = params::boolean(d, "user_claim_json_pointer")? {
            self.user_claim_json_pointer = v;
        }
        if let Some(v) = leeway(d, "clock_skew_leeway")? {
            self.clock_skew_leeway = v;
        }
        if let Some(v) = leeway(d, "expiration_leeway")? {
            self.expiration_leeway = v;
        }
        if let Some(v) = leeway(d, "not_before_leeway")? {
            self.not_before_leeway = v;
        }
        if let Some(v) = params::string(d, "groups_claim")? {
            self.groups_claim = v;
        }
        if flavor == Flavor::Kubernetes {
            if let Some(v) = params::string_list(d, "bound_service_account_names")? {
                self.bound_service_account_names = v;
            }
            if let Some(v) = params::string_list(d, "bound_service_account_namespaces")? {
                self.bound_service_account_namespaces = v;
            }
        }
        self.token.update(d)?;
        self.check(flavor)
    }

    fn check(&self, flavor: Flavor) -> Result<(), ApiError> {
        let bad = |m: String| ApiError::InvalidRequest(m);
        if self.user_claim.is_empty() {
            return Err(bad("user_claim must not be empty".into()));
        }
        if self.bound_claims.keys().any(String::is_empty) {
            return Err(bad("bound_claims: claim names must not be empty".into()));
        }
        let mut targets = BTreeSet::new();
        for (claim, key) in &self.claim_mappings {
            if claim.is_empty() || key.is_empty() {
                return Err(bad(
                    "claim_mappings: claim names and metadata keys must not be empty".into(),
                ));
            }
            if RESERVED_METADATA.contains(&key.as_str()) {
                return Err(bad(format!(
                    "claim_mappings: metadata key {key:?} is set by the login itself"
                )));
            }
            if !targets.insert(key) {
                return Err(bad(format!(
                    "claim_mappings: more than one claim maps to {key:?}"
                )));
            }
        }
        if flavor == Flavor::Kubernetes {
            let names = !self.bound_service_account_names.is_empty();
            let namespaces = !self.bound_service_account_namespaces.is_empty();
            // As in Vault's Kubernetes auth: a name alone would admit that
            // service account from every namespace.
            if names != namespaces {
                return Err(bad(
                    "bound_service_account_names and bound_service_account_namespaces must be \
                     set together (use \"*\" to allow any)"
                        .into(),
                ));
            }
        }
        if !self.binds_something() {
            return Err(bad(
                "must have at least one bound constraint when creating/updating a role: \
                 bound_audiences, bound_subject, bound_claims, or (kubernetes mounts) \
                 bound_service_account_names and bound_service_account_namespaces; \
                 a role without one accepts any token the issuer signs"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Vault's rule for JWT roles, tightened: a subject pattern or service
    /// account lists made only of `*` bind nothing, so they do not count.
    fn binds_something(&self) -> bool {
        let only_stars = |pattern: &str| pattern.chars().all(|c| c == '*');
        !self.bound_audiences.is_empty()
            || !only_stars(&self.bound_subject)
            || !self.bound_claims.is_empty()
            || self
                .bound_service_account_names
                .iter()
                .chain(&self.bound_service_account_namespaces)
                .any(|pattern| !only_stars(pattern))
    }

    /// The claim checks for this role. The core has one leeway for `exp`,
    /// `nbf` and `iat`; it is `clock_skew_leeway` plus the larger of
    /// `expiration_leeway` and `not_before_leeway` (docs/auth.md).
    pub fn constraints(&self, bound_issuer: Option<String>) -> ClaimConstraints {
        ClaimConstraints {
            require_exp: true,
            leeway_secs: self
                .clock_skew_leeway
                .saturating_add(self.expiration_leeway.max(self.not_before_leeway)),
            bound_issuer,
            bound_audiences: self.bound_audiences.clone(),
            bound_subject: Some(self.bound_subject.clone()).filter(|s| !s.is_empty()),
            bound_claims: self.bound_claims.clone(),
            bound_claims_type: self.bound_claims_type,
            claim_mappings: self.claim_mappings.clone(),
            user_claim: self.user_claim.clone(),
            user_claim_json_pointer: self.user_claim_json_pointer,
        }
    }

    /// Kubernetes mounts: the service account must match the role's name
    /// and namespace globs (an empty list is refused at write time, so
    /// both are always set when either is).
    pub fn check_service_account(&self, sa: &ServiceAccount) -> Result<(), ApiError> {
        let allowed = |patterns: &[String], value: &str| {
            patterns.is_empty() || patterns.iter().any(|p| glob_match(p, value))
        };
        if !allowed(&self.bound_service_account_namespaces, &sa.namespace) {
            return Err(ApiError::InvalidRequest(
                "namespace not authorized: not in bound_service_account_namespaces".into(),
            ));
        }
        if !allowed(&self.bound_service_account_names, &sa.name) {
            return Err(ApiError::InvalidRequest(
                "service account name not authorized: not in bound_service_account_names".into(),
            ));
        }
        Ok(())
    }

    pub fn to_json(&self, flavor: Flavor) -> Data {
        let mut d = match self.token.to_json() {
            Value::Object(m) => m,
            _ => Data::new(),
        };
        let bound_claims: BTreeMap<&String, Value> = self
            .bound_claims
            .iter()
            .map(|(claim, values)| {
                let shown = match values.as_slice() {
                    [one] => json!(one),
                    many => json!(many),
                };
                (claim, shown)
            })
            .collect();
        for (k, v) in [
            ("role_type", json!(self.role_type)),
            ("bound_audiences", json!(self.bound_audiences)),
            ("bound_subject", json!(self.bound_subject)),
            ("bound_claims", json!(bound_claims)),
            ("bound_claims_type", json!(self.bound_claims_type)),
            ("claim_mappings", json!(self.claim_mappings)),
            ("user_claim", json!(self.user_claim)),
            (
                "user_claim_json_pointer",
                json!(self.user_claim_json_pointer),
            ),
            ("clock_skew_leeway", json!(self.clock_skew_leeway)),
            ("expiration_leeway", json!(self.expiration_leeway)),
            ("not_before_leeway", json!(self.not_before_leeway)),
            ("groups_claim", json!(self.groups_claim)),
        ] {
            d.insert(k.into(), v);
        }
        if flavor == Flavor::Kubernetes {
            d.insert(
                "bound_service_account_names".into(),
                json!(self.bound_service_account_names),
            );
            d.insert(
                "bound_service_account_namespaces".into(),
                json!(self.bound_service_account_namespaces),
            );
        }
        d
    }
}

/// `bound_claims`: an object whose values are a scalar or a list of
/// scalars, or that object as a JSON string (Vault's CLI sends the latter).
fn bound_claims(d: &Data) -> Result<Option<BTreeMap<String, Vec<ClaimValue>>>, ApiError> {
    let bad = || {
        ApiError::InvalidRequest(
            "bound_claims must be an object of strings, numbers, booleans or lists of them".into(),
        )
    };
    let object = match d.get("bound_claims") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(Some(BTreeMap::new())),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|_| bad())?,
        Some(v) => v.clone(),
    };
    let Value::Object(m) = object else {
        return Err(bad());
    };
    m.into_iter()
        .map(|(claim, value)| match ClaimValue::one_or_many(&value) {
            Some(values) if !values.is_empty() => Ok((claim, values)),
            _ => Err(bad()),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// A leeway in seconds. Vault's `-1` ("no leeway") is read as 0; unlike
/// Vault, 0 means none rather than "the default".
fn leeway(d: &Data, field: &str) -> Result<Option<u64>, ApiError> {
    match d.get(field) {
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => Ok(Some(0)),
        Some(Value::String(s)) if s.trim() == "-1" => Ok(Some(0)),
        _ => params::seconds(d, field),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn data(v: Value) -> Data {
        v.as_object().cloned().unwrap()
    }

    fn role(flavor: Flavor, v: Value) -> Result<Role, ApiError> {
        let mut r = Role::default();
        r.update(&data(v), flavor).map(|()| r)
    }

    #[test]
    fn leeways_fold_into_one_window() {
        let r = role(
            Flavor::Jwt,
            json!({"bound_audiences": "sigil", "clock_skew_leeway": 10,
                   "expiration_leeway": "1m", "not_before_leeway": 5}),
        )
        .unwrap();
        assert_eq!(r.constraints(None).leeway_secs, 70);
        let r = role(
            Flavor::Jwt,
            json!({"bound_audiences": "sigil", "clock_skew_leeway": -1}),
        )
        .unwrap();
        assert_eq!(r.constraints(None).leeway_secs, 0);
        let r = role(Flavor::Jwt, json!({"bound_audiences": "sigil"})).unwrap();
        assert_eq!(r.constraints(None).leeway_secs, DEFAULT_LEEWAY_SECS);
    }

    #[test]
    fn a_role_must_bind_something() {
        for unbound in [
            json!({}),
            json!({"bound_subject": "*"}),
            json!({"bound_audiences": []}),
            json!({"token_policies": "app"}),
        ] {
            assert!(role(Flavor::Jwt, unbound.clone()).is_err(), "{unbound}");
        }
        for bound in [
            json!({"bound_audiences": "sigil"}),
            json!({"bound_subject": "spiffe://prod.example/*"}),
            json!({"bound_claims": {"groups": ["ops"]}}),
            json!({"bound_claims": "{\"groups\": \"ops\"}"}),
        ] {
            assert!(role(Flavor::Jwt, bound.clone()).is_ok(), "{bound}");
        }
        let sa = |names: Value, namespaces: Value| {
            role(
                Flavor::Kubernetes,
                json!({"bound_service_account_names": names,
                       "bound_service_account_namespaces": namespaces}),
            )
        };
        assert!(sa(json!(["api"]), json!(["payments"])).is_ok());
        assert!(sa(json!(["*"]), json!(["payments"])).is_ok());
        assert!(sa(json!(["*"]), json!(["*"])).is_err());
        assert!(sa(json!(["api"]), json!([])).is_err());
        // Service-account fields do not exist on jwt mounts.
        assert!(
            role(
                Flavor::Jwt,
                json!({"bound_audiences": "a", "bound_service_account_names": "api"})
            )
            .is_err()
        );
    }

    #[test]
    fn oidc_and_bad_shapes_are_refused() {
        for bad in [
            json!({"bound_audiences": "a", "role_type": "oidc"}),
            json!({"bound_audiences": "a", "allowed_redirect_uris": ["https://x"]}),
            json!({"bound_audiences": "a", "bound_claims_type": "regex"}),
            json!({"bound_audiences": "a", "bound_claims": {"g": {"nested": 1}}}),
            json!({"bound_audiences": "a", "bound_claims": {"g": []}}),
            json!({"bound_audiences": "a", "claim_mappings": {"x": "role"}}),
            json!({"bound_audiences": "a", "claim_mappings": {"x": "m", "y": "m"}}),
            json!({"bound_audiences": "a", "user_claim": ""}),
        ] {
            assert!(role(Flavor::Jwt, bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_accounts_are_matched_by_glob() {
        let r = role(
            Flavor::Kubernetes,
            json!({"bound_service_account_names": ["api", "web-*"],
                   "bound_service_account_namespaces": "payments"}),
        )
        .unwrap();
        let sa = |ns: &str, name: &str| ServiceAccount {
            namespace: ns.into(),
            name: name.into(),
        };
        assert!(r.check_service_account(&sa("payments", "api")).is_ok());
        assert!(r.check_service_account(&sa("payments", "web-1")).is_ok());
        assert!(r.check_service_account(&sa("payments", "batch")).is_err());
        assert!(r.check_service_account(&sa("billing", "api")).is_err());
    }
}
