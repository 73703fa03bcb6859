//! The hub's confined writer for one node's mirror.
//!
//! Layout: `DATA_DIR/mirrors/<node>/` (the mirror) and `DATA_DIR/staging/<node>/`
//! (transfers in progress, in shards `u0`…`u7`, outside the mirror tree, same
//! filesystem). Every
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
//! 1. stage: copies and symlinks are staged too; then every staged file is
//!    made durable: fsync each, or, from a few dozen files on, one `syncfs`
//!    of the filesystem for the whole batch;
//! 2. retract: ONE index transaction removes the rows of every path the batch
//!    replaces, moves or deletes (the index stops naming content about to go);
//! 3. place: rename staged files into place, move, mkdir, unlink;
//! 4. fsync each touched directory once (again one `syncfs` for many);
//! 5. publish: ONE index transaction inserts the new rows.
//!
//! An [`UploadStream`] feeds a stream of many files (headers and data) to
//! these calls, one file after another.
//!
//! A large transfer cut before its end is kept as a *partial* (`partial.rs`):
//! [`Receiver::resume_offset`] tells how many of its bytes are held, and a
//! transfer opened at that offset ([`Receiver::open_transfer_at`]) re-hashes
//! them from disk and goes on from there; its whole-file hash is checked as
//! usual.
//!
//! A crash at any point leaves the index naming only durable content; the
//! node's applied sequence is not advanced, so the node resends what was lost.
//!
//! The filesystem work is blocking: call the sync methods from a blocking
//! thread; [`Receiver::commit`] and [`Receiver::verify`] move their IO there.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

mod commit;
mod partial;
mod stream;

pub use partial::{MAX_PARTIALS, PARTIAL_MAX_AGE, RESUMABLE_FROM};

pub use stream::{FileOutcome, Part, StreamError, UploadStream};

pub(crate) use commit::survivors;
mod read;

use cap_std::ambient_authority;
use std::os::unix::fs::PermissionsExt;

use cap_std::fs::{Dir, File, OpenOptions, OpenOptionsExt, Permissions};
use ganglion_core::RelPath;
use tracing::{info, instrument, warn};

