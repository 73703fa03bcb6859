//! Tasks: dispatch to a node, live output to watchers, the journal.
//!
//! Every state change is written to the journal before anyone is told of it.
//! When a node's stream ends, each of its unfinished tasks fails at once with
//! a diagnostic; a result the node reports after reconnecting is recorded as
//! a late result, and the history keeps the disconnection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use ganglion_core::time::SharedClock;
use ganglion_core::{NodeId, NodeName, RelPath, TaskId, Timestamp};
use ganglion_store::{
    EndApplied, NewTask, Store, StoredOutput, TaskEnd, TaskFilter, TaskRecord, TaskStatus,
};
// Not poisoned by a panic: one failed request must not stop every later one.
use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::registry::{Connection, Registry, ToNode};
use crate::{Error, limits};

/// Largest argv + env accepted, in bytes (the node refuses more, too).
pub const MAX_COMMAND_BYTES: usize = 1 << 20;
/// Output a task may produce before the node drops the rest.
pub const DEFAULT_OUTPUT_CAP: u64 = 16 << 20;
/// Output kept in the journal per task.
pub const STORED_OUTPUT_CAP: usize = 1 << 20;
/// Events a task's watchers may fall behind by. Watchers share one ring of
/// this many events; a watcher that falls further behind (a client that
/// reads slower than the task writes) skips the oldest and is told how many
/// it missed. With the node's 64 KiB output chunks this is 8 MiB per task,
/// whatever the output cap: the cap bounds what the node streams, this what
/// the hub holds. (Slowing the node down instead would stall its one control
/// stream, and with it its heartbeats and every other task on it.)
pub const WATCH_BUFFER_EVENTS: usize = 128;
/// Largest output chunk taken from a node in one message (the node sends
/// 64 KiB); the rest of a bigger one is dropped as truncated output.
pub const MAX_OUTPUT_CHUNK: usize = 256 << 10;
/// Timeout when the caller gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a node keeps running a task it cannot report before killing it.
pub const NODE_GRACE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct TaskSpec {
    pub argv: Vec<String>,
    pub cwd: Option<RelPath>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub output_cap: Option<u64>,
}

/// A task as sent to its node.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    pub id: TaskId,
    pub argv: Vec<String>,
    pub cwd: Option<RelPath>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub output_cap: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// What a watcher of a task sees, in order.
#[derive(Clone, Debug)]
pub enum TaskEvent {
    Started {
        pid: u32,
    },
    Output {
        seq: u64,
        stream: OutputStream,
        data: Bytes,
    },
    Finished(Box<TaskRecord>),
}

/// How a node says a task ended.
#[derive(Clone, Debug)]
pub enum NodeEnd {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    Cancelled,
    Refused { exit_code: i32, error: String },
}

#[derive(Clone, Debug)]
pub struct NodeReport {
    pub end: NodeEnd,
    pub output_bytes: u64,
    pub output_truncated: bool,
    pub late: bool,
}

struct LiveTask {
    node_id: NodeId,
    node_name: NodeName,
    timeout: Duration,
    /// The watchers' shared, bounded ring of events.
    events: broadcast::Sender<TaskEvent>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
    last_seq: Option<u64>,
    /// When the task was dispatched; its lease runs out at
    /// `dispatched + timeout + LEASE_GRACE`.
    dispatched: tokio::time::Instant,
}

/// How long past its timeout a task may stay unfinished before the hub stops
/// waiting for its node: the node kills at the timeout and reports at once.
pub const LEASE_GRACE: Duration = Duration::from_secs(60);

impl LiveTask {
    fn keep(&mut self, stream: OutputStream, data: &[u8]) {
        let room = STORED_OUTPUT_CAP.saturating_sub(self.stdout.len() + self.stderr.len());
        let take = data.len().min(room);
        let buf = match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        };
        buf.extend_from_slice(&data[..take]);
        self.truncated |= take < data.len();
    }

    fn tell(&self, event: TaskEvent) {
        // An error only means nobody is watching.
        let _ = self.events.send(event);
    }
}

pub struct Tasks {
    store: Arc<dyn Store>,
    registry: Registry,
    clock: SharedClock,
    live: Mutex<HashMap<TaskId, LiveTask>>,
}

