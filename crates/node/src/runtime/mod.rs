//! The node's main loop: fetch configuration, hold the control stream open,
//! heartbeat, apply policy updates live, and reconnect after any loss with a
//! capped, jittered backoff. Stops for good only when cancelled, revoked, or
//! refused by the hub.
//!
//! - `connection`: one connection: configure, hello, then serve the stream.
//! - `route`: the control stream by subsystem (tasks, mirror, policy): each
//!   one's messages to its handler, each one's output to the stream.

mod connection;
mod route;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ganglion_core::{Capabilities, Policy, Secret, TaskToHub};
use ganglion_sandbox::{Sandbox, SandboxOptions};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::backoff::Backoff;
use crate::mirror::{Input as MirrorInput, MirrorLink, MirrorOptions};
use crate::state::JoinedNode;
use crate::supervise::Workers;
use crate::tasks::{Executor, RunnerEvent, RunnerEvents, TaskRunner, update};

/// How the node runs tasks (see [`Executor`]).
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant, reason = "made once per node")]
pub enum ExecutorOptions {
    /// Refuse every task (benchmarks of idle nodes).
    Refuse,
    Sandbox(SandboxOptions),
    /// Report every task as exited 0 without running it (hub benchmarks).
    Simulated,
}

#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    pub state: JoinedNode,
    pub credential: Secret,
    pub capabilities: Capabilities,
    /// Local address to connect from (tests and benchmarks); any when `None`.
    pub bind_ip: Option<IpAddr>,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Where tasks run.
    pub executor: ExecutorOptions,
    /// How long tasks keep running while the node cannot report them.
    pub report_grace: Duration,
    /// Mirror the workspace to the hub; `None`: no mirror (benchmarks).
    pub mirror: Option<MirrorOptions>,
}

impl RuntimeOptions {
    pub fn new(state: JoinedNode, credential: Secret, capabilities: Capabilities) -> Self {
        Self {
            state,
            credential,
            capabilities,
            bind_ip: None,
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(30),
            executor: ExecutorOptions::Refuse,
            report_grace: Duration::from_secs(60),
            mirror: None,
        }
    }
}

/// What the node knows about its link to the hub, for callers and tests.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkStatus {
    pub connected: bool,
    pub policy: Policy,
    /// Completed connections (each successful connect counts one).
    pub connections: u64,
}

pub struct NodeRuntime {
    opts: RuntimeOptions,
    status: watch::Sender<LinkStatus>,
    runner: Arc<TaskRunner>,
    events: RunnerEvents,
    mirror: Option<MirrorLink>,
    /// A random id of this process, sent in the hello: the hub tells this
    /// process reconnecting from another one holding the same credential.
    instance: String,
    /// Task results sent but not yet known to have reached the hub, with the
    /// heartbeat number current when they were sent: a heartbeat ack with a
    /// larger number confirms them (the stream is ordered). Whatever is left
    /// when a connection dies is sent again, as late, in the next one.
    unconfirmed: Vec<(u64, TaskToHub)>,
    /// The node's loops besides this one; a panic in one stops the node.
    workers: Workers,
}

#[derive(Clone)]
pub struct RuntimeHandle {
    status: watch::Receiver<LinkStatus>,
}

impl RuntimeHandle {
    pub fn status(&self) -> LinkStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `f`.
    pub async fn wait_for(&mut self, f: impl Fn(&LinkStatus) -> bool) -> LinkStatus {
        let found = self.status.wait_for(|s| f(s)).await.map(|s| s.clone());
        found.unwrap_or_else(|_| self.status.borrow().clone())
    }
}

enum ConnectionEnd {
    Cancelled,
    Closed(String),
}

/// First retry after the hub refused a connection because another running
/// process holds the credential, and the longest wait between retries.
const DUPLICATE_RETRY: Duration = Duration::from_secs(10);
const DUPLICATE_RETRY_CAP: Duration = Duration::from_secs(120);

/// A random id for this node process (128 bits, hex).
fn new_instance_id() -> String {
    use rand::Rng;
    format!("{:032x}", rand::rng().random::<u128>())
}

