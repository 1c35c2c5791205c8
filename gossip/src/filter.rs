//! The revocation filter every node checks each request against.
//!
//! Lookups never scan the records:
//!
//! - accessors, lease ids and certificate serials are hash-map keys: the
//!   cost of a check does not depend on how many records there are;
//! - lease prefixes and identity patterns sit in a trie of `/`-separated
//!   segments, walked once along the credential's lease id or identity, so
//!   the cost grows with the depth of that path (and with how many
//!   patterns use `*` inside a segment at the same place), not with the
//!   number of records;
//! - roles are a hash-map key of mount and role.

use std::collections::HashMap;

use crate::glob::glob_match;
use crate::record::{Kind, Revocation, Target};

/// What the filter is asked about: the facts a node holds about a token,
/// a lease or a certificate when a request uses it. Any may be absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Credential<'a> {
    pub accessor: Option<&'a str>,
    pub lease_id: Option<&'a str>,
    pub cert_serial: Option<&'a str>,
    /// The identity recorded when it was issued (`spiffe://...`,
    /// `approle:billing`).
    pub identity: Option<&'a str>,
    /// The mount (`auth/approle/`) and role it was issued through.
    pub role: Option<(&'a str, &'a str)>,
    /// When it was issued, in milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
}

/// What [`Filter::insert`] did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A record not seen before: enforce it, pass it on.
    New,
    /// A quarantine seen before, now lifted: pass it on.
    Lifted,
    /// Nothing new (a duplicate, or an older version).
    Known,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Exact {
    Accessor,
    Lease,
    Serial,
}

/// A trie of path segments. Records sit at the node their pattern ends
/// at: `here` if they match a path ending there, `below` if they match
/// any path with at least one more segment.
#[derive(Debug, Default)]
struct Trie {
    here: Vec<String>,
    below: Vec<String>,
    literal: HashMap<String, Trie>,
    /// Segments with `*` inside, matched with [`glob_match`].
    globbed: Vec<(String, Trie)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Here,
    Below,
}

impl Trie {
    fn is_empty(&self) -> bool {
        self.here.is_empty()
            && self.below.is_empty()
            && self.literal.is_empty()
            && self.globbed.is_empty()
    }

    fn child(&mut self, seg: &str) -> &mut Trie {
        if seg.contains('*') {
            let at = match self.globbed.iter().position(|(p, _)| p == seg) {
                Some(at) => at,
                None => {
                    self.globbed.push((seg.to_owned(), Trie::default()));
                    self.globbed.len() - 1
                }
            };
            &mut self.globbed[at].1
        } else {
            self.literal.entry(seg.to_owned()).or_default()
        }
    }

    fn insert(&mut self, segs: &[&str], slot: Slot, id: &str) {
        match segs.split_first() {
            None => match slot {
                Slot::Here => self.here.push(id.to_owned()),
                Slot::Below => self.below.push(id.to_owned()),
            },
            Some((seg, rest)) => self.child(seg).insert(rest, slot, id),
        }
    }

    /// Removes `id` from the node `segs` leads to, dropping nodes left
    /// empty.
    fn remove(&mut self, segs: &[&str], slot: Slot, id: &str) {
        match segs.split_first() {
            None => {
                let v = match slot {
                    Slot::Here => &mut self.here,
                    Slot::Below => &mut self.below,
                };
                v.retain(|x| x != id);
            }
            Some((seg, rest)) => {
                if seg.contains('*') {
                    if let Some(at) = self.globbed.iter().position(|(p, _)| p == seg) {
                        self.globbed[at].1.remove(rest, slot, id);
                        if self.globbed[at].1.is_empty() {
                            self.globbed.swap_remove(at);
                        }
                    }
                } else if let Some(child) = self.literal.get_mut(*seg) {
                    child.remove(rest, slot, id);
                    if child.is_empty() {
                        self.literal.remove(*seg);
                    }
                }
            }
        }
    }

