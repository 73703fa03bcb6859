//! The simulation's invariants: acknowledgements are never early, nothing
//! is torn, and once quiet the mirror equals the node's tree.

use std::collections::BTreeMap;

use ganglion_core::RelPath;

use super::{Fs, Node, Sim};
use crate::change::HubOp;
use crate::entry::{ContentHash, EntryKind};

impl Sim {
    /// An acknowledgement of `seq` is sound: every path whose last change
    /// recorded on the node has a sequence at or below `seq` is in the hub's
    /// index as recorded (same kind, content, exec bit, link target), and
    /// every path deleted at or below `seq` is absent.
    pub(super) fn check_ack(&self, seq: u64) -> Result<(), String> {
        let index = &self.hub_disk.index;
        // A node change that met a queued hub-side change is acknowledged
        // without being applied (the node settles it when the change
        // arrives): paths at, above or below a queued change are exempt.
        let queued = |path: &RelPath| {
            self.hub_disk.outbox.values().any(|c| {
                let mut paths = vec![c.op.path()];
                if let HubOp::Move { to, .. } = &c.op {
                    paths.push(to);
                }
                paths
                    .into_iter()
                    .any(|p| path.starts_with(p) || p.starts_with(path))
            })
        };
        for e in self
            .node_disk
            .entries
            .iter()
            .filter(|e| e.seq <= seq && !queued(&e.path))
        {
            let same = index.get(&e.path).is_some_and(|h| {
                h.kind == e.kind
                    && match e.kind {
                        EntryKind::File => {
                            h.hash == e.hash && (h.mode & 0o111 != 0) == (e.mode & 0o111 != 0)
                        }
                        EntryKind::Symlink => h.symlink_target == e.symlink_target,
                        EntryKind::Dir => true,
                    }
            });
            if !same {
                return Err(format!(
                    "early ack {seq}: the node recorded {} ({:?}, seq {}) but the hub index holds {:?}",
                    e.path,
                    e.kind,
                    e.seq,
                    index.get(&e.path).map(|h| (h.kind, h.hash, h.seq))
                ));
            }
        }
        for t in self
            .node_disk
            .tombstones
            .iter()
            .filter(|t| t.seq <= seq && !queued(&t.path))
        {
            if let Some(h) = index.get(&t.path) {
                return Err(format!(
                    "early ack {seq}: the node deleted {} (seq {}) but the hub index still holds it ({:?}, seq {})",
                    t.path, t.seq, h.kind, h.seq
                ));
            }
        }
        Ok(())
    }

    /// Nothing torn: every index entry names content the mirror holds.
    pub(super) fn check_not_torn(&self) -> Result<(), String> {
        for (path, e) in &self.hub_disk.index {
            let ok = match (self.hub_disk.files.get(path), e.kind) {
                (Some(Node::Dir), EntryKind::Dir) => true,
                (Some(Node::Link(t)), EntryKind::Symlink) => Some(t) == e.symlink_target.as_ref(),
                (Some(Node::File { data, .. }), EntryKind::File) => {
                    Some(ContentHash::of(data)) == e.hash
                }
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "torn: index names {path} ({:?}) but the mirror holds {:?}",
                    e.kind,
                    self.hub_disk.files.get(path)
                ));
            }
        }
        Ok(())
    }

    pub(super) fn check_converged(&self) -> Result<(), String> {
        let strip = |fs: &Fs| -> BTreeMap<RelPath, Node> {
            fs.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Node::File { data, exec, .. } => Node::File {
                            data: data.clone(),
                            exec: *exec,
                            inode: 0,
                            mtime: 0,
                        },
                        other => other.clone(),
                    };
                    (k.clone(), v)
                })
                .collect()
        };
        let (node, hub) = (strip(&self.node_fs), strip(&self.hub_disk.files));
        if node != hub {
            let only_node: Vec<_> = node
                .iter()
                .filter(|(k, v)| hub.get(*k) != Some(*v))
                .collect();
            let only_hub: Vec<_> = hub
                .iter()
                .filter(|(k, v)| node.get(*k) != Some(*v))
                .collect();
            return Err(format!(
                "mirror differs from the node: node has {only_node:?}, hub has {only_hub:?}; hub engine {}",
                self.hub.debug_pending()
            ));
        }
        let indexed: Vec<&RelPath> = self.hub_disk.index.keys().collect();
        let present: Vec<&RelPath> = self.hub_disk.files.keys().collect();
        if indexed != present {
            return Err(format!(
                "index paths {indexed:?} differ from mirror paths {present:?}"
            ));
        }
        if self.locks.locks() != 0 || self.locks.in_flight() != 0 {
            return Err(format!(
                "leaked locks: {} held, {} in flight",
                self.locks.locks(),
                self.locks.in_flight()
            ));
        }
        if self.node.pending() != 0 {
            return Err(format!(
                "node still has {} unacknowledged changes (node seq {}, acked {}; hub applied {}; hub engine {})",
                self.node.pending(),
                self.node.seq(),
                self.node.acked(),
                self.hub.applied(),
                self.hub.debug_pending()
            ));
        }
        Ok(())
    }

    /// The two-way end state: every hub-side change applied (the outbox
    /// empty, the node's queue too), no staged content left, and no lost
    /// write (see `two_way`): every required version is some file's content.
    pub(super) fn check_two_way_end(&self) -> Result<(), String> {
        if !self.hub_disk.outbox.is_empty() || self.hub.to_node() != 0 {
            return Err(format!(
                "hub-side changes never applied: {:?}",
                self.hub_disk.outbox.values().collect::<Vec<_>>()
            ));
        }
        if !self.staged.is_empty() {
            return Err(format!(
                "staged content leaked: {:?}",
                self.staged.keys().collect::<Vec<_>>()
            ));
        }
        let held: std::collections::BTreeSet<ContentHash> = self
            .node_fs
            .values()
            .filter_map(|n| match n {
                Node::File { data, .. } => Some(ContentHash::of(data)),
                _ => None,
            })
            .collect();
        let lost: Vec<&ContentHash> = self.required.keys().filter(|h| !held.contains(h)).collect();
        if !lost.is_empty() {
            return Err(format!(
                "lost writes: {} versions nobody replaced are nowhere in the tree: {lost:?}",
                lost.len()
            ));
        }
        Ok(())
    }
}
