//! Checking a task against the policy and starting it.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use ganglion_core::policy::{Policy, PolicyMode, Refusal};
use seccompiler::BpfProgram;
use tokio::process::Command;

use crate::args::{check_args, strict_env};
use crate::cgroup::TaskCgroup;
use crate::child::{ChildSetup, Rlimit};
use crate::confine::{self, Layout};
use crate::exec_allow::BIN_DIRS;
use crate::idmap::IdMap;
use crate::namespaces::{Isolation, Remount};
use crate::probe::{ForkLimit, SandboxSupport, UNPRIVILEGED_TASKS, effective_uid, probe};
use crate::task::{self, RunningTask};
use crate::{Error, SandboxOptions, TaskSpec};

/// Fixed `PATH` of STRICT tasks, also where their programs are looked up.
pub const STRICT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

static NEXT_TASK: AtomicU64 = AtomicU64::new(0);

/// Runs tasks on this node. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Sandbox {
    opts: SandboxOptions,
    /// Root node: the idmapping that lets STRICT tasks run unprivileged.
    idmap: Option<IdMap>,
    /// Canonical program directories (listed, not read, under STRICT).
    bin_dirs: Vec<PathBuf>,
    /// The seccomp programs of STRICT tasks without and with `network`.
    seccomp: Option<(Vec<BpfProgram>, Vec<BpfProgram>)>,
    /// The allowlist's executable files and system rules, reused a while.
    prepared: crate::prepared::Cache,
}

