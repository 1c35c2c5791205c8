//! Token roles (`auth/token/roles/:name`): named templates that let a caller
//! create tokens with policies it does not itself hold, within the role's
//! limits.

use serde::{Deserialize, Serialize};

/// A stored token role. Field names are Vault's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenRole {
    pub name: String,
    pub allowed_policies: Vec<String>,
    pub disallowed_policies: Vec<String>,
    pub allowed_policies_glob: Vec<String>,
    pub disallowed_policies_glob: Vec<String>,
    pub orphan: bool,
    pub renewable: bool,
    pub path_suffix: String,
    pub allowed_entity_aliases: Vec<String>,
    /// Seconds; 0 none.
    pub token_explicit_max_ttl: u64,
    /// Seconds; 0 none.
    pub token_period: u64,
    pub token_num_uses: u64,
    pub token_no_default_policy: bool,
    pub token_type: String,
    pub token_bound_cidrs: Vec<String>,
}

impl TokenRole {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            renewable: true,
            token_type: "default-service".into(),
            ..Self::default()
        }
    }

    /// Whether a token created through this role may carry `policy`.
    /// With no allowed list (plain or glob), anything not disallowed is
    /// allowed, as in Vault; `default` is always allowed.
    pub fn permits(&self, policy: &str) -> bool {
        if self.disallowed_policies.iter().any(|p| p == policy)
            || self
                .disallowed_policies_glob
                .iter()
                .any(|g| glob_match(g, policy))
        {
            return false;
        }
        if policy == "default" {
            return true;
        }
        if self.allowed_policies.is_empty() && self.allowed_policies_glob.is_empty() {
            return true;
        }
        self.allowed_policies.iter().any(|p| p == policy)
            || self
                .allowed_policies_glob
                .iter()
                .any(|g| glob_match(g, policy))
    }

    /// True when the role names an allowed list (then tokens are not bound
    /// to the parent's policies).
    pub fn has_allowed_list(&self) -> bool {
        !self.allowed_policies.is_empty() || !self.allowed_policies_glob.is_empty()
    }
}

/// Role names: letters, digits, `-`, `_` and `.`, at most 128 characters.
pub fn check_role_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err("role name must be 1 to 128 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || name.starts_with('.')
    {
        return Err(format!(
            "invalid role name {name:?}: use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// `*` matches any run of characters (Vault's policy globs in roles).
fn glob_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, rest) = parts.split_first().unwrap_or((&"", &[]));
    let Some(mut remaining) = s.strip_prefix(first) else {
        return false;
    };
    let (last, middle) = rest.split_last().unwrap_or((&"", &[]));
    for part in middle {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_permit_by_list_and_glob_and_disallow_wins() {
        let mut r = TokenRole::new("ci");
        assert!(r.permits("anything"));
        r.allowed_policies = vec!["app".into()];
        r.allowed_policies_glob = vec!["team-*-read".into()];
        r.disallowed_policies_glob = vec!["*-admin-*".into()];
        assert!(r.permits("app"));
        assert!(r.permits("default"));
        assert!(r.permits("team-a-read"));
        assert!(!r.permits("team-a-write"));
        assert!(!r.permits("team-admin-read"));
        r.disallowed_policies = vec!["default".into()];
        assert!(!r.permits("default"));
    }

    #[test]
    fn glob_edges() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*", "a"));
        assert!(glob_match("*b", "ab"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn role_names_are_checked() {
        assert!(check_role_name("ci-runner_v1.2").is_ok());
        for bad in ["", "a/b", "..", ".x", "a b", &"x".repeat(129)] {
            assert!(check_role_name(bad).is_err(), "{bad}");
        }
    }
}
