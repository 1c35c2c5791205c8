//! `sigil-chaos simulate revocation`: a deterministic simulation of the
//! revocation mesh. Every node runs the real broadcast core
//! (`sigil_gossip::broadcast::Node`: filter, rumours, anti-entropy) and
//! every message is really encoded (`Message::encode`, for the byte
//! counts); the network and the clock are simulated: per-message latency
//! (about 1 ms within a cell, a fixed 30–150 ms per pair of cells, each
//! with ±10% jitter), independent loss, and an optional partition that
//! isolates some cells from the rest for a while. One revocation is
//! committed at a node of cell 0; the run records when each node first
//! enforces it. The same seed gives the same run, message for message.
//!
//! What it does not simulate: membership (every node knows every other
//! and keeps sending to partitioned nodes, which wastes sends a failure
//! detector would avoid: the figures are, if anything, pessimistic), the
//! gRPC streams (a message is one delivery, lost or not), and the durable
//! commit in each cell.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

use serde_json::json;
use sigil_gossip::broadcast::{Message, Node, Peer, Random, Settings, SplitMix64};
use sigil_gossip::{Kind, Revocation, Target};

/// Milliseconds since the epoch at simulated time 0.
const EPOCH_MS: u64 = 1_800_000_000_000;

/// Cells cut off from the others for a while (they still reach each
/// other).
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub cells: usize,
    pub seconds: u64,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub cells: usize,
    /// Probability that a message is lost, 0 to 1.
    pub loss: f64,
    pub seed: u64,
    /// The last `cells` cells are cut off for `seconds`, starting 1 s
    /// before the revocation is committed.
    pub partition: Option<Partition>,
    pub tick_ms: u64,
    pub anti_entropy_ms: u64,
    /// How often a node's digest summary is published to the others (the
    /// nodes' membership interval): anti-entropy is aimed at peers whose
    /// last published summary differs, as in the node runtime.
    pub membership_ms: u64,
    pub settings: Settings,
}

impl SimConfig {
    pub fn new(nodes: usize, cells: usize, loss: f64, seed: u64) -> Self {
        Self {
            nodes,
            cells,
            loss,
            seed,
            partition: None,
            tick_ms: 20,
            anti_entropy_ms: 1_000,
            membership_ms: 500,
            settings: Settings::default(),
        }
    }
}

/// Enforcement times of one group of nodes, in milliseconds from its
/// reference point (the commit, or the heal).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Spread {
    pub nodes: usize,
    pub reached: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
    pub within_250_ms: f64,
    pub within_500_ms: f64,
    pub within_1_s: f64,
    pub within_1_5_s: f64,
    pub within_2_s: f64,
}

impl Spread {
    fn of(times: Vec<Option<u64>>) -> Self {
        let nodes = times.len();
        // A node never reached ranks last, as if it took forever.
        let mut all: Vec<u64> = times.iter().map(|t| t.unwrap_or(u64::MAX)).collect();
        all.sort_unstable();
        let reached: Vec<u64> = all.iter().copied().filter(|t| *t != u64::MAX).collect();
        let pct = |q: f64| -> u64 {
            if reached.is_empty() {
                return 0;
            }
            crate::latency::percentile(&all, q * 100.0).unwrap_or(u64::MAX)
        };
        let within = |ms: u64| reached.iter().filter(|t| **t <= ms).count() as f64 / nodes as f64;
        Self {
            nodes,
            reached: reached.len(),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: if reached.len() == nodes {
                reached.last().copied().unwrap_or(0)
            } else {
                u64::MAX
            },
            within_250_ms: within(250),
            within_500_ms: within(500),
            within_1_s: within(1_000),
            within_1_5_s: within(1_500),
            within_2_s: within(2_000),
        }
    }

