//! The journal's group commit. Task writes from concurrent callers queue to
//! one writer task, which applies everything that queued up while it was
//! busy: one statement for the new tasks, one for the starts, one for the
//! ends. Each statement is its own transaction, committed before any of its
//! callers hears back. An idle journal writes each change at once (no timer
//! waits for company); a busy one writes hundreds in the time of one.
//!
//! The batching matters because every statement is a round trip to SQLite's
//! worker thread: three per task, one at a time, capped the hub at ~1,600
//! tasks/s (bench/results/tasks-*), most of it in thread wake-ups.
//!
//! The writer is watched: if it panics, the failure is logged, kept, and
//! every write waiting or to come gets [`Error::WriterFailed`] at once (none
//! hangs, none is dropped silently). It is not restarted: a write in the
//! failed batch may or may not be in the database, which only a restart of
//! the hub (which fails unfinished tasks) sorts out. The hub lists the
//! writer's state ([`WriterState`]) among its workers as `journal`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ganglion_core::panic::panic_message;
use ganglion_core::{TaskId, Timestamp};
use sqlx::sqlite::SqlitePool;
use sqlx::{Row, Sqlite};
use tokio::sync::{mpsc, oneshot, watch};

use super::parse_json;
use super::tasks::{TASK_COLUMNS, TASK_RETURNING, task_from_row};
use crate::error::{Error, Result};
use crate::tasks::{
    EndApplied, Ended, HistoryEntry, NewTask, TaskEnd, TaskRecord, TaskStatus, WriterState,
};

/// Writes taken into one batch at most (SQLite allows 32,766 bound
/// variables; the widest statement here binds 12 per row).
const MAX_BATCH: usize = 512;

type Reply<T> = oneshot::Sender<Result<T>>;

enum Write {
    Create(NewTask, Reply<()>),
    Running(TaskId, Timestamp, Reply<bool>),
    Finish(TaskEnd, Reply<Ended>),
    /// A fault for tests: the writer panics.
    #[cfg(any(test, feature = "test-faults"))]
    Panic,
}

/// The callers' side of the writer task. The task ends when the last clone
/// is dropped.
#[derive(Clone, Debug)]
pub(super) struct Journal {
    tx: mpsc::UnboundedSender<Write>,
    /// Writing a batch (for the hub's list of workers).
    busy: Arc<AtomicBool>,
    /// Why the writer failed, once it has.
    failed: watch::Receiver<Option<String>>,
}

impl Journal {
    /// Starts the writer task on `writer`, the store's write connection,
    /// and a task that watches it.
    pub(super) fn start(writer: SqlitePool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let busy = Arc::new(AtomicBool::new(false));
        let (fail, failed) = watch::channel(None);
        let running = tokio::spawn(run(writer, rx, busy.clone()));
        tokio::spawn(async move {
            let Err(e) = running.await else { return };
            let error = match e.try_into_panic() {
                Ok(panic) => panic_message(panic.as_ref()),
                Err(e) => e.to_string(),
            };
            tracing::error!(worker = "journal", %error, "the journal writer failed; task writes are refused until the hub restarts");
            let _ = fail.send(Some(error));
        });
        Self { tx, busy, failed }
    }

    pub(super) fn state(&self) -> WriterState {
        match &*self.failed.borrow() {
            Some(e) => WriterState::Failed(e.clone()),
            None if self.busy.load(Ordering::Relaxed) => WriterState::Busy,
            None => WriterState::Idle,
        }
    }

    pub(super) async fn create(&self, task: &NewTask) -> Result<()> {
        self.call(|r| Write::Create(task.clone(), r)).await
    }

    pub(super) async fn running(&self, id: &TaskId, at: Timestamp) -> Result<bool> {
        self.call(|r| Write::Running(id.clone(), at, r)).await
    }

    pub(super) async fn finish(&self, end: &TaskEnd) -> Result<Ended> {
        self.call(|r| Write::Finish(end.clone(), r)).await
    }

    /// Makes the writer panic (tests of its supervision).
    #[cfg(any(test, feature = "test-faults"))]
    pub(super) fn inject_panic(&self) {
        let _ = self.tx.send(Write::Panic);
    }

