//! Runs the tasks the hub dispatches, in the node's sandbox, and reports
//! their events. Tasks outlive control connections: a result that could not be
//! reported is sent after the next connect (a late result), and tasks the node
//! cannot report for longer than a grace period are killed.
//!
//! Events reach the runtime through [`RunnerEvents`]: each task has its own
//! bounded channel (its start, its output, its end, in that order), so a task
//! that writes faster than the hub takes its output waits on its pipe, as a
//! pipe makes any writer wait, instead of growing the node's memory; and the
//! events of other tasks (a refusal, another task's end) never queue behind
//! it. Whatever the task writes, the node holds at most [`TASK_EVENTS`]
//! chunks of it here, plus the sandbox's own bounded buffer.

use std::collections::HashMap;
use std::sync::Arc;

use ganglion_core::{
    Dispatch, NodeEnd, NodeReport, OutputStream, Policy, TaskId, TaskToHub, TaskToNode,
};
use ganglion_sandbox::{Canceller, RunningTask, Sandbox, Status, Stream, TaskSpec};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::ReceiverStream;

/// Events of one task queued between its output reader and the runtime: one
/// chunk of output (up to 64 KiB) each, or its start or end.
pub const TASK_EVENTS: usize = 4;

/// What the runner tells the hub, tagged with the control connection the task
/// was dispatched in (a result reported in a later connection is late).
#[derive(Clone, Debug)]
pub enum RunnerEvent {
    Started {
        id: String,
        pid: u32,
        connection: u64,
    },
    Output {
        id: String,
        seq: u64,
        stderr: bool,
        data: Vec<u8>,
        connection: u64,
    },
    Finished {
        id: String,
        end: NodeEnd,
        output_bytes: u64,
        output_truncated: bool,
        connection: u64,
    },
}

/// What the runner hands the runtime outside a task's own channel.
enum Control {
    /// An event of no running task's channel (a refusal, a simulated task).
    Event(RunnerEvent),
    /// A started task's channel.
    Task(mpsc::Receiver<RunnerEvent>),
}

/// The runner's events, as the runtime reads them (see the module docs).
pub struct RunnerEvents {
    control: mpsc::UnboundedReceiver<Control>,
    control_open: bool,
    tasks: StreamMap<u64, ReceiverStream<RunnerEvent>>,
    next_key: u64,
}

impl RunnerEvents {
    /// The next event: a refusal or a task's start as soon as there is one,
    /// else the next event of any task (in turn, each task's in order).
    /// `None` once the runner is gone and every task's channel is drained.
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<RunnerEvent> {
        loop {
            tokio::select! {
                biased;
                c = self.control.recv(), if self.control_open => match c {
                    Some(Control::Event(e)) => return Some(e),
                    Some(Control::Task(rx)) => {
                        self.next_key += 1;
                        self.tasks.insert(self.next_key, ReceiverStream::new(rx));
                    }
                    None => self.control_open = false,
                },
                Some((_, e)) = self.tasks.next(), if !self.tasks.is_empty() => return Some(e),
                else => return None,
            }
        }
    }
}

/// How a node runs the tasks it is given.
#[allow(clippy::large_enum_variant, reason = "made once per node")]
pub enum Executor {
    /// Refuses every task (exit 126): a node that only mirrors.
    Refuse,
    /// Runs tasks in the sandbox under the node's policy.
    Sandbox(Sandbox),
    /// Reports every task started and exited 0 without running anything: the
    /// simulated nodes of `ganglion bench tasks --simulated`, which measure
    /// the hub and its journal rather than fork/exec on the bench machine.
    Simulated,
}

enum Exec {
    Refuse,
    Sandbox(Arc<Sandbox>),
    Simulated,
}

/// An error with its causes (`sandbox setup failed: create the task temp
/// dir: Permission denied (os error 13)`): the operator reads the refusal
/// far from the node's logs.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

pub struct TaskRunner {
    exec: Exec,
    node_name: String,
    events: mpsc::UnboundedSender<Control>,
    running: Mutex<HashMap<String, Canceller>>,
}

impl TaskRunner {
    pub fn new(executor: Executor, node_name: String) -> (Arc<Self>, RunnerEvents) {
        let (events, control) = mpsc::unbounded_channel();
        let exec = match executor {
            Executor::Refuse => Exec::Refuse,
            Executor::Sandbox(s) => Exec::Sandbox(Arc::new(s)),
            Executor::Simulated => Exec::Simulated,
        };
        let runner = Self {
            exec,
            node_name,
            events,
            running: Mutex::default(),
        };
        let events = RunnerEvents {
            control,
            control_open: true,
            tasks: StreamMap::new(),
            next_key: 0,
        };
        (Arc::new(runner), events)
    }

    pub fn running(&self) -> usize {
        self.running.lock().len()
    }

    /// Handles the hub's task message (the task subsystem of the control
    /// stream), dispatched in connection number `connection`.
    pub fn on_message(self: &Arc<Self>, msg: TaskToNode, policy: &Policy, connection: u64) {
        match msg {
            TaskToNode::Dispatch(d) => self.start(*d, policy, connection),
            TaskToNode::Cancel(id) => self.cancel(id.as_str()),
        }
    }

    /// Reports a task as refused without running it.
    pub fn refuse(&self, id: String, connection: u64, exit_code: i32, error: String) {
        let end = NodeEnd::Refused { exit_code, error };
        let _ = self.events.send(Control::Event(RunnerEvent::Finished {
            id,
            end,
            output_bytes: 0,
            output_truncated: false,
            connection,
        }));
    }

