//! The storage barrier: every value is sealed with AES-256-GCM under the
//! keyring's active term before it reaches [`Storage`], with the storage key
//! bound as associated data, so storage (and later the Raft log and
//! snapshots) only ever holds ciphertext (docs/architecture.md, "Barrier").
//!
//! Entry layout: `version (1) || term (4, BE) || nonce (12) || ciphertext || tag (16)`;
//! associated data: `"sigil/barrier/v1" || term || storage key`, so a value
//! cannot be moved to another key or relabelled with another term.
//!
//! The barrier holds the root key and keyring only while unsealed; sealing
//! drops them, and their types zeroize on drop.

mod keyring;

use std::sync::{Arc, RwLock};

use sigil_hsm::SecretBytes;
use zeroize::Zeroizing;

pub use keyring::{DataKey, Keyring};

use crate::storage::{Batch, Storage, StorageError};

/// Where the encrypted keyring is stored (outside the barrier's own prefix).
pub const KEYRING_KEY: &[u8] = b"core/keyring";
/// Prefix of every barrier-encrypted entry in storage.
pub const LOGICAL_PREFIX: &[u8] = b"logical/";

const ENTRY_VERSION: u8 = 1;
const ENTRY_AAD_TAG: &[u8] = b"sigil/barrier/v1";
const HEADER_LEN: usize = 1 + 4;

/// Barrier tuning. `auto_rotate_after` is the number of encryptions under one
/// term after which a new term is added: a quarter of the 2^32 limit for
/// random 96-bit nonces, leaving a wide margin for counts lost in a crash
/// between checkpoints.
#[derive(Debug, Clone, Copy)]
pub struct BarrierConfig {
    pub auto_rotate_after: u64,
    /// Encryption counts are persisted every this many encryptions.
    pub checkpoint_every: u64,
}

impl Default for BarrierConfig {
    fn default() -> Self {
        Self {
            auto_rotate_after: 1 << 30,
            checkpoint_every: 1 << 16,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    #[error("barrier is sealed")]
    Sealed,
    #[error("the root key does not open the keyring")]
    WrongKey,
    #[error("entry for {key:?} failed authentication")]
    Authentication { key: String },
    #[error("entry for {key:?} uses unknown keyring term {term}")]
    UnknownTerm { key: String, term: u32 },
    #[error("barrier data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Key status as `sys/key-status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStatus {
    pub term: u32,
    pub install_time_unix: i64,
    pub encryptions: u64,
}

struct Unsealed {
    root_key: SecretBytes,
    keyring: Keyring,
}

/// The encrypting view of storage. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct Barrier {
    storage: Arc<dyn Storage>,
    state: Arc<RwLock<Option<Arc<Unsealed>>>>,
    rotate_lock: Arc<tokio::sync::Mutex<()>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    config: BarrierConfig,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("sealed", &self.is_sealed())
            .field("config", &self.config)
            .finish()
    }
}

impl Barrier {
    pub fn new(storage: Arc<dyn Storage>, config: BarrierConfig) -> Self {
        Self::with_clock(storage, config, Arc::new(crate::clock::unix_now))
    }

