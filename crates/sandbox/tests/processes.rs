//! STRICT tasks see only their own processes, never outlive their node, and
//! inherit no fd of the node (permissive tasks neither).

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, HELPER, is_dead, spec, strict_with_helper};
use ganglion_core::policy::Policy;
use ganglion_sandbox::{Status, probe};

fn skip_without_pid_namespace() -> bool {
    if !probe().pid_namespace {
        eprintln!("skipped: no pid namespace for tasks here");
        return true;
    }
    false
}

#[tokio::test]
async fn strict_tasks_see_only_their_own_processes() {
    if skip_without_pid_namespace() {
        return;
    }
    let fx = Fixture::new();
    let p = Policy::strict();
    let run = fx.run(spec(&["ls", "/proc"]), &p).await;
    assert_eq!(run.outcome.status, Status::Exited(0), "{}", run.stderr());
    let pids: Vec<u32> = run
        .stdout()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    // `ls` itself (pid 2 of the namespace); the namespace's init is hidden.
    assert!(!pids.is_empty() && pids.len() <= 2, "{pids:?}");
    assert!(pids.iter().all(|&p| p <= 2), "{pids:?}");
    // Neither the node's argv nor the init's copy of it can be read.
    let own = std::process::id().to_string();
    for target in ["/proc/1/cmdline", &format!("/proc/{own}/cmdline")] {
        let run = fx.run(spec(&["cat", target]), &p).await;
        assert_ne!(run.outcome.status, Status::Exited(0), "{target}");
        assert!(run.stdout().is_empty(), "{target}: {}", run.stdout());
    }
    // Its own processes are there.
    let run = fx.run(spec(&["cat", "/proc/self/cmdline"]), &p).await;
    assert_eq!(run.stdout(), "cat\0/proc/self/cmdline\0");
}

/// The program's end is what the node sees, through the namespace's init
/// and the keeper: exit codes and signals as they were.
#[tokio::test]
async fn strict_tasks_end_as_their_program_did() {
    let fx = Fixture::new();
    let p = strict_with_helper();
    let run = fx.run(spec(&[HELPER, "raise", "11"]), &p).await;
    assert_eq!(run.outcome.status, Status::Signaled(libc::SIGSEGV));
    let run = fx.run(spec(&[HELPER, "raise", "15"]), &p).await;
    assert_eq!(run.outcome.status, Status::Signaled(libc::SIGTERM));
    let run = fx.run(spec(&["false"]), &p).await;
    assert_eq!(run.outcome.status, Status::Exited(1));
    let mut s = spec(&["sleep", "100"]);
    s.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let run = fx.run(s, &p).await;
    assert_eq!(run.outcome.status, Status::TimedOut);
    // SIGTERM reaches the program (not ignored as by a namespace's init).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Opens a file as the node would have inherited it: an fd without
/// close-on-exec.
fn leaked_fd(path: &Path) -> (std::fs::File, i32) {
    let f = std::fs::File::open(path).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: F_DUPFD returns a new fd (without FD_CLOEXEC) or -1.
    let fd = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD, 100) };
    assert!(fd >= 100);
    (f, fd)
}

#[tokio::test]
async fn tasks_inherit_no_fd_of_the_node() {
    let fx = Fixture::new();
    let secret = fx.path("leaked-secret");
    std::fs::write(&secret, "node secret").unwrap();
    let (_file, fd) = leaked_fd(&secret);
    let n = fd.to_string();
    let dev_fd = format!("/dev/fd/{fd}");
    for p in [strict_with_helper(), Policy::permissive()] {
        let run = fx.run(spec(&[HELPER, "read-fd", &n]), &p).await;
        assert_eq!(run.outcome.status, Status::Exited(5), "{:?}", p.mode);
        assert!(!run.stdout().contains("secret"));
        let run = fx.run(spec(&["cat", &dev_fd]), &p).await;
        assert!(!run.stdout().contains("secret"), "{:?}", p.mode);
    }
    #[allow(unsafe_code)]
    // SAFETY: closes the fd this test made.
    unsafe {
        libc::close(fd)
    };
}

/// Processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .filter(|&pid| !is_dead(pid))
        .collect()
}

/// Starts the helper's miniature node; returns it and the task's pid once
/// the task runs.
fn start_node(base: &Path, seconds: &str) -> (std::process::Child, u32) {
    let dir = |d: &str| base.join(d).to_str().unwrap().to_owned();
    let mut node = Command::new(HELPER)
        .args(["node", &dir("ws"), &dir("state"), &dir("tmp"), seconds])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(node.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line
        .trim()
        .strip_prefix("started ")
        .unwrap()
        .parse()
        .unwrap();
    (node, pid)
}

fn wait_until(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The task's cgroup directories (every v1 hierarchy or the v2 one).
fn task_cgroups(pid: u32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (ctrl, path) = rest.split_once(':')?;
            path.contains("ganglion-task-").then(|| {
                let base = if ctrl.is_empty() {
                    PathBuf::from("/sys/fs/cgroup")
                } else {
                    PathBuf::from("/sys/fs/cgroup").join(ctrl.split(',').next().unwrap())
                };
                base.join(path.trim_start_matches('/'))
            })
        })
        .filter(|d| d.is_dir())
        .collect()
}

#[test]
fn a_killed_node_takes_its_tasks_along_and_the_next_start_cleans_up() {
    if skip_without_pid_namespace() {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    for d in ["ws", "state", "tmp"] {
        std::fs::create_dir(base.path().join(d)).unwrap();
    }
    let sleep = ["sleep", "987.25"];
    let (mut node, keeper) = start_node(base.path(), sleep[1]);
    wait_until("the task runs", Duration::from_secs(10), || {
        !processes_running(&sleep).is_empty()
    });
    let cgroups = task_cgroups(keeper);
    let temp_dirs: Vec<PathBuf> = std::fs::read_dir(base.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(temp_dirs.len(), 1, "{temp_dirs:?}");

    node.kill().unwrap(); // SIGKILL: no cleanup in the node.
    node.wait().unwrap();
    wait_until("the task is gone", Duration::from_secs(10), || {
        processes_running(&sleep).is_empty() && is_dead(keeper)
    });
    // What the node could not clean up is still there…
    assert!(temp_dirs[0].exists());
    // …until the next start.
    let (mut node, _) = start_node(base.path(), "0");
    assert!(!temp_dirs[0].exists(), "stale temp dir kept");
    for cg in &cgroups {
        assert!(!cg.exists(), "stale cgroup kept: {}", cg.display());
    }
    assert!(node.wait().unwrap().success());
}
