//! The namespaces of a STRICT task: its own mount namespace (workspace and
//! temp dir re-mounted `noexec,nosuid,nodev`, idmapped on a root node; hidden
//! directories covered) and its own PID namespace with a fresh `/proc`.
//!
//! Process layout: the process the node spawned (the *keeper*, whose pid the
//! node sees) unshares the namespaces, mounts, and forks the namespace's
//! *init* (pid 1), which forks the *program* (pid 2, the only one to `exec`).
//! The init reaps every orphan of the namespace and, when the program ends,
//! sends its raw wait status to the keeper through a pipe and exits (the
//! kernel then kills whatever is left in the namespace). The keeper exits with
//! the program's status (re-raising its signal), so the node sees exactly what
//! it saw without namespaces. The keeper dies with the node
//! (`PR_SET_PDEATHSIG`), the init with the keeper, and everything in the
//! namespace with the init: no task outlives its node.
//!
//! Signals from the node's process-group kill (cancel, timeout) reach the
//! program; the keeper and the init ignore them.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::idmap::{
    MOUNT_ATTR_IDMAP, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, OPEN_TREE_CLOEXEC,
    OPEN_TREE_CLONE,
};
use crate::sys::{self, check};

/// Signals the keeper and the init ignore (and the program gets back at
/// their default before `exec`).
const TERMINATING: &[i32] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGPIPE,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
];

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A directory bind-mounted over itself with `attr` (C strings made before
/// the fork: the child does not allocate).
#[derive(Clone, Debug)]
pub(crate) struct Remount {
    pub path: CString,
    pub attr_set: u64,
    pub userns_fd: Option<i32>,
}

impl Remount {
    /// `noexec,nosuid,nodev`, idmapped with `userns_fd` when given.
    pub(crate) fn new(path: &Path, userns_fd: Option<i32>) -> io::Result<Self> {
        let mut attr_set = MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if userns_fd.is_some() {
            attr_set |= MOUNT_ATTR_IDMAP;
        }
        Ok(Self {
            path: cstring(path)?,
            attr_set,
            userns_fd,
        })
    }

    fn apply(&self) -> io::Result<()> {
        let fd = check(sys::open_tree(
            &self.path,
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32,
        ))? as i32;
        let attr = sys::MountAttr {
            attr_set: self.attr_set,
            attr_clr: 0,
            propagation: 0,
            userns_fd: self.userns_fd.unwrap_or(0) as u64,
        };
        let r = check(sys::mount_setattr(fd, &attr))
            .and_then(|_| check(sys::move_mount(fd, &self.path)));
        sys::close(fd);
        r.map(drop)
    }
}

/// The namespaces of one STRICT task.
#[derive(Clone, Debug)]
pub(crate) struct Isolation {
    /// For a node that is not root, a user namespace too (which grants the
    /// right to mount in it), mapping the node's uid and gid to themselves:
    /// the `uid_map` and `gid_map` lines.
    pub user_maps: Option<(CString, CString)>,
    /// A PID namespace with its own `/proc`.
    pub pid: bool,
    /// Workspace and temp dir, remounted (before the covers).
    pub remounts: Vec<Remount>,
    /// Directories covered with an empty read-only tmpfs.
    pub hidden: Vec<CString>,
}

impl Isolation {
    pub(crate) fn new(root: bool, pid: bool) -> io::Result<Self> {
        let user_maps = if root {
            None
        } else {
            let c = |s: String| CString::new(s).map_err(io::Error::other);
            let (uid, gid) = (sys::getuid(), sys::getgid());
            Some((c(format!("{uid} {uid} 1"))?, c(format!("{gid} {gid} 1"))?))
        };
        Ok(Self {
            user_maps,
            pid,
            remounts: Vec::new(),
            hidden: Vec::new(),
        })
    }

    pub(crate) fn hide(&mut self, paths: &[std::path::PathBuf]) -> io::Result<()> {
        for p in paths {
            self.hidden.push(cstring(p)?);
        }
        Ok(())
    }

    /// In the keeper: new namespaces and the mounts of the task.
    pub(crate) fn enter(&self) -> io::Result<()> {
        let mut flags = libc::CLONE_NEWNS;
        if self.pid {
            flags |= libc::CLONE_NEWPID;
        }
        match &self.user_maps {
            None => check(sys::unshare(flags)).map(drop)?,
            Some((uid_map, gid_map)) => {
                check(sys::unshare(libc::CLONE_NEWUSER | flags))?;
                write_file(c"/proc/self/setgroups", b"deny")?;
                write_file(c"/proc/self/uid_map", uid_map.to_bytes())?;
                write_file(c"/proc/self/gid_map", gid_map.to_bytes())?;
            }
        }
        // Nothing mounted here may reach the node's own namespace.
        check(sys::mount(
            c"none",
            c"/",
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        ))?;
        for r in &self.remounts {
            r.apply()?;
        }
        for path in &self.hidden {
            check(sys::mount(
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

fn write_file(path: &std::ffi::CStr, text: &[u8]) -> io::Result<()> {
    let fd = check(sys::open(path, libc::O_WRONLY))? as i32;
    let written = sys::write(fd, text);
    sys::close(fd);
    check(written).map(drop)
}

/// In the program (pid 2 of the new namespace, before dropping privileges):
/// a `/proc` of the namespace's own, and memfds never executable in it.
pub(crate) fn mount_proc() -> io::Result<()> {
    check(sys::mount(
        c"proc",
        c"/proc",
        Some(c"proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(c"hidepid=2"),
    ))?;
    // Per PID namespace (Linux ≥ 6.3); best effort.
    let _ = write_file(c"/proc/sys/vm/memfd_noexec", b"2");
    Ok(())
}

/// In the keeper, after [`Isolation::enter`] with a PID namespace: forks the
/// init, which forks the program. Returns only in the program; the keeper and
/// the init end in here.
pub(crate) fn fork_init() -> io::Result<()> {
    for &sig in TERMINATING {
        sys::set_signal(sig, libc::SIG_IGN);
    }
    sys::set_signal(libc::SIGCHLD, libc::SIG_DFL);
    let mut fds = [0i32; 2];
    check(sys::pipe(&mut fds))?;
    let (rx, tx) = (fds[0], fds[1]);
    let init = check(sys::fork())?;
    if init > 0 {
        sys::close(tx);
        keep(init as i32, rx);
    }
    // The init, pid 1: dies with the keeper.
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    if sys::pipe_reader_gone(tx) {
        sys::exit(1);
    }
    sys::close(rx);
    let program = check(sys::fork())?;
    if program == 0 {
        sys::close(tx);
        for &sig in TERMINATING {
            sys::set_signal(sig, libc::SIG_DFL);
        }
        return Ok(());
    }
    reap(program as i32, tx);
}

/// The init: reaps everything until the program ends, hands its status over.
fn reap(program: i32, tx: i32) -> ! {
    close_all_but(tx);
    // Not dumpable: invisible in the task's `/proc` (hidepid) and not
    // traceable, although it holds a copy of the node's memory and argv.
    sys::prctl(libc::PR_SET_DUMPABLE, 0);
    loop {
        let mut status = 0;
        let pid = sys::wait(-1, &mut status);
        if pid == program as sys::Ret {
            sys::write(tx, &status.to_ne_bytes());
            sys::exit(0);
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            sys::exit(1);
        }
    }
}

/// The keeper: waits for the init, ends with the program's status.
fn keep(init: i32, rx: i32) -> ! {
    close_all_but(rx);
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match sys::read(rx, &mut buf[got..]) {
            n if n > 0 => got += n as usize,
            n if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => break,
        }
    }
    let mut init_status = 0;
    while sys::wait(init, &mut init_status) < 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
    let status = if got == buf.len() {
        i32::from_ne_bytes(buf)
    } else {
        init_status
    };
    end_like(status)
}

/// Ends this process the way a process with wait status `status` ended.
fn end_like(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        sys::set_signal(sig, libc::SIG_DFL);
        // No core file: RLIMIT_CORE is 0 for STRICT tasks.
        sys::kill(sys::getpid(), sig);
        sys::exit(128 + sig);
    }
    sys::exit(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    })
}

/// Closes every fd but `keep` (the std spawn pipe included, so the node's
/// `spawn` hears only from the program).
fn close_all_but(keep: i32) {
    if keep > 0 {
        sys::close_fds(0, keep as u32 - 1, false);
    }
    sys::close_fds(keep as u32 + 1, u32::MAX, false);
}

/// Whether a task can get its own mount namespace (and, with `pid`, PID
/// namespace and `/proc`) here: tried once in a throwaway child that never
/// runs a program. (A node that is not root needs a user namespace, which
/// some hosts forbid.)
pub(crate) fn namespaces_work(root: bool, pid: bool) -> bool {
    use std::os::unix::process::CommandExt;
    let Ok(iso) = Isolation::new(root, pid) else {
        return false;
    };
    let mut cmd = std::process::Command::new("/nonexistent/ganglion-namespace-probe");
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    #[allow(unsafe_code)]
    // SAFETY: the closure makes raw syscalls only (see `crate::sys`) and ends
    // the child with `_exit`; it never returns to run a program.
    unsafe {
        cmd.pre_exec(move || {
            if iso.enter().is_err() {
                sys::exit(1);
            }
            if !iso.pid {
                sys::exit(0);
            }
            let pid = sys::fork();
            if pid == 0 {
                sys::exit(if mount_proc().is_ok() { 0 } else { 1 });
            }
            let mut status = 1;
            if pid < 0 || sys::wait(pid as i32, &mut status) < 0 {
                sys::exit(1);
            }
            sys::exit(i32::from(
                !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0),
            ));
        });
    }
    match cmd.status() {
        Ok(s) => s.success(),
        Err(e) => {
            tracing::debug!(error = %e, "pid namespace probe failed");
            false
        }
    }
}
