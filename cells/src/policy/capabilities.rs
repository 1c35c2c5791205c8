//! The set of capabilities a path rule grants, as a bitset.

use std::fmt;
use std::ops::BitOr;

use crate::logical::Operation;

/// A set of capabilities. `deny` absorbs everything else: a set that holds
/// it holds nothing more, the way Vault stores an explicit deny
/// (`vault/policy.go`, "If it's deny, don't include any other capability").
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u16);

/// Every capability with its policy name, in Vault's canonical order: the
/// alphabetical order `sys/capabilities` answers in (Vault sorts the list).
const NAMED: [(Capabilities, &str); 8] = [
    (Capabilities::CREATE, "create"),
    (Capabilities::DELETE, "delete"),
    (Capabilities::DENY, "deny"),
    (Capabilities::LIST, "list"),
    (Capabilities::PATCH, "patch"),
    (Capabilities::READ, "read"),
    (Capabilities::SUDO, "sudo"),
    (Capabilities::UPDATE, "update"),
];

impl Capabilities {
    pub const NONE: Self = Self(0);
    pub const DENY: Self = Self(1 << 0);
    pub const CREATE: Self = Self(1 << 1);
    pub const READ: Self = Self(1 << 2);
    pub const UPDATE: Self = Self(1 << 3);
    pub const DELETE: Self = Self(1 << 4);
    pub const LIST: Self = Self(1 << 5);
    pub const SUDO: Self = Self(1 << 6);
    pub const PATCH: Self = Self(1 << 7);
    /// Everything but `deny`: what the root token holds.
    pub const ALL: Self = Self(0b1111_1110);

    /// The capability named `name` in a policy, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        NAMED.iter().find(|(_, n)| *n == name).map(|(c, _)| *c)
    }

    /// The capability an operation needs (Vault's `AllowOperation`).
    pub fn for_operation(op: Operation) -> Self {
        match op {
            Operation::Read => Self::READ,
            Operation::List => Self::LIST,
            Operation::Create => Self::CREATE,
            Operation::Update => Self::UPDATE,
            Operation::Patch => Self::PATCH,
            Operation::Delete => Self::DELETE,
        }
    }

    /// Whether every capability in `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn is_deny(self) -> bool {
        self.contains(Self::DENY)
    }

    /// Both sets together, except that `deny` on either side leaves only
    /// `deny`.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        let both = Self(self.0 | other.0);
        if both.is_deny() { Self::DENY } else { both }
    }

    /// The names of the capabilities held, in canonical order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        NAMED
            .into_iter()
            .filter(move |(c, _)| self.contains(*c))
            .map(|(_, n)| n)
    }
}

impl BitOr for Capabilities {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

/// `create, read` style; an empty set prints as `none`.
impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities[{self}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_absorbs_the_rest() {
        let rw = Capabilities::READ | Capabilities::UPDATE;
        assert!(rw.contains(Capabilities::READ));
        assert!(!rw.contains(Capabilities::READ | Capabilities::LIST));
        assert_eq!(rw | Capabilities::DENY, Capabilities::DENY);
        assert_eq!(Capabilities::DENY.union(rw), Capabilities::DENY);
    }

    #[test]
    fn names_are_in_canonical_order_and_round_trip() {
        let all: Vec<_> = Capabilities::ALL.names().collect();
        assert_eq!(
            all,
            [
                "create", "delete", "list", "patch", "read", "sudo", "update"
            ]
        );
        for (c, name) in NAMED {
            assert_eq!(Capabilities::from_name(name), Some(c));
        }
        assert_eq!(Capabilities::from_name("root"), None);
        assert_eq!(Capabilities::from_name("Read"), None);
        assert_eq!(
            (Capabilities::UPDATE | Capabilities::READ).to_string(),
            "read, update"
        );
        assert_eq!(Capabilities::NONE.to_string(), "none");
    }
}
