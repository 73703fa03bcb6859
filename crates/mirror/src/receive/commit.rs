//! Group commit: stage, retract, place, fsync directories, publish.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;

use cap_std::fs::Permissions;
use ganglion_core::RelPath;
use tracing::{debug, instrument, warn};

use super::{BatchOutcome, Error, Receiver, file_mode, io_err, lock};
use crate::engine::{Content, Op, TransferFailure};
use crate::entry::{ContentHash, Entry, EntryKind};
use crate::index::Batch;

/// The entries a batch leaves in place, applying its ops in order: a later
/// delete, move or file-over-directory in the same batch removes what an
/// earlier op created, so the index never names it.
pub(crate) fn survivors(done: &[Op]) -> Vec<Entry> {
    let mut out: BTreeMap<RelPath, Entry> = BTreeMap::new();
    // A range of the map, not a pass over it: batches hold thousands of ops.
    let drop_subtree = |out: &mut BTreeMap<RelPath, Entry>, p: &RelPath, keep_self: bool| {
        let below: Vec<RelPath> = out
            .range(p.clone()..)
            .take_while(|(k, _)| k.as_str().starts_with(p.as_str()))
            .filter(|(k, _)| k.starts_with(p) && (!keep_self || *k != p))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            out.remove(&k);
        }
    };
    for op in done {
        match op {
            Op::Delete { path, .. } => drop_subtree(&mut out, path, false),
            Op::Move { from, entry } => {
                out.remove(from);
                drop_subtree(&mut out, &entry.path, false);
                out.insert(entry.path.clone(), entry.clone());
            }
            Op::Mkdir { entry } => {
                out.insert(entry.path.clone(), entry.clone());
            }
            Op::Write { entry, .. } | Op::Symlink { entry } => {
                drop_subtree(&mut out, &entry.path, false);
                out.insert(entry.path.clone(), entry.clone());
            }
        }
        // Creating a path turns any non-directory parent into a directory.
        let mut cur = op.path().parent();
        while let Some(d) = cur {
            if out.get(&d).is_some_and(|e| e.kind != EntryKind::Dir)
                && !matches!(op, Op::Delete { .. })
            {
                out.remove(&d);
            }
            cur = d.parent();
        }
    }
    out.into_values().collect()
}

/// Parent directory handles of a batch being placed (a bounded number: each
/// is an open descriptor).
#[derive(Default)]
struct Parents {
    dirs: std::collections::HashMap<RelPath, cap_std::fs::Dir>,
}

impl Parents {
    const MAX: usize = 64;

    fn contains(&self, p: &RelPath) -> bool {
        self.dirs.contains_key(p)
    }

    fn get(&self, p: &RelPath) -> Option<&cap_std::fs::Dir> {
        self.dirs.get(p)
    }

    fn insert(&mut self, p: RelPath, dir: cap_std::fs::Dir) {
        if self.dirs.len() >= Self::MAX {
            self.dirs.clear();
        }
        self.dirs.insert(p, dir);
    }

    fn clear(&mut self) {
        self.dirs.clear();
    }
}

/// From this many files (or directories) to make durable, a commit flushes
/// the filesystem once (`syncfs`) instead of each one.
const GROUP_SYNC_MIN: usize = 32;

/// `syncfs` of the filesystem holding `dir`: every dirty file and directory
/// on it is durable when it returns. (The handle of a [`cap_std::fs::Dir`] is
/// `O_PATH`, which `syncfs` refuses: reopen it read-only, still confined.)
fn flush_filesystem(dir: &cap_std::fs::Dir) -> io::Result<()> {
    let mut ro = cap_std::fs::OpenOptions::new();
    ro.read(true);
    let d = dir.open_with(".", &ro)?;
    rustix::fs::syncfs(&d).map_err(io::Error::from)
}

/// A file to make durable: `Some(open file)` or `Some(None)` (reopen by name);
/// `None` for nothing to sync (a symlink, a moved source).
type ToSync = Option<Option<cap_std::fs::File>>;

