//! The token store: service tokens, stored only as keyed hashes.
//!
//! A token is `hvs.` followed by 24 base62 characters (28 in all, the length
//! Vault's clients expect of root tokens and generate-root one-time
//! passwords). Storage keeps `HMAC-SHA256(salt, token)` under the barrier; the
//! salt is random per cell and itself barrier-encrypted, so neither storage
//! nor a snapshot can yield a usable token (docs/threat-model.md).
//!
//! Layout under `sys/token/` (all barrier-encrypted):
//!
//! | key | value |
//! | --- | --- |
//! | `salt` | the HMAC key |
//! | `id/<hash>` | [`TokenEntry`] |
//! | `accessor/<accessor>` | the token's hash |
//! | `parent/<parent hash>/<child hash>` | empty: the parent/child tree |
//! | `expiry/<unix, 16 hex digits>/<hash>` | empty: the sweep index |
//! | `identity/<hex of identity>/<hash>` | empty: tokens by identity |
//! | `roles/<name>` | [`TokenRole`] |
//!
//! The expiry index is why the store does not grow without bound: the
//! sweeper reads it in time order and revokes what has expired, without
//! scanning live tokens. Revocation deletes children before their parent, so
//! an interrupted revocation leaves a tree that a retry (or tidy) finishes.

mod role;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use sigil_hsm::{SecretBytes, SecretString};
use subtle::ConstantTimeEq;

pub use role::{TokenRole, check_role_name};

use crate::barrier::{Barrier, BarrierBatch, BarrierError};

pub const TOKEN_PREFIX: &str = "hvs.";
pub const TOKEN_LEN: usize = 28;
const SALT_KEY: &str = "sys/token/salt";
const ID_PREFIX: &str = "sys/token/id/";
const ACCESSOR_PREFIX: &str = "sys/token/accessor/";
const PARENT_PREFIX: &str = "sys/token/parent/";
const EXPIRY_PREFIX: &str = "sys/token/expiry/";
const IDENTITY_PREFIX: &str = "sys/token/identity/";
const ROLE_PREFIX: &str = "sys/token/roles/";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What the store knows about a token. The token itself is never stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    /// Hex of the keyed hash; compared again in constant time on lookup.
    pub hash: String,
    #[serde(default)]
    pub accessor: String,
    /// The parent's hash; `None` for orphans.
    #[serde(default)]
    pub parent: Option<String>,
    pub policies: Vec<String>,
    pub display_name: String,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    pub created_unix: i64,
    /// Creation time in milliseconds since the epoch, for revocations that
    /// kill what was issued before a moment (0 in entries written before
    /// it was recorded).
    #[serde(default)]
    pub created_ms: u64,
    /// TTL granted at creation or last renewal, seconds; 0 never expires.
    #[serde(default)]
    pub ttl: u64,
    /// When the token stops working; `None` never.
    #[serde(default)]
    pub expire_unix: Option<i64>,
    /// Seconds; 0 none.
    #[serde(default)]
    pub explicit_max_ttl: u64,
    /// Renewals never push expiry past this.
    #[serde(default)]
    pub max_expire_unix: Option<i64>,
    /// Seconds; periodic tokens renew to this and have no maximum.
    #[serde(default)]
    pub period: u64,
    #[serde(default)]
    pub renewable: bool,
    /// Uses left; 0 is unlimited.
    #[serde(default)]
    pub num_uses: u64,
    /// The uses it was created with (so lookups can tell "1 left" apart from
    /// "unlimited").
    #[serde(default)]
    pub initial_num_uses: u64,
    #[serde(default)]
    pub role: Option<String>,
    /// Where it was created (`auth/token/create`, `auth/approle/login`).
    #[serde(default)]
    pub path: String,
    /// The identity it was issued to (an entity, SPIFFE ID, role ID), so
    /// every token of an identity can be revoked at once.
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(default)]
    pub entity_id: String,
    /// Accessor of the auth mount that issued it (none for `auth/token`).
    #[serde(default)]
    pub auth_mount: Option<String>,
    /// CIDR blocks it may be used from; empty: anywhere.
    #[serde(default)]
    pub bound_cidrs: Vec<String>,
}

impl TokenEntry {
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    pub fn is_orphan(&self) -> bool {
        self.parent.is_none()
    }

