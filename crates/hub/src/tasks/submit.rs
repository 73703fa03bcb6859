//! Submitting a task: checked, journaled as pending, then sent to its
//! node; and asking a node to cancel one.

use std::sync::Arc;

use ganglion_core::limit::{MAX_COMMAND_BYTES, command_bytes};
use ganglion_core::{Dispatch, NodeName, TaskId};
use ganglion_store::{NewTask, TaskRecord, TaskStatus};
use tokio::sync::broadcast;

use super::live::LiveTask;
use super::{
    DEFAULT_OUTPUT_CAP, DEFAULT_TIMEOUT, TaskEvent, TaskRequest, Tasks, WATCH_BUFFER_EVENTS,
};
use crate::registry::{Connection, ToNode};
use crate::{Error, limits};

fn validate(spec: &TaskRequest) -> Result<(), Error> {
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
    let size = command_bytes(
        spec.argv.iter().map(String::as_str),
        spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
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
    /// Journals a task as pending, then sends it to its node. The returned
    /// receiver sees the task's events from the start.
    #[tracing::instrument(skip_all, fields(node = node_name))]
    pub async fn submit(
        &self,
        node_name: &str,
        spec: TaskRequest,
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
            timeout: Some(timeout),
            output_cap: spec.output_cap.unwrap_or(DEFAULT_OUTPUT_CAP),
        };
        if !conn.send(ToNode::dispatch(dispatch)) {
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
        if !conn.send(ToNode::cancel(tid.clone())) {
            return Err(Error::Unavailable(
                "the node's stream is closing or full".into(),
            ));
        }
        tracing::info!(task = %tid, "cancel sent");
        Ok(record)
    }
}
