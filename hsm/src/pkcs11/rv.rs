//! Turning cryptoki errors into messages and decisions.

use cryptoki::context::Function;
use cryptoki::error::{Error, RvError};

use crate::HsmError;

/// Why an operation on the session failed, as far as the retry logic cares.
#[derive(Debug)]
pub(super) enum Failure {
    /// The session can no longer be used: reopen it, log in again and retry once.
    Lost {
        /// The session handle is already invalid on the HSM side (closed,
        /// token removed), so it must not be closed again.
        dead: bool,
        reason: String,
    },
    /// Anything else: reported to the caller as is.
    Hsm(HsmError),
}

impl From<HsmError> for Failure {
    fn from(e: HsmError) -> Self {
        Self::Hsm(e)
    }
}

/// Classifies a cryptoki error from the provider operation `op`.
pub(super) fn failure(op: &'static str) -> impl Fn(Error) -> Failure {
    move |err| {
        let reason = describe(&err);
        match rv(&err) {
            // PKCS#11 v2.40 §5.1: these say the session (or the whole token)
            // went away, e.g. the HSM restarted or a network HSM reconnected.
            Some(
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent,
            ) => Failure::Lost { dead: true, reason },
            // The session survived but lost its login (another session of this
            // process called C_Logout, or the HSM dropped authentication), or a
            // cached object handle went stale (SoftHSM2 reports private objects
            // of a logged-out session this way). A fresh, logged-in session
            // looks the key up by label again.
            Some(
                RvError::UserNotLoggedIn | RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
            ) => Failure::Lost {
                dead: false,
                reason,
            },
            _ => Failure::Hsm(HsmError::Pkcs11 { op, reason }),
        }
    }
}

/// Whether `C_Decrypt` rejected the ciphertext itself: a failed GCM tag
/// check. PKCS#11 v2.40 §5.10 prescribes `CKR_ENCRYPTED_DATA_INVALID` or
/// `_LEN_RANGE`, but modules differ: SoftHSM2 returns `CKR_GENERAL_ERROR`,
/// others `CKR_FUNCTION_FAILED` or `CKR_DATA_INVALID`. Only codes from
/// `C_Decrypt` count; `C_DecryptInit` failures concern the key, not the blob.
pub(super) fn is_rejected_ciphertext(err: &Error) -> bool {
    matches!(
        err,
        Error::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange
                | RvError::GeneralError
                | RvError::FunctionFailed,
            Function::Decrypt,
        )
    )
}

/// The PKCS#11 return value inside `err`, if it is one.
pub(super) fn rv(err: &Error) -> Option<RvError> {
    match err {
        Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// One lowercase line: the `CKR_*` code and the function that returned it.
///
/// cryptoki's own `Display` quotes paragraphs of the specification; operators
/// need the code, which is what HSM vendors' documentation is indexed by.
pub(super) fn describe(err: &Error) -> String {
    match err {
        Error::Pkcs11(rv, function) => format!("{} from C_{function:?}", ckr_name(*rv)),
        Error::LibraryLoading(e) => format!("the library cannot be loaded ({e})"),
        other => lowercase_first(&other.to_string()),
    }
}

/// The login failure, explained; never includes the PIN.
pub(super) fn login_error(err: &Error) -> HsmError {
    let code = describe(err);
    let reason = match rv(err) {
        Some(RvError::PinIncorrect) => format!("the pin is incorrect ({code})"),
        Some(RvError::PinLocked) => {
            format!("the pin is locked after too many failed attempts ({code})")
        }
        Some(RvError::PinExpired) => format!("the pin has expired ({code})"),
        Some(RvError::PinLenRange | RvError::PinInvalid) => {
            format!("the pin has an invalid length or characters ({code})")
        }
        Some(RvError::UserPinNotInitialized) => {
            format!("the token's user pin is not initialised ({code})")
        }
        _ => code,
    };
    HsmError::Login { reason }
}

/// `PinIncorrect` → `CKR_PIN_INCORRECT`: cryptoki's variant names are the
/// specification's names in camel case.
fn ckr_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) => format!("vendor-defined error 0x{code:x}"),
        RvError::UnknownErrorCode(code) => format!("unknown error 0x{code:x}"),
        other => {
            let camel = format!("{other:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            out.push_str("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_codes_like_the_spec() {
        let err = Error::Pkcs11(RvError::PinIncorrect, Function::Login);
        assert_eq!(describe(&err), "CKR_PIN_INCORRECT from C_Login");
        let err = Error::Pkcs11(RvError::VendorDefined(0x8000_0001), Function::Decrypt);
        assert_eq!(
            describe(&err),
            "vendor-defined error 0x80000001 from C_Decrypt"
        );
        assert_eq!(describe(&Error::NotSupported), "feature not supported");
    }

    #[test]
    fn lost_sessions_are_retried_other_errors_are_not() {
        let classify = failure("wrap");
        let dead = classify(Error::Pkcs11(
            RvError::SessionHandleInvalid,
            Function::EncryptInit,
        ));
        assert!(matches!(dead, Failure::Lost { dead: true, .. }));
        let logged_out = classify(Error::Pkcs11(
            RvError::UserNotLoggedIn,
            Function::EncryptInit,
        ));
        assert!(matches!(logged_out, Failure::Lost { dead: false, .. }));
        let stale = classify(Error::Pkcs11(
            RvError::ObjectHandleInvalid,
            Function::EncryptInit,
        ));
        assert!(matches!(stale, Failure::Lost { dead: false, .. }));
        match classify(Error::Pkcs11(RvError::DeviceError, Function::Encrypt)) {
            Failure::Hsm(HsmError::Pkcs11 { op, reason }) => {
                assert_eq!(op, "wrap");
                assert_eq!(reason, "CKR_DEVICE_ERROR from C_Encrypt");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_decrypt_failures_mean_a_bad_blob() {
        let bad_tag = Error::Pkcs11(RvError::GeneralError, Function::Decrypt);
        assert!(is_rejected_ciphertext(&bad_tag));
        let bad_key = Error::Pkcs11(RvError::GeneralError, Function::DecryptInit);
        assert!(!is_rejected_ciphertext(&bad_key));
        let device = Error::Pkcs11(RvError::DeviceError, Function::Decrypt);
        assert!(!is_rejected_ciphertext(&device));
    }

    #[test]
    fn login_errors_explain_without_the_pin() {
        let e = login_error(&Error::Pkcs11(RvError::PinIncorrect, Function::Login));
        assert_eq!(
            e.to_string(),
            "pkcs11 login failed: the pin is incorrect (CKR_PIN_INCORRECT from C_Login)"
        );
    }
}