    async fn call<T>(&self, write: impl FnOnce(Reply<T>) -> Write) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(write(reply)).is_err() {
            return Err(self.stopped().await);
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(self.stopped().await),
        }
    }

    /// Why the writer stopped: its failure (reported by its watcher right
    /// after it), or a closed store.
    async fn stopped(&self) -> Error {
        let mut failed = self.failed.clone();
        match failed.wait_for(Option::is_some).await {
            Ok(e) => Error::WriterFailed(e.clone().unwrap_or_default()),
            Err(_) => Error::Database(sqlx::Error::PoolClosed),
        }
    }
}

async fn run(pool: SqlitePool, mut rx: mpsc::UnboundedReceiver<Write>, busy: Arc<AtomicBool>) {
    let mut queued = Vec::new();
    while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
        busy.store(true, Ordering::Relaxed);
        write_batch(&pool, queued.drain(..)).await;
        busy.store(false, Ordering::Relaxed);
    }
}

async fn write_batch(pool: &SqlitePool, batch: impl Iterator<Item = Write>) {
    let (mut creates, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
    for w in batch {
        match w {
            Write::Create(t, r) => creates.push((t, r)),
            Write::Running(id, at, r) => starts.push(((id, at), r)),
            Write::Finish(e, r) => ends.push((e, r)),
            #[cfg(any(test, feature = "test-faults"))]
            Write::Panic => panic!("injected fault"),
        }
    }
    // A task's writes come in its lifecycle's order, so this order is
    // right for any task with writes of several kinds in one batch.
    create_all(pool, creates).await;
    while !starts.is_empty() {
        let (now, later) = first_per_task(starts, |((id, _), _)| id);
        start_all(pool, now).await;
        starts = later;
    }
    while !ends.is_empty() {
        let (now, later) = first_per_task(ends, |(e, _)| &e.id);
        finish_all(pool, now).await;
        ends = later;
    }
}

/// Splits writes so no task appears twice in one statement (an UPDATE … FROM
/// applies one of several matching rows); repeats go in a later round.
fn first_per_task<T>(writes: Vec<T>, id: impl Fn(&T) -> &TaskId) -> (Vec<T>, Vec<T>) {
    let mut seen = HashSet::new();
    writes
        .into_iter()
        .partition(|w| seen.insert(id(w).as_str().to_owned()))
}

/// `(?, ?, …), (?, ?, …)…`: `rows` groups of `cols` placeholders.
fn placeholders(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row; rows].join(", ")
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializable")
}

async fn create_all(pool: &SqlitePool, creates: Vec<(NewTask, Reply<()>)>) {
    if creates.len() > 1 {
        let tasks: Vec<&NewTask> = creates.iter().map(|(t, _)| t).collect();
        if insert(pool, &tasks).await.is_ok() {
            for (_, r) in creates {
                let _ = r.send(Ok(()));
            }
            return;
        }
        // One bad row fails the statement: give each its own answer.
    }
    for (t, r) in creates {
        let _ = r.send(insert(pool, &[&t]).await);
    }
}

async fn insert(pool: &SqlitePool, tasks: &[&NewTask]) -> Result<()> {
    let sql = format!(
        "INSERT INTO tasks (id, node_id, argv, cwd, timeout_ms, status, created_at, history) \
         SELECT column1, column2, column3, column4, column5, 'pending', column6, column7 \
         FROM (VALUES {})",
        placeholders(tasks.len(), 7)
    );
    let mut q = sqlx::query::<Sqlite>(&sql);
    for t in tasks {
        let history = [HistoryEntry {
            at: t.created_at,
            status: TaskStatus::Pending,
            note: None,
        }];
        q = q
            .bind(t.id.as_str())
            .bind(t.node_id.as_str())
            .bind(json(&t.argv))
            .bind(t.cwd.as_deref())
            .bind(t.timeout_ms.map(|v| v as i64))
            .bind(t.created_at.millis())
            .bind(json(&history));
    }
    q.execute(pool).await.map_err(Error::db("task"))?;
    Ok(())
}

async fn start_all(pool: &SqlitePool, starts: Vec<((TaskId, Timestamp), Reply<bool>)>) {
    let writes: Vec<&(TaskId, Timestamp)> = starts.iter().map(|(w, _)| w).collect();
    match start(pool, &writes).await {
        Ok(started) => {
            for ((id, _), r) in starts {
                let _ = r.send(Ok(started.contains(id.as_str())));
            }
        }
        // One at a time, so each caller gets its own answer.
        Err(_) if starts.len() > 1 => {
            for (w, r) in starts {
                let _ = r.send(start(pool, &[&w]).await.map(|s| !s.is_empty()));
            }
        }
        Err(e) => {
            if let Some((_, r)) = starts.into_iter().next() {
                let _ = r.send(Err(e));
            }
        }
    }
}

