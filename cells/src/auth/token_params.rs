//! The `token_*` options every auth-method role takes (Vault's `tokenutil`):
//! what the tokens issued at its logins get.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::logical::{Data, LoginGrant};
use crate::params;

/// The token options of a role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenParams {
    pub policies: Vec<String>,
    /// Seconds; 0: the mount's default.
    pub ttl: u64,
    /// Seconds; 0: the mount's maximum.
    pub max_ttl: u64,
    pub explicit_max_ttl: u64,
    pub period: u64,
    pub num_uses: u64,
    pub bound_cidrs: Vec<String>,
    pub no_default_policy: bool,
    /// `default` or `service` (batch tokens are not offered).
    pub token_type: String,
}

/// The fields [`TokenParams::update`] reads, for `deny_unknown` lists.
pub const FIELDS: &[&str] = &[
    "token_policies",
    "policies",
    "token_ttl",
    "ttl",
    "token_max_ttl",
    "max_ttl",
    "token_explicit_max_ttl",
    "token_period",
    "period",
    "token_num_uses",
    "token_bound_cidrs",
    "bound_cidrs",
    "token_no_default_policy",
    "token_type",
];

impl TokenParams {
    /// Applies the fields present in `d` (Vault's older names, such as
    /// `policies` and `period`, are accepted as aliases).
    pub fn update(&mut self, d: &Data) -> Result<(), ApiError> {
        for f in ["policies", "token_policies"] {
            if let Some(v) = params::string_list(d, f)? {
                let mut v: Vec<String> = v
                    .into_iter()
                    .map(|p| p.trim().to_lowercase())
                    .filter(|p| !p.is_empty())
                    .collect();
                if v.iter().any(|p| p == "root") {
                    return Err(ApiError::InvalidRequest(
                        "the root policy cannot be granted by an auth method".into(),
                    ));
                }
                v.sort();
                v.dedup();
                self.policies = v;
            }
        }
        let secs = |names: [&str; 2]| -> Result<Option<u64>, ApiError> {
            let mut out = None;
            for f in names {
                if let Some(v) = params::seconds(d, f)? {
                    out = Some(v);
                }
            }
            Ok(out)
        };
        if let Some(v) = secs(["ttl", "token_ttl"])? {
            self.ttl = v;
        }
        if let Some(v) = secs(["max_ttl", "token_max_ttl"])? {
            self.max_ttl = v;
        }
        if let Some(v) = secs(["token_explicit_max_ttl", "token_explicit_max_ttl"])? {
            self.explicit_max_ttl = v;
        }
        if let Some(v) = secs(["period", "token_period"])? {
            self.period = v;
        }
        if let Some(v) = params::uint(d, "token_num_uses")? {
            self.num_uses = v;
        }
        for f in ["bound_cidrs", "token_bound_cidrs"] {
            if let Some(v) = params::string_list(d, f)? {
                super::cidr::parse_list(&v).map_err(ApiError::InvalidRequest)?;
                self.bound_cidrs = v;
            }
        }
        if let Some(v) = params::boolean(d, "token_no_default_policy")? {
            self.no_default_policy = v;
        }
        if let Some(v) = params::string(d, "token_type")? {
            check_token_type(&v)?;
            self.token_type = v;
        }
        if self.max_ttl > 0 && self.ttl > self.max_ttl {
            return Err(ApiError::InvalidRequest(
                "token_ttl must not be greater than token_max_ttl".into(),
            ));
        }
        Ok(())
    }

    /// The fields as a role read shows them.
    pub fn to_json(&self) -> Value {
        json!({
            "token_policies": self.policies,
            "policies": self.policies,
            "token_ttl": self.ttl,
            "token_max_ttl": self.max_ttl,
            "token_explicit_max_ttl": self.explicit_max_ttl,
            "token_period": self.period,
            "period": self.period,
            "token_num_uses": self.num_uses,
            "token_bound_cidrs": self.bound_cidrs,
            "token_no_default_policy": self.no_default_policy,
            "token_type": if self.token_type.is_empty() { "default" } else { self.token_type.as_str() },
        })
    }

    /// A login grant with these options for `identity` through `role`.
    pub fn grant(&self, identity: String, role: &str, display_name: String) -> LoginGrant {
        LoginGrant {
            policies: self.policies.clone(),
            no_default_policy: self.no_default_policy,
            display_name,
            metadata: Default::default(),
            ttl: self.ttl,
            max_ttl: self.max_ttl,
            explicit_max_ttl: self.explicit_max_ttl,
            period: self.period,
            num_uses: self.num_uses,
            bound_cidrs: self.bound_cidrs.clone(),
            identity,
            role: role.to_owned(),
        }
    }
}

/// `token_type`: service tokens only (`default` means service here).
pub fn check_token_type(v: &str) -> Result<(), ApiError> {
    match v {
        "" | "default" | "service" | "default-service" => Ok(()),
        "batch" | "default-batch" => Err(ApiError::InvalidRequest(
            "batch tokens are not supported; use a service token".into(),
        )),
        other => Err(ApiError::InvalidRequest(format!(
            "invalid token_type {other:?}"
        ))),
    }
}

/// Role names: what Vault allows (`\w(([\w-.@]+)?\w)?`), at most 128
/// characters; they become storage keys, so nothing else gets through.
pub fn check_role_name(name: &str) -> Result<(), ApiError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| word(c) || matches!(c, '-' | '.' | '@'))
        && name.starts_with(word)
        && name.ends_with(word);
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "invalid role name {:?}: use letters, digits, '_', '-', '.' and '@', starting and ending with a letter, digit or '_'",
            name.chars().take(64).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: Value) -> Data {
        match v {
            Value::Object(m) => m,
            _ => Data::new(),
        }
    }

    #[test]
    fn options_take_vault_names_and_aliases() {
        let mut t = TokenParams::default();
        t.update(&data(json!({
            "policies": "b,a,a", "token_ttl": "1h", "max_ttl": 7200, "token_num_uses": 3,
            "token_bound_cidrs": ["10.0.0.0/8"], "token_type": "service", "period": "0s"
        })))
        .expect("ok");
        assert_eq!(t.policies, ["a", "b"]);
        assert_eq!((t.ttl, t.max_ttl, t.num_uses), (3600, 7200, 3));
        let g = t.grant("approle:ci".into(), "ci", "approle".into());
        assert_eq!(g.identity, "approle:ci");
        assert_eq!(g.bound_cidrs, ["10.0.0.0/8"]);
    }

    #[test]
    fn bad_options_are_refused() {
        for bad in [
            json!({"token_policies": ["root"]}),
            json!({"token_bound_cidrs": ["10.0.0.0/99"]}),
            json!({"token_type": "batch"}),
            json!({"token_type": "weird"}),
            json!({"token_ttl": "2h", "token_max_ttl": "1h"}),
            json!({"token_ttl": "soon"}),
        ] {
            let mut t = TokenParams::default();
            assert!(t.update(&data(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn role_names_are_word_like() {
        for ok in ["ci", "web-01", "a.b@c", "_x_"] {
            assert!(check_role_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "x-", "a/b", "a b", "..", &"x".repeat(129)] {
            assert!(check_role_name(bad).is_err(), "{bad:?}");
        }
    }
}
