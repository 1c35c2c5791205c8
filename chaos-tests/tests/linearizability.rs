//! The checker on generated histories: a real sequential KV version 2 store
//! executes the operations in a known order, and each operation is given an
//! invocation and return time around its point of execution, so the history
//! is linearizable by construction (and must be accepted); a stale read
//! spliced into it must be rejected. Then concurrent threads against a
//! locked in-memory store, recorded with [`History`], and a larger history
//! that must be checked within a fixed step budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use sigil_chaos::history::{
    ClientId, Event, EventKind, History, Op, Outcome, Output, ReadResult, WriteResult,
};
use sigil_chaos::linearizability::{Budget, CheckError, check_kv};

/// SplitMix64, so a generated history is a function of its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n ≥ 1), bias irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self) -> u64 {
        self.below(100)
    }
}

/// The sequential store the history is generated from.
#[derive(Default)]
struct Store {
    keys: HashMap<String, ReadResult>,
}

impl Store {
    fn version(&self, key: &str) -> u64 {
        match self.keys.get(key) {
            Some(ReadResult::Value { version, .. }) => *version,
            _ => 0,
        }
    }

    fn apply(&mut self, op: &Op) -> Output {
        let current = self.version(op.key());
        let value = match op {
            Op::Read { key } => {
                let seen = self.keys.get(key).cloned();
                return Output::Read(seen.unwrap_or(ReadResult::Absent));
            }
            Op::Cas {
                expected_version, ..
            } if *expected_version != current => return Output::CasMismatch,
            Op::Write { value, .. } | Op::Cas { value, .. } => value,
        };
        let version = current + 1;
        self.keys.insert(
            op.key().to_owned(),
            ReadResult::Value {
                value: value.clone(),
                version,
            },
        );
        Output::Written(WriteResult { version })
    }
}

/// What became of a generated operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Executed, result returned to the client.
    Ok,
    /// Executed (perhaps much later), the client never learnt the result.
    UnknownApplied,
    /// Never executed, the client never learnt that.
    UnknownLost,
    /// Never executed, and the client was told so.
    Failed,
}

/// One generated operation, with what the mutation needs.
#[derive(Debug, Clone)]
struct Generated {
    client: ClientId,
    op: Op,
    fate: Fate,
    call: u64,
    ret: u64,
    output: Option<Output>,
    /// For an executed write: the key's state right before it.
    overwrote: Option<ReadResult>,
}

/// The size and weather of a generated history.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Sequential clients.
    clients: usize,
    /// Keys the operations pick from.
    keys: usize,
    /// Operations.
    ops: usize,
    /// Percentage of operations whose outcome the client never learns (as
    /// many again fail outright). Each is free to take effect anywhere after
    /// its call, so a rejection has to rule out every subset of them.
    unknown_percent: u64,
}