/// `pending` → `running`; the ids that changed.
async fn start(pool: &SqlitePool, starts: &[&(TaskId, Timestamp)]) -> Result<HashSet<String>> {
    let sql = format!(
        "UPDATE tasks SET status = 'running', started_at = b.at, \
           history = json_insert(tasks.history, '$[#]', json(b.entry)) \
         FROM (SELECT column1 AS id, column2 AS at, column3 AS entry FROM (VALUES {})) AS b \
         WHERE tasks.id = b.id AND tasks.status = 'pending' \
         RETURNING tasks.id",
        placeholders(starts.len(), 3)
    );
    let mut q = sqlx::query::<Sqlite>(&sql);
    for (id, at) in starts.iter().copied() {
        let entry = HistoryEntry {
            at: *at,
            status: TaskStatus::Running,
            note: None,
        };
        q = q.bind(id.as_str()).bind(at.millis()).bind(json(&entry));
    }
    let rows = q.fetch_all(pool).await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(Error::from))
        .collect()
}

async fn finish_all(pool: &SqlitePool, ends: Vec<(TaskEnd, Reply<Ended>)>) {
    let mut finished = HashMap::new();
    match finish_unfinished(pool, &ends).await {
        Ok(records) => finished = records,
        Err(e) => tracing::warn!(error = %e, "journal: batched task ends failed; one at a time"),
    }
    for (end, r) in ends {
        let answer = match finished.remove(end.id.as_str()) {
            Some(record) => Ok(Ended {
                applied: EndApplied::Finished,
                record,
            }),
            None => finish_settled(pool, &end).await,
        };
        let _ = r.send(answer);
    }
}

/// Ends the tasks that are still pending or running, in one statement;
/// returns their new records by id.
async fn finish_unfinished(
    pool: &SqlitePool,
    ends: &[(TaskEnd, Reply<Ended>)],
) -> Result<HashMap<String, TaskRecord>> {
    let sql = format!(
        "UPDATE tasks SET status = b.status, exit_code = b.exit_code, error = b.error, \
           finished_at = b.at, history = json_insert(tasks.history, '$[#]', json(b.entry)), \
           stdout = CASE WHEN b.has_output THEN b.stdout ELSE tasks.stdout END, \
           stderr = CASE WHEN b.has_output THEN b.stderr ELSE tasks.stderr END, \
           output_bytes = MAX(tasks.output_bytes, b.bytes), \
           output_truncated = tasks.output_truncated OR b.truncated, \
           lost_at = CASE WHEN b.lost THEN b.at ELSE tasks.lost_at END \
         FROM (SELECT column1 AS id, column2 AS status, column3 AS exit_code, column4 AS error, \
                 column5 AS at, column6 AS entry, column7 AS has_output, column8 AS stdout, \
                 column9 AS stderr, column10 AS bytes, column11 AS truncated, column12 AS lost \
               FROM (VALUES {})) AS b \
         WHERE tasks.id = b.id AND tasks.status IN ('pending', 'running') \
         RETURNING {TASK_RETURNING}",
        placeholders(ends.len(), 12),
    );
    let mut q = sqlx::query::<Sqlite>(&sql);
    for (end, _) in ends {
        let entry = HistoryEntry {
            at: end.at,
            status: end.status,
            note: end.error.clone(),
        };
        let out = end.output.clone().unwrap_or_default();
        q = q
            .bind(end.id.as_str())
            .bind(end.status.as_str())
            .bind(end.exit_code)
            .bind(end.error.clone())
            .bind(end.at.millis())
            .bind(json(&entry))
            .bind(end.output.is_some())
            .bind(out.stdout)
            .bind(out.stderr)
            .bind(out.bytes as i64)
            .bind(out.truncated)
            .bind(end.lost);
    }
    let rows = q.fetch_all(pool).await?;
    rows.iter()
        .map(|row| task_from_row(row).map(|t| (t.id.as_str().to_owned(), t)))
        .collect()
}

