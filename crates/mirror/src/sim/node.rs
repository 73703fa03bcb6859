//! The simulated node: random edits of its workspace, the scans that observe
//! them, and the source engine's actions performed against its durable state
//! (with crashes between the parts of a record).

use ganglion_core::RelPath;
use rand::Rng;
use rand::rngs::StdRng;

use super::{Node, Sim, ToHub, p};
use crate::engine::{Observation, SourceAction, SourceEvent, Tombstone};
use crate::entry::{ContentHash, Entry, EntryKind, Replica, Version};

const NAMES: &[&str] = &["a", "b", "c"];

impl Sim {
    pub(super) fn random_path(&mut self) -> RelPath {
        let depth = self.rng.random_range(1..=3);
        let parts: Vec<&str> = (0..depth)
            .map(|_| NAMES[self.rng.random_range(0..NAMES.len())])
            .collect();
        p(&parts.join("/"))
    }

    /// One random edit of the workspace; returns the paths it touched.
    pub(super) fn edit(&mut self) -> Vec<RelPath> {
        let path = self.random_path();
        let mut touched = vec![path.clone()];
        self.clock += 1;
        match self.rng.random_range(0..10) {
            0..=3 => self.write_file(path),
            4 => {
                if self.make_parents(&path) && !self.node_fs.contains_key(&path) {
                    self.node_fs.insert(path, Node::Dir);
                }
            }
            5 => self.make_link(path),
            6 | 7 => touched.extend(self.move_tree(&path)),
            8 => {
                self.discard_held(&path);
                let gone: Vec<RelPath> = self
                    .node_fs
                    .keys()
                    .filter(|k| k.starts_with(&path))
                    .cloned()
                    .collect();
                for k in gone {
                    self.node_fs.remove(&k);
                }
            }
            _ => {
                // chmod or touch: stat changes, maybe the exec bit.
                let flip = self.rng.random_bool(0.5) && (!self.two_way || self.opts.exec_bits);
                if let Some(Node::File { exec, mtime, .. }) = self.node_fs.get_mut(&path) {
                    *mtime = self.clock;
                    if flip {
                        *exec = !*exec;
                    }
                }
            }
        }
        touched
    }

    /// Writes a small random file (a new inode) unless a directory is there.
    fn write_file(&mut self, path: RelPath) {
        let data = if self.two_way {
            self.new_content(b'n')
        } else {
            let len = self.rng.random_range(0..3);
            (0..len)
                .map(|_| b"xy"[self.rng.random_range(0..2)])
                .collect()
        };
        let exec = self.rng.random_bool(0.2) && (!self.two_way || self.opts.exec_bits);
        if self.make_parents(&path) && !matches!(self.node_fs.get(&path), Some(Node::Dir)) {
            self.discard_held(&path);
            self.written(&data);
            self.next_inode += 1;
            let node = Node::File {
                data,
                exec,
                inode: self.next_inode,
                mtime: self.clock,
            };
            self.node_fs.insert(path, node);
        }
    }

    /// Makes a symlink pointing out of the workspace, unless a directory is there.
    fn make_link(&mut self, path: RelPath) {
        let target = if self.rng.random_bool(0.5) {
            "/etc/passwd".into()
        } else {
            "../../x".into()
        };
        if self.make_parents(&path) && !matches!(self.node_fs.get(&path), Some(Node::Dir)) {
            self.discard_held(&path);
            self.node_fs.insert(path, Node::Link(target));
        }
    }

    /// Moves `path` and everything below it to a random path (replacing what
    /// is there, unless a directory); returns the destination if it moved.
    fn move_tree(&mut self, path: &RelPath) -> Option<RelPath> {
        let dst = self.random_path();
        if !self.node_fs.contains_key(path) || dst.starts_with(path) || path.starts_with(&dst) {
            return None;
        }
        let moved: Vec<(RelPath, Node)> = self
            .node_fs
            .range(path.clone()..)
            .filter(|(k, _)| k.starts_with(path))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let dst_is_dir = matches!(self.node_fs.get(&dst), Some(Node::Dir));
        if dst_is_dir || !self.make_parents(&dst) {
            return None;
        }
        self.discard_held(&dst);
        for (k, _) in &moved {
            self.node_fs.remove(k);
        }
        for (k, v) in moved {
            let rest = &k.as_str()[path.as_str().len()..];
            self.node_fs.insert(p(&format!("{dst}{rest}")), v);
        }
        Some(dst)
    }

