use proptest::prelude::*;

use super::*;

fn rec(id: &str, target: Target, issued_at_ms: u64) -> Revocation {
    Revocation {
        id: id.into(),
        kind: Kind::Revoke,
        target,
        reason: "test".into(),
        issued_at_ms,
        expires_ms: issued_at_ms + 60_000,
        lifted: false,
    }
}

fn token<'a>(accessor: &'a str, identity: &'a str, issued_at_ms: u64) -> Credential<'a> {
    Credential {
        accessor: Some(accessor),
        identity: Some(identity),
        role: Some(("auth/jwt/", "workload")),
        issued_at_ms,
        ..Credential::default()
    }
}

#[test]
fn exact_targets_kill_what_was_issued_before_and_spare_what_came_after() {
    let mut f = Filter::new();
    assert_eq!(
        f.insert(rec("r1", Target::Accessor("acc-1".into()), 1_000)),
        Applied::New
    );
    assert_eq!(
        f.insert(rec("r1", Target::Accessor("acc-1".into()), 1_000)),
        Applied::Known
    );
    assert_eq!(f.len(), 1);
    let hit = f.revoked(&token("acc-1", "x", 900)).map(|r| r.id.as_str());
    assert_eq!(hit, Some("r1"));
    assert_eq!(
        f.revoked(&token("acc-1", "x", 1_000))
            .map(|r| r.id.as_str()),
        Some("r1")
    );
    assert!(
        f.revoked(&token("acc-1", "x", 1_001)).is_none(),
        "issued after"
    );
    assert!(f.revoked(&token("acc-2", "x", 900)).is_none());

    f.insert(rec("r2", Target::LeaseId("db/creds/app/abc".into()), 1_000));
    f.insert(rec("r3", Target::CertSerial("0a1b".into()), 1_000));
    let lease = Credential {
        lease_id: Some("db/creds/app/abc"),
        issued_at_ms: 10,
        ..Credential::default()
    };
    assert_eq!(f.revoked(&lease).map(|r| r.id.as_str()), Some("r2"));
    let cert = Credential {
        cert_serial: Some("0a1b"),
        issued_at_ms: 10,
        ..Credential::default()
    };
    assert_eq!(f.revoked(&cert).map(|r| r.id.as_str()), Some("r3"));
}

#[test]
fn lease_prefixes_cover_whole_segments_only() {
    let mut f = Filter::new();
    f.insert(rec(
        "p",
        Target::LeasePrefix("database/creds/payments/".into()),
        1_000,
    ));
    let at = |lease: &'static str| Credential {
        lease_id: Some(lease),
        issued_at_ms: 5,
        ..Credential::default()
    };
    assert!(f.revoked(&at("database/creds/payments/x1")).is_some());
    assert!(f.revoked(&at("database/creds/payments/deep/x1")).is_some());
    assert!(f.revoked(&at("database/creds/payments")).is_some());
    assert!(f.revoked(&at("database/creds/payments-2/x1")).is_none());
    assert!(f.revoked(&at("database/creds/pay")).is_none());
    assert!(f.revoked(&at("database/creds")).is_none());
}

#[test]
fn identity_patterns_match_by_segment() {
    let mut f = Filter::new();
    f.insert(rec(
        "payments",
        Target::Identity("spiffe://prod.example/ns/payments/*".into()),
        1_000,
    ));
    f.insert(rec(
        "any-default",
        Target::Identity("spiffe://*.example/ns/*/sa/default".into()),
        1_000,
    ));
    f.insert(rec(
        "billing",
        Target::Identity("approle:billing".into()),
        1_000,
    ));
    let who = |id: &'static str| {
        f.revoked(&token("a", id, 5))
            .map(|r| r.id.clone())
            .unwrap_or_default()
    };
    assert_eq!(who("spiffe://prod.example/ns/payments/sa/api"), "payments");
    assert_eq!(who("spiffe://prod.example/ns/payments/x"), "payments");
    assert_eq!(who("spiffe://prod.example/ns/payments"), "");
    assert_eq!(who("spiffe://prod.example/ns/billing/sa/api"), "");
    assert_eq!(
        who("spiffe://staging.example/ns/billing/sa/default"),
        "any-default"
    );
    assert_eq!(who("spiffe://staging.example/ns/billing/sa/default/x"), "");
    assert_eq!(who("approle:billing"), "billing");
    assert_eq!(who("approle:billing-2"), "");
}

#[test]
fn of_several_matches_every_node_names_the_earliest() {
    let mut f = Filter::new();
    f.insert(rec("b", Target::Accessor("acc".into()), 2_000));
    f.insert(rec("a", Target::Identity("approle:x".into()), 3_000));
    f.insert(rec(
        "c",
        Target::Role {
            mount: "auth/jwt/".into(),
            role: "workload".into(),
        },
        2_000,
    ));
    let hit = f
        .revoked(&token("acc", "approle:x", 100))
        .map(|r| r.id.clone());
    assert_eq!(hit.as_deref(), Some("b"), "earliest issued, then least id");
    // Issued between the records: only the later one applies.
    let hit = f
        .revoked(&token("acc", "approle:x", 2_500))
        .map(|r| r.id.clone());
    assert_eq!(hit.as_deref(), Some("a"));
}

