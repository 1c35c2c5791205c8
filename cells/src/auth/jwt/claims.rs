//! Validation of a verified token's claims against a JWT role, following
//! Vault's JWT auth method (`vault-plugin-auth-jwt`, `claims.go` and
//! `hashicorp/cap/jwt`) so roles behave the same when copied over.
//!
//! Pure: the caller passes the current time, so validity windows are tested
//! without a clock. Call only with the claims of a token whose signature
//! [`super::verify::verify`] accepted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::auth::glob::glob_match;

/// Vault's `clock_skew_leeway` default, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// How `bound_claims` values are compared (Vault's `bound_claims_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoundClaimsType {
    /// Exact equality.
    #[default]
    String,
    /// Expected strings are [`glob_match`] patterns.
    Glob,
}

/// One acceptable value of a bound claim: Vault accepts strings, numbers and
/// booleans in `bound_claims`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClaimValue {
    Bool(bool),
    Number(Number),
    String(String),
}

impl ClaimValue {
    /// Reads a `bound_claims` entry as Vault's API sends it: a scalar or a
    /// list of scalars. `None` for anything else (objects, nested lists,
    /// null), which configuration should refuse.
    pub fn one_or_many(value: &Value) -> Option<Vec<ClaimValue>> {
        match value {
            Value::Array(items) => items.iter().map(Self::scalar).collect(),
            scalar => Self::scalar(scalar).map(|one| vec![one]),
        }
    }

    fn scalar(value: &Value) -> Option<ClaimValue> {
        match value {
            Value::Bool(b) => Some(ClaimValue::Bool(*b)),
            Value::Number(n) => Some(ClaimValue::Number(n.clone())),
            Value::String(s) => Some(ClaimValue::String(s.clone())),
            Value::Null | Value::Array(_) | Value::Object(_) => None,
        }
    }

    /// Whether a token's scalar claim value satisfies this expected value.
    /// Globs apply to strings only; other types compare exactly in either
    /// mode (Vault instead errors on a non-string glob, which helps no one).
    fn accepts(&self, actual: &Value, mode: BoundClaimsType) -> bool {
        match (self, actual) {
            (ClaimValue::String(expected), Value::String(actual)) => match mode {
                BoundClaimsType::String => expected == actual,
                BoundClaimsType::Glob => glob_match(expected, actual),
            },
            (ClaimValue::Bool(expected), Value::Bool(actual)) => expected == actual,
            (ClaimValue::Number(expected), Value::Number(actual)) => {
                numbers_equal(expected, actual)
            }
            _ => false,
        }
    }
}

/// A role's constraints on claims. Field names are Vault's; `leeway_secs`
/// stands in for its three leeways (`clock_skew_leeway`,
/// `expiration_leeway`, `not_before_leeway`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClaimConstraints {
    /// Refuse tokens without `exp`. Vault's JWT roles accept any of
    /// `exp`/`nbf`/`iat`; we default to requiring `exp` because a token with
    /// no end of life is a bearer credential forever.
    pub require_exp: bool,
    /// Allowed clock skew applied to `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    pub bound_issuer: Option<String>,
    pub bound_audiences: Vec<String>,
    /// A [`glob_match`] pattern for `sub`, e.g.
    /// `spiffe://prod.example/ns/payments/*`. Vault compares exactly; a
    /// pattern without `*` still does.
    pub bound_subject: Option<String>,
    /// Claim name, or JSON pointer when it starts with `/`, to the values
    /// of which one must match.
    pub bound_claims: BTreeMap<String, Vec<ClaimValue>>,
    pub bound_claims_type: BoundClaimsType,
    /// Claim name or JSON pointer → metadata key.
    pub claim_mappings: BTreeMap<String, String>,
    /// The claim that names the user (the entity alias).
    pub user_claim: String,
    /// Read `user_claim` as a JSON pointer, as Vault's
    /// `user_claim_json_pointer` does; off by default so a claim whose name
    /// starts with `/` still works.
    pub user_claim_json_pointer: bool,
}

