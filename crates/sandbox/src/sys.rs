//! One function per raw syscall the child makes between `fork` and `exec`.
//!
//! All are async-signal-safe: no allocation, no lock, no libc wrapper with
//! hidden state (`fork` is a raw `clone`, so glibc's atfork handlers, which
//! take malloc's locks, never run in a child of the multithreaded node).
//! Each returns the kernel's result (negative on error, `errno` set).

use std::ffi::CStr;

pub(crate) type Ret = libc::c_long;

/// `-1` as `Err(errno)`.
pub(crate) fn check(ret: Ret) -> std::io::Result<Ret> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[allow(unsafe_code)]
pub(crate) fn write(fd: i32, buf: &[u8]) -> Ret {
    // SAFETY: `buf` is a valid slice for its length.
    unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) as Ret }
}

#[allow(unsafe_code)]
pub(crate) fn read(fd: i32, buf: &mut [u8]) -> Ret {
    // SAFETY: `buf` is a valid, writable slice for its length.
    unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) as Ret }
}

#[allow(unsafe_code)]
pub(crate) fn fchdir(fd: i32) -> Ret {
    // SAFETY: plain syscall on an integer fd.
    unsafe { libc::fchdir(fd) as Ret }
}

#[allow(unsafe_code)]
pub(crate) fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> Ret {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `lim` is a valid rlimit that outlives the call.
    unsafe { libc::setrlimit(resource, &lim) as Ret }
}

#[allow(unsafe_code)]
pub(crate) fn prctl(option: libc::c_int, arg: libc::c_ulong) -> Ret {
    // SAFETY: the options used take integer arguments only.
    unsafe {
        libc::prctl(
            option,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) as Ret
    }
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

#[allow(unsafe_code)]
pub(crate) fn capset_empty() -> Ret {
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

pub(crate) fn getuid() -> u32 {
    #[allow(unsafe_code)]
    // SAFETY: getuid cannot fail and touches no memory.
    unsafe {
        libc::getuid()
    }
}

pub(crate) fn getgid() -> u32 {
    #[allow(unsafe_code)]
    // SAFETY: getgid cannot fail and touches no memory.
    unsafe {
        libc::getgid()
    }
}

pub(crate) fn getppid() -> i32 {
    #[allow(unsafe_code)]
    // SAFETY: getppid cannot fail and touches no memory.
    unsafe {
        libc::getppid()
    }
}

pub(crate) fn getpid() -> i32 {
    #[allow(unsafe_code)]
    // SAFETY: getpid cannot fail and touches no memory.
    unsafe {
        libc::getpid()
    }
}

#[allow(unsafe_code)]
pub(crate) fn unshare(flags: libc::c_int) -> Ret {
    // SAFETY: plain syscall with integer flags.
    unsafe { libc::unshare(flags) as Ret }
}

#[allow(unsafe_code)]
pub(crate) fn mount(
    source: &CStr,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Ret {
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
        ) as Ret
    }
}

#[allow(unsafe_code)]
pub(crate) fn open(path: &CStr, flags: libc::c_int) -> Ret {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) as Ret }
}

#[allow(unsafe_code)]
pub(crate) fn close(fd: i32) {
    // SAFETY: closes an fd the caller owns.
    unsafe {
        libc::close(fd);
    }
}

/// `close_range(2)`; `flags` 0 closes, `CLOSE_RANGE_CLOEXEC` marks.
#[allow(unsafe_code)]
pub(crate) fn close_range(first: u32, last: u32, flags: u32) -> Ret {
    // SAFETY: plain syscall with integer arguments.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) }
}

#[allow(unsafe_code)]
pub(crate) fn set_cloexec(fd: i32) -> Ret {
    // SAFETY: plain fcntl on an integer fd.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) as Ret }
}

#[allow(unsafe_code)]
pub(crate) fn landlock_restrict_self(fd: i32) -> Ret {
    // SAFETY: plain syscall on an integer fd with no flags.
    unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) }
}

/// `struct landlock_path_beneath_attr` (packed in the kernel's UAPI).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Adds one path-beneath rule to a ruleset (for a mount made in the child).
#[allow(unsafe_code)]
pub(crate) fn landlock_add_path_rule(ruleset: i32, parent_fd: i32, access: u64) -> Ret {
    const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd,
    };
    // SAFETY: `attr` is a valid rule attribute that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            LANDLOCK_RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    }
}

