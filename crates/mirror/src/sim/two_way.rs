//! The two-writer simulation: the hub writes into the mirror too (puts,
//! deletes, moves planned by the sink engine and committed with their
//! outbox rows, as the hub's driver does), sends its queued changes to the
//! node, and records what the node reports (applied, conflicts).
//!
//! "No lost write", precisely: every content a side writes (a node edit, a
//! hub-side put) is a version. A version stops being required only when a
//! side that holds it at a path replaces or removes it there by its own
//! write (an edit, delete, type change or move onto it at the node; a put,
//! delete at the hub), i.e. a side only ever discards what it has seen.
//! Applying the other side's change never discards: a concurrent version
//! must survive at its path or as a conflict copy. Once quiet, every
//! required version is a file's content somewhere in the (converged) tree.
//! Most contents are made unique (a counter) so that a hash names one
//! write; the few short shared ones (which make copies and renames) are
//! not tracked.

use ganglion_core::{RelPath, Timestamp};
use rand::Rng;

use super::{Node, Sim, ToNode};
use crate::change::{Conflict, HubChange};
use crate::engine::{HubPlan, HubWrite};
use crate::entry::{ContentHash, EntryKind};

impl Sim {
    /// One step of the two-way part, or false to take an ordinary one.
    pub(super) fn two_way_step(&mut self) -> bool {
        match self.rng.random_range(0..100) {
            0..=11 => self.hub_write(),
            12..=23 => self.apply_hub_change(),
            24 if self.opts.index_loss => self.lose_node_index(),
            25..=28 => {
                let touched = self.type_change_or_case_rename();
                if self.rng.random_bool(0.7) {
                    self.observe_partial(touched);
                }
            }
            _ => return false,
        }
        true
    }

