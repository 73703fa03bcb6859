//! The simulated node applying hub-side changes: `apply.rs`'s semantics on
//! the in-memory workspace (compare-and-swap against the change's base, the
//! swapped-out state checked again, conflict copies, an edit beats a delete,
//! a local directory beats a file, parents made directories), and the node
//! worker's order around it (`hub_changes.rs`): apply → record as agreed →
//! `out_acked` → conflicts → `Applied` → resend. A local write can be
//! injected right before the swap (it raced the check), a download can be
//! cut (tried again later), and the node can crash between the record and
//! what follows it.
//!
//! An in-memory model rather than the real [`crate::apply::Applier`] on a
//! temporary directory: the simulation's workspace is the in-memory tree
//! every other step edits and scans, a real directory would have to be
//! copied in and out around each apply (with an fsync per swap, thousands
//! per seed), and the real writer has its own tests on a real filesystem
//! (`apply/tests.rs`, including a write racing the swap).

use ganglion_core::RelPath;
use rand::Rng;

use super::{Node, Sim, ToHub};
use crate::apply::Applied;
use crate::change::{Base, Conflict, HubChange, HubOp, conflict_path};
use crate::entry::ContentHash;

/// The origin of the node's conflict copies.
const NODE_NAME: &str = "node";

fn base_of(node: Option<&Node>) -> Base {
    match node {
        None => Base::Absent,
        Some(Node::Dir) => Base::Dir,
        Some(Node::Link(t)) => Base::Symlink(t.clone()),
        Some(Node::File { data, .. }) => Base::File(ContentHash::of(data)),
    }
}

impl Sim {
    fn current(&self, path: &RelPath) -> Base {
        base_of(self.node_fs.get(path))
    }

    fn new_file(&mut self, data: Vec<u8>, exec: bool) -> Node {
        self.next_inode += 1;
        Node::File {
            data,
            exec,
            inode: self.next_inode,
            mtime: self.clock,
        }
    }

    /// Puts `node` at a free conflict-copy name next to `path`.
    fn place_copy(&mut self, node: Node, path: &RelPath, origin: &str, out: &mut Applied) {
        let now = self.now();
        for attempt in 0.. {
            let copy = conflict_path(path, now, origin, attempt);
            if !self.node_fs.contains_key(&copy) {
                self.log.push(format!("node: {path} kept as {copy}"));
                self.node_fs.insert(copy.clone(), node);
                out.conflicts.push(Conflict {
                    path: path.clone(),
                    conflict_path: copy,
                    origin: origin.to_owned(),
                    detected_at: now,
                });
                return;
            }
        }
    }

    /// Makes the parents of `path` directories; a file or link in the way
    /// is kept aside as a conflict copy.
    fn apply_parents(&mut self, path: &RelPath, out: &mut Applied) {
        let mut chain = Vec::new();
        let mut cur = path.parent();
        while let Some(d) = cur {
            cur = d.parent();
            chain.push(d);
        }
        for d in chain.into_iter().rev() {
            match self.node_fs.get(&d) {
                Some(Node::Dir) => continue,
                Some(_) => {
                    let old = self.node_fs.remove(&d).expect("present");
                    self.place_copy(old, &d, NODE_NAME, out);
                }
                None => {}
            }
            self.node_fs.insert(d.clone(), Node::Dir);
            out.agreed.push(d);
        }
    }

    /// `Applier::put` on the model.
    fn model_put(
        &mut self,
        path: &RelPath,
        data: Vec<u8>,
        exec: bool,
        base: &Base,
        inject: bool,
    ) -> Applied {
        let mut out = Applied::default();
        self.apply_parents(path, &mut out);
        let hash = ContentHash::of(&data);
        for _ in 0..8 {
            match self.current(path) {
                c if c == Base::File(hash) => {}
                Base::Absent => {
                    let f = self.new_file(data, exec);
                    self.node_fs.insert(path.clone(), f);
                }
                Base::Dir => {
                    // A local directory beats the hub's file.
                    let f = self.new_file(data, exec);
                    self.place_copy(f, path, "hub", &mut out);
                    out.resend.push(path.clone());
                    return out;
                }
                c if &c == base => {
                    if inject {
                        // A local write races the swap.
                        self.log
                            .push(format!("node edits {path} right before the swap"));
                        self.discard_held(path);
                        let d = self.new_content(b'n');
                        self.written(&d);
                        let f = self.new_file(d, false);
                        self.node_fs.insert(path.clone(), f);
                    }
                    let f = self.new_file(data, exec);
                    let old = self.node_fs.insert(path.clone(), f);
                    if &base_of(old.as_ref()) != base {
                        let old = old.expect("not the base: present");
                        self.place_copy(old, path, NODE_NAME, &mut out);
                    }
                }
                _ => {
                    // A concurrent local version: kept as the conflict copy.
                    let old = self.node_fs.remove(path).expect("present");
                    self.place_copy(old, path, NODE_NAME, &mut out);
                    continue;
                }
            }
            out.agreed.push(path.clone());
            return out;
        }
        unreachable!("the model does not change during a put")
    }

