//! Passwords for database credentials, generated from a policy.
//!
//! A [`PasswordPolicy`] is Vault's password policy reduced to what the
//! database engine needs: a length and a list of [`CharsetRule`]s, each
//! asking for at least `min_chars` characters from its charset. The
//! characters come from the union of the rules' charsets, as in Vault's
//! `random.StringGenerator` when the policy names no top-level charset.
//!
//! Generation builds the password instead of drawing whole strings until one
//! passes the rules (Vault's approach): first each rule's minimum from its own
//! charset, then the rest from the union, then a Fisher–Yates shuffle. That
//! always terminates, even for policies whose rules a random string almost
//! never satisfies (length 4, four single-character charsets). Every draw is
//! uniform by rejection sampling over the system CSPRNG (aws-lc-rs), so no
//! character is favoured by a modulo bias.
//!
//! Passwords end up inside SQL statement templates such as
//! `PASSWORD '{{password}}'`, so a policy may not contain quotes, backslashes
//! or control characters: [`PasswordPolicy::validate`] refuses them, and the
//! PostgreSQL layer checks every password again before substituting it.

use sigil_hsm::SecretString;

/// Shortest password a policy may ask for.
pub const MIN_LENGTH: usize = 4;
/// Longest password a policy may ask for (Vault's limit for policies is
/// higher; 100 is ample for database passwords and keeps statements short).
pub const MAX_LENGTH: usize = 100;

/// Why a policy was refused or a password could not be generated.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasswordError {
    /// The length is outside [`MIN_LENGTH`]..=[`MAX_LENGTH`].
    #[error("password policy length {length} is outside {MIN_LENGTH}..={MAX_LENGTH}")]
    InvalidLength { length: usize },
    /// A policy needs at least one rule, or there is nothing to draw from.
    #[error("password policy has no charset rules")]
    NoRules,
    /// Rule `rule` (zero-based) has an empty charset.
    #[error("password policy rule {rule} has an empty charset")]
    EmptyCharset { rule: usize },
    /// Rule `rule` has a character that could break out of a quoted SQL
    /// literal or identifier, or a control character.
    #[error(
        "password policy rule {rule} has a forbidden character {character:?} (quotes, backslash and control characters are not allowed)"
    )]
    ForbiddenCharacter { rule: usize, character: char },
    /// The rules' minimums add up to more than the length.
    #[error("password policy rules need {required} characters but the length is {length}")]
    MinimumsExceedLength { required: usize, length: usize },
    /// The system random number generator failed; retrying may work.
    #[error("system random number generator failed")]
    Random,
}

/// At least `min_chars` of the password come from `charset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharsetRule {
    /// The characters this rule draws from; duplicates are harmless (they
    /// are removed before drawing, so they do not weigh a character more).
    pub charset: String,
    /// How many characters of the password must come from `charset`.
    pub min_chars: usize,
}

impl CharsetRule {
    /// A rule asking for `min_chars` characters of `charset`.
    pub fn new(charset: impl Into<String>, min_chars: usize) -> Self {
        Self {
            charset: charset.into(),
            min_chars,
        }
    }
}

/// A length and the rules a generated password satisfies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Number of characters (not bytes) in a generated password.
    pub length: usize,
    /// Each rule's minimum holds in every password; the other characters
    /// come from the union of all rules' charsets.
    pub rules: Vec<CharsetRule>,
}

impl Default for PasswordPolicy {
    /// Vault's database engine default: 20 characters, at least one
    /// lowercase letter, one uppercase letter, one digit and one `-`, the
    /// rest from `a-z A-Z 0-9 -`.
    fn default() -> Self {
        Self {
            length: 20,
            rules: vec![
                CharsetRule::new("abcdefghijklmnopqrstuvwxyz", 1),
                CharsetRule::new("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 1),
                CharsetRule::new("0123456789", 1),
                CharsetRule::new("-", 1),
            ],
        }
    }
}

/// Characters a password may never contain: they could end a quoted SQL
/// literal (`'`), a quoted identifier (`"`) or act as an escape (`\`).
fn is_forbidden(c: char) -> bool {
    matches!(c, '\'' | '"' | '\\') || c.is_control()
}

impl PasswordPolicy {
    /// Checks the policy; [`PasswordPolicy::generate`] calls this first.
    pub fn validate(&self) -> Result<(), PasswordError> {
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&self.length) {
            return Err(PasswordError::InvalidLength {
                length: self.length,
            });
        }
        if self.rules.is_empty() {
            return Err(PasswordError::NoRules);
        }
        let mut required = 0usize;
        for (rule, r) in self.rules.iter().enumerate() {
            if r.charset.is_empty() {
                return Err(PasswordError::EmptyCharset { rule });
            }
            if let Some(character) = r.charset.chars().find(|&c| is_forbidden(c)) {
                return Err(PasswordError::ForbiddenCharacter { rule, character });
            }
            required = required.saturating_add(r.min_chars);
        }
        if required > self.length {
            return Err(PasswordError::MinimumsExceedLength {
                required,
                length: self.length,
            });
        }
        Ok(())
    }

