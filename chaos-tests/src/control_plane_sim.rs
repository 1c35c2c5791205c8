//! `sigil-chaos simulate control-plane`: a deterministic simulation of a
//! federation's control plane. The cells run the real replica
//! (`sigil_control_plane::Replica`), the real serving step
//! (`sync::Serving`) and the real wire encoding (`sync::wire`), on a
//! simulated network and clock: per-link latency and jitter, partitions
//! between random groups of cells, cells crashing and coming back from
//! their durable state (what was applied survives, buffered early ops do
//! not), and logs short enough that long partitions end in whole-state
//! resyncs. Writes go on throughout. At the end every fault is healed and
//! the run checks that every replica is identical. The same seed gives the
//! same run, message for message.
//!
//! What it does not simulate: Raft inside a cell (each cell is one
//! replica, and a write is durable when applied), TLS, and the tonic
//! runtime of `sync::pull` (its three-way dispatch of replies is repeated
//! here).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use sigil_control_plane::model::PolicyDoc;
use sigil_control_plane::replica::{Limits, Parts};
use sigil_control_plane::sync::{Reply, Request, Serving, wire};
use sigil_control_plane::{CellId, Key, Replica, Value};

use crate::scenario::Rng;

/// Milliseconds since the epoch at simulated time 0.
const EPOCH_MS: u64 = 1_800_000_000_000;
/// How often a puller sends its digest.
const DIGEST_EVERY_MS: u64 = 2_000;
/// Reconnect back-off bounds.
const RETRY_MIN_MS: u64 = 200;
const RETRY_MAX_MS: u64 = 5_000;
/// Policies the writes spread over.
const KEYS: u64 = 12;

/// How to run the simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub cells: usize,
    pub seed: u64,
    /// Simulated seconds of writes and faults before the final heal.
    pub seconds: u64,
    /// Writes per simulated second, over all cells.
    pub writes_per_sec: u64,
    /// Ops each replica keeps per origin (small, so partitions end in
    /// whole-state resyncs).
    pub log_per_origin: usize,
    /// Random faults (partitions, crashes) during the run.
    pub random_faults: bool,
    /// A planned outage: `(cell, from second, for seconds)`.
    pub outage: Option<(usize, u64, u64)>,
}

/// What a run found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimReport {
    pub seed: u64,
    pub cells: usize,
    pub writes: u64,
    pub partitions: u64,
    pub crashes: u64,
    pub messages: u64,
    pub bytes: u64,
    pub entries_sent: u64,
    pub states_sent: u64,
    /// Simulated ms from the final heal until every replica was identical.
    pub heal_to_identical_ms: Option<u64>,
    pub identical: bool,
    /// Each cell's version vector and state digest at the end.
    pub replicas: Vec<String>,
}

