//! Key providers for Sigil: where the keys that protect the barrier live.
//!
//! Sigil never holds its root keys in plaintext outside an HSM. This crate is
//! the seam between the server and the HSM: the [`KeyProvider`] trait finds
//! and generates keys by [`KeyLabel`], wraps and unwraps secrets with
//! AES-256-GCM and signs with ECDSA P-256, all without key material leaving
//! the provider. Two implementations ship:
//!
//! * [`Pkcs11KeyProvider`]: any PKCS#11 v2.40 module (AWS CloudHSM, Thales
//!   Luna, SoftHSM2 in tests);
//! * [`SoftwareKeyProvider`]: in memory, for dev mode and tests.
//!
//! Both pass the same conformance suite (`conformance`, feature `testing`),
//! which also provides a SoftHSM2 fixture (`softhsm`) for tests elsewhere in
//! the workspace. Secrets travel as [`SecretBytes`]: zeroized on drop,
//! redacted in `Debug`, compared in constant time.
//!
//! ```
//! use sigil_hsm::{KeyKind, KeyLabel, KeyProvider, SecretBytes, SoftwareKeyProvider};
//!
//! let provider = SoftwareKeyProvider::new();
//!
//! // First boot: create the wrapping key; later boots find it.
//! let label = KeyLabel::new("sigil-root-wrap")?;
//! let key = provider.find_or_generate_key(&label, KeyKind::Aes256)?;
//!
//! // Wrap the barrier key, binding it to where it is stored.
//! let barrier_key = SecretBytes::random(32);
//! let blob = provider.wrap(&key, &barrier_key, b"sigil/core/keyring")?;
//! assert_eq!(provider.unwrap(&key, &blob, b"sigil/core/keyring")?, barrier_key);
//! assert!(provider.unwrap(&key, &blob, b"somewhere/else").is_err());
//!
//! // Sign and verify with an ECDSA P-256 key.
//! let signer = provider.generate_key(&KeyLabel::new("sigil-audit")?, KeyKind::EcdsaP256)?;
//! let signature = provider.sign(&signer, b"audit record")?;
//! assert!(provider.verify(&signer, b"audit record", &signature)?);
//! assert!(!provider.verify(&signer, b"forged record", &signature)?);
//! # Ok::<(), sigil_hsm::HsmError>(())
//! ```
#![warn(missing_docs)]

mod blob;
mod error;
mod key;
mod label;
mod pkcs11;
mod provider;
pub mod secret;
mod software;

#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod softhsm;

pub use error::HsmError;
pub use key::{KeyId, KeyKind};
pub use label::KeyLabel;
pub use pkcs11::{KeyProtection, Pkcs11Config, Pkcs11KeyProvider};
pub use provider::KeyProvider;
pub use secret::{SecretBytes, SecretString};
pub use software::SoftwareKeyProvider;
