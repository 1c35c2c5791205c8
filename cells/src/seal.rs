//! Seal and unseal: the thin I/O shell around [`machine::SealMachine`].
//!
//! Key hierarchy (docs/architecture.md, "Key hierarchy"):
//!
//! ```text
//! unseal shares ──combine──► unseal key ─┐            (Shamir seal)
//! HSM AES-256 wrapping key (never leaves)┴─► root key ─► keyring ─► data keys ─► values
//! recovery shares ──combine──► recovery key: authorises rekey/generate-root (HSM seal)
//! ```
//!
//! Storage holds only the wrapped root key (`core/root-key`), the keyring
//! encrypted under the root key (`core/keyring`), the recovery-key check
//! (`core/recovery-check`), and the non-secret seal configuration
//! (`core/seal-config`) and cluster identity (`core/cluster`).

pub mod machine;

use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sigil_hsm::{HsmError, KeyId, KeyKind, KeyLabel, KeyProvider, SecretBytes, SecretString};

use crate::aead;
use crate::barrier::{Barrier, BarrierError};
use crate::shamir::{self, ShamirError, Share, SplitParams};
use crate::storage::{Batch, Precondition, Storage, StorageError};
use crate::token::{self, TokenStore};

use machine::{Command, KeySet, Phase, RekeyTarget, SealMachine, Step};

pub use machine::KEY_LEN;

const SEAL_CONFIG_KEY: &[u8] = b"core/seal-config";
const ROOT_KEY_KEY: &[u8] = b"core/root-key";
const RECOVERY_CHECK_KEY: &[u8] = b"core/recovery-check";
const CLUSTER_KEY: &[u8] = b"core/cluster";
const ROOT_KEY_AAD: &[u8] = b"sigil/core/root-key/v1";
const RECOVERY_CHECK_AAD: &[u8] = b"sigil/core/recovery-check/v1";
/// Vault's CLI defaults for recovery keys when an HSM-sealed init names none.
const DEFAULT_RECOVERY: (u32, u32) = (5, 3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SealType {
    Shamir,
    Pkcs11,
}

impl SealType {
    pub fn as_str(&self) -> &'static str {
        match self {
            SealType::Shamir => "shamir",
            SealType::Pkcs11 => "pkcs11",
        }
    }
}

/// The stored, non-secret description of a node's seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealConfig {
    pub seal_type: SealType,
    pub secret_shares: u8,
    pub secret_threshold: u8,
    #[serde(default)]
    pub recovery_shares: u8,
    #[serde(default)]
    pub recovery_threshold: u8,
}

impl SealConfig {
    pub fn shamir(shares: u8, threshold: u8) -> Self {
        Self {
            seal_type: SealType::Shamir,
            secret_shares: shares,
            secret_threshold: threshold,
            recovery_shares: 0,
            recovery_threshold: 0,
        }
    }

    pub fn pkcs11(recovery_shares: u8, recovery_threshold: u8) -> Self {
        Self {
            seal_type: SealType::Pkcs11,
            secret_shares: 1,
            secret_threshold: 1,
            recovery_shares,
            recovery_threshold,
        }
    }

    /// Length of an unseal share: a raw key when unsplit, else key + x.
    pub fn unseal_share_len(&self) -> usize {
        share_len(self.secret_shares)
    }

    /// The keys that authorise rekey and generate-root.
    pub fn quorum_keys(&self) -> KeySet {
        match self.seal_type {
            SealType::Shamir => KeySet::Unseal,
            SealType::Pkcs11 => KeySet::Recovery,
        }
    }

    pub fn quorum_threshold(&self) -> u8 {
        match self.seal_type {
            SealType::Shamir => self.secret_threshold,
            SealType::Pkcs11 => self.recovery_threshold,
        }
    }

    pub fn quorum_shares(&self) -> u8 {
        match self.seal_type {
            SealType::Shamir => self.secret_shares,
            SealType::Pkcs11 => self.recovery_shares,
        }
    }

    pub fn quorum_share_len(&self) -> usize {
        share_len(self.quorum_shares())
    }
}

fn share_len(shares: u8) -> usize {
    if shares <= 1 { KEY_LEN } else { KEY_LEN + 1 }
}

