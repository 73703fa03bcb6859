//! Hub-owned (immutable) paths of one node's mirror: gitignore-style globs,
//! versioned, held in memory. Changes from the node under them are refused.

use std::fmt;

use ganglion_core::RelPath;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid immutable-path pattern")]
    Pattern {
        pattern: String,
        source: ignore::Error,
    },
}

/// A versioned set of gitignore-style patterns. A path matches if it or any of
/// its parents matches (a pattern naming a directory covers everything below).
#[derive(Clone)]
pub struct ImmutablePaths {
    version: u64,
    patterns: Vec<String>,
    matcher: Gitignore,
}

impl Default for ImmutablePaths {
    fn default() -> Self {
        Self {
            version: 0,
            patterns: Vec::new(),
            matcher: Gitignore::empty(),
        }
    }
}

impl fmt::Debug for ImmutablePaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImmutablePaths")
            .field("version", &self.version)
            .field("patterns", &self.patterns)
            .finish()
    }
}

impl ImmutablePaths {
    pub fn new(version: u64, patterns: Vec<String>) -> Result<Self, Error> {
        // Root "." makes the matcher take our relative paths as they are.
        let mut b = GitignoreBuilder::new(".");
        for p in &patterns {
            b.add_line(None, p).map_err(|source| Error::Pattern {
                pattern: p.clone(),
                source,
            })?;
        }
        let matcher = b.build().map_err(|source| Error::Pattern {
            pattern: patterns.join("\n"),
            source,
        })?;
        Ok(Self {
            version,
            patterns,
            matcher,
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// A new version with `pattern` added (no-op if present).
    pub fn with_added(&self, pattern: &str) -> Result<Self, Error> {
        let mut p = self.patterns.clone();
        if !p.iter().any(|x| x == pattern) {
            p.push(pattern.to_owned());
        }
        Self::new(self.version + 1, p)
    }

    /// A new version with `pattern` removed.
    pub fn with_removed(&self, pattern: &str) -> Result<Self, Error> {
        let p = self
            .patterns
            .iter()
            .filter(|x| *x != pattern)
            .cloned()
            .collect();
        Self::new(self.version + 1, p)
    }

    pub fn matches(&self, path: &RelPath, is_dir: bool) -> bool {
        !self.patterns.is_empty()
            && self
                .matcher
                .matched_path_or_any_parents(path.as_str(), is_dir)
                .is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn gitignore_semantics() {
        let set = ImmutablePaths::new(
            1,
            vec![
                "secrets/".into(),
                "*.lock".into(),
                "!keep.lock".into(),
                "/top.txt".into(),
            ],
        )
        .unwrap();
        assert!(set.matches(&p("secrets/a/b"), false));
        assert!(set.matches(&p("secrets"), true));
        assert!(set.matches(&p("x/Cargo.lock"), false));
        assert!(!set.matches(&p("keep.lock"), false));
        assert!(set.matches(&p("top.txt"), false));
        assert!(!set.matches(&p("a/top.txt"), false));
        assert!(!set.matches(&p("src/main.rs"), false));
    }

    #[test]
    fn versions_move_forward() {
        let s = ImmutablePaths::default()
            .with_added("a/")
            .unwrap()
            .with_added("b")
            .unwrap();
        assert_eq!(s.version(), 2);
        let s = s.with_removed("a/").unwrap();
        assert_eq!(s.version(), 3);
        assert!(!s.matches(&p("a/x"), false));
        assert!(s.matches(&p("b"), false));
    }
}
