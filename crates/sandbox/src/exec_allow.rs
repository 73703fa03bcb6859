//! The files a STRICT task may execute: the allowlisted programs, resolved
//! and canonical, and the ELF interpreters (dynamic loaders) they need.
//! Landlock grants `Execute` on these files only, so an allowlisted program
//! cannot start anything else (`sort --compress-program=sh`, `find -exec`,
//! `env`, `timeout`…) whatever its options.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use ganglion_core::policy::{DEFAULT_ALLOW, Policy, SHELLS};

use crate::sandbox::{STRICT_PATH, search_path};

/// Directories of programs: under STRICT a task may list them but read (and
/// so load, through the dynamic loader) only the allowlisted files in them.
pub(crate) const BIN_DIRS: &[&str] = &[
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
];

/// What the allowlist resolves to on this machine, now.
#[derive(Debug, Default)]
pub(crate) struct ExecSet {
    /// Allowlisted programs (and script interpreters they name), canonical.
    pub programs: BTreeSet<PathBuf>,
    /// ELF interpreters of those programs, canonical.
    pub loaders: BTreeSet<PathBuf>,
    /// Whether shells may be executed (the policy's `allow_shell`).
    shells: bool,
}

impl ExecSet {
    /// Resolves the default allowlist and `policy.allow` on [`STRICT_PATH`]
    /// (absolute entries as they are), plus `program`, the task's own.
    pub(crate) fn resolve(policy: &Policy, program: &Path) -> ExecSet {
        let mut set = ExecSet {
            shells: policy.allow_shell,
            ..ExecSet::default()
        };
        let names = DEFAULT_ALLOW
            .iter()
            .copied()
            .chain(policy.allow.iter().map(String::as_str));
        for name in names {
            let found = if name.starts_with('/') {
                Some(PathBuf::from(name))
            } else {
                search_path(STRICT_PATH, name)
            };
            if let Some(p) = found {
                set.add(&p, 0);
            }
        }
        set.add(program, 0);
        set
    }

    /// Every file that gets `Execute`.
    pub(crate) fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.programs.iter().chain(self.loaders.iter())
    }

    /// Whether `program` (resolved) is one of the allowlisted programs.
    pub(crate) fn contains(&self, program: &Path) -> bool {
        fs::canonicalize(program).is_ok_and(|p| self.programs.contains(&p))
    }

    /// Whether `program` is one of the dynamic loaders (refused as a task's
    /// own program: it runs any file named as its argument).
    pub(crate) fn is_loader(&self, program: &Path) -> bool {
        fs::canonicalize(program).is_ok_and(|p| self.loaders.contains(&p))
    }

    fn add(&mut self, path: &Path, depth: u8) {
        let Ok(real) = fs::canonicalize(path) else {
            return;
        };
        let name = real
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !self.shells && SHELLS.contains(&name) {
            // A multi-call binary (busybox) behind an allowlisted name would
            // let the task run a shell through one of its other names.
            tracing::warn!(
                program = %path.display(),
                file = %real.display(),
                "not executable under the strict policy: the file is a shell"
            );
            return;
        }
        if !real.is_file() || !self.programs.insert(real.clone()) {
            return;
        }
        match interpreter(&real) {
            Some(Interp::Elf(loader)) => {
                if let Ok(l) = fs::canonicalize(loader) {
                    self.loaders.insert(l);
                }
            }
            // A script: its interpreter must be executable too (an admin who
            // allowlists a script knowingly allows its interpreter).
            Some(Interp::Script(interp)) if depth < 2 => self.add(&interp, depth + 1),
            _ => {}
        }
    }
}

enum Interp {
    Elf(PathBuf),
    Script(PathBuf),
}

/// The `PT_INTERP` of an ELF file, or the `#!` interpreter of a script.
fn interpreter(path: &Path) -> Option<Interp> {
    let mut f = fs::File::open(path).ok()?;
    // The ELF header, program headers and interpreter name sit in the first
    // page of every linker's output.
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let head = &buf[..n];
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next()?;
        let text = std::str::from_utf8(line).ok()?.trim();
        let interp = text.split_whitespace().next()?;
        return Some(Interp::Script(PathBuf::from(interp)));
    }
    elf_interp(head).map(Interp::Elf)
}

/// `PT_INTERP` of a native-endian ELF image, read by hand: a few fixed
/// offsets of the ELF header and program headers (no crate needed for that).
fn elf_interp(img: &[u8]) -> Option<PathBuf> {
    const PT_INTERP: u32 = 3;
    if img.get(..4)? != b"\x7fELF" {
        return None;
    }
    let is64 = *img.get(4)? == 2;
    let u16_at = |o: usize| Some(u16::from_ne_bytes(img.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_ne_bytes(img.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_ne_bytes(img.get(o..o + 8)?.try_into().ok()?));
    let (phoff, phentsize, phnum) = if is64 {
        (u64_at(0x20)? as usize, u16_at(0x36)?, u16_at(0x38)?)
    } else {
        (u32_at(0x1c)? as usize, u16_at(0x2a)?, u16_at(0x2c)?)
    };
    for i in 0..phnum as usize {
        let ph = phoff.checked_add(i.checked_mul(phentsize as usize)?)?;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        let (off, size) = if is64 {
            (u64_at(ph + 0x08)? as usize, u64_at(ph + 0x20)? as usize)
        } else {
            (u32_at(ph + 0x04)? as usize, u32_at(ph + 0x10)? as usize)
        };
        let raw = img.get(off..off.checked_add(size)?)?;
        let raw = raw.split(|&b| b == 0).next()?;
        return Some(PathBuf::from(std::str::from_utf8(raw).ok()?));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_loader_of_a_dynamic_program() {
        let set = ExecSet::resolve(&Policy::strict(), Path::new("/bin/cat"));
        assert!(set.programs.iter().any(|p| p.ends_with("cat")), "{set:?}");
        assert!(
            set.loaders
                .iter()
                .any(|l| l.to_string_lossy().contains("ld")),
            "{set:?}"
        );
        assert!(set.is_loader(set.loaders.iter().next().unwrap()));
    }

    #[test]
    fn a_name_that_leads_to_a_shell_is_not_executable() {
        let dir = tempfile::tempdir().unwrap();
        let busybox = dir.path().join("busybox");
        std::fs::copy("/bin/true", &busybox).unwrap();
        let cat = dir.path().join("cat");
        std::os::unix::fs::symlink(&busybox, &cat).unwrap();
        let policy = Policy {
            allow: vec![cat.to_str().unwrap().to_owned()],
            ..Policy::strict()
        };
        let set = ExecSet::resolve(&policy, &cat);
        assert!(
            !set.programs.iter().any(|p| p.ends_with("busybox")),
            "{set:?}"
        );
        let shells = Policy {
            allow_shell: true,
            ..policy
        };
        let set = ExecSet::resolve(&shells, &cat);
        assert!(
            set.programs.iter().any(|p| p.ends_with("busybox")),
            "{set:?}"
        );
    }
}
