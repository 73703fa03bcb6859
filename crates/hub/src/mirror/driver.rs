//! One node's mirror at the hub: feeds the [`SinkEngine`] and performs its
//! actions. Ops accumulate while a commit is in flight and go in the next one
//! (group commit); an acknowledgement is persisted before it is sent.

use std::time::Duration;

use ganglion_core::time::SharedClock;
use ganglion_core::{NodeId, RelPath, Timestamp};
use ganglion_mirror::engine::{Op, SinkAction, SinkEvent};
use ganglion_mirror::receive::Receiver;
use ganglion_mirror::{ContentHash, Notice, SinkEngine, TransferFailure};
use tokio::sync::{mpsc, oneshot};

use crate::registry::{Registry, ToNode};

pub enum DriverEvent {
    Connected {
        reply: oneshot::Sender<u64>,
    },
    Disconnected,
    Notice(Notice),
    Staged {
        path: RelPath,
        hash: ContentHash,
    },
    FetchFailed {
        path: RelPath,
        hash: ContentHash,
        failure: TransferFailure,
    },
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
    SetImmutable(ganglion_mirror::ImmutablePaths),
    Receiver {
        reply: oneshot::Sender<Receiver>,
    },
}

/// `mirror status`, as CONTRACT.md lists it (plus refused changes).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MirrorStatus {
    pub files: u64,
    pub bytes: u64,
    pub pending: u64,
    pub in_flight: u64,
    pub last_sync: Option<String>,
    /// Node-side changes under immutable paths that were not applied.
    pub refused: u64,
    pub applied_seq: u64,
}

pub struct Driver {
    node: String,
    node_id: NodeId,
    engine: SinkEngine,
    receiver: Receiver,
    registry: Registry,
    clock: SharedClock,
    me: mpsc::UnboundedSender<DriverEvent>,
    batch: Vec<Op>,
    committing: bool,
    last_sync: Option<Timestamp>,
}

impl Driver {
    pub fn new(
        node: (String, NodeId),
        engine: SinkEngine,
        receiver: Receiver,
        registry: Registry,
        clock: SharedClock,
        me: mpsc::UnboundedSender<DriverEvent>,
    ) -> Self {
        let (node, node_id) = node;
        Self {
            node,
            node_id,
            engine,
            receiver,
            registry,
            clock,
            me,
            batch: Vec::new(),
            committing: false,
            last_sync: None,
        }
    }

    #[tracing::instrument(skip_all, fields(node = %self.node))]
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<DriverEvent>) {
        while let Some(event) = rx.recv().await {
            let engine_event = match event {
                DriverEvent::Connected { reply } => {
                    let _ = reply.send(self.engine.applied());
                    SinkEvent::Connected
                }
                DriverEvent::Disconnected => SinkEvent::Disconnected,
                DriverEvent::Notice(n) => SinkEvent::Notice(n),
                DriverEvent::Staged { path, hash } => SinkEvent::Staged { path, hash },
                DriverEvent::FetchFailed {
                    path,
                    hash,
                    failure,
                } => SinkEvent::FetchFailed {
                    path,
                    hash,
                    failure,
                },
                DriverEvent::RetryDue { path } => SinkEvent::RetryDue { path },
                DriverEvent::SetImmutable(i) => SinkEvent::SetImmutable(i),
                DriverEvent::Committed { done, failed } => {
                    self.committing = false;
                    SinkEvent::Committed { done, failed }
                }
                DriverEvent::Status { reply } => {
                    let s = self.engine.stats();
                    let _ = reply.send(MirrorStatus {
                        files: s.files,
                        bytes: s.bytes,
                        pending: s.pending,
                        in_flight: s.fetching,
                        last_sync: self.last_sync.map(|t| t.to_rfc3339()),
                        refused: s.refused,
                        applied_seq: self.engine.applied(),
                    });
                    continue;
                }
                DriverEvent::Receiver { reply } => {
                    let _ = reply.send(self.receiver.clone());
                    continue;
                }
            };
            let actions = self.engine.handle(engine_event);
            self.perform(actions).await;
            self.maybe_commit();
        }
    }

    async fn perform(&mut self, actions: Vec<SinkAction>) {
        for action in actions {
            match action {
                SinkAction::Fetch { path, hash, .. } => {
                    self.to_node(ToNode::MirrorNeed { path, hash }).await;
                }
                SinkAction::Discard { path, hash } => self.receiver.discard(&path, hash),
                SinkAction::Apply(op) => self.batch.push(op),
                SinkAction::Ack { seq } => {
                    if let Err(e) = self.receiver.index().set_peer_seq(&self.node, seq).await {
                        // Not persisted: not acknowledged. The node resends.
                        tracing::error!(error = %e, seq, "cannot persist the applied sequence");
                        continue;
                    }
                    self.last_sync = Some(self.clock.now());
                    self.to_node(ToNode::MirrorAck(seq)).await;
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
        let ops = self.engine.admit(std::mem::take(&mut self.batch));
        if ops.is_empty() {
            return;
        }
        self.committing = true;
        let receiver = self.receiver.clone();
        let me = self.me.clone();
        tokio::spawn(async move {
            let event = match receiver.commit(ops.clone()).await {
                Ok(outcome) => DriverEvent::Committed {
                    done: outcome.done,
                    failed: outcome.failed,
                },
                Err(e) => {
                    tracing::error!(error = %e, "group commit failed");
                    let failure = e.failure();
                    DriverEvent::Committed {
                        done: Vec::new(),
                        failed: ops.into_iter().map(|op| (op, failure)).collect(),
                    }
                }
            };
            let _ = me.send(event);
        });
    }
}
