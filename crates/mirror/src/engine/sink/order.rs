//! Ordering rules of the sink: which change waits for which.
//!
//! - A change below a path with an older change in progress waits (parked)
//!   until that change settles; changes resume oldest first.
//! - A change that replaces a subtree (a delete, or a path becoming a file or
//!   a link: the commit removes what was below) cancels fetches and retries
//!   below it (holding back their acknowledgement until it commits) and waits
//!   for commits in flight below it. Older changes below may still start while
//!   it waits; they go first.
//! - A change older than a parent's newer file/link state is obsolete, and so
//!   is one older than a subtree replacement being committed above it.

use ganglion_core::RelPath;

use super::parked::Blocker;
use super::{SinkAction, SinkEngine, Slot, Stage};
use crate::engine::{Content, Notice, Op};
use crate::entry::{Entry, EntryKind};

/// Whether committing `op` removes whatever lies below its path.
fn replaces_subtree(op: &Op) -> bool {
    !matches!(op, Op::Mkdir { .. })
}

/// Whether the slot's op, once committed, removes whatever lies below it
/// (a delete, the source of a move, or a file or link).
fn slot_replaces_subtree(slot: &Slot) -> bool {
    slot.entry.as_ref().is_none_or(|e| e.kind != EntryKind::Dir)
}

impl SinkEngine {
    /// The stage of a slot whose op is ready: committing (the op is queued),
    /// or waiting if it replaces a subtree with commits still in flight
    /// below. Fetches and retries below such an op are cancelled first.
    pub(super) fn apply_or_wait(
        &mut self,
        path: &RelPath,
        op: Op,
        out: &mut Vec<SinkAction>,
    ) -> Stage {
        if replaces_subtree(&op) {
            self.cancel_below(path, out);
            if self.busy_below(path) {
                return Stage::Waiting { op: Box::new(op) };
            }
        }
        out.push(SinkAction::Apply(op));
        Stage::Committing
    }

    /// On disconnect, waiting ops are dropped with the fetches (the node
    /// resends them): the staged content of a waiting write is discarded.
    /// (A move never waits: see the rename check in `notice`.)
    pub(super) fn drop_waiting(&mut self, out: &mut Vec<SinkAction>) {
        for p in self.slots.waiting() {
            if let Some(Slot {
                stage: Stage::Waiting { op },
                ..
            }) = self.slots.get(&p)
                && let Op::Write {
                    entry,
                    content: Content::Staged,
                } = &**op
                && let Some(hash) = entry.hash
            {
                out.push(SinkAction::Discard { path: p, hash });
            }
        }
    }

    /// Whether an immutable entry lies below `path`.
    pub(super) fn immutable_below(&self, path: &RelPath) -> bool {
        self.below(path)
            .any(|(p, e)| self.immutable.matches(p, e.kind == EntryKind::Dir))
    }