fn validate(spec: &TaskSpec) -> Result<(), Error> {
    let bad = |m: &str| Err(Error::InvalidArgument(m.to_owned()));
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return bad("argv is empty: give a program to run");
    }
    if spec.argv.iter().any(|a| a.contains('\0')) {
        return bad("an argument contains a NUL byte");
    }
    let env_ok = spec
        .env
        .iter()
        .all(|(k, v)| !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0'));
    if !env_ok {
        return bad("an environment variable has an empty name, '=' in its name, or a NUL byte");
    }
    let size: usize = spec.argv.iter().map(|a| a.len() + 1).sum::<usize>()
        + spec
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    if size > MAX_COMMAND_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the command line is {size} bytes; at most {MAX_COMMAND_BYTES} are accepted"
        )));
    }
    if let Some(t) = spec.timeout {
        limits::TASK_TIMEOUT.check(t)?;
    }
    if let Some(c) = spec.output_cap {
        limits::OUTPUT_CAP.check(c)?;
    }
    Ok(())
}

impl Tasks {
    pub fn new(store: Arc<dyn Store>, registry: Registry, clock: SharedClock) -> Self {
        Self {
            store,
            registry,
            clock,
            live: Mutex::default(),
        }
    }

    pub fn live_count(&self) -> usize {
        self.live.lock().len()
    }

    /// Runs `f` with the live table locked (tests: a panic there).
    #[cfg(test)]
    pub(crate) fn with_live_for_test(&self, f: impl FnOnce()) {
        let _live = self.live.lock();
        f();
    }

    #[cfg(test)]
    pub(crate) fn node_of_for_test(&self, id: &TaskId) -> Option<NodeId> {
        self.live.lock().get(id).map(|t| t.node_id.clone())
    }

    /// Journals a task as pending, then sends it to its node. The returned
    /// receiver sees the task's events from the start.
    #[tracing::instrument(skip_all, fields(node = node_name))]
    pub async fn submit(
        &self,
        node_name: &str,
        spec: TaskSpec,
    ) -> Result<(TaskId, broadcast::Receiver<TaskEvent>), Error> {
        validate(&spec)?;
        let conn = self.connection(node_name).await?;
        let id = TaskId::generate();
        let timeout = spec.timeout.unwrap_or(DEFAULT_TIMEOUT);
        self.store
            .create_task(&NewTask {
                id: id.clone(),
                node_id: conn.node_id.clone(),
                argv: spec.argv.clone(),
                cwd: spec.cwd.as_ref().map(|c| c.to_string()),
                timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
                created_at: self.clock.now(),
            })
            .await?;
        let (tx, rx) = broadcast::channel(WATCH_BUFFER_EVENTS);
        self.live.lock().insert(
            id.clone(),
            LiveTask {
                node_id: conn.node_id.clone(),
                node_name: conn.name.clone(),
                timeout,
                events: tx,
                stdout: Vec::new(),
                stderr: Vec::new(),
                truncated: false,
                last_seq: None,
                dispatched: tokio::time::Instant::now(),
            },
        );
        let dispatch = Dispatch {
            id: id.clone(),
            argv: spec.argv,
            cwd: spec.cwd,
            env: spec.env,
            timeout,
            output_cap: spec.output_cap.unwrap_or(DEFAULT_OUTPUT_CAP),
        };
        if !conn.send(ToNode::Dispatch(dispatch)) {
            let error = format!(
                "node {node_name:?} did not accept the task (its stream is closing or full)"
            );
            let end = self.end(&id, TaskStatus::Failed, None, Some(error));
            self.finish(end, 0).await?;
        } else {
            tracing::info!(task = %id, "task dispatched");
        }
        Ok((id, rx))
    }

    /// The live connection of the node called `node_name`. Connected nodes
    /// are found in memory; the store only explains why a node is not.
    async fn connection(&self, node_name: &str) -> Result<Arc<Connection>, Error> {
        let not_found = || Error::NotFound {
            what: format!("node {node_name:?}"),
        };
        let name = NodeName::parse(node_name).map_err(|_| not_found())?;
        if let Some(conn) = self.registry.by_name(&name).filter(|c| !c.is_closing()) {
            return Ok(conn);
        }
        let node = self
            .store
            .node_by_name(&name)
            .await?
            .ok_or_else(not_found)?;
        if node.revoked_at.is_some() {
            return Err(Error::Conflict(format!("node {node_name:?} was revoked")));
        }
        Err(Error::Unavailable(format!("node {node_name:?} is offline")))
    }

    /// Watches a task that is still live; `None` once it has finished.
    pub fn watch(&self, id: &TaskId) -> Option<broadcast::Receiver<TaskEvent>> {
        Some(self.live.lock().get(id)?.events.subscribe())
    }