#[test]
fn quarantines_refuse_logins_until_lifted_or_expired() {
    let mut f = Filter::new();
    let mut q = rec(
        "q",
        Target::Identity("spiffe://prod/ns/payments/*".into()),
        1_000,
    );
    q.kind = Kind::Quarantine;
    q.expires_ms = 5_000;
    f.insert(q.clone());
    f.insert(rec(
        "r",
        Target::Identity("spiffe://prod/ns/billing/*".into()),
        1_000,
    ));
    let id = Some("spiffe://prod/ns/payments/sa/api");
    assert_eq!(
        f.login_refused(id, None, 2_000).map(|r| r.id.as_str()),
        Some("q")
    );
    assert!(
        f.login_refused(Some("spiffe://prod/ns/billing/sa/api"), None, 2_000)
            .is_none(),
        "a plain revocation lets new logins in"
    );
    assert!(f.login_refused(id, None, 5_000).is_none(), "expired");
    let mut lifted = q.clone();
    lifted.lifted = true;
    assert_eq!(f.insert(lifted.clone()), Applied::Lifted);
    assert_eq!(f.insert(lifted), Applied::Known);
    assert_eq!(f.insert(q), Applied::Known, "a lift is never undone");
    assert!(f.login_refused(id, None, 2_000).is_none());
    // What it killed stays dead.
    assert!(
        f.revoked(&token("a", "spiffe://prod/ns/payments/sa/api", 999))
            .is_some()
    );
}

#[test]
fn expired_records_are_dropped_with_their_index() {
    let mut f = Filter::new();
    f.insert(rec("a", Target::Identity("x/*/y/*".into()), 0));
    f.insert(rec("b", Target::LeasePrefix("db/creds".into()), 0));
    f.insert(rec("c", Target::Accessor("acc".into()), 100_000));
    assert_eq!(f.expire(60_000), 2);
    assert_eq!(f.len(), 1);
    assert!(f.identities.is_empty(), "{:?}", f.identities);
    assert!(f.lease_prefixes.is_empty());
    assert!(f.get("c").is_some());
    assert_eq!(f.expire(200_000), 1);
    assert!(f.exact.iter().all(HashMap::is_empty) && f.is_empty());
}

// ---- the index agrees with a scan of every record -----------------------

/// Whether `pattern` matches `identity`, by the documented rule, checked
/// segment by segment with no index.
fn pattern_matches(pattern: &str, identity: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let i: Vec<&str> = identity.split('/').collect();
    let pairwise = |n: usize| p[..n].iter().zip(&i[..n]).all(|(p, i)| glob_match(p, i));
    match p.split_last() {
        Some((&"*", rest)) if !rest.is_empty() => i.len() > rest.len() && pairwise(rest.len()),
        _ => p.len() == i.len() && pairwise(p.len()),
    }
}

fn scan<'f>(records: &'f [Revocation], c: &Credential<'_>) -> Option<&'f Revocation> {
    records
        .iter()
        .filter(|r| c.issued_at_ms <= r.issued_at_ms)
        .filter(|r| match &r.target {
            Target::Accessor(a) => c.accessor == Some(a.as_str()),
            Target::LeaseId(l) => c.lease_id == Some(l.as_str()),
            Target::CertSerial(s) => c.cert_serial == Some(s.as_str()),
            Target::LeasePrefix(p) => c.lease_id.is_some_and(|l| {
                let (p, l) = (prefix_segments(p), prefix_segments(l));
                l.len() >= p.len() && l[..p.len()] == p[..]
            }),
            Target::Identity(p) => c.identity.is_some_and(|i| pattern_matches(p, i)),
            Target::Role { mount, role } => c.role == Some((mount.as_str(), role.as_str())),
        })
        .min_by(|a, b| (a.issued_at_ms, &a.id).cmp(&(b.issued_at_ms, &b.id)))
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("ab".to_owned()),
        Just(String::new()),
    ]
}

fn pattern_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => segment(),
        1 => Just("*".to_owned()),
        1 => Just("a*".to_owned()),
        1 => Just("*b".to_owned()),
    ]
}

fn path(seg: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    prop::collection::vec(seg, 1..4).prop_map(|s| s.join("/"))
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        segment().prop_map(Target::Accessor),
        path(segment()).prop_map(Target::LeaseId),
        path(segment()).prop_map(Target::LeasePrefix),
        path(pattern_segment()).prop_map(Target::Identity),
        (segment(), segment()).prop_map(|(mount, role)| Target::Role { mount, role }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_index_finds_exactly_what_a_scan_finds(
        targets in prop::collection::vec((target(), 0u64..4), 1..24),
        probes in prop::collection::vec((segment(), path(segment()), path(segment()), (segment(), segment()), 0u64..5), 1..24),
        expire_at in 0u64..6,
    ) {
        let mut f = Filter::new();
        let mut records = Vec::new();
        for (i, (t, at)) in targets.into_iter().enumerate() {
            let r = Revocation {
                id: format!("r{i:02}"),
                kind: Kind::Revoke,
                target: t,
                reason: String::new(),
                issued_at_ms: at,
                expires_ms: at + 2,
                lifted: false,
            };
            f.insert(r.clone());
            records.push(r);
        }
        let check = |f: &Filter, records: &[Revocation]| -> Result<(), TestCaseError> {
            for (acc, lease, ident, (m, r), at) in &probes {
                let c = Credential {
                    accessor: Some(acc),
                    lease_id: Some(lease),
                    cert_serial: None,
                    identity: Some(ident),
                    role: Some((m, r)),
                    issued_at_ms: *at,
                };
                prop_assert_eq!(
                    f.revoked(&c).map(|r| &r.id),
                    scan(records, &c).map(|r| &r.id),
                    "probe {:?}", c
                );
            }
            Ok(())
        };
        check(&f, &records)?;
        // Expiry removes records from every index, and only those.
        f.expire(expire_at);
        records.retain(|r| r.expires_ms > expire_at);
        prop_assert_eq!(f.len(), records.len());
        check(&f, &records)?;
    }
}
