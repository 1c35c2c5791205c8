//! Who a verified token says logged in: the identity a login token records
//! (docs/auth.md, "Identities").
//!
//! - A SPIFFE JWT-SVID names its workload in `sub` (JWT-SVID.md §3), so a
//!   `sub` that starts with `spiffe://` must be a valid SPIFFE ID and is the
//!   identity.
//! - A Kubernetes service-account token names its namespace and service
//!   account, and on `kubernetes` mounts the identity is
//!   `kubernetes:<namespace>/<service account>`.
//! - Anything else is `jwt:<issuer>#<user claim value>`.
//!
//! Pure: claims in, typed values out.

use std::fmt;

use serde_json::{Map, Value};

/// Longest SPIFFE ID accepted (SPIFFE-ID.md §2.3: URIs of at most 2048
/// bytes).
const MAX_SPIFFE_ID_LEN: usize = 2048;
/// SPIFFE-ID.md §2.1: trust domains of at most 255 characters.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// A Kubernetes service account name is a DNS subdomain (RFC 1123), at most
/// 253 characters; a namespace is a DNS label, at most 63.
const MAX_SERVICE_ACCOUNT_LEN: usize = 253;
const MAX_NAMESPACE_LEN: usize = 63;
/// `sub` of a service-account token: `system:serviceaccount:<ns>:<name>`.
const SERVICE_ACCOUNT_SUBJECT: &str = "system:serviceaccount:";

/// Why no identity could be read from a token. Messages never contain claim
/// values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("subject claim starts with spiffe:// but is not a valid SPIFFE ID: {0}")]
    InvalidSpiffeId(&'static str),
    #[error("token does not name a Kubernetes service account")]
    NoServiceAccount,
    #[error("the kubernetes.io claim and the subject claim name different service accounts")]
    ServiceAccountMismatch,
    #[error("token names a Kubernetes {0} that is not a valid Kubernetes name")]
    InvalidKubernetesName(&'static str),
}

/// A SPIFFE ID checked against SPIFFE-ID.md §2: `spiffe://`, a trust domain
/// of lowercase letters, digits, `.`, `-` and `_`, and an optional path of
/// non-empty segments of letters, digits, `.`, `-` and `_` (neither `.` nor
/// `..`), with no trailing `/`, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId(String);

impl SpiffeId {
    pub const SCHEME: &'static str = "spiffe://";

    pub fn parse(id: &str) -> Result<Self, IdentityError> {
        let bad = IdentityError::InvalidSpiffeId;
        if id.len() > MAX_SPIFFE_ID_LEN {
            return Err(bad("longer than 2048 bytes"));
        }
        let rest = id
            .strip_prefix(Self::SCHEME)
            .ok_or(bad("scheme is not spiffe://"))?;
        let (trust_domain, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if trust_domain.is_empty() {
            return Err(bad("empty trust domain"));
        }
        if trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(bad("trust domain longer than 255 characters"));
        }
        if !trust_domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(bad(
                "trust domain may hold only lowercase letters, digits, '.', '-' and '_'",
            ));
        }
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                if segment.is_empty() {
                    return Err(bad("empty path segment or trailing '/'"));
                }
                if segment == "." || segment == ".." {
                    return Err(bad("'.' and '..' path segments are not allowed"));
                }
                if !segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                {
                    return Err(bad(
                        "path may hold only letters, digits, '.', '-', '_' and '/'",
                    ));
                }
            }
        }
        Ok(Self(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Kubernetes service account, from a service-account token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    /// Reads the service account from the `kubernetes.io` claim of a
    /// projected token (`namespace`, `serviceaccount.name`) and from `sub`
    /// (`system:serviceaccount:<namespace>:<name>`). Either is enough; when
    /// both are present they must agree, since bindings are checked against
    /// one and the other could otherwise say something else.
    pub fn from_claims(claims: &Map<String, Value>) -> Result<Self, IdentityError> {
        let nested = claims.get("kubernetes.io").and_then(|k8s| {
            let namespace = k8s.pointer("/namespace")?.as_str()?;
            let name = k8s.pointer("/serviceaccount/name")?.as_str()?;
            Some((namespace, name))
        });
        let from_sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|sub| sub.strip_prefix(SERVICE_ACCOUNT_SUBJECT))
            .and_then(|rest| rest.split_once(':'));
        let (namespace, name) = match (nested, from_sub) {
            (Some(a), Some(b)) if a != b => return Err(IdentityError::ServiceAccountMismatch),
            (Some(found), _) | (None, Some(found)) => found,
            (None, None) => return Err(IdentityError::NoServiceAccount),
        };
        check_kubernetes_name(namespace, MAX_NAMESPACE_LEN, "namespace")?;
        check_kubernetes_name(name, MAX_SERVICE_ACCOUNT_LEN, "service account")?;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// Lowercase RFC 1123 names (Kubernetes object names): letters, digits,
/// `-` and `.`, starting and ending with a letter or digit. This keeps `/`
/// and `:` out of `kubernetes:<namespace>/<name>`, so the identity has one
/// reading.
fn check_kubernetes_name(
    name: &str,
    max_len: usize,
    what: &'static str,
) -> Result<(), IdentityError> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= max_len
        && bytes.iter().all(|&b| alnum(b) || b == b'-' || b == b'.')
        && bytes.first().copied().is_some_and(alnum)
        && bytes.last().copied().is_some_and(alnum);
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidKubernetesName(what))
    }
}