/// Cluster identity, created at init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_name: String,
    pub cluster_id: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("Vault is already initialized")]
    AlreadyInitialized,
    #[error("Vault is not initialized")]
    NotInitialized,
    #[error("Vault is sealed")]
    Sealed,
    #[error("vault is unsealed")]
    AlreadyUnsealed,
    #[error(
        "this node unseals itself through its HSM; unseal keys are not accepted (restart the node to unseal it after a manual seal)"
    )]
    AutoUnsealOnly,
    #[error("this node has no HSM seal")]
    NotAutoUnseal,
    #[error("another seal operation is in progress; retry")]
    Busy,
    #[error("{0} already in progress")]
    InProgress(&'static str),
    #[error("no {0} in progress")]
    NotInProgress(&'static str),
    #[error("nonce does not match the operation in progress")]
    NonceMismatch,
    #[error("duplicate key share: this share was already provided")]
    DuplicateShare,
    #[error("key share has the wrong length: expected {expected} bytes, got {got}")]
    ShareLength { expected: usize, got: usize },
    #[error("key share must be hex or base64 encoded")]
    ShareEncoding,
    #[error("this node has no recovery keys: its seal is shamir")]
    NoRecoveryKeys,
    #[error("{0}")]
    InvalidParams(String),
    #[error("otp must be {len} characters")]
    InvalidOtp { len: usize },
    #[error("unseal failed, invalid key")]
    UnsealFailed,
    #[error("the provided keys are not a valid quorum: the operation was cancelled")]
    QuorumRejected,
    #[error("hsm: {0}")]
    Hsm(#[from] HsmError),
    #[error("hsm seal is not available: {0}")]
    HsmUnavailable(String),
    #[error(transparent)]
    Barrier(#[from] BarrierError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored seal data is corrupt: {0}")]
    Corrupt(String),
}

impl PartialEq for SealError {
    // Tests compare the stateless variants; the rest compare by message.
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl SealError {
    /// Errors caused by the request itself (shown to the client as-is).
    pub fn is_client_error(&self) -> bool {
        use SealError::*;
        matches!(
            self,
            AlreadyInitialized
                | NotInitialized
                | AlreadyUnsealed
                | AutoUnsealOnly
                | NotAutoUnseal
                | InProgress(_)
                | NotInProgress(_)
                | NonceMismatch
                | DuplicateShare
                | ShareLength { .. }
                | ShareEncoding
                | NoRecoveryKeys
                | InvalidParams(_)
                | InvalidOtp { .. }
                | UnsealFailed
                | QuorumRejected
        )
    }
}

impl From<ShamirError> for SealError {
    fn from(e: ShamirError) -> Self {
        SealError::InvalidParams(e.to_string())
    }
}

/// How a key share is written by clients: hex (Vault's `keys`) or base64
/// (`keys_base64`). Parsed at the edge into bytes. As in Vault, hex wins only
/// when it yields a share-sized value (32 or 33 bytes), since some base64
/// strings are also valid hex.
pub fn decode_share(text: &str) -> Result<Share, SealError> {
    use base64::engine::general_purpose::STANDARD;
    let text = text.trim();
    if text.is_empty() {
        return Err(SealError::ShareEncoding);
    }
    let from_hex = hex::decode(text).ok();
    let bytes = match from_hex {
        Some(b) if b.len() == KEY_LEN || b.len() == KEY_LEN + 1 => b,
        from_hex => match STANDARD.decode(text) {
            Ok(b) => b,
            // Wrong-length hex is still hex: report the length, not the encoding.
            Err(_) => from_hex.ok_or(SealError::ShareEncoding)?,
        },
    };
    Ok(Share::from_bytes(SecretBytes::new(bytes)))
}

/// How the root key is protected.
#[derive(Clone)]
pub enum SealBackend {
    Shamir,
    /// An HSM wrapping key named `key_label`, reached through `open`. Opening
    /// is retried on use so a node whose HSM was unreachable at start can
    /// unseal once it returns.
    Hsm {
        open: Arc<dyn Fn() -> Result<Arc<dyn KeyProvider>, HsmError> + Send + Sync>,
        key_label: KeyLabel,
    },
}

impl std::fmt::Debug for SealBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealBackend::Shamir => f.write_str("Shamir"),
            SealBackend::Hsm { key_label, .. } => {
                f.debug_struct("Hsm").field("key_label", key_label).finish()
            }
        }
    }
}

impl SealBackend {
    pub fn seal_type(&self) -> SealType {
        match self {
            SealBackend::Shamir => SealType::Shamir,
            SealBackend::Hsm { .. } => SealType::Pkcs11,
        }
    }
}

/// Parameters of `sys/init`.
#[derive(Debug, Default, Clone)]
pub struct InitParams {
    pub secret_shares: u32,
    pub secret_threshold: u32,
    pub recovery_shares: u32,
    pub recovery_threshold: u32,
    /// Dev mode only: use this root token instead of a random one.
    pub root_token: Option<SecretString>,
}

/// What `sys/init` hands out, once.
#[derive(Debug)]
pub struct InitOutput {
    pub keys: Vec<Share>,
    pub recovery_keys: Vec<Share>,
    pub root_token: SecretString,
}

/// `sys/seal-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealStatus {
    pub seal_type: SealType,
    pub initialized: bool,
    pub sealed: bool,
    pub threshold: u8,
    pub shares: u8,
    pub progress: u8,
    pub nonce: String,
    pub recovery_seal: bool,
    pub cluster: Option<ClusterInfo>,
}