impl Sandbox {
    /// Checks the layout: the three directories exist (the temp root is made if
    /// missing) and the state dir overlaps neither the workspace nor the temp root.
    pub fn new(mut opts: SandboxOptions) -> Result<Sandbox, Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.temp_root)
            .map_err(Error::setup("create the temp root"))?;
        // Tasks' temp dirs are made in it: nobody else may own or write it
        // (a temp root under /tmp could have been made by another user).
        let meta =
            fs::symlink_metadata(&opts.temp_root).map_err(Error::setup("inspect the temp root"))?;
        if !meta.is_dir() || meta.uid() != effective_uid() || meta.mode() & 0o022 != 0 {
            return Err(Error::InvalidOptions(
                "the temp root must be a directory of this user that no one else can write",
            ));
        }
        let canon = |p: &Path, what| fs::canonicalize(p).map_err(Error::setup(what));
        opts.workspace = canon(&opts.workspace, "resolve the workspace")?;
        opts.state_dir = canon(&opts.state_dir, "resolve the state dir")?;
        opts.temp_root = canon(&opts.temp_root, "resolve the temp root")?;
        opts.hidden = (opts.hidden.iter())
            .map(|p| canon(p, "resolve a hidden directory"))
            .collect::<Result<_, _>>()?;
        if confine::overlaps(&opts.state_dir, &opts.workspace)
            || confine::overlaps(&opts.state_dir, &opts.temp_root)
        {
            return Err(Error::InvalidOptions(
                "the state dir overlaps the workspace or the temp root",
            ));
        }
        if opts.task_ids.is_some_and(|(u, g)| u == 0 || g == 0) {
            return Err(Error::InvalidOptions("the task uid and gid must not be 0"));
        }
        let support = probe();
        crate::cleanup::remove_stale(&opts.temp_root, support.cgroup.as_ref());
        let idmap = match opts.task_ids {
            Some((uid, gid)) if support.root => {
                match IdMap::new(uid, gid, &[&opts.workspace, &opts.temp_root]) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "idmapped mounts unavailable: strict tasks run as uid 0 without capabilities"
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        let mut bin_dirs: Vec<PathBuf> = BIN_DIRS
            .iter()
            .filter_map(|d| fs::canonicalize(d).ok())
            .collect();
        bin_dirs.sort();
        bin_dirs.dedup();
        let seccomp = if support.seccomp {
            let f = |network| crate::seccomp::filters(network).map(|f| f.programs);
            Some((f(false)?, f(true)?))
        } else {
            None
        };
        Ok(Sandbox {
            opts,
            idmap,
            bin_dirs,
            seccomp,
            prepared: Default::default(),
        })
    }

    pub fn options(&self) -> &SandboxOptions {
        &self.opts
    }

    /// The protections of [`probe`], plus those that depend on this sandbox's
    /// layout (unprivileged tasks on a root node).
    pub fn protections(&self) -> Vec<String> {
        let mut out = probe().protections();
        if self.idmap.is_some() {
            out.push(UNPRIVILEGED_TASKS.to_owned());
        }
        out
    }

    /// Checks `spec` against `policy` and starts it. Must be called within a
    /// Tokio runtime, from a thread that lives as long as the task (a runtime
    /// worker, not a `spawn_blocking` thread): the task is killed when the
    /// thread that started it ends (`PR_SET_PDEATHSIG`), so that it dies with
    /// the node. Does a little filesystem work (temp dir, cgroup, Landlock
    /// rules) before the fork.
    pub fn start(&self, spec: TaskSpec, policy: &Policy) -> Result<RunningTask, Error> {
        let strict = policy.mode == PolicyMode::Strict;
        check_args(&spec)?;
        let argv0 = spec.argv[0].as_str();
        let support = probe();
        if strict {
            check_strict(argv0, policy, support)?;
        }
        let program = self.resolve_program(argv0, &spec, policy)?;
        let cwd = self.open_cwd(&spec)?;

        let id = NEXT_TASK.fetch_add(1, Ordering::Relaxed);
        let temp_dir = if strict {
            Some(self.make_temp_dir(id)?)
        } else {
            None
        };
        // From here on, `guard` removes the temp dir if starting fails.
        let guard = TempGuard(temp_dir.clone());

        let cgroup = self.task_cgroup(support)?;

        let mut setup = ChildSetup {
            node_pid: std::process::id() as i32,
            cgroup_procs: cgroup
                .as_ref()
                .map(TaskCgroup::procs_fds)
                .unwrap_or_default(),
            cwd: Some(cwd.as_raw_fd()),
            ..ChildSetup::default()
        };
        let landlock_fd = if strict {
            let task = StrictTask {
                argv0,
                program: &program,
                policy,
                temp_dir: temp_dir.as_deref(),
            };
            self.confine(&task, support, &cwd, &mut setup)?
        } else {
            None
        };

        let mut cmd = command(&program, &spec, strict, temp_dir.as_deref());
        setup.install(&mut cmd);
        let child = cmd.spawn().map_err(|source| spawn_error(argv0, source))?;
        // The child has its copies; ours close now.
        drop((landlock_fd, cwd));
        let pid = child.id().unwrap_or_default();
        tracing::info!(
            pid,
            program = argv0,
            mode = policy.mode.as_str(),
            "task started"
        );
        Ok(task::launch(
            child,
            task::Supervision {
                program: argv0.to_owned(),
                timeout: spec.timeout,
                grace: self.opts.cancel_grace,
                output_cap: spec.output_cap,
                cgroup,
                temp_dir: guard.disarm(),
            },
        ))
    }

    /// The task's own cgroup with the node's limits, where cgroups are usable.
    fn task_cgroup(&self, support: &SandboxSupport) -> Result<Option<TaskCgroup>, Error> {
        let limits = &self.opts.limits;
        match &support.cgroup {
            Some(backend) => Ok(Some(
                TaskCgroup::create(backend, limits.processes, limits.memory_bytes)
                    .map_err(Error::setup("create the task cgroup"))?,
            )),
            None => Ok(None),
        }
    }

    /// Confines a STRICT task: its executable files (a dynamic loader
    /// refused), resource limits, no capabilities, no new privileges,
    /// seccomp, namespaces and the idmapped ids, then Landlock. Returns the
    /// Landlock ruleset, which must stay open until the child is spawned.
    fn confine(
        &self,
        task: &StrictTask<'_>,
        support: &SandboxSupport,
        cwd: &OwnedFd,
        setup: &mut ChildSetup,
    ) -> Result<Option<OwnedFd>, Error> {
        let (argv0, policy) = (task.argv0, task.policy);
        let landlock_abi = support.landlock_abi.filter(|_| support.landlock_fs);
        let read_only = [&self.opts.system_roots[..], &[PathBuf::from("/proc")]].concat();
        let prepared = self.prepared.get(policy, task.program, |exec| {
            let files: Vec<PathBuf> = exec.files().cloned().collect();
            landlock_abi
                .map(|abi| confine::system_grants(abi, &self.layout(&read_only, &files, policy)))
                .transpose()
        })?;
        if prepared.exec.is_loader(task.program) {
            return Err(Error::LoaderRefused {
                program: argv0.into(),
            });
        }
        setup.rlimits = self.rlimits(matches!(support.fork_limit, ForkLimit::Rlimit { .. }));
        setup.drop_capabilities = true;
        setup.no_new_privs = true;
        if let Some((offline, online)) = &self.seccomp {
            setup.seccomp = if policy.network { online } else { offline }.clone();
        }
        if support.mount_namespace || !self.opts.hidden.is_empty() {
            let (root, pid) = (support.root, support.pid_namespace);
            setup.isolation = Some(self.isolation(root, pid, task.temp_dir)?);
            setup.cwd_again = Some(self.cwd_again(cwd)?);
        }
        if setup.isolation.is_some() {
            setup.ids = self.idmap.as_ref().map(|m| (m.uid, m.gid));
        }
        let (Some(abi), Some(grants)) = (landlock_abi, &prepared.grants) else {
            tracing::warn!(
                program = argv0,
                "strict task runs without landlock (allow_weak_sandbox)"
            );
            return Ok(None);
        };
        let temp = task.temp_dir.map(Path::to_path_buf).into_iter();
        let read_write = [vec![self.opts.workspace.clone()], temp.collect()].concat();
        let fd = confine::ruleset(
            abi,
            grants,
            &Layout {
                read_write: &read_write,
                ..self.layout(&read_only, &[], policy)
            },
        )?;
        setup.landlock = Some((fd.as_raw_fd(), confine::proc_access(abi)));
        Ok(Some(fd))
    }

    /// The Landlock layout of a STRICT task, but for `read_write`.
    fn layout<'a>(
        &'a self,
        read_only: &'a [PathBuf],
        exec_files: &'a [PathBuf],
        policy: &Policy,
    ) -> Layout<'a> {
        Layout {
            read_only,
            read_write: &[],
            exec_files,
            list_only: &self.bin_dirs,
            state_dir: &self.opts.state_dir,
            deny_tcp: !policy.network,
        }
    }

    /// The namespaces of a STRICT task: workspace and temp dir remounted
    /// `noexec,nosuid,nodev` (idmapped on a root node), hidden directories
    /// covered, a PID namespace where the kernel allows it.
    fn isolation(&self, root: bool, pid: bool, temp: Option<&Path>) -> Result<Isolation, Error> {
        let prep = Error::setup("prepare the task's namespaces");
        let mut iso = Isolation::new(root, pid).map_err(prep)?;
        let userns = self.idmap.as_ref().map(|m| m.userns.as_raw_fd());
        for dir in std::iter::once(self.opts.workspace.as_path()).chain(temp) {
            let r =
                Remount::new(dir, userns).map_err(Error::setup("prepare the task's namespaces"))?;
            iso.remounts.push(r);
        }
        iso.hide(&self.opts.hidden)
            .map_err(Error::setup("prepare the hidden directories"))?;
        Ok(iso)
    }

    /// The workspace and the cwd below it, for the child to enter again once
    /// its mounts cover the directory the cwd fd refers to.
    fn cwd_again(&self, cwd: &OwnedFd) -> Result<(CString, CString), Error> {
        let real = fs::read_link(format!("/proc/self/fd/{}", cwd.as_raw_fd()))
            .map_err(Error::setup("resolve the working directory"))?;
        let rel = real
            .strip_prefix(&self.opts.workspace)
            .map_err(|_| Error::InvalidOptions("the working directory left the workspace"))?;
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| {
                Error::setup("resolve the working directory")(io::ErrorKind::InvalidInput.into())
            })
        };
        Ok((c(&self.opts.workspace)?, c(rel)?))
    }

    fn resolve_program(
        &self,
        argv0: &str,
        spec: &TaskSpec,
        policy: &Policy,
    ) -> Result<PathBuf, Error> {
        let not_found = || Error::NotFound {
            program: argv0.into(),
        };
        if policy.mode == PolicyMode::Permissive {
            if argv0.contains('/') {
                // Relative paths resolve in the task's cwd, at exec time.
                return Ok(PathBuf::from(argv0));
            }
            let path = spec
                .env
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var("PATH").ok())
                .unwrap_or_else(|| STRICT_PATH.to_owned());
            return search_path(&path, argv0).ok_or_else(not_found);
        }
        if !argv0.starts_with('/') {
            return search_path(STRICT_PATH, argv0).ok_or_else(not_found);
        }
        let given = PathBuf::from(argv0);
        if !is_executable(&given) {
            return Err(not_found());
        }
        // An absolute path is either on the allowlist verbatim, or the very file
        // its allowlisted name resolves to (so `/tmp/x/cat` is not `cat`).
        if policy.allow.iter().any(|a| a == argv0) {
            return Ok(given);
        }
        let name = Policy::program_name(argv0);
        let same = search_path(STRICT_PATH, name)
            .and_then(|p| fs::canonicalize(p).ok())
            .is_some_and(|p| fs::canonicalize(&given).is_ok_and(|g| g == p));
        if same {
            Ok(given)
        } else {
            Err(Error::NotAllowlisted {
                program: argv0.into(),
            })
        }
    }

    /// Opens the task's cwd beneath the workspace without following any symlink
    /// out of it (`openat2` with `RESOLVE_BENEATH`); the child `fchdir`s to it.
    fn open_cwd(&self, spec: &TaskSpec) -> Result<OwnedFd, Error> {
        let ws =
            fs::File::open(&self.opts.workspace).map_err(Error::setup("open the workspace"))?;
        let Some(cwd) = &spec.cwd else {
            return Ok(ws.into());
        };
        let unusable = |source| Error::CwdUnusable {
            cwd: cwd.to_string(),
            source,
        };
        let escapes = || Error::CwdEscapes {
            cwd: cwd.to_string(),
        };
        let hidden = |fd: OwnedFd| {
            // Where the opened directory really is (after any symlink).
            let real = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            match real {
                Ok(real) if !self.opts.hidden.iter().any(|h| real.starts_with(h)) => Ok(fd),
                Ok(_) => Err(Error::CwdHidden {
                    cwd: cwd.to_string(),
                }),
                Err(e) => Err(unusable(e)),
            }
        };
        match openat2_beneath(&ws, cwd.as_str()) {
            Ok(fd) => hidden(fd),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::ELOOP)) => Err(escapes()),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                // Kernel older than 5.6: resolve, then check the prefix.
                let real =
                    fs::canonicalize(self.opts.workspace.join(cwd.as_str())).map_err(unusable)?;
                if !real.starts_with(&self.opts.workspace) {
                    return Err(escapes());
                }
                hidden(fs::File::open(real).map_err(unusable)?.into())
            }
            Err(e) => Err(unusable(e)),
        }
    }

    fn make_temp_dir(&self, id: u64) -> Result<PathBuf, Error> {
        let dir = self
            .opts
            .temp_root
            .join(format!("task-{}-{id}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(Error::setup("create the task temp dir"))?;
        Ok(dir)
    }

    fn rlimits(&self, nproc: bool) -> Vec<Rlimit> {
        let l = &self.opts.limits;
        let mut out = vec![Rlimit {
            resource: libc::RLIMIT_CORE,
            value: 0,
        }];
        let mut push = |resource, v: Option<u64>| {
            if let Some(value) = v {
                out.push(Rlimit { resource, value });
            }
        };
        push(libc::RLIMIT_AS, l.address_space_bytes);
        push(libc::RLIMIT_CPU, l.cpu_seconds);
        push(libc::RLIMIT_NOFILE, l.open_files);
        push(libc::RLIMIT_FSIZE, l.file_size_bytes);
        if nproc {
            push(libc::RLIMIT_NPROC, Some(l.processes));
        }
        out
    }
}

pub(crate) fn search_path(path: &str, name: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
}

/// What confining one STRICT task depends on.
struct StrictTask<'a> {
    argv0: &'a str,
    /// The resolved program.
    program: &'a Path,
    policy: &'a Policy,
    temp_dir: Option<&'a Path>,
}

