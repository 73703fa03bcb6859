//! The journal in SQLite ([`JournalStore`]): reads and the failing of
//! unfinished tasks here, the group-committed writes in `journal.rs`.

use async_trait::async_trait;
use ganglion_core::{NodeId, NodeName, TaskId, Timestamp};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{SqliteStore, json, parse_json};
use crate::JournalStore;
use crate::error::{Error, Result};
use crate::tasks::{Ended, HistoryEntry, NewTask, TaskEnd, TaskFilter, TaskRecord, TaskStatus};

#[async_trait]
impl JournalStore for SqliteStore {
    async fn create_task(&self, t: &NewTask) -> Result<()> {
        self.journal.create(t).await
    }

    async fn mark_task_running(&self, id: &TaskId, at: Timestamp) -> Result<bool> {
        self.journal.running(id, at).await
    }

    async fn finish_task(&self, end: &TaskEnd) -> Result<Ended> {
        self.journal.finish(end).await
    }

    fn journal_writer(&self) -> crate::tasks::WriterState {
        self.journal.state()
    }

    async fn fail_unfinished_tasks(
        &self,
        node_id: Option<&NodeId>,
        error: &str,
        at: Timestamp,
    ) -> Result<Vec<TaskId>> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "SELECT id, history FROM tasks WHERE status IN ('pending', 'running') \
             AND (? IS NULL OR node_id = ?)",
        )
        .bind(node_id.map(|n| n.as_str()))
        .bind(node_id.map(|n| n.as_str()))
        .fetch_all(&mut *tx)
        .await?;
        let mut failed = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let mut history: Vec<HistoryEntry> =
                parse_json(&row.try_get::<String, _>("history")?, "task history")?;
            history.push(HistoryEntry {
                at,
                status: TaskStatus::Failed,
                note: Some(error.to_owned()),
            });
            sqlx::query(
                "UPDATE tasks SET status = 'failed', error = ?, finished_at = ?, lost_at = ?, history = ? WHERE id = ?",
            )
            .bind(error)
            .bind(at.millis())
            .bind(at.millis())
            .bind(json(&history))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            failed.push(TaskId::from_string(id).ok_or_else(|| Error::Corrupt("task id".into()))?);
        }
        tx.commit().await?;
        Ok(failed)
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<TaskRecord>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN nodes n ON n.id = t.node_id WHERE t.id = ?"
        );
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<TaskRecord>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN nodes n ON n.id = t.node_id \
             WHERE (? IS NULL OR t.node_id = ?) AND (? IS NULL OR t.status = ?) \
             ORDER BY t.created_at DESC, t.id DESC LIMIT ?"
        );
        let node = f.node_id.as_ref().map(|n| n.as_str());
        let status = f.status.map(|s| s.as_str());
        let rows = sqlx::query(&sql)
            .bind(node)
            .bind(node)
            .bind(status)
            .bind(status)
            .bind(i64::from(f.limit.unwrap_or(1000)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(task_from_row).collect()
    }
}

pub(super) const TASK_COLUMNS: &str = "t.id, t.node_id, n.name AS node_name, t.argv, t.cwd, t.timeout_ms, \
     t.status, t.exit_code, t.error, t.created_at, t.started_at, t.finished_at, t.stdout, t.stderr, \
     t.output_bytes, t.output_truncated, t.history";

/// [`TASK_COLUMNS`] for a RETURNING clause on `tasks` (no join there).
pub(super) const TASK_RETURNING: &str = "tasks.id, tasks.node_id, \
     (SELECT name FROM nodes WHERE nodes.id = tasks.node_id) AS node_name, tasks.argv, tasks.cwd, \
     tasks.timeout_ms, tasks.status, tasks.exit_code, tasks.error, tasks.created_at, \
     tasks.started_at, tasks.finished_at, tasks.stdout, tasks.stderr, tasks.output_bytes, \
     tasks.output_truncated, tasks.history";

pub(super) fn task_from_row(row: &SqliteRow) -> Result<TaskRecord> {
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
