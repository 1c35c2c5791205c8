//! The keyring: one AES-256-GCM data key per term, encrypted as a whole under
//! the root key (docs/architecture.md, "Key hierarchy").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use sigil_hsm::SecretBytes;
use zeroize::Zeroizing;

use crate::aead::{self, AeadKey, KEY_LEN};

use super::BarrierError;

/// Associated data binding the keyring blob to its role.
const KEYRING_AAD: &[u8] = b"sigil/core/keyring/v1";
const FORMAT_VERSION: u8 = 1;
/// Per key: term (4) + installed (8) + encryptions (8) + key (32).
const ENTRY_LEN: usize = 4 + 8 + 8 + KEY_LEN;

/// A data key of one term.
#[derive(Debug)]
pub struct DataKey {
    term: u32,
    installed_unix: i64,
    raw: SecretBytes,
    cipher: AeadKey,
    encryptions: AtomicU64,
}

impl DataKey {
    fn new(
        term: u32,
        installed_unix: i64,
        raw: SecretBytes,
        encryptions: u64,
    ) -> Result<Self, BarrierError> {
        let cipher =
            AeadKey::new(&raw).map_err(|_| BarrierError::Corrupt("data key length".into()))?;
        Ok(Self {
            term,
            installed_unix,
            raw,
            cipher,
            encryptions: AtomicU64::new(encryptions),
        })
    }

    pub fn term(&self) -> u32 {
        self.term
    }

    pub fn installed_unix(&self) -> i64 {
        self.installed_unix
    }

    pub fn cipher(&self) -> &AeadKey {
        &self.cipher
    }

