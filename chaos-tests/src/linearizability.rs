//! Linearizability checking of recorded histories.
//!
//! A history is linearizable if every operation can be given one instant,
//! between its invocation and its return, at which it takes effect, such that
//! the operations in the order of those instants are a run of the sequential
//! [`Model`] producing exactly the outputs the clients saw (Herlihy & Wing,
//! "Linearizability: a correctness condition for concurrent objects", TOPLAS
//! 12(3), 1990).
//!
//! The search is Wing & Gong's ("Testing and verifying concurrent objects",
//! JPDC 17(1), 1993) as refined by Lowe ("Testing for linearizability",
//! Concurrency and Computation: Practice and Experience 29(4), 2017), the
//! algorithm Porcupine also implements:
//!
//! - the invocations and returns are kept in one doubly linked list ordered
//!   by time; the search repeatedly takes an operation whose invocation comes
//!   before the first return still in the list (so it may take effect first),
//!   applies it to the model, and removes both its entries ("lifting" it);
//! - reaching a return means its operation had to take effect by then but no
//!   order tried so far allows it, so the search backtracks: it undoes the
//!   last operation and tries the next candidate after it;
//! - Lowe's memoisation: a (set of linearised operations, model state) pair
//!   that was reached before is not explored again, since whatever follows
//!   depends only on that pair. This is what keeps realistic histories linear
//!   rather than exponential.
//!
//! Refinements for histories from real clients:
//!
//! - **Unknown outcomes.** An operation whose outcome is unknown (timeout,
//!   lost connection) may take effect at any instant after its invocation,
//!   even after every other operation returned, or never ([`End::Unknown`]).
//!   It is given no return entry (an open-ended return time), and the search
//!   succeeds once every other operation is placed: an unknown operation left
//!   over is one that never took effect (or did so after everything
//!   observed). Operations that definitely failed are not given to the
//!   checker at all. An operation known to have taken effect by some time,
//!   output unseen ([`End::EffectBy`]), gets a return entry at that time.
//! - **Interchangeable unknowns.** Unknown operations with equal inputs
//!   differ only in when they were invoked. If a linearization places some of
//!   them, the same positions can be given to the earliest-invoked ones
//!   instead (the i-th earliest position is never before the i-th earliest
//!   invocation), so the search only places such an operation once all its
//!   earlier twins are placed: *how many* took effect is searched, not
//!   *which*. For the KV model, [`sharpen_unknowns`] makes timed-out writes
//!   that nobody read such twins, and pins the ones somebody read to
//!   [`End::EffectBy`] that read. Without this, every unknown write is a
//!   factor of two in the states a rejection must rule out, and a burst of
//!   timeouts during a partition makes the check exponential.
//! - **Partitioning.** Linearizability is local (Herlihy & Wing 1990, §3.3):
//!   a history is linearizable iff its restriction to each object is. So
//!   [`check_partitioned`] splits the history by key and checks each key
//!   alone (the "P-compositionality" of Horn & Kroening, FORTE 2015), which
//!   turns one search over all operations into many small ones.
//!
//! A search that outgrows its [`Budget`] stops with
//! [`CheckError::Inconclusive`] rather than running forever.
//!
//! ```
//! use sigil_chaos::history::{History, Op, ReadResult, WriteResult};
//! use sigil_chaos::linearizability::{Budget, CheckError, check_kv};
//!
//! let history = History::new();
//! let w = history.invoke(1, Op::Write { key: "a".into(), value: "x".into() });
//! w.ok(WriteResult { version: 1 });
//! // A read invoked after the write returned must see it.
//! let r = history.invoke(2, Op::Read { key: "a".into() });
//! r.ok(ReadResult::Absent);
//! match check_kv(&history.events(), &Budget::default()) {
//!     Err(CheckError::Violation(v)) => assert_eq!(v.key, "a"),
//!     other => panic!("expected a violation, got {other:?}"),
//! }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::history::{ClientId, Event, EventKind, Op, OpId, Outcome, Output, ReadResult};

