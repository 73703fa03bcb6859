//! The node's side of confinement: a workspace path is reached from the
//! workspace root without following a symlink anywhere along it.
//!
//! A symlink in the workspace is mirrored as a link; what it points at is not
//! the workspace's. Opening `root/link/file` by path would follow `link` (the
//! kernel resolves every component but the last one), so a watcher event or a
//! race that hands the node `link/file` while `link -> /home/me/.ssh` would
//! have mirrored a file from outside the workspace. Here every path is opened
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the root's
//! descriptor: one system call, the kernel refusing any symlink on the way
//! (`ELOOP`) and any step outside the root (`EXDEV`). Kernels without
//! `openat2` (before 5.6, or seccomp filters refusing it) get the same walk
//! in user space, one `O_NOFOLLOW` directory at a time.
//!
//! (Not cap-std: its `Dir` also stays below the root, but it follows a
//! symlink that stays inside, so `link/file` would still be read through
//! `link`.)

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use ganglion_core::RelPath;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The workspace root, opened once.
#[derive(Debug)]
pub struct WorkspaceDir {
    root: OwnedFd,
}

/// Set once `openat2` answered `ENOSYS` (or `EPERM` from a seccomp filter).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl WorkspaceDir {
    /// Opens the root (following symlinks in `path` itself: the workspace
    /// may live under a linked directory).
    pub fn open(path: &Path) -> io::Result<Self> {
        let root = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { root })
    }

    /// The root's descriptor (for `*at` calls relative to it).
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The directory at `rel` (the root for `None`), opened read-only
    /// through no symlink: a descriptor for `*at` calls and `fsync`.
    pub fn open_dir(&self, rel: Option<&RelPath>) -> io::Result<File> {
        match rel {
            None => Ok(File::from(rustix::fs::openat(
                &self.root,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?)),
            Some(rel) => self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY),
        }
    }

    /// The entry at `rel` itself (a symlink is not followed): an `O_PATH`
    /// descriptor, enough for [`File::metadata`] and [`Self::read_link`].
    pub fn entry(&self, rel: &RelPath) -> io::Result<File> {
        self.open_beneath(rel, OFlags::PATH)
    }

    /// Opens the regular file at `rel` for reading. Never blocks on a FIFO
    /// swapped in (`O_NONBLOCK`); the caller checks the kind on the open file.
    pub fn open_read(&self, rel: &RelPath) -> io::Result<File> {
        self.open_beneath(rel, OFlags::RDONLY | OFlags::NONBLOCK)
    }

    /// [`Self::entry`] and its metadata.
    pub fn metadata(&self, rel: &RelPath) -> io::Result<Metadata> {
        self.entry(rel)?.metadata()
    }

    /// The target of the symlink `entry` (an [`Self::entry`] descriptor).
    pub fn read_link(entry: &File) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(entry.as_fd(), "", Vec::new())?.into_bytes())
    }

    fn open_beneath(&self, rel: &RelPath, flags: OFlags) -> io::Result<File> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            // EAGAIN: a rename elsewhere raced the lookup; the kernel asks
            // for a retry rather than risk a wrong answer.
            for _ in 0..8 {
                match rustix::fs::openat2(&self.root, rel.as_str(), flags, Mode::empty(), resolve) {
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS | Errno::PERM) => {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        break;
                    }
                    r => return Ok(File::from(r?)),
                }
            }
            if !NO_OPENAT2.load(Ordering::Relaxed) {
                return Err(io::Error::from(Errno::AGAIN));
            }
        }
        walk(self.root.as_fd(), rel, flags)
    }
}

/// `openat2` in user space: each directory opened `O_NOFOLLOW` from the one
/// before. (`RelPath` has no `..`, no empty and no absolute components.)
fn walk(root: BorrowedFd<'_>, rel: &RelPath, flags: OFlags) -> io::Result<File> {
    let mut parts = rel.as_str().split('/').peekable();
    let mut dir: Option<OwnedFd> = None;
    while let Some(name) = parts.next() {
        let at = dir.as_ref().map_or(root, |d| d.as_fd());
        if parts.peek().is_none() {
            return Ok(File::from(rustix::fs::openat(
                at,
                name,
                flags,
                Mode::empty(),
            )?));
        }
        dir = Some(rustix::fs::openat(
            at,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
    }
    Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    /// `ws/{d/f, in -> d, out -> <outside>}`; `<outside>/secret`.
    fn setup() -> (tempfile::TempDir, WorkspaceDir) {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("ws");
        fs::create_dir_all(ws.join("d")).unwrap();
        fs::write(ws.join("d/f"), b"inside").unwrap();
        fs::create_dir(t.path().join("outside")).unwrap();
        fs::write(t.path().join("outside/secret"), b"secret").unwrap();
        symlink("d", ws.join("in")).unwrap();
        symlink(t.path().join("outside"), ws.join("out")).unwrap();
        let dir = WorkspaceDir::open(&ws).unwrap();
        (t, dir)
    }

    /// `ELOOP` from `openat2` or for a link as the last component;
    /// `ENOTDIR` from the walk, for a link where a directory must be.
    fn refused(r: io::Result<File>) -> bool {
        matches!(r, Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)))
    }

    fn check(dir: &WorkspaceDir) {
        let mut s = String::new();
        dir.open_read(&rel("d/f"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "inside");
        // A link is an entry of its own, never a way through.
        let link = dir.entry(&rel("out")).unwrap();
        assert!(link.metadata().unwrap().file_type().is_symlink());
        assert!(
            WorkspaceDir::read_link(&link)
                .unwrap()
                .ends_with(b"/outside")
        );
        assert!(refused(dir.open_read(&rel("out/secret"))));
        assert!(refused(dir.entry(&rel("out/secret"))));
        assert!(refused(dir.open_read(&rel("in/f"))));
        assert!(refused(dir.open_read(&rel("out"))));
        assert!(matches!(
            dir.entry(&rel("d/missing")),
            Err(e) if e.kind() == io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn paths_through_a_symlink_are_refused_and_links_are_entries() {
        let (_t, dir) = setup();
        check(&dir);
    }

    #[test]
    fn the_walk_without_openat2_refuses_the_same_paths() {
        let (_t, dir) = setup();
        let w = |p: &str, f: OFlags| walk(dir.root.as_fd(), &rel(p), f | OFlags::NOFOLLOW);
        assert!(w("d/f", OFlags::RDONLY).is_ok());
        assert!(
            w("out", OFlags::PATH)
                .unwrap()
                .metadata()
                .unwrap()
                .is_symlink()
        );
        for p in ["out/secret", "in/f"] {
            assert!(refused(w(p, OFlags::RDONLY)), "{p}");
            assert!(refused(w(p, OFlags::PATH)), "{p}");
        }
        assert!(refused(w("out", OFlags::RDONLY)));
    }
}
