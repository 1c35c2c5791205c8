//! Property tests of the control plane's CRDTs.
//!
//! Random histories of three cells (writes, deletes, revocations, op syncs,
//! whole-state syncs) produce replica states; on those:
//! - merging states (one `MVReg` per key, and the version vectors) is
//!   commutative, associative and idempotent, and dropping expired
//!   revocations commutes with it;
//! - delivering every op to a fresh replica in any order, any number of
//!   times, in any batches, with whole states merged in between, ends in the
//!   same state as delivering them once in order.

use std::collections::BTreeMap;

use crdts::{CvRDT, VClock};
use proptest::prelude::*;
use sigil_control_plane::model::{
    MountConfig, PolicyDoc, RevocationKind, RevocationRecord, RevocationTarget,
};
use sigil_control_plane::replica::Limits;
use sigil_control_plane::{Answer, CellId, ControlState, Entry, Hlc, Key, Replica, Value};

const CELLS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
/// Revocation `short` expires within the histories below; `long` does not.
const SHORT_EXPIRY: u64 = 1_030;
const LONG_EXPIRY: u64 = u64::MAX / 2;

#[derive(Clone, Debug)]
enum Action {
    Write { cell: usize, key: usize, value: u8 },
    Sync { from: usize, to: usize },
    SnapshotSync { from: usize, to: usize },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0..3usize, 0..5usize, 0..4u8)
            .prop_map(|(cell, key, value)| Action::Write { cell, key, value }),
        2 => (0..3usize, 0..3usize).prop_map(|(from, to)| Action::Sync { from, to }),
        1 => (0..3usize, 0..3usize).prop_map(|(from, to)| Action::SnapshotSync { from, to }),
    ]
}

fn key(i: usize) -> Key {
    match i {
        0 => Key::Policy { name: "a".into() },
        1 => Key::Policy { name: "b".into() },
        2 => Key::Mount {
            table: sigil_control_plane::model::MountTable::Secrets,
            path: "db/".into(),
        },
        3 => Key::Revocation { id: "short".into() },
        _ => Key::Revocation { id: "long".into() },
    }
}

/// A value for key `k`; `v == 0` deletes (except revocations, which cannot be deleted).
fn value(k: usize, v: u8) -> Option<Value> {
    match k {
        0 | 1 if v == 0 => None,
        0 | 1 => Some(Value::Policy(PolicyDoc {
            text: format!("path \"kv/{v}/*\" {{}}"),
        })),
        2 if v == 0 => None,
        2 => Some(Value::Mount(MountConfig {
            engine: "database".into(),
            description: format!("v{v}"),
            default_lease_ttl_s: u64::from(v) * 60,
            max_lease_ttl_s: 3_600,
            options: BTreeMap::new(),
        })),
        _ => Some(Value::Revocation(RevocationRecord {
            kind: if v.is_multiple_of(2) {
                RevocationKind::Revoke
            } else {
                RevocationKind::Quarantine
            },
            target: RevocationTarget::Identity("approle:billing".into()),
            reason: format!("incident {v}"),
            issued_at: Hlc::new(900, 0),
            expires_ms: if k == 3 { SHORT_EXPIRY } else { LONG_EXPIRY },
            lifted: v == 3,
        })),
    }
}

fn sync(from: &Replica, to: &mut Replica, now: u64) {
    loop {
        match from.answer(to.applied(), 7) {
            Answer::UpToDate => return,
            Answer::Entries(e) => {
                to.receive(e, now).expect("valid ops");
            }
            Answer::Snapshot(s) => to.merge_snapshot(*s, now).expect("valid state"),
        }
    }
}

/// Runs a history; returns the three replicas and the time it ended at.
/// `log` bounds each op log, so that some syncs need whole states.
fn run(actions: &[Action], log: usize) -> (Vec<Replica>, u64) {
    let limits = Limits {
        log_per_origin: log,
        ..Limits::default()
    };
    let mut rs: Vec<Replica> = CELLS
        .iter()
        .map(|c| Replica::new(CellId::new(*c).expect("cell"), limits))
        .collect();
    let mut now = 1_000;
    for a in actions {
        now += 1;
        match *a {
            Action::Write {
                cell,
                key: k,
                value: v,
            } => {
                // Writing an expired revocation is refused; the history goes on.
                let _ = rs[cell].originate(key(k), value(k, v), now);
            }
            Action::Sync { from, to } | Action::SnapshotSync { from, to } if from == to => {}
            Action::Sync { from, to } => {
                let src = rs[from].clone();
                sync(&src, &mut rs[to], now);
            }
            Action::SnapshotSync { from, to } => {
                let snap = rs[from].snapshot();
                rs[to].merge_snapshot(snap, now).expect("valid state");
            }
        }
    }
    (rs, now)
}

