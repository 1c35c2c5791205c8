//! The compiled form of a set of policies, and the authorization decision
//! (docs/policies.md, "Precedence").
//!
//! Rules from all policies are merged per pattern ([`PathRule::merge`]) and
//! indexed three ways, so that finding the rule that governs a path rarely
//! looks at rules that cannot match it:
//!
//! - exact paths in a hash map: O(L) for a path of length L;
//! - trailing-`*` prefixes in a hash map keyed by prefix, probed with the
//!   path's own prefixes at each distinct prefix length, longest first (the
//!   longest matching prefix is the highest-priority one): O(D·L) for D
//!   distinct prefix lengths, independent of the number of prefix rules;
//! - patterns with `+` segments in a list sorted by priority, scanned until
//!   the first match or until the rest cannot beat the prefix already found:
//!   O(W·S) for W such rules and S path segments.
//!
//! An `Acl` is immutable, `Send + Sync` and meant to be shared in an `Arc`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Capabilities, PathRule, Policy};
use crate::logical::{Data, Operation};

/// The merged rules of a token's policies, or root.
#[derive(Debug, Clone)]
pub struct Acl {
    root: bool,
    /// One merged rule per pattern, in the order the patterns first appear.
    rules: Vec<PathRule>,
    exact: HashMap<String, usize>,
    /// Trailing-`*` rules without `+`, keyed by the text before the `*`.
    prefixes: HashMap<String, usize>,
    /// The distinct lengths of the keys of `prefixes`, longest first.
    prefix_lens: Vec<usize>,
    /// Rules with `+` segments, highest priority first.
    segment: Vec<usize>,
}

/// The request may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorized {
    /// The governing rule grants `sudo` (always, for root): the request may
    /// use endpoints that require it.
    pub sudo: bool,
    pub root: bool,
}

