//! The hub's own writes into a node's mirror (the two-way mirror): planning
//! a put, delete or move against what the mirror holds (`--if-hash`, paths
//! that cannot be written), the outbox of changes the node has not applied
//! yet, and what the sink does with a node's notice that meets one of them.
//!
//! The rule for concurrent changes, made at the hub and finished by the
//! node: a node's change to a path with a hub-side change still on its way
//! to the node is not applied here (it is skipped and acknowledged). The
//! node, when the hub's change arrives, finds its workspace no longer holds
//! the change's base: it keeps its own version as a conflict copy (a new
//! path, sent as a new change) or, when its version is an edit and the
//! hub's a delete, keeps the edit and sends it again. Either way both
//! versions end on both sides; none is lost.

use std::collections::BTreeMap;

use ganglion_core::{RelPath, Timestamp};

use super::{SinkAction, SinkEngine, Stage};
use crate::change::{Base, Conflict, HubChange, HubOp};
use crate::engine::{Content, Notice, Op};
use crate::entry::{ContentHash, Entry, EntryKind, Replica, Version};

/// A hub-side write, as an operator or agent asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubWrite {
    /// Content staged in the receiver for `path` (hash known).
    Put {
        path: RelPath,
        hash: ContentHash,
        size: u64,
        executable: bool,
    },
    Delete {
        path: RelPath,
    },
    Move {
        from: RelPath,
        to: RelPath,
    },
}

/// Why a hub-side write is refused (nothing changed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefusal {
    #[error("the mirror's current hash of {path} is {current}, not {expected}")]
    HashMismatch {
        path: RelPath,
        expected: String,
        current: String,
    },
    #[error("{path} does not exist in the mirror")]
    NotFound { path: RelPath },
    #[error("{path} is a directory")]
    IsADirectory { path: RelPath },
    #[error("{parent} is a {kind}, not a directory")]
    NotADirectory { parent: RelPath, kind: &'static str },
    #[error("{path} exists")]
    Exists { path: RelPath },
    #[error("cannot move {from} into itself ({to})")]
    IntoItself { from: RelPath, to: RelPath },
    #[error(
        "changes at or below {path} are still on their way between the hub and the node; try again once they are applied"
    )]
    Busy { path: RelPath },
}

/// A write the engine accepted: the ops for the receiver's commit and the
/// rows for the outbox, committed together; then [`SinkEngine::hub_committed`].
#[derive(Clone, Debug)]
pub struct HubPlan {
    pub ops: Vec<Op>,
    pub changes: Vec<HubChange>,
    /// Queued changes the new ones replace.
    pub superseded: Vec<u64>,
    pub out_seq: u64,
    /// Index rows below a directory the write moves, at their new paths
    /// (the rename takes them along; the receiver's commit writes them
    /// with the outbox rows).
    pub moved_below: Vec<Entry>,
}

impl HubPlan {
    /// Queues the file `e` describes as a put based on nothing (a restore,
    /// an immutable path reasserted): the node keeps what differs as a copy.
    fn put_from_nothing(&mut self, e: &Entry) {
        let (EntryKind::File, Some(hash)) = (e.kind, e.hash) else {
            return;
        };
        self.out_seq += 1;
        self.changes.push(HubChange {
            seq: self.out_seq,
            op: HubOp::Put {
                path: e.path.clone(),
                hash,
                size: e.size,
                executable: e.is_executable(),
            },
            base: Base::Absent,
        });
    }

    /// The paths whose state the write replaces (a move's source and
    /// target), not the parent directories it creates: node changes at
    /// and below these give way.
    pub fn replaced(&self) -> Vec<RelPath> {
        self.ops
            .iter()
            .flat_map(|op| match op {
                Op::Move { from, entry } => vec![from.clone(), entry.path.clone()],
                Op::Mkdir { .. } => Vec::new(),
                other => vec![other.path().clone()],
            })
            .collect()
    }
}

