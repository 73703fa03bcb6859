//! Wire ↔ domain conversions, every one of them: the hub and the node share
//! them, and domain code never touches a prost struct. Wire input is
//! untrusted: conversions from the wire validate and fail with a message
//! instead of trusting the peer.
//!
//! - `policy`: the sandbox policy and capabilities.
//! - [`tasks`]: dispatches, cancels and a node's task reports.
//! - [`mirror`]: entries, notices, needs, upload parts and failures.
//! - [`stream`]: the control stream's messages by subsystem ([`FromNode`],
//!   [`FromHub`]), which each side routes to the subsystem's handler.

pub mod mirror;
mod policy;
pub mod stream;
pub mod tasks;

pub use stream::{FromHub, FromNode, Hello, Welcome};

/// A wire message that does not make a valid domain value.
#[derive(Debug, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

impl Invalid {
    pub(crate) fn new(field: &'static str, reason: impl std::fmt::Display) -> Self {
        Self {
            field,
            reason: reason.to_string(),
        }
    }
}
