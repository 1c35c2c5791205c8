//! One path rule, and how two rules for the same pattern merge.

use std::time::Duration;

use super::{Capabilities, ParameterRules, PathPattern};

/// What a `path "..." { .. }` block grants.
#[derive(Debug, Clone, PartialEq)]
pub struct PathRule {
    pub pattern: PathPattern,
    pub capabilities: Capabilities,
    pub parameters: ParameterRules,
    /// A request must be response-wrapped with at least this TTL.
    pub min_wrapping_ttl: Option<Duration>,
    /// A request must be response-wrapped with at most this TTL.
    pub max_wrapping_ttl: Option<Duration>,
}

impl PathRule {
    /// A rule granting nothing, to be filled in.
    pub fn new(pattern: PathPattern) -> Self {
        Self {
            pattern,
            capabilities: Capabilities::NONE,
            parameters: ParameterRules::default(),
            min_wrapping_ttl: None,
            max_wrapping_ttl: None,
        }
    }

    /// An explicit deny: nothing else about the rule matters.
    pub fn deny(pattern: PathPattern) -> Self {
        Self {
            capabilities: Capabilities::DENY,
            ..Self::new(pattern)
        }
    }

    /// Folds `other`, a rule for the same pattern, into `self`, as Vault's
    /// `NewACL` does: a deny on either side leaves only the deny;
    /// otherwise capabilities are unioned, parameter rules merged
    /// ([`ParameterRules::merge`]) and, for each wrapping TTL bound, the
    /// lesser of the two set values kept ("preferring minimum lifetimes",
    /// `vault/acl.go`).
    pub fn merge(&mut self, other: &PathRule) {
        if self.capabilities.is_deny() {
            return;
        }
        if other.capabilities.is_deny() {
            *self = Self::deny(self.pattern.clone());
            return;
        }
        self.capabilities = self.capabilities.union(other.capabilities);
        self.min_wrapping_ttl = lesser(self.min_wrapping_ttl, other.min_wrapping_ttl);
        self.max_wrapping_ttl = lesser(self.max_wrapping_ttl, other.max_wrapping_ttl);
        self.parameters.merge(&other.parameters);
    }
}

fn lesser(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(caps: Capabilities) -> PathRule {
        PathRule {
            capabilities: caps,
            ..PathRule::new(PathPattern::parse("a/*").expect("pattern"))
        }
    }

    #[test]
    fn merge_unions_and_deny_wins_either_way() {
        let mut r = rule(Capabilities::READ);
        r.merge(&rule(Capabilities::LIST));
        assert_eq!(r.capabilities, Capabilities::READ | Capabilities::LIST);

        let mut withparams = rule(Capabilities::READ);
        withparams.parameters.required.push("x".into());
        withparams.merge(&rule(Capabilities::DENY));
        assert_eq!(withparams, rule(Capabilities::DENY));

        let mut d = rule(Capabilities::DENY);
        d.merge(&rule(Capabilities::ALL));
        assert_eq!(d, rule(Capabilities::DENY));
    }

    #[test]
    fn merge_keeps_the_lesser_wrapping_bounds() {
        let s = Duration::from_secs;
        let mut a = rule(Capabilities::READ);
        a.min_wrapping_ttl = Some(s(60));
        a.max_wrapping_ttl = Some(s(3600));
        let mut b = rule(Capabilities::READ);
        b.min_wrapping_ttl = Some(s(30));
        a.merge(&b);
        assert_eq!(a.min_wrapping_ttl, Some(s(30)));
        assert_eq!(a.max_wrapping_ttl, Some(s(3600)));
    }
}