fn merged(a: &ControlState, b: &ControlState) -> ControlState {
    let mut m = a.clone();
    m.merge(b.clone());
    m
}

fn merged_vv(a: &VClock<CellId>, b: &VClock<CellId>) -> VClock<CellId> {
    let mut m = a.clone();
    m.merge(b.clone());
    m
}

/// A seeded shuffle (SplitMix64), so that proptest's seed decides the order.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merging_states_is_commutative_associative_and_idempotent(
        actions in prop::collection::vec(action(), 0..40),
        log in 2..20usize,
    ) {
        let (rs, _) = run(&actions, log);
        let (a, b, c) = (rs[0].state(), rs[1].state(), rs[2].state());

        prop_assert_eq!(merged(a, b), merged(b, a));
        prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
        prop_assert_eq!(&merged(a, a), a);
        prop_assert_eq!(merged(a, b).digest(), merged(b, a).digest());

        let (va, vb, vc) = (rs[0].applied(), rs[1].applied(), rs[2].applied());
        prop_assert_eq!(merged_vv(va, vb), merged_vv(vb, va));
        prop_assert_eq!(merged_vv(&merged_vv(va, vb), vc), merged_vv(va, &merged_vv(vb, vc)));
        prop_assert_eq!(&merged_vv(va, va), va);
    }

    #[test]
    fn dropping_expired_revocations_commutes_with_merging(
        actions in prop::collection::vec(action(), 0..40),
        at in 1_000..1_060u64,
    ) {
        let (rs, _) = run(&actions, 1_000);
        let (a, b) = (rs[0].state(), rs[1].state());
        let mut lhs = merged(a, b);
        lhs.collect_garbage(at);
        let (mut ga, mut gb) = (a.clone(), b.clone());
        ga.collect_garbage(at);
        gb.collect_garbage(at);
        let mut rhs = merged(&ga, &gb);
        rhs.collect_garbage(at);
        prop_assert_eq!(lhs, rhs);
    }

    #[test]
    fn any_order_and_duplication_of_delivery_yields_the_same_replica(
        actions in prop::collection::vec(action(), 1..40),
        seed in any::<u64>(),
        copies in prop::collection::vec(1..4usize, 64),
        cuts in prop::collection::vec(1..6usize, 64),
        snapshot_at in prop::option::of(0..200usize),
    ) {
        let (mut rs, now) = run(&actions, 10_000);
        // Bring the three cells together: each ends with every op.
        for _ in 0..2 {
            for (from, to) in [(0, 1), (1, 2), (2, 0)] {
                let src = rs[from].clone();
                sync(&src, &mut rs[to], now);
            }
        }
        // Replicas drop expired revocations when they run their collection;
        // compare them after all have run it at the same time.
        let mut collected = rs.clone();
        for r in &mut collected {
            r.collect_garbage(now);
        }
        prop_assert_eq!(collected[0].state(), collected[1].state());
        prop_assert_eq!(collected[1].state(), collected[2].state());
        prop_assert_eq!(rs[0].applied(), rs[2].applied());

        // Every op, from its origin's own log (which whole-state syncs never cut).
        let all: Vec<Entry> = rs
            .iter()
            .flat_map(|r| r.log(r.me()).cloned().collect::<Vec<_>>())
            .collect();
        for r in &rs {
            prop_assert_eq!(r.log(r.me()).count() as u64, r.applied().get(r.me()));
        }
        let mut deliveries: Vec<Entry> = all
            .iter()
            .enumerate()
            .flat_map(|(i, e)| std::iter::repeat_n(e.clone(), copies[i % copies.len()]))
            .collect();
        shuffle(&mut deliveries, seed);

        let mut fresh = Replica::new(CellId::new("sa-east").expect("cell"), Limits::default());
        let mut at = 0;
        let mut batch_no = 0;
        while at < deliveries.len() {
            if snapshot_at.is_some_and(|s| s == batch_no) {
                let from = &rs[batch_no % 3];
                fresh.merge_snapshot(from.snapshot(), now).expect("valid state");
            }
            let len = cuts[batch_no % cuts.len()].min(deliveries.len() - at);
            fresh.receive(deliveries[at..at + len].to_vec(), now).expect("valid ops");
            at += len;
            batch_no += 1;
        }
        prop_assert_eq!(fresh.pending(), 0);

        let mut reference = rs[0].clone();
        reference.collect_garbage(now);
        fresh.collect_garbage(now);
        prop_assert_eq!(fresh.state(), reference.state());
        prop_assert_eq!(fresh.applied(), reference.applied());
        prop_assert_eq!(fresh.digest(), reference.digest());
        prop_assert_eq!(fresh.state().conflicts(), reference.state().conflicts());
    }
}
