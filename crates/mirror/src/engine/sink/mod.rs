//! The hub side: turns a node's notices into fetches and filesystem operations,
//! refuses changes under immutable paths, and acknowledges what is durable.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ganglion_core::RelPath;
use tracing::warn;

use super::{Content, Notice, Op, TransferFailure, backoff, file_hash};
use crate::entry::{ContentHash, Entry, EntryKind};
use crate::immutable::ImmutablePaths;

mod notice;
mod order;
mod outcome;
mod parked;
mod paths;
mod slots;
mod two_way;

use parked::Parked;
use paths::PathSet;
use slots::Slots;
use two_way::TwoWay;
pub use two_way::{HubPlan, HubWrite, WriteRefusal};

#[derive(Clone, Debug)]
pub enum SinkEvent {
    Connected,
    Disconnected,
    Notice(Notice),
    /// A fetch finished streaming and its hash matched; the content waits in staging.
    Staged {
        path: RelPath,
        hash: ContentHash,
    },
    FetchFailed {
        path: RelPath,
        hash: ContentHash,
        failure: TransferFailure,
    },
    /// The retry timer of a failed fetch fired.
    RetryDue {
        path: RelPath,
    },
    /// A group commit finished: these ops are durable, these failed.
    Committed {
        done: Vec<Op>,
        failed: Vec<(Op, TransferFailure)>,
    },
    SetImmutable(ImmutablePaths),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkAction {
    /// Ask the node to upload this content (it opens an upload stream).
    Fetch {
        path: RelPath,
        hash: ContentHash,
        size: u64,
    },
    /// Drop a staged transfer and release its lock; it will not be committed.
    Discard { path: RelPath, hash: ContentHash },
    /// Queue for the next group commit.
    Apply(Op),
    /// Persist `seq` as the node's applied sequence, then send it to the node.
    Ack { seq: u64 },
    /// Feed [`SinkEvent::RetryDue`] for `path` after this long.
    RetryLater { path: RelPath, after: Duration },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    Fetching {
        hash: ContentHash,
        attempt: u32,
    },
    Committing,
    /// A failed op waiting for its retry timer.
    Retry {
        op: Box<Op>,
        attempt: u32,
    },
    /// A change that replaces a subtree (a delete, or a path becoming a
    /// file or link) waiting for the commits below it to settle.
    Waiting {
        op: Box<Op>,
    },
}

#[derive(Clone, Debug)]
struct Slot {
    seq: u64,
    entry: Option<Entry>,
    stage: Stage,
    /// A newer notice that waits for the commit in flight.
    next: Vec<Notice>,
}

impl Slot {
    /// A slot with no notice waiting behind it yet.
    fn new(seq: u64, entry: Option<Entry>, stage: Stage) -> Self {
        Self {
            seq,
            entry,
            stage,
            next: Vec::new(),
        }
    }
}

/// Counters for `mirror status` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    pub files: u64,
    pub bytes: u64,
    pub pending: u64,
    pub fetching: u64,
    pub refused: u64,
}

/// The hub-side state machine for one node's mirror.
#[derive(Debug, Default)]
pub struct SinkEngine {
    entries: BTreeMap<RelPath, Entry>,
    by_hash: HashMap<ContentHash, PathSet>,
    /// Everything up to here is durably applied (persisted by the driver).
    applied: u64,
    /// Highest notice sequence seen.
    seen: u64,
    slots: Slots,
    immutable: ImmutablePaths,
    refused: u64,
    /// Notices below a directory whose delete is in progress; they wait for it.
    parked: Parked,
    /// A directory delete that cancelled fetches below it holds back the
    /// acknowledgement of their sequence numbers until it commits.
    held: BTreeMap<RelPath, u64>,
    /// Files among `entries` and their bytes (kept, not counted per status).
    files: u64,
    bytes: u64,
    /// `slots.removals()` when the parked notices were last tried.
    parked_tried: u64,
    /// Notices looked at, a parked one again each time it resumes.
    notices_tried: u64,
    /// Hub-side changes queued for the node, and open conflicts.
    two_way: TwoWay,
}