/// Phase 2's retraction of a batch: the index entries its ops replace or
/// remove (and everything below those that replace a subtree), and the
/// parents of its targets, which must go if they are not directories.
fn retraction(prepared: &[Prepared]) -> (Batch, BTreeSet<RelPath>) {
    let mut retract = Batch::default();
    let mut parents: BTreeSet<RelPath> = BTreeSet::new();
    for (op, _) in prepared {
        retract.removes.push(op.path().clone());
        match op {
            Op::Move { from, entry } => {
                retract.removes.push(from.clone());
                // A directory moves with everything below it (a hub-side
                // move; the rows below its new path come with `extra`).
                retract.removes_below.push(from.clone());
                retract.removes_below.push(entry.path.clone());
            }
            Op::Delete { path, .. } => retract.removes_below.push(path.clone()),
            // A file or link replaces a directory with everything below it.
            Op::Write { entry, .. } | Op::Symlink { entry } => {
                retract.removes_below.push(entry.path.clone())
            }
            _ => {}
        }
        // A file or link where a parent directory must go is replaced
        // (deletes create no parents).
        let mut cur = if matches!(op, Op::Delete { .. }) {
            None
        } else {
            op.path().parent()
        };
        while let Some(d) = cur {
            cur = d.parent();
            if !parents.insert(d) {
                break; // this one and those above are listed already
            }
        }
    }
    (retract, parents)
}

/// A blocking task that panicked or was cancelled.
fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Io {
        op: "join",
        path: String::new(),
        source: io::Error::other(e),
    }
}

/// An op that passed staging, with the staged name of its content (if any).
type Prepared = (Op, Option<String>);

impl Receiver {
    /// Applies a batch with the durability order of the module docs.
    #[instrument(skip_all, fields(node = %self.inner.node, ops = ops.len()))]
    pub async fn commit(&self, ops: Vec<Op>) -> Result<BatchOutcome, Error> {
        self.commit_with(ops, Batch::default()).await
    }

    /// [`Self::commit`] of one hub-side write, with `extra` written in the
    /// index transaction that publishes the ops (its outbox rows, the rows
    /// below a directory it moves) if every op succeeded; if one failed,
    /// nothing of `extra` is written. An op that cannot be staged fails
    /// the whole write before anything is placed (the parents a put
    /// creates must not stay behind without it).
    pub async fn commit_with(&self, ops: Vec<Op>, extra: Batch) -> Result<BatchOutcome, Error> {
        let me = self.clone();
        let (prepared, failed) = tokio::task::spawn_blocking(move || me.stage(ops))
            .await
            .map_err(join_error)?;
        if !failed.is_empty() {
            for (_, s) in &prepared {
                if let Some(name) = s {
                    self.remove_staged(name);
                }
            }
            return Ok(BatchOutcome {
                done: Vec::new(),
                failed,
            });
        }
        self.retract_place_publish(prepared, failed, extra).await
    }

    /// Phases 2 to 5 of a commit.
    async fn retract_place_publish(
        &self,
        prepared: Vec<Prepared>,
        mut failed: Vec<(Op, TransferFailure)>,
        extra: Batch,
    ) -> Result<BatchOutcome, Error> {
        let (mut retract, parents) = retraction(&prepared);
        retract.removes.extend(self.not_dirs(parents).await?);
        if let Err(e) = self.inner.index.apply(&self.inner.node, &retract).await {
            for (_, s) in &prepared {
                if let Some(name) = s {
                    self.remove_staged(name);
                }
            }
            return Err(e.into());
        }
        let me = self.clone();
        let (done, place_failed) = tokio::task::spawn_blocking(move || me.place(prepared))
            .await
            .map_err(join_error)?;
        failed.extend(place_failed);
        let publish = if failed.is_empty() {
            let mut upserts = survivors(&done);
            upserts.extend(extra.upserts.iter().cloned());
            Batch { upserts, ..extra }
        } else {
            Batch {
                upserts: survivors(&done),
                ..Batch::default()
            }
        };
        self.inner.index.apply(&self.inner.node, &publish).await?;
        debug!(done = done.len(), failed = failed.len(), "batch committed");
        Ok(BatchOutcome { done, failed })
    }

