//! Properties of the parser and the matcher (STYLE.md: proptest for
//! parsers and policy matching).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::logical::{Data, Operation};

const OPS: [Operation; 6] = [
    Operation::Read,
    Operation::List,
    Operation::Create,
    Operation::Update,
    Operation::Patch,
    Operation::Delete,
];

/// Few distinct segments, so that generated patterns and paths collide.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("ab".to_owned()),
        Just("foo".to_owned()),
    ]
}

fn pattern() -> impl Strategy<Value = PathPattern> {
    (
        prop::collection::vec(prop_oneof![3 => segment(), 1 => Just("+".to_owned())], 1..5),
        0..4u8,
    )
        .prop_filter_map("valid pattern", |(segs, tail)| {
            let mut text = segs.join("/");
            match tail {
                1 => text.push('*'),
                2 => text.push_str("/*"),
                3 => text.push_str("/a*"),
                _ => {}
            }
            PathPattern::parse(&text).ok()
        })
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..6).prop_map(|s| s.join("/"))
}

fn capabilities() -> impl Strategy<Value = Capabilities> {
    prop::collection::vec(0..8usize, 0..4).prop_map(|picks| {
        let all = [
            Capabilities::DENY,
            Capabilities::CREATE,
            Capabilities::READ,
            Capabilities::UPDATE,
            Capabilities::DELETE,
            Capabilities::LIST,
            Capabilities::SUDO,
            Capabilities::PATCH,
        ];
        picks
            .into_iter()
            .fold(Capabilities::NONE, |c, i| c.union(all[i]))
    })
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z*\"\\\\é ,]{0,6}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
    ]
}

fn parameter_map() -> impl Strategy<Value = BTreeMap<String, Vec<Value>>> {
    prop::collection::btree_map(
        prop_oneof![Just("*".to_owned()), "[a-z0-9_\"\\\\é -]{1,6}"],
        prop::collection::vec(scalar(), 0..3),
        0..3,
    )
}

fn ttl() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        Just(None),
        (1..100_000u64).prop_map(|s| Some(Duration::from_secs(s))),
        (1..10_000_000_000u64).prop_map(|n| Some(Duration::from_nanos(n))),
    ]
}

fn rule() -> impl Strategy<Value = PathRule> {
    (
        pattern(),
        capabilities(),
        parameter_map(),
        parameter_map(),
        prop::collection::btree_set("[a-z_]{1,5}", 0..3),
        ttl(),
        ttl(),
    )
        .prop_map(|(pattern, caps, allowed, denied, required, a, b)| {
            if caps.is_deny() {
                return PathRule::deny(pattern);
            }
            let (min, max) = match (a, b) {
                (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
                other => other,
            };
            PathRule {
                pattern,
                capabilities: caps,
                parameters: ParameterRules {
                    allowed,
                    denied,
                    required: required.into_iter().collect(),
                },
                min_wrapping_ttl: min,
                max_wrapping_ttl: max,
            }
        })
}

/// A policy as the parser would produce it: one rule per pattern.
fn policy() -> impl Strategy<Value = Policy> {
    prop::collection::vec(rule(), 0..6).prop_map(|rules| {
        let mut unique: Vec<PathRule> = Vec::new();
        for r in rules {
            if !unique.iter().any(|u| u.pattern == r.pattern) {
                unique.push(r);
            }
        }
        Policy {
            name: "generated".to_owned(),
            raw: String::new(),
            rules: unique,
        }
    })
}

fn policies() -> impl Strategy<Value = Vec<Arc<Policy>>> {
    prop::collection::vec(policy().prop_map(Arc::new), 0..4)
}

fn data() -> impl Strategy<Value = Data> {
    prop::collection::btree_map("[a-z*]{1,3}", scalar(), 0..3).prop_map(|m| m.into_iter().collect())
}

fn wrap() -> impl Strategy<Value = Option<Duration>> {
    prop::option::of((0..200_000u64).prop_map(Duration::from_secs))
}

proptest! {
    #[test]
    fn matcher_is_total_deterministic_and_picks_the_top_priority_match(
        policies in policies(),
        path in prop_oneof![path(), path().prop_map(|p| p + "/"), any::<String>()],
        data in data(),
        wrap in wrap(),
    ) {
        let acl = Acl::new(&policies);
        let again = Acl::new(&policies);
        prop_assert_eq!(acl.capabilities(&path), again.capabilities(&path));
        prop_assert_eq!(acl.capability_names(&path), again.capability_names(&path));
        for op in OPS {
            prop_assert_eq!(
                acl.authorize(op, &path, &data, wrap),
                again.authorize(op, &path, &data, wrap)
            );
        }
        // The indexes agree with a scan of every rule.
        let trimmed = path.trim_start_matches('/');
        let expected = acl
            .rules()
            .iter()
            .filter(|r| r.pattern.matches(trimmed))
            .max_by(|a, b| a.pattern.cmp_priority(&b.pattern))
            .map(|r| r.pattern.as_str());
        let got = acl.governing_rule(Operation::Read, &path).map(|r| r.pattern.as_str());
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn deny_on_the_governing_pattern_always_wins(
        mut policies in policies(),
        path in path(),
        data in data(),
        wrap in wrap(),
    ) {
        let acl = Acl::new(&policies);
        let target = match acl.governing_rule(Operation::Read, &path) {
            Some(rule) => rule.pattern.clone(),
            None => PathPattern::parse(&path).expect("a path is an exact pattern"),
        };
        policies.push(Arc::new(Policy {
            name: "deny".to_owned(),
            raw: String::new(),
            rules: vec![PathRule::deny(target)],
        }));
        let acl = Acl::new(&policies);
        prop_assert_eq!(acl.capabilities(&path), Capabilities::DENY);
        prop_assert_eq!(acl.capability_names(&path), vec!["deny"]);
        for op in OPS {
            let denied = acl.authorize(op, &path, &data, wrap);
            prop_assert_eq!(
                denied.map_err(|d| d.reason),
                Err(DenyReason::ExplicitDeny)
            );
        }
    }

    #[test]
    fn rendering_round_trips(policy in policy()) {
        let hcl = policy.to_hcl();
        let back = Policy::parse("generated", &hcl);
        prop_assert!(back.is_ok(), "{hcl}\n{back:?}");
        prop_assert_eq!(&back.expect("checked").rules, &policy.rules, "{}", hcl);
        let json = policy.to_json();
        let back = Policy::parse("generated", &json);
        prop_assert!(back.is_ok(), "{json}\n{back:?}");
        prop_assert_eq!(&back.expect("checked").rules, &policy.rules, "{}", json);
        // The JSON form is JSON.
        prop_assert!(serde_json::from_str::<Value>(&json).is_ok());
    }

    #[test]
    fn parser_never_panics(text in any::<String>()) {
        let _ = Policy::parse("x", &text);
    }

    #[test]
    fn parser_never_panics_on_near_policies(
        text in "[a-z_\"{}\\[\\]=,:#/*+ \n\\\\.0-9-]{0,80}",
        prefix in prop_oneof![Just(""), Just("path \"a/*\" {"), Just("{\"path\": {")],
    ) {
        let _ = Policy::parse("x", &format!("{prefix}{text}"));
    }
}
