//! The journal's records: tasks and their state changes (no SQL: the
//! backends read and write them, e.g. `sqlite/tasks.rs`).

use ganglion_core::{NodeId, NodeName, TaskId, Timestamp};

// A task's status and history are domain types (the API shows them too).
pub use ganglion_core::task::{HistoryEntry, TaskStatus};

#[derive(Clone, Debug)]
pub struct NewTask {
    pub id: TaskId,
    pub node_id: NodeId,
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub timeout_ms: Option<u64>,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: TaskId,
    pub node_id: NodeId,
    pub node_name: NodeName,
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub timeout_ms: Option<u64>,
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub output_bytes: u64,
    pub output_truncated: bool,
    pub history: Vec<HistoryEntry>,
}

/// The stored (capped) output of a finished task.
#[derive(Clone, Debug, Default)]
pub struct StoredOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Bytes the task wrote in all, including what was not stored.
    pub bytes: u64,
    pub truncated: bool,
}

/// A task's end, as reported by its node (or decided by the hub).
#[derive(Clone, Debug)]
pub struct TaskEnd {
    pub id: TaskId,
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub output: Option<StoredOutput>,
    /// The node reports a task that finished while it was disconnected.
    pub late: bool,
    /// The hub failed the task because its node was lost: a late result
    /// from the node may still be recorded.
    pub lost: bool,
    pub at: Timestamp,
}

/// What recording an end did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndApplied {
    /// The task was unfinished and now has its final status.
    Finished,
    /// The task had been failed by a disconnection; the late result was added.
    LateResult,
    /// Nothing changed (already final, or a late result for a task that was
    /// not failed by a disconnection).
    Ignored,
}

/// A recorded end: what it did and the task's record afterwards.
#[derive(Clone, Debug)]
pub struct Ended {
    pub applied: EndApplied,
    pub record: TaskRecord,
}

#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub node_id: Option<NodeId>,
    pub status: Option<TaskStatus>,
    pub limit: Option<u32>,
}

/// Where a backend's journal writer is (the hub lists it as a worker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriterState {
    /// Waiting for writes.
    Idle,
    /// Writing a batch.
    Busy,
    /// It failed (why): every write is refused until the hub restarts.
    Failed(String),
}
