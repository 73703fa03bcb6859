//! The simulated hub: the sink engine's actions performed against a model
//! of the mirror and its index, with the receiver's commit semantics
//! (stage, retract, place, publish) and injected full disks.

use ganglion_core::RelPath;
use rand::Rng;

use super::{Fs, Node, Sim, ToNode};
use crate::engine::{Content, Op, SinkAction, SinkEvent, TransferFailure};
use crate::entry::{ContentHash, Entry};

/// A commit's done and failed ops.
type Outcome = (Vec<Op>, Vec<(Op, TransferFailure)>);

impl Sim {
    pub(super) fn hub_event(&mut self, ev: SinkEvent) {
        self.log.push(format!("hub <- {ev:?}"));
        let actions = self.hub.handle(ev);
        // Checks the engine's running counts against a full count.
        let _ = self.hub.stats();
        self.perform_hub(actions);
    }

    /// Performs the sink engine's actions.
    pub(super) fn perform_hub(&mut self, actions: Vec<SinkAction>) {
        self.log.push(format!("hub -> {actions:?}"));
        for a in actions {
            match a {
                SinkAction::Fetch { path, hash, .. } => {
                    if self.connected {
                        self.to_node.push_back(ToNode::Need { path, hash });
                    }
                }
                SinkAction::Discard { path, hash } => {
                    if self.staged.get(&path).is_some_and(|s| s.0 == hash) {
                        self.staged.remove(&path);
                    }
                }
                SinkAction::Apply(op) => self.batch.push(op),
                SinkAction::Ack { seq } => {
                    self.hub_disk.applied = seq;
                    if self.violation.is_none()
                        && let Err(e) = self.check_ack(seq)
                    {
                        self.violation = Some(e);
                    }
                    if self.connected {
                        self.to_node.push_back(ToNode::Ack(seq));
                    }
                }
                SinkAction::RetryLater { path, .. } => self.timers.push(path),
            }
        }
    }

    pub(super) fn receive_upload(&mut self, path: RelPath, hash: ContentHash, data: Vec<u8>) {
        let failure = match self.locks.acquire("node", &path) {
            Err(_) => Some(TransferFailure::Cancelled),
            Ok(_) if self.disk_full && self.rng.random_bool(0.3) => Some(TransferFailure::DiskFull),
            Ok(_) if ContentHash::of(&data) != hash => Some(TransferFailure::HashMismatch),
            Ok(guard) => {
                self.staged.insert(path.clone(), (hash, data, guard));
                None
            }
        };
        match failure {
            None => self.hub_event(SinkEvent::Staged {
                path: path.clone(),
                hash,
            }),
            Some(f) => self.hub_event(SinkEvent::FetchFailed {
                path: path.clone(),
                hash,
                failure: f,
            }),
        }
        if self.connected {
            self.to_node.push_back(ToNode::UploadOutcome {
                path,
                hash,
                failure,
            });
        }
    }

    /// Group commit with the receiver's semantics; `crash_mid` stops after
    /// the place step (the retract transaction is durable, publish is not).
    pub(super) fn commit(&mut self, crash_mid: bool) {
        let ops = self.hub.admit(std::mem::take(&mut self.batch));
        if let Some((done, failed)) = self.commit_ops(ops, crash_mid, false) {
            self.hub_event(SinkEvent::Committed { done, failed });
        }
    }

    /// Stages, retracts, places and publishes `ops` (the receiver's
    /// commit); `None` if the hub crashed before the publish step.
    pub(super) fn commit_ops(
        &mut self,
        ops: Vec<Op>,
        crash_mid: bool,
        all_or_nothing: bool,
    ) -> Option<Outcome> {
        let mut prepared = Vec::new();
        let mut failed = Vec::new();
        for op in ops {
            match self.stage(&op) {
                Ok(node) => prepared.push((op, node)),
                Err(f) => failed.push((op, f)),
            }
        }
        if all_or_nothing && !failed.is_empty() {
            // `Receiver::commit_with`: nothing of a hub-side write is placed.
            return Some((Vec::new(), failed));
        }
        for (op, _) in &prepared {
            self.hub_disk.index.remove(op.path());
            match op {
                Op::Move { from, entry } => {
                    self.hub_disk.index.remove(from);
                    self.hub_disk.index.retain(|k, _| !k.starts_with(from));
                    self.hub_disk
                        .index
                        .retain(|k, _| !k.starts_with(&entry.path));
                }
                Op::Delete { path, .. } => self.hub_disk.index.retain(|k, _| !k.starts_with(path)),
                Op::Write { entry, .. } | Op::Symlink { entry } => self
                    .hub_disk
                    .index
                    .retain(|k, _| !k.starts_with(&entry.path)),
                _ => {}
            }
            let mut cur = if matches!(op, Op::Delete { .. }) {
                None
            } else {
                op.path().parent()
            };
            while let Some(d) = cur {
                if self.hub_disk.files.get(&d).is_some_and(|n| *n != Node::Dir) {
                    self.hub_disk.index.remove(&d);
                }
                cur = d.parent();
            }
        }
        let mut done = Vec::new();
        for (op, node) in prepared {
            match self.place(&op, node) {
                Ok(()) => done.push(op),
                Err(f) => failed.push((op, f)),
            }
        }
        if crash_mid {
            self.log.push("hub crash mid-commit".into());
            self.crash_hub();
            return None;
        }
        for e in crate::receive::survivors(&done) {
            self.hub_disk.index.insert(e.path.clone(), e);
        }
        Some((done, failed))
    }