use crate::engine::{Op, TransferFailure};
use crate::entry::{ContentHash, Entry};
use crate::immutable::ImmutablePaths;
use crate::index::{self, SharedIndex};
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
    #[error("resume offset not held by the receiver")]
    BadOffset {
        path: String,
        offset: u64,
        /// The bytes the receiver holds for this content.
        held: u64,
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

/// A large transfer hands its bytes to writeback every this many bytes, so
/// that the fsync before its rename waits for the tail only, not for the
/// whole file (the kernel would otherwise start writing back only once dirty
/// pages reach a tenth of memory: none of a 1 GiB file on a 24 GiB host).
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Starts writeback of `len` bytes at `offset` without waiting for it:
/// `POSIX_FADV_DONTNEED` writes dirty pages back asynchronously (and drops
/// the range's clean pages: the hub does not read what it just received).
/// Durability still comes from the fsync before the rename; a failure here
/// only loses the head start.
fn kick_writeback(file: &File, offset: u64, len: u64) {
    if let Err(e) = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    ) {
        tracing::debug!(error = %e, "fadvise failed");
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
    /// Bytes up to here were handed to writeback (see [`WRITEBACK_EVERY`]).
    kicked: u64,
    hasher: blake3::Hasher,
    file: File,
    staged_name: String,
    /// Staged as a partial: kept (fsynced) when the transfer is cut.
    resumable: bool,
    guard: TransferGuard,
}

/// A verified transfer waiting for its commit. Its file is closed: thousands
/// may wait at once (an initial sync); the commit reopens it to fsync it.
struct Staged {
    hash: ContentHash,
    staged_name: String,
    _guard: TransferGuard,
}

/// What a transfer's first message says of its file.
#[derive(Clone, Copy, Debug)]
pub struct Opening<'a> {
    pub path: &'a RelPath,
    pub hash: ContentHash,
    pub size: u64,
    /// The node's mode (only the exec bit crosses over).
    pub mode: u32,
    /// Where its data starts: 0, or the bytes held of a cut transfer.
    pub offset: u64,
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

/// Uploads are staged in this many subdirectories of a node's staging
/// directory, by transfer id. Creating a file locks its directory, and the
/// upload streams' writers creating thousands of files in one directory spent
/// ~4 % of the hub's CPU spinning on that lock in an initial linux sync.
const STAGING_SHARDS: u64 = 8;

/// The name of staging shard `i`.
fn shard(i: u64) -> String {
    format!("u{i}")
}

fn is_shard(name: &str) -> bool {
    (0..STAGING_SHARDS).any(|i| shard(i) == name)
}

struct Inner {
    node: String,
    mirror: Dir,
    staging: Dir,
    index: SharedIndex,
    locks: LockRegistry,
    uploads: Mutex<HashMap<TransferId, Upload>>,
    staged: Mutex<HashMap<RelPath, Staged>>,
    /// The partials at rest (see `partial.rs`); one claimed by a transfer is
    /// not in it.
    partials: Mutex<partial::Partials>,
    /// Every staging name in use, claimed before its file is created and
    /// released once it is renamed into the mirror or removed: the sweep
    /// checks each name here at the moment it would remove it, so it never
    /// takes a file from a transfer or a commit in progress.
    claimed: Mutex<HashSet<String>>,
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
        index: SharedIndex,
        locks: LockRegistry,
    ) -> Result<Self, Error> {
        let m = data_dir.join("mirrors").join(node);
        let s = data_dir.join("staging").join(node);
        let shards = (0..STAGING_SHARDS)
            .map(|i| s.join(shard(i)))
            .chain([s.join(partial::PARTIAL_DIR)]);
        for d in [m.clone(), s.clone()].into_iter().chain(shards) {
            std::fs::create_dir_all(&d).map_err(io_err("create_dir", d.display()))?;
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
            partials: Mutex::default(),
            claimed: Mutex::new(HashSet::new()),
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

    pub fn index(&self) -> &SharedIndex {
        &self.inner.index
    }

    /// Starts a transfer at byte 0: [`Self::open_transfer_at`] offset 0.
    pub fn open_transfer(
        &self,
        path: &RelPath,
        hash: ContentHash,
        size: u64,
        mode: u32,
        immutable: &ImmutablePaths,
    ) -> Result<TransferId, Error> {
        let opening = Opening {
            path,
            hash,
            size,
            mode,
            offset: 0,
        };
        self.open_transfer_at(opening, immutable)
    }

    /// The bytes held for a cut transfer of (path, hash): the offset its
    /// next attempt resumes from (see `partial.rs`).
    pub fn resume_offset(&self, path: &RelPath, hash: ContentHash) -> Option<u64> {
        let partials = lock(&self.inner.partials);
        // Asked for every need: most often there is none to look for.
        if partials.is_empty() {
            return None;
        }
        partials.get(&partial::partial_name(path, &hash))
    }

    /// Starts a transfer whose data begins at `offset`: checks immutability
    /// (first check), takes the lock, creates the staged file exclusively
    /// with its final mode — or, at an offset, reopens the partial holding
    /// that many bytes and re-hashes them. An offset the receiver does not
    /// hold is refused (`BadOffset`) and drops the partial: the next attempt
    /// starts at 0.
    #[instrument(skip_all, fields(node = %self.inner.node, path = %o.path, offset = o.offset))]
    pub fn open_transfer_at(
        &self,
        o: Opening<'_>,
        immutable: &ImmutablePaths,
    ) -> Result<TransferId, Error> {
        let Opening {
            path,
            hash,
            size,
            mode,
            offset,
        } = o;
        if immutable.matches(path, false) {
            warn!(%path, "transfer refused: immutable path");
            return Err(Error::Refused {
                path: path.to_string(),
            });
        }
        let guard = self.inner.locks.acquire(&self.inner.node, path)?;
        let id: TransferId = rand::random();
        // Only the exec bit crosses over: 0o755 or 0o644.
        let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        let resumable = size >= partial::RESUMABLE_FROM;
        let (file, staged_name, hasher) = if resumable {
            self.open_partial(path, hash, size, mode, offset)?
        } else if offset != 0 {
            warn!(%path, offset, "resume refused: not a resumable transfer");
            return Err(Error::BadOffset {
                path: path.to_string(),
                offset,
                held: 0,
            });
        } else {
            let (file, name) = self.create_staged(id, mode)?;
            (file, name, blake3::Hasher::new())
        };
        let up = Upload {
            path: path.clone(),
            hash,
            size,
            written: offset,
            kicked: offset,
            hasher,
            file,
            staged_name,
            resumable,
            guard,
        };
        lock(&self.inner.uploads).insert(id, up);
        Ok(id)
    }

    fn create_staged(&self, id: u64, mode: u32) -> Result<(File, String), Error> {
        let name = self.claim(format!(
            "{}/{id:016x}-{:08x}.staged",
            shard(id % STAGING_SHARDS),
            rand::random::<u32>()
        ));
        let file = self.create_named(&name, mode)?;
        Ok((file, name))
    }

    /// Creates the claimed staging file `name` exclusively, with its final
    /// mode; on error the name is released.
    fn create_named(&self, name: &str, mode: u32) -> Result<File, Error> {
        let mut o = OpenOptions::new();
        o.write(true).read(true).create_new(true).mode(0o600);
        let file = match self.inner.staging.open_with(name, &o) {
            Ok(f) => f,
            Err(e) => {
                self.release(name);
                return Err(io_err("create_staged", name)(e));
            }
        };
        // Final mode on the fd before any byte is written.
        if let Err(e) =
            file.set_permissions(Permissions::from_std(std::fs::Permissions::from_mode(mode)))
        {
            self.remove_staged(name);
            return Err(io_err("fchmod", name)(e));
        }
        Ok(file)
    }

    /// Claims a staging name before anything is created under it.
    pub(crate) fn claim(&self, name: String) -> String {
        lock(&self.inner.claimed).insert(name.clone());
        name
    }

    /// Releases a staging name whose file is gone (renamed into the mirror).
    pub(crate) fn release(&self, name: &str) {
        lock(&self.inner.claimed).remove(name);
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
            if up.written - up.kicked >= WRITEBACK_EVERY {
                kick_writeback(&up.file, up.kicked, up.written - up.kicked);
                up.kicked = up.written;
            }
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
        drop(up.file);
        let staged = Staged {
            hash: up.hash,
            staged_name: up.staged_name,
            _guard: up.guard,
        };
        if let Some(old) = lock(&self.inner.staged).insert(up.path.clone(), staged) {
            self.remove_staged(&old.staged_name);
        }
        Ok((up.path, up.hash))
    }

    /// Stages the content of a hub-side write (`mirror put`) for `path`:
    /// hashed, written to staging with its final mode, waiting for a commit
    /// naming `path` (as a finished upload does). Hub-side writes may go to
    /// immutable paths: the hub owns them.
    pub fn stage_put(
        &self,
        path: &RelPath,
        data: &[u8],
        executable: bool,
    ) -> Result<ContentHash, Error> {
        let hash = ContentHash::of(data);
        let mode = if executable { 0o755 } else { 0o644 };
        let id = self.open_transfer(
            path,
            hash,
            data.len() as u64,
            mode,
            &ImmutablePaths::default(),
        )?;
        for (i, part) in data.chunks(1 << 20).enumerate() {
            self.chunk(id, (i as u64) << 20, part)?;
        }
        self.finish(id)?;
        Ok(hash)
    }

    /// Abandons an open transfer (the stream ended): a resumable one is
    /// kept as a partial, any other removed.
    pub fn abort(&self, id: TransferId) {
        let up = lock(&self.inner.uploads).remove(&id);
        if let Some(up) = up {
            self.keep_or_remove(up);
        }
    }

    /// Drops a staged transfer that will not be committed, and a partial
    /// of that content (the fetch is not wanted any more).
    pub fn discard(&self, path: &RelPath, hash: ContentHash) {
        let mut staged = lock(&self.inner.staged);
        if staged.get(path).is_some_and(|s| s.hash == hash) {
            let s = staged.remove(path).expect("present");
            drop(staged);
            self.remove_staged(&s.staged_name);
        } else {
            drop(staged);
        }
        let name = partial::partial_name(path, &hash);
        if lock(&self.inner.partials).take(&name).is_some() {
            self.remove_partial(&name);
        }
    }

    /// The partials at rest (tests, status).
    pub fn partials(&self) -> usize {
        lock(&self.inner.partials).len()
    }

    /// Drops transfers whose lock was reaped for idleness.
    pub fn reap_idle(&self) -> usize {
        let dead: Vec<Upload> = {
            let mut uploads = lock(&self.inner.uploads);
            let ids: Vec<TransferId> = uploads
                .iter()
                .filter(|(_, u)| u.guard.is_cancelled())
                .map(|(i, _)| *i)
                .collect();
            ids.into_iter().filter_map(|i| uploads.remove(&i)).collect()
        };
        let n = dead.len();
        for up in dead {
            self.keep_or_remove(up);
        }
        n
    }

    pub(crate) fn remove_staged(&self, name: &str) {
        if let Err(e) = self.inner.staging.remove_file(name)
            && e.kind() != io::ErrorKind::NotFound
        {
            // Left claimed-free: the next sweep tries again.
            warn!(name, error = %e, "cannot remove staged file");
        }
        self.release(name);
    }

    /// Removes staging files no transfer or commit owns (no claimed name),
    /// in the staging directory and its shards; keeps the partials (and
    /// registers those found at start), but those past their age. Run at
    /// start and periodically. Returns how many were removed.
    pub fn sweep_staging(&self) -> Result<usize, Error> {
        let mut n = 0;
        for i in 0..STAGING_SHARDS {
            n += self.sweep_dir(Some(&shard(i)))?;
        }
        n += self.sweep_dir(None)?;
        n += self.sweep_partials()?;
        if n > 0 {
            info!(node = %self.inner.node, removed = n, "swept stale staging files");
        }
        Ok(n)
    }

    /// Sweeps one directory of staging: the top (`None`; a shard is kept,
    /// anything else unclaimed goes) or a shard.
    fn sweep_dir(&self, shard_name: Option<&str>) -> Result<usize, Error> {
        let staging = &self.inner.staging;
        let entries = match shard_name {
            None => staging.entries(),
            Some(d) => staging.read_dir(d),
        };
        let entries = match entries {
            Err(e) if e.kind() == io::ErrorKind::NotFound && shard_name.is_some() => return Ok(0),
            r => r.map_err(io_err("read_dir", "staging"))?,
        };
        let mut n = 0;
        for ent in entries {
            let ent = ent.map_err(io_err("read_dir", "staging"))?;
            let file = ent.file_name().to_string_lossy().into_owned();
            let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let name = match shard_name {
                None if is_dir && (is_shard(&file) || file == partial::PARTIAL_DIR) => continue,
                None => file,
                Some(d) => format!("{d}/{file}"),
            };
            // Checked and removed under the claims lock: a name claimed
            // after the listing was taken is seen here.
            let claimed = lock(&self.inner.claimed);
            if claimed.contains(&name) {
                continue;
            }
            let r = if is_dir {
                staging.remove_dir_all(&name)
            } else {
                staging.remove_file(&name)
            };
            drop(claimed);
            match r {
                Ok(()) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warn!(name, error = %e, "cannot sweep staging entry"),
            }
        }
        Ok(n)
    }
}