    pub fn is_expired(&self, now: i64) -> bool {
        self.expire_unix.is_some_and(|e| e <= now)
    }

    /// Seconds left; 0 for tokens that never expire.
    pub fn remaining_ttl(&self, now: i64) -> u64 {
        self.expire_unix
            .map_or(0, |e| u64::try_from(e - now).unwrap_or(0))
    }
}

/// Random base62 string of `len` characters (rejection sampling, no bias).
pub fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut buf = [0u8; 32];
        aws_lc_rs::rand::fill(&mut buf).expect("system random number generator failed");
        for b in buf {
            // 248 = 4 * 62: values at or above it would bias the result.
            if b < 248 && out.len() < len {
                out.push(BASE62[usize::from(b % 62)] as char);
            }
        }
    }
    out
}

/// A fresh service token.
pub fn generate_token() -> SecretString {
    SecretString::new(format!(
        "{TOKEN_PREFIX}{}",
        random_base62(TOKEN_LEN - TOKEN_PREFIX.len())
    ))
}

/// What a new token gets; the caller (the `auth/token/*` handlers or an auth
/// method) has already decided policies and TTLs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewToken {
    pub parent: Option<String>,
    pub policies: Vec<String>,
    pub display_name: String,
    pub meta: BTreeMap<String, String>,
    /// Seconds; 0 never expires (root tokens only).
    pub ttl: u64,
    pub explicit_max_ttl: u64,
    /// Absolute cap on renewals, seconds from creation; 0 none. Periodic
    /// tokens have one only when an explicit maximum was asked for.
    pub max_ttl: u64,
    pub period: u64,
    pub renewable: bool,
    pub num_uses: u64,
    pub role: Option<String>,
    pub path: String,
    pub identity: Option<String>,
    pub entity_id: String,
    pub auth_mount: Option<String>,
    pub bound_cidrs: Vec<String>,
}

/// One use of a token, spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spent {
    /// The entry after the use (`num_uses` 0 once the last use is spent).
    pub entry: TokenEntry,
    /// Tokens revoked because this was the last use: the token itself and
    /// its descendants, children first.
    pub revoked: Vec<String>,
}

/// The result of a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    pub entry: TokenEntry,
    /// Set when the TTL was cut short by the token's maximum.
    pub capped: bool,
}

/// What tidy found and fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TidyReport {
    pub expired_revoked: usize,
    pub dangling_accessors: usize,
    pub dangling_parent_links: usize,
    pub orphaned_children: usize,
    pub dangling_expiry: usize,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token is not renewable")]
    NotRenewable,
    #[error(transparent)]
    Barrier(#[from] BarrierError),
}

#[derive(Debug, Clone)]
pub struct TokenStore {
    barrier: Barrier,
    /// Serialises use-count decrements so two concurrent requests cannot both
    /// spend a token's last use.
    uses: Arc<tokio::sync::Mutex<()>>,
    /// The HMAC key, cached for the unseal it was read in (by barrier
    /// generation) so a lookup costs one decryption, not two. Dropped, and
    /// so zeroized, on seal.
    salt: Arc<std::sync::RwLock<Option<(u64, SecretBytes)>>>,
}

impl TokenStore {
    pub fn new(barrier: Barrier) -> Self {
        Self {
            barrier,
            uses: Arc::default(),
            salt: Arc::default(),
        }
    }

    /// Adds to `batch` a new salt (first initialisation only) and a root
    /// token entry; returns the batch.
    pub fn root_token_batch(
        &self,
        batch: BarrierBatch,
        token: &SecretString,
        now_unix: i64,
        fresh_salt: bool,
    ) -> Result<BarrierBatch, BarrierError> {
        let (salt, batch) = if fresh_salt {
            let salt = SecretBytes::random(32);
            let batch = batch.put(SALT_KEY, salt.expose())?;
            (salt, batch)
        } else {
            (self.salt()?, batch)
        };
        let entry = TokenEntry {
            hash: keyed_hash(&salt, token),
            accessor: new_accessor(),
            parent: None,
            policies: vec!["root".into()],
            display_name: "root".into(),
            meta: BTreeMap::new(),
            created_unix: now_unix,
            created_ms: created_ms(now_unix),
            ttl: 0,
            expire_unix: None,
            explicit_max_ttl: 0,
            max_expire_unix: None,
            period: 0,
            renewable: false,
            num_uses: 0,
            initial_num_uses: 0,
            role: None,
            path: "auth/token/root".into(),
            identity: None,
            entity_id: String::new(),
            auth_mount: None,
            bound_cidrs: Vec::new(),
        };
        entry_batch(batch, &entry)
    }