/// A sequential specification: the object a concurrent history must look
/// like when its operations are put in some order.
pub trait Model {
    /// The object's state. Hashed and compared for the memoisation, so keep
    /// it small.
    type State: Clone + Eq + Hash + fmt::Debug;
    /// What a client asked for. Unknown operations with equal inputs are
    /// interchangeable (see [`Model::step_unknown`]), which the search uses.
    type Input: Eq + Hash + fmt::Debug;
    /// What the client got back.
    type Output: fmt::Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` takes effect in `state` and returns
    /// `output`, or `None` if the object could not have returned `output`
    /// there.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// The state after `input`, whose output nobody saw, takes effect in
    /// `state`. It must be a function of `state` and `input`: an operation
    /// that would fail here is a no-op, which is the same as it never taking
    /// effect. So two unknown operations with equal inputs have the same
    /// effect everywhere, and the search places them only in the order they
    /// were invoked.
    fn step_unknown(&self, state: &Self::State, input: &Self::Input) -> Self::State;
}

/// One operation of a history, as the checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Its identity, quoted in a [`Violation`].
    pub id: OpId,
    /// The client that issued it.
    pub client: ClientId,
    /// What was asked.
    pub input: I,
    /// When it was invoked.
    pub call: u64,
    /// How it ended.
    pub end: End<O>,
}

/// How an [`Operation`] ended, as far as the history knows. Times are not
/// before the call; an operation invoked after another's time is ordered
/// after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End<O> {
    /// It returned `output` at `time`.
    Returned {
        /// When it returned.
        time: u64,
        /// What it returned.
        output: O,
    },
    /// It took effect by `time`, with an output nobody saw: for instance a
    /// write that timed out, whose value a read returned at `time`.
    EffectBy {
        /// When it had taken effect at the latest.
        time: u64,
    },
    /// Nothing is known: it took effect at some instant after its call, or
    /// never.
    Unknown,
}

impl<O> End<O> {
    /// The time by which the operation had taken effect, if it had to.
    fn time(&self) -> Option<u64> {
        match self {
            End::Returned { time, .. } | End::EffectBy { time } => Some(*time),
            End::Unknown => None,
        }
    }
}

/// How much searching a check may do before giving up as inconclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Search steps allowed for each partition (key). Deterministic: the
    /// same history always gets the same verdict.
    pub max_steps: u64,
    /// Wall-clock time allowed for the whole check, all partitions together.
    pub max_time: Option<Duration>,
}

impl Default for Budget {
    /// Ten million steps per key, no time limit: a few seconds of searching
    /// in a debug build, far more than a history from a correct system needs.
    fn default() -> Self {
        Self {
            max_steps: 10_000_000,
            max_time: None,
        }
    }
}

/// Why a history was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The history is not linearizable.
    #[error("{0}")]
    Violation(Box<Violation>),
    /// The search ran out of budget before reaching a verdict.
    #[error("inconclusive: the check of key {key:?} stopped after {steps} steps")]
    Inconclusive {
        /// The partition whose search was cut short.
        key: String,
        /// Steps it had taken.
        steps: u64,
    },
    /// The history itself is inconsistent (a return before its call, a
    /// return of an operation never invoked, ...).
    #[error("malformed history: {0}")]
    Malformed(String),
}

/// A non-linearizable partition, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The partition (for the KV model, the key); empty when the history was
    /// checked as one partition by [`check`].
    pub key: String,
    /// The longest linearizable prefix the search found: operation ids in
    /// the order they take effect.
    pub linearized: Vec<OpId>,
    /// The model state after that prefix.
    pub state: String,
    /// The operation that could not be placed after that prefix: it had to
    /// take effect (it returned, or was seen to) before any remaining
    /// candidate could take effect in a way that leads to a linearization.
    pub stuck: Option<OpId>,
    /// All of the above, with the operations spelled out.
    pub explanation: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explanation)
    }
}

/// The operations of one partition, borrowed from the whole history.
type Partition<'a, M> = Vec<&'a Operation<<M as Model>::Input, <M as Model>::Output>>;

/// Checks `ops` as one object of `model`.
pub fn check<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    budget: &Budget,
) -> Result<(), CheckError> {
    let mut meter = Meter::new(budget);
    let ops: Vec<_> = ops.iter().collect();
    search(model, &ops, "", &mut meter)
}

/// Checks `ops` one partition at a time, `key_of` naming each operation's
/// partition (Herlihy & Wing's locality: see the module docs). Partitions are
/// checked in key order; the first violation found is returned, and an
/// inconclusive partition is reported only if no other partition is violated.
pub fn check_partitioned<M, K, F>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    key_of: F,
    budget: &Budget,
) -> Result<(), CheckError>
where
    M: Model,
    K: Ord + fmt::Display,
    F: Fn(&M::Input) -> K,
{
    let mut partitions: BTreeMap<K, Partition<'_, M>> = BTreeMap::new();
    for op in ops {
        partitions.entry(key_of(&op.input)).or_default().push(op);
    }
    let mut meter = Meter::new(budget);
    let mut inconclusive = None;
    for (key, ops) in &partitions {
        meter.restart();
        match search(model, ops, &key.to_string(), &mut meter) {
            Ok(()) => {}
            Err(e @ CheckError::Inconclusive { .. }) => {
                inconclusive.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    inconclusive.map_or(Ok(()), Err)
}

/// Sigil's KV version 2 store, one key: a versioned register whose state is
/// what a read of it returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvModel;

fn version(state: &ReadResult) -> u64 {
    match state {
        ReadResult::Absent => 0,
        ReadResult::Value { version, .. } => *version,
    }
}

impl Model for KvModel {
    type State = ReadResult;
    type Input = Op;
    type Output = Output;

    fn init(&self) -> ReadResult {
        ReadResult::Absent
    }

    fn step(&self, state: &ReadResult, op: &Op, output: &Output) -> Option<ReadResult> {
        let current = version(state);
        match (op, output) {
            (Op::Read { .. }, Output::Read(seen)) => (seen == state).then(|| state.clone()),
            (Op::Write { value, .. }, Output::Written(w)) => {
                (w.version == current + 1).then(|| ReadResult::Value {
                    value: value.clone(),
                    version: w.version,
                })
            }
            (
                Op::Cas {
                    expected_version,
                    value,
                    ..
                },
                Output::Written(w),
            ) => (current == *expected_version && w.version == current + 1).then(|| {
                ReadResult::Value {
                    value: value.clone(),
                    version: w.version,
                }
            }),
            // A mismatch is a read of the version: it happened, and only
            // where the version was another one.
            (
                Op::Cas {
                    expected_version, ..
                },
                Output::CasMismatch,
            ) => (current != *expected_version).then(|| state.clone()),
            _ => None,
        }
    }

    fn step_unknown(&self, state: &ReadResult, op: &Op) -> ReadResult {
        let current = version(state);
        match op {
            Op::Read { .. } => state.clone(),
            Op::Write { value, .. } => ReadResult::Value {
                value: value.clone(),
                version: current + 1,
            },
            Op::Cas {
                expected_version,
                value,
                ..
            } if *expected_version == current => ReadResult::Value {
                value: value.clone(),
                version: current + 1,
            },
            Op::Cas { .. } => state.clone(),
        }
    }
}

/// Turns a recorded history into the checker's operations: an operation
/// that failed is left out (it did not take effect and observed nothing), one
/// that returned [`Outcome::Unknown`] or never returned gets no return.
pub fn kv_operations(events: &[Event]) -> Result<Vec<Operation<Op, Output>>, CheckError> {
    let mut ops: Vec<Operation<Op, Output>> = Vec::new();
    let mut index: HashMap<OpId, usize> = HashMap::new();
    let mut returned: HashSet<OpId> = HashSet::new();
    let mut failed: HashSet<OpId> = HashSet::new();
    for event in events {
        match &event.kind {
            EventKind::Invoke(op) => {
                if index.insert(event.op, ops.len()).is_some() {
                    return Err(CheckError::Malformed(format!(
                        "operation #{} is invoked twice",
                        event.op
                    )));
                }
                ops.push(Operation {
                    id: event.op,
                    client: event.client,
                    input: op.clone(),
                    call: event.time_ns,
                    end: End::Unknown,
                });
            }
            EventKind::Return(outcome) => {
                let Some(&i) = index.get(&event.op) else {
                    return Err(CheckError::Malformed(format!(
                        "operation #{} returns without being invoked",
                        event.op
                    )));
                };
                if !returned.insert(event.op) {
                    return Err(CheckError::Malformed(format!(
                        "operation #{} returns twice",
                        event.op
                    )));
                }
                if event.time_ns < ops[i].call {
                    return Err(CheckError::Malformed(format!(
                        "operation #{} returns at {} before its invocation at {}",
                        event.op, event.time_ns, ops[i].call
                    )));
                }
                match outcome {
                    Outcome::Ok(output) => {
                        ops[i].end = End::Returned {
                            time: event.time_ns,
                            output: output.clone(),
                        };
                    }
                    Outcome::Fail => {
                        failed.insert(event.op);
                    }
                    Outcome::Unknown => {}
                }
            }
        }
    }
    ops.retain(|op| !failed.contains(&op.id));
    Ok(ops)
}

/// Checks a recorded KV version 2 history, key by key.
///
/// Before the search, unknown operations are sharpened with what the rest of
/// the history says about them (see [`sharpen_unknowns`]); a violation's
/// explanation shows them so sharpened.
pub fn check_kv(events: &[Event], budget: &Budget) -> Result<(), CheckError> {
    let mut ops = kv_operations(events)?;
    // A read whose result nobody saw constrains nothing and changes nothing;
    // left in, each would only double the states the search can visit.
    ops.retain(|op| !matches!((&op.input, &op.end), (Op::Read { .. }, End::Unknown)));
    sharpen_unknowns(&mut ops);
    check_partitioned(&KvModel, &ops, |op: &Op| op.key().to_owned(), budget)
}

/// Tightens unknown writes and check-and-sets using the reads of their key,
/// leaving every linearization of the history possible and ruling out only
/// orders that could not be one. Unknown operations cost the search the most,
/// since each may take effect anywhere after its call or never.
///
/// - **Observed.** If a read returned the operation's value and no other
///   write of the key carries that value, the operation took effect, before
///   that read: it becomes [`End::EffectBy`] the earliest return of such a
///   read.
/// - **Unobserved.** If no read returned its value, the value itself can
///   never matter: it is replaced by one placeholder per key, chosen unlike
///   any value read from the key, so a state holding it fails every read
///   exactly as the original did. Writes and check-and-sets look only at
///   versions. Such operations with equal expected versions thereby become
///   interchangeable, which the search exploits (module docs).
pub fn sharpen_unknowns(ops: &mut [Operation<Op, Output>]) {
    // Per key: the values reads returned, with the earliest return of each,
    // and how many writes carry each value.
    let mut read_by: HashMap<(String, String), u64> = HashMap::new();
    let mut read_values: HashMap<String, HashSet<String>> = HashMap::new();
    let mut writers: HashMap<(String, String), usize> = HashMap::new();
    for op in ops.iter() {
        match (&op.input, &op.end) {
            (
                Op::Read { key },
                End::Returned {
                    time,
                    output: Output::Read(ReadResult::Value { value, .. }),
                },
            ) => {
                let earliest = read_by.entry((key.clone(), value.clone())).or_insert(*time);
                *earliest = (*earliest).min(*time);
                read_values
                    .entry(key.clone())
                    .or_default()
                    .insert(value.clone());
            }
            (Op::Write { key, value } | Op::Cas { key, value, .. }, _) => {
                *writers.entry((key.clone(), value.clone())).or_default() += 1;
            }
            _ => {}
        }
    }
    let mut placeholders: HashMap<String, String> = HashMap::new();
    for op in ops.iter_mut() {
        let End::Unknown = op.end else { continue };
        let (Op::Write { key, value } | Op::Cas { key, value, .. }) = &mut op.input else {
            continue;
        };
        let pair = (key.clone(), value.clone());
        if let Some(&time) = read_by.get(&pair) {
            // A read before the call is a violation the search will find;
            // it is not evidence of when this write took effect.
            if writers.get(&pair) == Some(&1) && time >= op.call {
                op.end = End::EffectBy { time };
            }
            continue;
        }
        let read = read_values.get(key.as_str());
        let placeholder = placeholders.entry(key.clone()).or_insert_with(|| {
            let mut p = String::from("(unobserved)");
            while read.is_some_and(|r| r.contains(&p)) {
                p.push('\'');
            }
            p
        });
        value.clone_from(placeholder);
    }
}

/// Counts search steps against a [`Budget`].
#[derive(Debug)]
struct Meter {
    steps: u64,
    max_steps: u64,
    deadline: Option<Instant>,
}

impl Meter {
    fn new(budget: &Budget) -> Self {
        Self {
            steps: 0,
            max_steps: budget.max_steps,
            deadline: budget.max_time.map(|d| Instant::now() + d),
        }
    }

    /// Starts the step count of a new partition; the deadline stays.
    fn restart(&mut self) {
        self.steps = 0;
    }

    /// Counts one step; false once the budget is spent.
    fn tick(&mut self) -> bool {
        self.steps += 1;
        if self.steps > self.max_steps {
            return false;
        }
        // Reading the clock every step would cost more than the step.
        !(self.steps.is_multiple_of(1024) && self.deadline.is_some_and(|d| Instant::now() >= d))
    }
}

/// The list entries of operation `i`: its call and its return. Entry 0 is
/// the list's sentinel.
const HEAD: usize = 0;

fn call_entry(i: usize) -> usize {
    1 + 2 * i
}

fn return_entry(i: usize) -> usize {
    2 + 2 * i
}

fn op_of(entry: usize) -> usize {
    (entry - 1) / 2
}

fn is_call(entry: usize) -> bool {
    entry % 2 == 1
}

/// Wing & Gong's history list: a circular doubly linked list of call and
/// return entries in time order, from which entries are removed and restored
/// in stack order (each restore undoes the latest removal still in effect,
/// so a removed entry's own links are still right when it comes back).
#[derive(Debug)]
struct EntryList {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl EntryList {
    fn new(entries: usize, order: &[usize]) -> Self {
        let mut next = vec![HEAD; entries];
        let mut prev = vec![HEAD; entries];
        let mut last = HEAD;
        for &e in order {
            next[last] = e;
            prev[e] = last;
            last = e;
        }
        next[last] = HEAD;
        prev[HEAD] = last;
        Self { next, prev }
    }

    fn first(&self) -> usize {
        self.next[HEAD]
    }

    fn remove(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn restore(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }
}

/// A set of operation indices, hashed into the memo together with a state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)])
    }

    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The search of one partition (Lowe 2017, §3, with the memo of §4).
fn search<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    key: &str,
    meter: &mut Meter,
) -> Result<(), CheckError> {
    // Calls before returns at equal times: an operation that returns at the
    // very instant another is invoked is taken as concurrent with it, the
    // permissive reading. Unknown operations have no return entry.
    let mut timeline: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
    for (i, op) in ops.iter().enumerate() {
        timeline.push((op.call, false, call_entry(i)));
        if let Some(time) = op.end.time() {
            if time < op.call {
                return Err(CheckError::Malformed(format!(
                    "operation #{} ends at {} before its call at {}",
                    op.id, time, op.call
                )));
            }
            timeline.push((time, true, return_entry(i)));
        }
    }
    timeline.sort_unstable();
    let order: Vec<usize> = timeline.iter().map(|&(_, _, e)| e).collect();
    let mut list = EntryList::new(1 + 2 * ops.len(), &order);

    // Each unknown operation's latest earlier-invoked twin (equal input, also
    // unknown); it may be placed only after that one (see the module docs).
    let mut twin_before: Vec<Option<usize>> = vec![None; ops.len()];
    let mut latest_twin: HashMap<&M::Input, usize> = HashMap::new();
    for &(_, _, e) in &timeline {
        let i = op_of(e);
        if is_call(e) && matches!(ops[i].end, End::Unknown) {
            twin_before[i] = latest_twin.insert(&ops[i].input, i);
        }
    }

    // Operations that must be placed: all but the unknown ones.
    let completed = ops.iter().filter(|op| op.end.time().is_some()).count();
    let mut placed_completed = 0;
    let mut state = model.init();
    let mut linearized = Bitset::new(ops.len());
    let mut memo: HashSet<(Bitset, M::State)> = HashSet::new();
    // Operations placed so far, with the state before each.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut deepest = Deepest::new(state.clone());

    let mut entry = list.first();
    loop {
        if placed_completed == completed {
            return Ok(());
        }
        if !meter.tick() {
            return Err(CheckError::Inconclusive {
                key: key.to_owned(),
                steps: meter.steps,
            });
        }
        if entry != HEAD && is_call(entry) {
            let i = op_of(entry);
            let op = ops[i];
            let next = match &op.end {
                End::Returned { output, .. } => model.step(&state, &op.input, output),
                End::EffectBy { .. } => Some(model.step_unknown(&state, &op.input)),
                End::Unknown if twin_before[i].is_some_and(|t| !linearized.contains(t)) => None,
                End::Unknown => Some(model.step_unknown(&state, &op.input)),
            };
            if let Some(next) = next {
                linearized.insert(i);
                if memo.insert((linearized.clone(), next.clone())) {
                    let before = std::mem::replace(&mut state, next);
                    stack.push((i, before));
                    list.remove(call_entry(i));
                    if op.end.time().is_some() {
                        list.remove(return_entry(i));
                        placed_completed += 1;
                    }
                    if stack.len() > deepest.len {
                        deepest.record(&stack, &state);
                    }
                    entry = list.first();
                    continue;
                }
                // Seen before, and since we are still searching, it led
                // nowhere.
                linearized.remove(i);
            }
            entry = list.next[entry];
            continue;
        }

        // A return (or the end): its operation had to be placed by now.
        if deepest.stuck.is_none() && entry != HEAD {
            deepest.stuck = Some(op_of(entry));
            let mut e = list.first();
            while e != entry {
                deepest.candidates.push(op_of(e));
                e = list.next[e];
            }
        }
        let Some((i, before)) = stack.pop() else {
            return Err(CheckError::Violation(Box::new(
                deepest.violation(key, ops, completed),
            )));
        };
        state = before;
        linearized.remove(i);
        if ops[i].end.time().is_some() {
            list.restore(return_entry(i));
            placed_completed -= 1;
        }
        list.restore(call_entry(i));
        entry = list.next[call_entry(i)];
    }
}

/// The deepest point the search reached: the evidence of a violation.
#[derive(Debug)]
struct Deepest<S> {
    len: usize,
    prefix: Vec<usize>,
    state: S,
    /// The first return met after reaching that point, i.e. at that point
    /// (the search goes deeper, replacing this record, or backtracks).
    stuck: Option<usize>,
    /// The operations that could have come next instead.
    candidates: Vec<usize>,
}

impl<S: Clone + fmt::Debug> Deepest<S> {
    fn new(init: S) -> Self {
        Self {
            len: 0,
            prefix: Vec::new(),
            state: init,
            stuck: None,
            candidates: Vec::new(),
        }
    }

    fn record(&mut self, stack: &[(usize, S)], state: &S) {
        self.len = stack.len();
        self.prefix = stack.iter().map(|&(i, _)| i).collect();
        self.state = state.clone();
        self.stuck = None;
        self.candidates.clear();
    }

    fn violation<I: fmt::Debug, O: fmt::Debug>(
        &self,
        key: &str,
        ops: &[&Operation<I, O>],
        completed: usize,
    ) -> Violation {
        use std::fmt::Write as _;

        let mut text = String::new();
        let subject = if key.is_empty() {
            "the history".to_owned()
        } else {
            format!("the history of key {key:?}")
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "{subject} is not linearizable ({} operations, {completed} completed)",
            ops.len()
        );
        let _ = writeln!(
            text,
            "longest linearizable prefix ({} operations, in the order they take effect):",
            self.prefix.len()
        );
        for (n, &i) in self.prefix.iter().enumerate() {
            let _ = writeln!(text, "  {}. {}", n + 1, describe(ops[i]));
        }
        let _ = writeln!(text, "state after it: {:?}", self.state);
        match self.stuck {
            Some(i) => {
                let _ = writeln!(
                    text,
                    "operation that cannot be placed next: {}\n  it returned before it could \
                     take effect in any order of the operations concurrent with it",
                    describe(ops[i])
                );
                let others: Vec<_> = self.candidates.iter().filter(|&&c| c != i).collect();
                if !others.is_empty() {
                    let _ = writeln!(text, "other operations that could have come next:");
                    for &c in others {
                        let _ = writeln!(text, "  {}", describe(ops[c]));
                    }
                }
            }
            None => {
                let _ = writeln!(text, "no remaining operation can be placed next");
            }
        }
        Violation {
            key: key.to_owned(),
            linearized: self.prefix.iter().map(|&i| ops[i].id).collect(),
            state: format!("{:?}", self.state),
            stuck: self.stuck.map(|i| ops[i].id),
            explanation: text,
        }
    }
}

fn describe<I: fmt::Debug, O: fmt::Debug>(op: &Operation<I, O>) -> String {
    let prefix = format!("#{} client {}: {:?}", op.id, op.client, op.input);
    match &op.end {
        End::Returned { time, output } => {
            format!("{prefix} -> {output:?} [call {}, return {time}]", op.call)
        }
        End::EffectBy { time } => format!(
            "{prefix} -> unknown, took effect by {time} [call {}]",
            op.call
        ),
        End::Unknown => format!("{prefix} -> unknown [call {}, no return]", op.call),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::WriteResult;

    /// Builds histories with explicit times.
    #[derive(Default)]
    struct Builder {
        events: Vec<Event>,
        next: OpId,
    }

    impl Builder {
        fn op(&mut self, client: ClientId, op: Op, call: u64, ret: u64, outcome: Outcome) -> OpId {
            let id = self.invoke(client, op, call);
            self.events.push(Event {
                op: id,
                client,
                time_ns: ret,
                kind: EventKind::Return(outcome),
            });
            id
        }

        fn invoke(&mut self, client: ClientId, op: Op, call: u64) -> OpId {
            let id = self.next;
            self.next += 1;
            self.events.push(Event {
                op: id,
                client,
                time_ns: call,
                kind: EventKind::Invoke(op),
            });
            id
        }

        fn unknown(&mut self, client: ClientId, op: Op, call: u64, ret: u64) -> OpId {
            self.op(client, op, call, ret, Outcome::Unknown)
        }

        fn write(
            &mut self,
            client: ClientId,
            key: &str,
            value: &str,
            t: (u64, u64),
            version: u64,
        ) -> OpId {
            self.op(
                client,
                write(key, value),
                t.0,
                t.1,
                Outcome::Ok(Output::Written(WriteResult { version })),
            )
        }

        fn read(&mut self, client: ClientId, key: &str, t: (u64, u64), seen: ReadResult) -> OpId {
            self.op(
                client,
                Op::Read { key: key.into() },
                t.0,
                t.1,
                Outcome::Ok(Output::Read(seen)),
            )
        }

        fn cas(
            &mut self,
            client: ClientId,
            key: &str,
            expected: u64,
            value: &str,
            t: (u64, u64),
            output: Output,
        ) -> OpId {
            self.op(
                client,
                cas(key, expected, value),
                t.0,
                t.1,
                Outcome::Ok(output),
            )
        }

        fn check(&self) -> Result<(), CheckError> {
            check_kv(&self.events, &Budget::default())
        }

        fn violation(&self) -> Violation {
            match self.check() {
                Err(CheckError::Violation(v)) => *v,
                other => panic!("expected a violation, got {other:?}"),
            }
        }
    }

    fn write(key: &str, value: &str) -> Op {
        Op::Write {
            key: key.into(),
            value: value.into(),
        }
    }

    fn cas(key: &str, expected: u64, value: &str) -> Op {
        Op::Cas {
            key: key.into(),
            expected_version: expected,
            value: value.into(),
        }
    }

    fn val(value: &str, version: u64) -> ReadResult {
        ReadResult::Value {
            value: value.into(),
            version,
        }
    }

    fn written(version: u64) -> Output {
        Output::Written(WriteResult { version })
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert!(check_kv(&[], &Budget::default()).is_ok());
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let mut h = Builder::default();
        h.read(1, "a", (0, 1), ReadResult::Absent);
        h.write(1, "a", "x", (2, 3), 1);
        h.read(2, "a", (4, 5), val("x", 1));
        h.cas(2, "a", 1, "y", (6, 7), written(2));
        h.cas(1, "a", 1, "z", (8, 9), Output::CasMismatch);
        h.read(1, "a", (10, 11), val("y", 2));
        assert!(h.check().is_ok());
    }

    #[test]
    fn overlapping_writes_in_either_order() {
        // Both writes overlap; whichever the versions say went first is fine.
        for (vx, vy, last) in [(1, 2, "y"), (2, 1, "x")] {
            let mut h = Builder::default();
            h.write(1, "a", "x", (0, 10), vx);
            h.write(2, "a", "y", (1, 9), vy);
            h.read(3, "a", (11, 12), val(last, 2));
            assert!(h.check().is_ok(), "x at {vx}, y at {vy}");
        }
    }

    #[test]
    fn concurrent_reads_see_either_write() {
        let mut h = Builder::default();
        h.write(1, "a", "x", (0, 1), 1);
        h.write(1, "a", "y", (2, 10), 2);
        // Overlapping the second write: the old or the new value.
        h.read(2, "a", (3, 4), val("x", 1));
        h.read(3, "a", (5, 6), val("y", 2));
        assert!(h.check().is_ok());
    }

    #[test]
    fn read_cannot_go_back_after_seeing_the_new_value() {
        let mut h = Builder::default();
        h.write(1, "a", "x", (0, 1), 1);
        h.write(1, "a", "y", (2, 10), 2);
        h.read(2, "a", (3, 4), val("y", 2));
        h.read(3, "a", (5, 6), val("x", 1));
        let v = h.violation();
        assert_eq!(v.key, "a");
        assert_eq!(v.stuck, Some(3), "{v}");
    }

    #[test]
    fn stale_read_after_completed_write_is_rejected() {
        let mut h = Builder::default();
        h.write(1, "a", "x", (0, 1), 1);
        h.write(1, "a", "y", (2, 3), 2);
        let stale = h.read(2, "a", (4, 5), val("x", 1));
        let v = h.violation();
        assert_eq!(v.stuck, Some(stale), "{v}");
        assert_eq!(v.linearized, vec![0, 1]);
        assert!(v.explanation.contains("longest linearizable prefix"), "{v}");
    }

    #[test]
    fn read_of_a_value_never_written_is_rejected() {
        let mut h = Builder::default();
        h.write(1, "a", "x", (0, 10), 1);
        h.read(2, "a", (1, 11), val("ghost", 1));
        h.violation();
    }

    #[test]
    fn two_cas_with_the_same_expected_version_cannot_both_succeed() {
        let mut h = Builder::default();
        h.write(1, "a", "x", (0, 1), 1);
        h.cas(1, "a", 1, "y", (2, 10), written(2));
        h.cas(2, "a", 1, "z", (3, 11), written(2));
        h.violation();
    }

    #[test]
    fn cas_mismatch_constrains_like_a_read() {
        // A mismatch against the current version, after nothing else
        // changed it, cannot be placed.
        let mut h = Builder::default();
        h.write(1, "a", "x", (0, 1), 1);
        h.cas(2, "a", 1, "y", (2, 3), Output::CasMismatch);
        h.violation();

        // While a concurrent write bumps the version, it can.
        let mut h = Builder::default();
        h.write(1, "a", "x", (0, 1), 1);
        h.write(1, "a", "w", (2, 10), 2);
        h.cas(2, "a", 1, "y", (3, 4), Output::CasMismatch);
        assert!(h.check().is_ok());
    }

    #[test]
    fn cas_on_absent_key_expects_version_zero() {
        let mut h = Builder::default();
        h.cas(1, "a", 0, "x", (0, 1), written(1));
        h.cas(2, "a", 0, "y", (2, 3), Output::CasMismatch);
        h.read(1, "a", (4, 5), val("x", 1));
        assert!(h.check().is_ok());
    }

    #[test]
    fn lost_acknowledged_write_is_rejected() {
        let mut h = Builder::default();
        h.write(1, "a", "x", (0, 1), 1);
        h.write(1, "a", "y", (2, 3), 2);
        // Nobody sees y, and a later read goes back to version 1.
        h.read(2, "a", (4, 5), val("x", 1));
        h.read(3, "a", (6, 7), val("x", 1));
        let v = h.violation();
        assert_eq!(v.linearized, vec![0, 1], "{v}");
    }

    #[test]
    fn unknown_write_may_or_may_not_apply() {
        for seen in [val("x", 1), val("y", 2)] {
            let mut h = Builder::default();
            h.write(1, "a", "x", (0, 1), 1);
            h.unknown(2, write("a", "y"), 2, 3);
            h.read(3, "a", (10, 11), seen.clone());
            assert!(h.check().is_ok(), "read {seen:?}");
        }
    }

    #[test]
    fn unknown_write_may_apply_after_everything_observed() {
        // Reads long after the timeout still see nothing, then the write.
        let mut h = Builder::default();
        h.unknown(1, write("a", "late"), 0, 1);
        h.read(2, "a", (100, 101), ReadResult::Absent);
        h.read(2, "a", (200, 201), val("late", 1));
        assert!(h.check().is_ok());
    }

    #[test]
    fn unknown_write_does_not_take_effect_before_its_call() {
        let mut h = Builder::default();
        h.read(2, "a", (0, 1), val("early", 1));
        h.unknown(1, write("a", "early"), 5, 6);
        h.violation();
    }

    #[test]
    fn pending_op_without_return_is_unknown() {
        let mut h = Builder::default();
        h.invoke(1, write("a", "x"), 0);
        h.read(2, "a", (5, 6), val("x", 1));
        assert!(h.check().is_ok());
    }

    #[test]
    fn unknown_cas_may_or_may_not_apply() {
        for seen in [val("x", 1), val("y", 2)] {
            let mut h = Builder::default();
            h.write(1, "a", "x", (0, 1), 1);
            h.unknown(2, cas("a", 1, "y"), 2, 3);
            h.read(3, "a", (10, 11), seen.clone());
            assert!(h.check().is_ok(), "read {seen:?}");
        }
    }

    #[test]
    fn failed_write_did_not_happen() {
        let mut h = Builder::default();
        h.op(1, write("a", "x"), 0, 1, Outcome::Fail);
        h.read(2, "a", (2, 3), ReadResult::Absent);
        assert!(h.check().is_ok());

        let mut h = Builder::default();
        h.op(1, write("a", "x"), 0, 1, Outcome::Fail);
        h.read(2, "a", (2, 3), val("x", 1));
        h.violation();
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = Builder::default();
        h.write(1, "a", "x", (0, 1), 1);
        h.write(1, "b", "x", (2, 3), 1);
        h.read(2, "b", (4, 5), val("x", 1));
        h.read(2, "a", (6, 7), val("x", 1));
        h.read(2, "c", (8, 9), ReadResult::Absent);
        assert!(h.check().is_ok());
        h.read(2, "b", (10, 11), ReadResult::Absent);
        assert_eq!(h.violation().key, "b");
    }

    #[test]
    fn violation_names_the_candidates() {
        let mut h = Builder::default();
        h.write(1, "a", "x", (0, 1), 1);
        // Claims a version nothing leads to, so it stays a candidate.
        h.write(2, "a", "y", (2, 20), 3);
        h.read(3, "a", (3, 4), val("z", 1));
        let v = h.violation();
        assert_eq!(v.linearized, vec![0]);
        assert_eq!(v.stuck, Some(2));
        assert!(
            v.explanation
                .contains("other operations that could have come next"),
            "{v}"
        );
        assert!(v.explanation.contains("#1 client 2"), "{v}");
        assert!(v.to_string().starts_with("the history of key \"a\""), "{v}");
    }

    #[test]
    fn malformed_histories_are_refused() {
        let mut h = Builder::default();
        h.write(1, "a", "x", (5, 4), 1);
        assert!(matches!(h.check(), Err(CheckError::Malformed(_))));

        let orphan = [Event {
            op: 9,
            client: 1,
            time_ns: 0,
            kind: EventKind::Return(Outcome::Unknown),
        }];
        assert!(matches!(
            check_kv(&orphan, &Budget::default()),
            Err(CheckError::Malformed(_))
        ));
    }

    /// A set of small integers, each added at most once; reads return the
    /// whole set. Unknown adds with distinct inputs are not interchangeable,
    /// so a read nothing explains makes the search try every subset.
    struct SmallSet;

    #[derive(Debug, PartialEq, Eq, Hash)]
    enum SetOp {
        Add(u32),
        Read,
    }

    impl Model for SmallSet {
        type State = u64;
        type Input = SetOp;
        type Output = u64;
        fn init(&self) -> u64 {
            0
        }
        fn step(&self, s: &u64, op: &SetOp, out: &u64) -> Option<u64> {
            match op {
                SetOp::Add(i) => Some(s | 1 << i),
                SetOp::Read => (out == s).then_some(*s),
            }
        }
        fn step_unknown(&self, s: &u64, op: &SetOp) -> u64 {
            match op {
                SetOp::Add(i) => s | 1 << i,
                SetOp::Read => *s,
            }
        }
    }

    #[test]
    fn exhausted_budget_is_inconclusive() {
        let mut ops: Vec<_> = (0..20)
            .map(|i| Operation {
                id: u64::from(i),
                client: u64::from(i),
                input: SetOp::Add(i),
                call: u64::from(i),
                end: End::Unknown,
            })
            .collect();
        ops.push(Operation {
            id: 99,
            client: 99,
            input: SetOp::Read,
            call: 100,
            end: End::Returned {
                time: 101,
                output: 1 << 40,
            },
        });
        let budget = Budget {
            max_steps: 1000,
            max_time: None,
        };
        assert!(matches!(
            check(&SmallSet, &ops, &budget),
            Err(CheckError::Inconclusive { ref key, steps: 1001 }) if key.is_empty()
        ));
        let budget = Budget {
            max_steps: u64::MAX,
            max_time: Some(Duration::from_millis(1)),
        };
        assert!(matches!(
            check(&SmallSet, &ops, &budget),
            Err(CheckError::Inconclusive { .. })
        ));
    }

    #[test]
    fn interchangeable_unknowns_are_placed_in_call_order_only() {
        // Twenty timed-out writes nobody read, then a read nothing explains:
        // without the symmetry, every subset of the writes is a state to
        // rule out; with it, only how many of them took effect.
        let mut h = Builder::default();
        for c in 0..20 {
            h.unknown(c, write("a", &format!("lost{c}")), c, 1000);
        }
        h.read(99, "a", (100, 101), val("never", 1));
        let budget = Budget {
            max_steps: 10_000,
            max_time: None,
        };
        assert!(matches!(
            check_kv(&h.events, &budget),
            Err(CheckError::Violation(_))
        ));
        // And they still explain any number of versions.
        let mut h = Builder::default();
        for c in 0..20 {
            h.unknown(c, write("a", &format!("lost{c}")), c, 1000);
        }
        h.write(99, "a", "seen", (100, 101), 8);
        h.read(99, "a", (102, 103), val("seen", 8));
        assert!(h.check().is_ok());
    }

    #[test]
    fn sharpening_pins_observed_and_blurs_unobserved_unknowns() {
        let mut h = Builder::default();
        let observed = h.unknown(1, write("a", "x"), 0, 1);
        let unobserved = h.unknown(1, write("a", "y"), 2, 3);
        let twin_a = h.unknown(2, write("a", "z"), 4, 5);
        let twin_b = h.unknown(3, cas("a", 0, "z"), 6, 7);
        let late = h.unknown(2, write("a", "w"), 40, 41);
        h.read(4, "a", (8, 9), val("x", 1));
        h.read(4, "a", (10, 11), val("x", 1));
        h.read(4, "a", (12, 13), val("z", 2));
        // Read before the write was invoked: not evidence of anything.
        h.read(4, "a", (30, 31), val("w", 3));
        let mut ops = kv_operations(&h.events).expect("well formed");
        sharpen_unknowns(&mut ops);
        let find = |id| ops.iter().find(|op| op.id == id).expect("op");
        // The earliest read of "x" returned at 9.
        assert_eq!(find(observed).end, End::EffectBy { time: 9 });
        assert_eq!(find(unobserved).end, End::Unknown);
        assert_eq!(
            find(unobserved).input,
            write("a", "(unobserved)"),
            "no read returned y"
        );
        // Two writes of "z": the read could be either's.
        assert_eq!(find(twin_a).end, End::Unknown);
        assert_eq!(find(twin_b).end, End::Unknown);
        assert_eq!(find(twin_b).input, cas("a", 0, "z"));
        assert_eq!(find(late).end, End::Unknown);
        assert_eq!(find(late).input, write("a", "w"));
    }

    #[test]
    fn placeholder_differs_from_every_value_read() {
        let mut h = Builder::default();
        let lost = h.unknown(1, write("a", "lost"), 0, 1);
        h.write(2, "a", "(unobserved)", (2, 3), 1);
        h.read(3, "a", (4, 5), val("(unobserved)", 1));
        let mut ops = kv_operations(&h.events).expect("well formed");
        sharpen_unknowns(&mut ops);
        let lost = ops.iter().find(|op| op.id == lost).expect("op");
        assert_eq!(lost.input, write("a", "(unobserved)'"));
    }

    #[test]
    fn generic_check_without_partitions() {
        /// A counter whose increments return the new value.
        struct Counter;
        impl Model for Counter {
            type State = u64;
            type Input = ();
            type Output = u64;
            fn init(&self) -> u64 {
                0
            }
            fn step(&self, s: &u64, _: &(), out: &u64) -> Option<u64> {
                (*out == s + 1).then_some(s + 1)
            }
            fn step_unknown(&self, s: &u64, _: &()) -> u64 {
                s + 1
            }
        }
        let inc = |id, call, ret, out| Operation {
            id,
            client: id,
            input: (),
            call,
            end: End::Returned {
                time: ret,
                output: out,
            },
        };
        let ok = [inc(0, 0, 10, 2), inc(1, 1, 11, 1)];
        assert!(check(&Counter, &ok, &Budget::default()).is_ok());
        let bad = [inc(0, 0, 1, 2), inc(1, 2, 3, 1)];
        match check(&Counter, &bad, &Budget::default()) {
            Err(CheckError::Violation(v)) => assert_eq!(v.key, ""),
            other => panic!("expected a violation, got {other:?}"),
        }
    }
}