    /// A barrier reading time from `clock` (seconds since the epoch).
    pub fn with_clock(
        storage: Arc<dyn Storage>,
        config: BarrierConfig,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> Self {
        Self {
            storage,
            state: Arc::new(RwLock::new(None)),
            rotate_lock: Arc::default(),
            generation: Arc::default(),
            config,
            clock,
        }
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn is_sealed(&self) -> bool {
        self.read_state().is_none()
    }

    /// Creates a fresh keyring sealed under `root_key`, serves from it in
    /// memory, and returns the write that stores it. The caller commits that
    /// write together with the rest of initialisation (so entries written
    /// during init land atomically with the keyring) and seals the barrier if
    /// the commit fails.
    pub fn initialize(&self, root_key: &SecretBytes) -> Result<Batch, BarrierError> {
        let keyring = Keyring::generate((self.clock)())?;
        let blob = keyring.seal(root_key, 0)?;
        self.install(Unsealed {
            root_key: root_key.clone(),
            keyring,
        });
        Ok(Batch::new()
            .require(KEYRING_KEY, crate::storage::Precondition::Absent)
            .put(KEYRING_KEY, blob))
    }

    /// Opens the stored keyring with `root_key` and starts serving.
    pub fn unseal(&self, root_key: SecretBytes) -> Result<(), BarrierError> {
        let blob = self
            .storage
            .get(KEYRING_KEY)?
            .ok_or_else(|| BarrierError::Corrupt("keyring missing".into()))?;
        let keyring = Keyring::open(&root_key, &blob)?;
        // Counts since the last checkpoint may have been lost in a crash;
        // the stored count already includes a full checkpoint of slack.
        self.install(Unsealed { root_key, keyring });
        Ok(())
    }

    /// Drops the root key and every data key.
    pub fn seal(&self) {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        *guard = None;
    }

    /// A copy of the root key, for tests that look for it on disk.
    #[cfg(test)]
    pub(crate) fn root_key(&self) -> Result<SecretBytes, BarrierError> {
        Ok(self.unsealed()?.root_key.clone())
    }

    /// Re-encrypts the keyring under `new_root` and returns the write; after
    /// the caller commits it (with the new root-key blob) it calls
    /// [`Barrier::replace_root_key`].
    pub fn rekey_batch(&self, new_root: &SecretBytes) -> Result<Batch, BarrierError> {
        let u = self.unsealed()?;
        let blob = u.keyring.seal(new_root, self.config.checkpoint_every)?;
        Ok(Batch::new().put(KEYRING_KEY, blob))
    }

    pub fn replace_root_key(&self, new_root: SecretBytes) -> Result<(), BarrierError> {
        let blob = self
            .storage
            .get(KEYRING_KEY)?
            .ok_or_else(|| BarrierError::Corrupt("keyring missing".into()))?;
        let keyring = Keyring::open(&new_root, &blob)?;
        self.install(Unsealed {
            root_key: new_root,
            keyring,
        });
        Ok(())
    }

    /// Adds a keyring term; new writes use it, older terms keep decrypting.
    pub async fn rotate(&self) -> Result<KeyStatus, BarrierError> {
        // Rotations serialise so two cannot both add the same term.
        let _rotating = self.rotate_lock.lock().await;
        let u = self.unsealed()?;
        let keyring = u.keyring.rotated((self.clock)())?;
        let blob = keyring.seal(&u.root_key, self.config.checkpoint_every)?;
        self.storage.put(KEYRING_KEY, &blob).await?;
        let status = status_of(&keyring);
        self.replace_state(Unsealed {
            root_key: u.root_key.clone(),
            keyring,
        });
        tracing::info!(term = status.term, "keyring rotated");
        Ok(status)
    }

    /// Re-reads the stored keyring with the root key held in memory: another
    /// node of the cell may have rotated it. Reads call this when an entry
    /// names a term this node does not know yet.
    pub fn reload_keyring(&self) -> Result<(), BarrierError> {
        let u = self.unsealed()?;
        let blob = self
            .storage
            .get(KEYRING_KEY)?
            .ok_or_else(|| BarrierError::Corrupt("keyring missing".into()))?;
        let keyring = Keyring::open(&u.root_key, &blob)?;
        let (stored, held) = (keyring.active().term(), u.keyring.active().term());
        if stored <= held {
            // Nothing new (a counter checkpoint), or a stale copy: never go
            // back to an older keyring.
            return Ok(());
        }
        tracing::info!(term = stored, "keyring reloaded: rotated on another node");
        self.replace_state(Unsealed {
            root_key: u.root_key.clone(),
            keyring,
        });
        Ok(())
    }

    /// Whether the root key held in memory opens `blob`, a stored keyring
    /// (one in a snapshot about to be restored, say).
    pub fn opens_keyring(&self, blob: &[u8]) -> Result<bool, BarrierError> {
        let u = self.unsealed()?;
        Ok(Keyring::open(&u.root_key, blob).is_ok())
    }

    /// Stores the keyring held in memory if the stored one is older (a
    /// snapshot restore brought back an earlier keyring). Nodes never go
    /// back to an older keyring, so entries written under the newer terms,
    /// before or during the restore, stay readable, after a restart too.
    /// Returns whether it wrote.
    pub async fn store_keyring_if_newer(&self) -> Result<bool, BarrierError> {
        let _rotating = self.rotate_lock.lock().await;
        let u = self.unsealed()?;
        let stored = match self.storage.get(KEYRING_KEY)? {
            Some(blob) => Keyring::open(&u.root_key, &blob)
                .map(|k| k.active().term())
                .ok(),
            None => None,
        };
        let held = u.keyring.active().term();
        if stored.is_some_and(|t| t >= held) {
            return Ok(false);
        }
        let blob = u.keyring.seal(&u.root_key, self.config.checkpoint_every)?;
        self.storage.put(KEYRING_KEY, &blob).await?;
        tracing::info!(term = held, "keyring stored again after a restore");
        Ok(true)
    }

    /// Every data key, for tests that look for key material on disk.
    #[cfg(test)]
    pub(crate) fn data_keys_for_tests(&self) -> Vec<SecretBytes> {
        self.unsealed()
            .map(|u| {
                (1..=u.keyring.active().term())
                    .filter_map(|t| u.keyring.term(t).map(|k| k.raw_for_tests()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn key_status(&self) -> Result<KeyStatus, BarrierError> {
        Ok(status_of(&self.unsealed()?.keyring))
    }

    /// Reads and decrypts `key`.
    pub fn get(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, BarrierError> {
        let u = self.unsealed()?;
        let skey = storage_key(key);
        let Some(entry) = self.storage.get(&skey)? else {
            return Ok(None);
        };
        match open_entry(&u.keyring, key, &skey, &entry) {
            Err(BarrierError::UnknownTerm { .. }) => {
                // Written under a term another node added after this one
                // unsealed: pick up the replicated keyring and try again.
                self.reload_keyring()?;
                open_entry(&self.unsealed()?.keyring, key, &skey, &entry).map(Some)
            }
            other => other.map(Some),
        }
    }

    /// Encrypts and writes `value` at `key`.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), BarrierError> {
        let batch = self.batch().put(key, value)?;
        self.commit(batch).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), BarrierError> {
        self.unsealed()?;
        self.storage.delete(&storage_key(key)).await?;
        Ok(())
    }

    /// Keys (relative to `prefix`) directly or indirectly under `prefix`, in
    /// order. Keys are not secret; values are not read.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, BarrierError> {
        self.unsealed()?;
        let sprefix = storage_key(prefix);
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.storage.scan_prefix(&sprefix, after.as_deref(), 1024)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            out.extend(
                page.iter()
                    .map(|(k, _)| String::from_utf8_lossy(&k[sprefix.len()..]).into_owned()),
            );
        }
        Ok(out)
    }

    /// At most `limit` keys (relative to `prefix`) under `prefix`, in order,
    /// strictly after `start_after` (relative too) when given: one page of a
    /// range scan, for indexes too large to list at once.
    pub fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BarrierError> {
        self.unsealed()?;
        let sprefix = storage_key(prefix);
        let after = start_after.map(|a| {
            let mut k = sprefix.clone();
            k.extend_from_slice(a.as_bytes());
            k
        });
        Ok(self
            .storage
            .scan_prefix(&sprefix, after.as_deref(), limit)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[sprefix.len()..]).into_owned())
            .collect())
    }

    /// One level of the tree under `prefix`, as Vault lists: leaf keys, and
    /// each sub-directory once with a trailing `/`, in order. A directory's
    /// contents are skipped with one seek rather than read, so listing a
    /// directory costs its direct children, not all its descendants.
    pub fn list_dir(&self, prefix: &str) -> Result<Vec<String>, BarrierError> {
        self.unsealed()?;
        let sprefix = storage_key(prefix);
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.storage.scan_prefix(&sprefix, after.as_deref(), 1)?;
            let Some((key, _)) = page.into_iter().next() else {
                break;
            };
            let rel = &key[sprefix.len()..];
            match rel.iter().position(|b| *b == b'/') {
                Some(slash) => {
                    let dir = &rel[..=slash];
                    out.push(String::from_utf8_lossy(dir).into_owned());
                    // Keys are UTF-8, which never contains 0xFF: this skips
                    // every key below `dir` in one step.
                    let mut skip = key[..sprefix.len() + slash + 1].to_vec();
                    skip.push(0xFF);
                    after = Some(skip);
                }
                None => {
                    out.push(String::from_utf8_lossy(rel).into_owned());
                    after = Some(key);
                }
            }
        }
        Ok(out)
    }

    /// Deletes every entry under `prefix`, in batches of 1024.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, BarrierError> {
        self.unsealed()?;
        let sprefix = storage_key(prefix);
        let mut deleted = 0;
        loop {
            let page = self.storage.scan_prefix(&sprefix, None, 1024)?;
            if page.is_empty() {
                return Ok(deleted);
            }
            deleted += page.len();
            let batch = page.into_iter().fold(Batch::new(), |b, (k, _)| b.delete(k));
            self.storage.apply(batch).await?;
        }
    }

    /// Counts unseals: state derived from barrier contents (mount tables,
    /// caches) is rebuilt when this changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Starts an atomic, encrypted batch.
    pub fn batch(&self) -> BarrierBatch {
        BarrierBatch {
            barrier: self.clone(),
            batch: Batch::new(),
            checkpoint: false,
        }
    }

    /// Writes an encrypted batch, then rotates or checkpoints if the active
    /// term's counter crossed a threshold.
    pub async fn commit(&self, batch: BarrierBatch) -> Result<(), BarrierError> {
        self.storage.apply(batch.batch).await?;
        if batch.checkpoint {
            self.checkpoint().await?;
        }
        self.after_encryptions().await
    }

    /// Persists the encryption counters so a restart does not reset them to
    /// values far below the truth. Written from the keyring as it is now,
    /// under the rotation lock, so a checkpoint can never store a keyring
    /// older than one a concurrent rotation stored.
    async fn checkpoint(&self) -> Result<(), BarrierError> {
        let _rotating = self.rotate_lock.lock().await;
        let u = self.unsealed()?;
        let blob = u.keyring.seal(&u.root_key, self.config.checkpoint_every)?;
        self.storage.put(KEYRING_KEY, &blob).await?;
        Ok(())
    }

    async fn after_encryptions(&self) -> Result<(), BarrierError> {
        let u = self.unsealed()?;
        let count = u.keyring.active().encryptions();
        if count >= self.config.auto_rotate_after {
            tracing::info!(
                term = u.keyring.active().term(),
                count,
                "encryption limit reached, rotating keyring"
            );
            self.rotate().await?;
        }
        Ok(())
    }

    /// Encrypts `value` for `key`, and says whether the active term's
    /// counter just crossed a checkpoint.
    fn seal_entry(&self, key: &str, value: &[u8]) -> Result<(Vec<u8>, bool), BarrierError> {
        let u = self.unsealed()?;
        let skey = storage_key(key);
        let dk = u.keyring.active();
        let count = dk.count_encryption();
        let checkpoint = count % self.config.checkpoint_every == 0;
        let mut out = Vec::with_capacity(HEADER_LEN + value.len() + crate::aead::OVERHEAD);
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&dk.term().to_be_bytes());
        dk.cipher()
            .seal_into(&entry_aad(dk.term(), &skey), value, &mut out);
        Ok((out, checkpoint))
    }

