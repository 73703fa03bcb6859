//! What the child does between `fork` and `exec`, and the few raw syscalls the
//! parent needs (signals to a process group).
//!
//! Everything the child needs is prepared by the parent (fds opened, values
//! computed, seccomp programs compiled) so that the child, a fork of a
//! multithreaded process, only makes async-signal-safe syscalls (see
//! [`crate::sys`]): no allocation, no lock.
//!
//! Order under STRICT: join the cgroups, die with the node, enter the
//! namespaces and mount (see [`crate::namespaces`]), fork the namespace's init
//! and the program; in the program: its own `/proc`, the working directory
//! again (under the new mounts), rlimits, default signal dispositions, no
//! capabilities, the task's uid/gid, `no_new_privs`, Landlock, seccomp, and
//! every fd above 2 close-on-exec.

use std::ffi::CString;
use std::io;

use tokio::process::Command;

use crate::namespaces::{self, Isolation};
use crate::sys::{self, check};

/// Limits set with `setrlimit` in the child (soft = hard).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rlimit {
    pub resource: libc::__rlimit_resource_t,
    pub value: u64,
}

/// Higher than any capability the kernel knows (`CAP_LAST_CAP` is 40 today).
const CAP_SCAN_END: libc::c_ulong = 64;

/// The child's setup, all plain integers and ready buffers so that copying
/// it into the child allocates nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChildSetup {
    /// The node's pid: a child whose parent is already gone stops at once.
    pub node_pid: i32,
    /// `cgroup.procs` fds to write `0` to (joins the task's cgroups).
    pub cgroup_procs: Vec<i32>,
    /// Directory fd (resolved beneath the workspace) to `fchdir` into.
    pub cwd: Option<i32>,
    /// The same directory entered again after the mounts: the workspace path
    /// and the path below it, resolved with `RESOLVE_BENEATH`.
    pub cwd_again: Option<(CString, CString)>,
    pub rlimits: Vec<Rlimit>,
    /// Drop every capability, from the bounding set too.
    pub drop_capabilities: bool,
    /// Become this uid/gid (no supplementary groups) before `exec`.
    pub ids: Option<(u32, u32)>,
    /// `no_new_privs` (always under STRICT).
    pub no_new_privs: bool,
    /// Landlock ruleset fd to restrict the child with, and the read rights to
    /// add for the namespace's own `/proc`.
    pub landlock: Option<(i32, u64)>,
    /// Namespaces and mounts of the task's own.
    pub isolation: Option<Isolation>,
    /// Seccomp BPF programs, installed in order, last.
    pub seccomp: Vec<seccompiler::BpfProgram>,
}

impl ChildSetup {
    /// Installs the setup on `cmd`; runs in the child after `fork`.
    pub(crate) fn install(self, cmd: &mut Command) {
        #[allow(unsafe_code)]
        // SAFETY: the closure only reads integers, C strings and BPF programs
        // captured by value and makes raw syscalls (see `crate::sys`); it does
        // not allocate, lock or touch state shared with other threads of the
        // parent, so it is async-signal-safe as `pre_exec` requires.
        unsafe {
            cmd.pre_exec(move || self.apply());
        }
    }

    fn apply(&self) -> io::Result<()> {
        for &fd in &self.cgroup_procs {
            check(sys::write(fd, b"0"))?;
        }
        // Die with the node (SIGKILL included); a node already gone before
        // this line is seen by the parent check.
        check(sys::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
        ))?;
        if self.node_pid != 0 && sys::getppid() != self.node_pid {
            sys::exit(137);
        }
        if let Some(fd) = self.cwd {
            check(sys::fchdir(fd))?;
        }
        if let Some(iso) = &self.isolation {
            iso.enter()?;
            if iso.pid {
                // Returns in the program only (pid 2 of the namespace).
                namespaces::fork_init()?;
                namespaces::mount_proc()?;
                if let Some((ruleset, access)) = self.landlock {
                    let proc = check(sys::open(c"/proc", libc::O_PATH | libc::O_DIRECTORY))?;
                    let added = sys::landlock_add_path_rule(ruleset, proc as i32, access);
                    sys::close(proc as i32);
                    check(added)?;
                }
            }
        }
        if let Some((ws, rel)) = &self.cwd_again {
            enter_beneath(ws, rel)?;
        }
        for r in &self.rlimits {
            check(sys::setrlimit(r.resource, r.value))?;
        }
        if self.drop_capabilities {
            for cap in 0..CAP_SCAN_END {
                // EINVAL past the last capability the kernel knows: ignored.
                sys::prctl(libc::PR_CAPBSET_DROP, cap);
            }
            sys::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            );
        }
        if let Some((uid, gid)) = self.ids {
            check(sys::setresid(uid, gid))?;
        }
        if self.drop_capabilities {
            check(sys::capset_empty())?;
        }
        if self.no_new_privs || self.landlock.is_some() || !self.seccomp.is_empty() {
            check(sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1))?;
        }
        if let Some((fd, _)) = self.landlock {
            check(sys::landlock_restrict_self(fd))?;
        }
        for prog in &self.seccomp {
            check(sys::seccomp_filter(prog))?;
        }
        // Nothing the node holds reaches the program: every fd above 2 closes
        // at exec (marked, not closed, so std still hears of a failed exec).
        sys::close_fds(3, u32::MAX, true);
        Ok(())
    }
}

/// `chdir` to `rel` beneath `ws` (after the mounts covered the old cwd),
/// never following a symlink out of the workspace.
fn enter_beneath(ws: &std::ffi::CStr, rel: &std::ffi::CStr) -> io::Result<()> {
    let dir = check(sys::open(ws, libc::O_PATH | libc::O_DIRECTORY))? as i32;
    let how = sys::OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    let fd = sys::openat2(dir, rel, &how);
    sys::close(dir);
    let fd = check(fd)? as i32;
    let r = sys::fchdir(fd);
    sys::close(fd);
    check(r).map(drop)
}

/// Sends `sig` to process `pid` (negative: a process group). Errors (already
/// gone) are ignored.
pub(crate) fn kill(pid: i32, sig: i32) {
    sys::kill(pid, sig);
}