    /// Those of `parents` that exist in the mirror as something other than
    /// a directory. Each parent looked at once per batch, off the async threads.
    async fn not_dirs(&self, parents: BTreeSet<RelPath>) -> Result<Vec<RelPath>, Error> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            parents
                .into_iter()
                .filter(|d| {
                    me.inner
                        .mirror
                        .symlink_metadata(d.as_str())
                        .is_ok_and(|m| !m.is_dir())
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(join_error)
    }

    /// Phase 1: stage copies, empties and symlinks, then make every staged
    /// file durable: one fsync per file for a few, one `syncfs` of the
    /// filesystem for many (a group commit of thousands of small files spends
    /// its time in per-file flushes otherwise).
    fn stage(&self, ops: Vec<Op>) -> (Vec<Prepared>, Vec<(Op, TransferFailure)>) {
        let mut staged = Vec::with_capacity(ops.len());
        let mut failed = Vec::new();
        // Paths an earlier op of this batch deletes: a later move out of them
        // must take its source before that delete is placed.
        let mut deleted: Vec<RelPath> = Vec::new();
        for op in ops {
            let result = match &op {
                Op::Move { from, .. } if deleted.iter().any(|d| from.starts_with(d)) => {
                    self.stage_move_source(from).map(|n| Some((n, None)))
                }
                _ => self.stage_one(&op),
            };
            if let Op::Delete { path, .. } = &op {
                deleted.push(path.clone());
            }
            match result {
                Ok(s) => staged.push((op, s)),
                Err(e) => {
                    warn!(path = %op.path(), error = %e, "op failed while staging");
                    failed.push((op, e.failure()));
                }
            }
        }
        let to_sync = staged
            .iter()
            .filter(|(_, s)| matches!(s, Some((_, Some(_)))))
            .count();
        let group_sync = (to_sync >= GROUP_SYNC_MIN)
            .then(|| flush_filesystem(&self.inner.staging).map_err(io_err("syncfs", "staging")));
        let mut ok = Vec::with_capacity(staged.len());
        for (op, s) in staged {
            let synced = match (&s, &group_sync) {
                (Some((_, Some(_))), Some(Err(e))) => Err(Error::Io {
                    op: "syncfs",
                    path: op.path().to_string(),
                    source: io::Error::other(e.to_string()),
                }),
                (Some((_, Some(Some(file)))), None) => {
                    file.sync_all().map_err(io_err("fsync", op.path()))
                }
                (Some((name, Some(None))), None) => self.sync_staged(name),
                _ => Ok(()),
            };
            match (synced, s) {
                (Ok(()), s) => ok.push((op, s.map(|(name, _)| name))),
                (Err(e), s) => {
                    warn!(path = %op.path(), error = %e, "op failed while staging");
                    if let Some((name, _)) = s {
                        self.remove_staged(&name);
                    }
                    failed.push((op, e.failure()));
                }
            }
        }
        (ok, failed)
    }

    /// Hard-links a move's source into staging, so that a delete placed
    /// before the move (same batch, a parent of the source) cannot take the
    /// content with it. Placing the move renames this link into place.
    fn stage_move_source(&self, from: &RelPath) -> Result<String, Error> {
        let name = self.claim(format!("{:016x}.move", rand::random::<u64>()));
        if let Err(e) = self
            .inner
            .mirror
            .hard_link(from.as_str(), &self.inner.staging, &name)
        {
            self.release(&name);
            return Err(io_err("link", from)(e));
        }
        Ok(name)
    }

    /// Reopens a staged file (read-only is enough) and fsyncs it.
    fn sync_staged(&self, name: &str) -> Result<(), Error> {
        let mut ro = cap_std::fs::OpenOptions::new();
        ro.read(true);
        self.inner
            .staging
            .open_with(name, &ro)
            .and_then(|f| f.sync_all())
            .map_err(io_err("fsync", name))
    }

    /// Stages one op's content: its staged name and, for file content, that
    /// it must still be made durable (with its file, if still open).
    fn stage_one(&self, op: &Op) -> Result<Option<(String, ToSync)>, Error> {
        match op {
            Op::Write { entry, content } => {
                let hash = entry.hash.ok_or_else(|| Error::NotAFile {
                    path: entry.path.to_string(),
                })?;
                match content {
                    Content::Staged => {
                        // Its name stays claimed until placed or removed.
                        let s = {
                            let mut staged = lock(&self.inner.staged);
                            let s = staged.remove(&entry.path);
                            // An initial sync stages a file per path: its
                            // table gives that room back once drained.
                            if staged.is_empty() && staged.capacity() > 1024 {
                                *staged = Default::default();
                            }
                            s
                        }
                        .filter(|s| s.hash == hash)
                        .ok_or(Error::UnknownTransfer { id: 0 })?;
                        Ok(Some((s.staged_name, Some(None))))
                    }
                    Content::Empty | Content::Copy(_) => {
                        let (mut file, name) =
                            self.create_staged(rand::random(), file_mode(entry))?;
                        let res = (|| {
                            if let Content::Copy(from) = content {
                                let mut src = self.open_no_follow(from)?;
                                let mut hasher = blake3::Hasher::new();
                                let mut buf = vec![0u8; 256 * 1024];
                                loop {
                                    let n = src.read(&mut buf).map_err(io_err("read", from))?;
                                    if n == 0 {
                                        break;
                                    }
                                    hasher.update(&buf[..n]);
                                    file.write_all(&buf[..n])
                                        .map_err(io_err("write", &entry.path))?;
                                }
                                let actual: ContentHash = hasher.finalize().into();
                                if actual != hash {
                                    return Err(Error::HashMismatch {
                                        path: from.to_string(),
                                        declared: hash,
                                        actual,
                                    });
                                }
                            }
                            Ok(())
                        })();
                        if let Err(e) = res {
                            self.remove_staged(&name);
                            return Err(e);
                        }
                        Ok(Some((name, Some(Some(file)))))
                    }
                }
            }
            Op::Symlink { entry } => {
                let target = entry.symlink_target.as_deref().unwrap_or_default();
                let name = self.claim(format!("{:016x}.link", rand::random::<u64>()));
                // Created as a link, never followed; the target is just text.
                if let Err(e) = self.inner.staging.symlink_contents(target, &name) {
                    self.release(&name);
                    return Err(io_err("symlink", &entry.path)(e));
                }
                Ok(Some((name, None)))
            }
            Op::Delete { .. } | Op::Mkdir { .. } | Op::Move { .. } => Ok(None),
        }
    }

    /// Phases 3 and 4: place everything, then fsync each touched directory once.
    fn place(&self, prepared: Vec<Prepared>) -> (Vec<Op>, Vec<(Op, TransferFailure)>) {
        let mut dirs: BTreeSet<Option<RelPath>> = BTreeSet::new();
        let mut done = Vec::new();
        let mut failed = Vec::new();
        // Parent directories known to exist (as directories) in this batch,
        // with a confined handle each; forgotten whenever an op could remove
        // one.
        let mut ready = Parents::default();
        for (op, staged) in prepared {
            dirs.insert(op.path().parent());
            if let Op::Move { from, .. } = &op {
                dirs.insert(from.parent());
            }
            if matches!(op, Op::Delete { .. } | Op::Move { .. } | Op::Mkdir { .. }) {
                ready.clear();
            }
            match self.place_one(&op, staged.as_deref(), &mut ready) {
                Ok(()) => {
                    if let Some(name) = &staged {
                        self.release(name);
                    }
                    done.push(op)
                }
                Err(e) => {
                    warn!(path = %op.path(), error = %e, "op failed while placing");
                    if let Some(name) = staged {
                        self.remove_staged(&name);
                    }
                    failed.push((op, e.failure()));
                }
            }
        }
        if dirs.len() >= GROUP_SYNC_MIN {
            // One flush of the filesystem covers every directory (and is
            // what the many per-directory fsyncs would add up to).
            match flush_filesystem(&self.inner.mirror) {
                Ok(()) => return (done, failed),
                Err(e) => warn!(error = %e, "syncfs failed; syncing directories one by one"),
            }
        }
        for d in dirs {
            let name = d.as_ref().map_or(".", |p| p.as_str());
            // `open_dir` gives an O_PATH descriptor on Linux, which cannot be
            // fsynced: open the directory read-only instead (still confined).
            let mut ro = cap_std::fs::OpenOptions::new();
            ro.read(true);
            let r = self
                .inner
                .mirror
                .open_with(name, &ro)
                .and_then(|d| d.into_std().sync_all());
            if let Err(e) = r
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!(dir = name, error = %e, "directory fsync failed");
            }
        }
        (done, failed)
    }

