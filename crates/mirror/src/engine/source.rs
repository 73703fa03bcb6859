//! The node side: turns observations of the workspace into numbered changes,
//! sends what the hub has not acknowledged, and uploads what the hub asks for.

use std::collections::{BTreeMap, HashMap, HashSet};

use ganglion_core::RelPath;
use tracing::debug;

use super::{Notice, TransferFailure, file_hash};

mod two_way;
use crate::entry::{ContentHash, Entry, EntryKind, Replica, Version};

/// An observation with many changes (a first scan: tens of thousands) is
/// recorded and sent in parts: the first of this many changes, each next one
/// twice as large, up to 16 times this. The hub starts on the first part
/// while the node writes the next; growing parts keep the number of index
/// commits (each one synced) logarithmic until they reach the cap.
pub const RECORD_PART: usize = 1024;

/// A path that was deleted, kept until the hub acknowledges its `seq`.
/// The hash lets a resend pair it with a same-`seq` entry into a rename.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub path: RelPath,
    pub seq: u64,
    pub hash: Option<ContentHash>,
}

/// What the node's index holds durably; the engine starts from it.
#[derive(Clone, Debug, Default)]
pub struct SourceState {
    pub entries: Vec<Entry>,
    pub tombstones: Vec<Tombstone>,
    /// The last sequence number assigned.
    pub seq: u64,
    /// The last sequence number the hub acknowledged.
    pub acked: u64,
}

/// What the node saw of its workspace. Entries carry stat fields and hashes
/// (files); `seq` and `version` are assigned by the engine.
#[derive(Clone, Debug)]
pub enum Observation {
    /// A complete scan: any known path not listed is gone.
    Full(Vec<Entry>),
    /// Watcher events: these paths changed, these (and everything below) are gone.
    Partial {
        upserts: Vec<Entry>,
        removed: Vec<RelPath>,
    },
}

