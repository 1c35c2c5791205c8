//! Replicas exchanging ops and states: delivery order, duplicates, gaps,
//! conflicts, malformed input. The CRDT laws are property-tested in
//! `tests/crdt_laws.rs`.

use std::collections::BTreeMap;

use crate::hlc::Hlc;
use crate::model::{
    Key, ModelError, MountConfig, PolicyDoc, RevocationKind, RevocationRecord, RevocationTarget,
};
use crate::replica::{Answer, Limits, Parts, ReplicaError};
use crate::{CellId, Entry, Replica, Value};

fn cell(id: &str) -> CellId {
    CellId::new(id).expect("cell id")
}

fn replica(id: &str) -> Replica {
    Replica::new(cell(id), Limits::default())
}

fn policy(name: &str) -> Key {
    Key::Policy { name: name.into() }
}

fn doc(text: &str) -> Option<Value> {
    Some(Value::Policy(PolicyDoc { text: text.into() }))
}

fn text_of(r: &Replica, name: &str) -> Option<String> {
    match r.state().get(&policy(name)) {
        Some(Value::Policy(p)) => Some(p.text),
        _ => None,
    }
}

/// Sends `to` everything `from` has that it lacks (ops, or the whole state).
fn sync(from: &Replica, to: &mut Replica, now: u64) {
    loop {
        match from.answer(to.applied(), 64) {
            Answer::UpToDate => return,
            Answer::Entries(e) => {
                to.receive(e, now).expect("receive");
            }
            Answer::Snapshot(s) => to.merge_snapshot(*s, now).expect("merge"),
        }
    }
}

fn entries_of(r: &Replica) -> Vec<Entry> {
    match r.answer(&Default::default(), usize::MAX) {
        Answer::Entries(e) => e,
        other => panic!("expected entries, got {other:?}"),
    }
}

fn revocation(id: &str, expires_ms: u64) -> (Key, Option<Value>) {
    (
        Key::Revocation { id: id.into() },
        Some(Value::Revocation(RevocationRecord {
            kind: RevocationKind::Revoke,
            target: RevocationTarget::Identity("spiffe://prod.example/ns/payments/*".into()),
            reason: "leaked".into(),
            issued_at: Hlc::new(1_000, 0),
            expires_ms,
            lifted: false,
        })),
    )
}

#[test]
fn a_write_in_one_cell_reaches_another_through_its_ops() {
    let mut a = replica("eu-west");
    let mut b = replica("us-east");
    let e = a
        .originate(policy("payments"), doc("path \"kv/*\" {}"), 1_000)
        .expect("write");
    assert_eq!((e.origin.as_str(), e.seq), ("eu-west", 1));
    let changes = a.take_changes();
    assert!(changes.keys.contains(&policy("payments")));
    assert_eq!(changes.logged, vec![(cell("eu-west"), 1)]);

    sync(&a, &mut b, 1_001);
    assert_eq!(text_of(&b, "payments").as_deref(), Some("path \"kv/*\" {}"));
    assert_eq!(b.applied().get(&cell("eu-west")), 1);
    assert_eq!(a.digest(), b.digest());
    assert!(
        b.hlc() >= Hlc::new(1_000, 0),
        "the receiver's clock follows"
    );
}

#[test]
fn concurrent_writes_keep_both_values_rank_them_alike_and_a_later_write_resolves_them() {
    let mut a = replica("eu-west");
    let mut b = replica("us-east");
    a.originate(policy("p"), doc("from a"), 1_000).expect("a");
    b.originate(policy("p"), doc("from b"), 2_000).expect("b");
    sync(&a, &mut b, 2_001);
    sync(&b, &mut a, 2_001);

    for r in [&a, &b] {
        assert_eq!(text_of(r, "p").as_deref(), Some("from b"), "later wins");
        let c = r.state().conflicts();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].winner.origin, cell("us-east"));
        assert_eq!(c[0].losers.len(), 1);
        assert_eq!(c[0].losers[0].value, doc("from a"));
    }
    assert_eq!(a.digest(), b.digest());

    // An operator, in either cell, writes the policy again: it has seen both.
    a.originate(policy("p"), doc("merged"), 3_000)
        .expect("resolve");
    sync(&a, &mut b, 3_001);
    for r in [&a, &b] {
        assert!(r.state().conflicts().is_empty());
        assert_eq!(text_of(r, "p").as_deref(), Some("merged"));
    }
}

