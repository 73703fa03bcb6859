//! One node's mirror at the hub: feeds the [`SinkEngine`] and performs its
//! actions. Ops accumulate while a commit is in flight and go in the next one
//! (group commit); an acknowledgement is persisted before it is sent.
//!
//! A driver starts from the index's [`Summary`] (applied sequence, files,
//! bytes: one row) and loads the entries in the background: until they are
//! in, it answers `Connected` and `Status` from the summary and holds every
//! event the engine needs, in order. So a hub restart answers a reconnecting
//! node at once, whatever the size of its mirror. A driver that stays idle
//! while its node is away closes itself (its directory handles and entries
//! go with it) and is opened again on next use.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use ganglion_core::time::SharedClock;
use ganglion_core::{NodeId, RelPath, Timestamp};
use ganglion_mirror::engine::{Op, SinkAction, SinkEvent};
use ganglion_mirror::index::Summary;
use ganglion_mirror::receive::{FileOutcome, Receiver};
use ganglion_mirror::{
    ContentHash, ImmutablePaths, MirrorToNode, Notice, SinkEngine, TransferFailure,
};
// Not poisoned by a panic: one failed request must not stop every later one.
use futures::FutureExt;
use ganglion_api::WorkerState;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::registry::{Registry, ToNode};
use crate::worker::{WorkerHandle, panic_message};

mod two_way;
pub use two_way::{Keep, ResolveError, WriteDone, WriteError, WriteReply};

/// The open mirrors of the hub, by node name (shared with the drivers, which
/// remove themselves when they close).
pub type OpenMirrors = Arc<Mutex<HashMap<String, OpenMirror>>>;

pub struct OpenMirror {
    pub tx: mpsc::UnboundedSender<DriverEvent>,
    pub receiver: Receiver,
}

/// Needs sent to the node in one message at most (≈ 100 bytes each).
pub const NEEDS_PER_MESSAGE: usize = 1024;

pub enum DriverEvent {
    Connected {
        reply: oneshot::Sender<u64>,
        /// The node's workspace replica identity (empty: not told).
        replica: String,
    },
    /// The node's replica is not the one the ancestor was agreed with.
    ReplicaChanged(String),
    Disconnected,
    /// Notices from the node, in order (one wake-up for many).
    Notices(Vec<Notice>),
    /// Files that ended on an upload stream (staged or failed), reported
    /// together: one wake-up of the driver per batch, not per file.
    Transfers(Vec<FileOutcome>),
    RetryDue {
        path: RelPath,
    },
    Committed {
        done: Vec<Op>,
        failed: Vec<(Op, TransferFailure)>,
    },
    Status {
        reply: oneshot::Sender<MirrorStatus>,
    },
    /// The node has this many changes it cannot record in its index (so
    /// could not send yet); they count as pending.
    NodeUnrecorded(u64),
    SetImmutable(ImmutablePaths),
    Receiver {
        reply: oneshot::Sender<Receiver>,
    },
    /// A task of the driver failed (a group commit panicked): the driver
    /// stops with this error and its supervisor starts it again.
    Failed(String),
    /// A hub-side write (`mirror put|rm|mv`), conditional on `if_hash`.
    HubWrite {
        write: ganglion_mirror::engine::HubWrite,
        if_hash: Option<ContentHash>,
        reply: WriteReply,
    },
    /// The node applied every hub-side change up to this seq.
    NodeApplied(u64),
    /// The node settled a conflict.
    NodeConflict(ganglion_mirror::Conflict),
    Conflicts {
        reply: oneshot::Sender<Vec<ganglion_mirror::Conflict>>,
    },
    Resolve {
        path: RelPath,
        keep: Keep,
        reply: oneshot::Sender<Result<ganglion_mirror::Conflict, ResolveError>>,
    },
    /// A fault for tests: the driver panics.
    #[cfg(test)]
    Panic,
}

impl DriverEvent {
    /// Events of the two-way mirror: they need the entries, and run between
    /// group commits.
    fn is_two_way(&self) -> bool {
        matches!(
            self,
            Self::HubWrite { .. }
                | Self::ReplicaChanged(_)
                | Self::NodeConflict(_)
                | Self::Conflicts { .. }
                | Self::Resolve { .. }
        )
    }
}

/// `mirror status`: its JSON shape is the API's.
pub use ganglion_api::MirrorStatus;