    /// A fresh password satisfying every rule, from the system CSPRNG.
    pub fn generate(&self) -> Result<SecretString, PasswordError> {
        self.generate_with(&mut Picker::system())
    }

    fn generate_with<F>(&self, picker: &mut Picker<F>) -> Result<SecretString, PasswordError>
    where
        F: FnMut(&mut [u8]) -> Result<(), PasswordError>,
    {
        self.validate()?;
        let charsets: Vec<Vec<char>> = self.rules.iter().map(|r| dedup(&r.charset)).collect();
        let union = dedup(
            &self
                .rules
                .iter()
                .map(|r| r.charset.as_str())
                .collect::<String>(),
        );

        // The password is held as chars until the end so it can be built in
        // one exactly-sized allocation: a growing `String` would leave
        // unzeroized copies of the prefix behind in freed memory.
        let mut chars: Vec<char> = Vec::with_capacity(self.length);
        for (rule, set) in self.rules.iter().zip(&charsets) {
            for _ in 0..rule.min_chars {
                chars.push(set[picker.below(set.len())?]);
            }
        }
        while chars.len() < self.length {
            chars.push(union[picker.below(union.len())?]);
        }
        // Fisher–Yates (Knuth, TAOCP vol. 2, algorithm P): every permutation
        // equally likely, so the rule characters are not at the front.
        for i in (1..chars.len()).rev() {
            let j = picker.below(i + 1)?;
            chars.swap(i, j);
        }

        let bytes: usize = chars.iter().map(|c| c.len_utf8()).sum();
        let mut password = String::with_capacity(bytes);
        password.extend(chars.iter());
        // Best effort: overwrite the intermediate copy before freeing it.
        // `black_box` keeps the compiler from dropping the dead stores.
        chars.fill('\0');
        std::hint::black_box(&chars);
        Ok(SecretString::new(password))
    }
}