    fn place_one(&self, op: &Op, staged: Option<&str>, ready: &mut Parents) -> Result<(), Error> {
        let m = &self.inner.mirror;
        match op {
            Op::Write { entry, .. } | Op::Symlink { entry } => {
                let name = staged.ok_or(Error::UnknownTransfer { id: 0 })?;
                self.place_staged(entry, name, ready)
            }
            Op::Move { from, entry } => self.place_move(from, entry, staged),
            Op::Mkdir { entry } => {
                self.ensure_parent(&entry.path)?;
                match m.symlink_metadata(entry.path.as_str()) {
                    Ok(md) if md.is_dir() => return Ok(()),
                    Ok(_) => m
                        .remove_file(entry.path.as_str())
                        .map_err(io_err("unlink", &entry.path))?,
                    Err(_) => {}
                }
                m.create_dir(entry.path.as_str())
                    .map_err(io_err("mkdir", &entry.path))
            }
            Op::Delete { path, .. } => match m.symlink_metadata(path.as_str()) {
                // The node says the whole subtree is gone (cap-std does not
                // follow links while removing).
                Ok(md) if md.is_dir() => m
                    .remove_dir_all(path.as_str())
                    .map_err(io_err("remove_dir", path)),
                Ok(_) => m.remove_file(path.as_str()).map_err(io_err("unlink", path)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("stat", path)(e)),
            },
        }
    }

