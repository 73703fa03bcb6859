//! The sink's table of changes in progress, indexed so that every event costs
//! O(log n) however many changes are in flight (an initial sync has one per
//! file of the workspace): the lowest sequence number in progress and the
//! directory deletes waiting are kept on the side instead of found by a scan.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use ganglion_core::RelPath;

use super::{Slot, Stage};

#[derive(Debug, Default)]
pub(super) struct Slots {
    map: BTreeMap<RelPath, Slot>,
    /// How many slots hold each sequence number (a slot's `seq` never changes).
    seqs: BTreeMap<u64, usize>,
    /// Paths inserted as [`Stage::Waiting`]; a superset, pruned lazily.
    waiting: BTreeSet<RelPath>,
    /// Bumped whenever a slot goes away: what was parked behind it may resume.
    removals: u64,
    /// Slots in [`Stage::Fetching`] (`mirror status` asks often; counting
    /// them walked every slot, 78k in an initial sync of a kernel tree).
    fetching: usize,
}

fn is_fetching(stage: &Stage) -> bool {
    matches!(stage, Stage::Fetching { .. })
}

impl Deref for Slots {
    type Target = BTreeMap<RelPath, Slot>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Slots {
    pub(super) fn insert(&mut self, path: RelPath, slot: Slot) {
        if matches!(slot.stage, Stage::Waiting { .. }) {
            self.waiting.insert(path.clone());
        }
        *self.seqs.entry(slot.seq).or_default() += 1;
        self.fetching += usize::from(is_fetching(&slot.stage));
        if let Some(old) = self.map.insert(path, slot) {
            self.fetching -= usize::from(is_fetching(&old.stage));
            self.forget(old.seq);
        }
    }

    pub(super) fn remove(&mut self, path: &RelPath) -> Option<Slot> {
        let slot = self.map.remove(path)?;
        self.fetching -= usize::from(is_fetching(&slot.stage));
        self.forget(slot.seq);
        self.waiting.remove(path);
        Some(slot)
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&RelPath, &Slot) -> bool) {
        let gone: Vec<RelPath> = self
            .map
            .iter()
            .filter(|(p, s)| !keep(p, s))
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            self.remove(&p);
        }
    }

    /// Moves the slot at `path` (if any) to `stage`.
    pub(super) fn set_stage(&mut self, path: &RelPath, stage: Stage) {
        if let Some(slot) = self.map.get_mut(path) {
            if matches!(stage, Stage::Waiting { .. }) {
                self.waiting.insert(path.clone());
            }
            self.fetching -= usize::from(is_fetching(&slot.stage));
            self.fetching += usize::from(is_fetching(&stage));
            slot.stage = stage;
        }
    }

    /// Mutable access; the caller must not change `seq`, enter
    /// [`Stage::Waiting`] or enter or leave [`Stage::Fetching`] (use
    /// [`Self::set_stage`]).
    pub(super) fn get_mut(&mut self, path: &RelPath) -> Option<&mut Slot> {
        self.map.get_mut(path)
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.map.values_mut()
    }

    /// How many slots are in [`Stage::Fetching`].
    pub(super) fn fetching(&self) -> usize {
        debug_assert_eq!(
            self.fetching,
            self.map.values().filter(|s| is_fetching(&s.stage)).count(),
            "fetching count out of step"
        );
        self.fetching
    }

    /// The lowest sequence number of any slot.
    pub(super) fn min_seq(&self) -> Option<u64> {
        self.seqs.keys().next().copied()
    }

    /// Paths whose slot waits (a directory delete waiting for the ops below).
    pub(super) fn waiting(&mut self) -> Vec<RelPath> {
        let map = &self.map;
        self.waiting.retain(|p| {
            map.get(p)
                .is_some_and(|s| matches!(s.stage, Stage::Waiting { .. }))
        });
        self.waiting.iter().cloned().collect()
    }

    /// A counter that grows whenever a slot is removed.
    pub(super) fn removals(&self) -> u64 {
        self.removals
    }

    fn forget(&mut self, seq: u64) {
        self.removals += 1;
        if let Some(n) = self.seqs.get_mut(&seq) {
            *n -= 1;
            if *n == 0 {
                self.seqs.remove(&seq);
            }
        }
    }
}
