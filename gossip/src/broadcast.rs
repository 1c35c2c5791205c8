//! Epidemic broadcast of revocations, with anti-entropy behind it.
//!
//! A node that learns a record it has not seen — committed in its own cell,
//! or received from a peer — enforces it at once (it goes into the node's
//! [`Filter`]) and makes it a **rumour**: on each of its next `rounds`
//! ticks it sends every live rumour, in one batch, to `fanout_local`
//! random peers of its own cell and `fanout_remote` random peers of other
//! cells. The node where a record starts also sends it, on its first tick,
//! to one random peer of every other cell, so every cell hears early.
//! Duplicates are recognised by record id (and version: a lifted
//! quarantine is news) and go no further.
//!
//! Rumour mongering stops, so some nodes may never hear (Demers et al.).
//! **Anti-entropy** repairs that: every `anti_entropy` interval a node
//! sends a random peer its [`Digest`] — the records it holds, hashed into
//! [`BUCKETS`] ranges, each a count and an XOR of record hashes. The peer
//! answers with its records in the ranges that differ and asks for the
//! sender's in the same ranges; each side applies what it lacked (and
//! spreads it as a rumour, as any new record). Partitioned nodes converge
//! this way once they can talk again.
//!
//! Pure: the caller supplies the live peers, the clock and the random
//! source, and carries the messages.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::filter::{Applied, Filter};
use crate::record::{RecordError, Revocation};

/// The number of hash ranges a digest has.
pub const BUCKETS: usize = 64;
/// The largest message a node decodes, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// A random source: the node's own (seeded from the OS) or the
/// simulation's (seeded from its seed).
pub trait Random {
    /// A value in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize;
}

/// SplitMix64: small, fast, and the same sequence for the same seed on
/// every platform.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // 53 random bits: exactly representable.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Random for SplitMix64 {
    fn below(&mut self, n: usize) -> usize {
        // The modulo bias is below 2^-40 for any n a mesh has.
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// A peer as membership reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    pub id: String,
    pub cell: String,
}

/// How hard a node spreads a rumour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Peers of the node's own cell sent each rumour batch per tick.
    pub fanout_local: usize,
    /// Peers of other cells sent each rumour batch per tick.
    pub fanout_remote: usize,
    /// Ticks a rumour is sent for: this times ⌈log10(live peers + 1)⌉
    /// (memberlist's retransmit multiplier), at least 2.
    pub retransmit_mult: u32,
    /// Most records in one message; the rest wait for the next tick.
    pub max_batch: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            fanout_local: 2,
            fanout_remote: 2,
            retransmit_mult: 2,
            max_batch: 512,
        }
    }
}

impl Settings {
    pub fn rounds(&self, live_peers: usize) -> u32 {
        let mut digits = 1u32;
        let mut n = live_peers + 1;
        while n > 10 {
            n = n.div_ceil(10);
            digits += 1;
        }
        (self.retransmit_mult * digits).max(2)
    }
}

/// A node's records, hashed into [`BUCKETS`] ranges: per range, how many
/// and the XOR of their hashes. Two nodes holding the same records have
/// the same digest; a difference names the ranges to reconcile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub counts: Vec<u32>,
    pub hashes: Vec<u64>,
}

impl Default for Digest {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            hashes: vec![0; BUCKETS],
        }
    }
}

/// FNV-1a: stable across nodes, platforms and releases.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A record's hash: its id and version.
fn record_hash(r: &Revocation) -> u64 {
    fnv1a(r.id.bytes().chain(std::iter::once(r.version())))
}

fn bucket_of(r: &Revocation) -> usize {
    // Bucket by the id alone, so a record and its lifted version share one.
    (fnv1a(r.id.bytes()) % BUCKETS as u64) as usize
}

impl Digest {
    fn toggle(&mut self, r: &Revocation, add: bool) {
        let b = bucket_of(r);
        self.hashes[b] ^= record_hash(r);
        if add {
            self.counts[b] += 1;
        } else {
            self.counts[b] = self.counts[b].saturating_sub(1);
        }
    }

    /// The ranges in which `self` and `other` differ.
    pub fn differing(&self, other: &Digest) -> Vec<u16> {
        (0..BUCKETS)
            .filter(|&b| {
                self.counts.get(b) != other.counts.get(b)
                    || self.hashes.get(b) != other.hashes.get(b)
            })
            .map(|b| b as u16)
            .collect()
    }

    /// A short fingerprint for membership state: equal digests have equal
    /// summaries, so a node can tell from a peer's published summary
    /// whether the two need an exchange.
    pub fn summary(&self) -> u64 {
        let words = self
            .counts
            .iter()
            .map(|c| u64::from(*c))
            .chain(self.hashes.iter().copied());
        fnv1a(words.flat_map(u64::to_le_bytes))
    }