/// The request may not go ahead, and why, for the logs. The client only
/// ever sees "permission denied". Carries key names, never data values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub reason: DenyReason,
    /// The pattern of the governing rule, if any rule matched.
    pub pattern: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    NoMatchingRule,
    ExplicitDeny,
    /// The governing rule lacks the capability the operation needs.
    MissingCapability(Capabilities),
    /// A wrapping TTL bound is set but the request is not wrapped.
    WrappingRequired,
    WrapTtlAboveMax(Duration),
    WrapTtlBelowMin(Duration),
    /// Merged bounds with the minimum above the maximum: nothing satisfies
    /// them.
    WrapTtlBoundsConflict,
    RequiredParameterMissing(String),
    ParameterDenied(String),
    ParameterNotAllowed(String),
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::NoMatchingRule => f.write_str("no rule matches the path"),
            DenyReason::ExplicitDeny => f.write_str("explicit deny"),
            DenyReason::MissingCapability(c) => write!(f, "missing capability {c}"),
            DenyReason::WrappingRequired => f.write_str("response wrapping required"),
            DenyReason::WrapTtlAboveMax(d) => write!(f, "wrap ttl above the maximum {d:?}"),
            DenyReason::WrapTtlBelowMin(d) => write!(f, "wrap ttl below the minimum {d:?}"),
            DenyReason::WrapTtlBoundsConflict => {
                f.write_str("merged min_wrapping_ttl exceeds max_wrapping_ttl")
            }
            DenyReason::RequiredParameterMissing(k) => {
                write!(f, "required parameter {k:?} missing")
            }
            DenyReason::ParameterDenied(k) => write!(f, "parameter {k:?} denied"),
            DenyReason::ParameterNotAllowed(k) => write!(f, "parameter {k:?} not allowed"),
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "permission denied: {}", self.reason)?;
        if let Some(p) = &self.pattern {
            write!(f, " (rule {p:?})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Denied {}

impl Acl {
    /// Compiles policies: rules for the same pattern are merged whichever
    /// policy they come from ([`PathRule::merge`]). No policies, no access.
    pub fn new(policies: &[Arc<Policy>]) -> Self {
        let mut rules: Vec<PathRule> = Vec::new();
        let mut by_pattern: HashMap<String, usize> = HashMap::new();
        for rule in policies.iter().flat_map(|p| &p.rules) {
            match by_pattern.get(rule.pattern.as_str()) {
                Some(&i) => rules[i].merge(rule),
                None => {
                    by_pattern.insert(rule.pattern.as_str().to_owned(), rules.len());
                    rules.push(rule.clone());
                }
            }
        }
        let mut acl = Self {
            root: false,
            rules: Vec::new(),
            exact: HashMap::new(),
            prefixes: HashMap::new(),
            prefix_lens: Vec::new(),
            segment: Vec::new(),
        };
        for (i, rule) in rules.iter().enumerate() {
            let p = &rule.pattern;
            if p.has_segment_wildcards() {
                acl.segment.push(i);
            } else if p.is_glob() {
                acl.prefixes.insert(p.body().to_owned(), i);
                acl.prefix_lens.push(p.body().len());
            } else {
                acl.exact.insert(p.as_str().to_owned(), i);
            }
        }
        acl.prefix_lens.sort_unstable_by(|a, b| b.cmp(a));
        acl.prefix_lens.dedup();
        acl.segment
            .sort_by(|&a, &b| rules[b].pattern.cmp_priority(&rules[a].pattern));
        acl.rules = rules;
        acl
    }

    /// The root token's ACL: everything, `sudo` included.
    pub fn root() -> Self {
        Self {
            root: true,
            ..Self::new(&[])
        }
    }

    pub fn is_root(&self) -> bool {
        self.root
    }

    /// The merged rules, one per pattern (for `sys/internal/ui/resultant-acl`).
    pub fn rules(&self) -> &[PathRule] {
        &self.rules
    }

    /// The rule that decides `op` on `path`: the highest-priority matching
    /// pattern, looked up as Vault's `AllowOperation` does. A list of a
    /// directory (`secret/foo/`) is also governed by an exact rule for
    /// `secret/foo`, and tries the non-exact rules against `secret/foo`
    /// before `secret/foo/`. `None` for root, which has no rules.
    pub fn governing_rule(&self, op: Operation, path: &str) -> Option<&PathRule> {
        let path = path.trim_start_matches('/');
        let found = self.exact.get(path).copied().or_else(|| {
            let dir = path.strip_suffix('/').filter(|_| op == Operation::List);
            dir.and_then(|d| self.exact.get(d).copied().or_else(|| self.non_exact(d)))
                .or_else(|| self.non_exact(path))
        });
        found.map(|i| &self.rules[i])
    }

    fn non_exact(&self, path: &str) -> Option<usize> {
        let prefix = self
            .prefix_lens
            .iter()
            .filter(|&&len| len <= path.len() && path.is_char_boundary(len))
            .find_map(|&len| self.prefixes.get(&path[..len]).copied());
        for &i in &self.segment {
            let pattern = &self.rules[i].pattern;
            if let Some(p) = prefix
                && pattern.cmp_priority(&self.rules[p].pattern).is_lt()
            {
                break;
            }
            if pattern.matches(path) {
                return Some(i);
            }
        }
        prefix
    }

    /// What the token may do on `path`: the governing rule's capabilities
    /// (looked up as for a list, as Vault's `sys/capabilities` does), empty
    /// when no rule matches, [`Capabilities::ALL`] for root.
    pub fn capabilities(&self, path: &str) -> Capabilities {
        if self.root {
            return Capabilities::ALL;
        }
        self.governing_rule(Operation::List, path)
            .map_or(Capabilities::NONE, |r| r.capabilities)
    }

    /// The answer of `sys/capabilities`: `["root"]` for root, `["deny"]`
    /// when nothing is granted, otherwise the names in alphabetical order.
    pub fn capability_names(&self, path: &str) -> Vec<&'static str> {
        if self.root {
            return vec!["root"];
        }
        let caps = self.capabilities(path);
        if caps.is_empty() || caps.is_deny() {
            return vec!["deny"];
        }
        caps.names().collect()
    }

    /// Whether `op` on `path` with `data`, wrapped for `wrap_ttl` if set,
    /// is allowed (Vault's `AllowOperation`, `vault/acl.go`). In order:
    /// the governing rule must exist, not deny, and hold the capability
    /// for `op`; its wrapping TTL bounds must hold; for reads, creates,
    /// updates and patches its parameter constraints must hold.
    ///
    /// The wrapping bounds follow Vault's policy docs: with
    /// `max_wrapping_ttl` set the request must be wrapped with at most that
    /// TTL, with `min_wrapping_ttl` set it must be wrapped with at least
    /// that TTL; an unwrapped request fails either bound.
    pub fn authorize(
        &self,
        op: Operation,
        path: &str,
        data: &Data,
        wrap_ttl: Option<Duration>,
    ) -> Result<Authorized, Denied> {
        if self.root {
            return Ok(Authorized {
                sudo: true,
                root: true,
            });
        }
        let Some(rule) = self.governing_rule(op, path) else {
            return Err(Denied {
                reason: DenyReason::NoMatchingRule,
                pattern: None,
            });
        };
        let deny = |reason| {
            Err(Denied {
                reason,
                pattern: Some(rule.pattern.as_str().to_owned()),
            })
        };
        let caps = rule.capabilities;
        if caps.is_deny() {
            return deny(DenyReason::ExplicitDeny);
        }
        let needed = Capabilities::for_operation(op);
        if !caps.contains(needed) {
            return deny(DenyReason::MissingCapability(needed));
        }
        if let Some(max) = rule.max_wrapping_ttl {
            match wrap_ttl {
                None => return deny(DenyReason::WrappingRequired),
                Some(ttl) if ttl > max => return deny(DenyReason::WrapTtlAboveMax(max)),
                Some(_) => {}
            }
        }
        if let Some(min) = rule.min_wrapping_ttl {
            match wrap_ttl {
                None => return deny(DenyReason::WrappingRequired),
                Some(ttl) if ttl < min => return deny(DenyReason::WrapTtlBelowMin(min)),
                Some(_) => {}
            }
        }
        if let (Some(min), Some(max)) = (rule.min_wrapping_ttl, rule.max_wrapping_ttl)
            && max < min
        {
            return deny(DenyReason::WrapTtlBoundsConflict);
        }
        // Vault checks parameters for the operations that carry them; list
        // and delete do not.
        if matches!(
            op,
            Operation::Read | Operation::Create | Operation::Update | Operation::Patch
        ) && let Err(reason) = rule.parameters.check(data)
        {
            return deny(reason);
        }
        Ok(Authorized {
            sudo: caps.contains(Capabilities::SUDO),
            root: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn acl(policies: &[&str]) -> Acl {
        let parsed: Vec<Arc<Policy>> = policies
            .iter()
            .enumerate()
            .map(|(i, text)| Arc::new(Policy::parse(&format!("p{i}"), text).expect("parses")))
            .collect();
        Acl::new(&parsed)
    }

    fn names(acl: &Acl, path: &str) -> Vec<&'static str> {
        acl.capability_names(path)
    }

    fn governing<'a>(acl: &'a Acl, path: &str) -> Option<&'a str> {
        acl.governing_rule(Operation::Read, path)
            .map(|r| r.pattern.as_str())
    }

    #[test]
    fn acl_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Acl>();
    }

    #[test]
    fn exact_beats_glob() {
        let a = acl(&[r#"
            path "secret/*" { capabilities = ["read"] }
            path "secret/foo" { capabilities = ["update"] }
        "#]);
        assert_eq!(names(&a, "secret/foo"), ["update"]);
        assert_eq!(names(&a, "secret/bar"), ["read"]);
        assert_eq!(names(&a, "other"), ["deny"]);
    }

    // The examples of Vault's "Priority matching" section, one per rule.
    #[test]
    fn vault_priority_rules() {
        // 1. The first wildcard later wins.
        let a = acl(&[r#"
            path "secret/+/bar" { capabilities = ["read"] }
            path "secret/foo/*" { capabilities = ["update"] }
        "#]);
        assert_eq!(governing(&a, "secret/foo/bar"), Some("secret/foo/*"));
        // 2. Not ending in `*` wins.
        let a = acl(&[r#"
            path "secret/+/bar*" { capabilities = ["read"] }
            path "secret/+/bar" { capabilities = ["update"] }
        "#]);
        assert_eq!(governing(&a, "secret/foo/bar"), Some("secret/+/bar"));
        // 3. Fewer `+` segments win.
        let a = acl(&[r#"
            path "secret/+/+/baz" { capabilities = ["read"] }
            path "secret/+/bar/baz" { capabilities = ["update"] }
        "#]);
        assert_eq!(
            governing(&a, "secret/foo/bar/baz"),
            Some("secret/+/bar/baz")
        );
        // 4. Longer wins.
        let a = acl(&[r#"
            path "secret/+/ba*" { capabilities = ["read"] }
            path "secret/+/bar*" { capabilities = ["update"] }
        "#]);
        assert_eq!(governing(&a, "secret/foo/bar/x"), Some("secret/+/bar*"));
        // Among plain prefixes, the longest.
        let a = acl(&[r#"
            path "secret/*" { capabilities = ["read"] }
            path "secret/foo/*" { capabilities = ["update"] }
        "#]);
        assert_eq!(governing(&a, "secret/foo/x"), Some("secret/foo/*"));
        assert_eq!(governing(&a, "secret/fo"), Some("secret/*"));
        // 5. Lexicographically larger wins (same first wildcard, both exact
        // in length and `+` count).
        let a = acl(&[r#"
            path "a/+/+/d" { capabilities = ["read"] }
            path "a/+/c/+" { capabilities = ["update"] }
        "#]);
        assert_eq!(governing(&a, "a/b/c/d"), Some("a/+/c/+"));
        // A prefix rule against a `+` rule: the `+` comes first, so the
        // prefix wins even though the `+` rule is longer.
        let a = acl(&[r#"
            path "secret/f*" { capabilities = ["read"] }
            path "secret/+/bar/baz" { capabilities = ["update"] }
        "#]);
        assert_eq!(governing(&a, "secret/foo/bar/baz"), Some("secret/f*"));
        let a = acl(&[r#"
            path "secret/*" { capabilities = ["read"] }
            path "secret/+/bar" { capabilities = ["update"] }
        "#]);
        // Same first wildcard position: not ending in `*` wins (rule 2).
        assert_eq!(governing(&a, "secret/foo/bar"), Some("secret/+/bar"));
        let a = acl(&[r#"
            path "secret/" { capabilities = ["read"] }
            path "secret/+" { capabilities = ["update"] }
            path "*" { capabilities = ["list"] }
        "#]);
        assert_eq!(governing(&a, "secret/foo"), Some("secret/+"));
        assert_eq!(governing(&a, "secret/"), Some("secret/"));
        assert_eq!(governing(&a, "sys/x"), Some("*"));
    }

    #[test]
    fn same_pattern_in_two_policies_unions_and_deny_overrides() {
        let a = acl(&[
            r#"path "secret/*" { capabilities = ["read"] }"#,
            r#"path "secret/*" { capabilities = ["list", "sudo"] }"#,
        ]);
        assert_eq!(names(&a, "secret/x"), ["list", "read", "sudo"]);
        let a = acl(&[
            r#"path "secret/*" { capabilities = ["read"] }"#,
            r#"path "secret/*" { capabilities = ["deny"] }"#,
            r#"path "secret/*" { capabilities = ["update"] }"#,
        ]);
        assert_eq!(names(&a, "secret/x"), ["deny"]);
        let denied = a
            .authorize(Operation::Read, "secret/x", &Data::new(), None)
            .expect_err("denied");
        assert_eq!(denied.reason, DenyReason::ExplicitDeny);
        assert_eq!(
            denied.to_string(),
            "permission denied: explicit deny (rule \"secret/*\")"
        );
    }

    // Vault: the most specific rule decides; a deny on a broader pattern
    // does not reach a path a more specific rule grants.
    #[test]
    fn broad_deny_does_not_override_a_specific_grant() {
        let a = acl(&[
            r#"path "secret/*" { capabilities = ["deny"] }"#,
            r#"path "secret/app/*" { capabilities = ["read"] }"#,
        ]);
        assert_eq!(names(&a, "secret/app/x"), ["read"]);
        assert_eq!(names(&a, "secret/other"), ["deny"]);
    }

    #[test]
    fn operations_map_to_capabilities_and_sudo_is_reported() {
        let a = acl(&[r#"
            path "sys/mounts/*" { capabilities = ["create", "sudo"] }
            path "kv/*" { capabilities = ["read", "list", "update", "patch", "delete"] }
        "#]);
        let run = |op, path: &str| a.authorize(op, path, &Data::new(), None);
        assert_eq!(
            run(Operation::Create, "sys/mounts/x"),
            Ok(Authorized {
                sudo: true,
                root: false
            })
        );
        assert_eq!(
            run(Operation::Update, "sys/mounts/x")
                .expect_err("no update")
                .reason,
            DenyReason::MissingCapability(Capabilities::UPDATE)
        );
        for op in [
            Operation::Read,
            Operation::List,
            Operation::Update,
            Operation::Patch,
            Operation::Delete,
        ] {
            assert_eq!(
                run(op, "kv/a"),
                Ok(Authorized {
                    sudo: false,
                    root: false
                }),
                "{op}"
            );
        }
        assert!(run(Operation::Create, "kv/a").is_err());
        assert_eq!(
            run(Operation::Read, "nope").expect_err("nothing").reason,
            DenyReason::NoMatchingRule
        );
    }

    #[test]
    fn root_and_empty() {
        let root = Acl::root();
        assert_eq!(names(&root, "anything"), ["root"]);
        assert_eq!(root.capabilities("x"), Capabilities::ALL);
        assert_eq!(
            root.authorize(Operation::Delete, "sys/seal", &Data::new(), None),
            Ok(Authorized {
                sudo: true,
                root: true
            })
        );
        let none = Acl::new(&[]);
        assert_eq!(names(&none, "anything"), ["deny"]);
        assert!(
            none.authorize(Operation::Read, "a", &Data::new(), None)
                .is_err()
        );
    }

    #[test]
    fn list_of_a_directory_uses_the_rule_for_the_bare_path() {
        let a = acl(&[r#"
            path "secret/metadata/app" { capabilities = ["list"] }
            path "secret/*" { capabilities = ["deny"] }
        "#]);
        assert!(
            a.authorize(Operation::List, "secret/metadata/app/", &Data::new(), None)
                .is_ok()
        );
        assert!(
            a.authorize(Operation::Read, "secret/metadata/app/", &Data::new(), None)
                .is_err()
        );
        assert_eq!(names(&a, "secret/metadata/app/"), ["list"]);
        assert_eq!(names(&a, "/secret/metadata/app"), ["list"]);
    }

    #[test]
    fn parameters_apply_to_reads_and_writes_only() {
        let a = acl(&[r#"
            path "auth/token/create" {
                capabilities = ["create", "read", "update", "list", "delete"]
                allowed_parameters = { "policies" = ["dev"] }
                required_parameters = ["policies"]
            }
        "#]);
        let data = |v: serde_json::Value| v.as_object().cloned().expect("object");
        let run = |op, d: &Data| a.authorize(op, "auth/token/create", d, None);
        assert!(run(Operation::Update, &data(json!({"policies": "dev"}))).is_ok());
        assert_eq!(
            run(Operation::Update, &data(json!({"policies": "root"})))
                .expect_err("denied")
                .reason,
            DenyReason::ParameterNotAllowed("policies".into())
        );
        assert_eq!(
            run(Operation::Create, &Data::new())
                .expect_err("denied")
                .reason,
            DenyReason::RequiredParameterMissing("policies".into())
        );
        assert!(run(Operation::Read, &data(json!({"x": 1}))).is_err());
        assert!(run(Operation::List, &data(json!({"x": 1}))).is_ok());
        assert!(run(Operation::Delete, &Data::new()).is_ok());
    }

    #[test]
    fn wrapping_ttl_bounds() {
        let a = acl(&[r#"
            path "a" { capabilities = ["read"] min_wrapping_ttl = "1m" max_wrapping_ttl = "1h" }
            path "b" { capabilities = ["read"] max_wrapping_ttl = 300 }
        "#]);
        let s = Duration::from_secs;
        let run = |path, ttl| a.authorize(Operation::Read, path, &Data::new(), ttl);
        let reason = |r: Result<Authorized, Denied>| r.expect_err("denied").reason;
        assert!(run("a", Some(s(60))).is_ok());
        assert!(run("a", Some(s(3600))).is_ok());
        assert_eq!(reason(run("a", None)), DenyReason::WrappingRequired);
        assert_eq!(
            reason(run("a", Some(s(59)))),
            DenyReason::WrapTtlBelowMin(s(60))
        );
        assert_eq!(
            reason(run("a", Some(s(3601)))),
            DenyReason::WrapTtlAboveMax(s(3600))
        );
        assert!(run("b", Some(s(1))).is_ok());
        assert_eq!(reason(run("b", None)), DenyReason::WrappingRequired);

        // One block may not cross its bounds, but merging can cross them;
        // then nothing passes.
        assert!(
            Policy::parse(
                "x",
                r#"path "c" { max_wrapping_ttl = 40 min_wrapping_ttl = 50 }"#
            )
            .is_err()
        );
        let crossed = acl(&[
            r#"path "c" { capabilities = ["read"] max_wrapping_ttl = 40 }"#,
            r#"path "c" { capabilities = ["read"] min_wrapping_ttl = 50 }"#,
        ]);
        assert_eq!(
            reason(crossed.authorize(Operation::Read, "c", &Data::new(), Some(s(35)))),
            DenyReason::WrapTtlBelowMin(s(50))
        );
        assert_eq!(
            reason(crossed.authorize(Operation::Read, "c", &Data::new(), Some(s(45)))),
            DenyReason::WrapTtlAboveMax(s(40))
        );
    }
}