    fn line(&self, from: &str) -> String {
        let max = if self.max_ms == u64::MAX {
            "never (not all reached)".to_owned()
        } else {
            format!("{} ms", self.max_ms)
        };
        format!(
            "{from} → enforced, {} nodes: p50 {} ms, p99 {} ms, max {max}\n  \
             converged by 250 ms {:.1}%, 500 ms {:.1}%, 1 s {:.1}%, 1.5 s {:.1}%, 2 s {:.1}%",
            self.nodes,
            self.p50_ms,
            self.p99_ms,
            self.within_250_ms * 100.0,
            self.within_500_ms * 100.0,
            self.within_1_s * 100.0,
            self.within_1_5_s * 100.0,
            self.within_2_s * 100.0,
        )
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SimReport {
    pub seed: u64,
    pub nodes: usize,
    pub cells: usize,
    pub loss: f64,
    pub tick_ms: u64,
    pub anti_entropy_ms: u64,
    pub fanout_local: usize,
    pub fanout_remote: usize,
    pub rounds: u32,
    /// Nodes that could hear the revocation when it was committed.
    pub from_commit: Spread,
    /// Nodes cut off when it was committed, from the heal.
    pub from_heal: Option<Spread>,
    pub partitioned_cells: usize,
    pub partition_seconds: u64,
    /// Simulated time from the commit until the last node enforced it.
    pub all_enforced_ms: Option<u64>,
    pub messages_per_node: f64,
    pub rumour_messages_per_node: f64,
    pub anti_entropy_messages_per_node: f64,
    pub bytes_per_node: f64,
    pub lost_messages: u64,
}

impl SimReport {
    pub fn converged(&self) -> bool {
        self.all_enforced_ms.is_some()
    }
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "revocation simulation: {} nodes in {} cells, loss {:.1}%, seed {}",
            self.nodes,
            self.cells,
            self.loss * 100.0,
            self.seed
        )?;
        writeln!(
            f,
            "  tick {} ms, fanout {} in-cell + {} other cells, {} rounds, anti-entropy every {} ms",
            self.tick_ms, self.fanout_local, self.fanout_remote, self.rounds, self.anti_entropy_ms
        )?;
        writeln!(
            f,
            "  latency: ~1 ms within a cell, 30–150 ms between cells (±10%)"
        )?;
        writeln!(f, "  {}", self.from_commit.line("commit"))?;
        if let Some(h) = &self.from_heal {
            writeln!(
                f,
                "  {} cells cut off for {} s; {}",
                self.partitioned_cells,
                self.partition_seconds,
                h.line("heal")
            )?;
        }
        writeln!(
            f,
            "  per node: {:.1} messages ({:.1} rumour, {:.1} anti-entropy), {:.1} KB; {} messages lost",
            self.messages_per_node,
            self.rumour_messages_per_node,
            self.anti_entropy_messages_per_node,
            self.bytes_per_node / 1024.0,
            self.lost_messages
        )?;
        match self.all_enforced_ms {
            Some(ms) => writeln!(f, "  every node enforced it {ms} ms after the commit"),
            None => writeln!(f, "  NOT every node enforced it"),
        }
    }
}

pub fn to_json(r: &SimReport) -> String {
    json!(r).to_string()
}

#[derive(Debug)]
enum Event {
    Commit,
    Tick(usize),
    AntiEntropy(usize),
    /// A node's digest summary reaches the others' membership state.
    Publish(usize),
    Deliver {
        from: usize,
        to: usize,
        msg: Message,
    },
}

struct Sim {
    cfg: SimConfig,
    rng: SplitMix64,
    nodes: Vec<Node>,
    cell_of: Vec<usize>,
    peers: Vec<Peer>,
    /// Base latency between cells, microseconds.
    inter_us: Vec<Vec<u64>>,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Event>>,
    seq: u64,
    enforced_at_us: Vec<Option<u64>>,
    rumour_msgs: u64,
    ae_msgs: u64,
    bytes: u64,
    lost: u64,
    /// Cut off: cells `cut_from..` during `[cut_start, cut_end)` (µs).
    cut: Option<(usize, u64, u64)>,
    /// Each node's digest summary as last published, and as last published
    /// before the cut began (what the other side of a cut still sees).
    published: Vec<Option<u64>>,
    published_before_cut: Vec<Option<u64>>,
}

