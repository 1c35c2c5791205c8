//! A named transit key: its versions, its policy, and the ciphertext format
//! Vault's clients parse (`vault:v<version>:<base64>`). Pure: no storage,
//! no clock (the caller passes `now`).
//!
//! Every version is an AEAD key generated in this cell from the system
//! CSPRNG. A ciphertext is `nonce (12) || ciphertext || tag (16)` under the
//! version named in its prefix, as Vault writes it, so clients that split
//! or store ciphertexts keep working.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::aead::{
    AES_128_GCM, AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce,
    UnboundKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

const TAG_LEN: usize = 16;
/// Every ciphertext starts with this.
pub const PREFIX: &str = "vault:";

/// The key types this engine creates: all AEAD, all with 96-bit nonces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    #[serde(rename = "aes256-gcm96")]
    Aes256Gcm96,
    #[serde(rename = "aes128-gcm96")]
    Aes128Gcm96,
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
}

impl KeyType {
    pub const ALL: [KeyType; 3] = [Self::Aes256Gcm96, Self::Aes128Gcm96, Self::ChaCha20Poly1305];

    pub fn parse(s: &str) -> Result<Self, TransitError> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| TransitError::UnknownType(s.chars().take(64).collect()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Aes256Gcm96 => "aes256-gcm96",
            Self::Aes128Gcm96 => "aes128-gcm96",
            Self::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    fn algorithm(self) -> &'static Algorithm {
        match self {
            Self::Aes256Gcm96 => &AES_256_GCM,
            Self::Aes128Gcm96 => &AES_128_GCM,
            Self::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        }
    }

    fn key_len(self) -> usize {
        self.algorithm().key_len()
    }
}

/// Why a transit operation was refused; every one is the caller's doing
/// (a 400), worded as Vault words it where clients match on the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitError {
    #[error("unknown key type {0:?}: use aes256-gcm96, aes128-gcm96 or chacha20-poly1305")]
    UnknownType(String),
    #[error("invalid ciphertext: no prefix")]
    NoPrefix,
    #[error("invalid ciphertext: could not parse version")]
    BadVersion,
    #[error("invalid ciphertext: version is too new")]
    TooNew,
    #[error("ciphertext or signature version is disallowed by policy (too old)")]
    TooOld,
    #[error("invalid ciphertext: could not decode base64")]
    Base64,
    #[error("invalid ciphertext: size too small")]
    TooShort,
    /// Wrong key (another cell's, another key's), wrong associated data, or
    /// a tampered ciphertext: deliberately one answer.
    #[error("cipher: message authentication failed")]
    Authentication,
    #[error("requested version for encryption is higher than the latest key version")]
    EncryptTooNew,
    #[error("requested version for encryption is less than the minimum encryption key version")]
    EncryptTooOld,
    #[error("min_decryption_version must be between 1 and the latest version ({0})")]
    MinDecryption(u32),
    #[error(
        "min_encryption_version must be 0 (the latest) or between min_decryption_version and the latest version ({0})"
    )]
    MinEncryption(u32),
    #[error("the key has reached its last version number")]
    VersionsExhausted,
}

/// One version's key bytes: zeroized on drop, redacted in `Debug`, stored
/// (inside the barrier) as base64.
pub struct KeyMaterial(Zeroizing<Vec<u8>>);

impl KeyMaterial {
    fn random(len: usize) -> Self {
        let mut buf = Zeroizing::new(vec![0u8; len]);
        aws_lc_rs::rand::fill(&mut buf).expect("system random number generator failed");
        Self(buf)
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaterial([redacted])")
    }
}

impl Serialize for KeyMaterial {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(B64.encode(&*self.0));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for KeyMaterial {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = KeyMaterial;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("base64 key material")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyMaterial, E> {
                let mut buf = Zeroizing::new(Vec::with_capacity(v.len()));
                B64.decode_vec(v, &mut buf)
                    .map_err(|_| E::custom("key material is not base64"))?;
                Ok(KeyMaterial(buf))
            }
        }
        d.deserialize_str(Visit)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KeyVersion {
    key: KeyMaterial,
    /// Unix seconds.
    pub created: i64,
}

/// A named key and its policy.
#[derive(Debug, Serialize, Deserialize)]
pub struct Keyring {
    #[serde(rename = "type")]
    pub key_type: KeyType,
    versions: BTreeMap<u32, KeyVersion>,
    pub latest_version: u32,
    /// Ciphertexts of older versions are refused.
    pub min_decryption_version: u32,
    /// 0: encrypt with the latest version.
    pub min_encryption_version: u32,
    pub deletion_allowed: bool,
    /// Seconds between automatic rotations; 0 turns them off.
    pub auto_rotate_period: u64,
}

impl Keyring {
    pub fn new(key_type: KeyType, now: i64) -> Self {
        let mut k = Self {
            key_type,
            versions: BTreeMap::new(),
            latest_version: 0,
            min_decryption_version: 1,
            min_encryption_version: 0,
            deletion_allowed: false,
            auto_rotate_period: 0,
        };
        k.add_version(now);
        k
    }

