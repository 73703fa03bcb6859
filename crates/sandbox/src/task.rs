//! A started task: its output stream, cancel, timeout, and the cleanup after it.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use crate::cgroup::TaskCgroup;
use crate::child::kill;

/// Largest chunk read from a pipe at once.
const CHUNK: usize = 64 * 1024;
/// Chunks buffered between the task and the reader of its output: at most
/// `CHANNEL * CHUNK` bytes are held, whatever the task writes.
const CHANNEL: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Output as the task produced it (not split into lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: Stream,
    /// One sequence across both streams, from 0.
    pub seq: u64,
    pub data: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
    /// Killed at its wall-clock limit (callers report exit code 124).
    TimedOut,
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// Bytes the task wrote to stdout and stderr, including those dropped past the cap.
    pub output_bytes: u64,
    /// Some output was dropped because of the output cap.
    pub output_truncated: bool,
}

/// A running task. Dropping it cancels the task; read [`Self::take_output`]
/// while waiting, or the task blocks once the output buffer is full.
#[derive(Debug)]
pub struct RunningTask {
    pid: u32,
    output: Option<mpsc::Receiver<OutputChunk>>,
    canceller: Canceller,
}

/// Cancels a task from elsewhere (cheap to clone).
#[derive(Clone, Debug)]
pub struct Canceller {
    cancel: Arc<watch::Sender<bool>>,
    outcome: watch::Receiver<Option<Outcome>>,
}

impl Canceller {
    /// SIGTERM to the task's process group, SIGKILL after the grace period;
    /// returns once the task is reaped and cleaned up.
    pub async fn cancel(&self) -> Outcome {
        self.cancel.send_replace(true);
        self.outcome().await
    }

    async fn outcome(&self) -> Outcome {
        let mut rx = self.outcome.clone();
        let got = rx.wait_for(Option::is_some).await;
        match got {
            Ok(o) => o.clone().expect("wait_for returned a value that is Some"),
            // The supervisor always publishes before it ends; if it panicked, the
            // task is gone with it.
            Err(_) => Outcome {
                status: Status::Cancelled,
                output_bytes: 0,
                output_truncated: false,
            },
        }
    }
}

impl RunningTask {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The output receiver (once). Chunks arrive as produced; the channel ends
    /// when both pipes are closed.
    pub fn take_output(&mut self) -> Option<mpsc::Receiver<OutputChunk>> {
        self.output.take()
    }

    pub fn canceller(&self) -> Canceller {
        self.canceller.clone()
    }

    /// See [`Canceller::cancel`].
    pub async fn cancel(&self) -> Outcome {
        self.canceller.cancel().await
    }

    /// Waits until the task ended and was cleaned up. Output not taken with
    /// [`Self::take_output`] is discarded.
    pub async fn wait(&mut self) -> Outcome {
        self.output = None;
        self.canceller.outcome().await
    }
}

impl Drop for RunningTask {
    fn drop(&mut self) {
        if self.canceller.outcome.borrow().is_none() {
            self.canceller.cancel.send_replace(true);
        }
    }
}

pub(crate) struct Supervision {
    pub program: String,
    pub timeout: Option<Duration>,
    pub grace: Duration,
    pub output_cap: u64,
    pub cgroup: Option<TaskCgroup>,
    pub temp_dir: Option<PathBuf>,
}

pub(crate) fn launch(mut child: Child, sup: Supervision) -> RunningTask {
    let pid = child.id().unwrap_or_default();
    let (tx, rx) = mpsc::channel(CHANNEL);
    let sink = Arc::new(Mutex::new(Sink {
        tx: Some(tx),
        seq: 0,
        delivered: 0,
        produced: 0,
        cap: sup.output_cap,
        truncated: false,
    }));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, Stream::Stdout, sink.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, Stream::Stderr, sink.clone())));
    }
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let (outcome_tx, outcome_rx) = watch::channel(None);
    tokio::spawn(supervise(
        child,
        sup,
        cancel_rx,
        Pumps { tasks: pumps, sink },
        outcome_tx,
    ));
    RunningTask {
        pid,
        output: Some(rx),
        canceller: Canceller {
            cancel: Arc::new(cancel_tx),
            outcome: outcome_rx,
        },
    }
}

