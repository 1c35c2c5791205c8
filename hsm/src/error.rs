//! The one error type of the crate.

use std::path::PathBuf;

use crate::KeyLabel;

/// Everything a [`KeyProvider`](crate::KeyProvider) can fail with.
///
/// Messages are one lowercase line that names the problem and, where an
/// operator can act, what to check. No variant ever carries a PIN or key
/// material: PKCS#11 failures are reported by their `CKR_*` code only.
///
/// The variants fall into three groups, which callers (the seal state
/// machine) treat differently:
///
/// * **configuration**: [`Config`](Self::Config), [`Module`](Self::Module),
///   [`TokenNotFound`](Self::TokenNotFound), [`Login`](Self::Login): the
///   provider cannot be opened until an operator fixes something;
/// * **key and data**: [`KeyExists`](Self::KeyExists),
///   [`KeyNotFound`](Self::KeyNotFound), [`DuplicateKey`](Self::DuplicateKey),
///   [`WrongKeyKind`](Self::WrongKeyKind), [`InvalidLabel`](Self::InvalidLabel),
///   [`Unwrap`](Self::Unwrap): retrying the same call gives the same answer;
/// * **device**: [`Pkcs11`](Self::Pkcs11), [`Crypto`](Self::Crypto): the HSM
///   or library failed; a later retry may succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// A provider configuration value is unusable.
    #[error("invalid hsm config {field}: {reason}")]
    Config {
        /// The configuration key, e.g. `token_label`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The PKCS#11 library is missing, is not a PKCS#11 module, or refused to
    /// initialise.
    #[error("cannot load pkcs11 module {}: {reason}", path.display())]
    Module {
        /// The module path from the configuration.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },

    /// No slot holds a token with this label.
    #[error(
        "pkcs11 token {label:?} not found: is the token initialised and the module path right?"
    )]
    TokenNotFound {
        /// The token label that was looked for.
        label: String,
    },

    /// Logging in as the user failed (wrong or locked PIN, uninitialised user PIN, ...).
    #[error("pkcs11 login failed: {reason}")]
    Login {
        /// The cause, e.g. `the pin is incorrect (CKR_PIN_INCORRECT)`; never the PIN.
        reason: String,
    },

    /// A key of that kind with that label already exists.
    #[error("key {label:?} already exists")]
    KeyExists {
        /// The label that is taken.
        label: KeyLabel,
    },

    /// No key of the requested kind has this label.
    #[error("key {label:?} not found")]
    KeyNotFound {
        /// The label that was looked for.
        label: KeyLabel,
    },

    /// More than one object on the token matches a label, so the key to use is
    /// ambiguous. Sigil never creates duplicates; someone else did.
    #[error("{count} objects on the token are labelled {label:?}: remove the duplicates")]
    DuplicateKey {
        /// The ambiguous label.
        label: KeyLabel,
        /// How many objects carry it.
        count: usize,
    },

    /// The key exists but is of the wrong kind for this operation (an AES key
    /// used to sign, an ECDSA key used to wrap).
    #[error("key has the wrong kind for this operation: aes-256 keys wrap, ecdsa-p256 keys sign")]
    WrongKeyKind,

    /// A key label failed to parse.
    #[error("invalid key label: {0}")]
    InvalidLabel(String),

    /// A wrapped blob did not authenticate: it was tampered with or truncated,
    /// or the key or associated data differ from those used to wrap it.
    #[error(
        "cannot unwrap: the blob is corrupt, or was wrapped under another key or associated data"
    )]
    Unwrap,

    /// A PKCS#11 call failed.
    #[error("pkcs11 {op} failed: {reason}")]
    Pkcs11 {
        /// The provider operation, e.g. `wrap` or `open session`.
        op: &'static str,
        /// The `CKR_*` code and the PKCS#11 function that returned it.
        reason: String,
    },

    /// The software cryptography (aws-lc-rs) failed.
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_lowercase_line() {
        let label = KeyLabel::new("root").expect("valid label");
        let errors = [
            HsmError::Module {
                path: "/usr/lib/softhsm/libsofthsm2.so".into(),
                reason: "file does not exist".into(),
            },
            HsmError::TokenNotFound {
                label: "sigil".into(),
            },
            HsmError::KeyExists {
                label: label.clone(),
            },
            HsmError::KeyNotFound { label },
            HsmError::WrongKeyKind,
            HsmError::Unwrap,
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            assert!(msg.starts_with(|c: char| !c.is_uppercase()), "{msg}");
        }
        assert_eq!(
            HsmError::TokenNotFound {
                label: "sigil".into()
            }
            .to_string(),
            "pkcs11 token \"sigil\" not found: is the token initialised and the module path right?"
        );
    }
}