    fn add_version(&mut self, now: i64) {
        self.latest_version += 1;
        self.versions.insert(
            self.latest_version,
            KeyVersion {
                key: KeyMaterial::random(self.key_type.key_len()),
                created: now,
            },
        );
    }

    /// Adds a new latest version; older versions still decrypt.
    pub fn rotate(&mut self, now: i64) -> Result<(), TransitError> {
        if self.latest_version == u32::MAX {
            return Err(TransitError::VersionsExhausted);
        }
        self.add_version(now);
        Ok(())
    }

    /// Creation time of each version, as the key's `keys` field shows it.
    pub fn version_times(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.versions.iter().map(|(v, k)| (*v, k.created))
    }

    /// When the latest version was made (for automatic rotation).
    pub fn latest_created(&self) -> i64 {
        self.versions
            .get(&self.latest_version)
            .map_or(0, |k| k.created)
    }

    /// Sets the version bounds, checked together.
    pub fn set_bounds(&mut self, min_decrypt: u32, min_encrypt: u32) -> Result<(), TransitError> {
        if min_decrypt == 0 || min_decrypt > self.latest_version {
            return Err(TransitError::MinDecryption(self.latest_version));
        }
        if min_encrypt != 0 && (min_encrypt < min_decrypt || min_encrypt > self.latest_version) {
            return Err(TransitError::MinEncryption(self.latest_version));
        }
        self.min_decryption_version = min_decrypt;
        self.min_encryption_version = min_encrypt;
        Ok(())
    }

    fn encryption_version(&self, requested: Option<u32>) -> Result<u32, TransitError> {
        match requested.unwrap_or(0) {
            0 => Ok(self.latest_version),
            v if v > self.latest_version => Err(TransitError::EncryptTooNew),
            v if v < self.min_encryption_version.max(self.min_decryption_version) => {
                Err(TransitError::EncryptTooOld)
            }
            v => Ok(v),
        }
    }

    fn aead(&self, version: u32) -> Result<LessSafeKey, TransitError> {
        let v = self.versions.get(&version).ok_or(TransitError::TooOld)?;
        let unbound = UnboundKey::new(self.key_type.algorithm(), &v.key.0)
            .map_err(|_| TransitError::Authentication)?;
        Ok(LessSafeKey::new(unbound))
    }

    /// Encrypts under `version` (the latest when `None` or 0) and returns
    /// the ciphertext and the version used.
    pub fn encrypt(
        &self,
        version: Option<u32>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(String, u32), TransitError> {
        let version = self.encryption_version(version)?;
        let key = self.aead(version)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("system random number generator failed");
        let mut blob = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(plaintext);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut blob[NONCE_LEN..],
            )
            .map_err(|_| TransitError::Authentication)?;
        blob.extend_from_slice(tag.as_ref());
        Ok((format!("{PREFIX}v{version}:{}", B64.encode(&blob)), version))
    }

    /// Decrypts a ciphertext made by [`Keyring::encrypt`] (of this key in
    /// this cell) and returns the plaintext and the version it was under.
    pub fn decrypt(
        &self,
        ciphertext: &str,
        aad: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, u32), TransitError> {
        let (version, blob) = parse_ciphertext(ciphertext)?;
        if version > self.latest_version {
            return Err(TransitError::TooNew);
        }
        if version < self.min_decryption_version {
            return Err(TransitError::TooOld);
        }
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(TransitError::TooShort);
        }
        let key = self.aead(version)?;
        let (nonce, body) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| TransitError::TooShort)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| TransitError::Authentication)?
            .len();
        buf.truncate(len);
        Ok((buf, version))
    }
}

