//! Opening and logging in the provider's PKCS#11 session.

use std::sync::atomic::{AtomicU64, Ordering};

use cryptoki::context::Pkcs11;
use cryptoki::error::RvError;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::rv::{describe, login_error, rv};
use crate::{HsmError, SecretString};

/// The provider's one session and the generation that names it.
#[derive(Debug)]
pub(super) struct Connection {
    /// `None` after a reopen failed; the next operation tries again.
    pub(super) session: Option<Session>,
    /// Object handles cached in a `KeyId` are trusted only while this matches.
    pub(super) generation: u64,
}

/// Generations are unique in the process, not just per provider, so a
/// `KeyId` from one provider never passes for a current one in another.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

pub(super) fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// Finds the slot holding the token labelled `token_label`.
///
/// Slots are looked up again on every (re)open: after an HSM restart or a
/// token re-initialisation the same token may sit in another slot.
pub(super) fn find_slot(pkcs11: &Pkcs11, token_label: &str) -> Result<Slot, HsmError> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| HsmError::Pkcs11 {
            op: "list slots",
            reason: describe(&e),
        })?;
    let mut matching = Vec::new();
    for slot in slots {
        // A token removed or deleted since the slot list was read makes its
        // slot fail here (SoftHSM2 says CKR_GENERAL_ERROR); it is not ours
        // to use either way, so it must not hide the tokens that remain.
        let info = match pkcs11.get_token_info(slot) {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(slot = %slot, error = %describe(&e), "skipping pkcs11 slot whose token cannot be read");
                continue;
            }
        };
        // Token labels are blank-padded to 32 bytes; cryptoki strips the padding.
        if info.label() == token_label {
            matching.push(slot);
        }
    }
    match matching.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(HsmError::TokenNotFound {
            label: token_label.to_owned(),
        }),
        // Choosing one would make which keys we see depend on slot order.
        many => Err(HsmError::Config {
            field: "token_label",
            reason: format!(
                "{} tokens are labelled {token_label:?}; labels must be unique",
                many.len()
            ),
        }),
    }
}

/// Opens a read/write session on `slot` and logs the user in.
pub(super) fn open_logged_in(
    pkcs11: &Pkcs11,
    slot: Slot,
    pin: &SecretString,
) -> Result<Session, HsmError> {
    let session = pkcs11.open_rw_session(slot).map_err(|e| HsmError::Pkcs11 {
        op: "open session",
        reason: describe(&e),
    })?;
    // cryptoki wants its own secret type; it zeroizes its copy on drop. The
    // PIN goes to the module and nowhere else.
    let auth = AuthPin::from(pin.expose());
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) => Ok(session),
        // The login state belongs to the application, not the session
        // (PKCS#11 v2.40 §5.6, C_Login): another provider in this process, or
        // our previous session, already logged the user in.
        Err(e) if rv(&e) == Some(RvError::UserAlreadyLoggedIn) => Ok(session),
        Err(e) => Err(login_error(&e)),
    }
}
