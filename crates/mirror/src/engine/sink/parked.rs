//! Notices waiting for an older change above them (see `order.rs`), grouped
//! by the slot they wait for, so that a settled change resumes only what
//! waited for it. An initial sync parks most of the tree behind the
//! directories being created: trying every parked notice again after every
//! commit made it quadratic.
//!
//! A notice may also wait for an older *parked* notice above it: in a deep
//! chain of new directories, each level waits for the one above, so a
//! settled level resumes one notice, not every level below it (which then
//! walked up to the next level in progress, again, per commit: cubic in the
//! depth).

use std::collections::{BTreeMap, BTreeSet};

use ganglion_core::RelPath;

use super::slots::Slots;
use crate::engine::Notice;

/// The slot a notice waits for: its path and its `seq` (a slot replaced by a
/// newer one at the same path no longer holds what waited for the old one).
pub(super) type Blocker = (RelPath, u64);

#[derive(Debug, Default)]
pub(super) struct Parked {
    by_blocker: BTreeMap<Blocker, Vec<Notice>>,
    /// How many parked notices hold each sequence number.
    seqs: BTreeMap<u64, usize>,
    /// The path and seq of every parked notice (a blocker for what is below).
    at: BTreeSet<(RelPath, u64)>,
}

impl Parked {
    pub(super) fn push(&mut self, blocker: Blocker, n: Notice) {
        *self.seqs.entry(n.seq()).or_default() += 1;
        self.at.insert((n.path().clone(), n.seq()));
        self.by_blocker.entry(blocker).or_default().push(n);
    }

    /// Whether a notice at `path` is parked.
    pub(super) fn holds(&self, path: &RelPath) -> bool {
        self.at
            .range((path.clone(), 0)..)
            .next()
            .is_some_and(|(p, _)| p == path)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_blocker.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.by_blocker.clear();
        self.seqs.clear();
        self.at.clear();
    }

    pub(super) fn min_seq(&self) -> Option<u64> {
        self.seqs.keys().next().copied()
    }

    /// The newest parked notice at `path` older than `seq`, if any.
    pub(super) fn older_at(&self, path: &RelPath, seq: u64) -> Option<u64> {
        self.at
            .range((path.clone(), 0)..(path.clone(), seq))
            .next_back()
            .map(|(_, s)| *s)
    }

    /// Takes the notices whose blocker is gone: a slot settled, dropped or
    /// replaced, or a parked notice resumed (it is a slot or gone by then).
    pub(super) fn take_unblocked(&mut self, slots: &Slots) -> Vec<Notice> {
        let gone: Vec<Blocker> = self
            .by_blocker
            .keys()
            .filter(|b| slots.get(&b.0).map(|s| s.seq) != Some(b.1) && !self.at.contains(*b))
            .cloned()
            .collect();
        let mut lists: Vec<Vec<Notice>> = gone
            .iter()
            .filter_map(|b| self.by_blocker.remove(b))
            .collect();
        for n in lists.iter().flatten() {
            self.at.remove(&(n.path().clone(), n.seq()));
            if let Some(c) = self.seqs.get_mut(&n.seq()) {
                *c -= 1;
                if *c == 0 {
                    self.seqs.remove(&n.seq());
                }
            }
        }
        // One list (a directory settled) is handed over as it is; several
        // are joined into one allocation of the right size (an initial sync
        // resumes thousands at once, and growing the list doubled its
        // memory step by step, each step on fresh pages).
        if lists.len() == 1 {
            return lists.pop().unwrap_or_default();
        }
        let mut out = Vec::with_capacity(lists.iter().map(Vec::len).sum());
        for l in lists {
            out.extend(l);
        }
        out
    }
}