/// The distinct characters of `s`, in order of first appearance.
fn dedup(s: &str) -> Vec<char> {
    let mut out: Vec<char> = Vec::with_capacity(s.len());
    for c in s.chars() {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Uniform choices from a byte source, by rejection sampling.
///
/// Reads random bytes in blocks so that a 20-character password costs one
/// call into the RNG rather than forty.
pub(crate) struct Picker<F> {
    fill: F,
    buf: [u8; 128],
    pos: usize,
}

impl Picker<fn(&mut [u8]) -> Result<(), PasswordError>> {
    /// A picker over aws-lc-rs's system CSPRNG.
    pub(crate) fn system() -> Self {
        fn fill(buf: &mut [u8]) -> Result<(), PasswordError> {
            aws_lc_rs::rand::fill(buf).map_err(|_| PasswordError::Random)
        }
        Picker::new(fill)
    }
}

impl<F> Picker<F>
where
    F: FnMut(&mut [u8]) -> Result<(), PasswordError>,
{
    fn new(fill: F) -> Self {
        Self {
            fill,
            buf: [0; 128],
            pos: 128,
        }
    }

    fn next_u32(&mut self) -> Result<u32, PasswordError> {
        if self.pos + 4 > self.buf.len() {
            (self.fill)(&mut self.buf)?;
            self.pos = 0;
        }
        let mut word = [0u8; 4];
        word.copy_from_slice(&self.buf[self.pos..self.pos + 4]);
        self.buf[self.pos..self.pos + 4].fill(0);
        self.pos += 4;
        Ok(u32::from_le_bytes(word))
    }

    /// A uniform integer in `0..n`. `n` must be at least 1 and fit in u32.
    ///
    /// Draws below the largest multiple of `n` that fits in 2^32 are kept
    /// and reduced modulo `n`; the rest are redrawn, so every residue has
    /// the same number of preimages. At most half of the draws are rejected
    /// for any `n`, so the loop ends quickly.
    pub(crate) fn below(&mut self, n: usize) -> Result<usize, PasswordError> {
        let n = u32::try_from(n).map_err(|_| PasswordError::Random)?.max(1);
        let span = 1u64 << 32;
        let limit = span - span % u64::from(n);
        loop {
            let x = self.next_u32()?;
            if u64::from(x) < limit {
                return Ok((x % n) as usize);
            }
        }
    }
}

impl<F> Drop for Picker<F> {
    fn drop(&mut self) {
        // Unused random bytes predict nothing already handed out, but there
        // is no reason to leave them around either.
        self.buf.fill(0);
        std::hint::black_box(&self.buf);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn count_in(s: &str, set: &str) -> usize {
        s.chars().filter(|c| set.contains(*c)).count()
    }

    #[test]
    fn default_policy_is_vaults() {
        let p = PasswordPolicy::default();
        assert_eq!(p.length, 20);
        assert_eq!(p.rules.len(), 4);
        assert!(p.rules.iter().all(|r| r.min_chars == 1));
        p.validate().unwrap();
    }

    #[test]
    fn minimums_hold_across_many_generations() {
        let policy = PasswordPolicy {
            length: 12,
            rules: vec![
                CharsetRule::new("abcdefghijklmnopqrstuvwxyz", 2),
                CharsetRule::new("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 3),
                CharsetRule::new("0123456789", 4),
                CharsetRule::new("-_", 1),
            ],
        };
        for _ in 0..2000 {
            let pw = policy.generate().unwrap();
            let pw = pw.expose();
            assert_eq!(pw.chars().count(), 12);
            assert!(count_in(pw, "abcdefghijklmnopqrstuvwxyz") >= 2, "{pw}");
            assert!(count_in(pw, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") >= 3, "{pw}");
            assert!(count_in(pw, "0123456789") >= 4, "{pw}");
            assert!(count_in(pw, "-_") >= 1, "{pw}");
        }
        let default = PasswordPolicy::default();
        for _ in 0..2000 {
            let pw = default.generate().unwrap();
            let pw = pw.expose();
            assert_eq!(pw.len(), 20);
            assert!(pw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
            for set in [
                "abcdefghijklmnopqrstuvwxyz",
                "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                "0123456789",
                "-",
            ] {
                assert!(count_in(pw, set) >= 1, "{pw} lacks {set}");
            }
        }
    }

    #[test]
    fn tight_policy_terminates_and_is_exact() {
        let policy = PasswordPolicy {
            length: 4,
            rules: vec![
                CharsetRule::new("a", 1),
                CharsetRule::new("B", 1),
                CharsetRule::new("7", 1),
                CharsetRule::new("-", 1),
            ],
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let pw = policy.generate().unwrap();
            let mut sorted: Vec<char> = pw.expose().chars().collect();
            seen.insert(pw.expose().to_owned());
            sorted.sort_unstable();
            assert_eq!(sorted, vec!['-', '7', 'B', 'a']);
        }
        // 24 permutations; 500 draws miss one with probability < 24*(23/24)^500.
        assert_eq!(seen.len(), 24);
    }

    /// Chi-square of character counts against the exact expectation of the
    /// construction (rule minimums plus a uniform fill). 20k passwords give
    /// 400k characters; with 62 degrees of freedom the statistic has mean 62
    /// and standard deviation ~11, so a bound of 200 is > 12 sigma away: a
    /// fair generator cannot fail it, while a modulo bias or a broken
    /// shuffle shows up in the hundreds or thousands.
    #[test]
    fn distribution_is_roughly_uniform() {
        let policy = PasswordPolicy::default();
        let draws = 20_000usize;
        let mut counts: HashMap<char, usize> = HashMap::new();
        let mut first: HashMap<char, usize> = HashMap::new();
        for _ in 0..draws {
            let pw = policy.generate().unwrap();
            for c in pw.expose().chars() {
                *counts.entry(c).or_default() += 1;
            }
            if let Some(c) = pw.expose().chars().next() {
                *first.entry(c).or_default() += 1;
            }
        }
        let union = dedup("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-");
        let fill = (policy.length - 4) as f64;
        let expected = |c: char| -> f64 {
            let rule_share = policy
                .rules
                .iter()
                .filter(|r| r.charset.contains(c))
                .map(|r| r.min_chars as f64 / r.charset.chars().count() as f64)
                .sum::<f64>();
            draws as f64 * (rule_share + fill / union.len() as f64)
        };
        let chi: f64 = union
            .iter()
            .map(|&c| {
                let e = expected(c);
                let o = *counts.get(&c).unwrap_or(&0) as f64;
                (o - e) * (o - e) / e
            })
            .sum();
        assert!(chi < 200.0, "chi-square {chi} over all positions");

        // After the shuffle every position has the same marginal: the first
        // character's distribution is the overall one divided by length.
        let chi_first: f64 = union
            .iter()
            .map(|&c| {
                let e = expected(c) / policy.length as f64;
                let o = *first.get(&c).unwrap_or(&0) as f64;
                (o - e) * (o - e) / e
            })
            .sum();
        assert!(chi_first < 200.0, "chi-square {chi_first} at position 0");
    }

    #[test]
    fn bad_policies_are_refused() {
        let rule = |s: &str, n| CharsetRule::new(s, n);
        let cases = [
            (
                PasswordPolicy {
                    length: 3,
                    rules: vec![rule("a", 1)],
                },
                PasswordError::InvalidLength { length: 3 },
            ),
            (
                PasswordPolicy {
                    length: 101,
                    rules: vec![rule("a", 1)],
                },
                PasswordError::InvalidLength { length: 101 },
            ),
            (
                PasswordPolicy {
                    length: 8,
                    rules: vec![],
                },
                PasswordError::NoRules,
            ),
            (
                PasswordPolicy {
                    length: 8,
                    rules: vec![rule("ab", 1), rule("", 0)],
                },
                PasswordError::EmptyCharset { rule: 1 },
            ),
            (
                PasswordPolicy {
                    length: 8,
                    rules: vec![rule("ab'", 1)],
                },
                PasswordError::ForbiddenCharacter {
                    rule: 0,
                    character: '\'',
                },
            ),
            (
                PasswordPolicy {
                    length: 8,
                    rules: vec![rule("ab\"", 1)],
                },
                PasswordError::ForbiddenCharacter {
                    rule: 0,
                    character: '"',
                },
            ),
            (
                PasswordPolicy {
                    length: 8,
                    rules: vec![rule("a\\b", 1)],
                },
                PasswordError::ForbiddenCharacter {
                    rule: 0,
                    character: '\\',
                },
            ),
            (
                PasswordPolicy {
                    length: 8,
                    rules: vec![rule("a\nb", 1)],
                },
                PasswordError::ForbiddenCharacter {
                    rule: 0,
                    character: '\n',
                },
            ),
            (
                PasswordPolicy {
                    length: 8,
                    rules: vec![rule("a\0b", 1)],
                },
                PasswordError::ForbiddenCharacter {
                    rule: 0,
                    character: '\0',
                },
            ),
            (
                PasswordPolicy {
                    length: 8,
                    rules: vec![rule("ab", 5), rule("cd", 4)],
                },
                PasswordError::MinimumsExceedLength {
                    required: 9,
                    length: 8,
                },
            ),
        ];
        for (policy, want) in cases {
            assert_eq!(policy.validate(), Err(want.clone()));
            assert_eq!(policy.generate().err(), Some(want));
        }
    }

    #[test]
    fn unicode_charsets_work() {
        let policy = PasswordPolicy {
            length: 10,
            rules: vec![CharsetRule::new("äöü€", 3), CharsetRule::new("xyz", 0)],
        };
        let pw = policy.generate().unwrap();
        assert_eq!(pw.expose().chars().count(), 10);
        assert!(count_in(pw.expose(), "äöü€") >= 3);
    }

    #[test]
    fn rejection_sampling_redraws_the_biased_tail() {
        // n = 3: 2^32 % 3 == 1, so only u32::MAX is rejected. Feed it first,
        // then 5: the picker must skip the first word and answer 5 % 3.
        let mut words = vec![u32::MAX, 5u32].into_iter().cycle();
        let mut picker = Picker::new(|buf: &mut [u8]| {
            for chunk in buf.chunks_mut(4) {
                chunk.copy_from_slice(&words.next().unwrap_or(0).to_le_bytes());
            }
            Ok(())
        });
        assert_eq!(picker.below(3).unwrap(), 2);
        // A failing RNG is an error, not a panic or a weak password.
        let mut broken = Picker::new(|_: &mut [u8]| Err(PasswordError::Random));
        assert_eq!(broken.below(10), Err(PasswordError::Random));
        let policy = PasswordPolicy::default();
        assert_eq!(
            policy.generate_with(&mut broken).err(),
            Some(PasswordError::Random)
        );
    }
}