    pub fn encryptions(&self) -> u64 {
        self.encryptions.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn raw_for_tests(&self) -> SecretBytes {
        self.raw.clone()
    }

    /// Counts one encryption and returns the new total.
    pub(crate) fn count_encryption(&self) -> u64 {
        self.encryptions.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// All data keys, with the active term used for new writes.
#[derive(Debug)]
pub struct Keyring {
    active: u32,
    keys: BTreeMap<u32, DataKey>,
}

impl Keyring {
    /// A fresh keyring with one random key at term 1.
    pub fn generate(now_unix: i64) -> Result<Self, BarrierError> {
        let key = DataKey::new(1, now_unix, SecretBytes::random(KEY_LEN), 0)?;
        Ok(Self {
            active: 1,
            keys: BTreeMap::from([(1, key)]),
        })
    }

    pub fn active(&self) -> &DataKey {
        // The constructor and `rotated` always insert the active term.
        &self.keys[&self.active]
    }

    pub fn term(&self, term: u32) -> Option<&DataKey> {
        self.keys.get(&term)
    }

    pub fn terms(&self) -> usize {
        self.keys.len()
    }

    /// A new keyring with one more term, made active. Counters carry over.
    pub fn rotated(&self, now_unix: i64) -> Result<Self, BarrierError> {
        let next = self
            .active
            .checked_add(1)
            .ok_or_else(|| BarrierError::Corrupt("keyring term overflow".into()))?;
        let mut keys = BTreeMap::new();
        for (t, k) in &self.keys {
            keys.insert(
                *t,
                DataKey::new(*t, k.installed_unix, k.raw.clone(), k.encryptions())?,
            );
        }
        keys.insert(
            next,
            DataKey::new(next, now_unix, SecretBytes::random(KEY_LEN), 0)?,
        );
        Ok(Self { active: next, keys })
    }

    /// Serialises and encrypts the keyring under `root_key`.
    ///
    /// `counter_slack` is added to each stored encryption count: counts are
    /// persisted only at checkpoints, so what is stored must be an upper bound
    /// on what will have happened before the next checkpoint.
    pub fn seal(
        &self,
        root_key: &SecretBytes,
        counter_slack: u64,
    ) -> Result<Vec<u8>, BarrierError> {
        let mut plain = Zeroizing::new(Vec::with_capacity(9 + self.keys.len() * ENTRY_LEN));
        plain.push(FORMAT_VERSION);
        plain.extend_from_slice(&self.active.to_be_bytes());
        plain.extend_from_slice(&(self.keys.len() as u32).to_be_bytes());
        for key in self.keys.values() {
            plain.extend_from_slice(&key.term.to_be_bytes());
            plain.extend_from_slice(&key.installed_unix.to_be_bytes());
            plain.extend_from_slice(
                &key.encryptions()
                    .saturating_add(counter_slack)
                    .to_be_bytes(),
            );
            // The one place data keys are serialised: straight into a
            // zeroizing buffer that is encrypted below.
            plain.extend_from_slice(key.raw.expose());
        }
        aead::seal(root_key, KEYRING_AAD, &plain)
            .map_err(|_| BarrierError::Corrupt("root key length".into()))
    }

    /// Decrypts and parses a keyring blob. A wrong root key is
    /// [`BarrierError::WrongKey`]; a malformed plaintext is `Corrupt`.
    pub fn open(root_key: &SecretBytes, blob: &[u8]) -> Result<Self, BarrierError> {
        let plain = aead::open(root_key, KEYRING_AAD, blob).map_err(|_| BarrierError::WrongKey)?;
        let corrupt = || BarrierError::Corrupt("keyring plaintext is malformed".into());
        let (&version, rest) = plain.split_first().ok_or_else(corrupt)?;
        if version != FORMAT_VERSION || rest.len() < 8 {
            return Err(corrupt());
        }
        let active = u32::from_be_bytes(rest[0..4].try_into().map_err(|_| corrupt())?);
        let count = u32::from_be_bytes(rest[4..8].try_into().map_err(|_| corrupt())?) as usize;
        let body = &rest[8..];
        if body.len() != count * ENTRY_LEN {
            return Err(corrupt());
        }
        let mut keys = BTreeMap::new();
        for entry in body.chunks_exact(ENTRY_LEN) {
            let term = u32::from_be_bytes(entry[0..4].try_into().map_err(|_| corrupt())?);
            let installed = i64::from_be_bytes(entry[4..12].try_into().map_err(|_| corrupt())?);
            let encryptions = u64::from_be_bytes(entry[12..20].try_into().map_err(|_| corrupt())?);
            let raw = SecretBytes::copy_from(&entry[20..]);
            keys.insert(term, DataKey::new(term, installed, raw, encryptions)?);
        }
        if !keys.contains_key(&active) {
            return Err(corrupt());
        }
        Ok(Self { active, keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_keeps_terms_and_counts() {
        let root = SecretBytes::random(32);
        let ring = Keyring::generate(100).expect("generate");
        ring.active().count_encryption();
        let ring = ring.rotated(200).expect("rotate");
        assert_eq!(ring.active().term(), 2);
        let blob = ring.seal(&root, 10).expect("seal");
        let back = Keyring::open(&root, &blob).expect("open");
        assert_eq!(back.active().term(), 2);
        assert_eq!(back.terms(), 2);
        assert_eq!(back.term(1).expect("term 1").encryptions(), 11);
        assert_eq!(back.term(1).expect("term 1").installed_unix(), 100);
        assert_eq!(back.term(2).expect("term 2").installed_unix(), 200);
        assert_eq!(back.term(1).expect("t1").raw, ring.term(1).expect("t1").raw);
    }

    #[test]
    fn wrong_root_key_is_reported_as_such() {
        let ring = Keyring::generate(0).expect("generate");
        let blob = ring.seal(&SecretBytes::random(32), 0).expect("seal");
        assert!(matches!(
            Keyring::open(&SecretBytes::random(32), &blob),
            Err(BarrierError::WrongKey)
        ));
        assert!(matches!(
            Keyring::open(&SecretBytes::random(32), b""),
            Err(BarrierError::WrongKey)
        ));
    }
}
