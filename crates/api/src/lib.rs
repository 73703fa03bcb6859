//! The JSON shapes of the hub's HTTP API (`/api/v1/…`), shared by the hub's
//! handlers and the CLI's client. Field names and values follow CONTRACT.md
//! exactly; each module's tests pin the JSON. States are typed enums,
//! serialized as the lowercase words the contract lists.
//!
//! - [`error`]: the body of every refusal.
//! - [`invites`]: creating and listing invites.
//! - [`nodes`]: nodes, their status and policy.
//! - [`tasks`]: running tasks, their records and event lines, and the exit
//!   code `ganglion run` ends with.
//! - [`mirrors`]: mirror listings, status, waits, verification, immutable paths.
//! - [`status`]: the hub's status and its background workers.

pub mod error;
pub mod invites;
pub mod mirrors;
pub mod nodes;
pub mod status;
pub mod tasks;

pub use error::ErrorBody;
pub use invites::{CreateInvite, Invite, InviteCreated};
pub use mirrors::{
    ConflictInfo, FileKind, ImmutableChange, KeepSide, MirrorFile, MirrorStatus, MoveRequest,
    PathQuery, ResolveRequest, VerifyMismatch, VerifyReport, WaitQuery, WaitReport, WriteQuery,
    WriteResult,
};
pub use nodes::{Node, NodeDuplicate, NodeStatus, SetPolicy};
pub use status::{Status, WorkerState, WorkerStatus};
pub use tasks::{RunTask, Task, TaskEventLine, run_exit_code};

// The domain enums the API shows as they are.
pub use ganglion_core::invite::InviteState;
pub use ganglion_core::task::{HistoryEntry, OutputStream, TaskStatus};
pub use ganglion_core::{Policy, PolicyMode};

/// Serializes `v` and checks it reads back to the same JSON (test helper).
#[cfg(test)]
pub(crate) fn pin<T>(v: &T, expected: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let json = serde_json::to_string(v).expect("serialises");
    assert_eq!(json, expected);
    let back: T = serde_json::from_str(&json).expect("reads back");
    assert_eq!(serde_json::to_string(&back).expect("serialises"), expected);
}
