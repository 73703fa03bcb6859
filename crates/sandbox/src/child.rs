//! What the child does between `fork` and `exec`, and the few raw syscalls the
//! parent needs (signals to a process group).
//!
//! Everything the child needs is prepared by the parent (fds opened, values
//! computed) so that the child, a fork of a multithreaded process, only makes
//! async-signal-safe syscalls: no allocation, no lock.

use std::ffi::CString;
use std::io;

use tokio::process::Command;

/// Limits set with `setrlimit` in the child (soft = hard).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rlimit {
    pub resource: libc::__rlimit_resource_t,
    pub value: u64,
}

/// The child's setup, all plain integers so it is `Send` and copying it
/// allocates nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChildSetup {
    /// `cgroup.procs` fds to write `0` to (joins the task's cgroups).
    pub cgroup_procs: Vec<i32>,
    /// Directory fd (resolved beneath the workspace) to `fchdir` into.
    pub cwd: Option<i32>,
    pub rlimits: Vec<Rlimit>,
    /// Drop every capability, from the bounding set too, so a root task keeps
    /// uid 0's file ownership but loses its privileges.
    pub drop_capabilities: bool,
    /// Landlock ruleset fd to restrict the child with (sets `no_new_privs`).
    pub landlock: Option<i32>,
    /// Directories to cover in a mount namespace of the child's own.
    pub hide: Option<Hide>,
}

/// Covers directories with an empty read-only tmpfs in a new mount namespace
/// (C strings made before the fork: the child does not allocate).
#[derive(Clone, Debug)]
pub(crate) struct Hide {
    pub paths: Vec<CString>,
    /// For a node that is not root, a user namespace too (which grants the
    /// right to mount in it), mapping the node's uid and gid to themselves:
    /// the `uid_map` and `gid_map` lines.
    pub user_maps: Option<(CString, CString)>,
}

impl Hide {
    pub(crate) fn new(paths: &[std::path::PathBuf], root: bool) -> io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let c =
            |b: &[u8]| CString::new(b).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
        let paths = paths
            .iter()
            .map(|p| c(p.as_os_str().as_bytes()))
            .collect::<io::Result<_>>()?;
        let user_maps = if root {
            None
        } else {
            let (uid, gid) = (raw::getuid(), raw::getgid());
            Some((
                c(format!("{uid} {uid} 1").as_bytes())?,
                c(format!("{gid} {gid} 1").as_bytes())?,
            ))
        };
        Ok(Self { paths, user_maps })
    }

    fn apply(&self) -> io::Result<()> {
        match &self.user_maps {
            None => check(raw::unshare(libc::CLONE_NEWNS))?,
            Some((uid_map, gid_map)) => {
                check(raw::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS))?;
                write_file(c"/proc/self/setgroups", c"deny")?;
                write_file(c"/proc/self/uid_map", uid_map)?;
                write_file(c"/proc/self/gid_map", gid_map)?;
            }
        }
        // Nothing mounted here may reach the node's own namespace.
        check(raw::mount(
            c"none",
            c"/",
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        ))?;
        for path in &self.paths {
            check(raw::mount(
                c"ganglion-hidden",
                path,
                Some(c"tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some(c"size=4k,mode=0555"),
            ))?;
        }
        Ok(())
    }
}

fn write_file(path: &std::ffi::CStr, text: &std::ffi::CStr) -> io::Result<()> {
    let fd = raw::open_write(path);
    check(fd)?;
    let written = raw::write(fd as i32, text.to_bytes());
    raw::close(fd as i32);
    check(written).map(drop)
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Higher than any capability the kernel knows (`CAP_LAST_CAP` is 40 today).
const CAP_SCAN_END: libc::c_ulong = 64;

impl ChildSetup {
    /// Installs the setup on `cmd`; runs in the child after `fork`.
    pub(crate) fn install(self, cmd: &mut Command) {
        #[allow(unsafe_code)]
        // SAFETY: the closure only reads integers and C strings captured by
        // value and makes raw syscalls (write, open, close, unshare, mount,
        // fchdir, setrlimit, prctl, capset, landlock); it does not allocate,
        // lock or touch state shared with other threads of the parent, so it is
        // async-signal-safe as `pre_exec` requires.
        unsafe {
            cmd.pre_exec(move || self.apply());
        }
    }

    fn apply(&self) -> io::Result<()> {
        for &fd in &self.cgroup_procs {
            check(raw::write(fd, b"0"))?;
        }
        if let Some(fd) = self.cwd {
            check(raw::fchdir(fd))?;
        }
        // After the chdir: unshare moves the working directory into the new
        // mount namespace, where lookups from it meet the covers. (The cwd fd
        // itself stays in the old namespace, under no cover; it is not used
        // again.)
        if let Some(hide) = &self.hide {
            hide.apply()?;
        }
        for r in &self.rlimits {
            check(raw::setrlimit(r.resource, r.value))?;
        }
        if self.drop_capabilities {
            for cap in 0..CAP_SCAN_END {
                // EINVAL past the last capability the kernel knows: ignored.
                raw::prctl(libc::PR_CAPBSET_DROP, cap);
            }
            raw::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            );
            check(raw::capset_empty())?;
        }
        if let Some(fd) = self.landlock {
            check(raw::prctl(libc::PR_SET_NO_NEW_PRIVS, 1))?;
            check(raw::landlock_restrict_self(fd))?;
        }
        Ok(())
    }
}

