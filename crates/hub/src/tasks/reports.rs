//! What nodes report on their tasks (started, output, finished, late
//! results), and what the hub does when they stop reporting: a lost node's
//! tasks fail at once, a task past its lease fails and is cancelled.

use std::time::Duration;

use ganglion_core::{NodeId, TaskId, TaskToHub, Timestamp};
use ganglion_store::{EndApplied, TaskEnd, TaskStatus};

use super::{
    LEASE_GRACE, MAX_OUTPUT_CHUNK, NODE_GRACE, NodeEnd, NodeReport, OutputStream, TaskEvent, Tasks,
};
use crate::Error;
use crate::registry::ToNode;

impl Tasks {
    /// Handles a node's task message from its control stream. Messages about
    /// tasks the node was never given are logged and ignored.
    pub async fn on_node_message(&self, node: &NodeId, msg: TaskToHub) -> Result<(), Error> {
        match msg {
            TaskToHub::Started { id, pid } => self.on_started(node, &id, pid).await,
            TaskToHub::Output {
                id,
                seq,
                stream,
                data,
            } => {
                self.on_output(node, &id, seq, stream, data);
                Ok(())
            }
            TaskToHub::Finished { id, report } => self.on_finished(node, &id, report).await,
        }
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
                conn.send(ToNode::cancel(id.clone()));
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

    /// Fails every unfinished task of a node whose stream ended, with a diagnostic.
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
}
