//! What this kernel lets the sandbox enforce, detected once per process.

use std::sync::OnceLock;

use ganglion_core::capabilities::protection;

use crate::cgroup::Backend;

/// Protection name for a per-task process-count limit that holds (cgroup
/// `pids.max`, or `RLIMIT_NPROC` for a non-root node). Not yet in
/// `ganglion_core::capabilities::protection`; reported alongside its names.
pub const PIDS_LIMIT: &str = "pids-limit";
/// STRICT tasks get a seccomp filter (no set-id files, no namespaces, no
/// sockets without `network`, …).
pub const SECCOMP: &str = "seccomp";
/// STRICT tasks run in a PID namespace of their own, with their own `/proc`,
/// and die with the node.
pub const PID_NAMESPACE: &str = "pid-namespace";
/// STRICT tasks see the workspace and their temp dir `noexec,nosuid,nodev`.
pub const NOEXEC_WORKSPACE: &str = "noexec-workspace";
/// STRICT tasks may execute only the allowlisted program files (Landlock).
pub const EXEC_ALLOWLIST: &str = "exec-allowlist";
/// On a root node, STRICT tasks run as an unprivileged uid/gid (idmapped
/// workspace); reported by [`crate::Sandbox::protections`].
pub const UNPRIVILEGED_TASKS: &str = "unprivileged-tasks";

/// How the number of processes a task may create is capped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForkLimit {
    /// A per-task cgroup with `pids.max` (version 1 or 2 of the pids controller).
    Cgroup { version: u8 },
    /// `RLIMIT_NPROC` only. `effective` is false when the node runs as root: the
    /// kernel does not check that limit for uid 0, so fork bombs are not
    /// contained.
    Rlimit { effective: bool },
}

/// The result of [`probe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxSupport {
    /// Landlock ABI version, `None` when the kernel has no Landlock.
    pub landlock_abi: Option<u32>,
    /// Landlock filesystem rules can be enforced.
    pub landlock_fs: bool,
    /// Landlock TCP bind/connect rules can be enforced (ABI ≥ 4).
    pub landlock_net: bool,
    /// Landlock signal and abstract-socket scoping (ABI ≥ 6).
    pub landlock_scope: bool,
    pub rlimits: bool,
    pub process_group: bool,
    pub fork_limit: ForkLimit,
    /// Whether the per-task cgroup also caps memory.
    pub cgroup_memory: bool,
    /// The node runs as uid 0 (tasks then get no capabilities under STRICT).
    pub root: bool,
    /// Seccomp filters can be installed.
    pub seccomp: bool,
    /// STRICT tasks can get their own mount namespace (workspace and temp
    /// dir `noexec,nosuid,nodev`).
    pub mount_namespace: bool,
    /// STRICT tasks can get their own PID namespace and `/proc`.
    pub pid_namespace: bool,
    pub(crate) cgroup: Option<Backend>,
}

impl SandboxSupport {
    /// Names for `Capabilities::protections`.
    pub fn protections(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.landlock_fs {
            out.push(protection::FS_WRITE);
            out.push(EXEC_ALLOWLIST);
        }
        if self.seccomp {
            out.push(SECCOMP);
        }
        if self.mount_namespace {
            out.push(NOEXEC_WORKSPACE);
        }
        if self.pid_namespace {
            out.push(PID_NAMESPACE);
        }
        if self.landlock_net {
            out.push(protection::NET_TCP);
        }
        if self.rlimits {
            out.push(protection::RLIMITS);
        }
        if self.process_group {
            out.push(protection::PROCESS_GROUP);
        }
        if matches!(
            self.fork_limit,
            ForkLimit::Cgroup { .. } | ForkLimit::Rlimit { effective: true }
        ) {
            out.push(PIDS_LIMIT);
        }
        out.into_iter().map(str::to_owned).collect()
    }
}

/// Detects, once, what the kernel enforces.
pub fn probe() -> &'static SandboxSupport {
    static SUPPORT: OnceLock<SandboxSupport> = OnceLock::new();
    SUPPORT.get_or_init(detect)
}

fn detect() -> SandboxSupport {
    let abi = landlock_abi();
    let cgroup = Backend::detect();
    let root = is_root();
    let fork_limit = match &cgroup {
        Some(b) => ForkLimit::Cgroup {
            version: b.version(),
        },
        None => ForkLimit::Rlimit { effective: !root },
    };
    let cgroup_memory = matches!(
        &cgroup,
        Some(
            Backend::V2 { memory: true, .. }
                | Backend::V1 {
                    memory_parent: Some(_),
                    ..
                }
        )
    );
    let pid_namespace = crate::namespaces::namespaces_work(root, true);
    let mount_namespace = pid_namespace || crate::namespaces::namespaces_work(root, false);
    if !pid_namespace {
        tracing::warn!(
            mount_namespace,
            "strict tasks get no pid namespace here: they see the host's processes and may outlive the node"
        );
    }
    let support = SandboxSupport {
        landlock_abi: abi,
        landlock_fs: abi.is_some_and(|v| v >= 1),
        landlock_net: abi.is_some_and(|v| v >= 4),
        landlock_scope: abi.is_some_and(|v| v >= 6),
        rlimits: true,
        process_group: true,
        fork_limit,
        cgroup_memory,
        root,
        seccomp: crate::seccomp::supported(),
        mount_namespace,
        pid_namespace,
        cgroup,
    };
    tracing::info!(
        landlock_abi = ?support.landlock_abi,
        fork_limit = ?support.fork_limit,
        cgroup_memory = support.cgroup_memory,
        root = support.root,
        seccomp = support.seccomp,
        mount_namespace = support.mount_namespace,
        pid_namespace = support.pid_namespace,
        "sandbox support probed"
    );
    support
}

#[allow(unsafe_code)]
fn landlock_abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: with the VERSION flag and a null attribute of size 0 the syscall
    // only returns the ABI version (or an error); it touches no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as u32)
}

fn is_root() -> bool {
    effective_uid() == 0
}

pub(crate) fn effective_uid() -> u32 {
    #[allow(unsafe_code)]
    // SAFETY: geteuid cannot fail and has no side effects.
    unsafe {
        libc::geteuid()
    }
}