impl Default for ClaimConstraints {
    fn default() -> Self {
        Self {
            require_exp: true,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            bound_issuer: None,
            bound_audiences: Vec::new(),
            bound_subject: None,
            bound_claims: BTreeMap::new(),
            bound_claims_type: BoundClaimsType::default(),
            claim_mappings: BTreeMap::new(),
            user_claim: "sub".to_owned(),
            user_claim_json_pointer: false,
        }
    }
}

/// What a successful validation yields for the login response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `user_claim` value: the entity alias name.
    pub alias_name: String,
    /// From `claim_mappings`; mapped claims absent from the token are left
    /// out, as in Vault.
    pub metadata: BTreeMap<String, String>,
}

/// Why a token's claims do not satisfy the role. Claim names in messages
/// come from the role, not the token; claim values are never echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    #[error("token has no expiration (exp) claim")]
    MissingExp,
    #[error("claim \"{claim}\" is not a numeric date")]
    NotNumericDate { claim: &'static str },
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("issuer claim does not match the bound issuer")]
    IssuerMismatch,
    #[error("audience claim is not a string or a list of strings")]
    MalformedAudience,
    #[error("audience claim does not match any bound audience")]
    AudienceMismatch,
    #[error("audience claim found in JWT but no audiences bound to the role")]
    UnexpectedAudience,
    #[error("subject claim does not match the bound subject")]
    SubjectMismatch,
    #[error("claim \"{claim}\" is missing")]
    MissingClaim { claim: String },
    #[error("claim \"{claim}\" is not a string, number, bool or list")]
    UnsupportedClaimType { claim: String },
    #[error("claim \"{claim}\" does not match any associated bound claim values")]
    BoundClaimMismatch { claim: String },
    #[error("claim \"{claim}\" could not be converted to string")]
    NotAString { claim: String },
    #[error("claim \"{claim}\" is empty")]
    EmptyUserClaim { claim: String },
}

/// Checks `claims` against `role` at time `now` (Unix seconds) and extracts
/// the alias name and metadata.
pub fn validate(
    claims: &Map<String, Value>,
    role: &ClaimConstraints,
    now: i64,
) -> Result<Identity, ClaimsError> {
    check_times(claims, role, now)?;
    check_issuer(claims, role.bound_issuer.as_deref())?;
    check_audience(claims, &role.bound_audiences)?;
    check_subject(claims, role.bound_subject.as_deref())?;
    for (claim, expected) in &role.bound_claims {
        check_bound_claim(claims, claim, expected, role.bound_claims_type)?;
    }
    Ok(Identity {
        alias_name: alias_name(claims, role)?,
        metadata: metadata(claims, &role.claim_mappings)?,
    })
}

/// RFC 7519 §4.1.4-6 with Vault's inclusive bounds: valid while
/// `nbf - leeway <= now <= exp + leeway`, and `iat` no later than
/// `now + leeway`. Comparisons are in `f64` because NumericDate may be
/// fractional (RFC 7519 §2).
fn check_times(
    claims: &Map<String, Value>,
    role: &ClaimConstraints,
    now: i64,
) -> Result<(), ClaimsError> {
    let leeway = role.leeway_secs as f64;
    let now = now as f64;
    match numeric_date(claims, "exp")? {
        Some(exp) if now - leeway > exp => return Err(ClaimsError::Expired),
        Some(_) => {}
        None if role.require_exp => return Err(ClaimsError::MissingExp),
        None => {}
    }
    if numeric_date(claims, "nbf")?.is_some_and(|nbf| now + leeway < nbf) {
        return Err(ClaimsError::NotYetValid);
    }
    if numeric_date(claims, "iat")?.is_some_and(|iat| now + leeway < iat) {
        return Err(ClaimsError::IssuedInFuture);
    }
    Ok(())
}

fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<f64>, ClaimsError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or(ClaimsError::NotNumericDate { claim }),
        Some(_) => Err(ClaimsError::NotNumericDate { claim }),
    }
}

