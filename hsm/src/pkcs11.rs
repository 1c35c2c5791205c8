//! A key provider backed by a PKCS#11 token: an HSM in production (AWS
//! CloudHSM, Thales Luna, ...), SoftHSM2 in tests.
//!
//! Only standard PKCS#11 v2.40 functions and mechanisms are used
//! (`CKM_AES_KEY_GEN`, `CKM_AES_GCM`, `CKM_EC_KEY_PAIR_GEN`, `CKM_ECDSA`), so
//! any conforming module works; nothing here is specific to SoftHSM.
//!
//! See [`Pkcs11KeyProvider`] for the process-wide rules and session recovery.

mod rv;
mod session;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use aws_lc_rs::digest::{SHA256, digest};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};

use self::rv::{Failure, describe, failure};
use self::session::{Connection, find_slot, next_generation, open_logged_in};
use crate::blob::{Blob, IV_LEN, TAG_LEN};
use crate::key::{KeyHandle, Pkcs11Objects};
use crate::{HsmError, KeyId, KeyKind, KeyLabel, KeyProvider, SecretBytes, SecretString};

/// DER encoding of the OID 1.2.840.10045.3.1.7 (prime256v1 / secp256r1), the
/// `CKA_EC_PARAMS` value naming the curve (RFC 5480 §2.1.1.1).
const P256_EC_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `CK_GCM_PARAMS.ulTagBits`: the full 128-bit tag of the blob format.
const GCM_TAG_BITS: u64 = TAG_LEN as u64 * 8;
/// A raw `CKM_ECDSA` P-256 signature: `r || s`, 32 bytes each.
const P256_SIGNATURE_LEN: usize = 64;
/// AES-256 key length in bytes (`CKA_VALUE_LEN`).
const AES_256_KEY_LEN: u64 = 32;
/// Token labels are `CK_UTF8CHAR[32]` in `CK_TOKEN_INFO`.
const MAX_TOKEN_LABEL_LEN: usize = 32;

/// Where to find the HSM and how to log in.
#[derive(Clone, Debug)]
pub struct Pkcs11Config {
    /// Path of the vendor's PKCS#11 library, e.g.
    /// `/opt/cloudhsm/lib/libcloudhsm_pkcs11.so`.
    pub module: PathBuf,
    /// Label of the token (the CloudHSM cluster or Luna partition) holding Sigil's keys.
    pub token_label: String,
    /// The user (`CKU_USER`) PIN; for CloudHSM, `user:password`.
    pub pin: SecretString,
}

impl Pkcs11Config {
    /// Checks the values that can be checked without touching the module.
    pub fn validate(&self) -> Result<(), HsmError> {
        if self.module.as_os_str().is_empty() {
            return Err(HsmError::Config {
                field: "module",
                reason: "is empty; set the path of the pkcs11 library".into(),
            });
        }
        if self.token_label.is_empty() || self.token_label.len() > MAX_TOKEN_LABEL_LEN {
            return Err(HsmError::Config {
                field: "token_label",
                reason: format!(
                    "is {} bytes long; token labels are 1 to {MAX_TOKEN_LABEL_LEN} bytes",
                    self.token_label.len()
                ),
            });
        }
        if self.token_label.ends_with(' ') {
            return Err(HsmError::Config {
                field: "token_label",
                reason: "ends with a space, which pkcs11 cannot tell from padding".into(),
            });
        }
        if self.pin.expose().is_empty() {
            return Err(HsmError::Config {
                field: "pin",
                reason: "is empty".into(),
            });
        }
        Ok(())
    }
}

/// How a key is protected on the token, as the token reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyProtection {
    /// `CKA_TOKEN`: the key persists on the token.
    pub token: bool,
    /// `CKA_SENSITIVE`: the key value cannot be read in plaintext.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: the key can be wrapped out of the token.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: the key has been sensitive since it was created.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: the key has never been extractable.
    pub never_extractable: bool,
}

