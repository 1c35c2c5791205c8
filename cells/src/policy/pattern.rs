//! Path patterns: exact paths, trailing-`*` globs and `+` segment wildcards
//! (docs/policies.md, "Paths").

use std::cmp::{Ordering, Reverse};
use std::fmt;

/// A checked path pattern from a `path "..."` block.
///
/// `*` may only be the last character and makes the pattern a prefix; `+`
/// standing alone as a segment matches exactly one segment. A `+` inside a
/// segment (`a+b`) is an ordinary character, as it is when Vault matches.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PathPattern {
    /// As written, without a leading `/`.
    text: String,
    /// Byte offset of the first `+` segment or of the final `*`; the length
    /// of the text for an exact path. Vault's first priority rule.
    first_wildcard: usize,
    glob: bool,
    /// How many `+` segments.
    plus: usize,
}

/// Why a pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PatternError {
    Empty,
    InnerGlob,
    PlusGlob,
    Control,
    Template,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PatternError::Empty => "empty path",
            PatternError::InnerGlob => "'*' is only allowed as the last character",
            PatternError::PlusGlob => "invalid use of wildcards ('+*' is forbidden)",
            PatternError::Control => "control character in path",
            PatternError::Template => "identity templating ('{{') is not supported",
        })
    }
}

impl PathPattern {
    pub(crate) fn parse(raw: &str) -> Result<Self, PatternError> {
        // Vault strips one leading '/': policy paths start after `/v1/`.
        let text = raw.strip_prefix('/').unwrap_or(raw);
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.chars().any(char::is_control) {
            return Err(PatternError::Control);
        }
        if text.contains("{{") {
            return Err(PatternError::Template);
        }
        let glob = text.ends_with('*');
        let body = if glob { &text[..text.len() - 1] } else { text };
        if body.contains('*') {
            return Err(PatternError::InnerGlob);
        }
        let mut plus = 0;
        let mut first_plus = None;
        let mut offset = 0;
        for seg in body.split('/') {
            if seg == "+" {
                plus += 1;
                first_plus.get_or_insert(offset);
            }
            offset += seg.len() + 1;
        }
        // Vault forbids `+*` anywhere, `a+*` included.
        if glob && body.ends_with('+') {
            return Err(PatternError::PlusGlob);
        }
        let first_wildcard = first_plus.unwrap_or(body.len());
        Ok(Self {
            text: text.to_owned(),
            first_wildcard,
            glob,
            plus,
        })
    }

    /// The pattern as written (without a leading `/`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text without the trailing `*`.
    pub fn body(&self) -> &str {
        if self.glob {
            &self.text[..self.text.len() - 1]
        } else {
            &self.text
        }
    }

    /// Ends in `*`.
    pub fn is_glob(&self) -> bool {
        self.glob
    }

    /// Has at least one `+` segment.
    pub fn has_segment_wildcards(&self) -> bool {
        self.plus > 0
    }

    /// No wildcard of either kind.
    pub fn is_exact(&self) -> bool {
        !self.glob && self.plus == 0
    }

    /// Whether the pattern matches `path`, following Vault's
    /// `CheckAllowedFromNonExactPaths`: a `+` takes any one segment, the last
    /// segment of a glob matches by prefix and swallows what follows.
    pub fn matches(&self, path: &str) -> bool {
        let body = self.body();
        if self.plus == 0 {
            return if self.glob {
                path.starts_with(body)
            } else {
                path == body
            };
        }
        let want: Vec<&str> = body.split('/').collect();
        let mut have = path.split('/');
        let last = want.len() - 1;
        for (i, w) in want.iter().enumerate() {
            let Some(h) = have.next() else {
                return false;
            };
            let ok = *w == "+" || *w == h || (self.glob && i == last && h.starts_with(w));
            if !ok {
                return false;
            }
        }
        self.glob || have.next().is_none()
    }