    pub(super) fn below<'a>(
        &'a self,
        path: &'a RelPath,
    ) -> impl Iterator<Item = (&'a RelPath, &'a Entry)> + 'a {
        self.entries
            .range(path.clone()..)
            .filter(move |(p, _)| *p != path)
            .take_while(move |(p, _)| p.as_str().starts_with(path.as_str()))
            .filter(move |(p, _)| p.starts_with(path))
    }

    pub(super) fn remove_subtree(&mut self, path: &RelPath) {
        let below: Vec<RelPath> = self.below(path).map(|(p, _)| p.clone()).collect();
        for p in below {
            self.remove(&p);
        }
        self.remove(path);
    }

    /// Whether a parent of `path` became a file or link after `seq`, or a
    /// newer subtree replacement (delete, file, link) is being committed at a
    /// parent: the notice is older than that state, which removes everything
    /// below it. Started now, it would land after it, or outlive it as a
    /// fetch the node can no longer serve.
    /// (A newer *directory* proves nothing: a delete and re-create of a
    /// directory reach the hub as one upsert, so older deletes below still count.)
    pub(super) fn superseded_above(&self, path: &RelPath, seq: u64) -> bool {
        let mut cur = path.parent();
        while let Some(p) = cur {
            if self
                .entries
                .get(&p)
                .is_some_and(|e| e.kind != EntryKind::Dir && super::notice::node_seq(e) > seq)
            {
                return true;
            }
            if self.slots.get(&p).is_some_and(|s| {
                s.seq > seq && s.stage == Stage::Committing && slot_replaces_subtree(s)
            }) {
                return true;
            }
            cur = p.parent();
        }
        false
    }

    /// The older change in progress nearest above `path`, if any: it goes
    /// first (a directory delete, or a file becoming a directory). An older
    /// change below a delete goes first instead; the delete waits for it.
    /// An older notice parked above counts too: it starts (or is dropped)
    /// before this one is tried again.
    pub(super) fn blocker_above(&self, path: &RelPath, seq: u64) -> Option<Blocker> {
        let mut cur = path.parent();
        while let Some(p) = cur {
            if let Some(s) = self.slots.get(&p)
                && s.seq < seq
            {
                return Some((p, s.seq));
            }
            if let Some(s) = self.parked.older_at(&p, seq) {
                return Some((p, s));
            }
            cur = p.parent();
        }
        None
    }

    /// Drops fetches and retries below `path`: its delete supersedes them.
    /// Commits in flight below it cannot be cancelled; the delete waits for them.
    pub(super) fn cancel_below(&mut self, path: &RelPath, out: &mut Vec<SinkAction>) {
        let doomed: Vec<RelPath> = self
            .slots
            .range(path.clone()..)
            .filter(|(p, _)| *p != path)
            .take_while(|(p, _)| p.as_str().starts_with(path.as_str()))
            .filter(|(p, s)| {
                p.starts_with(path)
                    && matches!(s.stage, Stage::Fetching { .. } | Stage::Retry { .. })
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            let Some(slot) = self.slots.remove(&p) else {
                continue;
            };
            let held = self.held.entry(path.clone()).or_insert(slot.seq);
            *held = (*held).min(slot.seq);
            if let Stage::Fetching { hash, .. } = slot.stage {
                out.push(SinkAction::Discard { path: p, hash });
            }
        }
    }

    /// Whether an op below `path` is still in progress.
    pub(super) fn busy_below(&self, path: &RelPath) -> bool {
        self.slots
            .range(path.clone()..)
            .filter(|(p, _)| *p != path)
            .take_while(|(p, _)| p.as_str().starts_with(path.as_str()))
            .any(|(p, s)| {
                p.starts_with(path) && matches!(s.stage, Stage::Committing | Stage::Waiting { .. })
            })
    }

    /// Issues waiting subtree replacements whose subtree has settled.
    pub(super) fn wake_waiting(&mut self, out: &mut Vec<SinkAction>) {
        let waiting = self.slots.waiting();
        if waiting.is_empty() {
            return;
        }
        // Fetches below a waiting delete (older changes that started after
        // it) would hold it forever if the node no longer has their content.
        for p in &waiting {
            self.cancel_below(p, out);
        }
        let ready: Vec<RelPath> = waiting
            .into_iter()
            .filter(|p| !self.busy_below(p))
            .collect();
        for p in ready {
            if let Some(slot) = self.slots.get_mut(&p)
                && let Stage::Waiting { op } = std::mem::replace(&mut slot.stage, Stage::Committing)
            {
                out.push(SinkAction::Apply(*op));
            }
        }
    }

    /// Parked notices whose blocker is gone go ahead, oldest first. Only a
    /// slot going away (or being replaced) unblocks anything.
    pub(super) fn resume_parked(&mut self, out: &mut Vec<SinkAction>) {
        if self.parked.is_empty() || self.parked_tried == self.slots.removals() {
            return;
        }
        loop {
            let mut ready = self.parked.take_unblocked(&self.slots);
            if ready.is_empty() {
                break;
            }
            ready.sort_by_key(Notice::seq);
            for n in ready {
                // Checked against the outbox again: a hub-side write may
                // have been queued while it waited.
                for n in self.against_outbox(n) {
                    self.notice(n, out);
                }
            }
        }
        self.parked_tried = self.slots.removals();
    }
}