    pub(super) fn stage(&mut self, op: &Op) -> Result<Option<Node>, TransferFailure> {
        let mode_exec = |e: &Entry| e.is_executable();
        match op {
            Op::Write { entry, content } => {
                let hash = entry.hash.ok_or(TransferFailure::Io)?;
                if self.disk_full && self.rng.random_bool(0.2) {
                    self.staged.remove(&entry.path);
                    return Err(TransferFailure::DiskFull);
                }
                let data = match content {
                    Content::Staged
                        if self
                            .hub_content
                            .as_ref()
                            .is_some_and(|(p, h, _)| *p == entry.path && *h == hash) =>
                    {
                        self.hub_content.take().map(|c| c.2).unwrap_or_default()
                    }
                    Content::Staged => match self.staged.remove(&entry.path) {
                        Some((h, d, _guard)) if h == hash => d,
                        _ => return Err(TransferFailure::Io),
                    },
                    Content::Empty => Vec::new(),
                    Content::Copy(from) => match self.hub_disk.files.get(from) {
                        Some(Node::File { data, .. }) if ContentHash::of(data) == hash => {
                            data.clone()
                        }
                        _ => return Err(TransferFailure::HashMismatch),
                    },
                };
                Ok(Some(Node::File {
                    data,
                    exec: mode_exec(entry),
                    inode: 0,
                    mtime: 0,
                }))
            }
            Op::Symlink { entry } => Ok(Some(Node::Link(
                entry.symlink_target.clone().unwrap_or_default(),
            ))),
            Op::Delete { .. } | Op::Mkdir { .. } | Op::Move { .. } => Ok(None),
        }
    }

    pub(super) fn place(&mut self, op: &Op, node: Option<Node>) -> Result<(), TransferFailure> {
        let files = &mut self.hub_disk.files;
        let ensure_parents = |files: &mut Fs, path: &RelPath| {
            let mut cur = path.parent();
            while let Some(d) = cur {
                if !matches!(files.get(&d), Some(Node::Dir)) {
                    files.insert(d.clone(), Node::Dir);
                }
                cur = d.parent();
            }
        };
        let clear_dir = |files: &mut Fs, path: &RelPath| -> Result<(), TransferFailure> {
            if matches!(files.get(path), Some(Node::Dir)) {
                files.retain(|k, _| !k.starts_with(path));
            }
            Ok(())
        };
        match op {
            Op::Write { entry, .. } | Op::Symlink { entry } => {
                ensure_parents(files, &entry.path);
                clear_dir(files, &entry.path)?;
                files.insert(entry.path.clone(), node.ok_or(TransferFailure::Io)?);
            }
            Op::Move { from, entry } => {
                ensure_parents(files, &entry.path);
                clear_dir(files, &entry.path)?;
                if matches!(files.get(from), Some(Node::Dir)) {
                    // A hub-side move of a directory: the rename takes
                    // everything below it.
                    let below: Vec<(RelPath, Node)> = files
                        .iter()
                        .filter(|(k, _)| k.starts_with(from))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    for (k, v) in below {
                        files.remove(&k);
                        let rest = &k.as_str()[from.as_str().len()..];
                        if let Ok(np) = RelPath::parse(&format!("{}{rest}", entry.path)) {
                            files.insert(np, v);
                        }
                    }
                    return Ok(());
                }
                let moved = match files.get(from) {
                    Some(Node::File { data, .. }) => Node::File {
                        data: data.clone(),
                        exec: entry.is_executable(),
                        inode: 0,
                        mtime: 0,
                    },
                    // A hub-side move of a link.
                    Some(Node::Link(t)) => Node::Link(t.clone()),
                    _ => return Err(TransferFailure::Io),
                };
                files.remove(from);
                files.insert(entry.path.clone(), moved);
            }
            Op::Mkdir { entry } => {
                ensure_parents(files, &entry.path);
                if !matches!(files.get(&entry.path), Some(Node::Dir)) {
                    files.insert(entry.path.clone(), Node::Dir);
                }
            }
            Op::Delete { path, .. } => files.retain(|k, _| !k.starts_with(path)),
        }
        Ok(())
    }
}
