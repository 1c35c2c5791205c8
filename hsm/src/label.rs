//! Key labels: the names under which keys live in a provider.

use std::fmt;
use std::str::FromStr;

use crate::HsmError;

/// The name of a key inside a provider (`CKA_LABEL` on a PKCS#11 token).
///
/// A label is 1 to [`KeyLabel::MAX_LEN`] bytes of printable ASCII (`0x20` to
/// `0x7e`) and neither starts nor ends with a space. The limits keep labels
/// portable: every HSM vendor tool can display and type them, and none trims
/// or pads them into a different label.
///
/// ```
/// use sigil_hsm::KeyLabel;
///
/// let label: KeyLabel = "sigil-root-wrap".parse()?;
/// assert_eq!(label.as_str(), "sigil-root-wrap");
/// assert!(KeyLabel::new("").is_err());
/// assert!(KeyLabel::new("caf\u{e9}").is_err());
/// # Ok::<(), sigil_hsm::HsmError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyLabel(String);

impl KeyLabel {
    /// The longest label accepted, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Parses `label`; see the type docs for the rules.
    pub fn new(label: &str) -> Result<Self, HsmError> {
        if label.is_empty() {
            return Err(HsmError::InvalidLabel("label is empty".into()));
        }
        if label.len() > Self::MAX_LEN {
            return Err(HsmError::InvalidLabel(format!(
                "label is {} bytes long; the limit is {}",
                label.len(),
                Self::MAX_LEN
            )));
        }
        if let Some((offset, byte)) = label
            .bytes()
            .enumerate()
            .find(|(_, b)| !(b' '..=b'~').contains(b))
        {
            return Err(HsmError::InvalidLabel(format!(
                "label has byte 0x{byte:02x} at offset {offset}; only printable ascii is allowed"
            )));
        }
        if label.starts_with(' ') || label.ends_with(' ') {
            return Err(HsmError::InvalidLabel(
                "label starts or ends with a space".into(),
            ));
        }
        Ok(Self(label.to_owned()))
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The label as the bytes stored in `CKA_LABEL`.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl FromStr for KeyLabel {
    type Err = HsmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quoted, so labels read unambiguously in error messages and logs.
impl fmt::Debug for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl AsRef<str> for KeyLabel {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn accepts_typical_labels() {
        for ok in ["a", "sigil-root-wrap", "cell 7/audit#2", &"x".repeat(64)] {
            let label = KeyLabel::new(ok).expect(ok);
            assert_eq!(label.as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_labels_with_a_reason() {
        let cases = [
            ("", "empty"),
            (&*"x".repeat(65), "65 bytes"),
            ("tab\there", "0x09 at offset 3"),
            ("caf\u{e9}", "0xc3 at offset 3"),
            ("nul\0", "0x00"),
            (" lead", "space"),
            ("trail ", "space"),
            ("del\x7f", "0x7f"),
        ];
        for (bad, why) in cases {
            match KeyLabel::new(bad) {
                Err(HsmError::InvalidLabel(reason)) => {
                    assert!(reason.contains(why), "{bad:?}: {reason}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn debug_is_quoted() {
        let label = KeyLabel::new("say \"hi\"").expect("valid");
        assert_eq!(format!("{label:?}"), r#""say \"hi\"""#);
        assert_eq!(label.to_string(), "say \"hi\"");
    }

    proptest! {
        #[test]
        fn valid_labels_round_trip(s in "[!-~]([ -~]{0,62}[!-~])?") {
            let label: KeyLabel = s.parse().expect("generated label is valid");
            prop_assert_eq!(label.to_string(), s.clone());
            prop_assert_eq!(KeyLabel::new(label.as_str()).expect("reparse"), label);
        }

        #[test]
        fn anything_outside_printable_ascii_is_rejected(
            prefix in "[a-z]{0,10}",
            bad in any::<char>().prop_filter("not printable ascii", |c| !(' '..='~').contains(c)),
            suffix in "[a-z]{0,10}",
        ) {
            let s = format!("{prefix}{bad}{suffix}");
            prop_assert!(KeyLabel::new(&s).is_err());
        }

        #[test]
        fn too_long_is_rejected(s in "[a-z]{65,200}") {
            prop_assert!(KeyLabel::new(&s).is_err());
        }

        #[test]
        fn parsing_never_panics(s in any::<String>()) {
            let _ = KeyLabel::new(&s);
        }
    }
}