    fn owned_by(&self, node: &NodeId, id: &TaskId) -> bool {
        let owned = self.live.lock().get(id).is_some_and(|t| &t.node_id == node);
        if !owned {
            tracing::warn!(node_id = %node, task = %id, "node reported on a task it was not given; ignored");
        }
        owned
    }

    pub async fn on_started(&self, node: &NodeId, id: &TaskId, pid: u32) -> Result<(), Error> {
        if !self.owned_by(node, id) {
            return Ok(());
        }
        self.store.mark_task_running(id, self.clock.now()).await?;
        if let Some(t) = self.live.lock().get(id) {
            t.tell(TaskEvent::Started { pid });
        }
        Ok(())
    }

    pub fn on_output(
        &self,
        node: &NodeId,
        id: &TaskId,
        seq: u64,
        stream: OutputStream,
        mut data: Vec<u8>,
    ) {
        let mut live = self.live.lock();
        let Some(t) = live.get_mut(id).filter(|t| &t.node_id == node) else {
            drop(live);
            self.owned_by(node, id);
            return;
        };
        if t.last_seq.is_some_and(|last| seq <= last) {
            tracing::warn!(task = %id, seq, "output out of order or repeated; ignored");
            return;
        }
        t.last_seq = Some(seq);
        if data.len() > MAX_OUTPUT_CHUNK {
            tracing::warn!(task = %id, seq, bytes = data.len(), "output chunk larger than {MAX_OUTPUT_CHUNK} bytes; the rest is dropped");
            data.truncate(MAX_OUTPUT_CHUNK);
            t.truncated = true;
        }
        t.keep(stream, &data);
        t.tell(TaskEvent::Output {
            seq,
            stream,
            data: data.into(),
        });
    }

    pub async fn on_finished(
        &self,
        node: &NodeId,
        id: &TaskId,
        report: NodeReport,
    ) -> Result<(), Error> {
        let (status, exit_code, error) = match report.end {
            NodeEnd::Exited(0) => (TaskStatus::Succeeded, Some(0), None),
            NodeEnd::Exited(c) => (TaskStatus::Failed, Some(c), None),
            NodeEnd::Signaled(s) => (
                TaskStatus::Failed,
                Some(128 + s),
                Some(format!("killed by signal {s}")),
            ),
            NodeEnd::TimedOut => {
                let t = self.live.lock().get(id).map(|t| t.timeout);
                let after = t
                    .map(|t| format!(" after {}", ganglion_core::time::format_duration(t)))
                    .unwrap_or_default();
                (
                    TaskStatus::Failed,
                    Some(124),
                    Some(format!("timed out{after}; its process group was killed")),
                )
            }
            NodeEnd::Cancelled => (
                TaskStatus::Cancelled,
                None,
                Some("cancelled; its process group was killed".into()),
            ),
            NodeEnd::Refused { exit_code, error } => {
                (TaskStatus::Failed, Some(exit_code), Some(error))
            }
        };
        // A "late" result for a task still live here is an ordinary one (the
        // hub never failed it); a late result only settles a task its sender owns.
        let live = self.live.lock().get(id).map(|t| &t.node_id == node);
        if report.late && live.is_none() {
            let owner = self.store.get_task(id).await?.map(|t| t.node_id);
            if owner.as_ref() != Some(node) {
                tracing::warn!(node_id = %node, task = %id, "late result for a task the node was not given; ignored");
                return Ok(());
            }
            let end = TaskEnd {
                id: id.clone(),
                status,
                exit_code,
                error,
                output: None,
                late: true,
                lost: false,
                at: self.clock.now(),
            };
            match self.store.finish_task(&end).await.map(|e| e.applied) {
                Ok(EndApplied::LateResult) => {
                    tracing::info!(task = %id, status = status.as_str(), "late result recorded")
                }
                Ok(_) => {
                    tracing::info!(task = %id, "late result for a task already settled; ignored")
                }
                Err(ganglion_store::Error::NotFound { .. }) => {
                    tracing::warn!(node_id = %node, task = %id, "late result for an unknown task; ignored")
                }
                Err(e) => return Err(e.into()),
            }
            return Ok(());
        }
        if !self.owned_by(node, id) {
            return Ok(());
        }
        if let Some(t) = self.live.lock().get_mut(id) {
            t.truncated |= report.output_truncated;
        }
        let end = self.end(id, status, exit_code, error);
        self.finish(end, report.output_bytes).await
    }

    fn end(
        &self,
        id: &TaskId,
        status: TaskStatus,
        exit_code: Option<i32>,
        error: Option<String>,
    ) -> TaskEnd {
        TaskEnd {
            id: id.clone(),
            status,
            exit_code,
            error,
            output: None,
            late: false,
            lost: false,
            at: self.clock.now(),
        }
    }

