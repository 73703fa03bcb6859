//! Per-task control groups: the fork-bomb and memory limit that holds for root.
//!
//! `RLIMIT_NPROC` is not checked by the kernel for uid 0 (nor for a process with
//! `CAP_SYS_RESOURCE`/`CAP_SYS_ADMIN`), so a node running as root needs the pids
//! controller. Each task gets its own cgroup with `pids.max` (and a memory limit
//! when the memory controller is there), joined by the child before `exec`, and
//! killed and removed after the task.
//!
//! Where the pids controller lives is detected once: a cgroup v2 hierarchy with
//! `pids` available in the node's own cgroup, else a v1 `pids` hierarchy (hybrid
//! hosts, like this project's CI), else none (the caller falls back to
//! `RLIMIT_NPROC`).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Which cgroup version carries the per-task limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `parent` has `pids` (and maybe `memory`) enabled for its children.
    V2 { parent: PathBuf, memory: bool },
    /// Separate v1 hierarchies: the node's cgroup in each.
    V1 {
        pids_parent: PathBuf,
        memory_parent: Option<PathBuf>,
    },
}

impl Backend {
    /// Finds a writable place for per-task cgroups, `None` if there is none.
    pub(crate) fn detect() -> Option<Backend> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let own = fs::read_to_string("/proc/self/cgroup").ok()?;
        let mounts = parse_mounts(&mountinfo);
        let v2 = Self::detect_v2(&mounts, &own);
        let found = v2.or_else(|| Self::detect_v1(&mounts, &own))?;
        found.works().then_some(found)
    }

    fn detect_v2(mounts: &[Mount], own: &str) -> Option<Backend> {
        let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        let mount = mounts.iter().find(|m| m.fstype == "cgroup2")?;
        let parent = mount.locate(path)?;
        let available = fs::read_to_string(parent.join("cgroup.controllers")).ok()?;
        let has = |c: &str| available.split_whitespace().any(|x| x == c);
        if !has("pids") {
            return None;
        }
        let enabled = |c: &str| {
            fs::read_to_string(parent.join("cgroup.subtree_control"))
                .is_ok_and(|s| s.split_whitespace().any(|x| x == c))
        };
        for c in ["pids", "memory"] {
            if has(c) && !enabled(c) {
                // Fails with EBUSY when the node's cgroup holds processes and is not
                // the root ("no internal processes"); then v2 is not usable here.
                let _ = fs::write(parent.join("cgroup.subtree_control"), format!("+{c}"));
            }
        }
        let (pids, memory) = (enabled("pids"), enabled("memory"));
        pids.then_some(Backend::V2 { memory, parent })
    }

    fn detect_v1(mounts: &[Mount], own: &str) -> Option<Backend> {
        let own_path = |controller: &str| {
            own.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                ctrls.split(',').any(|c| c == controller).then_some(path)
            })
        };
        let locate = |controller: &str| {
            let path = own_path(controller)?;
            mounts
                .iter()
                .filter(|m| m.fstype == "cgroup" && m.has_option(controller))
                .find_map(|m| m.locate(path))
        };
        let pids_parent = locate("pids")?;
        Some(Backend::V1 {
            pids_parent,
            memory_parent: locate("memory"),
        })
    }

    /// Creates and removes a probe cgroup: detection only counts what works.
    fn works(&self) -> bool {
        match TaskCgroup::create(self, 2, None) {
            Ok(cg) => {
                cg.destroy();
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, backend = ?self, "per-task cgroups not usable");
                false
            }
        }
    }

    pub(crate) fn version(&self) -> u8 {
        match self {
            Backend::V2 { .. } => 2,
            Backend::V1 { .. } => 1,
        }
    }
}

struct Mount {
    root: String,
    mount_point: PathBuf,
    fstype: String,
    super_options: String,
}

impl Mount {
    fn has_option(&self, opt: &str) -> bool {
        self.super_options.split(',').any(|o| o == opt)
    }

    /// Where the cgroup `path` (as in `/proc/self/cgroup`) is under this mount.
    fn locate(&self, path: &str) -> Option<PathBuf> {
        let rel = if self.root == "/" {
            path
        } else {
            path.strip_prefix(self.root.as_str())?
        };
        let dir = self.mount_point.join(rel.trim_start_matches('/'));
        dir.is_dir().then_some(dir)
    }
}

fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: unescape(l.get(3)?),
                mount_point: PathBuf::from(unescape(l.get(4)?)),
                fstype: (*r.first()?).to_owned(),
                super_options: (*r.get(2)?).to_owned(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// One task's cgroup(s): one directory for v2, one per v1 hierarchy.
#[derive(Debug)]
pub(crate) struct TaskCgroup {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each directory, opened before the fork: the child
    /// writes `0` to each to join, without allocating.
    procs: Vec<OwnedFd>,
    v2: bool,
}

impl TaskCgroup {
    pub(crate) fn create(
        backend: &Backend,
        pids_max: u64,
        memory_max: Option<u64>,
    ) -> io::Result<TaskCgroup> {
        let name = format!(
            "ganglion-task-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = TaskCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            v2: false,
        };
        // On error `cg` drops and removes whatever was already made.
        match backend {
            Backend::V2 { parent, memory } => {
                cg.v2 = true;
                let dir = cg.mkdir(parent, &name)?;
                fs::write(dir.join("pids.max"), pids_max.to_string())?;
                if let (true, Some(m)) = (memory, memory_max) {
                    fs::write(dir.join("memory.max"), m.to_string())?;
                    let _ = fs::write(dir.join("memory.swap.max"), "0");
                }
            }
            Backend::V1 {
                pids_parent,
                memory_parent,
            } => {
                let dir = cg.mkdir(pids_parent, &name)?;
                fs::write(dir.join("pids.max"), pids_max.to_string())?;
                if let (Some(parent), Some(m)) = (memory_parent, memory_max) {
                    let dir = cg.mkdir(parent, &name)?;
                    fs::write(dir.join("memory.limit_in_bytes"), m.to_string())?;
                }
            }
        }
        for dir in &cg.dirs {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?;
            cg.procs.push(f.into());
        }
        Ok(cg)
    }

    fn mkdir(&mut self, parent: &Path, name: &str) -> io::Result<PathBuf> {
        let dir = parent.join(name);
        fs::create_dir(&dir)?;
        self.dirs.push(dir.clone());
        Ok(dir)
    }

    /// Raw fds of the `cgroup.procs` files, for the child to join.
    pub(crate) fn procs_fds(&self) -> Vec<i32> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Processes still in the task's cgroup.
    pub(crate) fn pids(&self) -> Vec<i32> {
        let Some(dir) = self.dirs.first() else {
            return Vec::new();
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// SIGKILLs everything in the cgroup (`cgroup.kill` where the kernel has it,
    /// else pid by pid until empty: `pids.max` bounds how many can appear).
    pub(crate) fn kill_all(&self) {
        if self.v2
            && let Some(dir) = self.dirs.first()
            && fs::write(dir.join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                return;
            }
            for pid in pids {
                crate::child::kill(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills what is left and removes the directories (blocking: call it from
    /// `spawn_blocking`). Killed processes may take a moment to be released.
    pub(crate) fn destroy(mut self) {
        self.kill_all();
        self.procs.clear();
        let deadline = Instant::now() + Duration::from_secs(10);
        for dir in std::mem::take(&mut self.dirs).iter().rev() {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        tracing::warn!(cgroup = %dir.display(), error = %e, "task cgroup not removed");
                        break;
                    }
                    Err(_) => {
                        self.kill_all_in(dir);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
    }

    fn kill_all_in(&self, dir: &Path) {
        for pid in fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            crate::child::kill(pid, libc::SIGKILL);
        }
    }
}

impl Drop for TaskCgroup {
    fn drop(&mut self) {
        // Only reached on a creation error or an early return: best effort.
        for dir in self.dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_own_cgroup_under_mount_root() {
        let mounts = parse_mounts(
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
             39 31 0:36 /sub /x/pids rw - cgroup cgroup rw,pids\n",
        );
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].fstype, "cgroup2");
        assert!(mounts[1].has_option("pids"));
        assert_eq!(mounts[1].root, "/sub");
        assert!(mounts[1].locate("/other").is_none());
    }
}