/// `sys/rekey/init` and `sys/rekey/update` progress.
#[derive(Debug, Default)]
pub struct RekeyStatus {
    pub started: bool,
    pub nonce: String,
    pub threshold_out: u8,
    pub shares_out: u8,
    pub progress: u8,
    pub required: u8,
    pub complete: bool,
    /// The new shares, once complete.
    pub keys: Vec<Share>,
}

/// `sys/generate-root/*` progress.
#[derive(Debug, Default)]
pub struct GenerateRootStatus {
    pub started: bool,
    pub nonce: String,
    pub progress: u8,
    pub required: u8,
    pub complete: bool,
    pub encoded_token: String,
    /// Set only when the server generated the one-time password.
    pub otp: Option<SecretString>,
    pub otp_length: usize,
}

/// The seal shell: owns the machine, executes its commands.
pub struct SealManager {
    storage: Arc<dyn Storage>,
    barrier: Barrier,
    tokens: TokenStore,
    backend: SealBackend,
    machine: Mutex<SealMachine>,
    provider: Mutex<Option<Arc<dyn KeyProvider>>>,
    cluster_name: Option<String>,
}

impl std::fmt::Debug for SealManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealManager")
            .field("backend", &self.backend)
            .field("machine", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl SealManager {
    /// Loads the stored seal configuration; the node starts sealed.
    pub fn open(
        barrier: Barrier,
        backend: SealBackend,
        cluster_name: Option<String>,
    ) -> Result<Self, SealError> {
        let storage = barrier.storage().clone();
        let config = match storage.get(SEAL_CONFIG_KEY)? {
            None => None,
            Some(raw) => Some(
                serde_json::from_slice::<SealConfig>(&raw)
                    .map_err(|e| SealError::Corrupt(format!("seal config: {e}")))?,
            ),
        };
        if let Some(c) = &config
            && c.seal_type != backend.seal_type()
        {
            return Err(SealError::InvalidParams(format!(
                "storage was initialised with a {} seal but the configuration says {}; seal migration is not supported",
                c.seal_type.as_str(),
                backend.seal_type().as_str()
            )));
        }
        Ok(Self {
            tokens: TokenStore::new(barrier.clone()),
            storage,
            barrier,
            backend,
            machine: Mutex::new(SealMachine::new(
                config,
                Box::new(|| uuid::Uuid::new_v4().to_string()),
            )),
            provider: Mutex::new(None),
            cluster_name,
        })
    }

    pub fn barrier(&self) -> &Barrier {
        &self.barrier
    }

    pub fn tokens(&self) -> &TokenStore {
        &self.tokens
    }

    pub fn seal_type(&self) -> SealType {
        self.backend.seal_type()
    }

    pub fn is_initialized(&self) -> bool {
        self.lock().phase() != Phase::Uninitialized
    }

    pub fn is_sealed(&self) -> bool {
        self.lock().phase() != Phase::Unsealed
    }

    pub fn cluster(&self) -> Option<ClusterInfo> {
        let raw = self.storage.get(CLUSTER_KEY).ok().flatten()?;
        serde_json::from_slice(&raw).ok()
    }

    pub fn status(&self) -> SealStatus {
        let m = self.lock();
        let config = m.config();
        let (threshold, shares) =
            config.map_or((0, 0), |c| (c.quorum_threshold(), c.quorum_shares()));
        let attempt = m.unseal_attempt();
        let progress = attempt.map_or(0, |a| a.progress());
        let nonce = attempt.map(|a| a.nonce.clone()).unwrap_or_default();
        let (initialized, sealed) = (config.is_some(), m.phase() != Phase::Unsealed);
        drop(m);
        SealStatus {
            seal_type: self.seal_type(),
            initialized,
            sealed,
            threshold,
            shares,
            progress,
            nonce,
            recovery_seal: self.seal_type() == SealType::Pkcs11,
            cluster: self.cluster(),
        }
    }

    /// Initialises the seal. Shamir nodes are sealed afterwards (as Vault's);
    /// HSM nodes are unsealed.
    pub fn init(&self, params: InitParams) -> Result<InitOutput, SealError> {
        self.lock().begin_init()?;
        let outcome = self.init_inner(params);
        let mut m = self.lock();
        match outcome {
            Ok((config, out)) => {
                let auto = config.seal_type == SealType::Pkcs11;
                m.init_finished(Some(config));
                if auto {
                    m.begin_auto_unseal()?;
                    m.unseal_finished(true);
                } else {
                    self.barrier.seal();
                }
                tracing::info!(seal = self.seal_type().as_str(), "node initialised");
                Ok(out)
            }
            Err(e) => {
                self.barrier.seal();
                m.init_finished(None);
                Err(e)
            }
        }
    }

    fn init_inner(&self, p: InitParams) -> Result<(SealConfig, InitOutput), SealError> {
        let root_key = SecretBytes::random(KEY_LEN);
        let mut raw = Batch::new()
            .require(SEAL_CONFIG_KEY, Precondition::Absent)
            .require(ROOT_KEY_KEY, Precondition::Absent);
        let (config, keys, recovery_keys) = match &self.backend {
            SealBackend::Shamir => {
                if p.recovery_shares != 0 || p.recovery_threshold != 0 {
                    return Err(SealError::InvalidParams(
                        "recovery_shares and recovery_threshold apply only to an HSM seal".into(),
                    ));
                }
                let params = SplitParams::new(p.secret_shares, p.secret_threshold)?;
                let kek = SecretBytes::random(KEY_LEN);
                let keys = split_key(&kek, params)?;
                raw = raw.put(ROOT_KEY_KEY, seal_root_key(&kek, &root_key)?);
                (
                    SealConfig::shamir(params.shares(), params.threshold()),
                    keys,
                    Vec::new(),
                )
            }
            SealBackend::Hsm { .. } => {
                if p.secret_shares > 1 || p.secret_threshold > 1 {
                    return Err(SealError::InvalidParams(
                        "an HSM seal takes recovery_shares and recovery_threshold, not secret_shares".into(),
                    ));
                }
                let (rs, rt) = if p.recovery_shares == 0 && p.recovery_threshold == 0 {
                    DEFAULT_RECOVERY
                } else {
                    (p.recovery_shares, p.recovery_threshold)
                };
                let params = SplitParams::new(rs, rt)?;
                let (provider, key) = self.hsm_key(true)?;
                let wrapped = provider.wrap(&key, &root_key, ROOT_KEY_AAD)?;
                let recovery_key = SecretBytes::random(KEY_LEN);
                let recovery_keys = split_key(&recovery_key, params)?;
                raw = raw
                    .put(ROOT_KEY_KEY, wrapped)
                    .put(RECOVERY_CHECK_KEY, recovery_check(&recovery_key)?);
                (
                    SealConfig::pkcs11(params.shares(), params.threshold()),
                    Vec::new(),
                    recovery_keys,
                )
            }
        };
        let cluster = ClusterInfo {
            cluster_name: self.cluster_name.clone().unwrap_or_else(|| {
                format!("sigil-cluster-{}", &token::random_base62(8).to_lowercase())
            }),
            cluster_id: uuid::Uuid::new_v4().to_string(),
        };
        raw = raw
            .put(SEAL_CONFIG_KEY, to_json(&config)?)
            .put(CLUSTER_KEY, to_json(&cluster)?);
        let keyring = self.barrier.initialize(&root_key)?;
        let root_token = p.root_token.unwrap_or_else(token::generate_token);
        let batch = self
            .tokens
            .root_token_batch(
                self.barrier.batch(),
                &root_token,
                crate::clock::unix_now(),
                true,
            )?
            .merge_raw(keyring)
            .merge_raw(raw);
        crate::storage::wait(self.barrier.commit(batch)).map_err(|e| match e {
            BarrierError::Storage(StorageError::PreconditionFailed { .. }) => {
                SealError::AlreadyInitialized
            }
            other => other.into(),
        })?;
        Ok((
            config,
            InitOutput {
                keys,
                recovery_keys,
                root_token,
            },
        ))
    }

    /// Submits one unseal key share.
    pub fn unseal(&self, share: Share) -> Result<SealStatus, SealError> {
        let step = self.lock().submit_unseal(share)?;
        if let Step::Execute(Command::Unseal { shares }) = step {
            let outcome = self.open_with_shares(&shares);
            self.lock().unseal_finished(outcome.is_ok());
            outcome?;
            tracing::info!("node unsealed");
        }
        Ok(self.status())
    }

    pub fn unseal_reset(&self) -> SealStatus {
        self.lock().reset_unseal();
        self.status()
    }

    /// Unseals through the HSM. Errors leave the node sealed and nothing written.
    pub fn auto_unseal(&self) -> Result<(), SealError> {
        self.lock().begin_auto_unseal()?;
        let outcome = self.open_with_hsm();
        self.lock().unseal_finished(outcome.is_ok());
        if outcome.is_ok() {
            tracing::info!("node unsealed through its hsm");
        }
        outcome
    }

    fn open_with_shares(&self, shares: &[Share]) -> Result<(), SealError> {
        let kek = combine_key(shares)?;
        let blob = self.stored(ROOT_KEY_KEY)?;
        let root = aead::open(&kek, ROOT_KEY_AAD, &blob).map_err(|_| SealError::UnsealFailed)?;
        self.barrier.unseal(SecretBytes::copy_from(&root))?;
        Ok(())
    }

    fn open_with_hsm(&self) -> Result<(), SealError> {
        let (provider, key) = self.hsm_key(false)?;
        let blob = self.stored(ROOT_KEY_KEY)?;
        let root = provider.unwrap(&key, &blob, ROOT_KEY_AAD)?;
        self.barrier.unseal(root)?;
        Ok(())
    }

    /// Drops every key from memory.
    pub fn seal(&self) -> Result<(), SealError> {
        let mut m = self.lock();
        m.begin_seal()?;
        self.barrier.seal();
        self.tokens.forget_salt();
        m.sealed();
        tracing::info!("node sealed");
        Ok(())
    }

    /// Picks up seal material another node of the cell changed through
    /// replication: the seal configuration (the cell was initialised or
    /// rekeyed elsewhere) and, while unsealed, the keyring (rotated
    /// elsewhere). A keyring this node's root key no longer opens means the
    /// root key was rekeyed on another node: this node seals itself, and
    /// operators unseal it with the new keys (docs/runbooks/cell-operations.md).
    pub fn reload(&self) -> Result<(), SealError> {
        let config = match self.storage.get(SEAL_CONFIG_KEY)? {
            None => None,
            Some(raw) => Some(
                serde_json::from_slice::<SealConfig>(&raw)
                    .map_err(|e| SealError::Corrupt(format!("seal config: {e}")))?,
            ),
        };
        let mut m = self.lock();
        if m.is_busy() {
            // This node's own init, unseal or rekey is writing the seal
            // material and installs the new keys itself when it finishes.
            return Ok(());
        }
        let was_uninitialised = m.phase() == Phase::Uninitialized;
        m.replicated_config(config);
        if was_uninitialised && m.phase() != Phase::Uninitialized {
            tracing::info!(
                "the cell was initialised on another node; this node is sealed until unsealed"
            );
        }
        if m.phase() != Phase::Unsealed {
            return Ok(());
        }
        match self.barrier.reload_keyring() {
            Ok(()) => Ok(()),
            Err(BarrierError::WrongKey) => {
                tracing::warn!(
                    "the root key was rekeyed on another node; sealing this node until it is unsealed with the new keys"
                );
                self.barrier.seal();
                self.tokens.forget_salt();
                m.sealed();
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn rekey_init(
        &self,
        target: RekeyTarget,
        shares: u32,
        threshold: u32,
    ) -> Result<RekeyStatus, SealError> {
        let (n, k) = match (target, self.seal_type()) {
            // An HSM seal's root key is re-wrapped, not split.
            (RekeyTarget::Root, SealType::Pkcs11) => (0, 0),
            _ => {
                let p = SplitParams::new(shares, threshold)?;
                (p.shares(), p.threshold())
            }
        };
        let mut m = self.lock();
        let attempt = m.rekey_init(target, n, k)?;
        Ok(RekeyStatus {
            started: true,
            nonce: attempt.attempt.nonce.clone(),
            threshold_out: k,
            shares_out: n,
            progress: 0,
            required: attempt.attempt.required,
            ..RekeyStatus::default()
        })
    }

    pub fn rekey_status(&self, target: RekeyTarget) -> RekeyStatus {
        let m = self.lock();
        match m.rekey_attempt().filter(|r| r.target == target) {
            None => RekeyStatus {
                required: m.config().map_or(0, |c| c.quorum_threshold()),
                ..RekeyStatus::default()
            },
            Some(r) => RekeyStatus {
                started: true,
                nonce: r.attempt.nonce.clone(),
                threshold_out: r.threshold_out,
                shares_out: r.shares_out,
                progress: r.attempt.progress(),
                required: r.attempt.required,
                ..RekeyStatus::default()
            },
        }
    }

    pub fn rekey_cancel(&self, target: RekeyTarget) -> Result<(), SealError> {
        self.lock().rekey_cancel(target)
    }

    pub fn rekey_update(
        &self,
        target: RekeyTarget,
        nonce: &str,
        share: Share,
    ) -> Result<RekeyStatus, SealError> {
        let step = self.lock().rekey_update(target, nonce, share)?;
        match step {
            Step::Pending { progress, required } => {
                let mut st = self.rekey_status(target);
                st.progress = progress;
                st.required = required;
                Ok(st)
            }
            Step::Execute(Command::Rekey {
                keys,
                shares,
                target,
                shares_out,
                threshold_out,
            }) => {
                let outcome = self.execute_rekey(keys, &shares, target, shares_out, threshold_out);
                let mut m = self.lock();
                match outcome {
                    Ok((config, new_keys)) => {
                        m.rekey_finished(Some(config));
                        tracing::info!(rekey_target = ?target, "rekey complete");
                        Ok(RekeyStatus {
                            complete: true,
                            nonce: nonce.to_owned(),
                            shares_out,
                            threshold_out,
                            keys: new_keys,
                            ..RekeyStatus::default()
                        })
                    }
                    Err(e) => {
                        m.rekey_finished(None);
                        Err(e)
                    }
                }
            }
            Step::Execute(_) => Err(SealError::Corrupt("unexpected seal command".into())),
        }
    }

    fn execute_rekey(
        &self,
        keys: KeySet,
        shares: &[Share],
        target: RekeyTarget,
        shares_out: u8,
        threshold_out: u8,
    ) -> Result<(SealConfig, Vec<Share>), SealError> {
        self.verify_quorum(keys, shares)?;
        let mut config = self
            .lock()
            .config()
            .cloned()
            .ok_or(SealError::NotInitialized)?;
        match (target, &self.backend) {
            (RekeyTarget::Root, backend) => {
                // A new root key: a captured old one no longer opens the keyring.
                let new_root = SecretBytes::random(KEY_LEN);
                let (blob, new_keys) = match backend {
                    SealBackend::Shamir => {
                        let params = SplitParams::new(shares_out.into(), threshold_out.into())?;
                        let kek = SecretBytes::random(KEY_LEN);
                        let new_keys = split_key(&kek, params)?;
                        config.secret_shares = shares_out;
                        config.secret_threshold = threshold_out;
                        (seal_root_key(&kek, &new_root)?, new_keys)
                    }
                    SealBackend::Hsm { .. } => {
                        let (provider, key) = self.hsm_key(false)?;
                        (provider.wrap(&key, &new_root, ROOT_KEY_AAD)?, Vec::new())
                    }
                };
                let batch = self
                    .barrier
                    .rekey_batch(&new_root)?
                    .put(ROOT_KEY_KEY, blob)
                    .put(SEAL_CONFIG_KEY, to_json(&config)?);
                crate::storage::wait(self.storage.apply(batch))?;
                self.barrier.replace_root_key(new_root)?;
                Ok((config, new_keys))
            }
            (RekeyTarget::Recovery, _) => {
                let params = SplitParams::new(shares_out.into(), threshold_out.into())?;
                let recovery_key = SecretBytes::random(KEY_LEN);
                let new_keys = split_key(&recovery_key, params)?;
                config.recovery_shares = shares_out;
                config.recovery_threshold = threshold_out;
                crate::storage::wait(
                    self.storage.apply(
                        Batch::new()
                            .put(RECOVERY_CHECK_KEY, recovery_check(&recovery_key)?)
                            .put(SEAL_CONFIG_KEY, to_json(&config)?),
                    ),
                )?;
                Ok((config, new_keys))
            }
        }
    }

    /// Starts root-token generation. `otp` must be 28 characters; when absent
    /// the server makes one and returns it once.
    pub fn generate_root_init(&self, otp: Option<String>) -> Result<GenerateRootStatus, SealError> {
        let (otp, generated) = match otp.filter(|o| !o.is_empty()) {
            Some(o) if o.len() == token::TOKEN_LEN && o.is_ascii() => (SecretString::new(o), false),
            Some(_) => {
                return Err(SealError::InvalidOtp {
                    len: token::TOKEN_LEN,
                });
            }
            None => (
                SecretString::new(token::random_base62(token::TOKEN_LEN)),
                true,
            ),
        };
        let mut m = self.lock();
        let attempt = m.generate_root_init(otp.clone())?;
        Ok(GenerateRootStatus {
            started: true,
            nonce: attempt.attempt.nonce.clone(),
            required: attempt.attempt.required,
            otp: generated.then_some(otp),
            otp_length: token::TOKEN_LEN,
            ..GenerateRootStatus::default()
        })
    }

    pub fn generate_root_status(&self) -> GenerateRootStatus {
        let m = self.lock();
        match m.generate_root_attempt() {
            None => GenerateRootStatus {
                required: m.config().map_or(0, |c| c.quorum_threshold()),
                otp_length: token::TOKEN_LEN,
                ..GenerateRootStatus::default()
            },
            Some(a) => GenerateRootStatus {
                started: true,
                nonce: a.attempt.nonce.clone(),
                progress: a.attempt.progress(),
                required: a.attempt.required,
                otp_length: token::TOKEN_LEN,
                ..GenerateRootStatus::default()
            },
        }
    }

    pub fn generate_root_cancel(&self) -> Result<(), SealError> {
        self.lock().generate_root_cancel()
    }

    pub fn generate_root_update(
        &self,
        nonce: &str,
        share: Share,
    ) -> Result<GenerateRootStatus, SealError> {
        let step = self.lock().generate_root_update(nonce, share)?;
        match step {
            Step::Pending { progress, required } => Ok(GenerateRootStatus {
                started: true,
                nonce: nonce.to_owned(),
                progress,
                required,
                otp_length: token::TOKEN_LEN,
                ..GenerateRootStatus::default()
            }),
            Step::Execute(Command::GenerateRoot { keys, shares, otp }) => {
                let outcome = self.verify_quorum(keys, &shares).and_then(|()| {
                    Ok(crate::storage::wait(
                        self.tokens.create_root(crate::clock::unix_now()),
                    )?)
                });
                self.lock().generate_root_finished();
                let token = outcome?;
                tracing::info!("root token generated");
                Ok(GenerateRootStatus {
                    started: true,
                    nonce: nonce.to_owned(),
                    progress: shares.len() as u8,
                    required: shares.len() as u8,
                    complete: true,
                    encoded_token: encode_with_otp(&token, &otp),
                    otp_length: token::TOKEN_LEN,
                    ..GenerateRootStatus::default()
                })
            }
            Step::Execute(_) => Err(SealError::Corrupt("unexpected seal command".into())),
        }
    }

    /// Checks that `shares` recover the unseal key (or recovery key).
    fn verify_quorum(&self, keys: KeySet, shares: &[Share]) -> Result<(), SealError> {
        let key = combine_key(shares)?;
        let (blob_key, aad) = match keys {
            KeySet::Unseal => (ROOT_KEY_KEY, ROOT_KEY_AAD),
            KeySet::Recovery => (RECOVERY_CHECK_KEY, RECOVERY_CHECK_AAD),
        };
        let blob = self.stored(blob_key)?;
        aead::open(&key, aad, &blob).map_err(|_| SealError::QuorumRejected)?;
        Ok(())
    }

    /// Opens the HSM provider, so a misconfigured seal is reported at start
    /// rather than at the first init.
    pub fn probe_hsm(&self) -> Result<(), SealError> {
        match &self.backend {
            SealBackend::Shamir => Ok(()),
            SealBackend::Hsm { .. } => self.provider().map(drop),
        }
    }

    /// The HSM provider, opened on first use and kept.
    fn provider(&self) -> Result<Arc<dyn KeyProvider>, SealError> {
        let SealBackend::Hsm { open, .. } = &self.backend else {
            return Err(SealError::NotAutoUnseal);
        };
        let mut cached = self.provider.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = &*cached {
            return Ok(p.clone());
        }
        let p = open()?;
        *cached = Some(p.clone());
        Ok(p)
    }

    fn hsm_key(&self, create: bool) -> Result<(Arc<dyn KeyProvider>, KeyId), SealError> {
        let SealBackend::Hsm { key_label, .. } = &self.backend else {
            return Err(SealError::NotAutoUnseal);
        };
        let provider = self.provider()?;
        let key = match provider.find_key(key_label, KeyKind::Aes256)? {
            Some(k) => k,
            None if create => {
                tracing::info!(label = %key_label, "generating hsm wrapping key");
                provider.generate_key(key_label, KeyKind::Aes256)?
            }
            None => {
                return Err(SealError::HsmUnavailable(format!(
                    "wrapping key {key_label:?} not found on the token"
                )));
            }
        };
        Ok((provider, key))
    }

    fn stored(&self, key: &[u8]) -> Result<Vec<u8>, SealError> {
        self.storage
            .get(key)?
            .ok_or_else(|| SealError::Corrupt(format!("{} missing", String::from_utf8_lossy(key))))
    }

    fn lock(&self) -> MutexGuard<'_, SealMachine> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn split_key(key: &SecretBytes, params: SplitParams) -> Result<Vec<Share>, SealError> {
    if params.shares() == 1 {
        // A single holder gets the key itself, as Vault does.
        return Ok(vec![Share::from_bytes(key.clone())]);
    }
    Ok(shamir::split(key, params)?)
}

fn combine_key(shares: &[Share]) -> Result<SecretBytes, SealError> {
    match shares {
        [only] if only.expose().len() == KEY_LEN => Ok(SecretBytes::copy_from(only.expose())),
        _ => shamir::combine(shares).map_err(|_| SealError::UnsealFailed),
    }
}

fn seal_root_key(kek: &SecretBytes, root: &SecretBytes) -> Result<Vec<u8>, SealError> {
    aead::seal(kek, ROOT_KEY_AAD, root.expose()).map_err(|e| SealError::Corrupt(e.to_string()))
}

fn recovery_check(recovery_key: &SecretBytes) -> Result<Vec<u8>, SealError> {
    aead::seal(
        recovery_key,
        RECOVERY_CHECK_AAD,
        SecretBytes::random(KEY_LEN).expose(),
    )
    .map_err(|e| SealError::Corrupt(e.to_string()))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, SealError> {
    serde_json::to_vec(v).map_err(|e| SealError::Corrupt(e.to_string()))
}

/// `base64(token XOR otp)`, as Vault's generate-root returns it.
pub fn encode_with_otp(token: &SecretString, otp: &SecretString) -> String {
    let xored: Vec<u8> = token
        .expose()
        .bytes()
        .zip(otp.expose().bytes())
        .map(|(a, b)| a ^ b)
        .collect();
    base64::engine::general_purpose::STANDARD.encode(xored)
}

/// Inverse of [`encode_with_otp`] (used by the CLI's `-decode`).
pub fn decode_with_otp(encoded: &str, otp: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded.trim()))
        .ok()?;
    if bytes.len() != otp.len() {
        return None;
    }
    String::from_utf8(bytes.iter().zip(otp.bytes()).map(|(a, b)| a ^ b).collect()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any client string either decodes or is a clean `ShareEncoding`
        /// error; never a panic.
        #[test]
        fn decode_share_never_panics(text in ".{0,200}") {
            match decode_share(&text) {
                Ok(share) => prop_assert!(!share.expose().is_empty()),
                Err(e) => prop_assert!(matches!(e, SealError::ShareEncoding)),
            }
        }

        /// Hex and base64 forms of the same share decode to the same bytes.
        #[test]
        fn hex_and_base64_agree(bytes in proptest::collection::vec(any::<u8>(), KEY_LEN..=KEY_LEN + 1)) {
            let hex_form = decode_share(&hex::encode(&bytes)).expect("hex");
            let b64_form = decode_share(&base64::engine::general_purpose::STANDARD.encode(&bytes)).expect("base64");
            prop_assert_eq!(hex_form.expose(), bytes.as_slice());
            prop_assert_eq!(b64_form.expose(), bytes.as_slice());
        }
    }

    #[test]
    fn base64_that_is_also_hex_decodes_as_base64() {
        // 33 bytes whose base64 form uses only hex digits.
        let b64 = "1234".repeat(11);
        assert_eq!(decode_share(&b64).expect("decodes").expose().len(), 33);
        let short_hex = decode_share("abcd").expect("short hex is still decoded");
        assert_eq!(
            short_hex.expose().len(),
            3,
            "\"abcd\" is valid base64 (3 bytes)"
        );
        assert!(
            matches!(decode_share("abc"), Err(SealError::ShareEncoding)),
            "neither hex nor padded base64"
        );
        let hex33 = "ab".repeat(33);
        assert_eq!(decode_share(&hex33).expect("hex").expose(), &[0xab; 33][..]);
    }

    #[test]
    fn otp_encoding_round_trips() {
        let token = SecretString::from("hvs.abcdefghijklmnopqrstuvwx");
        let otp = SecretString::from("0123456789ABCDEFGHIJKLMNOPQR");
        let encoded = encode_with_otp(&token, &otp);
        assert_eq!(
            decode_with_otp(&encoded, otp.expose()).as_deref(),
            Some(token.expose())
        );
        assert_eq!(decode_with_otp(&encoded, "short"), None);
        assert_eq!(decode_with_otp("!!!", otp.expose()), None);
    }
}