enum State {
    /// The entries are not in memory: answers come from the summary. They
    /// load once an event needs them (a change from the node, typically);
    /// such events wait in `held`, in order, until they are in.
    Summary {
        summary: Box<Summary>,
        immutable: ImmutablePaths,
        held: Vec<SinkEvent>,
    },
    Ready(Box<SinkEngine>),
}

/// Starts loading a mirror's entries into an engine (with these immutable
/// paths) and returns where the engine will arrive. Retries failed loads.
pub type Loader = Box<dyn Fn(ImmutablePaths) -> oneshot::Receiver<Box<SinkEngine>> + Send + Sync>;

pub struct Driver {
    node: String,
    node_id: NodeId,
    state: State,
    loader: Loader,
    /// The load in progress, if any.
    loading: Option<oneshot::Receiver<Box<SinkEngine>>>,
    receiver: Receiver,
    registry: Registry,
    clock: SharedClock,
    me: mpsc::UnboundedSender<DriverEvent>,
    batch: Vec<Op>,
    /// Needs produced by the events being handled, sent as one message.
    needs: Vec<(RelPath, ContentHash)>,
    committing: bool,
    last_sync: Option<Timestamp>,
    connected: bool,
    /// What the node last reported as unrecorded (0 at each connection).
    node_unrecorded: u64,
    /// Idle this long with the node away, the driver closes.
    idle_close: Duration,
    open: OpenMirrors,
    /// Its entry in the hub's workers (`mirror:NODE`): idle or busy.
    worker: WorkerHandle,
    /// Two-way events waiting for the entries or for a commit to end.
    deferred: Vec<DriverEvent>,
    /// The highest hub-side change the node reported applied: taken in
    /// order with its notices (never deferred), and applied to an engine
    /// that loads later (its load may predate the index write).
    node_out_acked: u64,
    /// The node's workspace replica the ancestor was agreed with.
    peer_replica: Option<String>,
}

/// What a driver is started with besides its node and receiver.
pub struct Start {
    pub summary: Summary,
    pub immutable: ImmutablePaths,
    pub loader: Loader,
    pub idle_close: Duration,
    pub open: OpenMirrors,
    pub worker: WorkerHandle,
}

impl Driver {
    pub fn new(
        node: (String, NodeId),
        receiver: Receiver,
        registry: Registry,
        clock: SharedClock,
        me: mpsc::UnboundedSender<DriverEvent>,
        start: Start,
    ) -> Self {
        let (node, node_id) = node;
        let last_sync = start.summary.synced_at;
        let peer_replica = start.summary.replica.clone();
        Self {
            node,
            node_id,
            state: State::Summary {
                summary: Box::new(start.summary),
                immutable: start.immutable,
                held: Vec::new(),
            },
            loader: start.loader,
            loading: None,
            receiver,
            registry,
            clock,
            me,
            batch: Vec::new(),
            needs: Vec::new(),
            committing: false,
            last_sync,
            connected: false,
            node_unrecorded: 0,
            idle_close: start.idle_close,
            open: start.open,
            worker: start.worker,
            deferred: Vec::new(),
            node_out_acked: 0,
            peer_replica,
        }
    }

