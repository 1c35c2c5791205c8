//! The client token the bench authenticates with.

use std::fmt;

/// A Sigil (or Vault) client token. It prints as `[redacted]`, so it cannot
/// leak through `Debug` output or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token string.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token's text. Only the clients call this, to put it in the
    /// `X-Vault-Token` header or the `x-sigil-token` metadata key, both
    /// marked sensitive.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let t = Token::new("hvs.secret-token");
        assert_eq!(format!("{t:?}"), "Token([redacted])");
        assert_eq!(t.expose(), "hvs.secret-token");
    }
}