fn check_issuer(claims: &Map<String, Value>, bound: Option<&str>) -> Result<(), ClaimsError> {
    match bound {
        Some(bound) if claims.get("iss").and_then(Value::as_str) != Some(bound) => {
            Err(ClaimsError::IssuerMismatch)
        }
        _ => Ok(()),
    }
}

/// RFC 7519 §4.1.3: `aud` is a string or an array of strings. Like Vault's
/// JWT roles (its "strict" mode), a token addressed to someone while the
/// role names no audience is refused: otherwise a token minted for any
/// other service would be accepted here.
fn check_audience(claims: &Map<String, Value>, bound: &[String]) -> Result<(), ClaimsError> {
    let audiences: Vec<&str> = match claims.get("aud") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many
            .iter()
            .map(|aud| aud.as_str().ok_or(ClaimsError::MalformedAudience))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ClaimsError::MalformedAudience),
    };
    if bound.is_empty() {
        if audiences.is_empty() {
            return Ok(());
        }
        return Err(ClaimsError::UnexpectedAudience);
    }
    if bound.iter().any(|want| audiences.contains(&want.as_str())) {
        Ok(())
    } else {
        Err(ClaimsError::AudienceMismatch)
    }
}

fn check_subject(claims: &Map<String, Value>, bound: Option<&str>) -> Result<(), ClaimsError> {
    let Some(pattern) = bound else {
        return Ok(());
    };
    match claims.get("sub") {
        Some(Value::String(sub)) if glob_match(pattern, sub) => Ok(()),
        Some(Value::String(_)) => Err(ClaimsError::SubjectMismatch),
        _ => Err(ClaimsError::MissingClaim {
            claim: "sub".to_owned(),
        }),
    }
}

/// Vault's `validateBoundClaims`: a list-valued claim matches when any
/// element matches any expected value.
fn check_bound_claim(
    claims: &Map<String, Value>,
    claim: &str,
    expected: &[ClaimValue],
    mode: BoundClaimsType,
) -> Result<(), ClaimsError> {
    let actual = lookup(claims, claim).ok_or_else(|| ClaimsError::MissingClaim {
        claim: claim.to_owned(),
    })?;
    let actual: &[Value] = match actual {
        Value::Array(items) => items,
        Value::Object(_) => {
            return Err(ClaimsError::UnsupportedClaimType {
                claim: claim.to_owned(),
            });
        }
        scalar => std::slice::from_ref(scalar),
    };
    if expected
        .iter()
        .any(|want| actual.iter().any(|have| want.accepts(have, mode)))
    {
        Ok(())
    } else {
        Err(ClaimsError::BoundClaimMismatch {
            claim: claim.to_owned(),
        })
    }
}

/// Vault requires a string here; a number is accepted too, stringified,
/// since numeric user IDs are common and their text is unambiguous. An
/// empty name is refused: it would make every such token the same alias.
fn alias_name(claims: &Map<String, Value>, role: &ClaimConstraints) -> Result<String, ClaimsError> {
    let claim = role.user_claim.as_str();
    let value = if role.user_claim_json_pointer {
        lookup(claims, claim)
    } else {
        claims.get(claim).filter(|value| !value.is_null())
    };
    let missing = || ClaimsError::MissingClaim {
        claim: claim.to_owned(),
    };
    let name = match value.ok_or_else(missing)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => number_text(n),
        _ => {
            return Err(ClaimsError::NotAString {
                claim: claim.to_owned(),
            });
        }
    };
    if name.is_empty() {
        return Err(ClaimsError::EmptyUserClaim {
            claim: claim.to_owned(),
        });
    }
    Ok(name)
}