    /// Makes the parents of `path` directories; false if a non-dir is in the way.
    fn make_parents(&mut self, path: &RelPath) -> bool {
        let mut cur = path.parent();
        let mut chain = Vec::new();
        while let Some(d) = cur {
            match self.node_fs.get(&d) {
                Some(Node::Dir) => break,
                Some(_) => return false,
                None => chain.push(d.clone()),
            }
            cur = d.parent();
        }
        for d in chain {
            self.node_fs.insert(d, Node::Dir);
        }
        true
    }

    pub(super) fn stat(&self, path: &RelPath, node: &Node) -> Entry {
        let (kind, size, mode, inode, mtime, target, hash) = match node {
            Node::Dir => (EntryKind::Dir, 0, 0o755, 0, 0, None, None),
            Node::Link(t) => (
                EntryKind::Symlink,
                t.len() as u64,
                0o777,
                0,
                0,
                Some(t.clone()),
                None,
            ),
            Node::File {
                data,
                exec,
                inode,
                mtime,
            } => {
                let mode = if *exec { 0o755 } else { 0o644 };
                (
                    EntryKind::File,
                    data.len() as u64,
                    mode,
                    *inode,
                    *mtime,
                    None,
                    Some(ContentHash::of(data)),
                )
            }
        };
        Entry {
            path: path.clone(),
            kind,
            size,
            mtime_ns: mtime,
            mode,
            inode,
            dev: 1,
            symlink_target: target,
            hash,
            seq: 0,
            version: Version {
                origin: Replica::Node,
                seq: 0,
            },
        }
    }

    pub(super) fn observe_full(&mut self) {
        let all = self.node_fs.iter().map(|(k, v)| self.stat(k, v)).collect();
        self.node_event(SourceEvent::Observed(Observation::Full(all)));
    }

    pub(super) fn observe_partial(&mut self, touched: Vec<RelPath>) {
        let mut upserts = Vec::new();
        let mut removed = Vec::new();
        for t in touched {
            if self.node_fs.contains_key(&t) {
                let mut a = t.parent();
                while let Some(d) = a {
                    upserts.push(self.stat(&d, &Node::Dir));
                    a = d.parent();
                }
                for (k, v) in self.node_fs.iter().filter(|(k, _)| k.starts_with(&t)) {
                    upserts.push(self.stat(k, v));
                }
            } else {
                removed.push(t);
            }
        }
        self.node_event(SourceEvent::Observed(Observation::Partial {
            upserts,
            removed,
        }));
    }

    pub(super) fn node_event(&mut self, ev: SourceEvent) {
        self.log.push(format!("node <- {ev:?}"));
        let actions = self.node.handle(ev);
        self.perform_node(actions);
    }

    /// Performs the node engine's actions; false if the node crashed
    /// between them (what follows is lost with its memory).
    pub(super) fn perform_node(&mut self, actions: Vec<SourceAction>) -> bool {
        self.log.push(format!("node -> {actions:?}"));
        let mut actions = actions.into_iter().peekable();
        while let Some(a) = actions.next() {
            let recorded = matches!(a, SourceAction::Record { .. });
            match a {
                SourceAction::Record {
                    entries,
                    tombstones,
                    seq,
                } => {
                    let d = &mut self.node_disk;
                    for t in tombstones {
                        d.entries.retain(|e| e.path != t.path);
                        d.tombstones.retain(|x| x.path != t.path);
                        d.tombstones.push(t);
                    }
                    for e in entries {
                        d.entries.retain(|x| x.path != e.path);
                        d.tombstones.retain(|x| x.path != e.path);
                        d.entries.push(e);
                    }
                    d.seq = seq;
                }
                SourceAction::PersistAck { seq } => {
                    self.node_disk.acked = seq;
                    self.node_disk
                        .tombstones
                        .retain(|t: &Tombstone| t.seq > seq);
                }
                SourceAction::Send(n) => {
                    if self.connected {
                        self.to_hub.push_back(ToHub::Notice(n));
                    }
                }
                SourceAction::Upload { path, hash, .. } => {
                    // The stream carries whatever the file holds now.
                    let data = match self.node_fs.get(&path) {
                        Some(Node::File { data, .. }) => data.clone(),
                        _ => Vec::new(),
                    };
                    if self.connected {
                        self.to_hub.push_back(ToHub::Upload { path, hash, data });
                    }
                }
                SourceAction::Rescan { path } => self.observe_partial(vec![path]),
            }
            let crash = |r: &mut StdRng| r.random_ratio(1, 16);
            if recorded && actions.peek().is_some() && self.crash_rng.as_mut().is_some_and(crash) {
                self.log
                    .push("node crash after a record, before what follows it".into());
                self.crash_node();
                return false;
            }
        }
        true
    }
}