    fn install(&self, u: Unsealed) {
        self.replace_state(u);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Swaps the keys in memory without starting a new generation.
    fn replace_state(&self, u: Unsealed) {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        *guard = Some(Arc::new(u));
    }

    fn read_state(&self) -> Option<Arc<Unsealed>> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn unsealed(&self) -> Result<Arc<Unsealed>, BarrierError> {
        self.read_state().ok_or(BarrierError::Sealed)
    }
}

/// An atomic group of encrypted writes (see [`Barrier::batch`]).
#[derive(Debug)]
pub struct BarrierBatch {
    barrier: Barrier,
    batch: Batch,
    /// Whether an encryption in this batch crossed a counter checkpoint.
    checkpoint: bool,
}

impl BarrierBatch {
    pub fn put(mut self, key: &str, value: &[u8]) -> Result<Self, BarrierError> {
        let (entry, checkpoint) = self.barrier.seal_entry(key, value)?;
        self.batch = self.batch.put(storage_key(key), entry);
        self.checkpoint |= checkpoint;
        Ok(self)
    }

    pub fn delete(mut self, key: &str) -> Self {
        self.batch = self.batch.delete(storage_key(key));
        self
    }

    /// Makes the batch conditional on `key` being present (or absent): an
    /// update that must not bring back an entry another writer deleted.
    pub fn require(mut self, key: &str, present: bool) -> Self {
        let condition = if present {
            crate::storage::Precondition::Present
        } else {
            crate::storage::Precondition::Absent
        };
        self.batch = self.batch.require(storage_key(key), condition);
        self
    }