/// A history generated from `seed`.
///
/// Operation `i` is executed (if it is) at time `1000 · (i + 1)`. Its client
/// invoked it after its previous operation returned and no later than that;
/// its return is fixed when the client's next operation is generated (at
/// the latest just before that one's execution), or at the end. So every
/// window contains its execution point and a client's operations never
/// overlap, while operations of different clients overlap freely.
fn generate(seed: u64, shape: Shape) -> Vec<Generated> {
    let Shape {
        clients,
        keys,
        ops: n,
        unknown_percent,
    } = shape;
    let mut rng = Rng(seed);
    let mut store = Store::default();
    let mut ops: Vec<Generated> = Vec::with_capacity(n);
    // Per client: its latest operation, whose return is not fixed yet.
    let mut latest: Vec<Option<usize>> = vec![None; clients];
    // Executed-but-unknown operations the store has not applied yet: a
    // request the client gave up on may still be applied later.
    let mut limbo: Vec<usize> = Vec::new();
    let mut exec_points = Vec::new();

    let mut tick = 0u64;
    let mut next_point = || {
        tick += 1;
        1000 * tick
    };

    while ops.len() < n {
        if !limbo.is_empty() && rng.percent() < 10 {
            let at = next_point();
            let i = limbo.swap_remove(rng.below(limbo.len() as u64) as usize);
            ops[i].overwrote = store.keys.get(ops[i].op.key()).cloned();
            store.apply(&ops[i].op);
            exec_points.push((i, at));
            continue;
        }
        let at = next_point();
        let client = rng.below(clients as u64) as usize;
        let call = match latest[client] {
            Some(j) => {
                let since = exec_point_or_call(&ops[j], &exec_points, j);
                let ret = since + rng.below(at - since - 1);
                ops[j].ret = ret;
                ret + 1 + rng.below(at - ret)
            }
            None => at.saturating_sub(rng.below(3000)),
        };
        let key = format!("k{}", rng.below(keys as u64));
        let value = format!("v{}", ops.len());
        let op = match rng.percent() {
            0..40 => Op::Read { key },
            40..75 => Op::Write { key, value },
            _ => {
                let current = store.version(&key);
                let expected_version = if rng.percent() < 50 {
                    current
                } else {
                    rng.below(current + 2)
                };
                Op::Cas {
                    key,
                    expected_version,
                    value,
                }
            }
        };
        let fate = match rng.percent() {
            p if p < unknown_percent / 2 => Fate::UnknownLost,
            p if p < unknown_percent => Fate::UnknownApplied,
            p if p < 2 * unknown_percent => Fate::Failed,
            _ => Fate::Ok,
        };
        let i = ops.len();
        let mut generated = Generated {
            client: client as ClientId,
            op,
            fate,
            call,
            ret: call,
            output: None,
            overwrote: None,
        };
        match fate {
            Fate::Ok => {
                generated.overwrote = store.keys.get(generated.op.key()).cloned();
                generated.output = Some(store.apply(&generated.op));
                exec_points.push((i, at));
            }
            Fate::UnknownApplied if rng.percent() < 50 => limbo.push(i),
            Fate::UnknownApplied => {
                generated.overwrote = store.keys.get(generated.op.key()).cloned();
                store.apply(&generated.op);
                exec_points.push((i, at));
            }
            Fate::UnknownLost | Fate::Failed => {}
        }
        ops.push(generated);
        latest[client] = Some(i);
    }
    // The last operation of each client returns soon after.
    for j in latest.into_iter().flatten() {
        let since = exec_point_or_call(&ops[j], &exec_points, j);
        ops[j].ret = since + rng.below(1000);
    }
    ops
}

/// The earliest time operation `j` may return: after its execution if it
/// was executed in place, else after its call.
fn exec_point_or_call(op: &Generated, exec_points: &[(usize, u64)], j: usize) -> u64 {
    exec_points
        .iter()
        .rev()
        .find(|&&(i, _)| i == j)
        .map_or(op.call, |&(_, at)| at.max(op.call))
}

/// The events of a generated history, in time order (calls first on ties).
fn events(ops: &[Generated]) -> Vec<Event> {
    let mut timeline: Vec<(u64, bool, Event)> = Vec::new();
    for (id, g) in ops.iter().enumerate() {
        let id = id as u64;
        timeline.push((
            g.call,
            false,
            Event {
                op: id,
                client: g.client,
                time_ns: g.call,
                kind: EventKind::Invoke(g.op.clone()),
            },
        ));
        let outcome = match (g.fate, &g.output) {
            (Fate::Ok, Some(output)) => Outcome::Ok(output.clone()),
            (Fate::Failed, _) => Outcome::Fail,
            _ => Outcome::Unknown,
        };
        timeline.push((
            g.ret,
            true,
            Event {
                op: id,
                client: g.client,
                time_ns: g.ret,
                kind: EventKind::Return(outcome),
            },
        ));
    }
    timeline.sort_by_key(|(t, is_return, e)| (*t, *is_return, e.op));
    timeline.into_iter().map(|(_, _, e)| e).collect()
}