#[derive(Clone, Debug)]
pub enum SourceEvent {
    Observed(Observation),
    /// The control stream is up; the hub durably applied everything up to `hub_applied`.
    Connected {
        hub_applied: u64,
    },
    Disconnected,
    /// The hub durably applied everything up to `seq`.
    Ack {
        seq: u64,
    },
    /// The hub asks for this content.
    Need {
        path: RelPath,
        hash: ContentHash,
    },
    UploadDone {
        path: RelPath,
        hash: ContentHash,
    },
    UploadFailed {
        path: RelPath,
        hash: ContentHash,
        failure: TransferFailure,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceAction {
    /// Write to the node index in one transaction, BEFORE performing the
    /// actions that follow: entries (new stat and/or new seq), tombstones, and
    /// the sequence counter.
    Record {
        entries: Vec<Entry>,
        tombstones: Vec<Tombstone>,
        seq: u64,
    },
    /// Send on the control stream.
    Send(Notice),
    /// Open an upload stream with this file's content.
    Upload {
        path: RelPath,
        hash: ContentHash,
        size: u64,
    },
    /// Persist the hub's acknowledgement: set the peer sequence to `seq` and
    /// forget tombstones with `seq` at or below it.
    PersistAck { seq: u64 },
    /// Stat and hash this path again (it changed while being read).
    Rescan { path: RelPath },
}

/// The node-side state machine. See the module docs of [`crate::engine`].
#[derive(Debug)]
pub struct SourceEngine {
    entries: BTreeMap<RelPath, Entry>,
    tombstones: BTreeMap<RelPath, Tombstone>,
    seq: u64,
    acked: u64,
    connected: bool,
    uploading: HashSet<RelPath>,
    record_part: usize,
    /// Local changes a hub-side move carried along, for the next `resend`.
    carried: Vec<RelPath>,
}

impl Default for SourceEngine {
    fn default() -> Self {
        Self::new(SourceState::default())
    }
}

impl SourceEngine {
    pub fn new(state: SourceState) -> Self {
        Self {
            entries: state
                .entries
                .into_iter()
                .map(|e| (e.path.clone(), e))
                .collect(),
            tombstones: state
                .tombstones
                .into_iter()
                .map(|t| (t.path.clone(), t))
                .collect(),
            seq: state.seq,
            acked: state.acked,
            connected: false,
            uploading: HashSet::new(),
            record_part: RECORD_PART,
            carried: Vec::new(),
        }
    }

    /// Records (and sends) an observation in parts starting at `changes`
    /// changes instead of [`RECORD_PART`] (the simulation uses tiny parts to
    /// crash between them).
    pub fn with_record_part(mut self, changes: usize) -> Self {
        self.record_part = changes.max(1);
        self
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn entry(&self, path: &RelPath) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Changes assigned but not yet acknowledged (for `mirror status`).
    pub fn pending(&self) -> usize {
        let acked = self.acked;
        self.entries.values().filter(|e| e.seq > acked).count()
            + self.tombstones.values().filter(|t| t.seq > acked).count()
    }

    /// [`Self::pending`] and the file bytes of those changes.
    pub fn pending_totals(&self) -> (u64, u64) {
        let acked = self.acked;
        let (mut files, mut bytes) = (0u64, 0u64);
        for e in self.entries.values().filter(|e| e.seq > acked) {
            files += 1;
            if e.kind == EntryKind::File {
                bytes += e.size;
            }
        }
        let gone = self.tombstones.values().filter(|t| t.seq > acked).count();
        (files + gone as u64, bytes)
    }

    pub fn handle(&mut self, event: SourceEvent) -> Vec<SourceAction> {
        match event {
            SourceEvent::Observed(obs) => self.observe(obs),
            SourceEvent::Connected { hub_applied } => self.connect(hub_applied),
            SourceEvent::Disconnected => {
                self.connected = false;
                self.uploading.clear();
                Vec::new()
            }
            SourceEvent::Ack { seq } => self.ack(seq),
            SourceEvent::Need { path, hash } => self.need(path, hash),
            SourceEvent::UploadDone { path, .. } => {
                self.uploading.remove(&path);
                Vec::new()
            }
            SourceEvent::UploadFailed {
                path,
                hash,
                failure,
            } => {
                self.uploading.remove(&path);
                debug!(%path, %hash, ?failure, "upload failed");
                match failure {
                    // The file moved under us: look again, a new notice follows.
                    TransferFailure::SourceChanged | TransferFailure::HashMismatch => {
                        vec![SourceAction::Rescan { path }]
                    }
                    // The hub retries what it still needs (it knows its disk).
                    _ => Vec::new(),
                }
            }
        }
    }

    fn observe(&mut self, obs: Observation) -> Vec<SourceAction> {
        let (upserts, removed) = self.upserts_and_removals(obs);
        let (changed, stat_only) = self.classify(upserts);
        if changed.is_empty() && removed.is_empty() && stat_only.is_empty() {
            return Vec::new();
        }
        let renames = self.pair_renames(&removed, &changed);
        let numbered = self.number(changed, &removed, &renames);

        for t in &numbered.tombs {
            self.entries.remove(&t.path);
            self.tombstones.insert(t.path.clone(), t.clone());
        }
        let mut record = stat_only;
        record.extend(numbered.entries);
        for e in &record {
            self.tombstones.remove(&e.path);
            self.entries.insert(e.path.clone(), e.clone());
        }
        self.record_in_parts(record, numbered.tombs, numbered.notices)
    }

    /// The entries an observation upserts and the known paths it removes
    /// (sorted, without duplicates; an upsert of a removed path is dropped).
    fn upserts_and_removals(&self, obs: Observation) -> (Vec<Entry>, Vec<RelPath>) {
        let (upserts, mut removed): (Vec<Entry>, Vec<RelPath>) = match obs {
            Observation::Full(all) => {
                let seen: HashSet<&RelPath> = all.iter().map(|e| &e.path).collect();
                let gone = self
                    .entries
                    .keys()
                    .filter(|p| !seen.contains(p))
                    .cloned()
                    .collect();
                (all, gone)
            }
            Observation::Partial { upserts, removed } => {
                let mut gone = Vec::new();
                for r in &removed {
                    // Descendants sort after `r` but may interleave with siblings
                    // like `r-x`: scan the textual prefix, keep true descendants.
                    gone.extend(
                        self.entries
                            .range(r.clone()..)
                            .take_while(|(p, _)| p.as_str().starts_with(r.as_str()))
                            .filter(|(p, _)| p.starts_with(r))
                            .map(|(p, _)| p.clone()),
                    );
                }
                gone.extend(self.descendants_of_non_dirs(&upserts));
                (upserts, gone)
            }
        };
        let upserts: Vec<Entry> = upserts
            .into_iter()
            .filter(|e| !removed.contains(&e.path))
            .collect();
        removed.sort();
        removed.dedup();
        (upserts, removed)
    }

    /// Splits upserts into new content (needs a seq and a notice) and stat-only
    /// updates (keep their seq and version); unchanged entries are dropped.
    fn classify(&self, upserts: Vec<Entry>) -> (Vec<Entry>, Vec<Entry>) {
        let mut changed: Vec<Entry> = Vec::new();
        let mut stat_only: Vec<Entry> = Vec::new();
        for mut e in upserts {
            match self.entries.get(&e.path) {
                Some(old) if old.same_content(&e) => {
                    if !old.same_stat(&e) {
                        e.seq = old.seq;
                        e.version = old.version;
                        stat_only.push(e);
                    }
                }
                _ => changed.push(e),
            }
        }
        (changed, stat_only)
    }

    /// Pairs removals with new files of the same content: renames, as
    /// new path → old path.
    fn pair_renames(&self, removed: &[RelPath], changed: &[Entry]) -> HashMap<RelPath, RelPath> {
        let mut by_hash: HashMap<ContentHash, Vec<RelPath>> = HashMap::new();
        for p in removed {
            if let Some(h) = self.entries.get(p).and_then(file_hash) {
                by_hash.entry(h).or_default().push(p.clone());
            }
        }
        let mut rename_from: HashMap<RelPath, RelPath> = HashMap::new();
        for e in changed {
            if self.entries.contains_key(&e.path) {
                continue;
            }
            if let Some(from) = file_hash(e)
                .and_then(|h| by_hash.get_mut(&h))
                .and_then(Vec::pop)
            {
                rename_from.insert(e.path.clone(), from);
            }
        }
        rename_from
    }

    /// Assigns sequence numbers in the order the hub must apply the changes.
    /// Deletes first, deepest first, so a dir is emptied before it goes and a
    /// file replaced by a dir (or back) never collides; then new content in
    /// path order. Except a rename out of a deleted directory (`mv d/e/f d/g;
    /// rm -r d/e`): it goes before that delete, or the hub's copy of its
    /// content would be deleted first and sent again. Only when nothing
    /// removed is at, above or below its target, so the rename cannot collide
    /// with a delete.
    fn number(
        &mut self,
        mut changed: Vec<Entry>,
        removed: &[RelPath],
        rename_from: &HashMap<RelPath, RelPath>,
    ) -> Numbered {
        let renamed: HashSet<&RelPath> = rename_from.values().collect();
        let mut plain_deletes: Vec<&RelPath> =
            removed.iter().filter(|p| !renamed.contains(p)).collect();
        plain_deletes.sort_by(|a, b| b.cmp(a));
        changed.sort_by(|a, b| a.path.cmp(&b.path));
        let hoist = |e: &Entry| {
            rename_from.get(&e.path).is_some_and(|from| {
                plain_deletes.iter().any(|d| from.starts_with(d))
                    && !removed
                        .iter()
                        .any(|r| e.path.starts_with(r) || r.starts_with(&e.path))
            })
        };
        let (mut early, mut changed): (Vec<Entry>, Vec<Entry>) =
            changed.into_iter().partition(|e| hoist(e));

        let mut out = Numbered::default();
        for e in &mut early {
            self.seq += 1;
            stamp(e, self.seq);
            out.rename(&rename_from[&e.path], e);
        }
        for p in plain_deletes {
            self.seq += 1;
            let hash = self.entries.get(p).and_then(file_hash);
            out.tombs.push(Tombstone {
                path: p.clone(),
                seq: self.seq,
                hash,
            });
            out.notices.push(Notice::Delete {
                path: p.clone(),
                seq: self.seq,
            });
        }
        for e in &mut changed {
            self.seq += 1;
            stamp(e, self.seq);
            match rename_from.get(&e.path) {
                Some(from) => out.rename(from, e),
                None => out.notices.push(Notice::Upsert(e.clone())),
            }
        }
        out.entries = early;
        out.entries.extend(changed);
        out
    }

    /// `Record` then `Send` per part of notices (see [`RECORD_PART`]), in seq order.
    /// A part records exactly the entries and tombstones up to its last seq
    /// (stat-only updates, which keep older seqs, go in the first), so each
    /// prefix of the parts is a state the index could have been in: a crash
    /// between parts loses only later changes, which the next scan observes
    /// again. Nothing is sent before it is recorded.
    fn record_in_parts(
        &self,
        record: Vec<Entry>,
        tombs: Vec<Tombstone>,
        notices: Vec<Notice>,
    ) -> Vec<SourceAction> {
        // `record` is stat-only entries (older seqs) then new ones in seq
        // order; `tombs` and `notices` are in seq order.
        let mut record = record.into_iter().peekable();
        let mut tombs = tombs.into_iter().peekable();
        let mut notices = notices.into_iter().peekable();
        let mut actions = Vec::new();
        let mut size = self.record_part;
        loop {
            let part: Vec<Notice> = notices.by_ref().take(size).collect();
            size = (size * 2).min(self.record_part * 16);
            let upto = match (part.last(), notices.peek()) {
                (Some(last), Some(_)) => last.seq(),
                // The last part also takes whatever has no notice.
                _ => self.seq,
            };
            let entries = std::iter::from_fn(|| record.next_if(|e| e.seq <= upto)).collect();
            let tombstones = std::iter::from_fn(|| tombs.next_if(|t| t.seq <= upto)).collect();
            actions.push(SourceAction::Record {
                entries,
                tombstones,
                seq: upto,
            });
            if self.connected {
                actions.extend(part.into_iter().map(SourceAction::Send));
            }
            if notices.peek().is_none() {
                return actions;
            }
        }
    }

    /// Known paths below an upserted path that is no longer a directory.
    fn descendants_of_non_dirs(&self, upserts: &[Entry]) -> Vec<RelPath> {
        let mut out = Vec::new();
        for e in upserts.iter().filter(|e| e.kind != EntryKind::Dir) {
            out.extend(
                self.entries
                    .range(e.path.clone()..)
                    .filter(|(p, _)| **p != e.path)
                    .take_while(|(p, _)| p.as_str().starts_with(e.path.as_str()))
                    .filter(|(p, _)| p.starts_with(&e.path))
                    .map(|(p, _)| p.clone()),
            );
        }
        out
    }

    fn connect(&mut self, hub_applied: u64) -> Vec<SourceAction> {
        self.connected = true;
        self.uploading.clear();
        let mut actions = Vec::new();
        // An index that never had an acknowledgement while the hub applied
        // changes of this node: it was lost (or never persisted one), and
        // numbers at or below `hub_applied` may name other changes than the
        // hub applied (a scan numbered them before this connection).
        let fresh = self.acked == 0 && hub_applied > 0;
        if hub_applied != self.acked {
            debug!(
                hub_applied,
                acked = self.acked,
                "hub reports a different applied sequence, resending from it"
            );
            self.acked = hub_applied;
            actions.push(SourceAction::PersistAck { seq: hub_applied });
        }
        if hub_applied > self.seq || fresh {
            // Our index is older than what the hub saw (node index lost):
            // jump ahead so new changes are not taken for stale ones, and
            // re-stamp everything so the hub re-checks the whole tree.
            self.seq = self.seq.max(hub_applied);
            let mut restamped = Vec::new();
            for e in self.entries.values_mut() {
                self.seq += 1;
                stamp(e, self.seq);
                restamped.push(e.clone());
            }
            actions.push(SourceAction::Record {
                entries: restamped,
                tombstones: Vec::new(),
                seq: self.seq,
            });
        }
        actions.extend(
            self.changes_since(hub_applied)
                .into_iter()
                .map(SourceAction::Send),
        );
        actions
    }

    /// Every change with a sequence number above `seq`, in order; a tombstone
    /// and an entry sharing a `seq` and a hash are sent as a rename.
    pub fn changes_since(&self, seq: u64) -> Vec<Notice> {
        let mut by_seq: BTreeMap<u64, (Vec<&Tombstone>, Vec<&Entry>)> = BTreeMap::new();
        for t in self.tombstones.values().filter(|t| t.seq > seq) {
            by_seq.entry(t.seq).or_default().0.push(t);
        }
        for e in self.entries.values().filter(|e| e.seq > seq) {
            by_seq.entry(e.seq).or_default().1.push(e);
        }
        let mut out = Vec::new();
        for (s, (tombs, ents)) in by_seq {
            let mut tombs = tombs;
            for e in ents {
                let paired = tombs
                    .iter()
                    .position(|t| t.hash.is_some() && t.hash == file_hash(e))
                    .map(|i| tombs.remove(i));
                match paired {
                    Some(t) => out.push(Notice::Rename {
                        from: t.path.clone(),
                        entry: e.clone(),
                    }),
                    None => out.push(Notice::Upsert(e.clone())),
                }
            }
            out.extend(tombs.into_iter().map(|t| Notice::Delete {
                path: t.path.clone(),
                seq: s,
            }));
        }
        out
    }

    fn ack(&mut self, seq: u64) -> Vec<SourceAction> {
        if seq <= self.acked {
            return Vec::new();
        }
        self.acked = seq;
        self.tombstones.retain(|_, t| t.seq > seq);
        vec![SourceAction::PersistAck { seq }]
    }

    fn need(&mut self, path: RelPath, hash: ContentHash) -> Vec<SourceAction> {
        let Some(e) = self.entries.get(&path) else {
            debug!(%path, "hub needs a path that is gone; a delete notice covers it");
            return Vec::new();
        };
        if file_hash(e) != Some(hash) {
            debug!(%path, %hash, "hub needs content that changed since; a newer notice covers it");
            return Vec::new();
        }
        if !self.connected || !self.uploading.insert(path.clone()) {
            return Vec::new();
        }
        vec![SourceAction::Upload {
            path,
            hash,
            size: e.size,
        }]
    }
}

/// The changes of one observation with their sequence numbers: the entries
/// with new content, and the tombstones and notices in seq order.
#[derive(Default)]
struct Numbered {
    entries: Vec<Entry>,
    tombs: Vec<Tombstone>,
    notices: Vec<Notice>,
}

impl Numbered {
    /// `entry` (already stamped) moved here from `from`.
    fn rename(&mut self, from: &RelPath, entry: &Entry) {
        self.tombs.push(Tombstone {
            path: from.clone(),
            seq: entry.seq,
            hash: file_hash(entry),
        });
        self.notices.push(Notice::Rename {
            from: from.clone(),
            entry: entry.clone(),
        });
    }
}

/// Gives `entry` the node's sequence number `seq` as its seq and version.
fn stamp(entry: &mut Entry, seq: u64) {
    entry.seq = seq;
    entry.version = Version {
        origin: Replica::Node,
        seq,
    };
}