fn check(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sends `sig` to process `pid` (negative: a process group). Errors (already
/// gone) are ignored.
pub(crate) fn kill(pid: i32, sig: i32) {
    raw::kill(pid, sig);
}

/// Each function wraps one syscall; all are async-signal-safe.
mod raw {
    use std::ffi::CStr;

    use super::{CapData, CapHeader, LINUX_CAPABILITY_VERSION_3};

    #[allow(unsafe_code)]
    pub(super) fn write(fd: i32, buf: &[u8]) -> libc::c_long {
        // SAFETY: `buf` is a valid slice for its length.
        unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) as libc::c_long }
    }

    #[allow(unsafe_code)]
    pub(super) fn fchdir(fd: i32) -> libc::c_long {
        // SAFETY: plain syscall on an integer fd.
        unsafe { libc::fchdir(fd) as libc::c_long }
    }

    #[allow(unsafe_code)]
    pub(super) fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> libc::c_long {
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: `lim` is a valid rlimit that outlives the call.
        unsafe { libc::setrlimit(resource, &lim) as libc::c_long }
    }

    #[allow(unsafe_code)]
    pub(super) fn prctl(option: libc::c_int, arg: libc::c_ulong) -> libc::c_long {
        // SAFETY: the options used take integer arguments only.
        unsafe {
            libc::prctl(
                option,
                arg,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) as libc::c_long
        }
    }

    #[allow(unsafe_code)]
    pub(super) fn capset_empty() -> libc::c_long {
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: header and two data structs as capset(2) expects for version 3;
        // both live on the stack for the duration of the call.
        unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            )
        }
    }

    pub(super) fn getuid() -> u32 {
        #[allow(unsafe_code)]
        // SAFETY: getuid cannot fail and touches no memory.
        unsafe {
            libc::getuid()
        }
    }

    pub(super) fn getgid() -> u32 {
        #[allow(unsafe_code)]
        // SAFETY: getgid cannot fail and touches no memory.
        unsafe {
            libc::getgid()
        }
    }

    #[allow(unsafe_code)]
    pub(super) fn unshare(flags: libc::c_int) -> libc::c_long {
        // SAFETY: plain syscall with integer flags.
        unsafe { libc::unshare(flags) as libc::c_long }
    }

    #[allow(unsafe_code)]
    pub(super) fn mount(
        source: &CStr,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> libc::c_long {
        let or_null = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: every pointer is a NUL-terminated string that outlives the
        // call, or null where mount(2) allows it.
        unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                or_null(fstype),
                flags,
                or_null(data).cast(),
            ) as libc::c_long
        }
    }

    #[allow(unsafe_code)]
    pub(super) fn open_write(path: &CStr) -> libc::c_long {
        // SAFETY: `path` is NUL-terminated and outlives the call.
        unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) as libc::c_long }
    }

    #[allow(unsafe_code)]
    pub(super) fn close(fd: i32) {
        // SAFETY: closes an fd this module opened.
        unsafe {
            libc::close(fd);
        }
    }

    #[allow(unsafe_code)]
    pub(super) fn landlock_restrict_self(fd: i32) -> libc::c_long {
        // SAFETY: plain syscall on an integer fd with no flags.
        unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) }
    }

    #[allow(unsafe_code)]
    pub(super) fn kill(pid: i32, sig: i32) -> libc::c_long {
        // SAFETY: plain syscall; callers pass a pid they own or a group they made.
        unsafe { libc::kill(pid, sig) as libc::c_long }
    }
}