/// Vault's `extractMetadata`: absent claims are skipped. Numbers and
/// booleans are stringified (Vault refuses them, for no gain); objects and
/// lists are refused as in Vault, because any flattening we picked would
/// become an interface policies start to depend on.
fn metadata(
    claims: &Map<String, Value>,
    mappings: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ClaimsError> {
    let mut metadata = BTreeMap::new();
    for (claim, key) in mappings {
        let text = match lookup(claims, claim) {
            None => continue,
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => number_text(n),
            Some(Value::Bool(b)) => b.to_string(),
            Some(_) => {
                return Err(ClaimsError::NotAString {
                    claim: claim.clone(),
                });
            }
        };
        metadata.insert(key.clone(), text);
    }
    Ok(metadata)
}

/// A claim by name, or by JSON pointer (RFC 6901) when `claim` starts with
/// `/`, as Vault's `getClaim` does. JSON `null` counts as absent.
fn lookup<'c>(claims: &'c Map<String, Value>, claim: &str) -> Option<&'c Value> {
    let found = match claim.strip_prefix('/') {
        None => claims.get(claim),
        Some(pointer) => {
            // The claims are a map, not a `Value`, so resolve the first
            // reference token here and let serde_json walk the rest.
            let (first, rest) = match pointer.find('/') {
                Some(at) => pointer.split_at(at),
                None => (pointer, ""),
            };
            // RFC 6901 §4: `~1` before `~0`, so `~01` becomes `~1`.
            let first = first.replace("~1", "/").replace("~0", "~");
            claims.get(&first).and_then(|value| value.pointer(rest))
        }
    };
    found.filter(|value| !value.is_null())
}

/// Numbers as Vault's `getClaim` prints them: integers as written, floats
/// in plain decimal without a trailing `.0` (`3.0` → `"3"`, never `3e0`).
fn number_text(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => f.to_string(),
        _ => n.to_string(),
    }
}