impl NodeRuntime {
    pub fn new(mut opts: RuntimeOptions) -> Result<Self, Error> {
        let (status, _) = watch::channel(LinkStatus {
            connected: false,
            policy: Policy::strict(),
            connections: 0,
        });
        let executor = match &opts.executor {
            ExecutorOptions::Refuse => Executor::Refuse,
            ExecutorOptions::Sandbox(o) => {
                let sandbox =
                    Sandbox::new(o.clone()).map_err(|e| Error::Hub(format!("sandbox: {e}")))?;
                // What this sandbox adds to the kernel's protections (e.g.
                // unprivileged tasks where the workspace can be idmapped).
                let protections = &mut opts.capabilities.protections;
                for p in sandbox.protections() {
                    if !protections.contains(&p) {
                        protections.push(p);
                    }
                }
                Executor::Sandbox(sandbox)
            }
            ExecutorOptions::Simulated => Executor::Simulated,
        };
        let (runner, events) = TaskRunner::new(executor, opts.state.name.clone());
        Ok(Self {
            opts,
            status,
            runner,
            events,
            mirror: None,
            instance: new_instance_id(),
            unconfirmed: Vec::new(),
            workers: Workers::default(),
        })
    }

    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle {
            status: self.status.subscribe(),
        }
    }

    /// Runs until cancelled (`Ok`), until the hub refuses this node for
    /// good, or until one of the node's loops fails ([`Error::WorkerFailed`]:
    /// the process should exit non-zero and be started again).
    #[tracing::instrument(skip_all, fields(node = %self.opts.state.name))]
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), Error> {
        let workers = self.workers.clone();
        tokio::select! {
            result = self.serve(&cancel) => result,
            failure = workers.failed() => {
                tracing::error!(worker = failure.worker, error = %failure.error, "stopping: a node worker failed");
                Err(failure.into())
            }
        }
    }

    /// A loop of the node, run as a supervised worker (tests inject faults).
    #[cfg(test)]
    pub(crate) fn workers(&self) -> &Workers {
        &self.workers
    }

    async fn serve(&mut self, cancel: &CancellationToken) -> Result<(), Error> {
        // About three seconds of quick retries (a hub restart), then doubling.
        let mut backoff =
            Backoff::new(self.opts.backoff_base, self.opts.backoff_cap).with_flat_start(80);
        if let Some(m) = self.opts.mirror.clone() {
            self.mirror = Some(crate::mirror::start(m, &self.workers).await?);
        }
        // Failed connects in a row: the first and every 20th are warnings,
        // the rest debug lines (quick retries would flood the log).
        let mut failures = 0u32;
        // Refusals because another process holds the credential: retried
        // slowly (the other may be a dying stream of this node's last run),
        // never quickly enough to matter to the process that holds it.
        let mut duplicate = Backoff::new(DUPLICATE_RETRY, DUPLICATE_RETRY_CAP);
        let mut refused = 0u32;
        loop {
            let started = Instant::now();
            let result = self.connect_once(cancel).await;
            self.status.send_modify(|s| s.connected = false);
            self.to_mirror(MirrorInput::Disconnected);
            self.watch_report_grace();
            let mut delay = None;
            match result {
                Ok(ConnectionEnd::Cancelled) => return Ok(()),
                Ok(ConnectionEnd::Closed(reason)) => {
                    failures = 0;
                    refused = 0;
                    duplicate.reset();
                    tracing::warn!(%reason, "control stream ended; reconnecting")
                }
                Err(e @ Error::Duplicate(_)) => {
                    refused += 1;
                    let wait = duplicate.next_delay();
                    if refused == 1 {
                        tracing::error!(error = %e, retry_in_s = wait.as_secs(), "another running node uses this node's credential (copied state dir?); this one stays offline and retries slowly");
                    } else {
                        tracing::debug!(error = %e, refused, "still refused; will retry");
                    }
                    delay = Some(wait);
                }
                Err(e) if e.is_fatal() => {
                    tracing::error!(error = %e, "stopping");
                    return Err(e);
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(error = %e, failures, "cannot reach the hub; will retry");
                    } else {
                        tracing::debug!(error = %e, failures, "cannot reach the hub; will retry");
                    }
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff.reset();
            }
            let delay = delay.unwrap_or_else(|| backoff.next_delay());
            tracing::debug!(
                delay_ms = delay.as_millis() as u64,
                "waiting before reconnecting"
            );
            // Tasks keep running meanwhile: their events are read (so none
            // waits on a pipe nobody reads) and their results kept.
            let wait = tokio::time::sleep(delay);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    _ = cancel.cancelled() => return Ok(()),
                    Some(event) = self.events.recv() => self.keep_result(event),
                }
            }
        }
    }

    /// Between connections: a task's result is kept for the next connection (sent
    /// as late); starts and output belong to a lost connection and are dropped
    /// (no connection is number 0).
    fn keep_result(&mut self, event: RunnerEvent) {
        if let Some(msg) = update(event, 0) {
            self.unconfirmed.push((0, msg));
        }
    }

    /// Kills running tasks if the node stays disconnected past the grace period.
    fn watch_report_grace(&self) {
        if self.runner.running() == 0 {
            return;
        }
        let runner = self.runner.clone();
        let grace = self.opts.report_grace;
        let mut status = self.status.subscribe();
        self.workers.spawn("report-grace", async move {
            let reconnected = status.wait_for(|s| s.connected);
            if tokio::time::timeout(grace, reconnected).await.is_err() {
                runner.cancel_all("the node could not reach the hub within the grace period");
            }
        });
    }

    fn apply_policy(&self, p: Policy) {
        self.status.send_if_modified(|s| {
            if s.policy == p {
                return false;
            }
            tracing::info!(
                mode = p.mode.as_str(),
                version = p.version,
                "policy applied"
            );
            s.policy = p;
            true
        });
    }
}