/// The version and raw bytes of `vault:v<n>:<base64>`.
pub fn parse_ciphertext(text: &str) -> Result<(u32, Vec<u8>), TransitError> {
    let rest = text.strip_prefix(PREFIX).ok_or(TransitError::NoPrefix)?;
    let (version, body) = rest.split_once(':').ok_or(TransitError::BadVersion)?;
    let version: u32 = version
        .strip_prefix('v')
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .ok_or(TransitError::BadVersion)?;
    let blob = B64.decode(body).map_err(|_| TransitError::Base64)?;
    Ok((version, blob))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_and_binds_its_associated_data() {
        for t in KeyType::ALL {
            let k = Keyring::new(t, 10);
            let (ct, v) = k
                .encrypt(None, b"the eagle flies", b"ctx")
                .expect("encrypt");
            assert_eq!(v, 1);
            assert!(ct.starts_with("vault:v1:"), "{ct}");
            let (pt, v) = k.decrypt(&ct, b"ctx").expect("decrypt");
            assert_eq!((pt.as_slice(), v), (&b"the eagle flies"[..], 1));
            assert_eq!(k.decrypt(&ct, b"other"), Err(TransitError::Authentication));
            assert_eq!(k.decrypt(&ct, b""), Err(TransitError::Authentication));
            let (again, _) = k
                .encrypt(None, b"the eagle flies", b"ctx")
                .expect("encrypt");
            assert_ne!(again, ct, "{}: a fresh nonce every time", t.name());
            assert_eq!(KeyType::parse(t.name()), Ok(t));
        }
        assert!(matches!(
            KeyType::parse("rsa-4096"),
            Err(TransitError::UnknownType(_))
        ));
    }

    #[test]
    fn two_keys_of_the_same_name_and_type_do_not_open_each_others_ciphertexts() {
        let a = Keyring::new(KeyType::Aes256Gcm96, 0);
        let b = Keyring::new(KeyType::Aes256Gcm96, 0);
        let (ct, _) = a.encrypt(None, b"x", b"").expect("encrypt");
        assert_eq!(b.decrypt(&ct, b""), Err(TransitError::Authentication));
    }

    #[test]
    fn tampering_anywhere_is_refused() {
        let k = Keyring::new(KeyType::ChaCha20Poly1305, 0);
        let (ct, _) = k.encrypt(None, b"payload", b"").expect("encrypt");
        let (_, blob) = parse_ciphertext(&ct).expect("parse");
        for i in 0..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 0x80;
            let text = format!("vault:v1:{}", B64.encode(&t));
            assert_eq!(
                k.decrypt(&text, b""),
                Err(TransitError::Authentication),
                "{i}"
            );
        }
    }

    #[test]
    fn versions_rotate_and_policy_bounds_hold() {
        let mut k = Keyring::new(KeyType::Aes256Gcm96, 0);
        let (old, _) = k.encrypt(None, b"one", b"").expect("encrypt");
        k.rotate(5).expect("rotate");
        let (new, v) = k.encrypt(None, b"two", b"").expect("encrypt");
        assert_eq!(v, 2);
        assert!(new.starts_with("vault:v2:"));
        assert_eq!(k.decrypt(&old, b"").expect("old").1, 1);
        assert_eq!(
            k.encrypt(Some(1), b"x", b"").expect("v1").1,
            1,
            "an older version may still be asked for"
        );
        assert_eq!(
            k.encrypt(Some(3), b"x", b""),
            Err(TransitError::EncryptTooNew)
        );
        assert_eq!(k.latest_created(), 5);
        assert_eq!(k.version_times().collect::<Vec<_>>(), [(1, 0), (2, 5)]);

        assert_eq!(k.set_bounds(0, 0), Err(TransitError::MinDecryption(2)));
        assert_eq!(k.set_bounds(3, 0), Err(TransitError::MinDecryption(2)));
        assert_eq!(k.set_bounds(2, 1), Err(TransitError::MinEncryption(2)));
        assert_eq!(
            k.min_decryption_version, 1,
            "a refused change changes nothing"
        );
        k.set_bounds(2, 2).expect("bounds");
        assert_eq!(k.decrypt(&old, b""), Err(TransitError::TooOld));
        assert_eq!(
            k.encrypt(Some(1), b"x", b""),
            Err(TransitError::EncryptTooOld)
        );
        assert_eq!(k.decrypt(&new, b"").expect("new").0.as_slice(), b"two");
        let v9 = new.replacen("vault:v2:", "vault:v9:", 1);
        assert_eq!(k.decrypt(&v9, b""), Err(TransitError::TooNew));
    }

    #[test]
    fn malformed_ciphertexts_get_vaults_answers() {
        let k = Keyring::new(KeyType::Aes256Gcm96, 0);
        for (text, want) in [
            ("", TransitError::NoPrefix),
            ("v1:AAAA", TransitError::NoPrefix),
            ("vault:", TransitError::BadVersion),
            ("vault:1:AAAA", TransitError::BadVersion),
            ("vault:v0:AAAA", TransitError::BadVersion),
            ("vault:vx:AAAA", TransitError::BadVersion),
            ("vault:v99999999999:AAAA", TransitError::BadVersion),
            ("vault:v1:%%%", TransitError::Base64),
            ("vault:v1:AAAA", TransitError::TooShort),
        ] {
            assert_eq!(k.decrypt(text, b""), Err(want), "{text:?}");
        }
    }

    #[test]
    fn stored_form_round_trips_and_never_shows_key_bytes_in_debug() {
        let mut k = Keyring::new(KeyType::Aes128Gcm96, 7);
        k.rotate(8).expect("rotate");
        let (ct, _) = k.encrypt(None, b"kept", b"").expect("encrypt");
        let stored = serde_json::to_vec(&k).expect("encode");
        let back: Keyring = serde_json::from_slice(&stored).expect("decode");
        assert_eq!(
            back.decrypt(&ct, b"").expect("decrypt").0.as_slice(),
            b"kept"
        );
        assert_eq!(back.latest_version, 2);
        let text = format!("{k:?}");
        assert!(text.contains("[redacted]"), "{text}");
        let key_b64 = B64.encode(&*k.versions[&1].key.0);
        assert!(!text.contains(&key_b64));
        assert!(serde_json::from_slice::<Keyring>(br#"{"type":"aes256-gcm96","versions":{"1":{"key":"!!","created":0}},"latest_version":1,"min_decryption_version":1,"min_encryption_version":0,"deletion_allowed":false,"auto_rotate_period":0}"#).is_err());
    }
}