    /// The simulated wall clock (conflict names carry it).
    pub(super) fn now(&self) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + self.clock * 1000)
    }

    /// New file content, unique (tagged by `side`) or, at times, one of a
    /// few short ones (equal contents make copies and renames).
    pub(super) fn new_content(&mut self, side: u8) -> Vec<u8> {
        if self.rng.random_bool(0.3) {
            let len = self.rng.random_range(0..3);
            return (0..len)
                .map(|_| b"xy"[self.rng.random_range(0..2)])
                .collect();
        }
        self.next_content += 1;
        format!("{}{}", side as char, self.next_content).into_bytes()
    }

    /// A write made `data` a version (tracked when its content is unique:
    /// the short shared contents cannot tell one write from another).
    pub(super) fn written(&mut self, data: &[u8]) {
        if data.len() < 2 || !data[1..].iter().all(u8::is_ascii_digit) {
            return;
        }
        let h = ContentHash::of(data);
        *self.required.entry(h).or_default() += 1;
        self.log
            .push(format!("version {h} = {:?}", String::from_utf8_lossy(data)));
    }

    /// The file contents a side holds at and below `path`.
    pub(super) fn held(&self, hub: bool, path: &RelPath) -> Vec<ContentHash> {
        let fs = if hub {
            &self.hub_disk.files
        } else {
            &self.node_fs
        };
        fs.range(path.clone()..)
            .take_while(|(k, _)| k.as_str().starts_with(path.as_str()))
            .filter(|(k, _)| k.starts_with(path))
            .filter_map(|(_, n)| match n {
                Node::File { data, .. } => Some(ContentHash::of(data)),
                _ => None,
            })
            .collect()
    }

    /// A side replaced or removed these versions by its own write.
    pub(super) fn release(&mut self, versions: Vec<ContentHash>) {
        for h in versions {
            if let Some(n) = self.required.get_mut(&h) {
                *n -= 1;
                if *n == 0 {
                    self.required.remove(&h);
                }
            }
        }
    }

    /// The node replaces or removes, by its own write, what it holds at
    /// and below `path`.
    pub(super) fn discard_held(&mut self, path: &RelPath) {
        let held = self.held(false, path);
        self.release(held);
    }

    /// A path of the mirror (mostly one that exists, conflict copies too).
    fn hub_path(&mut self) -> RelPath {
        let n = self.hub_disk.index.len();
        if n > 0 && self.rng.random_bool(0.8) {
            let i = self.rng.random_range(0..n);
            if let Some(p) = self.hub_disk.index.keys().nth(i) {
                return p.clone();
            }
        }
        self.random_path()
    }

    /// A random hub-side write, its content (a put's) and an `--if-hash`
    /// (mostly none, at times the current hash or a stale one).
    fn random_hub_write(&mut self) -> (HubWrite, Vec<u8>, Option<ContentHash>) {
        let mut data = Vec::new();
        let write = match self.rng.random_range(0..10) {
            0..=5 => {
                let path = if self.rng.random_bool(0.5) {
                    self.hub_path()
                } else {
                    self.random_path()
                };
                data = self.new_content(b'h');
                HubWrite::Put {
                    path,
                    hash: ContentHash::of(&data),
                    size: data.len() as u64,
                    executable: self.rng.random_bool(0.2) && self.opts.exec_bits,
                }
            }
            6..=7 => HubWrite::Delete {
                path: self.hub_path(),
            },
            _ => HubWrite::Move {
                from: self.hub_path(),
                to: self.random_path(),
            },
        };
        let subject = match &write {
            HubWrite::Put { path, .. } | HubWrite::Delete { path } => path.clone(),
            HubWrite::Move { from, .. } => from.clone(),
        };
        let if_hash = match self.rng.random_range(0..10) {
            0 => self.hub.entry(&subject).and_then(|e| e.hash),
            1 => Some(ContentHash::of(b"stale")),
            _ => None,
        };
        (write, data, if_hash)
    }

    /// A hub-side write as the hub's driver makes one: planned (refused
    /// writes change nothing), committed with the outbox rows (or not at
    /// all: a full disk, a crash before the publish step), then node
    /// changes in the way give way, the engine follows and the outbox goes
    /// out.
    pub(super) fn hub_write(&mut self) {
        self.clock += 1;
        let now = self.now();
        let (write, data, if_hash) = self.random_hub_write();
        let plan = match self.hub.plan_hub_write(&write, if_hash.as_ref(), now) {
            Ok(plan) => plan,
            Err(refusal) => {
                self.log
                    .push(format!("hub write {write:?} refused: {refusal}"));
                return;
            }
        };
        let moves_non_file = matches!(&write, HubWrite::Move { from, .. }
            if self.hub.entry(from).is_some_and(|e| e.kind != EntryKind::File));
        if moves_non_file && !self.opts.dir_moves {
            // See `Options::dir_moves`: off by default.
            self.log.push(format!(
                "hub write {write:?} not made: it moves a directory or a link"
            ));
            return;
        }
        if !plan.superseded.is_empty() && !self.opts.supersede {
            // See the module docs: replacing queued changes is off.
            self.log.push(format!(
                "hub write {write:?} not made: it replaces queued changes"
            ));
            return;
        }
        self.log.push(format!("hub write {write:?}: {plan:?}"));
        self.commit_hub_write(&write, plan, data);
    }

    /// Commits a planned hub-side write (see [`Self::hub_write`]).
    fn commit_hub_write(&mut self, write: &HubWrite, plan: HubPlan, data: Vec<u8>) {
        let known = self.hub.applied();
        // What the hub held where it writes, before it writes.
        let discarded = match write {
            HubWrite::Put { path, .. } | HubWrite::Delete { path } => self.held(true, path),
            HubWrite::Move { .. } => Vec::new(),
        };
        if let HubWrite::Put { path, hash, .. } = write {
            self.hub_content = Some((path.clone(), *hash, data.clone()));
        }
        let crash_mid = self.opts.hub_write_crash
            && self
                .crash_rng
                .as_mut()
                .is_some_and(|r| r.random_ratio(1, 40));
        let committed = self.commit_ops(plan.ops.clone(), crash_mid, true);
        self.hub_content = None;
        let Some((_, failed)) = committed else {
            return;
        };
        if let Some((op, failure)) = failed.first() {
            // The driver reports the failure; the engine is not told.
            self.log
                .push(format!("hub write failed at {}: {failure:?}", op.path()));
            return;
        }
        // Committed: the outbox rows (and the rows below a moved
        // directory) are in the same transaction.
        for e in &plan.moved_below {
            self.hub_disk.index.insert(e.path.clone(), e.clone());
        }
        for s in &plan.superseded {
            self.hub_disk.outbox.remove(s);
        }
        for c in &plan.changes {
            self.hub_disk.outbox.insert(c.seq, c.clone());
            self.planned_known.insert(c.seq, known);
        }
        self.hub_disk.out_seq = plan.out_seq;
        self.release(discarded);
        if matches!(write, HubWrite::Put { .. }) {
            self.written(&data);
        }
        // Node changes at these paths give way once the write is in (the
        // driver did it before committing: a failed write dropped them and
        // the engine acknowledged them — seed 144).
        let actions = self.hub.give_way(&plan);
        let replaced = plan.replaced();
        self.batch
            .retain(|op| !replaced.iter().any(|p| op.path().starts_with(p)));
        self.hub.hub_committed(plan);
        self.perform_hub(actions);
        self.send_changes();
    }

    /// Sends the queued changes the node's stream has not had.
    pub(super) fn send_changes(&mut self) {
        if !self.connected {
            return;
        }
        let changes = self.hub.unsent_changes();
        if !changes.is_empty() {
            self.to_node.push_back(ToNode::Changes(changes));
        }
    }

    /// The node applied the hub-side changes up to `seq`: persisted, then
    /// they leave the outbox. The report must not claim more than the
    /// node's index holds.
    pub(super) fn hub_receives_applied(&mut self, seq: u64) {
        self.log.push(format!("hub <- Applied({seq})"));
        if self.violation.is_none() && self.node_out_acked < seq {
            self.violation = Some(format!(
                "the node reports hub-side changes applied up to {seq}, its index holds {}",
                self.node_out_acked
            ));
        }
        self.hub_disk.outbox.retain(|s, _| *s > seq);
        self.hub.hub_applied(seq);
    }

    pub(super) fn hub_receives_conflict(&mut self, c: Conflict) {
        self.log.push(format!("hub <- {c:?}"));
        self.hub_disk.conflicts.push(c.clone());
        self.hub.add_conflict(c);
    }

    /// New changes from the hub, in order (a resent one is queued once).
    pub(super) fn node_receives_changes(&mut self, changes: Vec<HubChange>) {
        self.log.push(format!("node <- changes {changes:?}"));
        for c in changes {
            if self.node_queue.back().is_none_or(|b| c.seq > b.seq) {
                self.node_queue.push_back(c);
            }
        }
    }

    /// A node edit that changes a path's type (a file becomes a directory
    /// or the other way) or renames it in case only (`a` → `A`).
    fn type_change_or_case_rename(&mut self) -> Vec<RelPath> {
        let path = self.random_path();
        self.clock += 1;
        match self.node_fs.get(&path).cloned() {
            Some(Node::Dir) if self.rng.random_bool(0.5) => {
                self.discard_held(&path);
                self.node_fs.retain(|k, _| !k.starts_with(&path));
                let data = self.new_content(b'n');
                self.written(&data);
                self.next_inode += 1;
                let node = Node::File {
                    data,
                    exec: false,
                    inode: self.next_inode,
                    mtime: self.clock,
                };
                self.node_fs.insert(path.clone(), node);
                vec![path]
            }
            Some(Node::File { .. } | Node::Link(_)) if self.rng.random_bool(0.5) => {
                self.discard_held(&path);
                self.node_fs.insert(path.clone(), Node::Dir);
                vec![path]
            }
            Some(_) => {
                let name = path.file_name();
                let upper = name.to_ascii_uppercase();
                let to = match path.parent() {
                    Some(p) => p.join(&upper),
                    None => RelPath::parse(&upper),
                };
                let Ok(to) = to else { return Vec::new() };
                if to == path || self.node_fs.contains_key(&to) {
                    return Vec::new();
                }
                let moved: Vec<(RelPath, Node)> = self
                    .node_fs
                    .iter()
                    .filter(|(k, _)| k.starts_with(&path))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (k, v) in moved {
                    self.node_fs.remove(&k);
                    let rest = &k.as_str()[path.as_str().len()..];
                    if let Ok(np) = RelPath::parse(&format!("{to}{rest}")) {
                        self.node_fs.insert(np, v);
                    }
                }
                vec![path, to]
            }
            None => Vec::new(),
        }
    }
}