#[test]
fn equal_timestamps_are_ranked_by_cell() {
    let mut a = replica("eu-west");
    let mut b = replica("us-east");
    a.originate(policy("p"), doc("a"), 5_000).expect("a");
    b.originate(policy("p"), doc("b"), 5_000).expect("b");
    sync(&a, &mut b, 5_000);
    sync(&b, &mut a, 5_000);
    assert_eq!(text_of(&a, "p").as_deref(), Some("b"));
    assert_eq!(text_of(&b, "p").as_deref(), Some("b"));
}

#[test]
fn cells_writing_the_same_value_concurrently_agree_and_are_no_conflict() {
    // Two cells commit one revocation record, each having heard it from the
    // mesh before sync brought the other's op.
    let mut a = replica("eu-west");
    let mut b = replica("us-east");
    let (key, value) = revocation("rev-1", 9_000_000);
    a.originate(key.clone(), value.clone(), 1_000).expect("a");
    b.originate(key.clone(), value.clone(), 1_001).expect("b");
    sync(&a, &mut b, 1_002);
    sync(&b, &mut a, 1_002);
    for r in [&a, &b] {
        assert_eq!(r.state().values(&key).len(), 2, "both ops are kept");
        assert_eq!(r.state().get(&key), value);
        assert!(r.state().conflicts().is_empty());
    }
    assert_eq!(a.digest(), b.digest());
    // A value that differs still is one.
    let (_, mut other) = revocation("rev-1", 9_000_000);
    if let Some(Value::Revocation(rec)) = &mut other {
        rec.lifted = true;
    }
    let mut c = replica("ap-south");
    c.originate(key.clone(), other, 1_003).expect("c");
    sync(&c, &mut a, 1_004);
    assert_eq!(a.state().conflicts().len(), 1);
}

#[test]
fn a_delete_racing_an_update_is_a_conflict_not_a_silent_win() {
    let mut a = replica("eu-west");
    let mut b = replica("us-east");
    a.originate(policy("p"), doc("v1"), 1_000).expect("write");
    sync(&a, &mut b, 1_000);
    a.originate(policy("p"), doc("v2"), 2_000).expect("update");
    b.originate(policy("p"), None, 3_000).expect("delete");
    sync(&a, &mut b, 3_000);
    sync(&b, &mut a, 3_000);
    for r in [&a, &b] {
        assert_eq!(text_of(r, "p"), None, "the later delete is in force");
        let c = r.state().conflicts();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].winner.value, None);
        assert_eq!(c[0].losers[0].value, doc("v2"));
    }
}