    /// Runs until the driver closes (`Ok`) or fails; a failed driver is
    /// started again from the index by its supervisor (`supervise.rs`).
    #[tracing::instrument(skip_all, fields(node = %self.node))]
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<DriverEvent>) -> Result<(), String> {
        let mut load_started = std::time::Instant::now();
        loop {
            let busy = self.is_busy();
            self.worker.set(if busy {
                WorkerState::Busy
            } else {
                WorkerState::Idle
            });
            let idle = !self.connected && !busy;
            let idle_close = self.idle_close;
            let was_loading = self.loading.is_some();
            tokio::select! {
                event = rx.recv() => match event {
                    Some(DriverEvent::Failed(error)) => return Err(error),
                    Some(event) => self.on_event(event).await,
                    None => break,
                },
                engine = wait_load(self.loading.as_mut()) => {
                    self.loading = None;
                    match engine {
                        Ok(engine) => {
                            tracing::info!(
                                files = engine.stats().files,
                                took_ms = load_started.elapsed().as_millis() as u64,
                                "mirror entries loaded"
                            );
                            self.become_ready(engine).await;
                        }
                        Err(_) => return Err("the loader of the mirror entries stopped".into()),
                    }
                },
                () = tokio::time::sleep(idle_close), if idle => {
                    if self.close_if_quiet(&mut rx) {
                        tracing::debug!("idle mirror driver closed");
                        return Ok(());
                    }
                }
            }
            if !was_loading && self.loading.is_some() {
                load_started = std::time::Instant::now();
            }
        }
        self.unregister();
        Ok(())
    }

    /// Busy: something is queued, fetched, loading or committing. A driver
    /// not busy while its node is away is idle and closes after a while.
    fn is_busy(&self) -> bool {
        self.committing
            || !self.batch.is_empty()
            || !self.deferred.is_empty()
            || match &self.state {
                State::Summary { held, .. } => !held.is_empty() || self.loading.is_some(),
                State::Ready(e) => e.stats().pending > 0,
            }
    }

    /// Closes unless an event arrived meanwhile. Events are only sent under
    /// the lock of the open mirrors (see `Mirrors::deliver`), so after this
    /// none can be lost: a sender finds the channel closed and reopens.
    fn close_if_quiet(&mut self, rx: &mut mpsc::UnboundedReceiver<DriverEvent>) -> bool {
        let mut open = self.open.lock();
        if !rx.is_empty() {
            return false;
        }
        rx.close();
        if open
            .get(&self.node)
            .is_some_and(|m| m.tx.same_channel(&self.me))
        {
            open.remove(&self.node);
        }
        true
    }

    fn unregister(&self) {
        let mut open = self.open.lock();
        if open
            .get(&self.node)
            .is_some_and(|m| m.tx.same_channel(&self.me))
        {
            open.remove(&self.node);
        }
    }

    async fn become_ready(&mut self, engine: Box<SinkEngine>) {
        let State::Summary {
            immutable, held, ..
        } = std::mem::replace(&mut self.state, State::Ready(engine))
        else {
            return;
        };
        // Paths made immutable while loading (ignored if not newer).
        self.feed_one(SinkEvent::SetImmutable(immutable)).await;
        if let State::Ready(engine) = &mut self.state {
            engine.hub_applied(self.node_out_acked);
        }
        for event in held {
            self.feed_one(event).await;
        }
        self.settle().await;
        self.send_changes().await;
        self.run_deferred().await;
    }

    async fn on_event(&mut self, event: DriverEvent) {
        let event = if event.is_two_way() {
            match self.defer_two_way(event) {
                Some(e) => e,
                None => return,
            }
        } else {
            event
        };
        let engine_event = match event {
            DriverEvent::HubWrite {
                write,
                if_hash,
                reply,
            } => {
                let done = self.hub_write(write, if_hash).await;
                let _ = reply.send(done);
                self.settle().await;
                return;
            }
            DriverEvent::NodeApplied(seq) => return self.node_applied(seq).await,
            DriverEvent::ReplicaChanged(replica) => return self.replica_changed(replica).await,
            DriverEvent::NodeConflict(c) => return self.node_conflict(c).await,
            DriverEvent::Conflicts { reply } => {
                let _ = reply.send(self.conflicts());
                return;
            }
            DriverEvent::Resolve { path, keep, reply } => {
                let done = self.resolve(path, keep).await;
                let _ = reply.send(done);
                self.settle().await;
                return;
            }
            DriverEvent::Connected { reply, replica } => {
                self.connected = true;
                self.node_unrecorded = 0;
                let _ = reply.send(self.applied());
                let files = match &self.state {
                    State::Summary { summary, .. } => summary.files,
                    State::Ready(engine) => engine.stats().files,
                };
                if self.peer_replica.is_none() && files == 0 && !replica.is_empty() {
                    // A first connection to an empty mirror: nothing to
                    // offer back, the replica is just recorded.
                    self.record_replica(replica).await;
                } else if !replica.is_empty() && Some(&replica) != self.peer_replica.as_ref() {
                    self.feed(SinkEvent::Connected).await;
                    // Runs now, or once the entries are in (it needs them).
                    Box::pin(self.on_event(DriverEvent::ReplicaChanged(replica))).await;
                    self.send_changes().await;
                    return;
                }
                // Hub-side changes wait for the node: they need the entries.
                if let State::Summary {
                    summary, immutable, ..
                } = &self.state
                    && summary.to_node > 0
                    && self.loading.is_none()
                {
                    self.loading = Some((self.loader)(immutable.clone()));
                }
                SinkEvent::Connected
            }
            DriverEvent::Disconnected => {
                self.connected = false;
                SinkEvent::Disconnected
            }
            DriverEvent::NodeUnrecorded(n) => {
                if n > 0 {
                    tracing::warn!(
                        unrecorded = n,
                        "the node cannot record changes in its index (disk full?); they count as pending"
                    );
                } else if self.node_unrecorded > 0 {
                    tracing::info!("the node recorded its waiting changes");
                }
                self.node_unrecorded = n;
                return;
            }
            DriverEvent::Notices(notices) => {
                for n in notices {
                    self.feed_one(SinkEvent::Notice(n)).await;
                }
                self.settle().await;
                return;
            }
            DriverEvent::Transfers(outcomes) => {
                for o in outcomes {
                    let event = match o.result {
                        Ok(_) => SinkEvent::Staged {
                            path: o.path,
                            hash: o.hash,
                        },
                        Err(failure) => SinkEvent::FetchFailed {
                            path: o.path,
                            hash: o.hash,
                            failure,
                        },
                    };
                    self.feed_one(event).await;
                }
                self.settle().await;
                return;
            }
            DriverEvent::RetryDue { path } => SinkEvent::RetryDue { path },
            DriverEvent::SetImmutable(i) => {
                if let State::Summary { immutable, .. } = &mut self.state {
                    if i.version() >= immutable.version() {
                        *immutable = i;
                    }
                    return;
                }
                SinkEvent::SetImmutable(i)
            }
            DriverEvent::Committed { done, failed } => {
                self.committing = false;
                self.feed(SinkEvent::Committed { done, failed }).await;
                self.run_deferred().await;
                return;
            }
            DriverEvent::Status { reply } => {
                let _ = reply.send(self.status());
                return;
            }
            DriverEvent::Receiver { reply } => {
                let _ = reply.send(self.receiver.clone());
                return;
            }
            // Handled by the loop (the driver stops).
            DriverEvent::Failed(_) => return,
            #[cfg(test)]
            DriverEvent::Panic => panic!("injected fault"),
        };
        let connected = matches!(engine_event, SinkEvent::Connected);
        self.feed(engine_event).await;
        if connected {
            self.send_changes().await;
        }
    }

    async fn feed(&mut self, event: SinkEvent) {
        self.feed_one(event).await;
        self.settle().await;
    }

    /// After the events of one wake-up: sends their needs as one message and
    /// starts a commit of what they queued.
    async fn settle(&mut self) {
        self.send_needs().await;
        self.maybe_commit();
        self.reassert_immutable().await;
    }

    /// Sends the queued needs, at most [`NEEDS_PER_MESSAGE`] to a message
    /// (a load can release tens of thousands of held notices at once, more
    /// than fits a gRPC message), each preceded by the offsets of those the
    /// receiver holds a cut transfer of (their uploads resume there).
    async fn send_needs(&mut self) {
        let needs = std::mem::take(&mut self.needs);
        for part in needs.chunks(NEEDS_PER_MESSAGE) {
            let held: Vec<_> = part
                .iter()
                .filter_map(|(path, hash)| {
                    let offset = self.receiver.resume_offset(path, *hash)?;
                    Some((path.clone(), *hash, offset))
                })
                .collect();
            if !held.is_empty() {
                self.to_node(ToNode::Mirror(MirrorToNode::Resume(held)))
                    .await;
            }
            self.to_node(ToNode::Mirror(MirrorToNode::Needs(part.to_vec())))
                .await;
        }
    }

    /// Feeds one event without sending needs or starting a commit.
    async fn feed_one(&mut self, event: SinkEvent) {
        let actions = match &mut self.state {
            // A fresh engine starts disconnected with nothing in progress,
            // which is what these would bring an unloaded one to.
            State::Summary { .. }
                if matches!(event, SinkEvent::Connected | SinkEvent::Disconnected) =>
            {
                return;
            }
            State::Summary {
                held, immutable, ..
            } => {
                held.push(event);
                if self.loading.is_none() {
                    self.loading = Some((self.loader)(immutable.clone()));
                }
                return;
            }
            State::Ready(engine) => engine.handle(event),
        };
        self.perform(actions).await;
    }

    fn applied(&self) -> u64 {
        match &self.state {
            State::Summary { summary, .. } => summary.peer_seq,
            State::Ready(engine) => engine.applied(),
        }
    }

    fn status(&self) -> MirrorStatus {
        let mut status = self.sink_status();
        status.unrecorded = self.node_unrecorded;
        status.pending += self.node_unrecorded;
        status
    }

    fn sink_status(&self) -> MirrorStatus {
        let last_sync = self.last_sync.map(|t| t.to_rfc3339());
        match &self.state {
            // Nothing was fetched or committed since the driver opened: the
            // index is the mirror, and what the node sent since waits (pending).
            State::Summary { summary, held, .. } => MirrorStatus {
                files: summary.files,
                bytes: summary.bytes,
                pending: held
                    .iter()
                    .filter(|e| matches!(e, SinkEvent::Notice(_)))
                    .count() as u64,
                in_flight: 0,
                last_sync,
                refused: 0,
                applied_seq: summary.peer_seq,
                unrecorded: 0,
                to_node: summary.to_node,
                conflicts: summary.conflicts,
                halted: None,
            },
            State::Ready(engine) => {
                let s = engine.stats();
                MirrorStatus {
                    files: s.files,
                    bytes: s.bytes,
                    pending: s.pending,
                    in_flight: s.fetching,
                    last_sync,
                    refused: s.refused,
                    applied_seq: engine.applied(),
                    unrecorded: 0,
                    to_node: engine.to_node(),
                    conflicts: engine.conflicts().count() as u64,
                    halted: None,
                }
            }
        }
    }

    async fn perform(&mut self, actions: Vec<SinkAction>) {
        for action in actions {
            match action {
                SinkAction::Fetch { path, hash, .. } => self.needs.push((path, hash)),
                SinkAction::Discard { path, hash } => self.receiver.discard(&path, hash),
                SinkAction::Apply(op) => self.batch.push(op),
                SinkAction::Ack { seq } => {
                    // The time goes with the sequence: `mirror status` shows
                    // it after a restart or a reopen of the driver.
                    let now = self.clock.now();
                    if let Err(e) = self
                        .receiver
                        .index()
                        .acknowledge(&self.node, seq, now)
                        .await
                    {
                        // Not persisted: not acknowledged. The node resends.
                        tracing::error!(error = %e, seq, "cannot persist the applied sequence");
                        continue;
                    }
                    self.last_sync = Some(now);
                    // In order: the needs of the events before this ack first.
                    self.send_needs().await;
                    self.to_node(ToNode::Mirror(MirrorToNode::Ack(seq))).await;
                }
                SinkAction::RetryLater { path, after } => {
                    let me = self.me.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after.min(Duration::from_secs(60))).await;
                        let _ = me.send(DriverEvent::RetryDue { path });
                    });
                }
            }
        }
    }

    /// Needs and acks wait for room on the node's stream: a dropped need is
    /// only resent after a reconnect, so dropping it stalled the sync of a
    /// connected node for good (thousands of small files overflow the queue).
    /// A stream that stays full this long belongs to a stuck node, which the
    /// heartbeat monitor disconnects; its reconnect resends everything.
    async fn to_node(&self, msg: ToNode) {
        if let Some(conn) = self.registry.get(&self.node_id)
            && !conn.send_wait(msg, Duration::from_secs(30)).await
        {
            tracing::warn!(
                "node stream full or gone; mirror message dropped (resent after reconnect)"
            );
        }
    }

    /// Starts a group commit of everything queued, unless one is in flight.
    fn maybe_commit(&mut self) {
        if self.committing || self.batch.is_empty() {
            return;
        }
        let State::Ready(engine) = &mut self.state else {
            return;
        };
        let ops = engine.admit(std::mem::take(&mut self.batch));
        if ops.is_empty() {
            return;
        }
        self.committing = true;
        let receiver = self.receiver.clone();
        let me = self.me.clone();
        tokio::spawn(async move {
            // A panic would leave the driver committing forever: it fails
            // the driver instead, which restarts from the index.
            let committed = AssertUnwindSafe(receiver.commit(ops.clone()))
                .catch_unwind()
                .await;
            let event = match committed {
                Ok(Ok(outcome)) => DriverEvent::Committed {
                    done: outcome.done,
                    failed: outcome.failed,
                },
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "group commit failed");
                    let failure = e.failure();
                    DriverEvent::Committed {
                        done: Vec::new(),
                        failed: ops.into_iter().map(|op| (op, failure)).collect(),
                    }
                }
                Err(panic) => {
                    DriverEvent::Failed(format!("group commit {}", panic_message(panic.as_ref())))
                }
            };
            let _ = me.send(event);
        });
    }
}

async fn wait_load(
    load: Option<&mut oneshot::Receiver<Box<SinkEngine>>>,
) -> Result<Box<SinkEngine>, oneshot::error::RecvError> {
    match load {
        Some(l) => l.await,
        None => std::future::pending().await,
    }
}