/// A [`KeyProvider`] whose keys live on a PKCS#11 token and never leave it.
///
/// AES keys are generated on the token as `CKA_SENSITIVE`, non-extractable
/// token objects and wrap with `CKM_AES_GCM`; ECDSA keys are P-256 pairs
/// whose private half is equally protected and signs with `CKM_ECDSA` over a
/// SHA-256 digest computed here (more widely supported than
/// `CKM_ECDSA_SHA256`).
///
/// All operations go through one session behind a mutex: PKCS#11 sessions
/// must not be used by two threads at once, and Sigil's HSM traffic (unseal,
/// key wrapping) is light.
///
/// # One module, one process
///
/// A PKCS#11 module is a process-wide singleton: `C_Initialize` and
/// `C_Finalize` act on the whole process, and the user's login state belongs
/// to the application rather than to a session. Hence:
///
/// * [`Pkcs11KeyProvider::open`] treats `CKR_CRYPTOKI_ALREADY_INITIALIZED` as
///   success, so several providers (and other cryptoki users) may share a
///   module, and a `CKR_USER_ALREADY_LOGGED_IN` login as success too;
/// * dropping a provider closes its session but never calls `C_Finalize`
///   (which would pull the module out from under every other user in the
///   process) nor `C_Logout` (which would log out every other session of the
///   application). Closing the application's last session on a token logs it
///   out (PKCS#11 v2.40 §5.6, `C_CloseSession`);
/// * modules read their configuration (e.g. `SOFTHSM2_CONF`) once, in
///   `C_Initialize`, so it must be in the environment before the first open;
/// * a module's state does not survive `fork()`: a child must re-exec (or
///   initialise afresh), never reuse a parent's provider.
///
/// # Lost sessions
///
/// A long-running server outlives HSM restarts and network blips. When an
/// operation fails with `CKR_SESSION_HANDLE_INVALID`, `CKR_SESSION_CLOSED`,
/// `CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT` or `CKR_USER_NOT_LOGGED_IN`
/// (or a cached object handle turns out stale), the provider reopens its
/// session (finding the token's slot afresh), logs in again, looks the key up
/// by label again and retries the operation once. If that fails, the error
/// is returned and the next operation tries again, so the provider recovers
/// whenever the HSM does.
pub struct Pkcs11KeyProvider {
    pkcs11: Pkcs11,
    module: PathBuf,
    token_label: String,
    pin: SecretString,
    connection: Mutex<Connection>,
}

impl Pkcs11KeyProvider {
    /// Loads and initialises the module, finds the token and logs in.
    pub fn open(config: Pkcs11Config) -> Result<Self, HsmError> {
        config.validate()?;
        let Pkcs11Config {
            module,
            token_label,
            pin,
        } = config;

        // Checked first because the loader's own message for a missing file
        // is a dlopen string that does not say which path was tried.
        if !module.is_file() {
            return Err(HsmError::Module {
                path: module,
                reason: "no such file; is the hsm client installed?".into(),
            });
        }
        let pkcs11 = Pkcs11::new(&module).map_err(|e| HsmError::Module {
            path: module.clone(),
            reason: describe(&e),
        })?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            Err(e) if rv::rv(&e) == Some(RvError::CryptokiAlreadyInitialized) => {
                tracing::debug!(module = %module.display(), "pkcs11 module already initialised in this process");
            }
            Err(e) => {
                return Err(HsmError::Module {
                    path: module,
                    reason: describe(&e),
                });
            }
        }