    /// Adds raw (already protected) writes outside the barrier prefix, such as
    /// the keyring or a wrapped root key, to commit atomically with this batch.
    pub fn merge_raw(mut self, other: Batch) -> Self {
        self.batch.preconditions.extend(other.preconditions);
        self.batch.ops.extend(other.ops);
        self
    }
}

fn status_of(keyring: &Keyring) -> KeyStatus {
    let active = keyring.active();
    KeyStatus {
        term: active.term(),
        install_time_unix: active.installed_unix(),
        encryptions: active.encryptions(),
    }
}

fn storage_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(LOGICAL_PREFIX.len() + key.len());
    k.extend_from_slice(LOGICAL_PREFIX);
    k.extend_from_slice(key.as_bytes());
    k
}

fn entry_aad(term: u32, storage_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(ENTRY_AAD_TAG.len() + 4 + storage_key.len());
    aad.extend_from_slice(ENTRY_AAD_TAG);
    aad.extend_from_slice(&term.to_be_bytes());
    aad.extend_from_slice(storage_key);
    aad
}

fn open_entry(
    keyring: &Keyring,
    key: &str,
    skey: &[u8],
    entry: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
    let auth = || BarrierError::Authentication {
        key: key.to_owned(),
    };
    if entry.len() < HEADER_LEN || entry[0] != ENTRY_VERSION {
        return Err(auth());
    }
    let term = u32::from_be_bytes([entry[1], entry[2], entry[3], entry[4]]);
    let dk = keyring
        .term(term)
        .ok_or_else(|| BarrierError::UnknownTerm {
            key: key.to_owned(),
            term,
        })?;
    dk.cipher()
        .open(&entry_aad(term, skey), &entry[HEADER_LEN..])
        .map_err(|_| auth())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;
    use crate::storage::wait;

    fn unsealed(config: BarrierConfig) -> (Barrier, Arc<MemoryStorage>, SecretBytes) {
        let mem = Arc::new(MemoryStorage::new());
        let barrier = Barrier::new(mem.clone(), config);
        let root = SecretBytes::random(32);
        wait(mem.apply(barrier.initialize(&root).expect("init"))).expect("write");
        barrier.unseal(root.clone()).expect("unseal");
        (barrier, mem, root)
    }

    #[test]
    fn sealed_barrier_refuses_everything() {
        let (barrier, _, _) = unsealed(BarrierConfig::default());
        wait(barrier.put("a", b"1")).expect("put");
        barrier.seal();
        assert!(matches!(barrier.get("a"), Err(BarrierError::Sealed)));
        assert!(matches!(
            wait(barrier.put("a", b"2")),
            Err(BarrierError::Sealed)
        ));
        assert!(matches!(barrier.list(""), Err(BarrierError::Sealed)));
        assert!(matches!(barrier.key_status(), Err(BarrierError::Sealed)));
    }

    #[test]
    fn values_round_trip_and_storage_holds_only_ciphertext() {
        let (barrier, mem, _) = unsealed(BarrierConfig::default());
        wait(barrier.put("secret/app", b"plaintext-canary")).expect("put");
        assert_eq!(
            barrier
                .get("secret/app")
                .expect("get")
                .as_deref()
                .map(Vec::as_slice),
            Some(&b"plaintext-canary"[..])
        );
        for (_, v) in mem.dump() {
            assert!(!v.windows(16).any(|w| w == b"plaintext-canary"));
        }
        assert_eq!(barrier.get("absent").expect("get"), None);
    }

    #[test]
    fn entries_are_bound_to_their_key() {
        let (barrier, mem, _) = unsealed(BarrierConfig::default());
        wait(barrier.put("a", b"alpha")).expect("put");
        let entry = mem.get(b"logical/a").expect("get").expect("present");
        wait(mem.put(b"logical/b", &entry)).expect("copy");
        assert!(matches!(
            barrier.get("b"),
            Err(BarrierError::Authentication { .. })
        ));
        let mut bad = entry.clone();
        bad[1..5].copy_from_slice(&9u32.to_be_bytes());
        wait(mem.put(b"logical/a", &bad)).expect("relabel");
        assert!(matches!(
            barrier.get("a"),
            Err(BarrierError::UnknownTerm { term: 9, .. })
        ));
    }

    #[test]
    fn rotation_keeps_old_terms_readable_and_survives_reseal() {
        let (barrier, _, root) = unsealed(BarrierConfig::default());
        wait(barrier.put("before", b"one")).expect("put");
        assert_eq!(barrier.key_status().expect("status").term, 1);
        let st = wait(barrier.rotate()).expect("rotate");
        assert_eq!(st.term, 2);
        wait(barrier.put("after", b"two")).expect("put");
        barrier.seal();
        barrier.unseal(root).expect("unseal");
        assert_eq!(barrier.key_status().expect("status").term, 2);
        assert_eq!(
            barrier
                .get("before")
                .expect("get")
                .as_deref()
                .map(Vec::as_slice),
            Some(&b"one"[..])
        );
        assert_eq!(
            barrier
                .get("after")
                .expect("get")
                .as_deref()
                .map(Vec::as_slice),
            Some(&b"two"[..])
        );
    }

    #[test]
    fn rotates_automatically_at_the_encryption_limit() {
        let (barrier, _, root) = unsealed(BarrierConfig {
            auto_rotate_after: 10,
            checkpoint_every: 4,
        });
        for i in 0..9 {
            wait(barrier.put(&format!("k{i}"), b"v")).expect("put");
        }
        assert_eq!(barrier.key_status().expect("status").term, 1);
        wait(barrier.put("k9", b"v")).expect("put");
        assert_eq!(
            barrier.key_status().expect("status").term,
            2,
            "rotated at the 10th encryption"
        );
        // Counts persist at checkpoints (with slack), so a restart cannot
        // reset them to zero.
        for i in 0..5 {
            wait(barrier.put(&format!("j{i}"), b"v")).expect("put");
        }
        barrier.seal();
        barrier.unseal(root).expect("unseal");
        assert!(barrier.key_status().expect("status").encryptions >= 5);
        for i in 0..10 {
            assert!(barrier.get(&format!("k{i}")).expect("get").is_some());
        }
    }

    #[test]
    fn wrong_root_key_does_not_unseal() {
        let (barrier, _, _) = unsealed(BarrierConfig::default());
        barrier.seal();
        assert!(matches!(
            barrier.unseal(SecretBytes::random(32)),
            Err(BarrierError::WrongKey)
        ));
        assert!(barrier.is_sealed());
    }

    #[test]
    fn list_returns_relative_keys_in_order() {
        let (barrier, _, _) = unsealed(BarrierConfig::default());
        for k in ["sys/b", "sys/a", "sys/c/d", "other"] {
            wait(barrier.put(k, b"v")).expect("put");
        }
        assert_eq!(barrier.list("sys/").expect("list"), ["a", "b", "c/d"]);
    }

    #[test]
    fn list_dir_returns_one_level_and_delete_prefix_removes_a_subtree() {
        let (barrier, _, _) = unsealed(BarrierConfig::default());
        for k in ["m/a", "m/b/x", "m/b/y/z", "m/b0", "m/c", "m/d/e", "n/a"] {
            wait(barrier.put(k, b"v")).expect("put");
        }
        assert_eq!(
            barrier.list_dir("m/").expect("list"),
            ["a", "b/", "b0", "c", "d/"]
        );
        assert_eq!(barrier.list_dir("m/b/").expect("list"), ["x", "y/"]);
        assert!(barrier.list_dir("q/").expect("list").is_empty());
        assert_eq!(wait(barrier.delete_prefix("m/b/")).expect("delete"), 2);
        assert_eq!(
            barrier.list_dir("m/").expect("list"),
            ["a", "b0", "c", "d/"]
        );
        assert_eq!(
            barrier.get("n/a").expect("get").map(|v| v.to_vec()),
            Some(b"v".to_vec())
        );
    }
}
