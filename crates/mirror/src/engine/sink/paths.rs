//! The paths that hold one content (the sink's index by hash, for copies
//! and moves instead of fetches). Almost every content is at one path: that
//! case holds the path itself, not a set (a set per file was ~9 MiB of the
//! hub's memory for a kernel tree).

use std::collections::BTreeSet;

use ganglion_core::RelPath;

#[derive(Debug)]
pub(super) enum PathSet {
    One(RelPath),
    Many(BTreeSet<RelPath>),
}

impl PathSet {
    pub(super) fn insert(&mut self, path: RelPath) {
        match self {
            Self::One(p) if *p == path => {}
            Self::One(p) => {
                let first = p.clone();
                *self = Self::Many(BTreeSet::from([first, path]));
            }
            Self::Many(set) => {
                set.insert(path);
            }
        }
    }

    /// Removes `path`; returns whether no path is left.
    pub(super) fn remove(&mut self, path: &RelPath) -> bool {
        match self {
            Self::One(p) => p == path,
            Self::Many(set) => {
                set.remove(path);
                if set.len() == 1 {
                    let last = set.pop_first().expect("one left");
                    *self = Self::One(last);
                }
                set_is_empty(self)
            }
        }
    }

    pub(super) fn contains(&self, path: &RelPath) -> bool {
        match self {
            Self::One(p) => p == path,
            Self::Many(set) => set.contains(path),
        }
    }

    /// The first path, in path order.
    pub(super) fn first(&self) -> Option<&RelPath> {
        match self {
            Self::One(p) => Some(p),
            Self::Many(set) => set.first(),
        }
    }
}

fn set_is_empty(s: &PathSet) -> bool {
    matches!(s, PathSet::Many(set) if set.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn one_then_many_then_one_then_none() {
        let mut s = PathSet::One(p("b"));
        s.insert(p("b"));
        assert!(matches!(s, PathSet::One(_)));
        s.insert(p("a"));
        assert_eq!(s.first(), Some(&p("a")));
        assert!(s.contains(&p("b")));
        assert!(!s.remove(&p("a")));
        assert!(matches!(&s, PathSet::One(x) if *x == p("b")));
        assert!(!s.remove(&p("zzz")));
        assert!(s.remove(&p("b")));
    }
}
