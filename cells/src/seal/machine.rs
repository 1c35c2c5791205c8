//! The seal state machine: no I/O, no crypto, no clock.
//!
//! It tracks the node's phase (uninitialised, sealed, unsealed) and collects
//! key shares for the three quorum operations — unseal, rekey and
//! generate-root — validating each share's shape and rejecting duplicates.
//! When a quorum is complete it hands back a [`Command`] for the shell
//! (`seal::SealManager`) to execute; the shell reports the outcome with the
//! matching `*_finished` call. Tests drive it event by event and assert the
//! exact commands (the shape of openraft's `Engine` and raft-rs's `RawNode`).

use super::{SealConfig, SealError, SealType};
use crate::shamir::Share;
use sigil_hsm::SecretString;

/// Length of a key-encryption key, and so of a single (unsplit) key share.
pub const KEY_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Uninitialized,
    Sealed,
    Unsealed,
}

/// Which keys a quorum is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySet {
    /// Unseal keys (Shamir seal).
    Unseal,
    /// Recovery keys (HSM seal).
    Recovery,
}

/// What a rekey replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyTarget {
    /// The root key and its protection: new unseal shares (Shamir) or a new
    /// HSM-wrapped root key (PKCS#11).
    Root,
    /// The recovery keys of an HSM seal.
    Recovery,
}

/// Work for the shell once a quorum is complete.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Combine `shares` into the unseal key, open the root key and keyring.
    Unseal { shares: Vec<Share> },
    /// Verify `shares` as a quorum of `keys`, then replace `target`, split into
    /// `shares_out` shares with threshold `threshold_out`.
    Rekey {
        keys: KeySet,
        shares: Vec<Share>,
        target: RekeyTarget,
        shares_out: u8,
        threshold_out: u8,
    },
    /// Verify `shares` as a quorum of `keys`, then mint a root token encoded
    /// with `otp`.
    GenerateRoot {
        keys: KeySet,
        shares: Vec<Share>,
        otp: SecretString,
    },
}

/// The outcome of submitting one share.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// More shares are needed; `progress` of `required` so far.
    Pending { progress: u8, required: u8 },
    /// The quorum is complete: execute this command.
    Execute(Command),
}

/// Shares collected for one operation.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub nonce: String,
    pub required: u8,
    shares: Vec<Share>,
}

impl Attempt {
    fn new(nonce: String, required: u8) -> Self {
        Self {
            nonce,
            required,
            shares: Vec::new(),
        }
    }

    pub fn progress(&self) -> u8 {
        // At most `required` (≤ 255) shares are ever held.
        self.shares.len() as u8
    }

    /// Adds `share`, or rejects it leaving the attempt unchanged.
    fn add(&mut self, share: Share, share_len: usize) -> Result<Option<Vec<Share>>, SealError> {
        if share.expose().len() != share_len {
            return Err(SealError::ShareLength {
                expected: share_len,
                got: share.expose().len(),
            });
        }
        let same_x = share_len > KEY_LEN && self.shares.iter().any(|s| s.x() == share.x());
        if same_x || self.shares.contains(&share) {
            return Err(SealError::DuplicateShare);
        }
        self.shares.push(share);
        if self.shares.len() >= usize::from(self.required) {
            Ok(Some(std::mem::take(&mut self.shares)))
        } else {
            Ok(None)
        }
    }
}

#[derive(Debug, Clone)]
pub struct RekeyAttempt {
    pub attempt: Attempt,
    pub target: RekeyTarget,
    pub shares_out: u8,
    pub threshold_out: u8,
}

#[derive(Debug, Clone)]
pub struct GenerateRootAttempt {
    pub attempt: Attempt,
    pub otp: SecretString,
}

/// See the module docs.
pub struct SealMachine {
    phase: Phase,
    config: Option<SealConfig>,
    unseal: Option<Attempt>,
    rekey: Option<RekeyAttempt>,
    generate_root: Option<GenerateRootAttempt>,
    /// In flight between a `Step::Execute` and its `*_finished` report.
    busy: bool,
    nonces: Box<dyn FnMut() -> String + Send>,
}