        let slot = find_slot(&pkcs11, &token_label).inspect_err(|e| {
            tracing::warn!(module = %module.display(), token = %token_label, error = %e, "pkcs11 token not usable");
        })?;
        let session = open_logged_in(&pkcs11, slot, &pin)?;
        tracing::info!(module = %module.display(), token = %token_label, slot = %slot, "pkcs11 provider opened");
        Ok(Self {
            pkcs11,
            module,
            token_label,
            pin,
            connection: Mutex::new(Connection {
                session: Some(session),
                generation: next_generation(),
            }),
        })
    }

    /// Reads the protection attributes of `key` (the secret key, or the
    /// private half of a key pair), so an operator or test can check that it
    /// cannot leave the token.
    pub fn key_protection(&self, key: &KeyId) -> Result<KeyProtection, HsmError> {
        self.with_session("read key attributes", |session, generation| {
            let objects = resolve(session, generation, key)?;
            let attributes = session
                .get_attributes(
                    objects.primary,
                    &[
                        AttributeType::Token,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                    ],
                )
                .map_err(failure("read key attributes"))?;
            let flag = |wanted: AttributeType| {
                attributes
                    .iter()
                    .find_map(|attribute| match (wanted, attribute) {
                        (AttributeType::Token, Attribute::Token(b))
                        | (AttributeType::Sensitive, Attribute::Sensitive(b))
                        | (AttributeType::Extractable, Attribute::Extractable(b))
                        | (AttributeType::AlwaysSensitive, Attribute::AlwaysSensitive(b))
                        | (AttributeType::NeverExtractable, Attribute::NeverExtractable(b)) => {
                            Some(*b)
                        }
                        _ => None,
                    })
                    .ok_or_else(|| HsmError::Pkcs11 {
                        op: "read key attributes",
                        reason: format!("the token did not report {wanted}"),
                    })
            };
            Ok(KeyProtection {
                token: flag(AttributeType::Token)?,
                sensitive: flag(AttributeType::Sensitive)?,
                extractable: flag(AttributeType::Extractable)?,
                always_sensitive: flag(AttributeType::AlwaysSensitive)?,
                never_extractable: flag(AttributeType::NeverExtractable)?,
            })
        })
    }

    fn connection(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-operation leaves at worst a session with an unfinished
        // operation, which the next call's error (or reopen) deals with.
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the session, reopening it and retrying once if it was lost.
    fn with_session<T>(
        &self,
        op: &'static str,
        f: impl Fn(&Session, u64) -> Result<T, Failure>,
    ) -> Result<T, HsmError> {
        let mut connection = self.connection();
        let mut may_reopen = true;
        loop {
            let result = match &connection.session {
                Some(session) => f(session, connection.generation),
                None => Err(Failure::Lost {
                    dead: false,
                    reason: "no session: the last reopen failed".into(),
                }),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(Failure::Hsm(e)) => return Err(e),
                Err(Failure::Lost { dead, reason }) if may_reopen => {
                    tracing::warn!(op, token = %self.token_label, reason = %reason, "pkcs11 session lost; reopening");
                    may_reopen = false;
                    self.reopen(&mut connection, dead)?;
                }
                Err(Failure::Lost { reason, .. }) => return Err(HsmError::Pkcs11 { op, reason }),
            }
        }
    }

    fn reopen(&self, connection: &mut Connection, dead: bool) -> Result<(), HsmError> {
        if let Some(old) = connection.session.take() {
            if dead {
                // The HSM already closed this handle. Closing it again could
                // close an unrelated session that has since been given the
                // same handle number, so let it go without C_CloseSession.
                std::mem::forget(old);
            } else {
                drop(old);
            }
        }
        let slot = find_slot(&self.pkcs11, &self.token_label)?;
        let session = open_logged_in(&self.pkcs11, slot, &self.pin)?;
        connection.session = Some(session);
        connection.generation = next_generation();
        tracing::info!(token = %self.token_label, slot = %slot, "pkcs11 session reopened");
        Ok(())
    }
}

impl KeyProvider for Pkcs11KeyProvider {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn find_key(&self, label: &KeyLabel, kind: KeyKind) -> Result<Option<KeyId>, HsmError> {
        self.with_session("find key", |session, generation| {
            Ok(find_objects(session, label, kind)?.map(|objects| {
                KeyId::new(
                    label.clone(),
                    kind,
                    KeyHandle::Pkcs11 {
                        generation,
                        objects,
                    },
                )
            }))
        })
    }

    fn generate_key(&self, label: &KeyLabel, kind: KeyKind) -> Result<KeyId, HsmError> {
        let key = self.with_session("generate key", |session, generation| {
            // The session lock is held from this check to the generation, so
            // no other thread of this process can create the same label in
            // between. Another process could, and a retry after a lost session
            // may find the key its first attempt created: both surface as
            // KeyExists, which find_or_generate_key resolves by finding it.
            let taken = find_objects(session, label, kind)?.is_some()
                || (kind == KeyKind::EcdsaP256
                    && find_unique(session, &ec_public_template(label), label)?.is_some());
            if taken {
                return Err(HsmError::KeyExists {
                    label: label.clone(),
                }
                .into());
            }
            let objects = match kind {
                KeyKind::Aes256 => Pkcs11Objects {
                    primary: session
                        .generate_key(&Mechanism::AesKeyGen, &aes_generate_template(label))
                        .map_err(failure("generate key"))?,
                    public: None,
                },
                KeyKind::EcdsaP256 => {
                    let (public, private) = session
                        .generate_key_pair(
                            &Mechanism::EccKeyPairGen,
                            &ec_public_generate_template(label),
                            &ec_private_generate_template(label),
                        )
                        .map_err(failure("generate key"))?;
                    Pkcs11Objects {
                        primary: private,
                        public: Some(public),
                    }
                }
            };
            let handle = KeyHandle::Pkcs11 {
                generation,
                objects,
            };
            Ok(KeyId::new(label.clone(), kind, handle))
        })?;
        tracing::info!(token = %self.token_label, label = %label, kind = %kind, "generated pkcs11 key");
        Ok(key)
    }

