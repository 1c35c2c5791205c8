//! A JWT mount's `config`: where verification keys come from, which
//! algorithms and issuer are accepted, and the default role (Vault's
//! `auth/jwt/config`, without the browser OIDC fields).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::keys::{self, KeyUrl, Remote};
use super::verify::{Alg, VerifyingKey};
use crate::api_error::ApiError;
use crate::auth::token_params::check_role_name;
use crate::logical::Data;
use crate::params;

/// Fields Vault takes for its browser OIDC flow and for key sources not
/// offered here. An empty value is accepted (tools send them blank); any
/// other is refused with a reason rather than ignored.
const NOT_OFFERED: &[(&str, &str)] = &[
    ("oidc_client_id", OIDC_REFUSAL),
    ("oidc_client_secret", OIDC_REFUSAL),
    ("oidc_response_mode", OIDC_REFUSAL),
    ("oidc_response_types", OIDC_REFUSAL),
    ("provider_config", OIDC_REFUSAL),
    ("namespace_in_state", OIDC_REFUSAL),
    (
        "jwks_pairs",
        "jwks_pairs is not supported: set one jwks_url (with jwks_ca_pem)",
    ),
];

pub const OIDC_REFUSAL: &str =
    "browser OIDC login flows are not offered: tokens are verified offline (role_type \"jwt\")";

const FIELDS: &[&str] = &[
    "jwt_validation_pubkeys",
    "jwks_url",
    "jwks_ca_pem",
    "oidc_discovery_url",
    "oidc_discovery_ca_pem",
    "bound_issuer",
    "jwt_supported_algs",
    "default_role",
];

/// The stored configuration, as the operator wrote it. Every field was
/// checked when written; [`Config::key_source`] turns it into typed values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// PEM public keys or certificates, one or more blocks each.
    pub jwt_validation_pubkeys: Vec<String>,
    pub jwks_url: String,
    pub jwks_ca_pem: String,
    pub oidc_discovery_url: String,
    pub oidc_discovery_ca_pem: String,
    pub bound_issuer: String,
    /// `alg` names; empty allows every algorithm [`Alg`] implements.
    pub jwt_supported_algs: Vec<String>,
    pub default_role: String,
}

/// Where a mount's keys come from: exactly one of these.
#[derive(Debug, Clone)]
pub enum KeySource {
    Inline(Vec<VerifyingKey>),
    Remote(Remote),
}