    /// Starts a task under `policy`; refusals are reported as a finished task.
    pub fn start(self: &Arc<Self>, d: Dispatch, policy: &Policy, connection: u64) {
        let id = d.id.to_string();
        let sandbox = match &self.exec {
            Exec::Sandbox(s) => s,
            Exec::Refuse => {
                let error = format!("node {:?} does not run tasks", self.node_name);
                return self.refuse(id, connection, 126, error);
            }
            Exec::Simulated => return self.simulate(id, connection),
        };
        if self.running.lock().contains_key(&id) {
            tracing::warn!(task = %id, "task dispatched twice; ignored");
            return;
        }
        let spec = TaskSpec {
            argv: d.argv,
            cwd: d.cwd,
            env: d.env,
            timeout: d.timeout,
            output_cap: d.output_cap,
        };
        let task = match sandbox.start(spec, policy) {
            Ok(t) => t,
            Err(e) => {
                let error = self.refusal_text(&e);
                tracing::info!(task = %id, %error, "task refused");
                return self.refuse(id, connection, e.exit_code(), error);
            }
        };
        let pid = task.pid();
        tracing::info!(task = %id, pid, "task started");
        self.running.lock().insert(id.clone(), task.canceller());
        let (events, rx) = mpsc::channel(TASK_EVENTS);
        let started = RunnerEvent::Started {
            id: id.clone(),
            pid,
            connection,
        };
        events.try_send(started).expect("a new channel has room");
        let _ = self.events.send(Control::Task(rx));
        tokio::spawn(self.clone().supervise(id, task, events, connection));
    }

    /// Why the sandbox refused a task, naming this node.
    fn refusal_text(&self, e: &ganglion_sandbox::Error) -> String {
        let text = with_causes(e);
        if text.contains("strict policy") {
            format!("{text} of node {:?}", self.node_name)
        } else {
            format!("node {:?}: {text}", self.node_name)
        }
    }

    /// Forwards a started task's output to its channel, then its end.
    async fn supervise(
        self: Arc<Self>,
        id: String,
        mut task: RunningTask,
        events: mpsc::Sender<RunnerEvent>,
        connection: u64,
    ) {
        if let Some(mut output) = task.take_output() {
            // Waits while the task's channel is full: the sandbox's buffer
            // fills behind it, then the task's pipe.
            while let Some(chunk) = output.recv().await {
                let stderr = chunk.stream == Stream::Stderr;
                let ev = RunnerEvent::Output {
                    id: id.clone(),
                    seq: chunk.seq,
                    stderr,
                    data: chunk.data,
                    connection,
                };
                if events.send(ev).await.is_err() {
                    break;
                }
            }
        }
        let outcome = task.wait().await;
        self.running.lock().remove(&id);
        let end = match outcome.status {
            Status::Exited(c) => NodeEnd::Exited(c),
            Status::Signaled(s) => NodeEnd::Signaled(s),
            Status::TimedOut => NodeEnd::TimedOut,
            Status::Cancelled => NodeEnd::Cancelled,
        };
        tracing::info!(task = %id, end = ?end, "task finished");
        let finished = RunnerEvent::Finished {
            id,
            end,
            output_bytes: outcome.output_bytes,
            output_truncated: outcome.output_truncated,
            connection,
        };
        let _ = events.send(finished).await;
    }

    fn simulate(&self, id: String, connection: u64) {
        let started = RunnerEvent::Started {
            id: id.clone(),
            pid: 0,
            connection,
        };
        let _ = self.events.send(Control::Event(started));
        let _ = self.events.send(Control::Event(RunnerEvent::Finished {
            id,
            end: NodeEnd::Exited(0),
            output_bytes: 0,
            output_truncated: false,
            connection,
        }));
    }

    /// Cancels a task (TERM, grace, KILL to its group); its end is reported as usual.
    pub fn cancel(&self, id: &str) {
        let canceller = self.running.lock().get(id).cloned();
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

/// The message for a runner event in connection number `current`, or `None`
/// for live events (start, output) of an earlier connection: the hub has
/// already failed those tasks and only their result is still worth sending
/// (as late).
pub fn update(event: RunnerEvent, current: u64) -> Option<TaskToHub> {
    let id = |id: String| {
        let parsed = TaskId::from_string(id.as_str());
        if parsed.is_none() {
            tracing::warn!(task = %id, "event of a task with an invalid id dropped");
        }
        parsed
    };
    Some(match event {
        RunnerEvent::Started {
            id: i,
            pid,
            connection,
        } if connection == current => TaskToHub::Started { id: id(i)?, pid },
        RunnerEvent::Output {
            id: i,
            seq,
            stderr,
            data,
            connection,
        } if connection == current => TaskToHub::Output {
            id: id(i)?,
            seq,
            stream: if stderr {
                OutputStream::Stderr
            } else {
                OutputStream::Stdout
            },
            data,
        },
        RunnerEvent::Started { .. } | RunnerEvent::Output { .. } => return None,
        RunnerEvent::Finished {
            id: i,
            end,
            output_bytes,
            output_truncated,
            connection,
        } => TaskToHub::Finished {
            id: id(i)?,
            report: NodeReport {
                end,
                output_bytes,
                output_truncated,
                late: connection != current,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_their_causes() {
        let e = ganglion_sandbox::Error::Setup {
            what: "create the task temp dir",
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(
            with_causes(&e),
            "sandbox setup failed: create the task temp dir: Permission denied (os error 13)"
        );
    }
}