/// What a STRICT policy refuses before anything is prepared: a shell, a
/// program off the allowlist, a relative program path, and (unless the
/// policy accepts it) a kernel without Landlock.
fn check_strict(argv0: &str, policy: &Policy, support: &SandboxSupport) -> Result<(), Error> {
    match policy.refusal(argv0) {
        Some(Refusal::Shell) => {
            return Err(Error::ShellRefused {
                program: argv0.into(),
            });
        }
        Some(Refusal::NotAllowed) => {
            return Err(Error::NotAllowlisted {
                program: argv0.into(),
            });
        }
        None => {}
    }
    if argv0.contains('/') && !argv0.starts_with('/') {
        return Err(Error::RelativeProgramPath {
            program: argv0.into(),
        });
    }
    if !support.landlock_fs && !policy.allow_weak_sandbox {
        return Err(Error::WeakSandbox);
    }
    Ok(())
}

fn spawn_error(argv0: &str, source: io::Error) -> Error {
    match source.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            program: argv0.into(),
        },
        _ => Error::Spawn {
            program: argv0.into(),
            source,
        },
    }
}

/// The task's command: its arguments, no stdin, output piped, its own
/// process group; under STRICT only the fixed environment.
fn command(program: &Path, spec: &TaskSpec, strict: bool, temp_dir: Option<&Path>) -> Command {
    let argv0 = spec.argv[0].as_str();
    let mut cmd = Command::new(program);
    cmd.arg0(argv0)
        .args(&spec.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if strict {
        cmd.env_clear().envs(strict_env(&spec.env, temp_dir));
    } else {
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    }
    cmd
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

#[allow(unsafe_code)]
fn openat2_beneath(dir: &fs::File, rel: &str) -> io::Result<OwnedFd> {
    let path = CString::new(Path::new(rel).as_os_str().as_bytes()).map_err(io::Error::other)?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `path` is NUL-terminated and `how` is a valid open_how of the size
    // passed; both outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Removes a task temp dir unless disarmed (start failed before the task ran).
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = fs::remove_dir_all(d);
        }
    }
}
