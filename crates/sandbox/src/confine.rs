//! The Landlock ruleset of a STRICT task, built in the parent before the fork.
//!
//! Read the system, execute only the allowlisted program files and their
//! dynamic loaders, write only the workspace and the task's temp dir, nothing
//! at all in the node's state dir, only list (not read) the directories of
//! programs, TCP denied unless the policy has `network`, and (ABI ≥ 6) no
//! signals to processes outside the sandbox. Every rule goes through
//! [`Rules::grant`], which resolves the path first and never grants a
//! directory that contains an excluded one (the state dir, the program
//! directories): it grants that directory's entries instead, recursively,
//! skipping the excluded directory itself (and any symlink that leads into it).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
};

use crate::Error;

/// Device files every program may read and write.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// What one STRICT task may touch.
pub(crate) struct Layout<'a> {
    /// Read only (system directories, `/proc`).
    pub read_only: &'a [PathBuf],
    /// Everything but execute (workspace, task temp dir).
    pub read_write: &'a [PathBuf],
    /// Single files to read and execute (allowlisted programs, loaders).
    pub exec_files: &'a [PathBuf],
    /// Directories of programs: listed, never read below (canonical).
    pub list_only: &'a [PathBuf],
    /// Never readable, whatever the roots above contain. Canonical.
    pub state_dir: &'a Path,
    pub deny_tcp: bool,
}

/// The rules that do not depend on the task (system, programs, devices):
/// resolved and opened once, then added to many tasks' rulesets.
#[derive(Debug)]
pub(crate) struct Grants(Vec<(PathFd, BitFlags<AccessFs>)>);

/// Resolves the system part of `layout` (everything but `read_write`).
pub(crate) fn system_grants(abi_version: u32, layout: &Layout<'_>) -> Result<Grants, Error> {
    let abi = ABI::from(abi_version as i32);
    let mut rules = Rules::new(abi, layout);
    let read = AccessFs::from_read(abi);
    let read_exec = read | AccessFs::Execute;
    for p in layout.exec_files {
        rules.grant_exact(p, read_exec)?;
    }
    for p in layout.list_only {
        rules.grant_exact(p, AccessFs::ReadDir.into())?;
    }
    for p in layout.read_only {
        rules.grant(p, read)?;
    }
    for p in DEVICES {
        rules.grant(Path::new(p), AccessFs::from_file(abi) & !AccessFs::Execute)?;
    }
    Ok(Grants(rules.grants))
}

/// Builds the ruleset from `system` (see [`system_grants`]) and the task's
/// `read_write` directories; the returned fd is handed to
/// `landlock_restrict_self` in the child. Fails if the kernel cannot handle
/// every filesystem right of `abi`.
pub(crate) fn ruleset(
    abi_version: u32,
    system: &Grants,
    layout: &Layout<'_>,
) -> Result<OwnedFd, Error> {
    let abi = ABI::from(abi_version as i32);
    let ll = |e: landlock::RulesetError| Error::Setup {
        what: "landlock ruleset",
        source: io::Error::other(e),
    };
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .map_err(ll)?;
    if layout.deny_tcp && abi >= ABI::V4 {
        rs = rs.handle_access(AccessNet::from_all(abi)).map_err(ll)?;
    }
    if abi >= ABI::V6 {
        rs = rs.scope(Scope::from_all(abi)).map_err(ll)?;
    }
    let mut rules = Rules::new(abi, layout);
    let write = AccessFs::from_all(abi) & !AccessFs::Execute;
    for p in layout.read_write {
        rules.grant(p, write)?;
    }
    let lr = |e: landlock::RulesetError| Error::Setup {
        what: "landlock rule",
        source: io::Error::other(e),
    };
    let mut created = rs.create().map_err(ll)?;
    for (fd, access) in system.0.iter().chain(rules.grants.iter()) {
        created = created
            .add_rule(PathBeneath::new(fd, *access))
            .map_err(lr)?;
    }
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or(Error::WeakSandbox)
}

struct Rules<'a> {
    abi: ABI,
    grants: Vec<(PathFd, BitFlags<AccessFs>)>,
    state_dir: &'a Path,
    /// Never granted through a parent: the state dir, the program directories.
    excluded: Vec<PathBuf>,
    expanded: HashSet<PathBuf>,
}

impl<'a> Rules<'a> {
    fn new(abi: ABI, layout: &Layout<'a>) -> Self {
        Rules {
            abi,
            grants: Vec::new(),
            state_dir: layout.state_dir,
            excluded: [&[layout.state_dir.to_path_buf()], layout.list_only].concat(),
            expanded: HashSet::new(),
        }
    }
}

impl Rules<'_> {
    fn grant(&mut self, path: &Path, access: BitFlags<AccessFs>) -> Result<(), Error> {
        self.grant_checked(path, access, true)
    }

    /// Grants `path` itself, even if excluded (never inside the state dir).
    fn grant_exact(&mut self, path: &Path, access: BitFlags<AccessFs>) -> Result<(), Error> {
        self.grant_checked(path, access, false)
    }

    fn grant_checked(
        &mut self,
        path: &Path,
        access: BitFlags<AccessFs>,
        exclude: bool,
    ) -> Result<(), Error> {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            // A missing root (`/lib32` on most hosts) is simply not granted.
            Err(_) => return Ok(()),
        };
        let proc_path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
        let real = fs::read_link(&proc_path).map_err(Error::setup("resolve a landlock path"))?;
        if real.starts_with(self.state_dir) {
            tracing::debug!(path = %path.display(), "not granted: inside the state dir");
            return Ok(());
        }
        if exclude && self.excluded.iter().any(|e| real.starts_with(e)) {
            tracing::trace!(path = %path.display(), "not granted: excluded");
            return Ok(());
        }
        let is_dir = fs::metadata(&proc_path)
            .map_err(Error::setup("stat a landlock path"))?
            .is_dir();
        let holds_excluded = if exclude {
            self.excluded.iter().any(|e| e.starts_with(&real))
        } else {
            self.state_dir.starts_with(&real)
        };
        if is_dir && holds_excluded {
            // A directory holding an excluded one: grant its entries instead.
            if !self.expanded.insert(real.clone()) {
                return Ok(());
            }
            let entries = fs::read_dir(&real).map_err(Error::setup("list a landlock path"))?;
            for entry in entries {
                let entry = entry.map_err(Error::setup("list a landlock path"))?;
                self.grant(&entry.path(), access)?;
            }
            return Ok(());
        }
        let access = if is_dir {
            access
        } else {
            access & AccessFs::from_file(self.abi)
        };
        self.grants.push((fd, access));
        Ok(())
    }
}

/// Whether `path` lies in (or is) the state dir or contains it.
pub(crate) fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The Landlock read rights, as the raw bits the child adds for the `/proc`
/// it mounts (a new filesystem the ruleset does not know yet).
pub(crate) fn proc_access(abi_version: u32) -> u64 {
    AccessFs::from_read(ABI::from(abi_version as i32)).bits()
}
