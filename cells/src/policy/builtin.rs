//! The policies every Sigil has without anyone writing them
//! (docs/policies.md, "Built-in policies").

use super::Policy;

pub const DEFAULT_POLICY_NAME: &str = "default";
pub const RESPONSE_WRAPPING_POLICY_NAME: &str = "response-wrapping";

/// Attached to every token unless it is created without it. Vault's
/// `default` policy, less the paths for features Sigil has not got
/// (identity templating, control groups, OIDC providers).
pub const DEFAULT_POLICY: &str = r#"# The default policy: what every token may do to and for itself.

# Look up, renew and revoke the calling token.
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

path "auth/token/renew-self" {
    capabilities = ["update"]
}

path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Ask which capabilities the calling token has on a path.
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# The merged ACL of the calling token, for user interfaces.
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

# Renew or look up a lease whose id the caller already knows
# (sys/renew is the older path some clients still use).
path "sys/renew" {
    capabilities = ["update"]
}

path "sys/leases/renew" {
    capabilities = ["update"]
}

path "sys/leases/lookup" {
    capabilities = ["update"]
}

# The token's own cubbyhole.
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Wrap values, and look up or unwrap a wrapping token.
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Hashing tools.
path "sys/tools/hash" {
    capabilities = ["update"]
}

path "sys/tools/hash/*" {
    capabilities = ["update"]
}
"#;

/// Carried by response-wrapping tokens, and by nothing else: write the
/// wrapped response into the token's cubbyhole, read it back, unwrap it.
/// Vault's policy of the same name; it cannot be written or deleted.
pub const RESPONSE_WRAPPING_POLICY: &str = r#"path "cubbyhole/response" {
    capabilities = ["create", "read"]
}

path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}
"#;

/// [`DEFAULT_POLICY`], parsed.
pub fn default_policy() -> Policy {
    builtin(DEFAULT_POLICY_NAME, DEFAULT_POLICY)
}

/// [`RESPONSE_WRAPPING_POLICY`], parsed.
pub fn response_wrapping_policy() -> Policy {
    builtin(RESPONSE_WRAPPING_POLICY_NAME, RESPONSE_WRAPPING_POLICY)
}

fn builtin(name: &str, text: &str) -> Policy {
    // The texts are constants, parsed in the tests below: this cannot fail.
    Policy::parse(name, text).expect("built-in policy parses")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::logical::{Data, Operation};
    use crate::policy::Acl;

    #[test]
    fn builtins_parse_and_grant_what_they_say() {
        let default = default_policy();
        assert_eq!(default.name, "default");
        assert_eq!(default.rules.len(), 14);
        let acl = Acl::new(&[Arc::new(default)]);
        let ok = |op, path| acl.authorize(op, path, &Data::new(), None).is_ok();
        assert!(ok(Operation::Read, "auth/token/lookup-self"));
        assert!(ok(Operation::Update, "auth/token/renew-self"));
        assert!(ok(Operation::Create, "cubbyhole/mine"));
        assert!(ok(Operation::List, "cubbyhole/"));
        assert!(ok(Operation::Update, "sys/tools/hash/sha2-256"));
        assert!(!ok(Operation::Patch, "cubbyhole/mine"));
        assert!(!ok(Operation::Read, "secret/data/x"));
        assert!(!ok(Operation::Update, "auth/token/create"));

        let wrapping = Acl::new(&[Arc::new(response_wrapping_policy())]);
        let ok = |op, path| wrapping.authorize(op, path, &Data::new(), None).is_ok();
        assert!(ok(Operation::Create, "cubbyhole/response"));
        assert!(ok(Operation::Read, "cubbyhole/response"));
        assert!(ok(Operation::Update, "sys/wrapping/unwrap"));
        assert!(!ok(Operation::Update, "cubbyhole/response"));
        assert!(!ok(Operation::Read, "cubbyhole/other"));
    }
}