    fn well_formed(&self) -> bool {
        self.counts.len() == BUCKETS && self.hashes.len() == BUCKETS
    }
}

/// What nodes send each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Rumours: records to enforce and pass on.
    Rumours(Vec<Revocation>),
    /// Anti-entropy: "this is what I hold".
    Digest(Digest),
    /// Anti-entropy: the sender's records in some ranges, and the ranges
    /// it wants the receiver's records of (empty: the exchange is over).
    Repair {
        records: Vec<Revocation>,
        want: Vec<u16>,
    },
}

/// Why a peer's message is refused (nothing of it is applied).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message is {0} bytes; at most {MAX_MESSAGE_BYTES} are accepted")]
    TooLarge(usize),
    #[error("message does not decode: {0}")]
    Decode(String),
    #[error("a record is invalid: {0}")]
    Record(#[from] RecordError),
    #[error("a digest must have {BUCKETS} ranges")]
    Digest,
    #[error("a range number is out of bounds")]
    Range,
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes and checks a peer's message: every record valid, every
    /// digest and range well formed.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::TooLarge(bytes.len()));
        }
        let m: Message =
            postcard::from_bytes(bytes).map_err(|e| MessageError::Decode(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<(), MessageError> {
        match self {
            Self::Rumours(rs) => rs.iter().try_for_each(Revocation::validate)?,
            Self::Digest(d) if !d.well_formed() => return Err(MessageError::Digest),
            Self::Digest(_) => {}
            Self::Repair { records, want } => {
                records.iter().try_for_each(Revocation::validate)?;
                if want.iter().any(|b| usize::from(*b) >= BUCKETS) {
                    return Err(MessageError::Range);
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Rumour {
    record: Revocation,
    rounds_left: u32,
    /// Started here: on its first tick it also goes to one peer of every
    /// other cell.
    seed_cells: bool,
}

/// What a node did with a message.
#[derive(Debug, Default)]
pub struct Received {
    /// Records new to this node (or newly lifted): enforce-time hooks run
    /// for them (cleanup of tokens and leases, durable commit).
    pub applied: Vec<Revocation>,
    /// What to send back to the sender.
    pub reply: Option<Message>,
}

/// One node's share of the mesh.
#[derive(Debug)]
pub struct Node {
    id: String,
    cell: String,
    settings: Settings,
    filter: Filter,
    digest: Digest,
    rumours: Vec<Rumour>,
}

impl Node {
    pub fn new(id: impl Into<String>, cell: impl Into<String>, settings: Settings) -> Self {
        Self {
            id: id.into(),
            cell: cell.into(),
            settings,
            filter: Filter::new(),
            digest: Digest::default(),
            rumours: Vec::new(),
        }
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Rumours still being spread.
    pub fn spreading(&self) -> usize {
        self.rumours.len()
    }

    /// Enforces `r` and spreads it. `origin`: the record starts here (it
    /// was just committed in this node's cell), so every cell is seeded.
    pub fn learn(&mut self, r: Revocation, origin: bool) -> Result<Applied, RecordError> {
        r.validate()?;
        Ok(self.apply(r, origin))
    }

    fn apply(&mut self, r: Revocation, origin: bool) -> Applied {
        let old = self.filter.get(&r.id).cloned();
        let applied = self.filter.insert(r.clone());
        if applied != Applied::Known {
            if let Some(old) = old {
                self.digest.toggle(&old, false);
            }
            self.digest.toggle(&r, true);
            self.rumours.push(Rumour {
                record: r,
                rounds_left: u32::MAX,
                seed_cells: origin,
            });
        }
        applied
    }

    /// Handles a message a peer sent. The message was decoded and checked
    /// by [`Message::decode`] (or built in memory).
    pub fn receive(&mut self, msg: Message) -> Received {
        let mut out = Received::default();
        match msg {
            Message::Rumours(rs) => {
                for r in rs {
                    if self.apply(r.clone(), false) != Applied::Known {
                        out.applied.push(self.current(&r));
                    }
                }
            }
            Message::Digest(theirs) => {
                let ranges = self.digest.differing(&theirs);
                if !ranges.is_empty() {
                    out.reply = Some(Message::Repair {
                        records: self.in_ranges(&ranges),
                        want: ranges,
                    });
                }
            }
            Message::Repair { records, want } => {
                for r in records {
                    if self.apply(r.clone(), false) != Applied::Known {
                        out.applied.push(self.current(&r));
                    }
                }
                if !want.is_empty() {
                    out.reply = Some(Message::Repair {
                        records: self.in_ranges(&want),
                        want: Vec::new(),
                    });
                }
            }
        }
        out
    }

    fn current(&self, r: &Revocation) -> Revocation {
        self.filter.get(&r.id).cloned().unwrap_or_else(|| r.clone())
    }

    fn in_ranges(&self, ranges: &[u16]) -> Vec<Revocation> {
        let set: BTreeSet<usize> = ranges.iter().map(|b| usize::from(*b)).collect();
        let mut v: Vec<Revocation> = self
            .filter
            .records()
            .filter(|r| set.contains(&bucket_of(r)))
            .cloned()
            .collect();
        // The same answer on every run (the filter's map has no order).
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// One gossip round: the rumour batches to send now, and to whom.
    /// `peers` are the live members of the mesh (this node among them or
    /// not).
    pub fn tick(&mut self, peers: &[Peer], rng: &mut impl Random) -> Vec<(Peer, Message)> {
        if self.rumours.is_empty() {
            return Vec::new();
        }
        let (local, remote): (Vec<&Peer>, Vec<&Peer>) = peers
            .iter()
            .filter(|p| p.id != self.id)
            .partition(|p| p.cell == self.cell);
        if local.is_empty() && remote.is_empty() {
            return Vec::new();
        }
        let rounds = self.settings.rounds(local.len() + remote.len());
        for r in &mut self.rumours {
            r.rounds_left = r.rounds_left.min(rounds);
        }
        let mut targets: Vec<&Peer> = Vec::new();
        pick(&local, self.settings.fanout_local, rng, &mut targets);
        pick(&remote, self.settings.fanout_remote, rng, &mut targets);
        if self.rumours.iter().any(|r| r.seed_cells) {
            let cells: BTreeSet<&str> = remote.iter().map(|p| p.cell.as_str()).collect();
            for cell in cells {
                let of: Vec<&Peer> = remote.iter().copied().filter(|p| p.cell == cell).collect();
                pick(&of, 1, rng, &mut targets);
            }
        }
        let batch: Vec<Revocation> = self
            .rumours
            .iter()
            .take(self.settings.max_batch)
            .map(|r| r.record.clone())
            .collect();
        let sent = batch.len();
        for r in self.rumours.iter_mut().take(sent) {
            r.rounds_left = r.rounds_left.saturating_sub(1);
            r.seed_cells = false;
        }
        self.rumours.retain(|r| r.rounds_left > 0);
        targets
            .into_iter()
            .map(|p| (p.clone(), Message::Rumours(batch.clone())))
            .collect()
    }

    /// One anti-entropy exchange: this node's digest, for one random peer
    /// (`None` with no peers).
    pub fn anti_entropy(&self, peers: &[Peer], rng: &mut impl Random) -> Option<(Peer, Message)> {
        let others = peers.iter().filter(|p| p.id != self.id).count();
        if others == 0 {
            return None;
        }
        let p = peers
            .iter()
            .filter(|p| p.id != self.id)
            .nth(rng.below(others))?;
        Some((p.clone(), Message::Digest(self.digest.clone())))
    }

    /// One aimed anti-entropy exchange: this node's digest, for one random
    /// peer among those whose published digest summary (as membership
    /// last carried it; `None`: not yet known) differs from this node's.
    /// `None` when every peer agrees: a mesh in agreement exchanges no
    /// digests.
    pub fn anti_entropy_towards(
        &self,
        peers: &[(Peer, Option<u64>)],
        rng: &mut impl Random,
    ) -> Option<(Peer, Message)> {
        let mine = self.digest.summary();
        let differing: Vec<&Peer> = peers
            .iter()
            .filter(|(p, summary)| p.id != self.id && *summary != Some(mine))
            .map(|(p, _)| p)
            .collect();
        if differing.is_empty() {
            return None;
        }
        let p = differing[rng.below(differing.len())];
        Some((p.clone(), Message::Digest(self.digest.clone())))
    }

    /// Drops records expired at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let gone: Vec<Revocation> = self
            .filter
            .records()
            .filter(|r| r.expires_ms <= now_ms)
            .cloned()
            .collect();
        for r in &gone {
            self.digest.toggle(r, false);
        }
        self.rumours.retain(|r| r.record.expires_ms > now_ms);
        self.filter.expire(now_ms)
    }
}

/// Adds up to `n` distinct random peers of `from` to `out` (skipping ones
/// already there).
fn pick<'p>(from: &[&'p Peer], n: usize, rng: &mut impl Random, out: &mut Vec<&'p Peer>) {
    if from.is_empty() || n == 0 {
        return;
    }
    let want = n.min(from.len());
    let mut added = 0;
    // A few draws more than needed; peers already picked are skipped.
    for _ in 0..want * 4 {
        let p = from[rng.below(from.len())];
        if !out.iter().any(|q| q.id == p.id) {
            out.push(p);
            added += 1;
            if added == want {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
