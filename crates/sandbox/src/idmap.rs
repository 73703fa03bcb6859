//! Unprivileged tasks on a root node: the user namespace behind the idmapped
//! mounts of the workspace and the task temp dir.
//!
//! A STRICT task of a root node runs as an unprivileged uid/gid (65533 by
//! default). In its own mount namespace the workspace and its temp dir are
//! bind-mounted *idmapped* with a user namespace that maps on-disk uid/gid 0
//! to the task's ids: root-owned files there look like the task's own, and the
//! files it creates land on disk owned by root, with no capability involved.
//! The namespace is made once per sandbox; [`IdMap::new`] also tries the
//! mount on both filesystems, so a kernel or filesystem without idmapped
//! mounts is known at start (the sandbox then keeps uid 0 without
//! capabilities, as before).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::sys;

/// `MOUNT_ATTR_*` and `OPEN_TREE_*` of `<linux/mount.h>`.
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub(crate) const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
pub(crate) const OPEN_TREE_CLONE: u32 = 1;
pub(crate) const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;

/// The user namespace of the idmapped mounts (its fd, kept open).
#[derive(Debug)]
pub(crate) struct IdMap {
    pub userns: OwnedFd,
    pub uid: u32,
    pub gid: u32,
}

impl IdMap {
    /// Makes the namespace and checks that `dirs` can be mounted idmapped.
    pub(crate) fn new(uid: u32, gid: u32, dirs: &[&Path]) -> io::Result<IdMap> {
        let userns = userns_fd(uid, gid)?;
        let map = IdMap { userns, uid, gid };
        for d in dirs {
            map.try_mount(d)?;
        }
        Ok(map)
    }

    /// Clones `dir` as a detached mount and idmaps it; the clone is gone when
    /// its fd closes, so nothing is ever attached.
    fn try_mount(&self, dir: &Path) -> io::Result<()> {
        let path = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
        let fd = sys::check(sys::open_tree(
            &path,
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32,
        ))?;
        #[allow(unsafe_code)]
        // SAFETY: the kernel just returned this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let attr = sys::MountAttr {
            attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            attr_clr: 0,
            propagation: 0,
            userns_fd: self.userns.as_raw_fd() as u64,
        };
        sys::check(sys::mount_setattr(fd.as_raw_fd(), &attr)).map(drop)
    }
}

/// A user namespace mapping 0 to `uid`/`gid`: a child is cloned into a new
/// one, the maps written from here, its namespace opened, the child ended.
fn userns_fd(uid: u32, gid: u32) -> io::Result<OwnedFd> {
    let mut fds = [0i32; 2];
    sys::check(sys::pipe(&mut fds))?;
    #[allow(unsafe_code)]
    // SAFETY: pipe2 just made both fds; they are owned here only.
    let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    #[allow(unsafe_code)]
    // SAFETY: like fork(2); the child only makes raw syscalls (close, read,
    // _exit) on integers it already has.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // Child: wait until the parent closes its end, then leave.
        sys::close(tx.as_raw_fd());
        let mut b = [0u8; 1];
        sys::read(rx.as_raw_fd(), &mut b);
        sys::exit(0);
    }
    drop(rx);
    let pid = sys::check(pid)? as i32;
    let result = (|| {
        fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1"))?;
        fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
        fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid} 1"))?;
        Ok::<_, io::Error>(OwnedFd::from(fs::File::open(format!(
            "/proc/{pid}/ns/user"
        ))?))
    })();
    drop(tx);
    let mut status = 0;
    sys::wait(pid, &mut status);
    result
}
