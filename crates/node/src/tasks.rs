//! Runs the tasks the hub dispatches, in the node's sandbox, and reports
//! their events. Tasks outlive control sessions: a result that could not be
//! reported is sent after the next connect (a late result), and tasks the node
//! cannot report for longer than a grace period are killed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ganglion_core::{Policy, RelPath};
use ganglion_sandbox::{Canceller, Sandbox, Status, Stream, TaskSpec};
use tokio::sync::mpsc;

/// A task as the hub sent it (domain form).
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub id: String,
    pub argv: Vec<String>,
    pub cwd: Option<RelPath>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub output_cap: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum End {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    Cancelled,
    Refused { exit_code: i32, error: String },
}

/// What the runner tells the hub, tagged with the control session the task
/// was dispatched in (a result reported in a later session is late).
#[derive(Clone, Debug)]
pub enum RunnerEvent {
    Started {
        id: String,
        pid: u32,
        session: u64,
    },
    Output {
        id: String,
        seq: u64,
        stderr: bool,
        data: Vec<u8>,
        session: u64,
    },
    Finished {
        id: String,
        end: End,
        output_bytes: u64,
        output_truncated: bool,
        session: u64,
    },
}

pub struct TaskRunner {
    sandbox: Option<Arc<Sandbox>>,
    node_name: String,
    events: mpsc::UnboundedSender<RunnerEvent>,
    running: Mutex<HashMap<String, Canceller>>,
}

impl TaskRunner {
    /// A runner; without a sandbox the node refuses every task.
    pub fn new(
        sandbox: Option<Sandbox>,
        node_name: String,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<RunnerEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let runner = Self {
            sandbox: sandbox.map(Arc::new),
            node_name,
            events,
            running: Mutex::default(),
        };
        (Arc::new(runner), rx)
    }

    pub fn running(&self) -> usize {
        self.running.lock().expect("lock").len()
    }

    /// Reports a task as refused without running it.
    pub fn refuse(&self, id: String, session: u64, exit_code: i32, error: String) {
        let end = End::Refused { exit_code, error };
        let _ = self.events.send(RunnerEvent::Finished {
            id,
            end,
            output_bytes: 0,
            output_truncated: false,
            session,
        });
    }

    /// Starts a task under `policy`; refusals are reported as a finished task.
    pub fn start(self: &Arc<Self>, d: Dispatch, policy: &Policy, session: u64) {
        let Some(sandbox) = &self.sandbox else {
            let error = format!("node {:?} does not run tasks", self.node_name);
            return self.refuse(d.id, session, 126, error);
        };
        if self.running.lock().expect("lock").contains_key(&d.id) {
            tracing::warn!(task = %d.id, "task dispatched twice; ignored");
            return;
        }
        let spec = TaskSpec {
            argv: d.argv,
            cwd: d.cwd,
            env: d.env,
            timeout: d.timeout,
            output_cap: d.output_cap,
        };
        let mut task = match sandbox.start(spec, policy) {
            Ok(t) => t,
            Err(e) => {
                let text = e.to_string();
                let error = if text.contains("strict policy") {
                    format!("{text} of node {:?}", self.node_name)
                } else {
                    format!("node {:?}: {text}", self.node_name)
                };
                tracing::info!(task = %d.id, %error, "task refused");
                return self.refuse(d.id, session, e.exit_code(), error);
            }
        };
        let pid = task.pid();
        tracing::info!(task = %d.id, pid, "task started");
        self.running
            .lock()
            .expect("lock")
            .insert(d.id.clone(), task.canceller());
        let _ = self.events.send(RunnerEvent::Started {
            id: d.id.clone(),
            pid,
            session,
        });
        let runner = self.clone();
        tokio::spawn(async move {
            let id = d.id;
            if let Some(mut output) = task.take_output() {
                while let Some(chunk) = output.recv().await {
                    let stderr = chunk.stream == Stream::Stderr;
                    let ev = RunnerEvent::Output {
                        id: id.clone(),
                        seq: chunk.seq,
                        stderr,
                        data: chunk.data,
                        session,
                    };
                    let _ = runner.events.send(ev);
                }
            }
            let outcome = task.wait().await;
            runner.running.lock().expect("lock").remove(&id);
            let end = match outcome.status {
                Status::Exited(c) => End::Exited(c),
                Status::Signaled(s) => End::Signaled(s),
                Status::TimedOut => End::TimedOut,
                Status::Cancelled => End::Cancelled,
            };
            tracing::info!(task = %id, end = ?end, "task finished");
            let _ = runner.events.send(RunnerEvent::Finished {
                id,
                end,
                output_bytes: outcome.output_bytes,
                output_truncated: outcome.output_truncated,
                session,
            });
        });
    }

    /// Cancels a task (TERM, grace, KILL to its group); its end is reported as usual.
    pub fn cancel(&self, id: &str) {
        let canceller = self.running.lock().expect("lock").get(id).cloned();
        match canceller {
            Some(c) => {
                tracing::info!(task = %id, "cancelling");
                tokio::spawn(async move {
                    c.cancel().await;
                });
            }
            None => tracing::info!(task = %id, "cancel for a task not running here; ignored"),
        }
    }

    /// Cancels every running task: the node could not report them in time.
    pub fn cancel_all(&self, why: &str) {
        let all: Vec<(String, Canceller)> = self
            .running
            .lock()
            .expect("lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, c) in all {
            tracing::warn!(task = %id, why, "killing a task the node cannot report");
            tokio::spawn(async move {
                c.cancel().await;
            });
        }
    }
}
