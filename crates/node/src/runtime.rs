//! The node's main loop: fetch configuration, hold the control stream open,
//! heartbeat, apply policy updates live, and reconnect after any loss with a
//! capped, jittered backoff. Stops for good only when cancelled, revoked, or
//! refused by the hub.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ganglion_core::{Capabilities, Policy, RelPath, Secret};
use ganglion_proto::v1;
use ganglion_proto::v1::hub_message::Kind as In;
use ganglion_proto::v1::node_message::Kind as Out;
use ganglion_sandbox::{Sandbox, SandboxOptions};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::Error;
use crate::backoff::Backoff;
use crate::mirror::{Input as MirrorInput, MirrorLink, MirrorOptions, ToHub};
use crate::state::JoinedNode;
use crate::task_wire::{dispatch_from_wire, event_message};
use crate::tasks::{Executor, RunnerEvent, RunnerEvents, TaskRunner};
use crate::tls::{self, HubTarget};

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
    unconfirmed: Vec<(u64, v1::NodeMessage)>,
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

/// Maps a gRPC status from the hub to the node's view of it.
fn from_status(s: &Status) -> Error {
    match s.code() {
        Code::PermissionDenied => Error::Revoked,
        Code::Unauthenticated => Error::Unauthenticated(s.message().to_owned()),
        Code::AlreadyExists => Error::Duplicate(s.message().to_owned()),
        _ => Error::Hub(format!("{}: {}", s.code(), s.message())),
    }
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
        })
    }

    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle {
            status: self.status.subscribe(),
        }
    }

    /// Runs until cancelled (`Ok`) or until the hub refuses this node for good.
    #[tracing::instrument(skip_all, fields(node = %self.opts.state.name))]
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), Error> {
        // About three seconds of quick retries (a hub restart), then doubling.
        let mut backoff =
            Backoff::new(self.opts.backoff_base, self.opts.backoff_cap).with_flat_start(80);
        if let Some(m) = self.opts.mirror.clone() {
            self.mirror = Some(crate::mirror::start(m).await?);
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
            let result = self.connect_once(&cancel).await;
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
        if let Some(msg) = event_message(event, 0) {
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
        tokio::spawn(async move {
            let reconnected = status.wait_for(|s| s.connected);
            if tokio::time::timeout(grace, reconnected).await.is_err() {
                runner.cancel_all("the node could not reach the hub within the grace period");
            }
        });
    }

    async fn connect_once(&mut self, cancel: &CancellationToken) -> Result<ConnectionEnd, Error> {
        let target = HubTarget {
            addr: self.opts.state.hub_addr.clone(),
            cert_sha256: self.opts.state.cert_sha256.clone(),
            bind_ip: self.opts.bind_ip,
        };
        let channel = tokio::select! {
            c = tls::connect(&target) => c?,
            _ = cancel.cancelled() => return Ok(ConnectionEnd::Cancelled),
        };
        let mut client = crate::client::client(channel, &self.opts.credential);
        let config = client
            .sync_configuration(v1::SyncConfigurationRequest {})
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        if let Some(p) = config.policy {
            self.apply_policy(p);
        }
        let interval = Duration::from_millis(u64::from(config.heartbeat_interval_ms.max(100)));

        let (tx, rx) = mpsc::channel(64);
        let hello = v1::Hello {
            instance: self.instance.clone(),
            mirror: self.mirror.is_some(),
            capabilities: Some((&self.opts.capabilities).into()),
        };
        tx.send(v1::NodeMessage {
            kind: Some(Out::Hello(hello)),
        })
        .await
        .expect("receiver alive");
        let mut inbound = client
            .connect(ReceiverStream::new(rx))
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        self.status.send_modify(|s| {
            s.connected = true;
            s.connections += 1;
        });
        let connection = self.status.borrow().connections;
        tracing::info!(hub = %target.addr, "connected to the hub");

        // The hub forgets a node's unrecorded changes when it reconnects.
        let unrecorded = self
            .mirror
            .as_ref()
            .map_or(0, |m| m.stats.lock().unrecorded);
        if unrecorded > 0 {
            let msg = mirror_messages(vec![ToHub::Unrecorded(unrecorded)]);
            for m in msg {
                if tx.send(m).await.is_err() {
                    return Ok(ConnectionEnd::Closed("outbound stream closed".into()));
                }
            }
        }
        let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut seq = 0u64;
        for (_, mut msg) in std::mem::take(&mut self.unconfirmed) {
            if let Some(Out::TaskFinished(f)) = &mut msg.kind {
                f.late = true;
            }
            if tx.send(msg.clone()).await.is_err() {
                return Ok(ConnectionEnd::Closed("outbound stream closed".into()));
            }
            self.unconfirmed.push((seq, msg));
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(ConnectionEnd::Cancelled),
                _ = heartbeat.tick() => {
                    seq += 1;
                    let hb = v1::NodeMessage { kind: Some(Out::Heartbeat(v1::Heartbeat { seq })) };
                    if tx.send(hb).await.is_err() {
                        return Ok(ConnectionEnd::Closed("outbound stream closed".into()));
                    }
                }
                Some(queued) = next_notices(&mut self.mirror) => {
                    for msg in mirror_messages(queued) {
                        if tx.send(msg).await.is_err() {
                            return Ok(ConnectionEnd::Closed("outbound stream closed".into()));
                        }
                    }
                }
                Some(event) = self.events.recv() => {
                    if let Some(msg) = event_message(event, connection) {
                        if matches!(msg.kind, Some(Out::TaskFinished(_))) {
                            self.unconfirmed.push((seq, msg.clone()));
                        }
                        if tx.send(msg).await.is_err() {
                            return Ok(ConnectionEnd::Closed("outbound stream closed".into()));
                        }
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(v1::HubMessage { kind: Some(In::Welcome(w)) })) => {
                        tracing::debug!(node_id = %w.node_id, mirror_applied = w.mirror_applied, "welcomed");
                        let input = MirrorInput::Connected { hub_applied: w.mirror_applied, client: client.clone() };
                        self.to_mirror(input);
                    }
                    Ok(Some(v1::HubMessage { kind: Some(In::HeartbeatAck(ack)) })) => {
                        self.unconfirmed.retain(|(sent_at, _)| *sent_at >= ack.seq);
                    }
                    Ok(Some(v1::HubMessage { kind: Some(kind) })) => self.on_message(kind, connection)?,
                    Ok(Some(v1::HubMessage { kind: None })) => tracing::warn!("empty message from the hub ignored"),
                    Ok(None) => return Ok(ConnectionEnd::Closed("the hub closed the stream".into())),
                    Err(s) => {
                        let e = from_status(&s);
                        if e.is_fatal() { return Err(e); }
                        return Ok(ConnectionEnd::Closed(s.message().to_owned()));
                    }
                },
            }
        }
    }

    fn on_message(&self, msg: In, connection: u64) -> Result<(), Error> {
        match msg {
            In::Welcome(w) => tracing::debug!(node_id = %w.node_id, "welcomed"),
            In::HeartbeatAck(_) => {}
            In::PolicyUpdate(u) => {
                if let Some(p) = u.policy {
                    self.apply_policy(p);
                }
            }
            In::Revoked(r) => {
                tracing::error!(reason = %r.reason, "the hub revoked this node");
                return Err(Error::Revoked);
            }
            In::TaskDispatch(d) => {
                let policy = self.status.borrow().policy.clone();
                match dispatch_from_wire(d) {
                    Ok(d) => self.runner.start(d, &policy, connection),
                    Err((id, error)) => {
                        tracing::warn!(task = %id, %error, "invalid task refused");
                        self.runner.refuse(id, connection, 126, error);
                    }
                }
            }
            In::TaskCancel(c) => self.runner.cancel(&c.task_id),
            In::MirrorNeed(n) => self.need(n),
            In::MirrorNeeds(n) => n.needs.into_iter().for_each(|n| self.need(n)),
            In::MirrorAck(a) => self.to_mirror(MirrorInput::Ack(a.seq)),
        }
        Ok(())
    }

    fn need(&self, n: v1::MirrorNeed) {
        match need_from_wire(&n) {
            Some((path, hash)) => self.to_mirror(MirrorInput::Need { path, hash }),
            None => tracing::warn!(path = %n.path, "invalid mirror request from the hub ignored"),
        }
    }

    fn to_mirror(&self, input: MirrorInput) {
        if let Some(m) = &self.mirror {
            let _ = m.input.send(input);
        }
    }

    fn apply_policy(&self, wire: v1::Policy) {
        match Policy::try_from(wire) {
            Ok(p) => self.status.send_if_modified(|s| {
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
            }),
            // An invalid policy never loosens anything: keep the current one.
            Err(e) => {
                tracing::error!(error = %e, "ignoring an invalid policy from the hub");
                false
            }
        };
    }
}

