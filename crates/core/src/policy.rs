//! The sandbox policy a node enforces on every task it runs.
//!
//! STRICT is the default for every node an admin did not change. PERMISSIVE is
//! only ever set by an explicit admin action for one node.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    Strict,
    Permissive,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Strict => "strict",
            PolicyMode::Permissive => "permissive",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "strict" => Some(PolicyMode::Strict),
            "permissive" => Some(PolicyMode::Permissive),
            _ => None,
        }
    }
}

/// Programs a STRICT node runs when the admin added nothing: read-mostly tools
/// that are not made to start another program (so no `env`, `xargs`, `find`,
/// `make`, `git` or compilers: an admin adds those knowingly). Whatever their
/// options (`sort --compress-program`), the node's sandbox lets a task execute
/// only the allowlisted files (Landlock), so none of them can start a shell. Matched by program name (the last
/// path component of `argv[0]`), resolved on the node's `PATH` at run time.
pub const DEFAULT_ALLOW: &[&str] = &[
    "true",
    "false",
    "echo",
    "printf",
    "cat",
    "head",
    "tail",
    "ls",
    "stat",
    "wc",
    "sort",
    "uniq",
    "cut",
    "tr",
    "grep",
    "diff",
    "cmp",
    "sha256sum",
    "b2sum",
    "md5sum",
    "date",
    "uname",
    "pwd",
    "basename",
    "dirname",
    "realpath",
    "readlink",
    "du",
    "df",
    "sleep",
    "seq",
    "yes",
    "test",
    "mkdir",
    "touch",
    "cp",
    "mv",
    "rm",
    "ln",
    "tee",
];

/// Shells and shell-script interpreters: refused under STRICT even when allowlisted,
/// unless the admin set `allow_shell`.
pub const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "ash", "busybox", "rbash",
];

/// A node's policy. `version` increases with every change, so a node can tell a
/// stale update from a fresh one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub mode: PolicyMode,
    /// Extra programs allowed under STRICT, on top of [`DEFAULT_ALLOW`].
    #[serde(default)]
    pub allow: Vec<String>,
    /// STRICT only: allow TCP bind/connect.
    #[serde(default)]
    pub network: bool,
    /// STRICT only: allow shells if they are on the allowlist.
    #[serde(default)]
    pub allow_shell: bool,
    /// STRICT only: run even where the kernel cannot confine filesystem writes.
    #[serde(default)]
    pub allow_weak_sandbox: bool,
    #[serde(default)]
    pub version: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self::strict()
    }
}

impl Policy {
    pub fn strict() -> Self {
        Self {
            mode: PolicyMode::Strict,
            allow: Vec::new(),
            network: false,
            allow_shell: false,
            allow_weak_sandbox: false,
            version: 1,
        }
    }

    pub fn permissive() -> Self {
        Self {
            mode: PolicyMode::Permissive,
            ..Self::strict()
        }
    }

    /// The program name (last component of `argv0`) used for allowlist checks.
    pub fn program_name(argv0: &str) -> &str {
        argv0.rsplit('/').next().unwrap_or(argv0)
    }

    pub fn is_shell(argv0: &str) -> bool {
        SHELLS.contains(&Self::program_name(argv0))
    }

    /// Whether this policy lets `argv0` run. `None` when allowed, else the reason.
    pub fn refusal(&self, argv0: &str) -> Option<Refusal> {
        if self.mode == PolicyMode::Permissive {
            return None;
        }
        let name = Self::program_name(argv0);
        if Self::is_shell(argv0) && !self.allow_shell {
            return Some(Refusal::Shell);
        }
        let listed =
            DEFAULT_ALLOW.contains(&name) || self.allow.iter().any(|a| a == name || a == argv0);
        (!listed).then_some(Refusal::NotAllowed)
    }
}

/// Why a STRICT policy refuses a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A shell, and the policy does not allow shells.
    Shell,
    /// Not on the allowlist.
    NotAllowed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_is_default_and_refuses_shells_even_allowlisted() {
        let mut p = Policy::default();
        assert_eq!(p.mode, PolicyMode::Strict);
        assert_eq!(p.refusal("sh"), Some(Refusal::Shell));
        p.allow.push("bash".into());
        assert_eq!(p.refusal("/bin/bash"), Some(Refusal::Shell));
        p.allow_shell = true;
        assert_eq!(p.refusal("/bin/bash"), None);
        assert_eq!(p.refusal("python3"), Some(Refusal::NotAllowed));
        assert_eq!(p.refusal("ls"), None);
    }

    #[test]
    fn permissive_allows_anything() {
        assert_eq!(Policy::permissive().refusal("bash"), None);
    }
}
