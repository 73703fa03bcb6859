//! Domain types shared by every part of Ganglion. Nothing here does IO.
//!
//! - [`name`]: validated node names.
//! - [`node`]: a node's status (online/offline).
//! - [`panic`]: what a caught panic says (workers report it).
//! - [`limit`]: accepted ranges of durations and sizes taken from input, and
//!   the largest command a task may have.
//! - [`id`]: opaque random identifiers (nodes, invites, tasks).
//! - [`secret`]: 256-bit secrets (invites, credentials, admin tokens) and their hashes.
//! - [`invite`]: the invite string a node redeems to join a hub.
//! - [`policy`]: the sandbox policy (strict/permissive) a node enforces.
//! - [`capabilities`]: what a node's machine and kernel can do.
//! - [`relpath`]: relative, normalised, confined paths that may cross the wire.
//! - [`time`]: timestamps, a clock that tests can drive, duration parsing.
//! - [`task`]: a task's status and history, and the task messages of the
//!   control stream (dispatch, cancel, reports).

pub mod capabilities;
pub mod id;
pub mod invite;
pub mod limit;
pub mod name;
pub mod node;
pub mod panic;
pub mod policy;
pub mod relpath;
pub mod secret;
pub mod task;
pub mod time;

pub use capabilities::Capabilities;
pub use id::{InviteId, NodeId, TaskId};
pub use invite::InviteCode;
pub use name::NodeName;
pub use node::NodeStatus;
pub use policy::{Policy, PolicyMode};
pub use relpath::RelPath;
pub use secret::{Secret, SecretHash};
pub use task::{Dispatch, NodeEnd, NodeReport, OutputStream, TaskStatus, TaskToHub, TaskToNode};
pub use time::{Clock, SystemClock, Timestamp};
