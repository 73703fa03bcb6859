//! The task subsystem's messages on a node's control stream, in domain form
//! (`ganglion-proto` converts them to and from the wire): what the hub tells
//! a node ([`TaskToNode`]) and what the node reports ([`TaskToHub`]).

use std::time::Duration;

use crate::{RelPath, TaskId};

/// A task sent to its node to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    pub id: TaskId,
    pub argv: Vec<String>,
    /// Working directory inside the workspace; the workspace itself when `None`.
    pub cwd: Option<RelPath>,
    pub env: Vec<(String, String)>,
    /// Wall-clock limit from the start; none when `None`.
    pub timeout: Option<Duration>,
    /// Bytes of output the node streams at most.
    pub output_cap: u64,
}

/// What the hub tells a node about tasks. A dispatch is boxed: the message
/// sits in every connection's queue, whose slots are as large as the
/// largest variant.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskToNode {
    Dispatch(Box<Dispatch>),
    Cancel(TaskId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// How a node says a task ended.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeEnd {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    Cancelled,
    Refused { exit_code: i32, error: String },
}

/// A node's report of a task's end.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeReport {
    pub end: NodeEnd,
    pub output_bytes: u64,
    pub output_truncated: bool,
    /// Sent after a reconnect: the hub may already have failed the task.
    pub late: bool,
}

/// What a node reports about its tasks.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskToHub {
    Started {
        id: TaskId,
        pid: u32,
    },
    Output {
        id: TaskId,
        seq: u64,
        stream: OutputStream,
        data: Vec<u8>,
    },
    Finished {
        id: TaskId,
        report: NodeReport,
    },
}
