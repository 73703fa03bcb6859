//! What the sink does with a node's notice: degrade a rename it cannot
//! move, drop it when outdated, park it behind an older change above, queue
//! it behind a commit, or start it (an op to apply, or content to fetch).

use ganglion_core::RelPath;
use tracing::{debug, warn};

use super::{SinkAction, SinkEngine, Slot, Stage};
use crate::engine::{Content, Notice, Op, file_hash};
use crate::entry::{ContentHash, Entry, EntryKind};

impl SinkEngine {
    pub(super) fn notice(&mut self, n: Notice, out: &mut Vec<SinkAction>) {
        self.notices_tried += 1;
        if let Notice::Rename { from, entry } = &n
            && (!self.movable(from, entry) || self.immutable.matches(from, false))
        {
            self.notice(
                Notice::Delete {
                    path: from.clone(),
                    seq: entry.seq,
                },
                out,
            );
            self.notice(Notice::Upsert(entry.clone()), out);
            return;
        }
        let path = n.path().clone();
        let is_dir = matches!(&n, Notice::Upsert(e) if e.kind == EntryKind::Dir);
        if self.immutable.matches(&path, is_dir) {
            self.refuse(&path, "at notice");
            return;
        }
        if self.outdated(&path, n.seq()) {
            return;
        }
        if let Some(blocker) = self.blocker_above(&path, n.seq()) {
            self.parked.push(blocker, n);
            return;
        }
        if let Some(n) = self.supersede(n, out) {
            self.start(n, out);
        }
    }

    /// Whether a rename from `from` can be applied as a move. Otherwise it
    /// degrades to delete + upsert: when its source is not settled here; when
    /// its target has commits in flight below it (or its own source below
    /// it): a move never waits, so the source slot it holds always settles
    /// and no wait can depend on another; when its target already holds this
    /// (or a newer) state: the upsert half of an earlier degraded copy of it
    /// landed, its delete half was lost with the connection, and the resent
    /// rename must still remove the source (as a whole it would be ignored as
    /// stale and acknowledged with the source left behind).
    fn movable(&self, from: &RelPath, entry: &Entry) -> bool {
        !self.slots.contains_key(from)
            && !from.starts_with(&entry.path)
            && !self.busy_below(&entry.path)
            && self
                .entries
                .get(&entry.path)
                .is_none_or(|e| node_seq(e) < entry.seq)
            && self
                .entries
                .get(from)
                .and_then(file_hash)
                .is_some_and(|h| Some(h) == file_hash(entry))
    }

    /// A notice older than what `path`, or a parent of it, already holds.
    fn outdated(&self, path: &RelPath, seq: u64) -> bool {
        if self.entries.get(path).is_some_and(|e| node_seq(e) >= seq) {
            debug!(%path, seq, "stale notice ignored");
            return true;
        }
        if self.superseded_above(path, seq) {
            debug!(%path, seq, "notice below a newer state of a parent ignored");
            return true;
        }
        false
    }

    /// A notice for a path with a slot: it waits behind a commit, is dropped
    /// as older, or replaces a fetch or retry. Returns it when it starts now.
    fn supersede(&mut self, n: Notice, out: &mut Vec<SinkAction>) -> Option<Notice> {
        let path = n.path();
        let Some(slot) = self.slots.get_mut(path) else {
            return Some(n);
        };
        if slot.seq > n.seq() {
            return None;
        }
        match slot.stage {
            Stage::Committing | Stage::Waiting { .. } => {
                slot.next.push(n);
                return None;
            }
            Stage::Fetching { hash, .. } => {
                // Superseded: the newer notice decides.
                out.push(SinkAction::Discard {
                    path: path.clone(),
                    hash,
                });
                self.slots.remove(path);
            }
            Stage::Retry { .. } => {
                self.slots.remove(path);
            }
        }
        Some(n)
    }