impl std::fmt::Debug for SealMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealMachine")
            .field("phase", &self.phase)
            .field("config", &self.config)
            .field(
                "unseal_progress",
                &self.unseal.as_ref().map(Attempt::progress),
            )
            .finish_non_exhaustive()
    }
}

impl SealMachine {
    /// A machine for a node whose stored seal configuration is `config`
    /// (`None` when uninitialised). `nonces` makes attempt nonces.
    pub fn new(config: Option<SealConfig>, nonces: Box<dyn FnMut() -> String + Send>) -> Self {
        let phase = if config.is_some() {
            Phase::Sealed
        } else {
            Phase::Uninitialized
        };
        Self {
            phase,
            config,
            unseal: None,
            rekey: None,
            generate_root: None,
            busy: false,
            nonces,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether a quorum operation (init, unseal, rekey, generate-root) is
    /// executing on this node.
    pub fn is_busy(&self) -> bool {
        self.busy
    }

    pub fn config(&self) -> Option<&SealConfig> {
        self.config.as_ref()
    }

    pub fn unseal_attempt(&self) -> Option<&Attempt> {
        self.unseal.as_ref()
    }

    pub fn rekey_attempt(&self) -> Option<&RekeyAttempt> {
        self.rekey.as_ref()
    }

    pub fn generate_root_attempt(&self) -> Option<&GenerateRootAttempt> {
        self.generate_root.as_ref()
    }

    /// Init may start: the node is uninitialised and nothing is in flight.
    pub fn begin_init(&mut self) -> Result<(), SealError> {
        if self.phase != Phase::Uninitialized {
            return Err(SealError::AlreadyInitialized);
        }
        self.claim()
    }

    /// Init was committed (`Some`) or failed (`None`). The node is sealed
    /// either way until unsealed; an HSM seal's shell unseals it at once.
    pub fn init_finished(&mut self, config: Option<SealConfig>) {
        self.busy = false;
        if let Some(config) = config {
            self.config = Some(config);
            self.phase = Phase::Sealed;
        }
    }

    /// The seal configuration replicated from the cell changed (another node
    /// initialised the cell, or rekeyed it). An uninitialised node becomes
    /// sealed-and-initialised; an attempt collecting shares of the old
    /// configuration is dropped, since those shares no longer combine.
    pub fn replicated_config(&mut self, config: Option<SealConfig>) {
        let Some(config) = config else { return };
        if self.config.as_ref() == Some(&config) {
            return;
        }
        self.config = Some(config);
        self.unseal = None;
        if self.phase == Phase::Uninitialized {
            self.phase = Phase::Sealed;
        }
    }

    /// One unseal key share.
    pub fn submit_unseal(&mut self, share: Share) -> Result<Step, SealError> {
        let config = self.sealed_config()?;
        if config.seal_type != SealType::Shamir {
            return Err(SealError::AutoUnsealOnly);
        }
        if self.busy {
            return Err(SealError::Busy);
        }
        let required = config.secret_threshold;
        let share_len = config.unseal_share_len();
        let attempt = match &mut self.unseal {
            Some(a) => a,
            None => self.unseal.insert(Attempt::new((self.nonces)(), required)),
        };
        match attempt.add(share, share_len)? {
            None => Ok(Step::Pending {
                progress: attempt.progress(),
                required,
            }),
            Some(shares) => {
                self.busy = true;
                Ok(Step::Execute(Command::Unseal { shares }))
            }
        }
    }

    /// Starts an automatic (HSM) unseal: no shares are needed.
    pub fn begin_auto_unseal(&mut self) -> Result<(), SealError> {
        let config = self.sealed_config()?;
        if config.seal_type == SealType::Shamir {
            return Err(SealError::NotAutoUnseal);
        }
        self.claim()
    }

    /// Reports the outcome of `Command::Unseal` or an auto-unseal. On failure
    /// the progress resets, as Vault does, and the node stays sealed.
    pub fn unseal_finished(&mut self, ok: bool) {
        self.busy = false;
        self.unseal = None;
        if ok && self.phase == Phase::Sealed {
            self.phase = Phase::Unsealed;
        }
    }

    /// Discards collected unseal shares.
    pub fn reset_unseal(&mut self) {
        self.unseal = None;
    }

    /// A seal may proceed: refused while a quorum operation is executing, so
    /// a rekey cannot commit new keys and then lose them to a concurrent
    /// seal (the caller retries; the operation takes milliseconds).
    pub fn begin_seal(&mut self) -> Result<(), SealError> {
        if self.phase == Phase::Uninitialized {
            return Err(SealError::NotInitialized);
        }
        if self.busy {
            return Err(SealError::Busy);
        }
        Ok(())
    }

    /// The node was sealed: every attempt in progress is abandoned.
    pub fn sealed(&mut self) {
        if self.phase == Phase::Unsealed {
            self.phase = Phase::Sealed;
        }
        self.unseal = None;
        self.rekey = None;
        self.generate_root = None;
    }

    /// Starts a rekey of `target` into `shares_out`/`threshold_out` shares.
    pub fn rekey_init(
        &mut self,
        target: RekeyTarget,
        shares_out: u8,
        threshold_out: u8,
    ) -> Result<&RekeyAttempt, SealError> {
        let config = self.unsealed_config()?;
        if target == RekeyTarget::Recovery && config.seal_type == SealType::Shamir {
            return Err(SealError::NoRecoveryKeys);
        }
        if self.rekey.is_some() {
            return Err(SealError::InProgress("rekey"));
        }
        let required = config.quorum_threshold();
        let nonce = (self.nonces)();
        Ok(self.rekey.insert(RekeyAttempt {
            attempt: Attempt::new(nonce, required),
            target,
            shares_out,
            threshold_out,
        }))
    }

    pub fn rekey_update(
        &mut self,
        target: RekeyTarget,
        nonce: &str,
        share: Share,
    ) -> Result<Step, SealError> {
        let config = self.unsealed_config()?.clone();
        if self.busy {
            return Err(SealError::Busy);
        }
        let rekey = self
            .rekey
            .as_mut()
            .filter(|r| r.target == target)
            .ok_or(SealError::NotInProgress("rekey"))?;
        if rekey.attempt.nonce != nonce {
            return Err(SealError::NonceMismatch);
        }
        let required = rekey.attempt.required;
        match rekey.attempt.add(share, config.quorum_share_len())? {
            None => Ok(Step::Pending {
                progress: rekey.attempt.progress(),
                required,
            }),
            Some(shares) => {
                self.busy = true;
                Ok(Step::Execute(Command::Rekey {
                    keys: config.quorum_keys(),
                    shares,
                    target: rekey.target,
                    shares_out: rekey.shares_out,
                    threshold_out: rekey.threshold_out,
                }))
            }
        }
    }

    /// Reports a rekey's outcome. Success records the new parameters; either
    /// way the attempt ends, so a failed quorum must start again.
    pub fn rekey_finished(&mut self, new_config: Option<SealConfig>) {
        self.busy = false;
        self.rekey = None;
        if let Some(c) = new_config {
            self.config = Some(c);
        }
    }

    pub fn rekey_cancel(&mut self, target: RekeyTarget) -> Result<(), SealError> {
        if self.busy {
            return Err(SealError::Busy);
        }
        if self.rekey.as_ref().is_some_and(|r| r.target == target) {
            self.rekey = None;
        }
        Ok(())
    }

    /// Starts generating a root token that will be XORed with `otp`.
    pub fn generate_root_init(
        &mut self,
        otp: SecretString,
    ) -> Result<&GenerateRootAttempt, SealError> {
        let config = self.initialized_config()?;
        if self.generate_root.is_some() {
            return Err(SealError::InProgress("root generation"));
        }
        let required = config.quorum_threshold();
        let nonce = (self.nonces)();
        Ok(self.generate_root.insert(GenerateRootAttempt {
            attempt: Attempt::new(nonce, required),
            otp,
        }))
    }

    pub fn generate_root_update(&mut self, nonce: &str, share: Share) -> Result<Step, SealError> {
        if self.phase != Phase::Unsealed {
            return Err(SealError::Sealed);
        }
        let config = self.initialized_config()?.clone();
        if self.busy {
            return Err(SealError::Busy);
        }
        let gen_root = self
            .generate_root
            .as_mut()
            .ok_or(SealError::NotInProgress("root generation"))?;
        if gen_root.attempt.nonce != nonce {
            return Err(SealError::NonceMismatch);
        }
        let required = gen_root.attempt.required;
        match gen_root.attempt.add(share, config.quorum_share_len())? {
            None => Ok(Step::Pending {
                progress: gen_root.attempt.progress(),
                required,
            }),
            Some(shares) => {
                self.busy = true;
                Ok(Step::Execute(Command::GenerateRoot {
                    keys: config.quorum_keys(),
                    shares,
                    otp: gen_root.otp.clone(),
                }))
            }
        }
    }

    /// Reports a root generation's outcome; the attempt ends either way.
    pub fn generate_root_finished(&mut self) {
        self.busy = false;
        self.generate_root = None;
    }

    pub fn generate_root_cancel(&mut self) -> Result<(), SealError> {
        if self.busy {
            return Err(SealError::Busy);
        }
        self.generate_root = None;
        Ok(())
    }

    fn claim(&mut self) -> Result<(), SealError> {
        if self.busy {
            return Err(SealError::Busy);
        }
        self.busy = true;
        Ok(())
    }

    fn initialized_config(&self) -> Result<&SealConfig, SealError> {
        self.config.as_ref().ok_or(SealError::NotInitialized)
    }

    fn sealed_config(&self) -> Result<&SealConfig, SealError> {
        let config = self.initialized_config()?;
        if self.phase == Phase::Unsealed {
            return Err(SealError::AlreadyUnsealed);
        }
        Ok(config)
    }

    fn unsealed_config(&self) -> Result<&SealConfig, SealError> {
        let config = self.initialized_config()?;
        if self.phase != Phase::Unsealed {
            return Err(SealError::Sealed);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_hsm::SecretBytes;

    fn counter() -> Box<dyn FnMut() -> String + Send> {
        let mut n = 0;
        Box::new(move || {
            n += 1;
            format!("nonce-{n}")
        })
    }

    fn shamir(n: u8, k: u8) -> SealConfig {
        SealConfig::shamir(n, k)
    }

    fn share(x: u8, fill: u8) -> Share {
        let mut v = vec![fill; 32];
        v.push(x);
        Share::from_bytes(SecretBytes::new(v))
    }

    /// A machine for a single-share Shamir seal, already unsealed.
    fn unsealed() -> SealMachine {
        let mut m = SealMachine::new(Some(shamir(1, 1)), counter());
        m.submit_unseal(Share::from_bytes(SecretBytes::new(vec![1; 32])))
            .expect("unseal");
        m.unseal_finished(true);
        m
    }

    #[test]
    fn uninitialised_refuses_unseal_and_allows_one_init() {
        let mut m = SealMachine::new(None, counter());
        assert_eq!(m.phase(), Phase::Uninitialized);
        assert_eq!(m.submit_unseal(share(1, 1)), Err(SealError::NotInitialized));
        m.begin_init().expect("first init");
        assert_eq!(m.begin_init(), Err(SealError::Busy));
        m.init_finished(Some(shamir(5, 3)));
        assert_eq!(m.phase(), Phase::Sealed);
        assert_eq!(m.begin_init(), Err(SealError::AlreadyInitialized));
    }

    #[test]
    fn failed_init_leaves_node_uninitialised() {
        let mut m = SealMachine::new(None, counter());
        m.begin_init().expect("init");
        m.init_finished(None);
        assert_eq!(m.phase(), Phase::Uninitialized);
        m.begin_init().expect("may retry");
    }

    #[test]
    fn unseal_collects_threshold_shares_then_emits_one_command() {
        let mut m = SealMachine::new(Some(shamir(5, 3)), counter());
        assert_eq!(
            m.submit_unseal(share(1, 0xa)),
            Ok(Step::Pending {
                progress: 1,
                required: 3
            })
        );
        assert_eq!(
            m.unseal_attempt().map(|a| a.nonce.as_str()),
            Some("nonce-1")
        );
        assert_eq!(
            m.submit_unseal(share(2, 0xb)),
            Ok(Step::Pending {
                progress: 2,
                required: 3
            })
        );
        assert_eq!(
            m.submit_unseal(share(3, 0xc)),
            Ok(Step::Execute(Command::Unseal {
                shares: vec![share(1, 0xa), share(2, 0xb), share(3, 0xc)]
            }))
        );
        assert_eq!(m.submit_unseal(share(4, 0xd)), Err(SealError::Busy));
        m.unseal_finished(true);
        assert_eq!(m.phase(), Phase::Unsealed);
        assert!(m.unseal_attempt().is_none());
        assert_eq!(
            m.submit_unseal(share(4, 0xd)),
            Err(SealError::AlreadyUnsealed)
        );
    }

    #[test]
    fn bad_shares_leave_progress_unchanged() {
        let mut m = SealMachine::new(Some(shamir(5, 3)), counter());
        m.submit_unseal(share(1, 0xa)).expect("first");
        assert_eq!(
            m.submit_unseal(share(1, 0xa)),
            Err(SealError::DuplicateShare)
        );
        assert_eq!(
            m.submit_unseal(share(1, 0xf)),
            Err(SealError::DuplicateShare),
            "same x"
        );
        let short = Share::from_bytes(SecretBytes::new(vec![1; 10]));
        assert_eq!(
            m.submit_unseal(short),
            Err(SealError::ShareLength {
                expected: 33,
                got: 10
            })
        );
        assert_eq!(m.unseal_attempt().map(Attempt::progress), Some(1));
    }

    #[test]
    fn failed_unseal_resets_progress_and_stays_sealed() {
        let mut m = SealMachine::new(Some(shamir(2, 2)), counter());
        m.submit_unseal(share(1, 1)).expect("one");
        assert!(matches!(m.submit_unseal(share(2, 2)), Ok(Step::Execute(_))));
        m.unseal_finished(false);
        assert_eq!(m.phase(), Phase::Sealed);
        assert!(m.unseal_attempt().is_none());
        assert_eq!(
            m.submit_unseal(share(1, 1)),
            Ok(Step::Pending {
                progress: 1,
                required: 2
            })
        );
        assert_eq!(
            m.unseal_attempt().map(|a| a.nonce.as_str()),
            Some("nonce-2"),
            "fresh nonce"
        );
    }

    #[test]
    fn reset_discards_shares() {
        let mut m = SealMachine::new(Some(shamir(3, 2)), counter());
        m.submit_unseal(share(1, 1)).expect("one");
        m.reset_unseal();
        assert!(m.unseal_attempt().is_none());
        assert_eq!(
            m.submit_unseal(share(1, 1)),
            Ok(Step::Pending {
                progress: 1,
                required: 2
            })
        );
    }

    #[test]
    fn single_share_seal_takes_a_raw_key() {
        let mut m = SealMachine::new(Some(shamir(1, 1)), counter());
        let key = Share::from_bytes(SecretBytes::new(vec![7; 32]));
        assert_eq!(
            m.submit_unseal(key.clone()),
            Ok(Step::Execute(Command::Unseal { shares: vec![key] }))
        );
    }

    #[test]
    fn hsm_seal_unseals_itself_and_refuses_shares() {
        let mut m = SealMachine::new(Some(SealConfig::pkcs11(5, 3)), counter());
        assert_eq!(m.submit_unseal(share(1, 1)), Err(SealError::AutoUnsealOnly));
        m.begin_auto_unseal().expect("auto");
        m.unseal_finished(true);
        assert_eq!(m.phase(), Phase::Unsealed);
        let mut s = SealMachine::new(Some(shamir(1, 1)), counter());
        assert_eq!(s.begin_auto_unseal(), Err(SealError::NotAutoUnseal));
    }

    #[test]
    fn rekey_needs_unsealed_node_matching_nonce_and_quorum() {
        let mut m = SealMachine::new(Some(shamir(3, 2)), counter());
        assert!(matches!(
            m.rekey_init(RekeyTarget::Root, 5, 3),
            Err(SealError::Sealed)
        ));
        m.begin_init().ok();
        m.submit_unseal(share(1, 1)).expect("one");
        m.submit_unseal(share(2, 2)).expect("two");
        m.unseal_finished(true);
        assert!(matches!(
            m.rekey_init(RekeyTarget::Recovery, 5, 3),
            Err(SealError::NoRecoveryKeys)
        ));
        let nonce = m
            .rekey_init(RekeyTarget::Root, 5, 3)
            .expect("init")
            .attempt
            .nonce
            .clone();
        assert!(matches!(
            m.rekey_init(RekeyTarget::Root, 5, 3),
            Err(SealError::InProgress(_))
        ));
        assert_eq!(
            m.rekey_update(RekeyTarget::Root, "wrong", share(1, 1)),
            Err(SealError::NonceMismatch)
        );
        assert_eq!(
            m.rekey_update(RekeyTarget::Root, &nonce, share(1, 1)),
            Ok(Step::Pending {
                progress: 1,
                required: 2
            })
        );
        assert_eq!(
            m.rekey_update(RekeyTarget::Root, &nonce, share(2, 2)),
            Ok(Step::Execute(Command::Rekey {
                keys: KeySet::Unseal,
                shares: vec![share(1, 1), share(2, 2)],
                target: RekeyTarget::Root,
                shares_out: 5,
                threshold_out: 3,
            }))
        );
        m.rekey_finished(Some(shamir(5, 3)));
        assert!(m.rekey_attempt().is_none());
        assert_eq!(m.config().map(|c| c.secret_threshold), Some(3));
    }

    #[test]
    fn hsm_rekey_and_generate_root_use_recovery_keys() {
        let mut m = SealMachine::new(Some(SealConfig::pkcs11(3, 2)), counter());
        m.begin_auto_unseal().expect("auto");
        m.unseal_finished(true);
        let nonce = m
            .rekey_init(RekeyTarget::Recovery, 4, 2)
            .expect("init")
            .attempt
            .nonce
            .clone();
        m.rekey_update(RekeyTarget::Recovery, &nonce, share(9, 1))
            .expect("one");
        let step = m
            .rekey_update(RekeyTarget::Recovery, &nonce, share(8, 1))
            .expect("two");
        assert!(matches!(
            step,
            Step::Execute(Command::Rekey {
                keys: KeySet::Recovery,
                target: RekeyTarget::Recovery,
                ..
            })
        ));
        m.rekey_finished(None);
        let nonce = m
            .generate_root_init("otp".into())
            .expect("init")
            .attempt
            .nonce
            .clone();
        m.generate_root_update(&nonce, share(1, 1)).expect("one");
        let step = m.generate_root_update(&nonce, share(2, 1)).expect("two");
        assert!(matches!(
            step,
            Step::Execute(Command::GenerateRoot {
                keys: KeySet::Recovery,
                ..
            })
        ));
    }

    #[test]
    fn sealing_abandons_attempts() {
        let mut m = unsealed();
        m.rekey_init(RekeyTarget::Root, 3, 2).expect("rekey");
        m.generate_root_init("otp".into()).expect("gen root");
        m.sealed();
        assert_eq!(m.phase(), Phase::Sealed);
        assert!(m.rekey_attempt().is_none());
        assert!(m.generate_root_attempt().is_none());
    }

    #[test]
    fn seal_waits_for_an_executing_rekey() {
        let mut m = unsealed();
        let nonce = m
            .rekey_init(RekeyTarget::Root, 3, 2)
            .expect("rekey")
            .attempt
            .nonce
            .clone();
        let step = m
            .rekey_update(
                RekeyTarget::Root,
                &nonce,
                Share::from_bytes(SecretBytes::new(vec![1; 32])),
            )
            .expect("quorum");
        assert!(matches!(step, Step::Execute(Command::Rekey { .. })));
        assert_eq!(m.begin_seal(), Err(SealError::Busy));
        m.rekey_finished(Some(shamir(3, 2)));
        m.begin_seal().expect("seal once the rekey is done");
        m.sealed();
        assert_eq!(m.phase(), Phase::Sealed);
        let mut fresh = SealMachine::new(None, counter());
        assert_eq!(fresh.begin_seal(), Err(SealError::NotInitialized));
    }

    #[test]
    fn generate_root_cancel_and_restart() {
        let mut m = unsealed();
        m.generate_root_init("a".into()).expect("init");
        assert!(matches!(
            m.generate_root_init("b".into()),
            Err(SealError::InProgress(_))
        ));
        m.generate_root_cancel().expect("cancel");
        m.generate_root_init("b".into()).expect("again");
    }
}
