//! Tasks as every layer sees them: a task's status and the history of its
//! changes (the journal stores them, the API shows them), and the task
//! subsystem's messages on a node's control stream in domain form
//! (`ganglion-proto` converts them to and from the wire): what the hub tells
//! a node ([`TaskToNode`]) and what the node reports ([`TaskToHub`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::{RelPath, TaskId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => TaskStatus::Pending,
            "running" => TaskStatus::Running,
            "succeeded" => TaskStatus::Succeeded,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        !matches!(self, TaskStatus::Pending | TaskStatus::Running)
    }
}

/// Which of a task's outputs a chunk belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One entry of a task's history: what changed, when, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: Timestamp,
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

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
