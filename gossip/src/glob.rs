//! Vault-style glob matching, as `github.com/ryanuber/go-glob` does it for
//! `bound_subject`, `bound_claims_type = "glob"` and friends; also how a
//! segment of a revocation's identity pattern matches.
//!
//! The only metacharacter is `*`, which matches any run of characters (the
//! empty run and `/` included); every other character, `?` and `[` among
//! them, is literal. Keeping exactly go-glob's semantics matters because
//! role configurations are copied verbatim from Vault.

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
///
/// Runs in `O(|pattern| + |text|)`-ish time: the literal pieces between stars
/// are matched leftmost-first with `str::find` (two-way search, linear), and
/// because a star can absorb anything, taking the leftmost occurrence of each
/// middle piece never loses a match. There is no backtracking, so patterns
/// such as `*a*a*a*b` cannot blow up.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    // `split` always yields at least one piece.
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    // With no star at all, the prefix must be the whole text.
    let Some(last) = pieces.next_back() else {
        return rest.is_empty();
    };
    for middle in pieces {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    // The final piece is anchored at the end and must not overlap what the
    // middle pieces consumed.
    rest.ends_with(last)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::glob_match;

    #[test]
    fn literal_patterns_match_exactly() {
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(glob_match("abc", "abc"));
        assert!(!glob_match("abc", "abcd"));
        assert!(!glob_match("abc", "ab"));
        // `?` and classes are literal, as in go-glob.
        assert!(glob_match("a?c", "a?c"));
        assert!(!glob_match("a?c", "abc"));
        assert!(glob_match("[ab]", "[ab]"));
        assert!(!glob_match("[ab]", "a"));
    }

    #[test]
    fn star_matches_any_run_including_slash_and_empty() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything/at/all"));
        assert!(glob_match("**", "x"));
        assert!(glob_match("a*", "a"));
        assert!(glob_match("*a", "a"));
        assert!(glob_match("a*b", "ab"));
        assert!(glob_match("a*b", "a/x/y/b"));
        assert!(!glob_match("a*b", "a/x/y/bc"));
        assert!(!glob_match("a*b", "ba"));
        assert!(glob_match("*middle*", "in the middle of it"));
        assert!(!glob_match("*middle*", "in the midle of it"));
    }

    #[test]
    fn spiffe_ids() {
        let pattern = "spiffe://prod.example/ns/payments/*";
        assert!(glob_match(
            pattern,
            "spiffe://prod.example/ns/payments/sa/api"
        ));
        assert!(glob_match(pattern, "spiffe://prod.example/ns/payments/"));
        assert!(!glob_match(pattern, "spiffe://prod.example/ns/payments"));
        assert!(!glob_match(
            pattern,
            "spiffe://prod.example/ns/billing/sa/api"
        ));
        assert!(!glob_match(
            pattern,
            "spiffe://staging.example/ns/payments/sa/api"
        ));
        assert!(glob_match(
            "spiffe://*.example/ns/*/sa/default",
            "spiffe://prod.example/ns/payments/sa/default"
        ));
    }

    #[test]
    fn pieces_do_not_overlap() {
        // The suffix may not reuse characters the prefix consumed.
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("ab*ba", "abba"));
        assert!(!glob_match("a*aa*a", "aaa"));
        assert!(glob_match("a*aa*a", "aaaa"));
    }

    #[test]
    fn multibyte_text_is_handled() {
        assert!(glob_match("é*ü", "éaü"));
        assert!(glob_match("*ü", "ü"));
        assert!(!glob_match("é*ü", "éa"));
    }

    #[test]
    fn pathological_patterns_finish_quickly() {
        // A backtracking matcher takes exponential time on these.
        let text = "a".repeat(50_000);
        let pattern = format!("{}b", "*a".repeat(500));
        assert!(!glob_match(&pattern, &text));
        assert!(glob_match(&format!("{}*", "*a".repeat(500)), &text));
    }
}
