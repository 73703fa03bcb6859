//! What the sink does with the outcome of a group commit: settle, retry,
//! resume what waited.

use tracing::warn;

use super::{SinkAction, SinkEngine, Slot, Stage};
use crate::engine::{Content, Op};
use crate::engine::{Notice, TransferFailure, backoff};
use crate::entry::{ContentHash, EntryKind};

impl SinkEngine {
    pub(super) fn committed(
        &mut self,
        done: Vec<Op>,
        failed: Vec<(Op, TransferFailure)>,
        out: &mut Vec<SinkAction>,
    ) {
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
        for (op, failure) in failed {
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
                    continue;
                }
                Op::Move { from, entry } => {
                    // The source stays here; delete it and fetch the target instead.
                    let from_next = self.slots.remove(&from).map(|s| s.next).unwrap_or_default();
                    let del = Op::Delete {
                        path: from.clone(),
                        seq,
                    };
                    let stage = Stage::Retry {
                        op: Box::new(del),
                        attempt: 1,
                    };
                    self.slots.insert(
                        from.clone(),
                        Slot {
                            seq,
                            entry: None,
                            stage,
                            next: Vec::new(),
                        },
                    );
                    out.push(SinkAction::RetryLater {
                        path: from,
                        after: backoff(1),
                    });
                    for n in from_next {
                        self.notice(n, out);
                    }
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
            self.slots.insert(
                path.clone(),
                Slot {
                    seq,
                    entry: Some(entry),
                    stage,
                    next: Vec::new(),
                },
            );
            out.push(SinkAction::RetryLater {
                path,
                after: backoff(1),
            });
            for n in next {
                self.notice(n, out);
            }
        }
        // Waiting notices resume in sequence order, so an older change never
        // lands after a newer one it was parked behind.
        let mut resume = Vec::new();
        for p in settled {
            if let Some(slot) = self.slots.remove(&p) {
                resume.extend(slot.next);
            }
        }
        resume.extend(self.parked.take_unblocked(&self.slots));
        resume.sort_by_key(Notice::seq);
        for n in resume {
            self.notice(n, out);
        }
        self.wake_waiting(out);
    }
}