    /// Creates and stores a new root token.
    pub async fn create_root(&self, now_unix: i64) -> Result<SecretString, BarrierError> {
        let token = generate_token();
        let batch = self.root_token_batch(self.barrier.batch(), &token, now_unix, false)?;
        self.barrier.commit(batch).await?;
        Ok(token)
    }

    /// Creates and stores a token as `spec` says.
    pub async fn create(
        &self,
        spec: NewToken,
        now: i64,
    ) -> Result<(SecretString, TokenEntry), BarrierError> {
        let token = generate_token();
        let hash = keyed_hash(&self.salt()?, &token);
        let expire_unix = (spec.ttl > 0).then(|| now.saturating_add(secs(spec.ttl)));
        let max_expire_unix =
            (spec.max_ttl > 0 && spec.period == 0).then(|| now.saturating_add(secs(spec.max_ttl)));
        let entry = TokenEntry {
            hash,
            accessor: new_accessor(),
            parent: spec.parent,
            policies: spec.policies,
            display_name: spec.display_name,
            meta: spec.meta,
            created_unix: now,
            created_ms: created_ms(now),
            ttl: spec.ttl,
            expire_unix,
            explicit_max_ttl: spec.explicit_max_ttl,
            max_expire_unix,
            period: spec.period,
            renewable: spec.renewable,
            num_uses: spec.num_uses,
            initial_num_uses: spec.num_uses,
            role: spec.role,
            path: spec.path,
            identity: spec.identity,
            entity_id: spec.entity_id,
            auth_mount: spec.auth_mount,
            bound_cidrs: spec.bound_cidrs,
        };
        let batch = entry_batch(self.barrier.batch(), &entry)?;
        self.barrier.commit(batch).await?;
        Ok((token, entry))
    }

    /// The entry for `token`, if it exists (expired or not).
    pub fn lookup(&self, token: &SecretString) -> Result<Option<TokenEntry>, BarrierError> {
        let hash = keyed_hash(&self.salt()?, token);
        let Some(entry) = self.by_hash(&hash)? else {
            return Ok(None);
        };
        // The storage key already matched; compare again in constant time so
        // no code path relies on a variable-time comparison of token hashes.
        if bool::from(entry.hash.as_bytes().ct_eq(hash.as_bytes())) {
            Ok(Some(entry))
        } else {
            Ok(None)
        }
    }

    /// The entry for `token` if it exists and has not expired.
    pub fn lookup_live(
        &self,
        token: &SecretString,
        now: i64,
    ) -> Result<Option<TokenEntry>, BarrierError> {
        Ok(self.lookup(token)?.filter(|e| !e.is_expired(now)))
    }

