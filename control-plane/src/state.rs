//! The replicated state: one multi-value register (`crdts::MVReg`) per key.
//!
//! **Why registers and not one `crdts::Map`.** Each key is its own CRDT with
//! its own causal clock, so the state is a map of independent lattices: it
//! merges key by key, it is stored key by key in the cell's Raft state, and a
//! write is one small register, never the whole map. A register's put is
//! idempotent and commutative on its own (a put whose clock is dominated
//! changes nothing), which `Orswot` and `Map` ops are not: they must arrive
//! in order per actor. Deleting is writing a tombstone (`value: None`), so a
//! delete racing an update is a conflict an operator sees, not a silent win.
//!
//! **Conflict rule.** Writes that saw each other replace what they saw.
//! Writes that did not (two cells changed the same policy while partitioned)
//! are all kept. Every replica ranks them the same way, by hybrid logical
//! clock timestamp and then by origin cell: the greatest is the value in
//! force, the others are listed as conflicts until a write that has seen them
//! all (an operator writing the key again, or resolving it) replaces them.

use std::collections::BTreeMap;

use crdts::mvreg::Op;
use crdts::{CmRDT, CvRDT, MVReg, VClock};
use serde::{Deserialize, Serialize};

use crate::Hlc;
use crate::model::{CellId, Key, Kind, Value};

/// A value as written: when, by which cell, and the value (`None`: deleted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped {
    pub hlc: Hlc,
    pub origin: CellId,
    pub value: Option<Value>,
}

impl Stamped {
    /// The order in which concurrent values are ranked: the greatest wins.
    fn rank(&self) -> (Hlc, &CellId) {
        (self.hlc, &self.origin)
    }

    /// When a revocation record stops mattering (`None` for other values).
    fn expires_ms(&self) -> Option<u64> {
        match &self.value {
            Some(Value::Revocation(r)) => Some(r.expires_ms),
            _ => None,
        }
    }
}

/// One key's register.
pub type Register = MVReg<Stamped, CellId>;

/// A write to one register: the register's op, with its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    pub key: Key,
    /// The writer's causal context: every value it saw, plus its own new dot.
    pub clock: VClock<CellId>,
    pub stamped: Stamped,
}

/// Concurrent values of one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub key: Key,
    /// The value in force.
    pub winner: Stamped,
    /// The concurrent values it outranked, greatest first.
    pub losers: Vec<Stamped>,
}

/// The control plane's state: every key's register.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    regs: BTreeMap<Key, Register>,
}