    fn wrap(&self, key: &KeyId, plaintext: &SecretBytes, aad: &[u8]) -> Result<Vec<u8>, HsmError> {
        key.expect_kind(KeyKind::Aes256)?;
        self.with_session("wrap", |session, generation| {
            let objects = resolve(session, generation, key)?;
            let mut iv = [0u8; IV_LEN];
            aws_lc_rs::rand::fill(&mut iv)
                .map_err(|_| HsmError::Crypto("random iv generation failed".into()))?;
            let sealed = {
                let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())
                    .map_err(|e| HsmError::Pkcs11 {
                        op: "wrap",
                        reason: describe(&e),
                    })?;
                session
                    .encrypt(
                        &Mechanism::AesGcm(params),
                        objects.primary,
                        plaintext.expose(),
                    )
                    .map_err(failure("wrap"))?
            };
            // Some HSMs (AWS CloudHSM) refuse caller-chosen GCM IVs and write
            // the one they generated into the parameters' IV buffer, so `iv`
            // is read back only now, after C_Encrypt.
            if sealed.len() != plaintext.len() + TAG_LEN {
                return Err(HsmError::Pkcs11 {
                    op: "wrap",
                    reason: format!(
                        "C_Encrypt returned {} bytes for {} bytes of plaintext; expected ciphertext and a {TAG_LEN}-byte tag",
                        sealed.len(),
                        plaintext.len()
                    ),
                }
                .into());
            }
            let mut blob = Blob::start(&iv, sealed.len());
            blob.extend_from_slice(&sealed);
            Ok(blob)
        })
    }

    fn unwrap(&self, key: &KeyId, blob: &[u8], aad: &[u8]) -> Result<SecretBytes, HsmError> {
        key.expect_kind(KeyKind::Aes256)?;
        let parsed = Blob::parse(blob)?;
        self.with_session("unwrap", |session, generation| {
            let objects = resolve(session, generation, key)?;
            let mut iv = parsed.iv;
            let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into()).map_err(
                |e| HsmError::Pkcs11 {
                    op: "unwrap",
                    reason: describe(&e),
                },
            )?;
            match session.decrypt(&Mechanism::AesGcm(params), objects.primary, parsed.sealed) {
                // cryptoki hands the plaintext over in a fresh Vec; it is
                // moved, not copied, into the SecretBytes.
                Ok(plaintext) => Ok(SecretBytes::new(plaintext)),
                Err(e) if rv::is_rejected_ciphertext(&e) => {
                    tracing::debug!(token = %self.token_label, label = %key.label(), code = %describe(&e), "pkcs11 rejected a wrapped blob");
                    Err(HsmError::Unwrap.into())
                }
                Err(e) => Err(failure("unwrap")(e)),
            }
        })
    }

    fn sign(&self, key: &KeyId, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        key.expect_kind(KeyKind::EcdsaP256)?;
        let hash = digest(&SHA256, message);
        self.with_session("sign", |session, generation| {
            let objects = resolve(session, generation, key)?;
            let signature = session
                .sign(&Mechanism::Ecdsa, objects.primary, hash.as_ref())
                .map_err(failure("sign"))?;
            if signature.len() != P256_SIGNATURE_LEN {
                return Err(HsmError::Pkcs11 {
                    op: "sign",
                    reason: format!(
                        "C_Sign returned a {}-byte signature; p-256 signatures are {P256_SIGNATURE_LEN}",
                        signature.len()
                    ),
                }
                .into());
            }
            Ok(signature)
        })
    }

    fn verify(&self, key: &KeyId, message: &[u8], signature: &[u8]) -> Result<bool, HsmError> {
        key.expect_kind(KeyKind::EcdsaP256)?;
        let hash = digest(&SHA256, message);
        self.with_session("verify", |session, generation| {
            let objects = resolve(session, generation, key)?;
            let public = objects.public.ok_or_else(|| HsmError::KeyNotFound {
                label: key.label().clone(),
            })?;
            // Not a P-256 signature whatever its bytes; modules differ in how
            // they reject odd lengths, so they are not asked.
            if signature.len() != P256_SIGNATURE_LEN {
                return Ok(false);
            }
            match session.verify(&Mechanism::Ecdsa, public, hash.as_ref(), signature) {
                Ok(()) => Ok(true),
                Err(e)
                    if matches!(
                        rv::rv(&e),
                        Some(RvError::SignatureInvalid | RvError::SignatureLenRange)
                    ) =>
                {
                    Ok(false)
                }
                Err(e) => Err(failure("verify")(e)),
            }
        })
    }
}

/// The token objects behind `key`: the cached handles if they belong to the
/// current session generation, else a fresh lookup by label.
fn resolve(session: &Session, generation: u64, key: &KeyId) -> Result<Pkcs11Objects, Failure> {
    if let KeyHandle::Pkcs11 {
        generation: cached,
        objects,
    } = &key.handle
        && *cached == generation
    {
        return Ok(*objects);
    }
    find_objects(session, key.label(), key.kind())?.ok_or_else(|| {
        HsmError::KeyNotFound {
            label: key.label().clone(),
        }
        .into()
    })
}