#[allow(unsafe_code)]
pub(crate) fn kill(pid: i32, sig: i32) -> Ret {
    // SAFETY: plain syscall; callers pass a pid they own or a group they made.
    unsafe { libc::kill(pid, sig) as Ret }
}

/// `fork` as a raw `clone(SIGCHLD)`: 0 in the child, the pid in the parent.
#[allow(unsafe_code)]
pub(crate) fn fork() -> Ret {
    // SAFETY: a clone without CLONE_VM and without a new stack behaves like
    // fork(2); the child only makes raw syscalls (see the module doc).
    unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    }
}

/// Waits for `pid` (`-1`: any child); the raw wait status in `status`.
#[allow(unsafe_code)]
pub(crate) fn wait(pid: i32, status: &mut i32) -> Ret {
    // SAFETY: `status` is a valid i32 for the kernel to write.
    unsafe { libc::waitpid(pid, status, 0) as Ret }
}

#[allow(unsafe_code)]
pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process at once, running nothing of the parent's.
    unsafe { libc::_exit(code) }
}

#[allow(unsafe_code)]
pub(crate) fn pipe(fds: &mut [i32; 2]) -> Ret {
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) as Ret }
}

/// Sets the disposition of `sig` to `SIG_DFL` or `SIG_IGN`.
#[allow(unsafe_code)]
pub(crate) fn set_signal(sig: i32, handler: libc::sighandler_t) -> Ret {
    // SAFETY: a zeroed sigaction with a constant disposition is valid; both
    // structs live on the stack for the call.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        libc::sigaction(sig, &act, std::ptr::null_mut()) as Ret
    }
}

#[allow(unsafe_code)]
pub(crate) fn setresid(uid: u32, gid: u32) -> Ret {
    // SAFETY: plain syscalls with integer arguments; setgroups with a null
    // list of length 0 clears the supplementary groups.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) < 0 {
            return -1;
        }
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) < 0 {
            return -1;
        }
        libc::syscall(libc::SYS_setresuid, uid, uid, uid)
    }
}

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
pub(crate) struct OpenHow {
    pub flags: u64,
    pub mode: u64,
    pub resolve: u64,
}

#[allow(unsafe_code)]
pub(crate) fn openat2(dir: i32, path: &CStr, how: &OpenHow) -> Ret {
    // SAFETY: `path` is NUL-terminated and `how` a valid open_how of the size
    // passed; both outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    }
}

/// `open_tree(AT_FDCWD, path, flags)`.
#[allow(unsafe_code)]
pub(crate) fn open_tree(path: &CStr, flags: u32) -> Ret {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) }
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
pub(crate) struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, attr)`.
#[allow(unsafe_code)]
pub(crate) fn mount_setattr(fd: i32, attr: &MountAttr) -> Ret {
    // SAFETY: the empty path is a NUL-terminated literal; `attr` is a valid
    // mount_attr of the size passed. Both outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as u32,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    }
}

/// `move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`.
#[allow(unsafe_code)]
pub(crate) fn move_mount(fd: i32, target: &CStr) -> Ret {
    const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
    // SAFETY: both paths are NUL-terminated and outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    }
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, prog)` for a program built before the fork.
#[allow(unsafe_code)]
pub(crate) fn seccomp_filter(prog: &[seccompiler::sock_filter]) -> Ret {
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at the program's instructions (same layout as
    // the kernel's sock_filter), which outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &fprog as *const libc::sock_fprog,
        )
    }
}

/// Whether the read end of the pipe whose write end is `fd` is closed.
#[allow(unsafe_code)]
pub(crate) fn pipe_reader_gone(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack, no timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLERR != 0
}

/// Closes (or, with `cloexec`, marks close-on-exec) fds `first..=last`:
/// `close_range(2)`, else (before Linux 5.9/5.11) one by one up to the open
/// files limit.
#[allow(unsafe_code)]
pub(crate) fn close_fds(first: u32, last: u32, cloexec: bool) {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    let flags = if cloexec { CLOSE_RANGE_CLOEXEC } else { 0 };
    if close_range(first, last, flags) == 0 {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the kernel to fill.
    let end = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(u64::from(last) + 1).min(1 << 20) as u32
    } else {
        1024.min(last.saturating_add(1))
    };
    for fd in first..end {
        if cloexec {
            set_cloexec(fd as i32);
        } else {
            close(fd as i32);
        }
    }
}
