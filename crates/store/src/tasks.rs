//! The journal: task records and their state changes (SQLite).

use ganglion_core::{NodeId, NodeName, TaskId, Timestamp};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::error::{Error, Result};

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

pub(crate) const TASK_COLUMNS: &str = "t.id, t.node_id, n.name AS node_name, t.argv, t.cwd, t.timeout_ms, \
     t.status, t.exit_code, t.error, t.created_at, t.started_at, t.finished_at, t.stdout, t.stderr, \
     t.output_bytes, t.output_truncated, t.history";

/// [`TASK_COLUMNS`] for a RETURNING clause on `tasks` (no join there).
pub(crate) const TASK_RETURNING: &str = "tasks.id, tasks.node_id, \
     (SELECT name FROM nodes WHERE nodes.id = tasks.node_id) AS node_name, tasks.argv, tasks.cwd, \
     tasks.timeout_ms, tasks.status, tasks.exit_code, tasks.error, tasks.created_at, \
     tasks.started_at, tasks.finished_at, tasks.stdout, tasks.stderr, tasks.output_bytes, \
     tasks.output_truncated, tasks.history";

pub(crate) fn task_from_row(row: &SqliteRow) -> Result<TaskRecord> {
    let corrupt = |what: &str| Error::Corrupt(format!("task {what}"));
    let id: String = row.try_get("id")?;
    let node_id: String = row.try_get("node_id")?;
    let node_name: String = row.try_get("node_name")?;
    let argv: String = row.try_get("argv")?;
    let status: String = row.try_get("status")?;
    let history: String = row.try_get("history")?;
    let timeout: Option<i64> = row.try_get("timeout_ms")?;
    let stdout: Option<Vec<u8>> = row.try_get("stdout")?;
    let stderr: Option<Vec<u8>> = row.try_get("stderr")?;
    let bytes: i64 = row.try_get("output_bytes")?;
    Ok(TaskRecord {
        id: TaskId::from_string(id).ok_or_else(|| corrupt("id"))?,
        node_id: NodeId::from_string(node_id).ok_or_else(|| corrupt("node id"))?,
        node_name: NodeName::parse(&node_name).map_err(|_| corrupt("node name"))?,
        argv: serde_json::from_str(&argv).map_err(|_| corrupt("argv"))?,
        cwd: row.try_get("cwd")?,
        timeout_ms: timeout.map(|t| t as u64),
        status: TaskStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        exit_code: row.try_get("exit_code")?,
        error: row.try_get("error")?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        started_at: row
            .try_get::<Option<i64>, _>("started_at")?
            .map(Timestamp::from_millis),
        finished_at: row
            .try_get::<Option<i64>, _>("finished_at")?
            .map(Timestamp::from_millis),
        stdout: stdout.unwrap_or_default(),
        stderr: stderr.unwrap_or_default(),
        output_bytes: bytes as u64,
        output_truncated: row.try_get::<i64, _>("output_truncated")? != 0,
        history: serde_json::from_str(&history).map_err(|_| corrupt("history"))?,
    })
}
