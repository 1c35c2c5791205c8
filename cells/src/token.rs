//! Root tokens, stored only as keyed hashes.
//!
//! A token is `hvs.` followed by 24 base62 characters (28 in all, the length
//! Vault's clients expect of root tokens and generate-root one-time
//! passwords). Storage keeps `HMAC-SHA256(salt, token)` under the barrier; the
//! salt is random per node set and itself barrier-encrypted. The full token
//! store (accessors, TTLs, policies, children) builds on this layout.

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use sigil_hsm::{SecretBytes, SecretString};
use subtle::ConstantTimeEq;

use crate::barrier::{Barrier, BarrierBatch, BarrierError};

pub const TOKEN_PREFIX: &str = "hvs.";
pub const TOKEN_LEN: usize = 28;
const SALT_KEY: &str = "sys/token/salt";
const ID_PREFIX: &str = "sys/token/id/";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What the store knows about a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    /// Hex of the keyed hash; compared again in constant time on lookup.
    pub hash: String,
    pub policies: Vec<String>,
    pub display_name: String,
    pub created_unix: i64,
}

impl TokenEntry {
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
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

#[derive(Debug, Clone)]
pub struct TokenStore {
    barrier: Barrier,
}

impl TokenStore {
    pub fn new(barrier: Barrier) -> Self {
        Self { barrier }
    }

    /// Adds to `batch` a new salt (first initialisation only) and a root
    /// token entry; returns the batch and the token.
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
        let hash = keyed_hash(&salt, token);
        let entry = TokenEntry {
            hash: hash.clone(),
            policies: vec!["root".into()],
            display_name: "root".into(),
            created_unix: now_unix,
        };
        let json = serde_json::to_vec(&entry).map_err(|e| BarrierError::Corrupt(e.to_string()))?;
        batch.put(&format!("{ID_PREFIX}{hash}"), &json)
    }

    /// Creates and stores a new root token.
    pub fn create_root(&self, now_unix: i64) -> Result<SecretString, BarrierError> {
        let token = generate_token();
        let batch = self.root_token_batch(self.barrier.batch(), &token, now_unix, false)?;
        self.barrier.commit(batch)?;
        Ok(token)
    }

    /// The entry for `token`, if it exists.
    pub fn lookup(&self, token: &SecretString) -> Result<Option<TokenEntry>, BarrierError> {
        let salt = self.salt()?;
        let hash = keyed_hash(&salt, token);
        let Some(raw) = self.barrier.get(&format!("{ID_PREFIX}{hash}"))? else {
            return Ok(None);
        };
        let entry: TokenEntry = serde_json::from_slice(&raw)
            .map_err(|e| BarrierError::Corrupt(format!("token entry: {e}")))?;
        // The storage key already matched; compare again in constant time so
        // no code path relies on a variable-time comparison of token hashes.
        if bool::from(entry.hash.as_bytes().ct_eq(hash.as_bytes())) {
            Ok(Some(entry))
        } else {
            Ok(None)
        }
    }

    /// Deletes `token`'s entry.
    pub fn revoke(&self, token: &SecretString) -> Result<(), BarrierError> {
        let hash = keyed_hash(&self.salt()?, token);
        self.barrier.delete(&format!("{ID_PREFIX}{hash}"))
    }

    fn salt(&self) -> Result<SecretBytes, BarrierError> {
        let raw = self
            .barrier
            .get(SALT_KEY)?
            .ok_or_else(|| BarrierError::Corrupt("token salt missing".into()))?;
        Ok(SecretBytes::copy_from(&raw))
    }
}

fn keyed_hash(salt: &SecretBytes, token: &SecretString) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt.expose());
    hex::encode(hmac::sign(&key, token.expose().as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barrier::BarrierConfig;
    use crate::storage::{MemoryStorage, Storage};
    use std::sync::Arc;

    #[test]
    fn tokens_have_vault_shape() {
        let t = generate_token();
        assert_eq!(t.expose().len(), TOKEN_LEN);
        assert!(t.expose().starts_with("hvs."));
        assert!(t.expose()[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(generate_token(), t);
    }

    #[test]
    fn root_token_is_stored_hashed_and_looked_up() {
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
        barrier.commit(batch).expect("commit");
        let entry = store.lookup(&token).expect("lookup").expect("present");
        assert!(entry.is_root());
        assert_eq!(store.lookup(&generate_token()).expect("lookup"), None);
        // Neither the token nor its hash text appears in plaintext storage.
        for (k, v) in mem.dump() {
            let hay = [k, v].concat();
            assert!(
                !hay.windows(token.expose().len())
                    .any(|w| w == token.expose().as_bytes())
            );
        }
        store.revoke(&token).expect("revoke");
        assert_eq!(store.lookup(&token).expect("lookup"), None);
        let _ = mem.get(b"x");
    }
}
