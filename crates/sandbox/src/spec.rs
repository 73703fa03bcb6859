//! What a caller asks for: the task, the sandbox's options and limits.

use std::path::PathBuf;
use std::time::Duration;

use ganglion_core::relpath::RelPath;

/// One task to run.
#[derive(Clone, Debug, Default)]
pub struct TaskSpec {
    pub argv: Vec<String>,
    /// Working directory inside the workspace; the workspace itself when `None`.
    pub cwd: Option<RelPath>,
    /// Extra environment. Under STRICT, entries that steer the dynamic loader or
    /// libc (`LD_*`, `GCONV_PATH`, …) and the fixed ones (`PATH`, `HOME`,
    /// `TMPDIR`) are dropped.
    pub env: Vec<(String, String)>,
    /// Wall-clock limit from the start.
    pub timeout: Option<Duration>,
    /// Bytes of output (stdout and stderr together) delivered; the rest is
    /// drained and dropped.
    pub output_cap: u64,
}

/// Resource limits of a task. `None` leaves the node's own limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Processes and threads the task may have at once (cgroup `pids.max`, else
    /// `RLIMIT_NPROC` under STRICT).
    pub processes: u64,
    /// Memory of the whole task (cgroup memory limit), when the controller exists.
    pub memory_bytes: Option<u64>,
    /// STRICT: `RLIMIT_AS` of each process.
    pub address_space_bytes: Option<u64>,
    /// STRICT: `RLIMIT_CPU` of each process.
    pub cpu_seconds: Option<u64>,
    /// STRICT: `RLIMIT_NOFILE`.
    pub open_files: Option<u64>,
    /// STRICT: `RLIMIT_FSIZE`, the largest file a process may write.
    pub file_size_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        const GIB: u64 = 1 << 30;
        Self {
            processes: 256,
            memory_bytes: Some(4 * GIB),
            address_space_bytes: Some(16 * GIB),
            cpu_seconds: Some(3600),
            open_files: Some(1024),
            file_size_bytes: Some(8 * GIB),
        }
    }
}

/// How a node's sandbox is laid out. See [`SandboxOptions::new`] for defaults.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// Tasks run and write here.
    pub workspace: PathBuf,
    /// The node's own state (credentials, index): tasks under STRICT can neither
    /// read nor write it. Must not overlap the workspace or `temp_root`.
    pub state_dir: PathBuf,
    /// Each task gets a private temp dir here (its `HOME` and `TMPDIR` under
    /// STRICT), removed after the task.
    pub temp_root: PathBuf,
    pub limits: Limits,
    /// Between SIGTERM and SIGKILL on cancel and timeout.
    pub cancel_grace: Duration,
    /// Read and execute under STRICT. A root that contains `state_dir` is not
    /// granted wholesale: its other entries are.
    pub system_roots: Vec<PathBuf>,
    /// Directories STRICT tasks must not see at all although they lie in
    /// what they may read (e.g. the hub's data dir inside the workspace of
    /// `ganglion up`): each task gets its own mount namespace in which an
    /// empty read-only tmpfs covers them. A task that cannot be given one is
    /// not started.
    pub hidden: Vec<PathBuf>,
    /// On a root node, the uid and gid STRICT tasks run as (their workspace
    /// and temp dir idmapped so that root-owned files are theirs). `None`
    /// keeps uid 0 without capabilities. Not 65534, the kernel's overflow id.
    pub task_ids: Option<(u32, u32)>,
}

/// Default uid and gid of STRICT tasks on a root node.
pub const DEFAULT_TASK_ID: u32 = 65533;

/// Directories a STRICT task may read and execute by default.
pub const DEFAULT_SYSTEM_ROOTS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

impl SandboxOptions {
    /// `$TMPDIR/ganglion-tasks-<uid>-<node>`: per user, since the sandbox
    /// refuses a temp root that another user owns or can write.
    pub fn default_temp_root(node: &str) -> PathBuf {
        let uid = crate::probe::effective_uid();
        std::env::temp_dir().join(format!("ganglion-tasks-{uid}-{node}"))
    }

    pub fn new(workspace: PathBuf, state_dir: PathBuf, temp_root: PathBuf) -> Self {
        Self {
            workspace,
            state_dir,
            temp_root,
            limits: Limits::default(),
            cancel_grace: Duration::from_secs(5),
            system_roots: DEFAULT_SYSTEM_ROOTS.iter().map(PathBuf::from).collect(),
            hidden: Vec::new(),
            task_ids: Some((DEFAULT_TASK_ID, DEFAULT_TASK_ID)),
        }
    }
}