/// Records the end of a task that was final already (or unknown): a late
/// result for a task failed by a disconnection is added; anything else is
/// ignored. The rare path, one transaction per end.
async fn finish_settled(pool: &SqlitePool, end: &TaskEnd) -> Result<Ended> {
    let applied = settle_end(pool, end).await?;
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks t JOIN nodes n ON n.id = t.node_id WHERE t.id = ?"
    );
    let row = sqlx::query(&sql)
        .bind(end.id.as_str())
        .fetch_one(pool)
        .await
        .map_err(Error::db("task"))?;
    Ok(Ended {
        applied,
        record: task_from_row(&row)?,
    })
}

async fn settle_end(pool: &SqlitePool, end: &TaskEnd) -> Result<EndApplied> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let row = sqlx::query("SELECT status, history, error, lost_at FROM tasks WHERE id = ?")
        .bind(end.id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Err(Error::NotFound { what: "task" });
    };
    let status: String = row.try_get("status")?;
    let status = TaskStatus::parse(&status).ok_or_else(|| Error::Corrupt("task status".into()))?;
    let mut history: Vec<HistoryEntry> =
        parse_json(&row.try_get::<String, _>("history")?, "task history")?;
    let lost_at: Option<i64> = row.try_get("lost_at")?;
    let applied = if !status.is_final() {
        EndApplied::Finished
    } else if end.late && lost_at.is_some() && status == TaskStatus::Failed {
        EndApplied::LateResult
    } else {
        return Ok(EndApplied::Ignored);
    };
    let note = match applied {
        EndApplied::LateResult => Some(format!(
            "late result from the node: {}{}",
            end.status.as_str(),
            end.exit_code
                .map(|c| format!(" (exit code {c})"))
                .unwrap_or_default()
        )),
        _ => end.error.clone(),
    };
    history.push(HistoryEntry {
        at: end.at,
        status: end.status,
        note,
    });
    let error = match applied {
        // Keep the disconnection diagnostic: the history says what came later.
        EndApplied::LateResult => row.try_get::<Option<String>, _>("error")?,
        _ => end.error.clone(),
    };
    let out = end.output.clone().unwrap_or_default();
    sqlx::query(
            "UPDATE tasks SET status = ?, exit_code = ?, error = ?, finished_at = ?, history = ?, \
               stdout = CASE WHEN ? THEN ? ELSE stdout END, stderr = CASE WHEN ? THEN ? ELSE stderr END, \
               output_bytes = MAX(output_bytes, ?), output_truncated = output_truncated OR ?, \
               lost_at = CASE WHEN ? THEN ? ELSE lost_at END \
             WHERE id = ?",
        )
        .bind(end.status.as_str())
        .bind(end.exit_code)
        .bind(error)
        .bind(end.at.millis())
        .bind(json(&history))
        .bind(end.output.is_some())
        .bind(&out.stdout)
        .bind(end.output.is_some())
        .bind(&out.stderr)
        .bind(out.bytes as i64)
        .bind(out.truncated)
        .bind(end.lost)
        .bind(end.at.millis())
        .bind(end.id.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use ganglion_core::NodeId;

    use super::*;
    use crate::{JournalStore, SqliteStore};

    /// A writer that panics is reported, and every write, waiting or later,
    /// gets its error at once: none hangs, none is lost silently.
    #[tokio::test]
    async fn a_failed_writer_refuses_every_write_with_its_error() {
        let store = SqliteStore::in_memory().await.unwrap();
        assert_eq!(store.journal_writer(), WriterState::Idle);
        store.inject_journal_panic();
        let task = NewTask {
            id: TaskId::generate(),
            node_id: NodeId::generate(),
            argv: vec!["true".into()],
            cwd: None,
            timeout_ms: None,
            created_at: Timestamp(0),
        };
        for _ in 0..2 {
            let e = store.create_task(&task).await.unwrap_err();
            assert_eq!(
                e.to_string(),
                "the task journal's writer failed (panicked: injected fault); restart the hub"
            );
        }
        let e = store.mark_task_running(&task.id, Timestamp(1)).await;
        assert!(matches!(e, Err(Error::WriterFailed(_))), "{e:?}");
        assert_eq!(
            store.journal_writer(),
            WriterState::Failed("panicked: injected fault".into())
        );
    }
}
