//! The node's confined writer: applies a hub-side change to the workspace as
//! a compare-and-swap against the state the change was based on.
//!
//! Content arrives in `WORKSPACE/.ganglion/incoming/` (outside the mirrored
//! view — the scanner never looks there — and on the workspace's
//! filesystem, so a rename moves it in), is hash-verified and fsynced
//! first. Then:
//! - the workspace still holds the base: the new content is swapped in with
//!   `renameat2(RENAME_EXCHANGE)` (or `RENAME_NOREPLACE` where nothing is),
//!   and what was swapped out is checked against the base once more: a
//!   write that raced the swap is kept as a conflict copy, never destroyed;
//! - it already holds the change: nothing to do;
//! - it holds something else (a concurrent local change): the local version
//!   moves aside as `NAME.sync-conflict-…-<node>.EXT` and the hub's goes in;
//!   but an edit beats a delete (the edit stays and is sent again), and a
//!   local directory beats a file from the hub (the hub's file becomes the
//!   conflict copy: nothing under the directory is touched).
//!
//! Every path is reached from the workspace root without following a
//! symlink ([`WorkspaceDir`]); parents are created one `mkdirat` at a time
//! below a descriptor, so no path or link leads outside the workspace.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::Path;

use ganglion_core::{RelPath, Timestamp};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::change::{Base, Conflict, conflict_path};
use crate::entry::ContentHash;
use crate::workspace::WorkspaceDir;

/// Where incoming content waits, below the workspace root.
pub const INCOMING: &str = ".ganglion/incoming";

/// What applying one change did, for the node's index and the hub.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Paths now holding the hub's state: recorded as agreed (re-stat them).
    pub agreed: Vec<RelPath>,
    /// Paths removed as the hub asked: forgotten without a tombstone.
    pub removed: Vec<RelPath>,
    /// Local versions that stay (an edit beat a delete, a directory beat a
    /// file): sent to the hub again, at and below these paths.
    pub resend: Vec<RelPath>,
    /// Conflicts settled; their copies are new files the scan sends.
    pub conflicts: Vec<Conflict>,
}

/// A hook run right before a swap (tests: a write racing the apply).
type BeforeSwap = Box<dyn Fn(&RelPath) + Send + Sync>;

/// The node's writer into its workspace.
pub struct Applier {
    ws: WorkspaceDir,
    incoming: File,
    /// The node's name: the origin of conflict copies of its versions.
    origin: String,
    /// Fault injection for tests: runs right before a swap (a local write
    /// racing the apply).
    before_swap: Option<BeforeSwap>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("origin", &self.origin)
            .finish()
    }
}

fn err(e: Errno) -> io::Error {
    io::Error::from(e)
}