impl std::fmt::Display for SimReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulate control-plane (seed {}): {}",
            self.seed,
            if self.identical { "PASSED" } else { "FAILED" }
        )?;
        writeln!(
            f,
            "  {} cells, {} writes, {} partitions, {} crashes",
            self.cells, self.writes, self.partitions, self.crashes
        )?;
        writeln!(
            f,
            "  {} messages, {} payload bytes, {} ops and {} whole states sent",
            self.messages, self.bytes, self.entries_sent, self.states_sent
        )?;
        match self.heal_to_identical_ms {
            Some(ms) => writeln!(
                f,
                "  identical replicas {ms} ms (simulated) after the final heal"
            )?,
            None => writeln!(f, "  replicas still differ")?,
        }
        for r in &self.replicas {
            writeln!(f, "  {r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Event {
    Write,
    /// Puller `a` tries to open its stream to `b`.
    Connect {
        a: usize,
        b: usize,
    },
    /// Puller `a`'s periodic digest on stream `(a, b)`.
    Tick {
        a: usize,
        b: usize,
        epoch: u64,
    },
    /// A request from `a` arrives at `b`.
    ToServer {
        a: usize,
        b: usize,
        epoch: u64,
        req: Request,
    },
    /// A reply from `b` arrives at `a`.
    ToPuller {
        a: usize,
        b: usize,
        epoch: u64,
        reply: Reply,
    },
    Fault,
    /// A planned outage of `cell`.
    Crash {
        cell: usize,
        for_ms: u64,
    },
    Recover {
        cell: usize,
    },
}

struct Stream {
    open: bool,
    epoch: u64,
    serving: Serving,
    retry_ms: u64,
    /// In-order delivery per direction, as TCP gives.
    last_to_server: u64,
    last_to_puller: u64,
}

struct Sim {
    now: u64,
    rng: Rng,
    replicas: Vec<Replica>,
    up: Vec<bool>,
    cut: BTreeSet<(usize, usize)>,
    /// Base one-way latency per unordered pair.
    latency: BTreeMap<(usize, usize), u64>,
    streams: BTreeMap<(usize, usize), Stream>,
    queue: BTreeMap<(u64, u64), Event>,
    seq: u64,
    writing: bool,
    random_faults: bool,
    rate: u64,
    limits: Limits,
    report: SimReport,
}

fn cell_id(i: usize) -> CellId {
    CellId::new(format!("cell-{i}")).unwrap_or_else(|e| unreachable!("{e}"))
}

impl Sim {
    fn at(&mut self, t: u64, e: Event) {
        self.seq += 1;
        self.queue.insert((t, self.seq), e);
    }

    fn pair(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.up[a] && self.up[b] && !self.cut.contains(&Self::pair(a, b))
    }

    fn delay(&mut self, a: usize, b: usize) -> u64 {
        let base = self.latency[&Self::pair(a, b)];
        base + self.rng.below(base / 5 + 1)
    }

    fn break_stream(&mut self, a: usize, b: usize) {
        let was_open = self.streams.get(&(a, b)).is_some_and(|s| s.open);
        if let Some(s) = self.streams.get_mut(&(a, b)) {
            s.open = false;
            s.epoch += 1;
        }
        if was_open && self.up[a] {
            let retry = self.streams[&(a, b)].retry_ms;
            self.at(self.now + retry, Event::Connect { a, b });
        }
    }

    fn send_digest(&mut self, a: usize, b: usize) {
        let req = Request {
            digest: self.replicas[a].digest(),
        };
        // Through the real wire encoding, both ways.
        let pb = wire::request_to_pb(&req);
        self.report.messages += 1;
        self.report.bytes += pb.digest.len() as u64;
        let Ok(req) = wire::request_from_pb(&pb) else {
            return;
        };
        let d = self.delay(a, b);
        let s = self.streams.get_mut(&(a, b)).expect("stream");
        let t = (self.now + d).max(s.last_to_server);
        s.last_to_server = t;
        let epoch = s.epoch;
        self.at(t, Event::ToServer { a, b, epoch, req });
    }

    fn send_replies(&mut self, a: usize, b: usize, replies: Vec<Reply>) {
        for reply in replies {
            let pb = wire::reply_to_pb(&reply);
            self.report.messages += 1;
            self.report.bytes += wire::payload_len(&pb) as u64;
            match &reply {
                Reply::Entries(es) => self.report.entries_sent += es.len() as u64,
                Reply::State(_) => self.report.states_sent += 1,
                Reply::Digest(_) => {}
            }
            let Ok(reply) = wire::reply_from_pb(&pb) else {
                continue;
            };
            let d = self.delay(a, b);
            let s = self.streams.get_mut(&(a, b)).expect("stream");
            let t = (self.now + d).max(s.last_to_puller);
            s.last_to_puller = t;
            let epoch = s.epoch;
            self.at(t, Event::ToPuller { a, b, epoch, reply });
        }
    }

    /// Cell `b`'s replica changed: push to every open stream it serves.
    fn changed(&mut self, b: usize) {
        let pullers: Vec<usize> = self
            .streams
            .iter()
            .filter(|((_, s), st)| *s == b && st.open)
            .map(|((a, _), _)| *a)
            .collect();
        for a in pullers {
            let replies = {
                let st = self.streams.get_mut(&(a, b)).expect("stream");
                st.serving.on_change(&self.replicas[b])
            };
            self.send_replies(a, b, replies);
        }
    }

    fn handle(&mut self, e: Event) {
        let now_ms = EPOCH_MS + self.now;
        match e {
            Event::Write => {
                if self.writing {
                    let gap = 1_000 / self.rate;
                    self.at(self.now + gap.max(1), Event::Write);
                }
                let cells = self.replicas.len() as u64;
                let c = self.rng.below(cells) as usize;
                if !self.up[c] {
                    return;
                }
                let k = self.rng.below(KEYS);
                let value = if self.rng.below(8) == 0 {
                    None
                } else {
                    Some(Value::Policy(PolicyDoc {
                        text: format!("path \"k{k}/c{c}/{}\" {{}}", self.report.writes),
                    }))
                };
                let key = Key::Policy {
                    name: format!("p{k}"),
                };
                if self.replicas[c].originate(key, value, now_ms).is_ok() {
                    self.report.writes += 1;
                    self.changed(c);
                }
            }
            Event::Connect { a, b } => {
                if !self.up[a] {
                    return;
                }
                if self.streams[&(a, b)].open {
                    return;
                }
                if !self.linked(a, b) {
                    let st = self.streams.get_mut(&(a, b)).expect("stream");
                    st.retry_ms = (st.retry_ms * 2).min(RETRY_MAX_MS);
                    let retry = st.retry_ms;
                    self.at(self.now + retry, Event::Connect { a, b });
                    return;
                }
                let st = self.streams.get_mut(&(a, b)).expect("stream");
                st.open = true;
                st.epoch += 1;
                st.serving = Serving::new(512);
                st.retry_ms = RETRY_MIN_MS;
                let epoch = st.epoch;
                self.send_digest(a, b);
                self.at(self.now + DIGEST_EVERY_MS, Event::Tick { a, b, epoch });
            }
            Event::Tick { a, b, epoch } => {
                if self.streams[&(a, b)].epoch == epoch && self.streams[&(a, b)].open {
                    self.send_digest(a, b);
                    self.at(self.now + DIGEST_EVERY_MS, Event::Tick { a, b, epoch });
                }
            }
            Event::ToServer { a, b, epoch, req } => {
                if self.streams[&(a, b)].epoch != epoch || !self.linked(a, b) {
                    return;
                }
                let replies = {
                    let st = self.streams.get_mut(&(a, b)).expect("stream");
                    st.serving.on_request(&self.replicas[b], &req)
                };
                self.send_replies(a, b, replies);
            }
            Event::ToPuller { a, b, epoch, reply } => {
                if self.streams[&(a, b)].epoch != epoch || !self.linked(a, b) {
                    return;
                }
                let before = self.replicas[a].digest();
                let ok = match reply {
                    Reply::Entries(es) => self.replicas[a].receive(es, now_ms).is_ok(),
                    Reply::State(s) => self.replicas[a].merge_snapshot(*s, now_ms).is_ok(),
                    Reply::Digest(_) => true,
                };
                if !ok {
                    self.break_stream(a, b);
                    return;
                }
                if self.replicas[a].digest() != before {
                    self.changed(a);
                }
            }
            Event::Fault => self.fault(),
            Event::Crash { cell, for_ms } => self.crash(cell, for_ms),
            Event::Recover { cell } => self.recover(cell),
        }
    }

    fn fault(&mut self) {
        if !self.writing || !self.random_faults {
            return;
        }
        let next = self.now + 2_000 + self.rng.below(6_000);
        self.at(next, Event::Fault);
        let n = self.replicas.len();
        match self.rng.below(4) {
            // A partition: a random group against the rest.
            0 | 1 => {
                let group: Vec<usize> = (0..n).filter(|_| self.rng.below(2) == 0).collect();
                if group.is_empty() || group.len() == n {
                    return;
                }
                self.report.partitions += 1;
                for &a in &group {
                    for b in (0..n).filter(|b| !group.contains(b)) {
                        self.cut.insert(Self::pair(a, b));
                        self.break_stream(a, b);
                        self.break_stream(b, a);
                    }
                }
            }
            // Heal every partition.
            2 => self.cut.clear(),
            // A cell crashes and comes back later from its durable state.
            _ => {
                let c = self.rng.below(n as u64) as usize;
                let for_ms = 1_000 + self.rng.below(20_000);
                self.crash(c, for_ms);
            }
        }
    }

    fn crash(&mut self, c: usize, for_ms: u64) {
        if !self.up[c] {
            return;
        }
        self.report.crashes += 1;
        self.up[c] = false;
        for o in (0..self.replicas.len()).filter(|o| *o != c) {
            self.break_stream(c, o);
            self.break_stream(o, c);
        }
        self.at(self.now + for_ms, Event::Recover { cell: c });
    }

    fn recover(&mut self, c: usize) {
        if self.up[c] {
            return;
        }
        // What was applied is durable; early ops waiting in memory are lost.
        let r = &self.replicas[c];
        let parts = Parts {
            state: r.state().clone(),
            applied: r.applied().clone(),
            log: (0..self.replicas.len())
                .flat_map(|o| r.log(&cell_id(o)).cloned().collect::<Vec<_>>())
                .collect(),
            hlc: r.hlc(),
        };
        self.replicas[c] = Replica::restore(cell_id(c), parts, self.limits);
        self.up[c] = true;
        for o in (0..self.replicas.len()).filter(|o| *o != c) {
            if let Some(s) = self.streams.get_mut(&(c, o)) {
                s.retry_ms = RETRY_MIN_MS;
            }
            self.at(self.now + RETRY_MIN_MS, Event::Connect { a: c, b: o });
        }
    }

    fn identical(&self) -> bool {
        let first = self.replicas[0].digest();
        self.replicas.iter().all(|r| r.digest() == first)
    }
}

/// Runs the simulation.
pub fn run(config: &SimConfig) -> SimReport {
    let n = config.cells.max(2);
    let limits = Limits {
        log_per_origin: config.log_per_origin.max(1),
        ..Limits::default()
    };
    let mut rng = Rng::new(config.seed);
    let mut latency = BTreeMap::new();
    for a in 0..n {
        for b in a + 1..n {
            // Inter-region one-way latency, 30 to 150 ms.
            latency.insert((a, b), 30 + rng.below(121));
        }
    }
    let mut streams = BTreeMap::new();
    for a in 0..n {
        for b in 0..n {
            if a != b {
                streams.insert(
                    (a, b),
                    Stream {
                        open: false,
                        epoch: 0,
                        serving: Serving::new(512),
                        retry_ms: RETRY_MIN_MS,
                        last_to_server: 0,
                        last_to_puller: 0,
                    },
                );
            }
        }
    }
    let mut sim = Sim {
        now: 0,
        rng,
        replicas: (0..n).map(|i| Replica::new(cell_id(i), limits)).collect(),
        up: vec![true; n],
        cut: BTreeSet::new(),
        latency,
        streams,
        queue: BTreeMap::new(),
        seq: 0,
        writing: true,
        random_faults: config.random_faults,
        rate: config.writes_per_sec.max(1),
        limits,
        report: SimReport {
            seed: config.seed,
            cells: n,
            writes: 0,
            partitions: 0,
            crashes: 0,
            messages: 0,
            bytes: 0,
            entries_sent: 0,
            states_sent: 0,
            heal_to_identical_ms: None,
            identical: false,
            replicas: Vec::new(),
        },
    };
    for a in 0..n {
        for b in 0..n {
            if a != b {
                sim.at(0, Event::Connect { a, b });
            }
        }
    }
    sim.at(1, Event::Write);
    sim.at(1_000, Event::Fault);
    if let Some((cell, from_s, for_s)) = config.outage {
        sim.at(
            from_s * 1_000,
            Event::Crash {
                cell: cell.min(n - 1),
                for_ms: for_s * 1_000,
            },
        );
    }
    let end_of_faults = config.seconds * 1_000;
    let give_up = end_of_faults + 300_000;
    let mut healed = false;
    while let Some(((t, _), e)) = sim.queue.pop_first() {
        if t > give_up {
            break;
        }
        if !healed && t >= end_of_faults {
            // The final heal: no more writes or faults, every cell back.
            healed = true;
            sim.now = end_of_faults;
            sim.writing = false;
            sim.cut.clear();
            for c in 0..n {
                sim.recover(c);
            }
        }
        sim.now = t;
        sim.handle(e);
        if healed && sim.identical() {
            sim.report.heal_to_identical_ms = Some(sim.now.saturating_sub(end_of_faults));
            break;
        }
    }
    sim.report.identical = sim.identical();
    sim.report.replicas = sim
        .replicas
        .iter()
        .map(|r| {
            let d = r.digest();
            let vv: Vec<String> = d
                .applied
                .iter()
                .map(|dot| format!("{}:{}", dot.actor, dot.counter))
                .collect();
            format!(
                "{}: {} keys, {} state {}",
                r.me(),
                r.state().len(),
                vv.join(" "),
                hex_prefix(&d.state)
            )
        })
        .collect();
    sim.report
}

fn hex_prefix(bytes: &[u8; 32]) -> String {
    bytes[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The report's figures as one JSON object.
pub fn to_json(report: &SimReport) -> serde_json::Value {
    json!({
        "simulation": "control-plane",
        "seed": report.seed,
        "cells": report.cells,
        "writes": report.writes,
        "partitions": report.partitions,
        "crashes": report.crashes,
        "messages": report.messages,
        "bytes": report.bytes,
        "entries_sent": report.entries_sent,
        "states_sent": report.states_sent,
        "heal_to_identical_ms": report.heal_to_identical_ms,
        "identical": report.identical,
        "converged_fraction": if report.identical { 1.0 } else { 0.0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> SimConfig {
        SimConfig {
            cells: 5,
            seed,
            seconds: 60,
            writes_per_sec: 20,
            log_per_origin: 50,
            random_faults: true,
            outage: None,
        }
    }

    #[test]
    fn five_cells_with_partitions_and_crashes_end_identical() {
        for seed in [1, 2, 3, 42] {
            let r = run(&config(seed));
            assert!(r.identical, "seed {seed}: {r}");
            assert!(r.writes > 500, "seed {seed}: {r}");
            assert!(
                r.partitions + r.crashes > 3,
                "seed {seed}: faults happened: {r}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let a = run(&config(7));
        let b = run(&config(7));
        assert_eq!(a.replicas, b.replicas);
        assert_eq!((a.messages, a.bytes), (b.messages, b.bytes));
        let c = run(&config(8));
        assert_ne!(a.replicas, c.replicas, "another seed, another run");
    }

    #[test]
    fn a_cell_down_for_an_hour_catches_up() {
        // Three cells; the third is down from 10 s to 3,610 s while the
        // others take their share of 5 writes a second: some 12,000 ops,
        // far more than the 200 each log keeps, so it catches up through a
        // whole state.
        let r = run(&SimConfig {
            cells: 3,
            seed: 3,
            seconds: 3_700,
            writes_per_sec: 5,
            log_per_origin: 200,
            random_faults: false,
            outage: Some((2, 10, 3_600)),
        });
        assert!(r.identical, "{r}");
        assert_eq!(r.crashes, 1, "{r}");
        assert!(r.writes > 10_000, "{r}");
        assert!(r.states_sent > 0, "caught up by a whole state: {r}");
    }

    #[test]
    fn long_partitions_with_short_logs_resync_whole_states() {
        let r = run(&SimConfig {
            log_per_origin: 5,
            ..config(11)
        });
        assert!(r.identical, "{r}");
        assert!(r.states_sent > 0, "{r}");
    }
}