/// The entry of what a hub-side write puts at `path`: a file (hash, size,
/// executable) or, with `None`, a directory.
fn hub_entry(
    path: &RelPath,
    file: Option<(ContentHash, u64, bool)>,
    out_seq: u64,
    now: Timestamp,
) -> Entry {
    let (kind, size, mode, hash) = match file {
        Some((hash, size, executable)) => (
            EntryKind::File,
            size,
            if executable { 0o755 } else { 0o644 },
            Some(hash),
        ),
        None => (EntryKind::Dir, 0, 0o755, None),
    };
    Entry {
        path: path.clone(),
        kind,
        size,
        mtime_ns: now.millis().saturating_mul(1_000_000),
        mode,
        inode: 0,
        dev: 0,
        symlink_target: None,
        hash,
        seq: 0,
        version: Version {
            origin: Replica::Hub,
            seq: out_seq,
        },
    }
}

/// The outbox and conflict state of a mirror (part of the sink).
#[derive(Debug, Default)]
pub(super) struct TwoWay {
    pub outbox: BTreeMap<u64, HubChange>,
    pub out_seq: u64,
    /// Sent on the node's current stream, up to here.
    pub sent: u64,
    pub conflicts: BTreeMap<RelPath, Conflict>,
    /// Node notices not applied because they met a hub-side change.
    pub skipped: u64,
    /// Immutable paths the node changed (refused): the hub's version goes
    /// back to the node.
    pub reassert: Vec<RelPath>,
}

impl TwoWay {
    pub(super) fn reassert(&mut self, path: &RelPath) {
        if !self.reassert.contains(path) {
            self.reassert.push(path.clone());
        }
    }
}

impl SinkEngine {
    /// Starts with the queued hub-side changes, their counter and the open conflicts.
    pub fn with_two_way(
        mut self,
        outbox: Vec<HubChange>,
        out_seq: u64,
        conflicts: Vec<Conflict>,
    ) -> Self {
        self.two_way.outbox = outbox.into_iter().map(|c| (c.seq, c)).collect();
        self.two_way.out_seq = out_seq;
        self.two_way.conflicts = conflicts
            .into_iter()
            .map(|c| (c.conflict_path.clone(), c))
            .collect();
        self
    }

    /// Hub-side changes the node has not applied yet.
    pub fn to_node(&self) -> u64 {
        self.two_way.outbox.len() as u64
    }

    pub fn conflicts(&self) -> impl Iterator<Item = &Conflict> {
        self.two_way.conflicts.values()
    }

    /// Node notices skipped because they met a hub-side change.
    pub fn skipped(&self) -> u64 {
        self.two_way.skipped
    }

    /// The queued changes not yet sent on this stream (marks them sent).
    pub fn unsent_changes(&mut self) -> Vec<HubChange> {
        let sent = self.two_way.sent;
        let out: Vec<HubChange> = self
            .two_way
            .outbox
            .range(sent + 1..)
            .map(|(_, c)| c.clone())
            .collect();
        if let Some(last) = out.last() {
            self.two_way.sent = last.seq;
        }
        out
    }

    /// The node's stream changed: everything queued goes again on the next.
    pub(super) fn reset_sent(&mut self) {
        self.two_way.sent = 0;
    }

    /// The node applied every hub-side change up to `seq` (persisted by the
    /// driver first). Returns whether anything left the outbox.
    pub fn hub_applied(&mut self, seq: u64) -> bool {
        let before = self.two_way.outbox.len();
        self.two_way.outbox.retain(|s, _| *s > seq);
        before != self.two_way.outbox.len()
    }

    pub fn add_conflict(&mut self, c: Conflict) {
        self.two_way.conflicts.insert(c.conflict_path.clone(), c);
    }

    pub fn remove_conflict(&mut self, conflict_path: &RelPath) -> Option<Conflict> {
        self.two_way.conflicts.remove(conflict_path)
    }

    /// Whether a queued hub-side change touches `path`: at it, above it, or
    /// (with `below`) under it.
    fn hub_pending(&self, path: &RelPath, below: bool) -> bool {
        self.two_way.outbox.values().any(|c| {
            let mut paths = vec![c.op.path()];
            if let HubOp::Move { to, .. } = &c.op {
                paths.push(to);
            }
            paths
                .into_iter()
                .any(|p| path.starts_with(p) || (below && p.starts_with(path)))
        })
    }