    /// Every record matching `path`, handed to `found`.
    fn matches<'t>(&'t self, path: &str, found: &mut impl FnMut(&'t str)) {
        let mut active: Vec<&Trie> = vec![self];
        let mut next: Vec<&Trie> = Vec::new();
        for seg in path.split('/') {
            for node in &active {
                node.below.iter().for_each(|id| found(id));
                if let Some(c) = node.literal.get(seg) {
                    next.push(c);
                }
                for (p, c) in &node.globbed {
                    if glob_match(p, seg) {
                        next.push(c);
                    }
                }
            }
            std::mem::swap(&mut active, &mut next);
            next.clear();
            if active.is_empty() {
                return;
            }
        }
        for node in active {
            node.here.iter().for_each(|id| found(id));
        }
    }
}

/// Where a target is indexed: its trie path and slot.
fn trie_place(target: &Target) -> Option<(Vec<&str>, Slot)> {
    match target {
        Target::Identity(p) => {
            let segs: Vec<&str> = p.split('/').collect();
            match segs.split_last() {
                Some((&"*", rest)) if !rest.is_empty() => Some((rest.to_vec(), Slot::Below)),
                _ => Some((segs, Slot::Here)),
            }
        }
        _ => None,
    }
}

fn prefix_segments(p: &str) -> Vec<&str> {
    p.trim_matches('/').split('/').collect()
}

/// The records a node enforces, indexed for lookup.
#[derive(Debug, Default)]
pub struct Filter {
    records: HashMap<String, Revocation>,
    /// By accessor, lease id and serial ([`Exact`] as the index): looked
    /// up by `&str`, without allocating.
    exact: [Ids; 3],
    lease_prefixes: Trie,
    identities: Trie,
    /// Mount, then role.
    roles: HashMap<String, Ids>,
}

/// Record ids by key.
type Ids = HashMap<String, Vec<String>>;

fn add_id(ids: &mut Ids, key: &str, id: &str) {
    ids.entry(key.to_owned()).or_default().push(id.to_owned());
}

fn drop_id(ids: &mut Ids, key: &str, id: &str) {
    if let Some(v) = ids.get_mut(key) {
        v.retain(|x| x != id);
        if v.is_empty() {
            ids.remove(key);
        }
    }
}