impl Sim {
    fn at(&mut self, t_us: u64, e: Event) {
        self.seq += 1;
        self.events.push(Some(e));
        self.queue
            .push(Reverse((t_us, self.seq, self.events.len() - 1)));
    }

    fn cut_between(&self, a: usize, b: usize, t_us: u64) -> bool {
        match self.cut {
            Some((from, start, end)) if (start..end).contains(&t_us) => {
                (self.cell_of[a] >= from) != (self.cell_of[b] >= from)
            }
            _ => false,
        }
    }

    fn send(&mut self, now: u64, from: usize, to: usize, msg: Message) {
        let rumour = matches!(msg, Message::Rumours(_));
        if rumour {
            self.rumour_msgs += 1;
        } else {
            self.ae_msgs += 1;
        }
        self.bytes += msg.encode().len() as u64;
        if self.rng.unit() < self.cfg.loss || self.cut_between(from, to, now) {
            self.lost += 1;
            return;
        }
        let (ca, cb) = (self.cell_of[from], self.cell_of[to]);
        let base = if ca == cb {
            1_000
        } else {
            self.inter_us[ca][cb]
        };
        // ±10% jitter.
        let jitter = (self.rng.unit() * 0.2 - 0.1) * base as f64;
        let delay = (base as f64 + jitter).max(1.0) as u64;
        self.at(now + delay, Event::Deliver { from, to, msg });
    }

    /// Node `i`'s gossip round at `now`, and its next one.
    fn tick(&mut self, i: usize, now: u64, every_us: u64) {
        let out = {
            let Sim {
                nodes, peers, rng, ..
            } = self;
            nodes[i].tick(peers, rng)
        };
        for (p, msg) in out {
            self.send(now, i, peer_index(&p), msg);
        }
        self.at(now + every_us, Event::Tick(i));
    }

    fn enforce(&mut self, node: usize, now: u64) {
        if self.enforced_at_us[node].is_none() {
            self.enforced_at_us[node] = Some(now);
        }
    }
}

