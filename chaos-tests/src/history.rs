//! What concurrent clients did, and when: the input of the linearizability
//! checker ([`crate::linearizability`]).
//!
//! Each client wraps every request in [`History::invoke`] before sending it
//! and completes the returned [`PendingOp`] once it knows the outcome:
//!
//! - [`PendingOp::ok`]: the request returned a result (for a KV v2 check-and-
//!   set, a version mismatch is such a result, [`Output::CasMismatch`]: the
//!   node read the register and found another version);
//! - [`PendingOp::fail`]: the request definitely did not take effect, e.g. a
//!   400 or a refusal before anything was proposed to the log;
//! - [`PendingOp::unknown`]: a timeout, a lost connection or a 5xx. The write
//!   may or may not have been applied, and may even be applied later, so the
//!   checker gives it an open-ended return time. Dropping a `PendingOp`
//!   without completing it records the same, so a client that bails out with
//!   `?` never makes the history claim more than it knows.
//!
//! The operations model Sigil's KV version 2 engine as one versioned register
//! per key: a write creates version *previous + 1* (the first is 1), a
//! check-and-set writes only when the current version equals the expected
//! one (0: the key must not exist), and a read returns the latest version.
//!
//! ```
//! use sigil_chaos::history::{History, Op, Output, ReadResult, WriteResult};
//!
//! let history = History::new();
//! let op = history.invoke(1, Op::Write { key: "a".into(), value: "x".into() });
//! op.ok(WriteResult { version: 1 });
//! let op = history.invoke(2, Op::Read { key: "a".into() });
//! op.ok(ReadResult::Value { value: "x".into(), version: 1 });
//! assert_eq!(history.events().len(), 4);
//! let json = serde_json::to_string(&history.events()).expect("serialisable");
//! assert!(json.contains("\"write\""));
//! ```

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Who issued an operation. A client is sequential: it invokes its next
/// operation only after the previous one returned (or was given up on).
pub type ClientId = u64;

/// The identity of one operation within a history, in order of invocation.
pub type OpId = u64;

/// A request to the KV version 2 store. Keys and values are the path and the
/// secret's one field as plain strings: the checker only compares them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Read the latest version of `key`.
    Read {
        /// The key.
        key: String,
    },
    /// Write a new version of `key`, whatever the current one is.
    Write {
        /// The key.
        key: String,
        /// The value written.
        value: String,
    },
    /// Write a new version of `key` only if its current version is
    /// `expected_version` (0: only if the key does not exist).
    Cas {
        /// The key.
        key: String,
        /// The version the key must have for the write to happen.
        expected_version: u64,
        /// The value written.
        value: String,
    },
}

impl Op {
    /// The key the operation touches; operations on different keys are
    /// independent.
    pub fn key(&self) -> &str {
        match self {
            Op::Read { key } | Op::Write { key, .. } | Op::Cas { key, .. } => key,
        }
    }
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadResult {
    /// The key does not exist (no version was ever written).
    Absent,
    /// The latest version and its value.
    Value {
        /// The value.
        value: String,
        /// Its version, 1 for the first write.
        version: u64,
    },
}

/// What a successful write or check-and-set returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WriteResult {
    /// The version the write created.
    pub version: u64,
}

/// The result of an operation that returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// A [`Op::Read`] returned.
    Read(ReadResult),
    /// A [`Op::Write`] or [`Op::Cas`] created a version.
    Written(WriteResult),
    /// A [`Op::Cas`] found another version than the expected one and wrote
    /// nothing. It still happened: it observed the register.
    CasMismatch,
}

impl From<ReadResult> for Output {
    fn from(r: ReadResult) -> Self {
        Output::Read(r)
    }
}

impl From<WriteResult> for Output {
    fn from(w: WriteResult) -> Self {
        Output::Written(w)
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It returned this result.
    Ok(Output),
    /// It definitely did not take effect.
    Fail,
    /// It may or may not have taken effect, now or later.
    Unknown,
}

/// One entry of a history: an operation's invocation or its return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The operation this event belongs to.
    pub op: OpId,
    /// The client that issued it.
    pub client: ClientId,
    /// Nanoseconds since the history started. Strictly increasing along a
    /// history, so two events never share a time and "returned before the
    /// other was invoked" is a plain comparison.
    pub time_ns: u64,
    /// Invocation or return.
    pub kind: EventKind,
}

/// Whether an [`Event`] is an invocation or a return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The client sent the request.
    Invoke(Op),
    /// The client learnt the outcome (or gave up on learning it).
    Return(Outcome),
}

/// A thread-safe, cloneable recorder of client operations. Clones share one
/// history.
#[derive(Debug, Clone)]
pub struct History {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    log: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    events: Vec<Event>,
    next_op: OpId,
    last_ns: Option<u64>,
}

