//! The table of live tasks: what the hub holds for a task between its
//! dispatch and its end (its watchers' shared ring, the output it keeps for
//! the journal), and how a task leaves it: its end journaled, then told.

use std::time::Duration;

use ganglion_core::{NodeId, NodeName, TaskId};
use ganglion_store::{StoredOutput, TaskEnd, TaskRecord, TaskStatus};
use tokio::sync::broadcast;

use super::{OutputStream, STORED_OUTPUT_CAP, TaskEvent, Tasks};
use crate::Error;

pub(super) struct LiveTask {
    pub(super) node_id: NodeId,
    pub(super) node_name: NodeName,
    pub(super) timeout: Duration,
    /// The watchers' shared, bounded ring of events.
    pub(super) events: broadcast::Sender<TaskEvent>,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) truncated: bool,
    pub(super) last_seq: Option<u64>,
    /// When the task was dispatched; its lease runs out at
    /// `dispatched + timeout + LEASE_GRACE`.
    pub(super) dispatched: tokio::time::Instant,
}

impl LiveTask {
    pub(super) fn keep(&mut self, stream: OutputStream, data: &[u8]) {
        let room = STORED_OUTPUT_CAP.saturating_sub(self.stdout.len() + self.stderr.len());
        let take = data.len().min(room);
        let buf = match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        };
        buf.extend_from_slice(&data[..take]);
        self.truncated |= take < data.len();
    }

    pub(super) fn tell(&self, event: TaskEvent) {
        // An error only means nobody is watching.
        let _ = self.events.send(event);
    }
}

impl Tasks {
    /// Watches a task that is still live; `None` once it has finished.
    pub fn watch(&self, id: &TaskId) -> Option<broadcast::Receiver<TaskEvent>> {
        Some(self.live.lock().get(id)?.events.subscribe())
    }

    pub(super) fn owned_by(&self, node: &NodeId, id: &TaskId) -> bool {
        let owned = self.live.lock().get(id).is_some_and(|t| &t.node_id == node);
        if !owned {
            tracing::warn!(node_id = %node, task = %id, "node reported on a task it was not given; ignored");
        }
        owned
    }

    pub(super) fn end(
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
    pub(super) async fn finish(&self, mut end: TaskEnd, output_bytes: u64) -> Result<(), Error> {
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
    pub(super) fn settle(&self, id: &TaskId, record: TaskRecord) {
        let task = self.live.lock().remove(id);
        if let Some(task) = task {
            tracing::info!(task = %id, node = %task.node_name, status = record.status.as_str(), exit_code = ?record.exit_code, "task finished");
            task.tell(TaskEvent::Finished(Box::new(record)));
        }
    }
}