    /// Whether a path below a directory the hub deletes still holds what
    /// the hub knows: its entry is acknowledged (at or below `known`) and
    /// its stat unchanged.
    fn unchanged(&self, rel: &RelPath, known: u64) -> bool {
        let acked = self.node.acked().min(known);
        let Some(prior) = self.node.entry(rel).filter(|e| e.seq <= acked) else {
            return false;
        };
        self.node_fs.get(rel).is_some_and(|n| {
            let now = self.stat(rel, n);
            now.same_stat(prior) && now.same_content(prior)
        })
    }

    /// `Applier::delete` on the model.
    fn model_delete(&mut self, path: &RelPath, base: &Base, known: u64) -> Applied {
        let mut out = Applied::default();
        match self.current(path) {
            Base::Absent => out.removed.push(path.clone()),
            Base::Dir => {
                if self.delete_tree(path, known, &mut out) {
                    out.removed.push(path.clone());
                } else {
                    out.resend.push(path.clone());
                }
            }
            c if &c == base => {
                self.node_fs.remove(path);
                out.removed.push(path.clone());
            }
            // An edit beats a delete.
            _ => out.resend.push(path.clone()),
        }
        out
    }

    fn delete_tree(&mut self, dir: &RelPath, known: u64, out: &mut Applied) -> bool {
        let children: Vec<(RelPath, bool)> = self
            .node_fs
            .iter()
            .filter(|(k, _)| k.parent().as_ref() == Some(dir))
            .map(|(k, n)| (k.clone(), matches!(n, Node::Dir)))
            .collect();
        let mut empty = true;
        for (child, is_dir) in children {
            if is_dir {
                if self.delete_tree(&child, known, out) {
                    out.removed.push(child);
                } else {
                    empty = false;
                }
            } else if self.unchanged(&child, known) {
                self.node_fs.remove(&child);
                out.removed.push(child);
            } else {
                out.resend.push(child);
                empty = false;
            }
        }
        if empty {
            self.node_fs.remove(dir);
        }
        empty
    }

    /// `Applier::rename` on the model: `None` when it cannot be a rename.
    fn model_rename(&mut self, from: &RelPath, to: &RelPath, base: &Base) -> Option<Applied> {
        if &self.current(from) != base || self.current(to) != Base::Absent {
            return None;
        }
        let mut out = Applied::default();
        self.apply_parents(to, &mut out);
        let moved: Vec<(RelPath, Node)> = self
            .node_fs
            .iter()
            .filter(|(k, _)| k.starts_with(from))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in moved {
            self.node_fs.remove(&k);
            let rest = &k.as_str()[from.as_str().len()..];
            if let Ok(np) = RelPath::parse(&format!("{to}{rest}")) {
                self.node_fs.insert(np, v);
            }
        }
        out.removed.push(from.clone());
        out.agreed.push(to.clone());
        Some(out)
    }

