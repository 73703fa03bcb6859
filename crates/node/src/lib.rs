//! The Ganglion node.
//!
//! - [`state`]: the node's state dir (credential, hub address, pinned fingerprint),
//!   with its permission checks.
//! - [`tls`]: the pinned-certificate TLS connector and the gRPC channel.
//! - [`join`]: redeeming an invite.
//! - [`capabilities`]: what this machine reports at the handshake.
//! - [`backoff`]: capped, jittered exponential backoff for reconnects.
//! - [`runtime`]: the node's main loop: configuration, control stream, reconnects.
//! - [`link`]: the gRPC adapter (the only module that sees the wire): the
//!   control stream, the `Upload` stream, the client; maps status codes to errors.
//! - [`tasks`]: runs dispatched tasks; the task subsystem's handler.
//! - [`mirror`]: the workspace mirror toward the hub (watcher, worker, scans,
//!   uploads); the mirror subsystem's handler.
//! - `recorder`: the mirror's index writer (in order, retried when a write fails).
//! - [`progress`]: the mirror's sync progress as numbers, for a UI to render.
//! - [`supervise`]: the node's loops as workers; a panic in one stops the node.
//! - [`limits`]: process limits adjusted at start (open files; the hub's
//!   binary uses it too).
//! - `error`: the node's errors.

pub mod backoff;
pub mod capabilities;
mod error;
pub mod join;
pub mod limits;
pub mod link;
pub mod mirror;
pub mod progress;
mod recorder;
pub mod runtime;
pub mod state;
pub mod supervise;
pub mod tasks;
pub mod tls;

pub use error::Error;
pub use link::client;
pub use runtime::{ExecutorOptions, NodeRuntime, RuntimeHandle, RuntimeOptions};
pub use state::JoinedNode;