    pub fn by_hash(&self, hash: &str) -> Result<Option<TokenEntry>, BarrierError> {
        let Some(raw) = self.barrier.get(&format!("{ID_PREFIX}{hash}"))? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| BarrierError::Corrupt(format!("token entry: {e}")))
    }

    pub fn by_accessor(&self, accessor: &str) -> Result<Option<TokenEntry>, BarrierError> {
        if !is_accessor_shaped(accessor) {
            return Ok(None);
        }
        let Some(hash) = self.barrier.get(&format!("{ACCESSOR_PREFIX}{accessor}"))? else {
            return Ok(None);
        };
        let hash = String::from_utf8_lossy(&hash).into_owned();
        self.by_hash(&hash)
    }

    /// Spends one use of a limited-use token. `None` when the token does not
    /// exist (no use was left). A token whose last use this was is revoked
    /// here, with its descendants; the request it authorised still completes,
    /// and the caller cleans up after the tokens in [`Spent::revoked`].
    pub async fn spend_use(&self, hash: &str) -> Result<Option<Spent>, BarrierError> {
        let _guard = self.uses.lock().await;
        let Some(mut entry) = self.by_hash(hash)? else {
            return Ok(None);
        };
        match entry.num_uses {
            0 => Ok(Some(Spent {
                entry,
                revoked: Vec::new(),
            })),
            1 => {
                entry.num_uses = 0;
                let revoked = self.revoke_tree(hash).await?;
                Ok(Some(Spent { entry, revoked }))
            }
            n => {
                entry.num_uses = n - 1;
                let batch = self
                    .barrier
                    .batch()
                    .put(&format!("{ID_PREFIX}{hash}"), &to_json(&entry)?)?;
                self.barrier.commit(batch).await?;
                Ok(Some(Spent {
                    entry,
                    revoked: Vec::new(),
                }))
            }
        }
    }

    /// Renews the token: a periodic token to its period, any other to
    /// `increment` (or its original TTL), never past its maximum.
    pub async fn renew(
        &self,
        hash: &str,
        increment: Option<u64>,
        now: i64,
    ) -> Result<Option<Renewed>, TokenError> {
        let Some(mut entry) = self.by_hash(hash)? else {
            return Ok(None);
        };
        if entry.is_expired(now) {
            return Ok(None);
        }
        if !entry.renewable || entry.expire_unix.is_none() {
            return Err(TokenError::NotRenewable);
        }
        let want = if entry.period > 0 {
            entry.period
        } else {
            increment.filter(|i| *i > 0).unwrap_or(entry.ttl)
        };
        let mut expire = now.saturating_add(secs(want));
        let mut capped = false;
        if let Some(max) = entry.max_expire_unix
            && expire > max
        {
            expire = max;
            capped = true;
        }
        let old_expiry = entry.expire_unix;
        entry.expire_unix = Some(expire);
        entry.ttl = u64::try_from(expire - now).unwrap_or(0);
        let mut batch = self
            .barrier
            .batch()
            .put(&format!("{ID_PREFIX}{hash}"), &to_json(&entry)?)?;
        if let Some(old) = old_expiry {
            batch = batch.delete(&expiry_key(old, hash));
        }
        batch = batch.put(&expiry_key(expire, hash), b"")?;
        self.barrier.commit(batch).await?;
        Ok(Some(Renewed { entry, capped }))
    }

    /// Revokes the token and, depth first, every descendant. Returns the
    /// hashes revoked (children first), so their cubbyholes and leases can be
    /// cleaned up.
    pub async fn revoke_tree(&self, hash: &str) -> Result<Vec<String>, BarrierError> {
        let mut revoked = Vec::new();
        // Iterative post-order walk: a deep tree cannot overflow the stack.
        let mut stack = vec![(hash.to_owned(), false)];
        while let Some((h, children_done)) = stack.pop() {
            if children_done {
                if self.revoke_one(&h).await? {
                    revoked.push(h);
                }
                continue;
            }
            stack.push((h.clone(), true));
            for child in self.barrier.list(&format!("{PARENT_PREFIX}{h}/"))? {
                stack.push((child, false));
            }
        }
        Ok(revoked)
    }

    /// Revokes only the token; its children become orphans.
    pub async fn revoke_orphan(&self, hash: &str) -> Result<bool, BarrierError> {
        for child in self.barrier.list(&format!("{PARENT_PREFIX}{hash}/"))? {
            if let Some(mut c) = self.by_hash(&child)? {
                c.parent = None;
                let batch = self
                    .barrier
                    .batch()
                    .put(&format!("{ID_PREFIX}{child}"), &to_json(&c)?)?
                    .delete(&format!("{PARENT_PREFIX}{hash}/{child}"));
                self.barrier.commit(batch).await?;
            }
        }
        self.revoke_one(hash).await
    }

    /// Deletes the token (by `token`) and its descendants.
    pub async fn revoke(&self, token: &SecretString) -> Result<Vec<String>, BarrierError> {
        let hash = keyed_hash(&self.salt()?, token);
        self.revoke_tree(&hash).await
    }

    /// Revokes up to `limit` tokens whose expiry is at or before `now`, in
    /// expiry order. Returns the hashes revoked.
    pub async fn sweep_expired(&self, now: i64, limit: usize) -> Result<Vec<String>, BarrierError> {
        let mut revoked = Vec::new();
        for key in self.barrier.list(EXPIRY_PREFIX)? {
            if revoked.len() >= limit {
                break;
            }
            let Some((when, hash)) = key.split_once('/') else {
                continue;
            };
            let Ok(when) = i64::from_str_radix(when, 16) else {
                continue;
            };
            if when > now {
                break;
            }
            match self.by_hash(hash)? {
                Some(e) if e.is_expired(now) => revoked.extend(self.revoke_tree(hash).await?),
                // A stale index entry (renewed or already gone).
                _ => {
                    self.barrier
                        .delete(&format!("{EXPIRY_PREFIX}{key}"))
                        .await?
                }
            }
        }
        Ok(revoked)
    }

    /// Repairs the indexes: revokes expired tokens, drops accessor, parent
    /// and expiry entries that point at nothing, and orphans children whose
    /// parent is gone.
    pub async fn tidy(&self, now: i64) -> Result<(TidyReport, Vec<String>), BarrierError> {
        let mut report = TidyReport::default();
        let revoked = self.sweep_expired(now, usize::MAX).await?;
        report.expired_revoked = revoked.len();
        for accessor in self.barrier.list(ACCESSOR_PREFIX)? {
            if self.by_accessor(&accessor)?.is_none() {
                self.barrier
                    .delete(&format!("{ACCESSOR_PREFIX}{accessor}"))
                    .await?;
                report.dangling_accessors += 1;
            }
        }
        for link in self.barrier.list(PARENT_PREFIX)? {
            let Some((parent, child)) = link.split_once('/') else {
                continue;
            };
            let parent_alive = self.by_hash(parent)?.is_some();
            match self.by_hash(child)? {
                None => report.dangling_parent_links += 1,
                Some(mut c) if !parent_alive => {
                    c.parent = None;
                    self.barrier
                        .put(&format!("{ID_PREFIX}{child}"), &to_json(&c)?)
                        .await?;
                    report.orphaned_children += 1;
                }
                Some(_) => continue,
            }
            self.barrier
                .delete(&format!("{PARENT_PREFIX}{link}"))
                .await?;
        }
        for key in self.barrier.list(EXPIRY_PREFIX)? {
            let hash = key.split_once('/').map(|(_, h)| h).unwrap_or_default();
            if self.by_hash(hash)?.is_none() {
                self.barrier
                    .delete(&format!("{EXPIRY_PREFIX}{key}"))
                    .await?;
                report.dangling_expiry += 1;
            }
        }
        Ok((report, revoked))
    }

    /// Hashes of every token issued to `identity`.
    pub fn by_identity(&self, identity: &str) -> Result<Vec<String>, BarrierError> {
        self.barrier
            .list(&format!("{IDENTITY_PREFIX}{}/", hex::encode(identity)))
    }

    /// Every identity some live token was issued to.
    pub fn identities(&self) -> Result<Vec<String>, BarrierError> {
        Ok(self
            .barrier
            .list_dir(IDENTITY_PREFIX)?
            .into_iter()
            .filter_map(|dir| hex::decode(dir.trim_end_matches('/')).ok())
            .filter_map(|raw| String::from_utf8(raw).ok())
            .collect())
    }

    /// Every accessor (for `auth/token/accessors`).
    pub fn accessors(&self) -> Result<Vec<String>, BarrierError> {
        self.barrier.list(ACCESSOR_PREFIX)
    }

    /// How many tokens exist (a storage scan; for metrics, not hot paths).
    pub fn count(&self) -> Result<usize, BarrierError> {
        Ok(self.barrier.list(ID_PREFIX)?.len())
    }

    // ---- roles ---------------------------------------------------------------

    pub fn role(&self, name: &str) -> Result<Option<TokenRole>, BarrierError> {
        let Some(raw) = self.barrier.get(&format!("{ROLE_PREFIX}{name}"))? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| BarrierError::Corrupt(format!("token role: {e}")))
    }

    pub async fn put_role(&self, role: &TokenRole) -> Result<(), BarrierError> {
        self.barrier
            .put(&format!("{ROLE_PREFIX}{}", role.name), &to_json(role)?)
            .await
    }

    pub async fn delete_role(&self, name: &str) -> Result<(), BarrierError> {
        self.barrier.delete(&format!("{ROLE_PREFIX}{name}")).await
    }

    pub fn roles(&self) -> Result<Vec<String>, BarrierError> {
        self.barrier.list(ROLE_PREFIX)
    }

    // ---- internals -------------------------------------------------------------

    /// Deletes one token and its index entries (not its children). Returns
    /// whether it existed.
    async fn revoke_one(&self, hash: &str) -> Result<bool, BarrierError> {
        let Some(entry) = self.by_hash(hash)? else {
            return Ok(false);
        };
        let mut batch = self
            .barrier
            .batch()
            .delete(&format!("{ID_PREFIX}{hash}"))
            .delete(&format!("{ACCESSOR_PREFIX}{}", entry.accessor));
        if let Some(p) = &entry.parent {
            batch = batch.delete(&format!("{PARENT_PREFIX}{p}/{hash}"));
        }
        if let Some(e) = entry.expire_unix {
            batch = batch.delete(&expiry_key(e, hash));
        }
        if let Some(id) = &entry.identity {
            batch = batch.delete(&identity_key(id, hash));
        }
        self.barrier.commit(batch).await?;
        tracing::debug!(accessor = %entry.accessor, "token revoked");
        Ok(true)
    }

    /// Forgets the cached HMAC key (the node is sealing).
    pub fn forget_salt(&self) {
        self.salt.write().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn salt(&self) -> Result<SecretBytes, BarrierError> {
        let generation = self.barrier.generation();
        if let Some((g, s)) = &*self.salt.read().unwrap_or_else(|p| p.into_inner())
            && *g == generation
            && !self.barrier.is_sealed()
        {
            return Ok(s.clone());
        }
        let raw = self
            .barrier
            .get(SALT_KEY)?
            .ok_or_else(|| BarrierError::Corrupt("token salt missing".into()))?;
        let salt = SecretBytes::copy_from(&raw);
        *self.salt.write().unwrap_or_else(|p| p.into_inner()) = Some((generation, salt.clone()));
        Ok(salt)
    }
}