impl Applier {
    /// Opens the workspace and its incoming directory (created, emptied).
    pub fn open(workspace: &Path, origin: &str) -> io::Result<Self> {
        let ws = WorkspaceDir::open(workspace)?;
        let mut at = ws.open_dir(None)?;
        for name in INCOMING.split('/') {
            match rustix::fs::mkdirat(&at, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(err(e)),
            }
            at = File::from(rustix::fs::openat(
                &at,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
        }
        let a = Self {
            ws,
            incoming: at,
            origin: origin.to_owned(),
            before_swap: None,
        };
        a.sweep()?;
        Ok(a)
    }

    /// Runs `hook` right before every swap (tests: a write racing the apply).
    pub fn with_before_swap(mut self, hook: impl Fn(&RelPath) + Send + Sync + 'static) -> Self {
        self.before_swap = Some(Box::new(hook));
        self
    }

    /// Removes what an interrupted apply left in the incoming directory.
    pub fn sweep(&self) -> io::Result<usize> {
        let mut n = 0;
        let dir = rustix::fs::Dir::read_from(&self.incoming)?;
        for entry in dir {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            if rustix::fs::unlinkat(&self.incoming, name.as_str(), AtFlags::empty()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// A new file in the incoming directory for a change's content.
    pub fn create_incoming(&self, seq: u64, executable: bool) -> io::Result<(File, String)> {
        let name = format!("{seq:016x}-{:08x}.incoming", rand::random::<u32>());
        let mode = if executable { 0o755 } else { 0o644 };
        let fd = rustix::fs::openat(
            &self.incoming,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        // The umask may have cut the mode.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        Ok((File::from(fd), name))
    }

    /// Drops an incoming file that will not be applied.
    pub fn discard(&self, name: &str) {
        let _ = rustix::fs::unlinkat(&self.incoming, name, AtFlags::empty());
    }

    /// What the workspace holds at `rel` now (re-hashing a file).
    pub fn current(&self, rel: &RelPath) -> io::Result<Base> {
        let entry = match self.ws.entry(rel) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Base::Absent),
            Err(e) => return Err(e),
        };
        let meta = entry.metadata()?;
        let ft = meta.file_type();
        if ft.is_dir() {
            Ok(Base::Dir)
        } else if ft.is_symlink() {
            let target = WorkspaceDir::read_link(&entry)?;
            Ok(Base::Symlink(String::from_utf8_lossy(&target).into_owned()))
        } else {
            let f = self.ws.open_read(rel)?;
            Ok(Base::File(hash_file(f)?))
        }
    }

    /// Applies a put whose verified content waits as `incoming` (consumed).
    pub fn put(
        &self,
        path: &RelPath,
        hash: ContentHash,
        base: &Base,
        incoming: &str,
        now: Timestamp,
    ) -> io::Result<Applied> {
        let mut out = Applied::default();
        let parent = self.parents(path, now, &mut out)?;
        let leaf = path.file_name();
        for _ in 0..8 {
            let current = self.current(path)?;
            match current {
                c if c == Base::File(hash) => {
                    self.discard(incoming);
                    out.agreed.push(path.clone());
                    return Ok(out);
                }
                Base::Absent => {
                    match rustix::fs::renameat_with(
                        &self.incoming,
                        incoming,
                        &parent,
                        leaf,
                        RenameFlags::NOREPLACE,
                    ) {
                        Ok(()) => {}
                        // Created meanwhile: look again.
                        Err(Errno::EXIST) => continue,
                        Err(e) => return Err(err(e)),
                    }
                }
                Base::Dir => {
                    // A local directory beats the hub's file: the file goes aside.
                    // (The copy is a new file to the scan: it reaches the hub.)
                    let copy = self.place_copy(&self.incoming, incoming, path, now, "hub")?;
                    out.conflicts.push(self.conflict(path, copy, "hub", now));
                    out.resend.push(path.clone());
                    parent.sync_all()?;
                    return Ok(out);
                }
                c if &c == base => {
                    if let Some(hook) = &self.before_swap {
                        hook(path);
                    }
                    rustix::fs::renameat_with(
                        &self.incoming,
                        incoming,
                        &parent,
                        leaf,
                        RenameFlags::EXCHANGE,
                    )
                    .map_err(err)?;
                    // What was swapped out must still be the base: a write
                    // that raced the swap is kept, not destroyed.
                    match self.incoming_state(incoming)? {
                        s if &s == base => self.discard(incoming),
                        _ => {
                            let copy =
                                self.place_copy(&self.incoming, incoming, path, now, &self.origin)?;
                            let origin = self.origin.clone();
                            out.conflicts.push(self.conflict(path, copy, &origin, now));
                        }
                    }
                }
                _ => {
                    // A concurrent local version: it becomes the conflict copy.
                    let copy = self.place_copy(&parent, leaf, path, now, &self.origin)?;
                    let origin = self.origin.clone();
                    out.conflicts.push(self.conflict(path, copy, &origin, now));
                    continue;
                }
            }
            parent.sync_all()?;
            out.agreed.push(path.clone());
            return Ok(out);
        }
        Err(io::Error::other(format!("{path} keeps changing; retried")))
    }

    /// Makes the parent directories of a put whose content is gone at the
    /// hub (a newer change replaced it before the download): the hub keeps
    /// the directories it created for it, so the workspace has them too.
    pub fn parents_only(&self, path: &RelPath, now: Timestamp) -> io::Result<Applied> {
        let mut out = Applied::default();
        self.parents(path, now, &mut out)?;
        Ok(out)
    }

    /// Applies a delete. `unchanged` says whether a path below a directory
    /// still holds what the hub knows (the node's index); what does not stays.
    pub fn delete(
        &self,
        path: &RelPath,
        base: &Base,
        unchanged: &dyn Fn(&RelPath) -> bool,
    ) -> io::Result<Applied> {
        let mut out = Applied::default();
        let current = self.current(path)?;
        match current {
            Base::Absent => out.removed.push(path.clone()),
            Base::Dir => {
                if self.delete_tree(path, unchanged, &mut out)? {
                    out.removed.push(path.clone());
                } else {
                    out.resend.push(path.clone());
                }
            }
            c if &c == base => {
                let parent = self.ws.open_dir(path.parent().as_ref())?;
                match rustix::fs::unlinkat(&parent, path.file_name(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(err(e)),
                }
                parent.sync_all()?;
                out.removed.push(path.clone());
            }
            // An edit beats a delete.
            _ => out.resend.push(path.clone()),
        }
        Ok(out)
    }

    /// Removes what below `dir` is unchanged, deepest first; returns whether
    /// `dir` itself went (it was left empty).
    fn delete_tree(
        &self,
        dir: &RelPath,
        unchanged: &dyn Fn(&RelPath) -> bool,
        out: &mut Applied,
    ) -> io::Result<bool> {
        let fd = self.ws.open_dir(Some(dir))?;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push((name, entry.file_type()));
            }
        }
        let mut empty = true;
        for (name, ft) in names {
            let Ok(child) = dir.join(&name) else {
                empty = false;
                continue;
            };
            if ft == rustix::fs::FileType::Directory {
                if self.delete_tree(&child, unchanged, out)? {
                    out.removed.push(child);
                } else {
                    empty = false;
                }
            } else if unchanged(&child) {
                match rustix::fs::unlinkat(&fd, name.as_str(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => out.removed.push(child),
                    Err(e) => return Err(err(e)),
                }
            } else {
                out.resend.push(child);
                empty = false;
            }
        }
        fd.sync_all()?;
        if !empty {
            return Ok(false);
        }
        let parent = self.ws.open_dir(dir.parent().as_ref())?;
        match rustix::fs::unlinkat(&parent, dir.file_name(), AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(true),
            // Something appeared meanwhile: it stays.
            Err(Errno::NOTEMPTY | Errno::EXIST) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// Applies a move when the source still holds the base and the target is
    /// free; `Ok(None)` when it cannot be applied as a rename (the caller
    /// falls back to the content: a delete and a put).
    pub fn rename(
        &self,
        from: &RelPath,
        to: &RelPath,
        base: &Base,
        now: Timestamp,
    ) -> io::Result<Option<Applied>> {
        if &self.current(from)? != base || self.current(to)? != Base::Absent {
            return Ok(None);
        }
        let mut out = Applied::default();
        let to_parent = self.parents(to, now, &mut out)?;
        let from_parent = self.ws.open_dir(from.parent().as_ref())?;
        match rustix::fs::renameat_with(
            &from_parent,
            from.file_name(),
            &to_parent,
            to.file_name(),
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(Errno::EXIST | Errno::NOENT) => return Ok(None),
            Err(e) => return Err(err(e)),
        }
        to_parent.sync_all()?;
        from_parent.sync_all()?;
        out.removed.push(from.clone());
        out.agreed.push(to.clone());
        Ok(Some(out))
    }

    /// Creates the missing parents of `path` (a non-directory in the way is
    /// moved aside as a conflict copy) and returns the parent's descriptor.
    fn parents(&self, path: &RelPath, now: Timestamp, out: &mut Applied) -> io::Result<File> {
        let mut at = self.ws.open_dir(None)?;
        let Some(parent) = path.parent() else {
            return Ok(at);
        };
        let mut sofar: Option<RelPath> = None;
        for name in parent.components() {
            let rel = match &sofar {
                None => RelPath::parse(name),
                Some(p) => p.join(name),
            }
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            match rustix::fs::statat(&at, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() => {}
                Ok(_) => {
                    // A file or link where the hub has a directory: kept aside.
                    let copy = self.place_copy(&at, name, &rel, now, &self.origin)?;
                    let origin = self.origin.clone();
                    out.conflicts.push(self.conflict(&rel, copy, &origin, now));
                    self.mkdir(&at, name, &mut out.agreed, &rel)?;
                }
                Err(Errno::NOENT) => self.mkdir(&at, name, &mut out.agreed, &rel)?,
                Err(e) => return Err(err(e)),
            }
            at = File::from(rustix::fs::openat(
                &at,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
            sofar = Some(rel);
        }
        Ok(at)
    }

    fn mkdir(
        &self,
        at: &File,
        name: &str,
        agreed: &mut Vec<RelPath>,
        rel: &RelPath,
    ) -> io::Result<()> {
        match rustix::fs::mkdirat(at, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => {
                at.sync_all()?;
                agreed.push(rel.clone());
                Ok(())
            }
            Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// Renames `name` (in `from_dir`) to a free conflict-copy name next to
    /// `path`; returns that path.
    fn place_copy(
        &self,
        from_dir: &File,
        name: &str,
        path: &RelPath,
        now: Timestamp,
        origin: &str,
    ) -> io::Result<RelPath> {
        let parent = self.ws.open_dir(path.parent().as_ref())?;
        for attempt in 0..100 {
            let copy = conflict_path(path, now, origin, attempt);
            match rustix::fs::renameat_with(
                from_dir.as_fd(),
                name,
                &parent,
                copy.file_name(),
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {
                    parent.sync_all()?;
                    return Ok(copy);
                }
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(err(e)),
            }
        }
        Err(io::Error::other(format!(
            "no free conflict name for {path}"
        )))
    }

    fn conflict(&self, path: &RelPath, copy: RelPath, origin: &str, now: Timestamp) -> Conflict {
        Conflict {
            path: path.clone(),
            conflict_path: copy,
            origin: origin.to_owned(),
            detected_at: now,
        }
    }

    /// The state of a file in the incoming directory (what a swap took out).
    fn incoming_state(&self, name: &str) -> io::Result<Base> {
        let st = rustix::fs::statat(&self.incoming, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
        if ft.is_dir() {
            return Ok(Base::Dir);
        }
        if ft.is_symlink() {
            let t = rustix::fs::readlinkat(&self.incoming, name, Vec::new())?;
            return Ok(Base::Symlink(t.to_string_lossy().into_owned()));
        }
        let fd = rustix::fs::openat(
            &self.incoming,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Base::File(hash_file(File::from(fd))?))
    }
}

fn hash_file(mut f: File) -> io::Result<ContentHash> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests;