    /// Whether a queued hub-side put or move writes at or below `path`.
    fn hub_writes_below(&self, path: &RelPath) -> bool {
        self.two_way.outbox.values().any(|c| match &c.op {
            HubOp::Put { path: p, .. } | HubOp::Move { to: p, .. } => p.starts_with(path),
            HubOp::Delete { .. } => false,
        })
    }

    /// A node's notice against the outbox: what of it the sink applies.
    pub(super) fn against_outbox(&mut self, n: Notice) -> Vec<Notice> {
        if self.two_way.outbox.is_empty() {
            return vec![n];
        }
        match n {
            Notice::Rename { from, entry } => {
                if !self.hub_pending(&from, true) && !self.hub_pending(&entry.path, true) {
                    return vec![Notice::Rename { from, entry }];
                }
                let seq = entry.seq;
                let mut out = self.against_outbox(Notice::Delete { path: from, seq });
                out.extend(self.against_outbox(Notice::Upsert(entry)));
                out
            }
            Notice::Upsert(e) => {
                // A queued change at or above the path settles the node's
                // version when the node applies it; one below only if it
                // writes there (the node moves its version aside to make
                // the parent): a hub-side delete below does not.
                if self.hub_pending(&e.path, false) || self.hub_writes_below(&e.path) {
                    tracing::debug!(path = %e.path, "node change meets a hub-side change: skipped");
                    self.two_way.skipped += 1;
                    return Vec::new();
                }
                vec![Notice::Upsert(e)]
            }
            Notice::Delete { path, seq } => {
                if self.hub_pending(&path, false) {
                    self.two_way.skipped += 1;
                    return Vec::new();
                }
                if !self.hub_pending(&path, true) {
                    return vec![Notice::Delete { path, seq }];
                }
                // The node removed a directory under which the hub wrote:
                // remove the rest, keep what the hub wrote (and its parents).
                // What the hub wrote is what it puts or moves somewhere; a
                // hub-side delete below (or a move out) keeps nothing.
                let keep: Vec<&RelPath> = self
                    .two_way
                    .outbox
                    .values()
                    .filter_map(|c| match &c.op {
                        HubOp::Put { path, .. } => Some(path),
                        HubOp::Move { to, .. } => Some(to),
                        HubOp::Delete { .. } => None,
                    })
                    .filter(|p| p.starts_with(&path))
                    .collect();
                if keep.is_empty() {
                    return vec![Notice::Delete { path, seq }];
                }
                let mut gone: Vec<RelPath> = self
                    .below(&path)
                    .map(|(p, _)| p)
                    .filter(|p| !keep.iter().any(|k| k.starts_with(p) || p.starts_with(k)))
                    .cloned()
                    .collect();
                // Deepest first; a directory's delete covers what is below it.
                gone.sort_by(|a, b| b.cmp(a));
                self.two_way.skipped += 1;
                gone.into_iter()
                    .map(|path| Notice::Delete { path, seq })
                    .collect()
            }
        }
    }