struct Sink {
    /// `None` once the receiver is gone: output is then drained and dropped.
    tx: Option<mpsc::Sender<OutputChunk>>,
    seq: u64,
    delivered: u64,
    produced: u64,
    cap: u64,
    truncated: bool,
}

async fn pump(mut pipe: impl AsyncRead + Unpin, stream: Stream, sink: Arc<Mutex<Sink>>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // The lock is held across the send so that seq order is channel order.
        let mut s = sink.lock().await;
        s.produced += n as u64;
        let take = (s.cap - s.delivered).min(n as u64) as usize;
        if take < n {
            s.truncated = true;
        }
        if take == 0 {
            continue;
        }
        let chunk = OutputChunk {
            stream,
            seq: s.seq,
            data: buf[..take].to_vec(),
        };
        s.seq += 1;
        s.delivered += take as u64;
        if let Some(tx) = &s.tx
            && tx.send(chunk).await.is_err()
        {
            s.tx = None;
        }
    }
}

/// The two pipe readers and what they share.
struct Pumps {
    tasks: Vec<JoinHandle<()>>,
    sink: Arc<Mutex<Sink>>,
}

enum Ended {
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    Cancelled,
}

async fn supervise(
    mut child: Child,
    mut sup: Supervision,
    mut cancel: watch::Receiver<bool>,
    pumps: Pumps,
    outcome_tx: watch::Sender<Option<Outcome>>,
) {
    let pid = child.id().unwrap_or_default();
    let pgid = pid as i32;
    let deadline = sup.timeout.map(|t| Instant::now() + t);
    let ended = tokio::select! {
        s = child.wait() => Ended::Exited(s),
        _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Ended::TimedOut,
        _ = cancel.wait_for(|c| *c) => Ended::Cancelled,
    };
    let status = match ended {
        Ended::Exited(s) => exit_status(s),
        Ended::TimedOut | Ended::Cancelled => {
            let why = if matches!(ended, Ended::TimedOut) {
                "timeout"
            } else {
                "cancel"
            };
            tracing::info!(pid, program = %sup.program, reason = why, "stopping task");
            sup.cgroup = terminate(&mut child, pgid, sup.grace, sup.cgroup.take()).await;
            if matches!(ended, Ended::TimedOut) {
                Status::TimedOut
            } else {
                Status::Cancelled
            }
        }
    };
    // Whatever the task left behind in its group or cgroup goes with it.
    kill(-pgid, libc::SIGKILL);
    if let Some(cg) = sup.cgroup.take() {
        let _ = tokio::task::spawn_blocking(move || cg.destroy()).await;
    }
    // Pipes close when the last holder is gone; bound the wait in case a
    // process escaped both the group and the cgroup.
    for mut p in pumps.tasks {
        if timeout(sup.grace, &mut p).await.is_err() {
            tracing::warn!(pid, program = %sup.program, "output still open after the task ended");
            p.abort();
        }
    }
    if let Some(dir) = sup.temp_dir.take() {
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }
    let s = pumps.sink.lock().await;
    let outcome = Outcome {
        status,
        output_bytes: s.produced,
        output_truncated: s.truncated,
    };
    drop(s);
    tracing::info!(pid, program = %sup.program, status = ?outcome.status, output_bytes = outcome.output_bytes, "task ended");
    outcome_tx.send_replace(Some(outcome));
}

/// SIGTERM to the group, up to `grace` for the leader to exit, then SIGKILL to
/// the group and the cgroup; returns once the leader is reaped.
async fn terminate(
    child: &mut Child,
    pgid: i32,
    grace: Duration,
    cgroup: Option<TaskCgroup>,
) -> Option<TaskCgroup> {
    kill(-pgid, libc::SIGTERM);
    let exited = timeout(grace, child.wait()).await.is_ok();
    kill(-pgid, libc::SIGKILL);
    let cgroup = match cgroup {
        Some(cg) => tokio::task::spawn_blocking(move || {
            cg.kill_all();
            cg
        })
        .await
        .ok(),
        None => None,
    };
    if !exited {
        let _ = child.wait().await;
    }
    cgroup
}

fn exit_status(s: std::io::Result<std::process::ExitStatus>) -> Status {
    match s {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Status::Exited(c),
            (None, Some(sig)) => Status::Signaled(sig),
            (None, None) => Status::Exited(-1),
        },
        Err(e) => {
            tracing::warn!(error = %e, "waiting for the task failed");
            Status::Exited(-1)
        }
    }
}