    /// Journals a live task's end (with its stored output), then settles it.
    async fn finish(&self, mut end: TaskEnd, output_bytes: u64) -> Result<(), Error> {
        let id = end.id.clone();
        end.output = self.live.lock().get(&id).map(|t| StoredOutput {
            stdout: t.stdout.clone(),
            stderr: t.stderr.clone(),
            bytes: output_bytes,
            truncated: t.truncated,
        });
        let ended = self.store.finish_task(&end).await?;
        self.settle(&id, ended.record);
        Ok(())
    }

    /// Removes a task from the live set and tells its watchers its final record.
    fn settle(&self, id: &TaskId, record: TaskRecord) {
        let task = self.live.lock().remove(id);
        if let Some(task) = task {
            tracing::info!(task = %id, node = %task.node_name, status = record.status.as_str(), exit_code = ?record.exit_code, "task finished");
            task.tell(TaskEvent::Finished(Box::new(record)));
        }
    }

    /// Fails every unfinished task of a node whose stream ended, with a diagnostic.
    /// Fails every live task whose lease ran out (its node, though connected,
    /// never reported an end), and asks the node to kill it. Returns how many.
    pub async fn expire_leases(&self, now: tokio::time::Instant) -> Result<usize, Error> {
        let expired: Vec<(TaskId, NodeId, Duration)> = self
            .live
            .lock()
            .iter()
            .filter(|(_, t)| {
                now.duration_since(t.dispatched) > t.timeout.saturating_add(LEASE_GRACE)
            })
            .map(|(id, t)| (id.clone(), t.node_id.clone(), t.timeout))
            .collect();
        for (id, node, timeout) in &expired {
            if let Some(conn) = self.registry.get(node) {
                conn.send(ToNode::Cancel(id.clone()));
            }
            let error = format!(
                "lease expired: no result from the node within its timeout ({}) plus {} s",
                ganglion_core::time::format_duration(*timeout),
                LEASE_GRACE.as_secs()
            );
            tracing::warn!(task = %id, "task lease expired");
            let end = TaskEnd {
                lost: true,
                ..self.end(id, TaskStatus::Failed, None, Some(error))
            };
            self.finish(end, 0).await?;
        }
        Ok(expired.len())
    }

    pub async fn on_node_lost(
        &self,
        node: &NodeId,
        cause: &str,
        last_heartbeat: Timestamp,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let silent = now.since(last_heartbeat).as_secs();
        let ids: Vec<(TaskId, Option<u64>)> = self
            .live
            .lock()
            .iter()
            .filter(|(_, t)| &t.node_id == node)
            .map(|(id, t)| (id.clone(), t.last_seq))
            .collect();
        let ends = ids.into_iter().map(|(id, last_seq)| {
            let seq = last_seq
                .map(|s| s.to_string())
                .unwrap_or_else(|| "none".into());
            let error = format!(
                "node lost: {cause}; last heartbeat {silent} s ago; last output seq {seq}; \
                 the process may still be running on the node (it is killed there if the node \
                 cannot reconnect within {} s)",
                NODE_GRACE.as_secs()
            );
            let end = TaskEnd {
                lost: true,
                ..self.end(&id, TaskStatus::Failed, None, Some(error))
            };
            self.finish(end, 0)
        });
        // All at once: the journal commits them together.
        futures::future::try_join_all(ends).await?;
        // Tasks journaled but not live (e.g. from before a hub restart).
        let generic = format!("node lost: {cause}; last heartbeat {silent} s ago");
        self.store
            .fail_unfinished_tasks(Some(node), &generic, now)
            .await?;
        Ok(())
    }