/// Runs one simulation.
pub fn run(cfg: &SimConfig) -> SimReport {
    let nodes_n = cfg.nodes.max(2);
    let cells = cfg.cells.clamp(1, nodes_n);
    let mut rng = SplitMix64::new(cfg.seed);
    let cell_of: Vec<usize> = (0..nodes_n).map(|i| i % cells).collect();
    let peers: Vec<Peer> = (0..nodes_n)
        .map(|i| Peer {
            id: format!("n{i}"),
            cell: format!("c{}", cell_of[i]),
        })
        .collect();
    let nodes: Vec<Node> = peers
        .iter()
        .map(|p| Node::new(p.id.clone(), p.cell.clone(), cfg.settings))
        .collect();
    let mut inter_us = vec![vec![0u64; cells]; cells];
    let pairs = (0..cells).flat_map(|a| (a + 1..cells).map(move |b| (a, b)));
    for (a, b) in pairs {
        let us = ((30.0 + rng.unit() * 120.0) * 1_000.0) as u64;
        inter_us[a][b] = us;
        inter_us[b][a] = us;
    }
    // The revocation is committed at 2 s; a partition starts 1 s before.
    let commit_us = 2_000_000u64;
    let cut = cfg.partition.as_ref().and_then(|p| {
        let cut_cells = p.cells.min(cells.saturating_sub(1));
        (cut_cells > 0).then(|| {
            (
                cells - cut_cells,
                commit_us - 1_000_000,
                commit_us - 1_000_000 + p.seconds * 1_000_000,
            )
        })
    });
    let end_us = cut.map_or(commit_us, |(_, _, end)| end.max(commit_us)) + 30_000_000;
    let mut sim = Sim {
        cfg: cfg.clone(),
        rng,
        nodes,
        cell_of,
        peers,
        inter_us,
        queue: BinaryHeap::new(),
        events: Vec::new(),
        seq: 0,
        enforced_at_us: vec![None; nodes_n],
        rumour_msgs: 0,
        ae_msgs: 0,
        bytes: 0,
        lost: 0,
        cut,
        published: vec![None; nodes_n],
        published_before_cut: vec![None; nodes_n],
    };
    let tick_us = cfg.tick_ms.max(1) * 1_000;
    let ae_us = cfg.anti_entropy_ms.max(1) * 1_000;
    let pub_us = cfg.membership_ms.max(1) * 1_000;
    for i in 0..nodes_n {
        let phase = sim.rng.below(tick_us as usize) as u64;
        sim.at(phase, Event::Tick(i));
        let phase = sim.rng.below(ae_us as usize) as u64;
        sim.at(phase, Event::AntiEntropy(i));
        let phase = sim.rng.below(pub_us as usize) as u64;
        sim.at(phase, Event::Publish(i));
    }
    sim.at(commit_us, Event::Commit);
    let record = Revocation {
        id: format!("rev-{:016x}", cfg.seed),
        kind: Kind::Revoke,
        target: Target::Identity("spiffe://prod.example/ns/payments/*".into()),
        reason: "simulated compromise".into(),
        issued_at_ms: EPOCH_MS + commit_us / 1_000,
        expires_ms: EPOCH_MS + end_us / 1_000 + 3_600_000,
        lifted: false,
    };
    let mut all_done_at: Option<u64> = None;
    while let Some(Reverse((now, _, idx))) = sim.queue.pop() {
        if now > end_us {
            break;
        }
        let Some(event) = sim.events[idx].take() else {
            continue;
        };
        match event {
            Event::Commit => {
                let _ = sim.nodes[0].learn(record.clone(), true);
                sim.enforce(0, now);
            }
            Event::Tick(i) => sim.tick(i, now, tick_us),
            Event::Publish(i) => {
                let summary = Some(sim.nodes[i].digest().summary());
                sim.published[i] = summary;
                let cutting = sim
                    .cut
                    .is_some_and(|(_, start, end)| (start..end).contains(&now));
                if !cutting {
                    sim.published_before_cut[i] = summary;
                }
                sim.at(now + pub_us, Event::Publish(i));
            }
            Event::AntiEntropy(i) => {
                // What node i's membership shows of every peer's summary:
                // across an active cut, only what was published before it.
                let view: Vec<(Peer, Option<u64>)> = (0..sim.peers.len())
                    .map(|j| {
                        let seen = if sim.cut_between(i, j, now) {
                            sim.published_before_cut[j]
                        } else {
                            sim.published[j]
                        };
                        (sim.peers[j].clone(), seen)
                    })
                    .collect();
                let out = {
                    let Sim { nodes, rng, .. } = &mut sim;
                    nodes[i].anti_entropy_towards(&view, rng)
                };
                if let Some((p, msg)) = out {
                    let to = peer_index(&p);
                    sim.send(now, i, to, msg);
                }
                sim.at(now + ae_us, Event::AntiEntropy(i));
            }
            Event::Deliver { from, to, msg } => {
                let got = sim.nodes[to].receive(msg);
                if got.applied.iter().any(|r| r.id == record.id) {
                    sim.enforce(to, now);
                }
                // A reply goes back over the stream the message came on.
                if let Some(reply) = got.reply {
                    sim.send(now, to, from, reply);
                }
            }
        }
        if all_done_at.is_none() && sim.enforced_at_us.iter().all(Option::is_some) {
            all_done_at = Some(now);
            // A little longer, so message counts include the tail of the
            // rumours already in flight.
            let stop = now + 2_000_000;
            sim.at(stop, Event::Commit);
            while let Some(Reverse((t, _, idx))) = sim.queue.pop() {
                if t >= stop {
                    break;
                }
                if let Some(Event::Tick(i)) = sim.events[idx].take() {
                    sim.tick(i, t, tick_us);
                }
            }
            break;
        }
    }
    let heal_us = cut.map(|(_, _, end)| end);
    let cut_from = cut.map(|(from, _, _)| from);
    let (mut commit_group, mut heal_group) = (Vec::new(), Vec::new());
    for i in 0..nodes_n {
        let t = sim.enforced_at_us[i];
        match (cut_from, heal_us) {
            (Some(from), Some(heal)) if sim.cell_of[i] >= from => {
                heal_group.push(t.map(|t| t.saturating_sub(heal) / 1_000));
            }
            _ => commit_group.push(t.map(|t| t.saturating_sub(commit_us) / 1_000)),
        }
    }
    let n = nodes_n as f64;
    SimReport {
        seed: cfg.seed,
        nodes: nodes_n,
        cells,
        loss: cfg.loss,
        tick_ms: cfg.tick_ms,
        anti_entropy_ms: cfg.anti_entropy_ms,
        fanout_local: cfg.settings.fanout_local,
        fanout_remote: cfg.settings.fanout_remote,
        rounds: cfg.settings.rounds(nodes_n - 1),
        from_commit: Spread::of(commit_group),
        from_heal: cut.map(|_| Spread::of(heal_group)),
        partitioned_cells: cfg.partition.as_ref().map_or(0, |p| p.cells),
        partition_seconds: cfg.partition.as_ref().map_or(0, |p| p.seconds),
        all_enforced_ms: all_done_at.map(|t| t.saturating_sub(commit_us) / 1_000),
        messages_per_node: (sim.rumour_msgs + sim.ae_msgs) as f64 / n,
        rumour_messages_per_node: sim.rumour_msgs as f64 / n,
        anti_entropy_messages_per_node: sim.ae_msgs as f64 / n,
        bytes_per_node: sim.bytes as f64 / n,
        lost_messages: sim.lost,
    }
}