impl Config {
    /// A whole new configuration from a write, which replaces the old one
    /// (as Vault's does). Everything is checked here, so a mistake is a 400
    /// now rather than a failed login later.
    pub fn from_request(d: &Data) -> Result<Self, ApiError> {
        for (field, refusal) in NOT_OFFERED {
            if is_set(d.get(*field)) {
                return Err(ApiError::InvalidRequest(format!("{field}: {refusal}")));
            }
        }
        let known: Vec<&str> = FIELDS
            .iter()
            .chain(NOT_OFFERED.iter().map(|(field, _)| field))
            .copied()
            .collect();
        params::deny_unknown(d, &known)?;
        let text = |field| params::string(d, field).map(|v| v.unwrap_or_default());
        let config = Config {
            jwt_validation_pubkeys: pem_list(d)?,
            jwks_url: text("jwks_url")?,
            jwks_ca_pem: text("jwks_ca_pem")?,
            oidc_discovery_url: text("oidc_discovery_url")?,
            oidc_discovery_ca_pem: text("oidc_discovery_ca_pem")?,
            bound_issuer: text("bound_issuer")?,
            jwt_supported_algs: params::string_list(d, "jwt_supported_algs")?.unwrap_or_default(),
            default_role: text("default_role")?,
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ApiError> {
        let bad = |m: String| ApiError::InvalidRequest(m);
        let set: Vec<&str> = [
            (
                "jwt_validation_pubkeys",
                !self.jwt_validation_pubkeys.is_empty(),
            ),
            ("jwks_url", !self.jwks_url.is_empty()),
            ("oidc_discovery_url", !self.oidc_discovery_url.is_empty()),
        ]
        .into_iter()
        .filter_map(|(field, present)| present.then_some(field))
        .collect();
        match set.as_slice() {
            [_] => {}
            [] => {
                return Err(bad("exactly one of jwt_validation_pubkeys, jwks_url or \
                     oidc_discovery_url must be set: none is"
                    .into()));
            }
            many => {
                return Err(bad(format!(
                    "exactly one of jwt_validation_pubkeys, jwks_url or oidc_discovery_url \
                     must be set, not {}",
                    many.join(" and ")
                )));
            }
        }
        for (ca_field, pem, url_field, url) in [
            ("jwks_ca_pem", &self.jwks_ca_pem, "jwks_url", &self.jwks_url),
            (
                "oidc_discovery_ca_pem",
                &self.oidc_discovery_ca_pem,
                "oidc_discovery_url",
                &self.oidc_discovery_url,
            ),
        ] {
            if pem.is_empty() {
                continue;
            }
            if url.is_empty() {
                return Err(bad(format!("{ca_field} is set but {url_field} is not")));
            }
            keys::ca_roots(pem).map_err(|e| bad(format!("{ca_field}: {e}")))?;
        }
        for alg in &self.jwt_supported_algs {
            alg.parse::<Alg>()
                .map_err(|e| bad(format!("jwt_supported_algs: {e}")))?;
        }
        if !self.default_role.is_empty() {
            check_role_name(&self.default_role)?;
        }
        // Parses the keys and URLs, refusing bad ones.
        self.key_source()?;
        Ok(())
    }

    /// The typed key source. Only fails on a configuration that
    /// [`Config::from_request`] would have refused.
    pub fn key_source(&self) -> Result<KeySource, ApiError> {
        let bad = |m: String| ApiError::InvalidRequest(m);
        let ca = |pem: &str| (!pem.is_empty()).then(|| pem.to_owned());
        if !self.jwks_url.is_empty() {
            let url = KeyUrl::parse(&self.jwks_url).map_err(|e| bad(format!("jwks_url: {e}")))?;
            return Ok(KeySource::Remote(Remote::Jwks {
                url,
                ca_pem: ca(&self.jwks_ca_pem),
            }));
        }
        if !self.oidc_discovery_url.is_empty() {
            let url = KeyUrl::parse(&self.oidc_discovery_url)
                .map_err(|e| bad(format!("oidc_discovery_url: {e}")))?;
            return Ok(KeySource::Remote(Remote::Discovery {
                url,
                ca_pem: ca(&self.oidc_discovery_ca_pem),
            }));
        }
        let mut all = Vec::new();
        for (index, pem) in self.jwt_validation_pubkeys.iter().enumerate() {
            let keys = VerifyingKey::from_pem(pem)
                .map_err(|e| bad(format!("jwt_validation_pubkeys[{index}]: {e}")))?;
            all.extend(keys);
        }
        Ok(KeySource::Inline(all))
    }

    /// The algorithms tokens may use; empty means all of [`Alg::ALL`].
    pub fn algs(&self) -> Vec<Alg> {
        self.jwt_supported_algs
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "jwt_validation_pubkeys": self.jwt_validation_pubkeys,
            "jwks_url": self.jwks_url,
            "jwks_ca_pem": self.jwks_ca_pem,
            "oidc_discovery_url": self.oidc_discovery_url,
            "oidc_discovery_ca_pem": self.oidc_discovery_ca_pem,
            "bound_issuer": self.bound_issuer,
            "jwt_supported_algs": self.jwt_supported_algs,
            "default_role": self.default_role,
        })
    }
}

/// `jwt_validation_pubkeys`: a list of PEM strings. A single string is one
/// PEM (not split on commas, which `params::string_list` would do).
fn pem_list(d: &Data) -> Result<Vec<String>, ApiError> {
    let keys = match d.get("jwt_validation_pubkeys") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(pem) => Ok(pem.clone()),
                _ => Err(ApiError::InvalidRequest(
                    "jwt_validation_pubkeys must be a list of PEM strings".into(),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "jwt_validation_pubkeys must be a list of PEM strings".into(),
            ));
        }
    };
    Ok(keys
        .into_iter()
        .filter(|pem| !pem.trim().is_empty())
        .collect())
}

fn is_set(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(_)) => true,
    }
}