impl ControlState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The put with which `actor` writes `value` to `key` at `hlc`. Its clock
    /// dominates every value the register holds here, so once applied it
    /// replaces them all (and resolves any conflict among them).
    pub fn prepare(&self, key: Key, value: Option<Value>, hlc: Hlc, actor: &CellId) -> Put {
        let ctx = match self.regs.get(&key) {
            Some(r) => r.read_ctx(),
            None => Register::new().read_ctx(),
        };
        Put {
            key,
            clock: ctx.derive_add_ctx(actor.clone()).clock,
            stamped: Stamped {
                hlc,
                origin: actor.clone(),
                value,
            },
        }
    }

    /// Applies a put. A revocation that has already expired at `now_ms` is
    /// not brought back.
    pub fn apply(&mut self, put: Put, now_ms: u64) {
        if put.stamped.expires_ms().is_some_and(|e| e <= now_ms) {
            return;
        }
        let reg = self.regs.entry(put.key.clone()).or_default();
        reg.apply(Op::Put {
            clock: put.clock,
            val: put.stamped,
        });
        if reg.read_ctx().add_clock.is_empty() {
            self.regs.remove(&put.key);
        }
    }

    /// Merges another replica's state into this one, key by key.
    pub fn merge(&mut self, other: ControlState) {
        for (key, reg) in other.regs {
            self.merge_register(key, reg);
        }
    }

    /// Merges one register into this state's register for `key`.
    pub fn merge_register(&mut self, key: Key, reg: Register) {
        self.regs.entry(key).or_default().merge(reg);
    }

    /// Drops revocation records that expired at or before `now_ms`, and
    /// returns their keys. The records of one id share an expiry (lifting
    /// keeps it), so every replica drops the same keys at the same time, and
    /// dropping commutes with merging.
    pub fn collect_garbage(&mut self, now_ms: u64) -> Vec<Key> {
        let expired: Vec<Key> = self
            .regs
            .range(kind_start(Kind::Revocation)..)
            .take_while(|(k, _)| k.kind() == Kind::Revocation)
            .filter(|(_, reg)| {
                let vals = reg.read().val;
                vals.iter()
                    .map(|s| s.expires_ms().unwrap_or(u64::MAX))
                    .max()
                    .is_none_or(|e| e <= now_ms)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.regs.remove(k);
        }
        expired
    }

    /// Every value `key` holds, the one in force first, then the others
    /// greatest first. Empty if the key was never written.
    pub fn values(&self, key: &Key) -> Vec<Stamped> {
        let mut vals = self.regs.get(key).map(|r| r.read().val).unwrap_or_default();
        vals.sort_by(|a, b| b.rank().cmp(&a.rank()));
        vals
    }

    /// The value in force for `key`, or `None` if it was never written or is deleted.
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.values(key).into_iter().next().and_then(|s| s.value)
    }

    /// Every key of one kind with its value in force (deleted keys left out).
    pub fn of_kind(&self, kind: Kind) -> Vec<(Key, Value)> {
        self.regs
            .range(kind_start(kind)..)
            .take_while(|(k, _)| k.kind() == kind)
            .filter_map(|(k, _)| self.get(k).map(|v| (k.clone(), v)))
            .collect()
    }

    /// Keys holding concurrent values that differ, with the value in force
    /// and the others. Cells that wrote the same value concurrently agree
    /// (two cells committing one revocation heard from the mesh): that is
    /// not a conflict.
    pub fn conflicts(&self) -> Vec<Conflict> {
        self.regs
            .keys()
            .filter_map(|key| {
                let mut vals = self.values(key).into_iter();
                let winner = vals.next()?;
                let losers: Vec<Stamped> = vals.filter(|v| v.value != winner.value).collect();
                (!losers.is_empty()).then(|| Conflict {
                    key: key.clone(),
                    winner,
                    losers,
                })
            })
            .collect()
    }

    /// The register stored for `key`, as persisted.
    pub fn register(&self, key: &Key) -> Option<&Register> {
        self.regs.get(key)
    }

    pub fn registers(&self) -> impl Iterator<Item = (&Key, &Register)> {
        self.regs.iter()
    }

    pub fn into_registers(self) -> impl Iterator<Item = (Key, Register)> {
        self.regs.into_iter()
    }

    pub fn len(&self) -> usize {
        self.regs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regs.is_empty()
    }

    /// A SHA-256 over every key and its values in a canonical order: two
    /// replicas with the same values have the same digest, whatever order
    /// their ops arrived in.
    pub fn digest(&self) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for (key, reg) in &self.regs {
            let mut vals = reg.read().val;
            vals.sort_by(|a, b| a.rank().cmp(&b.rank()));
            let bytes = postcard::to_stdvec(&(key, vals)).unwrap_or_default();
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(&bytes);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// The least key of a kind, so that a range scan starts there. Keys order by
/// variant first, and the empty string sorts before every name.
fn kind_start(kind: Kind) -> Key {
    let empty = String::new;
    match kind {
        Kind::Policy => Key::Policy { name: empty() },
        Kind::Mount => Key::Mount {
            table: crate::model::MountTable::Secrets,
            path: empty(),
        },
        Kind::Role => Key::Role {
            table: crate::model::MountTable::Secrets,
            mount: empty(),
            name: empty(),
        },
        Kind::Cell => Key::Cell {
            id: CellId::least(),
        },
        Kind::Namespace => Key::Namespace { path: empty() },
        Kind::Revocation => Key::Revocation { id: empty() },
    }
}