fn peer_index(p: &Peer) -> usize {
    p.id.strip_prefix('n')
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let cfg = SimConfig::new(120, 4, 0.05, 42);
        let (a, b) = (run(&cfg), run(&cfg));
        assert_eq!(to_json(&a), to_json(&b));
        let other = run(&SimConfig::new(120, 4, 0.05, 43));
        assert_ne!(to_json(&a), to_json(&other));
    }

    #[test]
    fn every_node_enforces_it_despite_heavy_loss() {
        let r = run(&SimConfig::new(200, 5, 0.25, 7));
        assert!(r.converged(), "{r}");
        assert_eq!(r.from_commit.reached, 200);
        assert!(r.lost_messages > 0, "loss was simulated: {r}");
        assert!(r.from_commit.p50_ms <= r.from_commit.p99_ms);
        assert!(r.from_commit.p99_ms <= r.from_commit.max_ms);
    }

    #[test]
    fn cut_off_cells_hear_nothing_until_the_heal_then_catch_up() {
        let mut cfg = SimConfig::new(150, 5, 0.01, 9);
        cfg.partition = Some(Partition {
            cells: 2,
            seconds: 20,
        });
        let r = run(&cfg);
        assert!(r.converged(), "{r}");
        let healed = r.from_heal.as_ref().expect("a partition group");
        assert_eq!(healed.nodes, 60, "2 of 5 cells");
        assert_eq!(healed.reached, 60);
        // Every cut-off node enforced it after the heal, not before: the
        // commit happened 19 s before the heal.
        assert!(r.all_enforced_ms.is_some_and(|ms| ms >= 19_000), "{r}");
        assert_eq!(r.from_commit.reached, 90);
    }

    #[test]
    fn without_anti_entropy_or_fanout_nothing_spreads() {
        // A control: the run measures spreading, not a constant.
        let mut cfg = SimConfig::new(40, 2, 0.0, 1);
        cfg.settings.fanout_local = 0;
        cfg.settings.fanout_remote = 0;
        // Anti-entropy's first round falls far beyond the run.
        cfg.anti_entropy_ms = 1_000_000_000;
        let r = run(&cfg);
        assert!(!r.converged());
        // The origin's seeds reach one node of the other cell; nothing
        // else moves.
        assert!(r.from_commit.reached <= 2, "{r}");
    }
}