/// Replaces a completed read's result with a state that a write which
/// returned before the read was invoked had already overwritten. `None` if
/// the history has no such pair.
fn splice_stale_read(ops: &mut [Generated], pick: u64) -> Option<usize> {
    let mut pairs = Vec::new();
    for (r, read) in ops.iter().enumerate() {
        if read.fate != Fate::Ok || !matches!(read.op, Op::Read { .. }) {
            continue;
        }
        for write in ops.iter() {
            let completed_write =
                write.fate == Fate::Ok && matches!(write.output, Some(Output::Written(_)));
            if completed_write && write.op.key() == read.op.key() && write.ret < read.call {
                if let Some(stale) = &write.overwrote {
                    pairs.push((r, stale.clone()));
                } else {
                    pairs.push((r, ReadResult::Absent));
                }
            }
        }
    }
    if pairs.is_empty() {
        return None;
    }
    let (r, stale) = pairs.swap_remove((pick % pairs.len() as u64) as usize);
    ops[r].output = Some(Output::Read(stale));
    Some(r)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn histories_of_a_sequential_store_are_accepted(
        seed in any::<u64>(),
        clients in 1usize..5,
        keys in 1usize..4,
        ops in 1usize..80,
        unknown_percent in 0u64..=20,
    ) {
        let ops = generate(seed, Shape { clients, keys, ops, unknown_percent });
        let result = check_kv(&events(&ops), &Budget::default());
        prop_assert!(result.is_ok(), "seed {seed}: {result:?}\n{ops:#?}");
    }

    #[test]
    fn a_stale_read_spliced_in_is_rejected(
        seed in any::<u64>(),
        pick in any::<u64>(),
        clients in 2usize..5,
        keys in 1usize..3,
        ops in 10usize..80,
        unknown_percent in 0u64..=20,
    ) {
        let mut ops = generate(seed, Shape { clients, keys, ops, unknown_percent });
        let Some(r) = splice_stale_read(&mut ops, pick) else {
            return Ok(());
        };
        match check_kv(&events(&ops), &Budget::default()) {
            Err(CheckError::Violation(v)) => prop_assert_eq!(&v.key, ops[r].op.key()),
            other => prop_assert!(false, "seed {seed}: stale read #{r} accepted: {other:?}"),
        }
    }
}

#[test]
fn generator_covers_every_fate_and_output() {
    let ops = generate(
        7,
        Shape {
            clients: 3,
            keys: 2,
            ops: 500,
            unknown_percent: 20,
        },
    );
    for fate in [
        Fate::Ok,
        Fate::UnknownApplied,
        Fate::UnknownLost,
        Fate::Failed,
    ] {
        assert!(ops.iter().any(|g| g.fate == fate), "{fate:?}");
    }
    let outputs = |f: fn(&Output) -> bool| ops.iter().filter_map(|g| g.output.as_ref()).any(f);
    assert!(outputs(|o| matches!(o, Output::CasMismatch)));
    assert!(outputs(|o| matches!(
        o,
        Output::Read(ReadResult::Value { .. })
    )));
    assert!(outputs(
        |o| matches!(o, Output::Written(WriteResult { version }) if *version > 1)
    ));
    // Windows of different clients overlap.
    let overlapping = ops.windows(2).any(|w| w[1].call < w[0].ret);
    assert!(overlapping);
}

#[test]
fn threads_against_a_locked_store_are_accepted() {
    let history = History::new();
    let store = Arc::new(Mutex::new(Store::default()));
    let threads: Vec<_> = (0..4u64)
        .map(|client| {
            let history = history.clone();
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut rng = Rng(client);
                for i in 0..300 {
                    let key = format!("k{}", rng.below(3));
                    let op = match rng.percent() {
                        0..40 => Op::Read { key },
                        40..70 => Op::Write {
                            key,
                            value: format!("c{client}-{i}"),
                        },
                        _ => Op::Cas {
                            key,
                            expected_version: rng.below(4),
                            value: format!("c{client}-{i}"),
                        },
                    };
                    let pending = history.invoke(client, op.clone());
                    let output = store.lock().expect("store lock").apply(&op);
                    match rng.percent() {
                        0..90 => pending.ok(output),
                        // A timeout after the store applied it.
                        _ => pending.unknown(),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let events = history.events();
    assert_eq!(events.len(), 4 * 300 * 2);
    assert!(check_kv(&events, &Budget::default()).is_ok());
}

#[test]
fn two_thousand_operations_check_within_a_fixed_step_budget() {
    // Three clients, ten keys: about 200 operations per key, a fifth of them
    // with unknown outcomes (each free to take effect anywhere after its
    // call, the expensive kind), as many failed. This history needs about
    // 6,000 steps on its busiest key, some 20 ms in a debug build; a search
    // gone exponential would blow through the budget and come back
    // inconclusive. A step budget, unlike a wall-clock bound, gives the same
    // verdict on any machine.
    let shape = Shape {
        clients: 3,
        keys: 10,
        ops: 2000,
        unknown_percent: 20,
    };
    let budget = Budget {
        max_steps: 100_000,
        max_time: None,
    };
    let mut ops = generate(2024, shape);
    let result = check_kv(&events(&ops), &budget);
    assert!(result.is_ok(), "{result:?}");

    // Rejecting is the harder direction: the search must exhaust the orders.
    let stale = splice_stale_read(&mut ops, 2024).expect("a read to make stale");
    match check_kv(&events(&ops), &budget) {
        Err(CheckError::Violation(v)) => assert_eq!(v.key, ops[stale].op.key()),
        other => panic!("stale read #{stale} not rejected: {other:?}"),
    }
}