impl SinkEngine {
    /// Starts from the mirror index: its entries and the node's applied sequence.
    pub fn new(entries: Vec<Entry>, applied: u64, immutable: ImmutablePaths) -> Self {
        let mut s = Self {
            applied,
            seen: applied,
            immutable,
            ..Self::default()
        };
        for e in entries {
            s.insert(e);
        }
        s
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn entry(&self, path: &RelPath) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn immutable(&self) -> &ImmutablePaths {
        &self.immutable
    }

    /// Whether a change at `path` must be refused (checked by the receiver
    /// when a transfer starts, and by [`Self::admit`] before a commit).
    pub fn is_immutable(&self, path: &RelPath, is_dir: bool) -> bool {
        self.immutable.matches(path, is_dir)
    }

    /// In-progress work, for diagnostics.
    pub fn debug_pending(&self) -> String {
        format!(
            "applied {}; seen {}; slots {:?}; parked {:?}; held {:?}",
            self.applied, self.seen, *self.slots, self.parked, self.held
        )
    }

    pub fn stats(&self) -> SinkStats {
        SinkStats {
            files: self.files,
            bytes: self.bytes,
            pending: self.slots.len() as u64,
            fetching: self.slots.fetching() as u64,
            refused: self.refused,
        }
    }

    pub fn handle(&mut self, event: SinkEvent) -> Vec<SinkAction> {
        let mut out = Vec::new();
        match event {
            SinkEvent::Connected => self.reset_sent(),
            SinkEvent::Disconnected => {
                self.reset_sent();
                self.disconnected(&mut out);
            }
            SinkEvent::Notice(n) => {
                self.seen = self.seen.max(n.seq());
                for n in self.against_outbox(n) {
                    self.notice(n, &mut out);
                }
            }
            SinkEvent::Staged { path, hash } => self.staged(path, hash, &mut out),
            SinkEvent::FetchFailed {
                path,
                hash,
                failure,
            } => self.fetch_failed(path, hash, failure, &mut out),
            SinkEvent::RetryDue { path } => self.retry_due(path, &mut out),
            SinkEvent::Committed { done, failed } => self.committed(done, failed, &mut out),
            SinkEvent::SetImmutable(set) => {
                if set.version() >= self.immutable.version() {
                    self.immutable = set;
                }
            }
        }
        self.resume_parked(&mut out);
        self.wake_waiting(&mut out);
        self.advance(&mut out);
        out
    }

    /// Fetches die with the node's streams; the node resends every notice
    /// above `applied` on reconnect. Commits in flight stay.
    fn disconnected(&mut self, out: &mut Vec<SinkAction>) {
        self.drop_waiting(out);
        self.slots.retain(|_, s| s.stage == Stage::Committing);
        self.parked.clear();
        self.held.clear();
        for s in self.slots.values_mut() {
            s.next.clear();
        }
        // Fetches below a commit in flight were dropped: nothing above
        // `applied` may be acknowledged until the node resends it.
        self.seen = self.applied;
    }

    /// A failed fetch of the content a path still waits for is retried
    /// after a growing backoff.
    fn fetch_failed(
        &mut self,
        path: RelPath,
        hash: ContentHash,
        failure: TransferFailure,
        out: &mut Vec<SinkAction>,
    ) {
        if let Some(slot) = self.slots.get_mut(&path)
            && let Stage::Fetching { hash: h, attempt } = &mut slot.stage
            && *h == hash
        {
            *attempt += 1;
            warn!(%path, %hash, ?failure, attempt = *attempt, "fetch failed, will retry");
            out.push(SinkAction::RetryLater {
                path,
                after: backoff(*attempt),
            });
        }
    }

    /// A backoff ended: fetch again, or try the op again.
    fn retry_due(&mut self, path: RelPath, out: &mut Vec<SinkAction>) {
        match self.slots.get(&path) {
            Some(Slot {
                stage: Stage::Fetching { hash, .. },
                entry: Some(e),
                ..
            }) => out.push(SinkAction::Fetch {
                hash: *hash,
                size: e.size,
                path,
            }),
            Some(Slot {
                stage: Stage::Retry { op, .. },
                ..
            }) => {
                let op = (**op).clone();
                let stage = self.apply_or_wait(&path, op, out);
                self.slots.set_stage(&path, stage);
            }
            _ => {}
        }
    }

    /// Filters a batch right before it is committed: ops under paths that
    /// became immutable since they were queued are refused (second check).
    pub fn admit(&mut self, ops: Vec<Op>) -> Vec<Op> {
        let mut ok = Vec::with_capacity(ops.len());
        for op in ops {
            let is_dir = matches!(op, Op::Mkdir { .. });
            let from_refused =
                matches!(&op, Op::Move { from, .. } if self.immutable.matches(from, false));
            if self.immutable.matches(op.path(), is_dir) || from_refused {
                self.refuse(op.path(), "at commit");
                self.slots.remove(op.path());
            } else {
                ok.push(op);
            }
        }
        ok
    }

    fn refuse(&mut self, path: &RelPath, when: &'static str) {
        self.refused += 1;
        self.two_way.reassert(path);
        warn!(%path, when, version = self.immutable.version(), "change under an immutable path refused");
    }

    /// How many times a notice was looked at (a parked one again each time
    /// it resumes): the work the ordering rules cost, for tests.
    pub fn notices_tried(&self) -> u64 {
        self.notices_tried
    }

    fn staged(&mut self, path: RelPath, hash: ContentHash, out: &mut Vec<SinkAction>) {
        let Some(slot) = self.slots.get_mut(&path) else {
            out.push(SinkAction::Discard { path, hash });
            return;
        };
        if !matches!(slot.stage, Stage::Fetching { hash: h, .. } if h == hash) {
            out.push(SinkAction::Discard { path, hash });
            return;
        }
        let Some(entry) = slot.entry.clone() else {
            return;
        };
        if self.immutable.matches(&path, false) {
            self.refuse(&path, "at commit");
            self.slots.remove(&path);
            out.push(SinkAction::Discard { path, hash });
            return;
        }
        let op = Op::Write {
            entry,
            content: Content::Staged,
        };
        let stage = self.apply_or_wait(&path, op, out);
        self.slots.set_stage(&path, stage);
    }

    /// Acknowledges the longest settled prefix of sequence numbers.
    fn advance(&mut self, out: &mut Vec<SinkAction>) {
        let slots = &self.slots;
        self.held.retain(|p, _| slots.contains_key(p));
        let floor = self
            .slots
            .min_seq()
            .into_iter()
            .chain(self.parked.min_seq())
            .chain(self.held.values().copied())
            .min()
            .map(|m| m.saturating_sub(1));
        let target = floor.map_or(self.seen, |f| f.min(self.seen));
        if target > self.applied {
            self.applied = target;
            out.push(SinkAction::Ack { seq: target });
        }
    }

    fn insert(&mut self, e: Entry) {
        self.remove(&e.path);
        if let Some(h) = file_hash(&e) {
            match self.by_hash.entry(h) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(PathSet::One(e.path.clone()));
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    o.get_mut().insert(e.path.clone())
                }
            }
        }
        if e.kind == EntryKind::File {
            self.files += 1;
            self.bytes += e.size;
        }
        self.entries.insert(e.path.clone(), e);
    }

    fn remove(&mut self, path: &RelPath) {
        let Some(old) = self.entries.remove(path) else {
            return;
        };
        if old.kind == EntryKind::File {
            self.files -= 1;
            self.bytes -= old.size;
        }
        if let Some(h) = file_hash(&old)
            && let Some(set) = self.by_hash.get_mut(&h)
            && set.remove(path)
        {
            self.by_hash.remove(&h);
        }
    }
}