fn numbers_equal(a: &Number, b: &Number) -> bool {
    match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
        (Some(x), Some(y), _, _) => x == y,
        (_, _, Some(x), Some(y)) => x == y,
        _ => a.as_f64() == b.as_f64(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("test claims must be an object"),
        }
    }

    /// Claims that pass the default role, plus `extra`.
    fn base(extra: Value) -> Map<String, Value> {
        let mut map =
            claims(json!({"sub": "spiffe://prod.example/ns/payments/sa/api", "exp": NOW + 300}));
        map.extend(claims(extra));
        map
    }

    fn check(extra: Value, role: &ClaimConstraints) -> Result<Identity, ClaimsError> {
        validate(&base(extra), role, NOW)
    }

    fn bound(pairs: &[(&str, Value)], mode: BoundClaimsType) -> ClaimConstraints {
        ClaimConstraints {
            bound_claims: pairs
                .iter()
                .map(|(claim, value)| {
                    ((*claim).to_owned(), ClaimValue::one_or_many(value).unwrap())
                })
                .collect(),
            bound_claims_type: mode,
            ..ClaimConstraints::default()
        }
    }

    #[test]
    fn defaults_accept_a_plain_token() {
        let identity = check(json!({}), &ClaimConstraints::default()).unwrap();
        assert_eq!(
            identity.alias_name,
            "spiffe://prod.example/ns/payments/sa/api"
        );
        assert!(identity.metadata.is_empty());
    }

    #[test]
    fn expiry_with_leeway_edges() {
        let role = ClaimConstraints::default();
        let leeway = DEFAULT_LEEWAY_SECS as i64;
        assert!(check(json!({"exp": NOW - leeway}), &role).is_ok());
        assert_eq!(
            check(json!({"exp": NOW - leeway - 1}), &role),
            Err(ClaimsError::Expired)
        );
        assert_eq!(
            check(json!({"exp": (NOW - leeway) as f64 - 0.5}), &role),
            Err(ClaimsError::Expired)
        );
        assert!(check(json!({"exp": (NOW - leeway) as f64 + 0.5}), &role).is_ok());
        let strict = ClaimConstraints {
            leeway_secs: 0,
            ..role
        };
        assert_eq!(
            check(json!({"exp": NOW - 1}), &strict),
            Err(ClaimsError::Expired)
        );
        assert!(check(json!({"exp": NOW}), &strict).is_ok());
    }

    #[test]
    fn not_before_and_issued_at_with_leeway_edges() {
        let role = ClaimConstraints::default();
        let leeway = DEFAULT_LEEWAY_SECS as i64;
        assert!(check(json!({"nbf": NOW + leeway}), &role).is_ok());
        assert_eq!(
            check(json!({"nbf": NOW + leeway + 1}), &role),
            Err(ClaimsError::NotYetValid)
        );
        assert!(check(json!({"iat": NOW + leeway}), &role).is_ok());
        assert_eq!(
            check(json!({"iat": NOW + leeway + 1}), &role),
            Err(ClaimsError::IssuedInFuture)
        );
    }

    #[test]
    fn exp_is_required_unless_waived() {
        let mut no_exp = base(json!({}));
        no_exp.remove("exp");
        let role = ClaimConstraints::default();
        assert_eq!(validate(&no_exp, &role, NOW), Err(ClaimsError::MissingExp));
        let lenient = ClaimConstraints {
            require_exp: false,
            ..role
        };
        assert!(validate(&no_exp, &lenient, NOW).is_ok());
    }

    #[test]
    fn dates_must_be_numbers() {
        let role = ClaimConstraints::default();
        for (claim, name) in [("exp", "exp"), ("nbf", "nbf"), ("iat", "iat")] {
            for bad in [json!("1700000000"), json!(true), json!([1])] {
                assert_eq!(
                    check(json!({ claim: bad }), &role),
                    Err(ClaimsError::NotNumericDate { claim: name })
                );
            }
        }
    }

    #[test]
    fn issuer_must_match_when_bound() {
        let role = ClaimConstraints {
            bound_issuer: Some("https://kubernetes.default.svc".into()),
            ..ClaimConstraints::default()
        };
        assert!(check(json!({"iss": "https://kubernetes.default.svc"}), &role).is_ok());
        assert_eq!(
            check(json!({"iss": "https://evil"}), &role),
            Err(ClaimsError::IssuerMismatch)
        );
        assert_eq!(check(json!({}), &role), Err(ClaimsError::IssuerMismatch));
        assert!(check(json!({"iss": "anything"}), &ClaimConstraints::default()).is_ok());
    }

    #[test]
    fn audience_rules() {
        let role = ClaimConstraints {
            bound_audiences: vec!["sigil".into(), "vault".into()],
            ..ClaimConstraints::default()
        };
        assert!(check(json!({"aud": "vault"}), &role).is_ok());
        assert!(check(json!({"aud": ["other", "sigil"]}), &role).is_ok());
        assert_eq!(
            check(json!({"aud": "other"}), &role),
            Err(ClaimsError::AudienceMismatch)
        );
        assert_eq!(
            check(json!({"aud": []}), &role),
            Err(ClaimsError::AudienceMismatch)
        );
        assert_eq!(check(json!({}), &role), Err(ClaimsError::AudienceMismatch));
        assert_eq!(
            check(json!({"aud": 7}), &role),
            Err(ClaimsError::MalformedAudience)
        );
        assert_eq!(
            check(json!({"aud": ["sigil", 7]}), &role),
            Err(ClaimsError::MalformedAudience)
        );

        let unbound = ClaimConstraints::default();
        assert_eq!(
            check(json!({"aud": "sigil"}), &unbound),
            Err(ClaimsError::UnexpectedAudience)
        );
        assert_eq!(
            check(json!({"aud": ["x"]}), &unbound),
            Err(ClaimsError::UnexpectedAudience)
        );
        assert!(check(json!({"aud": []}), &unbound).is_ok());
    }

    #[test]
    fn bound_subject_is_a_glob() {
        let role = |pattern: &str| ClaimConstraints {
            bound_subject: Some(pattern.into()),
            ..ClaimConstraints::default()
        };
        assert!(check(json!({}), &role("spiffe://prod.example/ns/payments/*")).is_ok());
        assert!(check(json!({}), &role("spiffe://prod.example/ns/payments/sa/api")).is_ok());
        assert_eq!(
            check(json!({}), &role("spiffe://prod.example/ns/billing/*")),
            Err(ClaimsError::SubjectMismatch)
        );
        assert_eq!(
            check(json!({}), &role("spiffe://prod.example/ns/payments/sa/ap")),
            Err(ClaimsError::SubjectMismatch)
        );
        let mut no_sub = base(json!({"user": "x"}));
        no_sub.remove("sub");
        assert_eq!(
            validate(&no_sub, &role("*"), NOW),
            Err(ClaimsError::MissingClaim {
                claim: "sub".into()
            })
        );
    }

    #[test]
    fn bound_claims_string_mode_is_exact() {
        let role = bound(
            &[("namespace", json!(["payments", "billing"]))],
            BoundClaimsType::String,
        );
        assert!(check(json!({"namespace": "billing"}), &role).is_ok());
        assert_eq!(
            check(json!({"namespace": "pay*"}), &role),
            Err(ClaimsError::BoundClaimMismatch {
                claim: "namespace".into()
            })
        );
        let globby = bound(&[("namespace", json!("pay*"))], BoundClaimsType::String);
        assert_eq!(
            check(json!({"namespace": "payments"}), &globby),
            Err(ClaimsError::BoundClaimMismatch {
                claim: "namespace".into()
            })
        );
        assert_eq!(
            check(json!({}), &role),
            Err(ClaimsError::MissingClaim {
                claim: "namespace".into()
            })
        );
        assert_eq!(
            check(json!({"namespace": null}), &role),
            Err(ClaimsError::MissingClaim {
                claim: "namespace".into()
            })
        );
    }

    #[test]
    fn bound_claims_glob_mode() {
        let role = bound(&[("namespace", json!("pay*"))], BoundClaimsType::Glob);
        assert!(check(json!({"namespace": "payments"}), &role).is_ok());
        assert_eq!(
            check(json!({"namespace": "billing"}), &role),
            Err(ClaimsError::BoundClaimMismatch {
                claim: "namespace".into()
            })
        );
    }

    #[test]
    fn list_valued_claims_match_on_any_element() {
        let role = bound(
            &[("groups", json!(["admins", "ops"]))],
            BoundClaimsType::String,
        );
        assert!(check(json!({"groups": ["dev", "ops"]}), &role).is_ok());
        assert_eq!(
            check(json!({"groups": ["dev", "qa"]}), &role),
            Err(ClaimsError::BoundClaimMismatch {
                claim: "groups".into()
            })
        );
        assert_eq!(
            check(json!({"groups": []}), &role),
            Err(ClaimsError::BoundClaimMismatch {
                claim: "groups".into()
            })
        );
        assert_eq!(
            check(json!({"groups": {"ops": true}}), &role),
            Err(ClaimsError::UnsupportedClaimType {
                claim: "groups".into()
            })
        );
    }

    #[test]
    fn bound_claims_compare_numbers_and_bools_by_value() {
        let role = bound(
            &[("uid", json!(1000)), ("admin", json!(false))],
            BoundClaimsType::Glob,
        );
        assert!(check(json!({"uid": 1000, "admin": false}), &role).is_ok());
        assert!(check(json!({"uid": 1000.0, "admin": false}), &role).is_ok());
        assert!(check(json!({"uid": "1000", "admin": false}), &role).is_err());
        assert!(check(json!({"uid": 1000, "admin": "false"}), &role).is_err());
    }

    #[test]
    fn json_pointers_reach_nested_claims() {
        let token = json!({
            "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api"}},
            "a/b": {"c~d": "escaped"},
            "tags": ["x", "y"],
        });
        let role = bound(
            &[
                ("/kubernetes.io/namespace", json!("payments")),
                ("/kubernetes.io/serviceaccount/name", json!("a*")),
                ("/a~1b/c~0d", json!("escaped")),
                ("/tags/1", json!("y")),
            ],
            BoundClaimsType::Glob,
        );
        assert!(check(token.clone(), &role).is_ok());

        let wrong = bound(
            &[("/kubernetes.io/namespace", json!("billing"))],
            BoundClaimsType::String,
        );
        assert_eq!(
            check(token.clone(), &wrong),
            Err(ClaimsError::BoundClaimMismatch {
                claim: "/kubernetes.io/namespace".into()
            })
        );
        let absent = bound(
            &[("/kubernetes.io/pod/name", json!("x"))],
            BoundClaimsType::String,
        );
        assert_eq!(
            check(token, &absent),
            Err(ClaimsError::MissingClaim {
                claim: "/kubernetes.io/pod/name".into()
            })
        );
    }

    #[test]
    fn claim_mappings_stringify_scalars_and_skip_absent_claims() {
        let role = ClaimConstraints {
            claim_mappings: BTreeMap::from([
                ("/k8s/namespace".to_owned(), "namespace".to_owned()),
                ("uid".to_owned(), "uid".to_owned()),
                ("ratio".to_owned(), "ratio".to_owned()),
                ("whole".to_owned(), "whole".to_owned()),
                ("admin".to_owned(), "admin".to_owned()),
                ("absent".to_owned(), "absent".to_owned()),
            ]),
            ..ClaimConstraints::default()
        };
        let identity = check(
            json!({"k8s": {"namespace": "payments"}, "uid": 42, "ratio": 0.5, "whole": 3.0, "admin": true}),
            &role,
        )
        .unwrap();
        let expected = [
            ("namespace", "payments"),
            ("uid", "42"),
            ("ratio", "0.5"),
            ("whole", "3"),
            ("admin", "true"),
        ];
        assert_eq!(
            identity.metadata,
            expected
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        );

        let nested = ClaimConstraints {
            claim_mappings: BTreeMap::from([("k8s".to_owned(), "k8s".to_owned())]),
            ..ClaimConstraints::default()
        };
        assert_eq!(
            check(json!({"k8s": {"namespace": "payments"}}), &nested),
            Err(ClaimsError::NotAString {
                claim: "k8s".into()
            })
        );
    }

    #[test]
    fn user_claim_rules() {
        let role = |claim: &str, pointer: bool| ClaimConstraints {
            user_claim: claim.into(),
            user_claim_json_pointer: pointer,
            ..ClaimConstraints::default()
        };
        let token = json!({"email": "a@example.com", "uid": 1000, "admin": true, "blank": "",
                           "k8s": {"sa": "api"}, "/odd": "literal"});
        let name = |claim: &str, pointer: bool| check(token.clone(), &role(claim, pointer));

        assert_eq!(name("email", false).unwrap().alias_name, "a@example.com");
        assert_eq!(name("uid", false).unwrap().alias_name, "1000");
        assert_eq!(name("/k8s/sa", true).unwrap().alias_name, "api");
        assert_eq!(name("/odd", false).unwrap().alias_name, "literal");
        assert_eq!(
            name("/k8s/sa", false),
            Err(ClaimsError::MissingClaim {
                claim: "/k8s/sa".into()
            })
        );
        assert_eq!(
            name("missing", false),
            Err(ClaimsError::MissingClaim {
                claim: "missing".into()
            })
        );
        assert_eq!(
            name("admin", false),
            Err(ClaimsError::NotAString {
                claim: "admin".into()
            })
        );
        assert_eq!(
            name("k8s", false),
            Err(ClaimsError::NotAString {
                claim: "k8s".into()
            })
        );
        assert_eq!(
            name("blank", false),
            Err(ClaimsError::EmptyUserClaim {
                claim: "blank".into()
            })
        );
    }

    #[test]
    fn bound_values_parse_like_vaults_api() {
        assert_eq!(
            ClaimValue::one_or_many(&json!("a")),
            Some(vec![ClaimValue::String("a".into())])
        );
        assert_eq!(
            ClaimValue::one_or_many(&json!([true, 2])),
            Some(vec![ClaimValue::Bool(true), ClaimValue::Number(2.into())])
        );
        assert_eq!(ClaimValue::one_or_many(&json!({"a": 1})), None);
        assert_eq!(ClaimValue::one_or_many(&json!([["a"]])), None);
        let role: ClaimConstraints =
            serde_json::from_value(json!({"bound_claims_type": "glob", "leeway_secs": 5})).unwrap();
        assert_eq!(role.bound_claims_type, BoundClaimsType::Glob);
        assert_eq!(role.user_claim, "sub");
        assert!(role.require_exp);
    }
}