    /// Asks the node to cancel a task. The task becomes `cancelled` when the
    /// node confirms that its process group is gone.
    pub async fn cancel(&self, id: &str) -> Result<TaskRecord, Error> {
        let tid = TaskId::from_string(id).ok_or_else(|| Error::NotFound {
            what: format!("task {id:?}"),
        })?;
        let record = self
            .store
            .get_task(&tid)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("task {id:?}"),
            })?;
        if record.status.is_final() {
            return Err(Error::Conflict(format!(
                "task {id} already finished ({})",
                record.status.as_str()
            )));
        }
        let conn = self.registry.get(&record.node_id).ok_or_else(|| {
            Error::Unavailable(format!("node {:?} is offline", record.node_name.as_str()))
        })?;
        if !conn.send(ToNode::Cancel(tid.clone())) {
            return Err(Error::Unavailable(
                "the node's stream is closing or full".into(),
            ));
        }
        tracing::info!(task = %tid, "cancel sent");
        Ok(record)
    }

    pub async fn get(&self, id: &str) -> Result<TaskRecord, Error> {
        let tid = TaskId::from_string(id).ok_or_else(|| Error::NotFound {
            what: format!("task {id:?}"),
        })?;
        self.store
            .get_task(&tid)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("task {id:?}"),
            })
    }

    pub async fn list(
        &self,
        node: Option<&str>,
        status: Option<TaskStatus>,
    ) -> Result<Vec<TaskRecord>, Error> {
        let node_id = match node {
            None => None,
            Some(n) => {
                let name = NodeName::parse(n).map_err(|_| Error::NotFound {
                    what: format!("node {n:?}"),
                })?;
                let rec = self.store.node_by_name(&name).await?;
                Some(
                    rec.ok_or_else(|| Error::NotFound {
                        what: format!("node {n:?}"),
                    })?
                    .id,
                )
            }
        };
        Ok(self
            .store
            .list_tasks(&TaskFilter {
                node_id,
                status,
                limit: None,
            })
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use ganglion_core::time::ManualClock;
    use ganglion_store::SqliteStore;

    use super::*;
    use crate::metrics::Metrics;

    async fn node(store: &SqliteStore, name: &str) -> NodeId {
        crate::test_support::joined_node(store, name).await.id
    }

    fn report(end: NodeEnd, late: bool) -> NodeReport {
        NodeReport {
            end,
            output_bytes: 3,
            output_truncated: false,
            late,
        }
    }

    /// Output, starts and results for tasks a node was never given (another
    /// node's, or unknown ids, late or not) change nothing and reach no watcher.
    #[tokio::test]
    async fn reports_for_tasks_a_node_was_not_given_are_ignored() {
        let store = Arc::new(SqliteStore::in_memory().await.unwrap());
        let (a, b) = (node(&store, "a").await, node(&store, "b").await);
        let registry = Registry::new(Metrics::default());
        let clock: SharedClock = Arc::new(ManualClock::new(Timestamp(1_000)));
        let tasks = Tasks::new(store.clone(), registry.clone(), clock.clone());
        let na = NodeName::parse("a").unwrap();
        let _conn_a = registry.register(a.clone(), na, None, Timestamp(0));
        let spec = TaskSpec {
            argv: vec!["true".into()],
            cwd: None,
            env: Vec::new(),
            timeout: None,
            output_cap: None,
        };
        let (id, mut rx) = tasks.submit("a", spec).await.unwrap();

        // Node b reports on a's task; then both report on a task that does not exist.
        let unknown = TaskId::generate();
        for (node, task) in [(&b, &id), (&a, &unknown), (&b, &unknown)] {
            tasks.on_started(node, task, 42).await.unwrap();
            tasks.on_output(node, task, 0, OutputStream::Stdout, b"bad".to_vec());
            tasks
                .on_finished(node, task, report(NodeEnd::Exited(0), false))
                .await
                .unwrap();
            tasks
                .on_finished(node, task, report(NodeEnd::Exited(0), true))
                .await
                .unwrap();
        }
        assert!(rx.try_recv().is_err(), "a watcher saw a foreign report");
        let rec = store.get_task(&id).await.unwrap().unwrap();
        assert_eq!(rec.status, TaskStatus::Pending);
        assert!(rec.stdout.is_empty());
        assert_eq!(tasks.live_count(), 1);
        assert!(store.get_task(&unknown).await.unwrap().is_none());

        // The owner's reports still count; a result it marks late for a task
        // the hub never failed settles it as usual.
        tasks.on_started(&a, &id, 7).await.unwrap();
        tasks.on_output(&a, &id, 0, OutputStream::Stdout, b"ok\n".to_vec());
        tasks
            .on_finished(&a, &id, report(NodeEnd::Exited(0), true))
            .await
            .unwrap();
        let rec = store.get_task(&id).await.unwrap().unwrap();
        assert_eq!(rec.status, TaskStatus::Succeeded);
        assert_eq!(rec.stdout, b"ok\n");
        assert_eq!(tasks.live_count(), 0);
        assert!(matches!(rx.try_recv(), Ok(TaskEvent::Started { pid: 7 })));
        assert!(matches!(
            rx.try_recv(),
            Ok(TaskEvent::Output { seq: 0, .. })
        ));
        assert!(matches!(rx.try_recv(), Ok(TaskEvent::Finished(_))));
    }
}
