//! ACL policies: Vault's policy language, parsed into typed rules and
//! compiled into an [`Acl`] that answers "may this request go ahead?"
//! (docs/policies.md).
//!
//! A [`Policy`] comes from HCL or its JSON form ([`Policy::parse`]); the
//! pipeline compiles the policies of a token into an [`Acl`] and asks it
//! [`Acl::authorize`]; `sys/capabilities` asks [`Acl::capability_names`].
//! The `sys/policy` endpoints check names with [`check_writable_name`] and
//! [`check_deletable_name`].
//!
//! ```
//! use std::sync::Arc;
//! use sigil_cell::logical::{Data, Operation};
//! use sigil_cell::policy::{Acl, Policy};
//!
//! let policy = Policy::parse("dev", r#"
//!     path "secret/*" { capabilities = ["read", "list"] }
//!     path "secret/admin" { capabilities = ["deny"] }
//! "#).unwrap();
//! let acl = Acl::new(&[Arc::new(policy)]);
//! assert!(acl.authorize(Operation::Read, "secret/app", &Data::new(), None).is_ok());
//! assert!(acl.authorize(Operation::Read, "secret/admin", &Data::new(), None).is_err());
//! assert_eq!(acl.capability_names("secret/app"), ["list", "read"]);
//! ```

mod acl;
pub mod builtin;
mod capabilities;
pub(crate) mod hcl;
mod parameters;
mod parse;
mod pattern;
mod render;
mod rule;

#[cfg(test)]
mod proptests;

pub use acl::{Acl, Authorized, Denied, DenyReason};
pub use capabilities::Capabilities;
pub use parameters::ParameterRules;
pub use pattern::PathPattern;
pub use rule::PathRule;

/// The name of the root policy. It is never stored: a root token gets
/// [`Acl::root`].
pub const ROOT_POLICY_NAME: &str = "root";

/// Longest policy name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Why a policy or a policy name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text is not well-formed HCL or JSON, or uses an unknown key.
    #[error("failed to parse policy: line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A `path` block is well-formed but says something invalid.
    #[error("failed to parse policy: path {path:?} (line {line}, column {column}): {message}")]
    Rule {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A pattern given outside a policy document.
    #[error("invalid path pattern {path:?}: {message}")]
    Pattern { path: String, message: String },
    #[error("invalid policy name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// `root` and `response-wrapping` cannot be written (Vault's message).
    #[error("cannot update {0:?} policy")]
    CannotUpdate(String),
    /// `root`, `response-wrapping` and `default` cannot be deleted.
    #[error("{}", cannot_delete_message(.0))]
    CannotDelete(String),
}

/// Vault words the `default` case differently from the immutable ones
/// (`vault/policy_store.go`, `switchedDeletePolicy`).
fn cannot_delete_message(name: &str) -> String {
    if name == builtin::DEFAULT_POLICY_NAME {
        "cannot delete default policy".to_owned()
    } else {
        format!("cannot delete {name:?} policy")
    }
}

/// A named ACL policy: its text as given and the rules it compiles to, one
/// per distinct pattern (repeated blocks for a pattern are merged as
/// [`Acl::new`] merges rules from different policies).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub raw: String,
    pub rules: Vec<PathRule>,
}

impl Policy {
    /// Parses `text`, HCL or JSON (JSON when the first token is `{`). The
    /// name is normalised by [`normalize_name`].
    pub fn parse(name: &str, text: &str) -> Result<Self, PolicyError> {
        Ok(Self {
            name: normalize_name(name)?,
            raw: text.to_owned(),
            rules: parse::rules(text)?,
        })
    }

    /// The rules as HCL, in the form [`Policy::parse`] reads back.
    pub fn to_hcl(&self) -> String {
        render::hcl(&self.rules)
    }

    /// The rules in the JSON form, which [`Policy::parse`] reads back.
    pub fn to_json(&self) -> String {
        render::json(&self.rules)
    }
}

/// Trims and lowercases a policy name, as Vault's policy store does, and
/// checks it: not empty, at most [`MAX_NAME_LEN`] bytes, no `/` and no
/// control characters. (Vault allows `/`; Sigil does not, so a name is
/// always one storage key and one URL segment.)
pub fn normalize_name(name: &str) -> Result<String, PolicyError> {
    let normalized = name.trim().to_lowercase();
    let bad = |reason| {
        Err(PolicyError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if normalized.is_empty() {
        return bad("empty");
    }
    if normalized.len() > MAX_NAME_LEN {
        return bad("too long");
    }
    if normalized.contains('/') {
        return bad("contains '/'");
    }
    if normalized.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    Ok(normalized)
}

/// For `PUT sys/policy/:name`: the normalised name, unless it names a
/// policy nobody may write (`root`, `response-wrapping`). `default` may be
/// rewritten.
pub fn check_writable_name(name: &str) -> Result<String, PolicyError> {
    let name = normalize_name(name)?;
    if is_immutable(&name) {
        return Err(PolicyError::CannotUpdate(name));
    }
    Ok(name)
}

/// For `DELETE sys/policy/:name`: the normalised name, unless it is `root`,
/// `response-wrapping` or `default`.
pub fn check_deletable_name(name: &str) -> Result<String, PolicyError> {
    let name = normalize_name(name)?;
    if is_immutable(&name) || name == builtin::DEFAULT_POLICY_NAME {
        return Err(PolicyError::CannotDelete(name));
    }
    Ok(name)
}

fn is_immutable(name: &str) -> bool {
    name == ROOT_POLICY_NAME || name == builtin::RESPONSE_WRAPPING_POLICY_NAME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_checked() {
        assert_eq!(normalize_name("  Dev-Team ").expect("valid"), "dev-team");
        for bad in ["", "   ", "a/b", "a\u{7}b"] {
            assert!(
                matches!(normalize_name(bad), Err(PolicyError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(normalize_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn reserved_names() {
        assert_eq!(check_writable_name("Default").expect("writable"), "default");
        assert_eq!(
            check_writable_name("ROOT")
                .expect_err("immutable")
                .to_string(),
            "cannot update \"root\" policy"
        );
        assert!(check_writable_name("response-wrapping").is_err());
        assert_eq!(
            check_deletable_name("default")
                .expect_err("kept")
                .to_string(),
            "cannot delete default policy"
        );
        assert_eq!(
            check_deletable_name("root").expect_err("kept").to_string(),
            "cannot delete \"root\" policy"
        );
        assert!(check_deletable_name("response-wrapping").is_err());
        assert_eq!(check_deletable_name("dev").expect("deletable"), "dev");
    }
}
