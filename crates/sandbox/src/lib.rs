//! Runs one task's program on a node under its sandbox policy.
//!
//! - [`probe`]: what the kernel enforces (Landlock ABI, cgroups, rlimits),
//!   reported at the handshake.
//! - [`spec`]: [`TaskSpec`], [`SandboxOptions`] and [`Limits`].
//! - [`sandbox`]: [`Sandbox::start`] checks a task against the [`Policy`] and
//!   spawns it.
//! - [`task`]: [`RunningTask`]: output chunks, cancel, timeout, [`Outcome`].
//! - `confine`: the Landlock ruleset of a STRICT task.
//! - `cgroup`: per-task cgroups, the process limit that holds for root.
//! - `args`: argv and environment checks, the STRICT environment.
//! - `exec_allow`: the files a STRICT task may execute (allowlist, loaders).
//! - `prepared`: the allowlist's rules, resolved once per few seconds.
//! - `seccomp`: the seccomp filters of a STRICT task.
//! - `namespaces`: mount and PID namespaces of a STRICT task.
//! - `idmap`: the unprivileged uid of STRICT tasks on a root node.
//! - `cleanup`: leftovers of an earlier node process, removed at start.
//! - `child`: what runs between `fork` and `exec` (raw syscalls only, `sys`).
//! - [`error`]: why a task was refused, with its exit code.
//!
//! [`Policy`]: ganglion_core::policy::Policy

mod args;
mod cgroup;
mod child;
mod cleanup;
mod confine;
pub mod error;
mod exec_allow;
mod idmap;
mod namespaces;
mod prepared;
pub mod probe;
pub mod sandbox;
mod seccomp;
pub mod spec;
mod sys;
pub mod task;

pub use error::Error;
pub use probe::{ForkLimit, SandboxSupport, probe};
pub use sandbox::Sandbox;
pub use spec::{Limits, SandboxOptions, TaskSpec};
pub use task::{Canceller, Outcome, OutputChunk, RunningTask, Status, Stream};