impl Filter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Revocation> {
        self.records.get(id)
    }

    pub fn records(&self) -> impl Iterator<Item = &Revocation> {
        self.records.values()
    }

    /// Adds a record, or replaces it by its lifted version. The caller has
    /// validated it ([`Revocation::validate`]).
    pub fn insert(&mut self, r: Revocation) -> Applied {
        match self.records.get_mut(&r.id) {
            Some(old) if r.version() > old.version() && old.target == r.target => {
                old.lifted = true;
                Applied::Lifted
            }
            Some(_) => Applied::Known,
            None => {
                self.index(&r);
                self.records.insert(r.id.clone(), r);
                Applied::New
            }
        }
    }

    fn index(&mut self, r: &Revocation) {
        let id = r.id.as_str();
        match &r.target {
            Target::Accessor(a) => add_id(&mut self.exact[Exact::Accessor as usize], a, id),
            Target::LeaseId(l) => add_id(&mut self.exact[Exact::Lease as usize], l, id),
            Target::CertSerial(s) => add_id(&mut self.exact[Exact::Serial as usize], s, id),
            Target::LeasePrefix(p) => {
                let segs = prefix_segments(p);
                self.lease_prefixes.insert(&segs, Slot::Here, id);
                self.lease_prefixes.insert(&segs, Slot::Below, id);
            }
            Target::Identity(_) => {
                if let Some((segs, slot)) = trie_place(&r.target) {
                    self.identities.insert(&segs, slot, id);
                }
            }
            Target::Role { mount, role } => {
                add_id(self.roles.entry(mount.clone()).or_default(), role, id);
            }
        }
    }

    fn unindex(&mut self, r: &Revocation) {
        let id = r.id.as_str();
        match &r.target {
            Target::Accessor(a) => drop_id(&mut self.exact[Exact::Accessor as usize], a, id),
            Target::LeaseId(l) => drop_id(&mut self.exact[Exact::Lease as usize], l, id),
            Target::CertSerial(s) => drop_id(&mut self.exact[Exact::Serial as usize], s, id),
            Target::LeasePrefix(p) => {
                let segs = prefix_segments(p);
                self.lease_prefixes.remove(&segs, Slot::Here, id);
                self.lease_prefixes.remove(&segs, Slot::Below, id);
            }
            Target::Identity(_) => {
                if let Some((segs, slot)) = trie_place(&r.target) {
                    self.identities.remove(&segs, slot, id);
                }
            }
            Target::Role { mount, role } => {
                if let Some(roles) = self.roles.get_mut(mount) {
                    drop_id(roles, role, id);
                    if roles.is_empty() {
                        self.roles.remove(mount);
                    }
                }
            }
        }
    }

    /// Drops the records that expired at or before `now_ms`; returns how
    /// many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let gone: Vec<Revocation> = self
            .records
            .values()
            .filter(|r| r.expires_ms <= now_ms)
            .cloned()
            .collect();
        for r in &gone {
            self.unindex(r);
            self.records.remove(&r.id);
        }
        gone.len()
    }

    /// Every record whose target matches `c`, whatever its time.
    fn candidates<'s>(&'s self, c: &Credential<'_>, mut found: impl FnMut(&'s Revocation)) {
        let mut by_id = |id: &'s str| {
            if let Some(r) = self.records.get(id) {
                found(r);
            }
        };
        for (kind, key) in [
            (Exact::Accessor, c.accessor),
            (Exact::Lease, c.lease_id),
            (Exact::Serial, c.cert_serial),
        ] {
            if let Some(key) = key
                && let Some(ids) = self.exact[kind as usize].get(key)
            {
                ids.iter().for_each(|id| by_id(id));
            }
        }
        if let Some(lease) = c.lease_id {
            self.lease_prefixes
                .matches(lease.trim_matches('/'), &mut by_id);
        }
        if let Some(identity) = c.identity {
            self.identities.matches(identity, &mut by_id);
        }
        if let Some((mount, role)) = c.role
            && let Some(ids) = self.roles.get(mount).and_then(|m| m.get(role))
        {
            ids.iter().for_each(|id| by_id(id));
        }
    }

    /// The record that kills `c`, if any: one whose target matches and
    /// that was issued at or after `c` was. Of several, the earliest
    /// issued (ties: the least id), so every node names the same one.
    pub fn revoked(&self, c: &Credential<'_>) -> Option<&Revocation> {
        if self.records.is_empty() {
            return None;
        }
        let mut hit: Option<&Revocation> = None;
        self.candidates(c, |r| {
            if c.issued_at_ms <= r.issued_at_ms
                && hit.is_none_or(|h| (r.issued_at_ms, &r.id) < (h.issued_at_ms, &h.id))
            {
                hit = Some(r);
            }
        });
        hit
    }

    /// The quarantine that refuses a new login of `identity` through
    /// `role`, if any: not lifted and not expired at `now_ms`.
    pub fn login_refused(
        &self,
        identity: Option<&str>,
        role: Option<(&str, &str)>,
        now_ms: u64,
    ) -> Option<&Revocation> {
        let c = Credential {
            identity,
            role,
            ..Credential::default()
        };
        let mut hit: Option<&Revocation> = None;
        self.candidates(&c, |r| {
            if r.kind == Kind::Quarantine
                && !r.lifted
                && now_ms < r.expires_ms
                && hit.is_none_or(|h| r.id < h.id)
            {
                hit = Some(r);
            }
        });
        hit
    }
}

#[cfg(test)]
mod tests;