    /// Applies the hub-side change in front of the node's queue (the node
    /// worker's `apply_hub_changes`, one change).
    pub(super) fn apply_hub_change(&mut self) {
        let Some(change) = self.node_queue.front().cloned() else {
            return;
        };
        self.clock += 1;
        let faults = self.crash_rng.is_some();
        if change.seq <= self.node_out_acked {
            // Applied before a reconnect: acknowledged again.
            self.node_queue.pop_front();
            if self.connected {
                self.to_hub.push_back(ToHub::Applied(change.seq));
            }
            return;
        }
        self.log.push(format!("node applies {change:?}"));
        match &change.op {
            HubOp::Put {
                path,
                hash,
                executable,
                ..
            } => {
                if !self.connected {
                    return;
                }
                if faults && self.rng.random_ratio(1, 8) {
                    self.log.push("download cut; tried again later".into());
                    return;
                }
                let data = match self.hub_disk.files.get(path) {
                    Some(Node::File { data, .. }) if ContentHash::of(data) == *hash => {
                        Some(data.clone())
                    }
                    _ => None,
                };
                let applied = match data {
                    // Gone: a newer change replaced it; its parents stay
                    // (`Applier::parents_only`, see `Options`).
                    None if self.opts.parents_when_gone => {
                        let mut out = Applied::default();
                        self.apply_parents(path, &mut out);
                        out
                    }
                    None => Applied::default(),
                    Some(data) => {
                        let inject = faults && self.rng.random_ratio(1, 4);
                        self.model_put(path, data, *executable, &change.base, inject)
                    }
                };
                self.settle(&change, applied, None);
            }
            HubOp::Delete { path } => {
                // What the hub knew of the node's changes when it planned
                // the delete (see `Options::known_at_plan`).
                let known = if self.opts.known_at_plan {
                    self.planned_known.get(&change.seq).copied().unwrap_or(0)
                } else {
                    u64::MAX
                };
                let applied = self.model_delete(path, &change.base, known);
                self.settle(&change, applied, None);
            }
            HubOp::Move { from, to } => match self.model_rename(from, to, &change.base) {
                Some(applied) => self.settle(&change, applied, Some((from.clone(), to.clone()))),
                None => self.move_as_content(change.clone()),
            },
        }
    }

    /// A move that cannot be a rename here: a delete of the source (which
    /// an edit beats) and a put of a file's content, both with its seq.
    fn move_as_content(&mut self, change: HubChange) {
        let HubOp::Move { from, to } = &change.op else {
            return;
        };
        self.node_queue.pop_front();
        let mut steps = vec![HubChange {
            seq: change.seq,
            op: HubOp::Delete { path: from.clone() },
            base: change.base.clone(),
        }];
        if let Base::File(hash) = change.base {
            steps.insert(
                0,
                HubChange {
                    seq: change.seq,
                    op: HubOp::Put {
                        path: to.clone(),
                        hash,
                        size: 0,
                        executable: false,
                    },
                    base: Base::Absent,
                },
            );
        }
        for s in steps.into_iter().rev() {
            self.node_queue.push_front(s);
        }
    }

    /// Records what a change left in the workspace and acknowledges it.
    fn settle(&mut self, change: &HubChange, applied: Applied, moved: Option<(RelPath, RelPath)>) {
        self.log
            .push(format!("node applied {}: {applied:?}", change.seq));
        self.node_queue.pop_front();
        let agreed = applied
            .agreed
            .iter()
            .filter_map(|p| self.node_fs.get(p).map(|n| self.stat(p, n)))
            .collect();
        let moved_ref = moved.as_ref().map(|(f, t)| (f, t));
        let actions = self
            .node
            .hub_applied(agreed, &applied.removed, moved_ref, change.seq);
        let had_record = !actions.is_empty();
        if !self.perform_node(actions) {
            return;
        }
        let crash = |r: &mut rand::rngs::StdRng| r.random_ratio(1, 16);
        if had_record && self.crash_rng.as_mut().is_some_and(crash) {
            self.log
                .push("node crash after recording a hub-side change, before out_acked".into());
            return self.crash_node();
        }
        let last_half = self.node_queue.front().is_none_or(|c| c.seq != change.seq);
        if last_half {
            self.node_out_acked = change.seq;
        }
        let copies: Vec<RelPath> = applied
            .conflicts
            .iter()
            .map(|c| c.conflict_path.clone())
            .collect();
        if self.connected {
            for c in applied.conflicts {
                self.to_hub.push_back(ToHub::Conflict(c));
            }
            if last_half {
                self.to_hub.push_back(ToHub::Applied(change.seq));
            }
        }
        // Local versions that stay go after the change's `Applied` (sent
        // before it, they meet the change still queued at the hub, which
        // skips them): the first half of a move split in two keeps them
        // for the second (see `Options::resend_after_last_half`).
        self.held_resend.extend(applied.resend);
        if last_half || !self.opts.resend_after_last_half {
            let paths = std::mem::take(&mut self.held_resend);
            let actions = self.node.resend(&paths);
            if !self.perform_node(actions) {
                return;
            }
        }
        // The watcher sees the conflict copies (or a later scan does).
        if !copies.is_empty() && self.rng.random_bool(0.7) {
            self.observe_partial(copies);
        }
    }
}