#[test]
fn ops_that_arrive_early_wait_for_the_ones_before_them() {
    let mut a = replica("eu-west");
    for (i, name) in ["one", "two", "three"].into_iter().enumerate() {
        a.originate(policy(name), doc(name), 1_000 + i as u64)
            .expect("write");
    }
    let all = entries_of(&a);
    let mut b = replica("us-east");

    let r = b
        .receive(vec![all[2].clone(), all[1].clone()], 2_000)
        .expect("early");
    assert_eq!((r.applied, r.buffered), (0, 2));
    assert_eq!(b.pending(), 2);
    assert_eq!(text_of(&b, "three"), None, "not applied before op 1");

    let r = b.receive(vec![all[0].clone()], 2_000).expect("first");
    assert_eq!(r.applied, 3);
    assert_eq!(b.pending(), 0);
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn a_replayed_stream_changes_nothing() {
    let mut a = replica("eu-west");
    a.originate(policy("p"), doc("v"), 1_000).expect("write");
    a.originate(policy("q"), doc("w"), 1_001).expect("write");
    let mut b = replica("us-east");
    b.receive(entries_of(&a), 2_000).expect("first");
    let before = b.digest();
    b.take_changes();

    let r = b.receive(entries_of(&a), 2_000).expect("replay");
    assert_eq!((r.applied, r.duplicates), (0, 2));
    assert_eq!(b.digest(), before);
    assert!(b.take_changes().is_empty(), "nothing to persist");
}

#[test]
fn a_malformed_batch_is_refused_whole() {
    let mut a = replica("eu-west");
    a.originate(policy("p"), doc("v"), 1_000).expect("write");
    a.originate(policy("q"), doc("w"), 1_001).expect("write");
    let good = entries_of(&a);

    let mut cases: Vec<(&str, Entry)> = Vec::new();
    let mut e = good[1].clone();
    e.put.stamped.origin = cell("us-east");
    cases.push(("names another origin", e));
    let mut e = good[1].clone();
    e.seq = 0;
    cases.push(("seq 0", e));
    let mut e = good[1].clone();
    e.put.clock = Default::default();
    cases.push(("no dot of its origin", e));
    let mut e = good[1].clone();
    e.put.stamped.value = Some(Value::Mount(MountConfig {
        engine: "kv".into(),
        description: String::new(),
        default_lease_ttl_s: 0,
        max_lease_ttl_s: 0,
        options: BTreeMap::new(),
    }));
    cases.push(("a mount under a policy key", e));
    let mut e = good[1].clone();
    e.put.key = policy("");
    cases.push(("an empty name", e));

    for (what, bad) in cases {
        let mut b = replica("us-east");
        let err = b
            .receive(vec![good[0].clone(), bad], 2_000)
            .expect_err(what);
        assert!(
            matches!(
                err,
                ReplicaError::Malformed { .. } | ReplicaError::Invalid { .. }
            ),
            "{what}: {err}"
        );
        assert_eq!(
            b.applied().get(&cell("eu-west")),
            0,
            "{what}: nothing applied"
        );
        assert!(b.state().is_empty(), "{what}");
        assert!(b.take_changes().is_empty(), "{what}");
    }

    let mut b = replica("us-east");
    let err = b
        .receive(
            vec![{
                let mut e = good[0].clone();
                e.put.key = Key::Revocation { id: "r".into() };
                e.put.stamped.value = None;
                e
            }],
            2_000,
        )
        .expect_err("revocation delete");
    assert!(matches!(
        err,
        ReplicaError::Invalid {
            error: ModelError::RevocationDelete,
            ..
        }
    ));
}

#[test]
fn a_peer_behind_the_logs_gets_the_whole_state_and_then_ops_again() {
    let limits = Limits {
        log_per_origin: 5,
        ..Limits::default()
    };
    let mut a = Replica::new(cell("eu-west"), limits);
    for i in 0..20u64 {
        a.originate(policy(&format!("p{i}")), doc("v"), 1_000 + i)
            .expect("write");
    }
    let floors: Vec<_> = a.floors().collect();
    assert_eq!(floors, vec![(&cell("eu-west"), 16)]);
    let dropped = a.take_changes().dropped;
    assert_eq!(dropped.len(), 15);
    assert_eq!(dropped[0], (cell("eu-west"), 1));

    let mut b = replica("us-east");
    assert!(matches!(a.answer(b.applied(), 100), Answer::Snapshot(_)));
    sync(&a, &mut b, 2_000);
    assert_eq!(a.digest(), b.digest());
    assert_eq!(b.state().len(), 20);
    assert_eq!(b.floors().collect::<Vec<_>>(), vec![(&cell("eu-west"), 21)]);

    a.originate(policy("p20"), doc("v"), 3_000).expect("write");
    match a.answer(b.applied(), 100) {
        Answer::Entries(e) => assert_eq!(e.len(), 1),
        other => panic!("expected one op, got {other:?}"),
    }
    sync(&a, &mut b, 3_000);
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn answers_are_bounded_and_a_peer_asks_again() {
    let mut a = replica("eu-west");
    for i in 0..10u64 {
        a.originate(policy(&format!("p{i}")), doc("v"), 1_000 + i)
            .expect("write");
    }
    let b = replica("us-east");
    match a.answer(b.applied(), 4) {
        Answer::Entries(e) => {
            assert_eq!(
                e.iter().map(|e| e.seq).collect::<Vec<_>>(),
                vec![1, 2, 3, 4]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_cell_restored_from_an_old_snapshot_takes_back_its_own_later_ops() {
    let mut a = replica("eu-west");
    for i in 0..5u64 {
        a.originate(policy(&format!("p{i}")), doc("v"), 1_000 + i)
            .expect("write");
    }
    let mut b = replica("us-east");
    sync(&a, &mut b, 2_000);

    // `a` comes back from a backup taken after its second op.
    let mut old = replica("eu-west");
    for e in entries_of(&a).into_iter().take(2) {
        old.receive(vec![e], 1_500).expect("replay");
    }
    let mut a = Replica::restore(
        cell("eu-west"),
        Parts {
            state: old.state().clone(),
            applied: old.applied().clone(),
            log: entries_of(&old),
            hlc: old.hlc(),
        },
        Limits::default(),
    );
    assert_eq!(a.applied().get(&cell("eu-west")), 2);

    sync(&b, &mut a, 3_000);
    assert_eq!(a.applied().get(&cell("eu-west")), 5);
    let next = a.originate(policy("p5"), doc("v"), 3_000).expect("write");
    assert_eq!(next.seq, 6, "no seq is issued twice");
    sync(&a, &mut b, 3_000);
    assert_eq!(a.digest(), b.digest());
    assert_eq!(b.state().len(), 6);
}

#[test]
fn ops_are_relayed_to_a_cell_that_cannot_reach_their_origin() {
    let mut a = replica("eu-west");
    let mut b = replica("us-east");
    let mut c = replica("ap-south");
    a.originate(policy("from-a"), doc("a"), 1_000)
        .expect("write");
    c.originate(policy("from-c"), doc("c"), 1_000)
        .expect("write");
    // a ↔ b ↔ c; a and c never talk.
    sync(&a, &mut b, 1_001);
    sync(&c, &mut b, 1_001);
    sync(&b, &mut a, 1_002);
    sync(&b, &mut c, 1_002);
    assert_eq!(a.digest(), c.digest());
    assert_eq!(text_of(&c, "from-a").as_deref(), Some("a"));
    assert_eq!(text_of(&a, "from-c").as_deref(), Some("c"));
}

#[test]
fn a_divergence_is_seen_in_the_digests_and_repaired_by_merging_states() {
    let mut a = replica("eu-west");
    a.originate(policy("p"), doc("v"), 1_000).expect("write");
    a.originate(policy("q"), doc("w"), 1_001).expect("write");
    let mut b = replica("us-east");
    sync(&a, &mut b, 1_002);

    // b lost a register (say, a bad restore) but believes it applied everything.
    let mut damaged = b.state().clone();
    let mut partial = crate::ControlState::new();
    for (k, r) in damaged.registers() {
        if *k != policy("q") {
            partial.merge_register(k.clone(), r.clone());
        }
    }
    damaged = partial;
    let mut b = Replica::restore(
        cell("us-east"),
        Parts {
            state: damaged,
            applied: b.applied().clone(),
            log: entries_of(&b),
            hlc: b.hlc(),
        },
        Limits::default(),
    );
    assert!(matches!(a.answer(b.applied(), 10), Answer::UpToDate));
    assert!(b.diverged_from(&a.digest()));
    assert!(a.diverged_from(&b.digest()));

    b.merge_snapshot(a.snapshot(), 2_000).expect("repair");
    assert_eq!(a.digest(), b.digest());
    assert!(!b.diverged_from(&a.digest()));
    assert!(b.take_changes().keys.contains(&policy("q")));
}

#[test]
fn expired_revocations_are_collected_and_never_come_back() {
    let mut a = replica("eu-west");
    let (key, value) = revocation("r1", 10_000);
    a.originate(key.clone(), value, 2_000).expect("revoke");
    let ops = entries_of(&a);
    let mut b = replica("us-east");
    b.receive(ops.clone(), 3_000).expect("receive");
    assert!(b.state().get(&key).is_some());

    b.take_changes();
    b.collect_garbage(10_000);
    assert!(b.state().get(&key).is_none());
    assert!(
        b.take_changes().keys.contains(&key),
        "the deletion is persisted"
    );

    // A late copy of the op, or a peer's state from before the expiry, does not revive it.
    let mut c = replica("ap-south");
    c.receive(ops, 11_000).expect("late");
    assert!(c.state().is_empty());
    assert_eq!(
        c.applied().get(&cell("eu-west")),
        1,
        "still counted as applied"
    );
    b.merge_snapshot(a.snapshot(), 11_000).expect("merge");
    assert!(b.state().is_empty());

    let (key, value) = revocation("r2", 10_000);
    assert!(matches!(
        a.originate(key, value, 10_000),
        Err(ReplicaError::Expired)
    ));
}

#[test]
fn the_early_op_buffer_is_bounded() {
    let mut a = replica("eu-west");
    for i in 0..6u64 {
        a.originate(policy(&format!("p{i}")), doc("v"), 1_000 + i)
            .expect("write");
    }
    let ops = entries_of(&a);
    let mut b = Replica::new(
        cell("us-east"),
        Limits {
            pending_per_origin: 3,
            ..Limits::default()
        },
    );
    let r = b.receive(ops[1..].to_vec(), 2_000).expect("early");
    assert_eq!((r.buffered, r.overflowed), (3, 2));
    sync(&a, &mut b, 2_000);
    assert_eq!(a.digest(), b.digest(), "what overflowed is asked for again");
}

#[test]
fn a_peer_clock_far_ahead_is_reported_and_its_op_still_applied() {
    let mut a = replica("eu-west");
    a.originate(policy("p"), doc("v"), 10_000_000)
        .expect("write");
    let mut b = replica("us-east");
    let r = b.receive(entries_of(&a), 1_000).expect("receive");
    assert_eq!(r.applied, 1);
    assert_eq!(r.clock_warnings.len(), 1);
    assert_eq!(r.clock_warnings[0].0, cell("eu-west"));
    assert!(b.hlc() < Hlc::new(10_000_000, 0), "not followed");
}

#[test]
fn a_replica_restored_from_its_parts_is_the_same_replica() {
    let mut a = replica("eu-west");
    let mut b = replica("us-east");
    b.originate(policy("b"), doc("v"), 900).expect("write");
    sync(&b, &mut a, 950);
    for i in 0..4u64 {
        a.originate(policy(&format!("p{i}")), doc("v"), 1_000 + i)
            .expect("write");
    }
    let restored = Replica::restore(
        cell("eu-west"),
        Parts {
            state: a.state().clone(),
            applied: a.applied().clone(),
            log: entries_of(&a),
            hlc: a.hlc(),
        },
        Limits::default(),
    );
    assert_eq!(restored.digest(), a.digest());
    assert_eq!(restored.hlc(), a.hlc());
    assert_eq!(
        restored.answer(&Default::default(), 100),
        a.answer(&Default::default(), 100)
    );
}
