//! The hub's confined writer for one node's mirror.
//!
//! Layout: `DATA_DIR/mirrors/<node>/` (the mirror) and `DATA_DIR/staging/<node>/`
//! (transfers in progress, outside the mirror tree, same filesystem). Every
//! access goes through `cap-std` directory handles: no path and no symlink can
//! reach outside the mirror root, on write or on read.
//!
//! A transfer: [`Receiver::open`] creates the staged file exclusively, sets its
//! final mode on the open fd before any byte, and takes the transfer lock;
//! [`Receiver::chunk`] appends in order (offset checked), hashing each byte
//! once as it streams; [`Receiver::finish`] compares the hash once. The staged
//! file then waits for [`Receiver::commit`], which applies a batch of
//! [`Op`]s with this durability order (group commit):
//!
//! 1. stage: fsync staged files; copies and symlinks are staged too;
//! 2. retract: ONE index transaction removes the rows of every path the batch
//!    replaces, moves or deletes (the index stops naming content about to go);
//! 3. place: rename staged files into place, move, mkdir, unlink;
//! 4. fsync each touched directory once;
//! 5. publish: ONE index transaction inserts the new rows.
//!
//! A crash at any point leaves the index naming only durable content; the
//! node's applied sequence is not advanced, so the node resends what was lost.
//!
//! The filesystem work is blocking: call the sync methods from a blocking
//! thread; [`Receiver::commit`] and [`Receiver::verify`] move their IO there.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use cap_std::ambient_authority;
use std::os::unix::fs::PermissionsExt;

use cap_std::fs::{Dir, File, OpenOptions, OpenOptionsExt, Permissions};
use ganglion_core::RelPath;
use tracing::{debug, info, instrument, warn};

use crate::engine::{Content, Op, TransferFailure};
use crate::entry::{ContentHash, Entry, EntryKind};
use crate::immutable::ImmutablePaths;
use crate::index::{self, Batch, Index};
use crate::locks::{self, LockRegistry, TransferGuard};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("filesystem error")]
    Io {
        op: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("disk full")]
    DiskFull { path: String },
    #[error("chunk for an unknown transfer")]
    UnknownTransfer { id: u64 },
    #[error("chunk out of order")]
    OutOfOrder { id: u64, expected: u64, got: u64 },
    #[error("transfer longer than declared")]
    TooLong { id: u64, declared: u64 },
    #[error("transfer shorter than declared")]
    TooShort {
        id: u64,
        declared: u64,
        received: u64,
    },
    #[error("content does not match the declared hash")]
    HashMismatch {
        path: String,
        declared: ContentHash,
        actual: ContentHash,
    },
    #[error("path is immutable at the hub")]
    Refused { path: String },
    #[error("refusing to follow a symlink")]
    Symlink { path: String },
    #[error("not a regular file")]
    NotAFile { path: String },
    #[error(transparent)]
    Busy(#[from] locks::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
}

impl Error {
    /// What the engines need to know of this error.
    pub fn failure(&self) -> TransferFailure {
        match self {
            Self::DiskFull { .. } => TransferFailure::DiskFull,
            Self::HashMismatch { .. } => TransferFailure::HashMismatch,
            Self::Refused { .. } => TransferFailure::Refused,
            Self::Busy(_) | Self::UnknownTransfer { .. } => TransferFailure::Cancelled,
            _ => TransferFailure::Io,
        }
    }
}

fn io_err(op: &'static str, path: impl ToString) -> impl FnOnce(io::Error) -> Error {
    move |source| {
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == io::ErrorKind::StorageFull
        {
            Error::DiskFull {
                path: path.to_string(),
            }
        } else {
            Error::Io {
                op,
                path: path.to_string(),
                source,
            }
        }
    }
}

/// The mode a mirrored file gets: the node's exec bit, nothing else.
pub fn file_mode(entry: &Entry) -> u32 {
    if entry.is_executable() { 0o755 } else { 0o644 }
}

struct Upload {
    path: RelPath,
    hash: ContentHash,
    size: u64,
    written: u64,
    hasher: blake3::Hasher,
    file: File,
    staged_name: String,
    guard: TransferGuard,
}

struct Staged {
    hash: ContentHash,
    file: File,
    staged_name: String,
    _guard: TransferGuard,
}

/// A verified staged transfer's identity.
pub type TransferId = u64;

/// One hash mismatch found by [`Receiver::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub path: RelPath,
    pub expected: String,
    pub found: String,
}

/// What a commit did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub done: Vec<Op>,
    pub failed: Vec<(Op, TransferFailure)>,
}