/// Adds `entry` and all its index entries to `batch`.
fn entry_batch(batch: BarrierBatch, entry: &TokenEntry) -> Result<BarrierBatch, BarrierError> {
    let hash = &entry.hash;
    let mut batch = batch
        .put(&format!("{ID_PREFIX}{hash}"), &to_json(entry)?)?
        .put(
            &format!("{ACCESSOR_PREFIX}{}", entry.accessor),
            hash.as_bytes(),
        )?;
    if let Some(p) = &entry.parent {
        batch = batch.put(&format!("{PARENT_PREFIX}{p}/{hash}"), b"")?;
    }
    if let Some(e) = entry.expire_unix {
        batch = batch.put(&expiry_key(e, hash), b"")?;
    }
    if let Some(id) = &entry.identity {
        batch = batch.put(&identity_key(id, hash), b"")?;
    }
    Ok(batch)
}

fn expiry_key(when: i64, hash: &str) -> String {
    // Fixed-width hex keeps lexical order equal to time order (times before
    // 1970 are clamped; tokens never expire then).
    format!("{EXPIRY_PREFIX}{:016x}/{hash}", when.max(0))
}

fn identity_key(identity: &str, hash: &str) -> String {
    format!("{IDENTITY_PREFIX}{}/{hash}", hex::encode(identity))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, BarrierError> {
    serde_json::to_vec(v).map_err(|e| BarrierError::Corrupt(e.to_string()))
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// Accessors are 24 base62 characters; anything else cannot name a token,
/// and is never used to build a storage key.
fn is_accessor_shaped(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The creation time in milliseconds: the wall clock's, when it falls in
/// the second the caller says it is (tests pass fixed seconds), else the
/// start of that second.
fn created_ms(now_unix: i64) -> u64 {
    let second = u64::try_from(now_unix).unwrap_or(0) * 1_000;
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    if (second..second + 1_000).contains(&wall) {
        wall
    } else {
        second
    }
}

fn new_accessor() -> String {
    random_base62(24)
}

fn keyed_hash(salt: &SecretBytes, token: &SecretString) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt.expose());
    hex::encode(hmac::sign(&key, token.expose().as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barrier::BarrierConfig;
    use crate::storage::MemoryStorage;
    use crate::storage::wait;
    use std::sync::Arc;

    fn store() -> (TokenStore, Arc<MemoryStorage>, SecretString) {
        let mem = Arc::new(MemoryStorage::new());
        let barrier = Barrier::new(mem.clone(), BarrierConfig::default());
        let root = SecretBytes::random(32);
        let init = barrier.initialize(&root).expect("init");
        let token = generate_token();
        let store = TokenStore::new(barrier.clone());
        let batch = store
            .root_token_batch(barrier.batch(), &token, 1, true)
            .expect("batch")
            .merge_raw(init);
        wait(barrier.commit(batch)).expect("commit");
        (store, mem, token)
    }

    fn child_of(store: &TokenStore, parent: Option<&str>, ttl: u64) -> (SecretString, TokenEntry) {
        wait(store.create(
            NewToken {
                parent: parent.map(str::to_owned),
                policies: vec!["default".into()],
                ttl,
                renewable: true,
                path: "auth/token/create".into(),
                ..NewToken::default()
            },
            100,
        ))
        .expect("create")
    }

    #[test]
    fn tokens_have_vault_shape() {
        let t = generate_token();
        assert_eq!(t.expose().len(), TOKEN_LEN);
        assert!(t.expose().starts_with("hvs."));
        assert!(t.expose()[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(generate_token(), t);
    }

    #[test]
    fn tokens_are_stored_only_as_keyed_hashes() {
        let (store, mem, root) = store();
        let entry = store.lookup(&root).expect("lookup").expect("present");
        assert!(entry.is_root());
        assert_eq!(store.lookup(&generate_token()).expect("lookup"), None);
        let (child, _) = child_of(&store, Some(&entry.hash), 60);
        for t in [&root, &child] {
            for (k, v) in mem.dump() {
                let hay = [k, v].concat();
                assert!(
                    !hay.windows(t.expose().len())
                        .any(|w| w == t.expose().as_bytes())
                );
            }
        }
        let by_acc = store
            .by_accessor(&entry.accessor)
            .expect("lookup")
            .expect("present");
        assert_eq!(by_acc, entry);
        assert_eq!(store.by_accessor("../../id/x").expect("lookup"), None);
    }

    #[test]
    fn revocation_cascades_to_descendants_and_orphan_revocation_does_not() {
        let (store, _, root) = store();
        let r = store.lookup(&root).expect("lookup").expect("root");
        let (a, ae) = child_of(&store, Some(&r.hash), 600);
        let (b, be) = child_of(&store, Some(&ae.hash), 600);
        let (c, _) = child_of(&store, Some(&be.hash), 600);
        let (d, de) = child_of(&store, Some(&ae.hash), 600);
        let revoked = wait(store.revoke(&a)).expect("revoke");
        assert_eq!(revoked.len(), 4);
        // Children are revoked before their parents.
        assert_eq!(revoked.last(), Some(&ae.hash));
        for t in [&a, &b, &c, &d] {
            assert_eq!(store.lookup(t).expect("lookup"), None);
        }
        assert!(store.by_accessor(&de.accessor).expect("lookup").is_none());
        assert!(store.lookup(&root).expect("lookup").is_some());

        let (p, pe) = child_of(&store, None, 600);
        let (k, _) = child_of(&store, Some(&pe.hash), 600);
        assert!(wait(store.revoke_orphan(&pe.hash)).expect("revoke"));
        assert_eq!(store.lookup(&p).expect("lookup"), None);
        let orphan = store.lookup(&k).expect("lookup").expect("child lives");
        assert!(orphan.is_orphan());
        assert_eq!(
            wait(store.tidy(100)).expect("tidy").0,
            TidyReport::default()
        );
    }

    #[test]
    fn expired_tokens_are_rejected_and_swept_in_expiry_order() {
        let (store, _, _) = store();
        let (short, se) = child_of(&store, None, 10);
        let (long, _) = child_of(&store, None, 1000);
        let (kid, _) = child_of(&store, Some(&se.hash), 1000);
        assert!(store.lookup_live(&short, 109).expect("lookup").is_some());
        assert!(store.lookup_live(&short, 110).expect("lookup").is_none());
        let swept = wait(store.sweep_expired(500, 100)).expect("sweep");
        assert_eq!(swept.len(), 2, "the expired token and its child");
        assert!(store.lookup(&short).expect("lookup").is_none());
        assert!(store.lookup(&kid).expect("lookup").is_none());
        assert!(store.lookup(&long).expect("lookup").is_some());
        assert_eq!(
            store.count().expect("count"),
            2,
            "root and the long-lived token"
        );
    }

    #[test]
    fn renewal_extends_up_to_the_maximum_and_moves_the_sweep_index() {
        let (store, _, _) = store();
        let (t, e) = wait(store.create(
            NewToken {
                ttl: 60,
                max_ttl: 300,
                renewable: true,
                ..NewToken::default()
            },
            100,
        ))
        .expect("create");
        let r = wait(store.renew(&e.hash, Some(120), 150))
            .expect("renew")
            .expect("live");
        assert_eq!(r.entry.expire_unix, Some(270));
        assert!(!r.capped);
        let r = wait(store.renew(&e.hash, Some(1000), 200))
            .expect("renew")
            .expect("live");
        assert_eq!(r.entry.expire_unix, Some(400));
        assert!(r.capped);
        // The old expiry (160) no longer sweeps it.
        assert!(
            wait(store.sweep_expired(300, 10))
                .expect("sweep")
                .is_empty()
        );
        assert!(store.lookup_live(&t, 300).expect("lookup").is_some());
        let (_, fixed) = wait(store.create(
            NewToken {
                ttl: 60,
                renewable: false,
                ..NewToken::default()
            },
            100,
        ))
        .expect("create");
        assert!(matches!(
            wait(store.renew(&fixed.hash, None, 120)),
            Err(TokenError::NotRenewable)
        ));
        let (_, periodic) = wait(store.create(
            NewToken {
                ttl: 30,
                period: 30,
                renewable: true,
                ..NewToken::default()
            },
            100,
        ))
        .expect("create");
        let r = wait(store.renew(&periodic.hash, Some(5), 125))
            .expect("renew")
            .expect("live");
        assert_eq!(r.entry.expire_unix, Some(155), "renewed to its period");
        let r = wait(store.renew(&periodic.hash, None, 150))
            .expect("renew")
            .expect("live");
        // Without an explicit maximum, periodic tokens renew indefinitely.
        assert_eq!(r.entry.expire_unix, Some(180));
    }

    #[test]
    fn limited_use_tokens_die_on_their_last_use() {
        let (store, _, _) = store();
        let (t, e) = wait(store.create(
            NewToken {
                num_uses: 2,
                ttl: 600,
                ..NewToken::default()
            },
            100,
        ))
        .expect("create");
        assert_eq!(
            wait(store.spend_use(&e.hash))
                .expect("use")
                .map(|s| s.entry.num_uses),
            Some(1)
        );
        let (_, kid) = child_of(&store, Some(&e.hash), 600);
        let last = wait(store.spend_use(&e.hash))
            .expect("use")
            .expect("a use was left");
        assert_eq!(
            last.revoked,
            [kid.hash.clone(), e.hash.clone()],
            "children first"
        );
        assert!(store.lookup(&t).expect("lookup").is_none());
        assert!(wait(store.spend_use(&e.hash)).expect("use").is_none());
    }

    #[test]
    fn tokens_are_found_by_identity() {
        let (store, _, _) = store();
        let spec = NewToken {
            identity: Some("spiffe://prod/ns/web".into()),
            ttl: 60,
            ..NewToken::default()
        };
        let (_, a) = wait(store.create(spec.clone(), 1)).expect("create");
        let (_, b) = wait(store.create(spec, 1)).expect("create");
        let mut want = vec![a.hash.clone(), b.hash.clone()];
        want.sort();
        assert_eq!(
            store.by_identity("spiffe://prod/ns/web").expect("list"),
            want
        );
        assert_eq!(
            store.identities().expect("identities"),
            ["spiffe://prod/ns/web"]
        );
        wait(store.revoke_tree(&a.hash)).expect("revoke");
        assert_eq!(
            store
                .by_identity("spiffe://prod/ns/web")
                .expect("list")
                .len(),
            1
        );
        let (_, c) = wait(store.create(spec_of("approle:ci"), 1)).expect("create");
        wait(store.revoke_tree(&b.hash)).expect("revoke");
        assert_eq!(
            store.identities().expect("identities"),
            ["approle:ci"],
            "an identity with no token left is not listed"
        );
        assert_eq!(c.identity.as_deref(), Some("approle:ci"));
    }

    fn spec_of(identity: &str) -> NewToken {
        NewToken {
            identity: Some(identity.into()),
            ttl: 60,
            ..NewToken::default()
        }
    }
}