/// The identity a login records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginIdentity {
    Spiffe(SpiffeId),
    Kubernetes(ServiceAccount),
    /// `jwt:<issuer>#<user claim value>`.
    Subject {
        issuer: String,
        user: String,
    },
}

impl fmt::Display for LoginIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginIdentity::Spiffe(id) => f.write_str(id.as_str()),
            LoginIdentity::Kubernetes(sa) => write!(f, "kubernetes:{}/{}", sa.namespace, sa.name),
            LoginIdentity::Subject { issuer, user } => write!(f, "jwt:{issuer}#{user}"),
        }
    }
}

impl LoginIdentity {
    /// The identity for a token whose claims passed validation. A SPIFFE
    /// subject wins; then the service account on `kubernetes` mounts
    /// (`service_account`, read by the caller, which also checks it against
    /// the role); then the issuer and the user claim.
    pub fn of(
        claims: &Map<String, Value>,
        service_account: Option<&ServiceAccount>,
        user: &str,
    ) -> Result<Self, IdentityError> {
        if let Some(sub) = claims.get("sub").and_then(Value::as_str)
            && sub.starts_with(SpiffeId::SCHEME)
        {
            return SpiffeId::parse(sub).map(LoginIdentity::Spiffe);
        }
        if let Some(sa) = service_account {
            return Ok(LoginIdentity::Kubernetes(sa.clone()));
        }
        Ok(LoginIdentity::Subject {
            issuer: claims
                .get("iss")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            user: user.to_owned(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn spiffe_ids_follow_the_spec_grammar() {
        for ok in [
            "spiffe://prod.example/ns/payments/sa/api",
            "spiffe://prod.example",
            "spiffe://a_b-c.d/Upper.Case-ok_1",
        ] {
            assert_eq!(SpiffeId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "spiffe://",
            "spiffe:///path",
            "spiffe://Prod.example/x",
            "spiffe://prod.example/",
            "spiffe://prod.example/a//b",
            "spiffe://prod.example/a/../b",
            "spiffe://prod.example/a/./b",
            "spiffe://prod.example/a?b",
            "spiffe://prod.example/a#b",
            "spiffe://prod.example/a%20b",
            "spiffe://user@prod.example/a",
            "spiffe://prod.example:443/a",
            "SPIFFE://prod.example/a",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
        let long = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
        assert!(SpiffeId::parse(&long).is_err());
    }

    #[test]
    fn service_accounts_come_from_the_kubernetes_claim_or_the_subject() {
        let nested = json!({"kubernetes.io": {"namespace": "payments",
                            "serviceaccount": {"name": "api", "uid": "u"}}});
        let expected = ServiceAccount {
            namespace: "payments".into(),
            name: "api".into(),
        };
        assert_eq!(
            ServiceAccount::from_claims(&claims(nested.clone())).unwrap(),
            expected
        );
        let sub = json!({"sub": "system:serviceaccount:payments:api"});
        assert_eq!(ServiceAccount::from_claims(&claims(sub)).unwrap(), expected);
        let mut both = nested.clone();
        both["sub"] = json!("system:serviceaccount:payments:api");
        assert_eq!(
            ServiceAccount::from_claims(&claims(both)).unwrap(),
            expected
        );

        let mut disagree = nested;
        disagree["sub"] = json!("system:serviceaccount:billing:api");
        assert_eq!(
            ServiceAccount::from_claims(&claims(disagree)),
            Err(IdentityError::ServiceAccountMismatch)
        );
        assert_eq!(
            ServiceAccount::from_claims(&claims(json!({"sub": "alice"}))),
            Err(IdentityError::NoServiceAccount)
        );
        for sub in [
            "system:serviceaccount:Payments:api",
            "system:serviceaccount:pay/ments:api",
            "system:serviceaccount::api",
            "system:serviceaccount:payments:api:extra",
        ] {
            assert!(
                matches!(
                    ServiceAccount::from_claims(&claims(json!({ "sub": sub }))),
                    Err(IdentityError::InvalidKubernetesName(_))
                ),
                "{sub}"
            );
        }
    }

    #[test]
    fn identities_prefer_spiffe_then_kubernetes_then_issuer_and_user() {
        let sa = ServiceAccount {
            namespace: "payments".into(),
            name: "api".into(),
        };
        let spiffe = claims(json!({"sub": "spiffe://prod.example/ns/payments/sa/api"}));
        assert_eq!(
            LoginIdentity::of(&spiffe, Some(&sa), "x")
                .unwrap()
                .to_string(),
            "spiffe://prod.example/ns/payments/sa/api"
        );
        let k8s = claims(json!({"sub": "system:serviceaccount:payments:api"}));
        assert_eq!(
            LoginIdentity::of(&k8s, Some(&sa), "x").unwrap().to_string(),
            "kubernetes:payments/api"
        );
        let plain = claims(json!({"sub": "alice", "iss": "https://idp.example"}));
        assert_eq!(
            LoginIdentity::of(&plain, None, "alice@example.com")
                .unwrap()
                .to_string(),
            "jwt:https://idp.example#alice@example.com"
        );
        let broken = claims(json!({"sub": "spiffe://prod.example/a/../b"}));
        assert!(LoginIdentity::of(&broken, None, "x").is_err());
    }
}