/// Looks a key up by label. For a key pair, the private half decides whether
/// the key exists; the public half is attached when present.
fn find_objects(
    session: &Session,
    label: &KeyLabel,
    kind: KeyKind,
) -> Result<Option<Pkcs11Objects>, Failure> {
    ensure_logged_in(session)?;
    match kind {
        KeyKind::Aes256 => Ok(
            find_unique(session, &aes_template(label), label)?.map(|primary| Pkcs11Objects {
                primary,
                public: None,
            }),
        ),
        KeyKind::EcdsaP256 => {
            let Some(primary) = find_unique(session, &ec_private_template(label), label)? else {
                return Ok(None);
            };
            let public = find_unique(session, &ec_public_template(label), label)?;
            Ok(Some(Pkcs11Objects { primary, public }))
        }
    }
}

/// Private objects are invisible to a session that is not logged in, so a
/// search there would report a present key as absent, and
/// `find_or_generate_key` would then create a second root key. Checking the
/// state first turns that into a reopen-and-login.
fn ensure_logged_in(session: &Session) -> Result<(), Failure> {
    let info = session.get_session_info().map_err(failure("find key"))?;
    match info.session_state() {
        SessionState::RwUser | SessionState::RoUser => Ok(()),
        _ => Err(Failure::Lost {
            dead: false,
            reason: "the session is not logged in".into(),
        }),
    }
}

fn find_unique(
    session: &Session,
    template: &[Attribute],
    label: &KeyLabel,
) -> Result<Option<ObjectHandle>, Failure> {
    let found = session
        .find_objects(template)
        .map_err(failure("find key"))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(HsmError::DuplicateKey {
            label: label.clone(),
            count: many.len(),
        }
        .into()),
    }
}

fn aes_template(label: &KeyLabel) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn ec_private_template(label: &KeyLabel) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn ec_public_template(label: &KeyLabel) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// `CKM_AES_KEY_GEN` contributes the class and key type itself; naming them
/// again is allowed but some modules are picky, so the templates for
/// generation leave them out.
fn aes_generate_template(label: &KeyLabel) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        // Least privilege: this key protects secrets, it must not be usable
        // to export other keys from the token.
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::ValueLen(AES_256_KEY_LEN.into()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// Both halves share `CKA_ID`, the convention (PKCS#11 v2.40 §4.7) by which
/// tools such as pkcs11-tool pair a public key with its private key.
fn ec_public_generate_template(label: &KeyLabel) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(P256_EC_PARAMS.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(label.as_bytes().to_vec()),
    ]
}

fn ec_private_generate_template(label: &KeyLabel) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(label.as_bytes().to_vec()),
    ]
}

impl fmt::Debug for Pkcs11KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11KeyProvider")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Pkcs11Config {
        Pkcs11Config {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "sigil".into(),
            pin: "1234".into(),
        }
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert!(config().validate().is_ok());
        type Breaker = fn(&mut Pkcs11Config);
        let cases: [(Breaker, &str); 4] = [
            (|c| c.module = PathBuf::new(), "module"),
            (|c| c.token_label = String::new(), "token_label"),
            (|c| c.token_label = "x".repeat(33), "token_label"),
            (|c| c.pin = SecretString::default(), "pin"),
        ];
        for (break_it, expected) in cases {
            let mut c = config();
            break_it(&mut c);
            match c.validate() {
                Err(HsmError::Config { field, .. }) => assert_eq!(field, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_module_is_a_module_error() {
        let mut c = config();
        c.module = "/nonexistent/libpkcs11.so".into();
        match Pkcs11KeyProvider::open(c) {
            Err(e @ HsmError::Module { .. }) => {
                assert!(e.to_string().contains("/nonexistent/libpkcs11.so"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn p256_params_are_the_prime256v1_oid() {
        // OID 1.2.840.10045.3.1.7: 1*40+2 = 0x2a, 840 = 0x86 0x48, 10045 = 0xce 0x3d.
        assert_eq!(P256_EC_PARAMS[0], 0x06, "universal tag OBJECT IDENTIFIER");
        assert_eq!(usize::from(P256_EC_PARAMS[1]), P256_EC_PARAMS.len() - 2);
    }

    #[test]
    fn debug_never_shows_the_pin() {
        let debug = format!("{:?}", config());
        assert!(!debug.contains("1234"), "{debug}");
    }
}
