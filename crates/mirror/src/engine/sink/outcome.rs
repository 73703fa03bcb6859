//! What the sink does with the outcome of a group commit: settle, retry,
//! resume what waited.

use ganglion_core::RelPath;
use tracing::warn;

use super::{SinkAction, SinkEngine, Slot, Stage};
use crate::engine::{Content, Op};
use crate::engine::{Notice, TransferFailure, backoff};
use crate::entry::{ContentHash, Entry, EntryKind};

impl SinkEngine {
    pub(super) fn committed(
        &mut self,
        done: Vec<Op>,
        failed: Vec<(Op, TransferFailure)>,
        out: &mut Vec<SinkAction>,
    ) {
        let settled = self.settle(done);
        for (op, failure) in failed {
            self.retry_failed(op, failure, out);
        }
        self.resume(settled, out);
    }

    /// Applies committed ops to the sink's entries; returns the paths whose
    /// slots they settle.
    fn settle(&mut self, done: Vec<Op>) -> Vec<RelPath> {
        let mut settled = Vec::new();
        for op in done {
            if let Op::Move { from, .. } = &op {
                self.remove(from);
                settled.push(from.clone());
            }
            match op.entry() {
                Some(e) if e.kind == EntryKind::Dir => self.insert(e.clone()),
                Some(e) => {
                    self.remove_subtree(&e.path);
                    self.insert(e.clone());
                }
                None => self.remove_subtree(op.path()),
            }
            settled.push(op.path().clone());
        }
        settled
    }

    /// A failed commit starts over after a backoff: content is fetched
    /// again, other ops are retried as they are. Notices waiting on the path
    /// go through [`Self::notice`] again.
    fn retry_failed(&mut self, op: Op, failure: TransferFailure, out: &mut Vec<SinkAction>) {
        warn!(path = %op.path(), ?failure, "commit failed, will retry");
        let path = op.path().clone();
        let next = self
            .slots
            .get_mut(&path)
            .map(|s| std::mem::take(&mut s.next))
            .unwrap_or_default();
        let seq = op.seq();
        let (stage, entry) = match op {
            // A delete that cannot happen (say, a directory still holding
            // refused immutable content) is logged and left.
            Op::Delete { .. } => {
                self.slots.remove(&path);
                for n in next {
                    self.notice(n, out);
                }
                return;
            }
            Op::Move { from, entry } => {
                self.delete_move_source(from, seq, out);
                let hash = entry.hash.unwrap_or_else(ContentHash::empty);
                (Stage::Fetching { hash, attempt: 1 }, entry)
            }
            Op::Write { entry, .. } => match entry.hash {
                Some(hash) if hash != ContentHash::empty() => {
                    (Stage::Fetching { hash, attempt: 1 }, entry)
                }
                _ => (
                    Stage::Retry {
                        op: Box::new(Op::Write {
                            entry: entry.clone(),
                            content: Content::Empty,
                        }),
                        attempt: 1,
                    },
                    entry,
                ),
            },
            op @ (Op::Mkdir { .. } | Op::Symlink { .. }) => {
                let entry = op
                    .entry()
                    .cloned()
                    .expect("mkdir and symlink carry an entry");
                (
                    Stage::Retry {
                        op: Box::new(op),
                        attempt: 1,
                    },
                    entry,
                )
            }
        };
        self.retry_later(path, seq, Some(entry), stage, out);
        for n in next {
            self.notice(n, out);
        }
    }

    /// A move whose commit failed leaves its source here: delete it (after a
    /// backoff); the target is fetched instead.
    fn delete_move_source(&mut self, from: RelPath, seq: u64, out: &mut Vec<SinkAction>) {
        let from_next = self.slots.remove(&from).map(|s| s.next).unwrap_or_default();
        let del = Op::Delete {
            path: from.clone(),
            seq,
        };
        let stage = Stage::Retry {
            op: Box::new(del),
            attempt: 1,
        };
        self.retry_later(from, seq, None, stage, out);
        for n in from_next {
            self.notice(n, out);
        }
    }

    /// Puts `path` in `stage` with a fresh slot and asks to be woken after
    /// the first backoff.
    fn retry_later(
        &mut self,
        path: RelPath,
        seq: u64,
        entry: Option<Entry>,
        stage: Stage,
        out: &mut Vec<SinkAction>,
    ) {
        self.slots
            .insert(path.clone(), Slot::new(seq, entry, stage));
        out.push(SinkAction::RetryLater {
            path,
            after: backoff(1),
        });
    }

    /// Waiting notices resume in sequence order, so an older change never
    /// lands after a newer one it was parked behind.
    fn resume(&mut self, settled: Vec<RelPath>, out: &mut Vec<SinkAction>) {
        let mut resume = Vec::new();
        for p in settled {
            if let Some(slot) = self.slots.remove(&p) {
                resume.extend(slot.next);
            }
        }
        resume.extend(self.parked.take_unblocked(&self.slots));
        resume.sort_by_key(Notice::seq);
        for n in resume {
            // A hub-side write may have been queued while it waited.
            for n in self.against_outbox(n) {
                self.notice(n, out);
            }
        }
        self.wake_waiting(out);
    }
}