    /// Vault's priority order between two patterns that both match a path
    /// (policies docs, "Priority matching"; `vault/acl.go`): `Greater` means
    /// `self` wins. In order: the later first wildcard wins; a pattern not
    /// ending in `*` beats one that does; fewer `+` segments win; the longer
    /// pattern wins; the lexicographically larger one wins. An exact path
    /// has no wildcard, so it beats every pattern with one.
    pub fn cmp_priority(&self, other: &Self) -> Ordering {
        self.priority_key().cmp(&other.priority_key())
    }

    fn priority_key(&self) -> (usize, bool, Reverse<usize>, usize, &str) {
        let body = self.body();
        let first = if self.is_exact() {
            usize::MAX
        } else {
            self.first_wildcard
        };
        (first, !self.glob, Reverse(self.plus), body.len(), body)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl std::str::FromStr for PathPattern {
    type Err = super::PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).map_err(|e| super::PolicyError::Pattern {
            path: s.to_owned(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathPattern {
        PathPattern::parse(s).expect("valid pattern")
    }

    #[test]
    fn rejects_bad_patterns() {
        assert_eq!(PathPattern::parse(""), Err(PatternError::Empty));
        assert_eq!(PathPattern::parse("/"), Err(PatternError::Empty));
        assert_eq!(PathPattern::parse("a/*/b"), Err(PatternError::InnerGlob));
        assert_eq!(PathPattern::parse("a/**"), Err(PatternError::InnerGlob));
        assert_eq!(PathPattern::parse("a/+*"), Err(PatternError::PlusGlob));
        assert_eq!(PathPattern::parse("+*"), Err(PatternError::PlusGlob));
        assert_eq!(PathPattern::parse("a+*"), Err(PatternError::PlusGlob));
        assert_eq!(PathPattern::parse("a\nb"), Err(PatternError::Control));
        assert_eq!(
            PathPattern::parse("id/{{identity.entity.id}}"),
            Err(PatternError::Template)
        );
        assert_eq!(p("/secret/*").as_str(), "secret/*");
    }

    #[test]
    fn matching() {
        assert!(p("secret/foo").matches("secret/foo"));
        assert!(!p("secret/foo").matches("secret/foo/"));
        assert!(p("secret/*").matches("secret/"));
        assert!(p("secret/*").matches("secret/a/b"));
        assert!(!p("secret/*").matches("secret"));
        assert!(p("*").matches("anything/at/all"));
        assert!(p("secret/+/bar").matches("secret/x/bar"));
        assert!(!p("secret/+/bar").matches("secret/x/bar/baz"));
        assert!(!p("secret/+/bar").matches("secret/bar"));
        assert!(p("secret/+/ba*").matches("secret/x/bar/baz"));
        assert!(!p("secret/+/ba*").matches("secret/x/qux"));
        assert!(p("secret/+/*").matches("secret/x/"));
        assert!(!p("secret/+/*").matches("secret/x"));
        assert!(p("+").matches("sys"));
        assert!(!p("+").matches("sys/mounts"));
        assert!(p("a+b").matches("a+b"));
        assert!(!p("a+b").matches("axb"));
        assert!(p("a+b").is_exact());
    }

    #[test]
    fn priority_follows_vaults_five_rules() {
        let higher = |a: &str, b: &str| {
            assert_eq!(p(a).cmp_priority(&p(b)), Ordering::Greater, "{a} > {b}");
            assert_eq!(p(b).cmp_priority(&p(a)), Ordering::Less, "{b} < {a}");
        };
        // Exact beats everything.
        higher("secret/foo", "secret/*");
        higher("secret/foo", "secret/+");
        // 1. The first wildcard comes later.
        higher("secret/foo/*", "secret/+/bar");
        higher("secret/a*", "secret/+");
        higher("foo/bar/+/baz", "foo/+/bar/baz");
        // 2. Not ending in `*` beats ending in `*`.
        higher("secret/+/bar", "secret/+/ba*");
        higher("foo/+", "foo/*");
        // 3. Fewer `+` segments.
        higher("secret/+/bar/baz", "secret/+/+/baz");
        // 4. Longer.
        higher("secret/+/bar/ba*", "secret/+/bar/b*");
        // 5. Lexicographically larger.
        higher("secret/+/bb", "secret/+/ba");
    }
}