    fn start(&mut self, n: Notice, out: &mut Vec<SinkAction>) {
        if let Notice::Delete { path, .. } = &n {
            self.cancel_below(path, out);
        }
        let path = n.path().clone();
        let seq = n.seq();
        let (op, entry) = match n {
            Notice::Upsert(e) if e.kind != EntryKind::Dir && self.immutable_below(&e.path) => {
                self.refuse(&e.path, "at notice (immutable content below)");
                return;
            }
            Notice::Delete { path, .. } if self.immutable_below(&path) => {
                // A delete removes the whole subtree at the hub; hub-owned
                // content below keeps the directory.
                self.refuse(&path, "at notice (immutable content below)");
                return;
            }
            Notice::Delete { path, seq } => (Op::Delete { path, seq }, None),
            Notice::Rename { from, entry } => {
                // The source is held until the move commits.
                let source = Slot::new(seq, None, Stage::Committing);
                self.slots.insert(from.clone(), source);
                let op = Op::Move {
                    from,
                    entry: entry.clone(),
                };
                (op, Some(entry))
            }
            Notice::Upsert(entry) => {
                let Some(op) = self.upsert_op(&entry, seq, out) else {
                    return;
                };
                (op, Some(entry))
            }
        };
        let stage = self.apply_or_wait(&path, op, out);
        self.slots.insert(path, Slot::new(seq, entry, stage));
    }

    /// The op that brings an upserted entry here; none when there is nothing
    /// to apply yet (a file without a hash, or content being fetched).
    fn upsert_op(&mut self, entry: &Entry, seq: u64, out: &mut Vec<SinkAction>) -> Option<Op> {
        let entry_op = match entry.kind {
            EntryKind::Dir => Op::Mkdir {
                entry: entry.clone(),
            },
            EntryKind::Symlink => Op::Symlink {
                entry: entry.clone(),
            },
            EntryKind::File => Op::Write {
                entry: entry.clone(),
                content: self.file_content(entry, seq, out)?,
            },
        };
        Some(entry_op)
    }

    /// Where a file's content comes from: nothing (empty), a local copy, or
    /// (none yet) a fetch from the node, started here.
    fn file_content(
        &mut self,
        entry: &Entry,
        seq: u64,
        out: &mut Vec<SinkAction>,
    ) -> Option<Content> {
        let path = &entry.path;
        match entry.hash {
            None => {
                warn!(%path, "file notice without a hash ignored");
                None
            }
            Some(h) if entry.size == 0 && h == ContentHash::empty() => Some(Content::Empty),
            Some(h) => match self.local_copy_of(h, path) {
                Some(from) => Some(Content::Copy(from)),
                None => {
                    self.fetch(entry.clone(), h, seq, out);
                    None
                }
            },
        }
    }

    /// Asks the node for content. Older fetches below are superseded now, as
    /// for a delete; commits below are waited for once staged.
    fn fetch(&mut self, entry: Entry, hash: ContentHash, seq: u64, out: &mut Vec<SinkAction>) {
        let path = entry.path.clone();
        self.cancel_below(&path, out);
        out.push(SinkAction::Fetch {
            path: path.clone(),
            hash,
            size: entry.size,
        });
        let stage = Stage::Fetching { hash, attempt: 0 };
        self.slots.insert(path, Slot::new(seq, Some(entry), stage));
    }

    /// A committed path (other than `path` itself, unless unchanged) holding `hash`.
    fn local_copy_of(&self, hash: ContentHash, path: &RelPath) -> Option<RelPath> {
        let paths = self.by_hash.get(&hash)?;
        if paths.contains(path) {
            return Some(path.clone());
        }
        paths.first().cloned()
    }
}

/// The node's sequence number of the state an entry holds; 0 for a state
/// the hub wrote (a node's later change is never older than it).
pub(super) fn node_seq(e: &Entry) -> u64 {
    match e.version.origin {
        crate::entry::Replica::Node => e.version.seq,
        crate::entry::Replica::Hub => 0,
    }
}
