//! Relative paths that cross the wire: normalised, and confined to their root by
//! construction.
//!
//! A [`RelPath`] is valid UTF-8, `/`-separated, never absolute, and has no empty,
//! `.` or `..` component, no NUL and no backslash; it is at most [`MAX_PATH`]
//! bytes and [`MAX_DEPTH`] components long. Names that are not UTF-8 cannot
//! be represented: the node skips such files and reports them (documented in the
//! README), instead of guessing an encoding.
//! Confinement against symlinks is the filesystem layer's job (openat-style, via
//! `cap-std`); this type only guarantees the path text cannot climb out.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest single component, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT: usize = 255;
/// Longest whole path, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Most components in a path. Real trees stay far below (a kernel tree ~12,
/// nested `node_modules` a few dozen); a deeper one is refused rather than
/// costing every change below it a walk over that many parents.
pub const MAX_DEPTH: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("path is empty")]
    Empty,
    #[error("path is absolute")]
    Absolute,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path climbs out of its root with '..'")]
    DotDot,
    #[error("path has an empty or '.' component")]
    NotNormal,
    #[error("path component is longer than {MAX_COMPONENT} bytes")]
    ComponentTooLong,
    #[error("path is longer than {MAX_PATH} bytes")]
    TooLong,
    #[error("path is deeper than {MAX_DEPTH} components")]
    TooDeep,
}

impl RelPath {
    /// Parses a path strictly: the text must already be normal.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.is_empty() {
            return Err(Error::Empty);
        }
        if s.len() > MAX_PATH {
            return Err(Error::TooLong);
        }
        if s.contains('\0') {
            return Err(Error::Nul);
        }
        if s.contains('\\') {
            return Err(Error::Backslash);
        }
        if s.starts_with('/') {
            return Err(Error::Absolute);
        }
        for (i, c) in s.split('/').enumerate() {
            if i == MAX_DEPTH {
                return Err(Error::TooDeep);
            }
            match c {
                ".." => return Err(Error::DotDot),
                "" | "." => return Err(Error::NotNormal),
                c if c.len() > MAX_COMPONENT => return Err(Error::ComponentTooLong),
                _ => {}
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// Parses what a person typed: tolerates `./`, repeated and trailing slashes,
    /// still refuses anything that climbs out or is absolute. `""` and `"."` are
    /// the root, returned as `None`.
    pub fn parse_lenient(s: &str) -> Result<Option<Self>, Error> {
        if s.starts_with('/') {
            return Err(Error::Absolute);
        }
        let parts: Vec<&str> = s
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if parts.is_empty() {
            return Ok(None);
        }
        Self::parse(&parts.join("/")).map(Some)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The parent path, `None` at the top level.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(p.to_owned()))
    }

    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    pub fn join(&self, name: &str) -> Result<RelPath, Error> {
        Self::parse(&format!("{}/{name}", self.0))
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

impl TryFrom<String> for RelPath {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::parse(&s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        for ok in ["a", "a/b", "a/b.c", ".hidden/x", "a..b", "é/ü"] {
            assert_eq!(RelPath::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_hostile_paths() {
        assert_eq!(RelPath::parse(""), Err(Error::Empty));
        assert_eq!(RelPath::parse("/etc/passwd"), Err(Error::Absolute));
        assert_eq!(RelPath::parse("../x"), Err(Error::DotDot));
        assert_eq!(RelPath::parse("a/../../x"), Err(Error::DotDot));
        assert_eq!(RelPath::parse("a\\..\\x"), Err(Error::Backslash));
        assert_eq!(RelPath::parse("a\0b"), Err(Error::Nul));
        assert_eq!(RelPath::parse("a//b"), Err(Error::NotNormal));
        assert_eq!(RelPath::parse("./a"), Err(Error::NotNormal));
        assert_eq!(RelPath::parse("a/"), Err(Error::NotNormal));
        assert_eq!(
            RelPath::parse(&"x".repeat(256)),
            Err(Error::ComponentTooLong)
        );
        assert_eq!(RelPath::parse(&["x"; 3000].join("/")), Err(Error::TooLong));
        assert_eq!(
            RelPath::parse(&["x"; MAX_DEPTH + 1].join("/")),
            Err(Error::TooDeep)
        );
        assert!(RelPath::parse(&["x"; MAX_DEPTH].join("/")).is_ok());
        let deep = RelPath::parse(&["x"; MAX_DEPTH].join("/")).unwrap();
        assert_eq!(deep.join("y"), Err(Error::TooDeep));
        assert_eq!(
            RelPath::parse_lenient(&["x"; MAX_DEPTH + 1].join("/")),
            Err(Error::TooDeep)
        );
    }

    #[test]
    fn lenient_parse_is_still_confined() {
        assert_eq!(
            RelPath::parse_lenient("./a//b/").unwrap().unwrap().as_str(),
            "a/b"
        );
        assert_eq!(RelPath::parse_lenient(".").unwrap(), None);
        assert_eq!(RelPath::parse_lenient("a/../.."), Err(Error::DotDot));
        assert_eq!(RelPath::parse_lenient("/a"), Err(Error::Absolute));
    }

    #[test]
    fn prefix_is_by_component() {
        let a = RelPath::parse("a/b").unwrap();
        assert!(a.starts_with(&RelPath::parse("a").unwrap()));
        assert!(
            !RelPath::parse("ab")
                .unwrap()
                .starts_with(&RelPath::parse("a").unwrap())
        );
        assert_eq!(a.parent().unwrap().as_str(), "a");
        assert_eq!(a.file_name(), "b");
    }
}
