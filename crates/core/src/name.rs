//! Node names: what operators type, what mirrors are named after on disk.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest node name accepted (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// A node's name: 1–63 characters of `[a-z0-9._-]`, starting with a letter or digit.
///
/// The rules make a name safe as a single path component (`mirrors/<name>/`) and in URLs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("node name is empty")]
    Empty,
    #[error("node name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("node name must start with a lowercase letter or digit")]
    BadStart,
    #[error("node name may contain only lowercase letters, digits, '.', '_' and '-'")]
    BadChar,
}

impl NodeName {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let first = s.chars().next().ok_or(Error::Empty)?;
        if s.len() > MAX_NAME_LEN {
            return Err(Error::TooLong);
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(Error::BadStart);
        }
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
        if !s.chars().all(ok) {
            return Err(Error::BadChar);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::parse(&s)
    }
}

impl From<NodeName> for String {
    fn from(n: NodeName) -> String {
        n.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["local", "n1", "build-box.eu_1", "0"] {
            assert!(NodeName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_unsafe_names() {
        assert_eq!(NodeName::parse(""), Err(Error::Empty));
        assert_eq!(NodeName::parse(".."), Err(Error::BadStart));
        assert_eq!(NodeName::parse("a/b"), Err(Error::BadChar));
        assert_eq!(NodeName::parse("Upper"), Err(Error::BadStart));
        assert_eq!(NodeName::parse("a\0"), Err(Error::BadChar));
        assert_eq!(NodeName::parse(&"a".repeat(64)), Err(Error::TooLong));
    }
}
