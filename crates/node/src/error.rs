//! The node's errors.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid invite: {0}")]
    Invite(#[from] ganglion_core::invite::Error),
    #[error("invalid node name: {0}")]
    Name(#[from] ganglion_core::name::Error),
    #[error("state dir {path} {problem}")]
    StateDir { path: PathBuf, problem: String },
    #[error("workspace {path} {problem}")]
    Workspace { path: PathBuf, problem: String },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the hub presented certificate {got} but this node pins {expected}")]
    CertificateMismatch { expected: String, got: String },
    #[error("cannot reach the hub at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the hub refused the join: {0}")]
    JoinRefused(String),
    #[error("this node was revoked by the hub; it will not reconnect")]
    Revoked,
    #[error("the hub does not accept this node's credential: {0}")]
    Unauthenticated(String),
    /// Another running process holds a live connection with this node's
    /// credential (a copied state dir); the hub keeps that one.
    #[error("the hub refused this node: {0}")]
    Duplicate(String),
    #[error("hub: {0}")]
    Hub(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// One of the node's loops panicked: the node stops (non-zero exit) so
    /// that its service manager starts it again.
    #[error("node worker {worker} failed: {error}")]
    WorkerFailed { worker: &'static str, error: String },
}

impl Error {
    /// Errors that retrying cannot fix: the node stops instead of reconnecting.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Revoked
                | Error::Unauthenticated(_)
                | Error::StateDir { .. }
                | Error::Workspace { .. }
                | Error::Corrupt { .. }
                | Error::WorkerFailed { .. }
        )
    }
}