    /// Renames a staged file or link (staging name `name`) into place.
    fn place_staged(&self, entry: &Entry, name: &str, ready: &mut Parents) -> Result<(), Error> {
        let m = &self.inner.mirror;
        // Renamed into a handle on its parent, opened once per directory of
        // the batch (a rename by path opened the parent each time: an
        // openat2 and a close per file).
        let first = match entry.path.parent() {
            None => self.inner.staging.rename(name, m, entry.path.as_str()),
            Some(p) => {
                if !ready.contains(&p) {
                    self.ensure_parent(&entry.path)?;
                    let dir = m.open_dir(p.as_str()).map_err(io_err("open_dir", &p))?;
                    ready.insert(p.clone(), dir);
                }
                let dir = ready.get(&p).expect("just inserted");
                self.inner.staging.rename(name, dir, entry.path.file_name())
            }
        };
        // A directory in the way (the node replaced it by a file) fails the
        // rename: clear it then, instead of a stat per file.
        match first {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EISDIR | libc::ENOTEMPTY | libc::EEXIST)
                ) =>
            {
                ready.clear();
                self.clear_dir_at(&entry.path)?;
                self.inner
                    .staging
                    .rename(name, m, entry.path.as_str())
                    .map_err(io_err("rename", &entry.path))
            }
            r => r.map_err(io_err("rename", &entry.path)),
        }
    }

    /// Moves `from` to `entry`'s path, from staging if the batch linked it
    /// there (`staged`), and sets its mode.
    fn place_move(&self, from: &RelPath, entry: &Entry, staged: Option<&str>) -> Result<(), Error> {
        let m = &self.inner.mirror;
        self.ensure_parent(&entry.path)?;
        self.clear_dir_at(&entry.path)?;
        match staged {
            // The source was linked into staging (see `stage`); an earlier op
            // of the batch removed it from the mirror.
            Some(name) => {
                self.inner
                    .staging
                    .rename(name, m, entry.path.as_str())
                    .map_err(io_err("rename", &entry.path))?;
                match m.remove_file(from.as_str()) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err("unlink", from)(e));
                    }
                    _ => {}
                }
            }
            None => m
                .rename(from.as_str(), m, entry.path.as_str())
                .map_err(io_err("rename", &entry.path))?,
        }
        let perm = Permissions::from_std(std::fs::Permissions::from_mode(file_mode(entry)));
        let f = self.open_no_follow(&entry.path)?;
        f.set_permissions(perm)
            .map_err(io_err("fchmod", &entry.path))
    }

    fn ensure_parent(&self, path: &RelPath) -> Result<(), Error> {
        if let Some(p) = path.parent() {
            match self.inner.mirror.symlink_metadata(p.as_str()) {
                Ok(md) if md.is_dir() => {}
                // A symlink or file where a directory must be: replace it (the
                // node's tree says this is a directory now).
                Ok(_) => {
                    self.inner
                        .mirror
                        .remove_file(p.as_str())
                        .map_err(io_err("unlink", &p))?;
                    self.inner
                        .mirror
                        .create_dir_all(p.as_str())
                        .map_err(io_err("mkdir", &p))?;
                }
                Err(_) => {
                    self.ensure_parent(&p)?;
                    self.inner
                        .mirror
                        .create_dir_all(p.as_str())
                        .map_err(io_err("mkdir", &p))?;
                }
            }
        }
        Ok(())
    }

    /// Removes a directory (and its subtree) where a file or link is about to go.
    fn clear_dir_at(&self, path: &RelPath) -> Result<(), Error> {
        match self.inner.mirror.symlink_metadata(path.as_str()) {
            // The node says this path is a file or link now: nothing is below it.
            Ok(md) if md.is_dir() => self
                .inner
                .mirror
                .remove_dir_all(path.as_str())
                .map_err(io_err("remove_dir", path)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
