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
//! - `child`: what runs between `fork` and `exec` (raw syscalls only).
//! - [`error`]: why a task was refused, with its exit code.
//!
//! [`Policy`]: ganglion_core::policy::Policy

mod cgroup;
mod child;
mod confine;
pub mod error;
pub mod probe;
pub mod sandbox;
pub mod spec;
pub mod task;

pub use error::Error;
pub use probe::{ForkLimit, SandboxSupport, probe};
pub use sandbox::Sandbox;
pub use spec::{Limits, SandboxOptions, TaskSpec};
pub use task::{Canceller, Outcome, OutputChunk, RunningTask, Status, Stream};