/// A content request from the hub, if its path can name something in the
/// workspace: a path that climbs out, is absolute, or passes the bounds of a
/// [`RelPath`] never reaches the mirror worker (which reads only below the
/// workspace root, never through a link).
fn need_from_wire(n: &v1::MirrorNeed) -> Option<(RelPath, ganglion_mirror::ContentHash)> {
    Some((RelPath::parse(&n.path).ok()?, n.hash.parse().ok()?))
}

/// Notices queued at once travel in one message, up to this many.
const NOTICES_PER_MESSAGE: usize = 1024;

/// The next mirror messages to send: the next one and what queued behind it;
/// never resolves when there is no mirror.
async fn next_notices(mirror: &mut Option<MirrorLink>) -> Option<Vec<ToHub>> {
    let Some(m) = mirror else {
        return std::future::pending().await;
    };
    let mut notices = Vec::new();
    if m.notices.recv_many(&mut notices, NOTICES_PER_MESSAGE).await == 0 {
        return None;
    }
    Some(notices)
}

/// The wire messages for queued mirror messages, in order: notices in a row
/// travel in one message.
fn mirror_messages(queued: Vec<ToHub>) -> Vec<v1::NodeMessage> {
    let mut out = Vec::new();
    let mut notices = Vec::new();
    let flush = |notices: &mut Vec<v1::MirrorNotice>, out: &mut Vec<v1::NodeMessage>| {
        if !notices.is_empty() {
            let notices = std::mem::take(notices);
            out.push(v1::NodeMessage {
                kind: Some(Out::MirrorNotices(v1::MirrorNotices { notices })),
            });
        }
    };
    for q in queued {
        match q {
            ToHub::Notice(n) => notices.push(n),
            ToHub::Unrecorded(unrecorded) => {
                flush(&mut notices, &mut out);
                out.push(v1::NodeMessage {
                    kind: Some(Out::MirrorBacklog(v1::MirrorBacklog { unrecorded })),
                });
            }
        }
    }
    flush(&mut notices, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_mirror_request_never_reaches_the_mirror() {
        let hash = ganglion_mirror::ContentHash::of(b"x").to_string();
        let need = |path: &str| v1::MirrorNeed {
            path: path.into(),
            hash: hash.clone(),
        };
        assert!(need_from_wire(&need("src/a.rs")).is_some());
        let too_deep = vec!["d"; ganglion_core::relpath::MAX_DEPTH + 1].join("/");
        let too_long = vec!["x".repeat(200); 21].join("/");
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "",
            "a//b",
            "a\\..\\x",
            too_deep.as_str(),
            too_long.as_str(),
        ] {
            assert_eq!(need_from_wire(&need(bad)), None, "{bad:?}");
        }
        let bad_hash = v1::MirrorNeed {
            path: "a".into(),
            hash: "md5:00".into(),
        };
        assert_eq!(need_from_wire(&bad_hash), None);
    }
}