impl Log {
    /// The time of an event being appended now. Taken under the lock so
    /// that the order of the log is the order of the clock; bumped past the
    /// previous one so that no two events tie (a clock read twice within its
    /// resolution would otherwise make a return and a later invocation look
    /// concurrent, or worse, unordered).
    fn stamp(&mut self, start: Instant) -> u64 {
        let now = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let t = match self.last_ns {
            Some(last) if now <= last => last.saturating_add(1),
            _ => now,
        };
        self.last_ns = Some(t);
        t
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                start: Instant::now(),
                log: Mutex::new(Log::default()),
            }),
        }
    }

    /// Records that `client` is sending `op`. Call it right before sending
    /// the request, and complete the returned handle once the outcome is
    /// known.
    pub fn invoke(&self, client: ClientId, op: Op) -> PendingOp {
        let mut log = self.lock();
        let id = log.next_op;
        log.next_op += 1;
        let time_ns = log.stamp(self.inner.start);
        log.events.push(Event {
            op: id,
            client,
            time_ns,
            kind: EventKind::Invoke(op),
        });
        PendingOp {
            history: self.clone(),
            id,
            client,
            done: false,
        }
    }

    /// Every event so far, in the order (and time) they were recorded.
    /// Operations still pending have no return event; the checker treats
    /// them as unknown.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// Writes [`History::events`] to `path` as one pretty-printed JSON array,
    /// for inspecting a history the checker rejected.
    pub fn write_json(&self, path: &Path) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(&self.events()).map_err(io::Error::other)?;
        fs::write(path, json)
    }

    fn record_return(&self, op: OpId, client: ClientId, outcome: Outcome) {
        let mut log = self.lock();
        let time_ns = log.stamp(self.inner.start);
        log.events.push(Event {
            op,
            client,
            time_ns,
            kind: EventKind::Return(outcome),
        });
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A client that panicked while holding the lock left the log whole
        // (every push is a single step), so the history is still worth
        // checking.
        self.inner
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// An invoked operation waiting for its outcome. Complete it with
/// [`ok`](PendingOp::ok), [`fail`](PendingOp::fail) or
/// [`unknown`](PendingOp::unknown); dropping it records
/// [`Outcome::Unknown`].
#[must_use = "an operation dropped without an outcome is recorded as unknown"]
pub struct PendingOp {
    history: History,
    id: OpId,
    client: ClientId,
    done: bool,
}

impl fmt::Debug for PendingOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingOp")
            .field("id", &self.id)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl PendingOp {
    /// This operation's identity in the history.
    pub fn id(&self) -> OpId {
        self.id
    }

    /// The operation returned `output`.
    pub fn ok(self, output: impl Into<Output>) {
        self.finish(Outcome::Ok(output.into()));
    }

    /// A check-and-set found another version than the expected one: shorthand
    /// for `ok(Output::CasMismatch)`.
    pub fn cas_mismatch(self) {
        self.finish(Outcome::Ok(Output::CasMismatch));
    }

    /// The operation definitely did not take effect.
    pub fn fail(self) {
        self.finish(Outcome::Fail);
    }

    /// The operation may or may not have taken effect.
    pub fn unknown(self) {
        self.finish(Outcome::Unknown);
    }

    fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.history.record_return(self.id, self.client, outcome);
    }
}

impl Drop for PendingOp {
    fn drop(&mut self) {
        if !self.done {
            self.history
                .record_return(self.id, self.client, Outcome::Unknown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(key: &str) -> Op {
        Op::Read { key: key.into() }
    }

    #[test]
    fn records_invocations_and_returns_in_order() {
        let h = History::new();
        let a = h.invoke(1, read("k"));
        let b = h.invoke(2, read("k"));
        b.ok(ReadResult::Absent);
        a.fail();
        let events = h.events();
        let order: Vec<(OpId, bool)> = events
            .iter()
            .map(|e| (e.op, matches!(e.kind, EventKind::Invoke(_))))
            .collect();
        assert_eq!(order, vec![(0, true), (1, true), (1, false), (0, false)]);
        assert_eq!(events[3].kind, EventKind::Return(Outcome::Fail));
        assert_eq!(
            events[2].kind,
            EventKind::Return(Outcome::Ok(Output::Read(ReadResult::Absent)))
        );
        assert!(events.windows(2).all(|w| w[0].time_ns < w[1].time_ns));
    }

    #[test]
    fn dropped_op_is_unknown() {
        let h = History::new();
        drop(h.invoke(7, read("k")));
        let op = h.invoke(7, read("k"));
        op.unknown();
        let outcomes: Vec<_> = h
            .events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Return(o) => Some((e.op, e.client, o)),
                EventKind::Invoke(_) => None,
            })
            .collect();
        assert_eq!(
            outcomes,
            vec![(0, 7, Outcome::Unknown), (1, 7, Outcome::Unknown)]
        );
    }

    #[test]
    fn timestamps_strictly_increase_across_threads() {
        let h = History::new();
        let threads: Vec<_> = (0..4)
            .map(|c| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let op = h.invoke(c, read(&format!("k{i}")));
                        op.ok(WriteResult { version: i });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client thread");
        }
        let events = h.events();
        assert_eq!(events.len(), 4 * 200 * 2);
        assert!(events.windows(2).all(|w| w[0].time_ns < w[1].time_ns));
    }

    #[test]
    fn round_trips_through_json() {
        let h = History::new();
        h.invoke(
            1,
            Op::Cas {
                key: "k".into(),
                expected_version: 0,
                value: "v".into(),
            },
        )
        .cas_mismatch();
        h.invoke(
            2,
            Op::Write {
                key: "k".into(),
                value: "w".into(),
            },
        )
        .ok(WriteResult { version: 2 });
        let events = h.events();
        let json = serde_json::to_string(&events).expect("serialise");
        let back: Vec<Event> = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, events);

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("history.json");
        h.write_json(&path).expect("write");
        let read: Vec<Event> =
            serde_json::from_slice(&fs::read(&path).expect("read")).expect("parse");
        assert_eq!(read, events);
    }
}