struct Inner {
    node: String,
    mirror: Dir,
    staging: Dir,
    index: Index,
    locks: LockRegistry,
    uploads: Mutex<HashMap<TransferId, Upload>>,
    staged: Mutex<HashMap<RelPath, Staged>>,
}

/// The receiver of one node's mirror. Cheap to clone.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("node", &self.inner.node)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Receiver {
    /// Opens (creating) `data_dir/mirrors/<node>` and `data_dir/staging/<node>`,
    /// and sweeps stale staging files.
    pub fn open(
        data_dir: &Path,
        node: &str,
        index: Index,
        locks: LockRegistry,
    ) -> Result<Self, Error> {
        let m = data_dir.join("mirrors").join(node);
        let s = data_dir.join("staging").join(node);
        for d in [&m, &s] {
            std::fs::create_dir_all(d).map_err(io_err("create_dir", d.display()))?;
        }
        let open = |p: &PathBuf| {
            Dir::open_ambient_dir(p, ambient_authority()).map_err(io_err("open_dir", p.display()))
        };
        let inner = Inner {
            node: node.to_owned(),
            mirror: open(&m)?,
            staging: open(&s)?,
            index,
            locks,
            uploads: Mutex::new(HashMap::new()),
            staged: Mutex::new(HashMap::new()),
        };
        let r = Self {
            inner: Arc::new(inner),
        };
        r.sweep_staging()?;
        Ok(r)
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    pub fn index(&self) -> &Index {
        &self.inner.index
    }

    /// Starts a transfer: checks immutability (first check), takes the lock,
    /// creates the staged file exclusively with its final mode.
    #[instrument(skip(self, immutable), fields(node = %self.inner.node))]
    pub fn open_transfer(
        &self,
        path: &RelPath,
        hash: ContentHash,
        size: u64,
        mode: u32,
        immutable: &ImmutablePaths,
    ) -> Result<TransferId, Error> {
        if immutable.matches(path, false) {
            warn!(%path, "transfer refused: immutable path");
            return Err(Error::Refused {
                path: path.to_string(),
            });
        }
        let guard = self.inner.locks.acquire(&self.inner.node, path)?;
        let id: TransferId = rand::random();
        let (file, staged_name) = self.create_staged(id, mode)?;
        let up = Upload {
            path: path.clone(),
            hash,
            size,
            written: 0,
            hasher: blake3::Hasher::new(),
            file,
            staged_name,
            guard,
        };
        lock(&self.inner.uploads).insert(id, up);
        Ok(id)
    }

    fn create_staged(&self, id: u64, mode: u32) -> Result<(File, String), Error> {
        let name = format!("{id:016x}-{:08x}.staged", rand::random::<u32>());
        let mut o = OpenOptions::new();
        o.write(true).read(true).create_new(true).mode(0o600);
        let file = self
            .inner
            .staging
            .open_with(&name, &o)
            .map_err(io_err("create_staged", &name))?;
        // Final mode on the fd before any byte is written.
        file.set_permissions(Permissions::from_std(std::fs::Permissions::from_mode(mode)))
            .map_err(io_err("fchmod", &name))?;
        Ok((file, name))
    }

    /// Appends a chunk at `offset` (must equal the bytes received so far).
    /// Any error aborts the transfer and removes its staged file.
    pub fn chunk(&self, id: TransferId, offset: u64, data: &[u8]) -> Result<(), Error> {
        let mut uploads = lock(&self.inner.uploads);
        let up = uploads.get_mut(&id).ok_or(Error::UnknownTransfer { id })?;
        let res = (|| {
            if up.guard.is_cancelled() {
                return Err(Error::UnknownTransfer { id });
            }
            if offset != up.written {
                return Err(Error::OutOfOrder {
                    id,
                    expected: up.written,
                    got: offset,
                });
            }
            if up.written + data.len() as u64 > up.size {
                return Err(Error::TooLong {
                    id,
                    declared: up.size,
                });
            }
            up.file.write_all(data).map_err(io_err("write", &up.path))?;
            up.hasher.update(data);
            up.written += data.len() as u64;
            up.guard.touch();
            Ok(())
        })();
        if res.is_err() {
            let up = uploads.remove(&id).expect("present");
            drop(uploads);
            self.remove_staged(&up.staged_name);
        }
        res
    }

    /// Ends a transfer: checks length and hash (once). On success the content
    /// waits in staging for a commit naming `path`.
    pub fn finish(&self, id: TransferId) -> Result<(RelPath, ContentHash), Error> {
        let up = lock(&self.inner.uploads)
            .remove(&id)
            .ok_or(Error::UnknownTransfer { id })?;
        let check = if up.written != up.size {
            Err(Error::TooShort {
                id,
                declared: up.size,
                received: up.written,
            })
        } else {
            let actual: ContentHash = up.hasher.finalize().into();
            if actual == up.hash {
                Ok(())
            } else {
                Err(Error::HashMismatch {
                    path: up.path.to_string(),
                    declared: up.hash,
                    actual,
                })
            }
        };
        if let Err(e) = check {
            warn!(path = %up.path, error = %e, "transfer rejected");
            self.remove_staged(&up.staged_name);
            return Err(e);
        }
        let staged = Staged {
            hash: up.hash,
            file: up.file,
            staged_name: up.staged_name,
            _guard: up.guard,
        };
        if let Some(old) = lock(&self.inner.staged).insert(up.path.clone(), staged) {
            self.remove_staged(&old.staged_name);
        }
        Ok((up.path, up.hash))
    }

    /// Abandons an open transfer (the stream ended).
    pub fn abort(&self, id: TransferId) {
        if let Some(up) = lock(&self.inner.uploads).remove(&id) {
            self.remove_staged(&up.staged_name);
        }
    }

    /// Drops a staged transfer that will not be committed.
    pub fn discard(&self, path: &RelPath, hash: ContentHash) {
        let mut staged = lock(&self.inner.staged);
        if staged.get(path).is_some_and(|s| s.hash == hash) {
            let s = staged.remove(path).expect("present");
            drop(staged);
            self.remove_staged(&s.staged_name);
        }
    }

    /// Drops transfers whose lock was reaped for idleness.
    pub fn reap_idle(&self) -> usize {
        let dead: Vec<(TransferId, String)> = {
            let mut uploads = lock(&self.inner.uploads);
            let ids: Vec<TransferId> = uploads
                .iter()
                .filter(|(_, u)| u.guard.is_cancelled())
                .map(|(i, _)| *i)
                .collect();
            ids.into_iter()
                .filter_map(|i| uploads.remove(&i).map(|u| (i, u.staged_name)))
                .collect()
        };
        for (_, name) in &dead {
            self.remove_staged(name);
        }
        dead.len()
    }

    fn remove_staged(&self, name: &str) {
        if let Err(e) = self.inner.staging.remove_file(name)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(name, error = %e, "cannot remove staged file");
        }
    }

    /// Removes staging files no open or staged transfer owns. Run at start and
    /// periodically. Returns how many were removed.
    pub fn sweep_staging(&self) -> Result<usize, Error> {
        let mut live: BTreeSet<String> = lock(&self.inner.uploads)
            .values()
            .map(|u| u.staged_name.clone())
            .collect();
        live.extend(
            lock(&self.inner.staged)
                .values()
                .map(|s| s.staged_name.clone()),
        );
        let mut n = 0;
        for ent in self
            .inner
            .staging
            .entries()
            .map_err(io_err("read_dir", "staging"))?
        {
            let ent = ent.map_err(io_err("read_dir", "staging"))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if live.contains(&name) {
                continue;
            }
            let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let r = if is_dir {
                self.inner.staging.remove_dir_all(&name)
            } else {
                self.inner.staging.remove_file(&name)
            };
            match r {
                Ok(()) => n += 1,
                Err(e) => warn!(name, error = %e, "cannot sweep staging entry"),
            }
        }
        if n > 0 {
            info!(node = %self.inner.node, removed = n, "swept stale staging files");
        }
        Ok(n)
    }

    /// Applies a batch with the durability order of the module docs.
    #[instrument(skip_all, fields(node = %self.inner.node, ops = ops.len()))]
    pub async fn commit(&self, ops: Vec<Op>) -> Result<BatchOutcome, Error> {
        let me = self.clone();
        let (prepared, mut failed) = tokio::task::spawn_blocking(move || me.stage(ops))
            .await
            .map_err(|e| Error::Io {
                op: "join",
                path: String::new(),
                source: io::Error::other(e),
            })?;
        let mut retract = Batch::default();
        for (op, _) in &prepared {
            retract.removes.push(op.path().clone());
            if let Op::Move { from, .. } = op {
                retract.removes.push(from.clone());
            }
        }
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
            .map_err(|e| Error::Io {
                op: "join",
                path: String::new(),
                source: io::Error::other(e),
            })?;
        failed.extend(place_failed);
        let publish = Batch {
            upserts: done.iter().filter_map(|o| o.entry().cloned()).collect(),
            ..Batch::default()
        };
        self.inner.index.apply(&self.inner.node, &publish).await?;
        debug!(done = done.len(), failed = failed.len(), "batch committed");
        Ok(BatchOutcome { done, failed })
    }

    /// Phase 1: fsync staged files, stage copies, empties and symlinks.
    fn stage(&self, ops: Vec<Op>) -> (Vec<(Op, Option<String>)>, Vec<(Op, TransferFailure)>) {
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        for op in ops {
            match self.stage_one(&op) {
                Ok(name) => ok.push((op, name)),
                Err(e) => {
                    warn!(path = %op.path(), error = %e, "op failed while staging");
                    failed.push((op, e.failure()));
                }
            }
        }
        (ok, failed)
    }

    fn stage_one(&self, op: &Op) -> Result<Option<String>, Error> {
        match op {
            Op::Write { entry, content } => {
                let hash = entry.hash.ok_or_else(|| Error::NotAFile {
                    path: entry.path.to_string(),
                })?;
                match content {
                    Content::Staged => {
                        let s = lock(&self.inner.staged)
                            .remove(&entry.path)
                            .filter(|s| s.hash == hash)
                            .ok_or(Error::UnknownTransfer { id: 0 })?;
                        s.file.sync_all().map_err(io_err("fsync", &entry.path))?;
                        Ok(Some(s.staged_name))
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
                            file.sync_all().map_err(io_err("fsync", &entry.path))
                        })();
                        if let Err(e) = res {
                            self.remove_staged(&name);
                            return Err(e);
                        }
                        Ok(Some(name))
                    }
                }
            }
            Op::Symlink { entry } => {
                let target = entry.symlink_target.as_deref().unwrap_or_default();
                let name = format!("{:016x}.link", rand::random::<u64>());
                // Created as a link, never followed; the target is just text.
                self.inner
                    .staging
                    .symlink_contents(target, &name)
                    .map_err(io_err("symlink", &entry.path))?;
                Ok(Some(name))
            }
            Op::Delete { path, .. } => {
                if let Ok(m) = self.inner.mirror.symlink_metadata(path.as_str())
                    && m.is_dir()
                {
                    let mut it = self
                        .inner
                        .mirror
                        .read_dir(path.as_str())
                        .map_err(io_err("read_dir", path))?;
                    if it.next().is_some() {
                        return Err(Error::Io {
                            op: "remove_dir",
                            path: path.to_string(),
                            source: io::Error::from_raw_os_error(libc::ENOTEMPTY),
                        });
                    }
                }
                Ok(None)
            }
            Op::Mkdir { .. } | Op::Move { .. } => Ok(None),
        }
    }

    /// Phases 3 and 4: place everything, then fsync each touched directory once.
    fn place(&self, prepared: Vec<(Op, Option<String>)>) -> (Vec<Op>, Vec<(Op, TransferFailure)>) {
        let mut dirs: BTreeSet<Option<RelPath>> = BTreeSet::new();
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for (op, staged) in prepared {
            dirs.insert(op.path().parent());
            if let Op::Move { from, .. } = &op {
                dirs.insert(from.parent());
            }
            match self.place_one(&op, staged.as_deref()) {
                Ok(()) => done.push(op),
                Err(e) => {
                    warn!(path = %op.path(), error = %e, "op failed while placing");
                    if let Some(name) = staged {
                        self.remove_staged(&name);
                    }
                    failed.push((op, e.failure()));
                }
            }
        }
        for d in dirs {
            let name = d.as_ref().map_or(".", |p| p.as_str());
            let r = self
                .inner
                .mirror
                .open_dir(name)
                .and_then(|d| d.into_std_file().sync_all());
            if let Err(e) = r
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!(dir = name, error = %e, "directory fsync failed");
            }
        }
        (done, failed)
    }

    fn place_one(&self, op: &Op, staged: Option<&str>) -> Result<(), Error> {
        let m = &self.inner.mirror;
        match op {
            Op::Write { entry, .. } | Op::Symlink { entry } => {
                self.ensure_parent(&entry.path)?;
                self.clear_dir_at(&entry.path)?;
                let name = staged.ok_or(Error::UnknownTransfer { id: 0 })?;
                self.inner
                    .staging
                    .rename(name, m, entry.path.as_str())
                    .map_err(io_err("rename", &entry.path))
            }
            Op::Move { from, entry } => {
                self.ensure_parent(&entry.path)?;
                self.clear_dir_at(&entry.path)?;
                m.rename(from.as_str(), m, entry.path.as_str())
                    .map_err(io_err("rename", &entry.path))?;
                let perm = Permissions::from_std(std::fs::Permissions::from_mode(file_mode(entry)));
                let f = self.open_no_follow(&entry.path)?;
                f.set_permissions(perm)
                    .map_err(io_err("fchmod", &entry.path))
            }
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
                Ok(md) if md.is_dir() => m
                    .remove_dir(path.as_str())
                    .map_err(io_err("remove_dir", path)),
                Ok(_) => m.remove_file(path.as_str()).map_err(io_err("unlink", path)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("stat", path)(e)),
            },
        }
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

    /// Removes an empty directory where a file or link is about to go.
    fn clear_dir_at(&self, path: &RelPath) -> Result<(), Error> {
        match self.inner.mirror.symlink_metadata(path.as_str()) {
            Ok(md) if md.is_dir() => self
                .inner
                .mirror
                .remove_dir(path.as_str())
                .map_err(io_err("remove_dir", path)),
            _ => Ok(()),
        }
    }

    /// Opens a mirror file for reading. Refuses a symlink as the last
    /// component; cap-std refuses any path or intermediate link leaving the root.
    pub fn open_no_follow(&self, path: &RelPath) -> Result<File, Error> {
        let md = self
            .inner
            .mirror
            .symlink_metadata(path.as_str())
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => Error::Symlink {
                    path: path.to_string(),
                },
                _ => io_err("stat", path)(e),
            })?;
        if md.file_type().is_symlink() {
            return Err(Error::Symlink {
                path: path.to_string(),
            });
        }
        if !md.is_file() {
            return Err(Error::NotAFile {
                path: path.to_string(),
            });
        }
        let mut o = OpenOptions::new();
        o.read(true).custom_flags(libc::O_NOFOLLOW);
        self.inner
            .mirror
            .open_with(path.as_str(), &o)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => Error::Symlink {
                    path: path.to_string(),
                },
                _ => io_err("open", path)(e),
            })
    }

    /// The content of a mirror file (`ganglion mirror cat`).
    pub fn cat(&self, path: &RelPath) -> Result<Vec<u8>, Error> {
        let mut f = self.open_no_follow(path)?;
        let mut out = Vec::new();
        f.read_to_end(&mut out).map_err(io_err("read", path))?;
        Ok(out)
    }

    /// Re-hashes the mirror against its index; returns every mismatch.
    pub async fn verify(&self) -> Result<Vec<Mismatch>, Error> {
        let entries = self.inner.index.list(&self.inner.node, None).await?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            entries.iter().filter_map(|e| me.verify_one(e)).collect()
        })
        .await
        .map_err(|e| Error::Io {
            op: "join",
            path: String::new(),
            source: io::Error::other(e),
        })
    }

    fn verify_one(&self, e: &Entry) -> Option<Mismatch> {
        let mismatch = |expected: String, found: String| {
            Some(Mismatch {
                path: e.path.clone(),
                expected,
                found,
            })
        };
        let md = match self.inner.mirror.symlink_metadata(e.path.as_str()) {
            Ok(md) => md,
            Err(err) => return mismatch(e.kind.as_str().into(), format!("missing ({err})")),
        };
        let found_kind = if md.file_type().is_symlink() {
            EntryKind::Symlink
        } else if md.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File
        };
        if found_kind != e.kind {
            return mismatch(e.kind.as_str().into(), found_kind.as_str().into());
        }
        match e.kind {
            EntryKind::Dir => None,
            EntryKind::Symlink => {
                let t = self.inner.mirror.read_link_contents(e.path.as_str()).ok();
                let t = t.and_then(|t| t.into_os_string().into_string().ok());
                (t != e.symlink_target).then(|| Mismatch {
                    path: e.path.clone(),
                    expected: e.symlink_target.clone().unwrap_or_default(),
                    found: t.unwrap_or_default(),
                })
            }
            EntryKind::File => {
                let expected = e.hash.map(|h| h.to_string()).unwrap_or_default();
                let found = match self.open_no_follow(&e.path) {
                    Ok(f) => {
                        let mut h = blake3::Hasher::new();
                        match h.update_reader(f) {
                            Ok(_) => ContentHash::from(h.finalize()).to_string(),
                            Err(err) => format!("unreadable ({err})"),
                        }
                    }
                    Err(err) => format!("unreadable ({err})"),
                };
                (found != expected).then_some(Mismatch {
                    path: e.path.clone(),
                    expected,
                    found,
                })
            }
        }
    }
}