    /// Checks a hub-side write against the mirror and plans it.
    pub fn plan_hub_write(
        &self,
        write: &HubWrite,
        if_hash: Option<&ContentHash>,
        now: Timestamp,
    ) -> Result<HubPlan, WriteRefusal> {
        let subject = match write {
            HubWrite::Put { path, .. } | HubWrite::Delete { path } => path,
            HubWrite::Move { from, .. } => from,
        };
        let current = self.entries.get(subject);
        if let Some(expected) = if_hash {
            let cur = current.and_then(|e| e.hash);
            if cur.as_ref() != Some(expected) {
                return Err(WriteRefusal::HashMismatch {
                    path: subject.clone(),
                    expected: expected.to_string(),
                    current: cur.map_or_else(|| "(none)".to_owned(), |h| h.to_string()),
                });
            }
        }
        let mut plan = HubPlan {
            ops: Vec::new(),
            changes: Vec::new(),
            superseded: Vec::new(),
            out_seq: self.two_way.out_seq,
            moved_below: Vec::new(),
        };
        match write {
            HubWrite::Put {
                path,
                hash,
                size,
                executable,
            } => {
                self.check_parents(path)?;
                if current.is_some_and(|e| e.kind == EntryKind::Dir) {
                    return Err(WriteRefusal::IsADirectory { path: path.clone() });
                }
                self.refuse_moves_at(path)?;
                self.refuse_node_changes_above(path)?;
                self.mkdir_parents(&mut plan, path, now);
                let file = Some((*hash, *size, *executable));
                let entry = hub_entry(path, file, plan.out_seq + 1, now);
                plan.ops.push(Op::Write {
                    entry,
                    content: Content::Staged,
                });
                let put = HubOp::Put {
                    path: path.clone(),
                    hash: *hash,
                    size: *size,
                    executable: *executable,
                };
                self.queue(&mut plan, put);
            }
            HubWrite::Delete { path } => {
                if current.is_none() {
                    return Err(WriteRefusal::NotFound { path: path.clone() });
                }
                self.refuse_moves_at(path)?;
                plan.ops.push(Op::Delete {
                    path: path.clone(),
                    seq: 0,
                });
                self.queue(&mut plan, HubOp::Delete { path: path.clone() });
            }
            HubWrite::Move { from, to } => {
                let Some(entry) = current else {
                    return Err(WriteRefusal::NotFound { path: from.clone() });
                };
                if to.starts_with(from) {
                    return Err(WriteRefusal::IntoItself {
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
                if self.entries.contains_key(to) {
                    return Err(WriteRefusal::Exists { path: to.clone() });
                }
                self.check_parents(to)?;
                self.refuse_node_changes_above(to)?;
                self.mkdir_parents(&mut plan, to, now);
                let mut moved = entry.clone();
                moved.path = to.clone();
                moved.version = Version {
                    origin: Replica::Hub,
                    seq: plan.out_seq + 1,
                };
                plan.ops.push(Op::Move {
                    from: from.clone(),
                    entry: moved,
                });
                plan.moved_below = self
                    .below(from)
                    .filter(|(p, _)| *p != from)
                    .filter_map(|(p, e)| {
                        let rest = &p.as_str()[from.as_str().len()..];
                        let mut e = e.clone();
                        e.path = RelPath::parse(&format!("{to}{rest}")).ok()?;
                        Some(e)
                    })
                    .collect();
                let busy = self.hub_pending(from, true) || self.hub_pending(to, true);
                match (busy, entry.kind, entry.hash) {
                    (false, _, _) => self.queue(
                        &mut plan,
                        HubOp::Move {
                            from: from.clone(),
                            to: to.clone(),
                        },
                    ),
                    // The node may not hold what moves yet: send it as a
                    // put of the content and a delete of the source.
                    (true, EntryKind::File, Some(hash)) => {
                        let put = HubOp::Put {
                            path: to.clone(),
                            hash,
                            size: entry.size,
                            executable: entry.is_executable(),
                        };
                        self.queue(&mut plan, put);
                        self.queue(&mut plan, HubOp::Delete { path: from.clone() });
                    }
                    (true, _, _) => return Err(WriteRefusal::Busy { path: from.clone() }),
                }
            }
        }
        self.refuse_commits_in_flight(&plan)?;
        Ok(plan)
    }

    /// The node's replica is not the one the ancestor was agreed with (its
    /// index was lost, another disk is mounted, a backup restored): the hub
    /// offers every file of its mirror as a put based on nothing. The node
    /// takes what it lacks, finds what it has, and keeps both versions of
    /// what differs: differences become conflicts, nothing is deleted.
    /// Queued changes for the old replica are replaced.
    pub fn plan_restore(&self) -> HubPlan {
        let mut plan = HubPlan {
            ops: Vec::new(),
            changes: Vec::new(),
            superseded: self.two_way.outbox.keys().copied().collect(),
            out_seq: self.two_way.out_seq,
            moved_below: Vec::new(),
        };
        for e in self.entries.values() {
            plan.put_from_nothing(e);
        }
        plan
    }

    /// Paths under immutable patterns the node changed since the last call.
    pub fn take_reasserts(&mut self) -> Vec<RelPath> {
        std::mem::take(&mut self.two_way.reassert)
    }

    /// The hub's version of immutable paths the node changed goes back to
    /// the node: a put of every file the mirror holds at or below them,
    /// based on nothing, so the node keeps its own edit as a conflict copy
    /// and restores what it deleted. `None` when the mirror holds nothing there.
    pub fn plan_reassert(&self, paths: &[RelPath]) -> Option<HubPlan> {
        let mut plan = HubPlan {
            ops: Vec::new(),
            changes: Vec::new(),
            superseded: Vec::new(),
            out_seq: self.two_way.out_seq,
            moved_below: Vec::new(),
        };
        for path in paths {
            let files = self
                .entries
                .range(path.clone()..)
                .take_while(|(p, _)| p.as_str().starts_with(path.as_str()))
                .filter(|(p, _)| p.starts_with(path))
                .map(|(_, e)| e);
            for e in files {
                if e.kind != EntryKind::File || plan.changes.iter().any(|c| c.op.path() == &e.path)
                {
                    continue;
                }
                for (seq, c) in &self.two_way.outbox {
                    if c.op.path() == &e.path && !matches!(c.op, HubOp::Move { .. }) {
                        plan.superseded.push(*seq);
                    }
                }
                plan.put_from_nothing(e);
            }
        }
        (!plan.changes.is_empty()).then_some(plan)
    }

    /// A node change whose op is already on its way to the receiver (in the
    /// batch) at a path the write replaces cannot give way: a move there
    /// would still take its source away afterwards (sim seed 3866: it
    /// moved the hub's new file under the node's name, the index naming
    /// the node's content). The write waits for the commit.
    fn refuse_commits_in_flight(&self, plan: &HubPlan) -> Result<(), WriteRefusal> {
        for w in plan.replaced() {
            let committing = self
                .slots
                .range(w.clone()..)
                .take_while(|(p, _)| p.as_str().starts_with(w.as_str()))
                .any(|(p, s)| p.starts_with(&w) && matches!(s.stage, Stage::Committing));
            if committing {
                return Err(WriteRefusal::Busy { path: w });
            }
        }
        Ok(())
    }

    /// Adds a change to the plan: numbered, based on what the node was last
    /// known to hold at its path (the base of a queued change it replaces,
    /// else the mirror's entry), replacing queued changes at that path.
    fn queue(&self, plan: &mut HubPlan, op: HubOp) {
        let path = op.path().clone();
        let queued: Vec<&HubChange> = self
            .two_way
            .outbox
            .values()
            .filter(|c| c.op.path() == &path && !matches!(c.op, HubOp::Move { .. }))
            .collect();
        let base = queued
            .first()
            .map_or_else(|| Base::of(self.entries.get(&path)), |c| c.base.clone());
        let mut replaced: Vec<u64> = queued.iter().map(|c| c.seq).collect();
        // A delete of a directory replaces the queued changes below it.
        if matches!(op, HubOp::Delete { .. }) {
            replaced.extend(
                self.two_way
                    .outbox
                    .values()
                    .filter(|c| c.op.path().starts_with(&path))
                    .map(|c| c.seq),
            );
        }
        for seq in replaced {
            if !plan.superseded.contains(&seq) {
                plan.superseded.push(seq);
            }
        }
        plan.out_seq += 1;
        plan.changes.push(HubChange {
            seq: plan.out_seq,
            op,
            base,
        });
    }

    /// Moves queued for the node that touch `path` must reach it first.
    fn refuse_moves_at(&self, path: &RelPath) -> Result<(), WriteRefusal> {
        let moving = self.two_way.outbox.values().any(|c| match &c.op {
            HubOp::Move { from, to } => [from, to]
                .iter()
                .any(|p| p.starts_with(path) || path.starts_with(p)),
            _ => false,
        });
        if moving {
            return Err(WriteRefusal::Busy { path: path.clone() });
        }
        Ok(())
    }

    /// A node change in progress at a parent of `path` that is not a
    /// directory (a file, link or delete replacing it) would be committed
    /// after the write and take it away: the write waits for it.
    fn refuse_node_changes_above(&self, path: &RelPath) -> Result<(), WriteRefusal> {
        let mut cur = path.parent();
        while let Some(p) = cur {
            let slot_replaces = self
                .slots
                .get(&p)
                .is_some_and(|s| s.entry.as_ref().is_none_or(|e| e.kind != EntryKind::Dir));
            if slot_replaces || self.parked.holds(&p) {
                return Err(WriteRefusal::Busy { path: p });
            }
            cur = p.parent();
        }
        Ok(())
    }

    /// Every parent of `path` the mirror holds must be a directory (a write
    /// never goes through a link, and never replaces a file by a directory).
    fn check_parents(&self, path: &RelPath) -> Result<(), WriteRefusal> {
        let mut cur = path.parent();
        while let Some(p) = cur {
            if let Some(e) = self.entries.get(&p)
                && e.kind != EntryKind::Dir
            {
                return Err(WriteRefusal::NotADirectory {
                    parent: p,
                    kind: e.kind.as_str(),
                });
            }
            cur = p.parent();
        }
        Ok(())
    }

    /// Directories for the parents of `path` the mirror does not hold yet:
    /// the receiver creates them, and the index must list them as the
    /// node's workspace will (it creates them too and records them as
    /// agreed).
    fn mkdir_parents(&self, plan: &mut HubPlan, path: &RelPath, now: Timestamp) {
        let mut missing = Vec::new();
        let mut cur = path.parent();
        while let Some(p) = cur {
            if self.entries.contains_key(&p) {
                break;
            }
            cur = p.parent();
            missing.push(p);
        }
        for p in missing.into_iter().rev() {
            let entry = hub_entry(&p, None, plan.out_seq + 1, now);
            plan.ops.push(Op::Mkdir { entry });
        }
    }

    /// Node changes in progress at or below the paths a hub-side write
    /// replaces give way to it: their slots go (staged content discarded).
    /// The node keeps its version as a conflict copy when the write reaches
    /// it. Returns the actions (discards, and an ack that may follow).
    pub fn give_way(&mut self, plan: &HubPlan) -> Vec<SinkAction> {
        let mut out = Vec::new();
        let paths = plan.replaced();
        let doomed: Vec<RelPath> = self
            .slots
            .keys()
            .filter(|p| paths.iter().any(|w| p.starts_with(w)))
            .cloned()
            .collect();
        for p in doomed {
            if let Some(slot) = self.slots.remove(&p) {
                self.two_way.skipped += 1;
                if let Stage::Fetching { hash, .. } = slot.stage {
                    out.push(SinkAction::Discard { path: p, hash });
                }
            }
        }
        self.advance(&mut out);
        out
    }

    /// A planned write was committed (mirror and index, outbox rows with it):
    /// the entries and the outbox follow.
    pub fn hub_committed(&mut self, plan: HubPlan) {
        for op in plan.ops {
            if let Op::Move { from, entry } = &op {
                let below: Vec<(RelPath, Entry)> = self
                    .below(from)
                    .map(|(p, e)| (p.clone(), e.clone()))
                    .collect();
                for (p, mut e) in below {
                    self.remove(&p);
                    let rest = &p.as_str()[from.as_str().len()..];
                    if let Ok(np) = RelPath::parse(&format!("{}{rest}", entry.path)) {
                        e.path = np;
                        self.insert(e);
                    }
                }
                self.remove(from);
                self.insert(entry.clone());
                continue;
            }
            match op.entry() {
                Some(e) => {
                    self.remove_subtree(&e.path);
                    self.insert(e.clone());
                }
                None => self.remove_subtree(op.path()),
            }
        }
        for s in plan.superseded {
            self.two_way.outbox.remove(&s);
        }
        for c in plan.changes {
            self.two_way.outbox.insert(c.seq, c);
        }
        self.two_way.out_seq = plan.out_seq;
    }
}

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod tests;
