//! Leftovers of an earlier node process (killed before it could clean up):
//! task temp dirs and task cgroups, named after the pid of the node that
//! made them. At start the sandbox kills whatever still runs in such a
//! cgroup and removes both, for every pid that is no longer alive.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgroup::Backend;

/// Removes stale task temp dirs under `temp_root` and stale task cgroups.
pub(crate) fn remove_stale(temp_root: &Path, cgroups: Option<&Backend>) {
    for dir in stale_entries(temp_root, "task-") {
        match fs::remove_dir_all(&dir) {
            Ok(()) => tracing::info!(dir = %dir.display(), "removed a stale task temp dir"),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "stale task temp dir not removed")
            }
        }
    }
    let parents: Vec<&PathBuf> = match cgroups {
        Some(Backend::V2 { parent, .. }) => vec![parent],
        Some(Backend::V1 {
            pids_parent,
            memory_parent,
        }) => std::iter::once(pids_parent)
            .chain(memory_parent.iter())
            .collect(),
        None => Vec::new(),
    };
    for parent in parents {
        for cg in stale_entries(parent, "ganglion-task-") {
            remove_cgroup(&cg);
        }
    }
}

/// Entries of `dir` named `<prefix><pid>-<n>` whose pid is neither this
/// process nor alive.
fn stale_entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let own = std::process::id();
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            pid.is_some_and(|p| p != own && !Path::new(&format!("/proc/{p}")).exists())
        })
        .map(|e| e.path())
        .collect()
}

/// Kills every process in the cgroup until it is empty, then removes it.
fn remove_cgroup(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if !pids.is_empty() {
            tracing::warn!(cgroup = %dir.display(), processes = pids.len(), "killing what an earlier node left running");
        }
        for pid in &pids {
            crate::child::kill(*pid, libc::SIGKILL);
        }
        match fs::remove_dir(dir) {
            Ok(()) => {
                tracing::info!(cgroup = %dir.display(), "removed a stale task cgroup");
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() > deadline => {
                tracing::warn!(cgroup = %dir.display(), error = %e, "stale task cgroup not removed");
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
