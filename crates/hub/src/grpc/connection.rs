//! Drives one node's `Connect` stream: waits for its hello, registers the
//! connection, answers heartbeats, forwards hub messages, and on any ending
//! (node closed, reset, revoked, silent, shutdown) removes it and marks the
//! node offline at once.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use ganglion_core::time::SharedClock;
use ganglion_proto::v1;
use ganglion_proto::v1::hub_message::Kind as Out;
use ganglion_proto::v1::node_message::Kind as In;
use ganglion_store::{NodeRecord, NodeState, StatusUpdate};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use std::sync::Arc;

use ganglion_core::TaskId;

use crate::monitor::StatusSink;
use crate::registry::{Arrival, CloseReason, ConnectionParts, Registry, ToNode};
use crate::tasks::{NodeEnd, NodeReport, OutputStream, Tasks};

/// How long a node has to send its hello after opening the stream.
const HELLO_DEADLINE: Duration = Duration::from_secs(10);

pub struct ConnectionDriver {
    pub registry: Registry,
    pub tasks: Arc<Tasks>,
    pub mirrors: Arc<crate::mirror::Mirrors>,
    pub status: StatusSink,
    pub clock: SharedClock,
    pub heartbeat_interval: Duration,
}

type Outbound = Pin<Box<dyn Stream<Item = Result<v1::HubMessage, Status>> + Send>>;

fn out(kind: Out) -> Result<v1::HubMessage, Status> {
    Ok(v1::HubMessage { kind: Some(kind) })
}

impl ConnectionDriver {
    #[tracing::instrument(skip_all, fields(node = %node.name))]
    pub async fn start(
        self,
        node: NodeRecord,
        peer: Option<SocketAddr>,
        mut inbound: Streaming<v1::NodeMessage>,
    ) -> Result<Outbound, Status> {
        let first = tokio::time::timeout(HELLO_DEADLINE, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10 s"))?;
        let hello = match first {
            Some(Ok(v1::NodeMessage {
                kind: Some(In::Hello(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ));
            }
        };
        let mirrors_workspace = hello.mirror;
        let now = self.clock.now();
        // A live connection of another process refuses this one: see
        // `Registry::connect`. Its heartbeats come every interval.
        let alive_within = self.heartbeat_interval + self.heartbeat_interval / 2;
        let parts = self
            .registry
            .connect(
                Arrival {
                    node_id: node.id.clone(),
                    name: node.name.clone(),
                    peer,
                    instance: hello.instance.clone(),
                },
                now,
                alive_within,
            )
            .map_err(|e| Status::already_exists(e.to_string()))?;
        self.status.send(StatusUpdate {
            node_id: node.id.clone(),
            status: NodeState::Online,
            last_heartbeat: Some(now),
            peer_addr: peer.map(|p| p.to_string()),
            capabilities: hello.capabilities.map(Into::into),
            at: now,
        });
        tracing::info!(?peer, "node online");

        // Only nodes that mirror cost the hub a mirror (two directory handles).
        let mirror_applied = if !mirrors_workspace {
            0
        } else {
            match self.mirrors.attach(node.name.as_str(), &node.id).await {
                Ok(seq) => seq,
                Err(e) => {
                    tracing::error!(error = %e, "the node's mirror is unavailable");
                    0
                }
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let welcome = Out::Welcome(v1::Welcome {
            node_id: node.id.to_string(),
            heartbeat_interval_ms: super::service::millis(self.heartbeat_interval),
            mirror_applied,
        });
        tx.send(out(welcome))
            .await
            .map_err(|_| Status::cancelled("stream closed"))?;
        // Apply the current policy even if it changed between config and connect.
        tx.send(out(Out::PolicyUpdate(v1::PolicyUpdate {
            policy: Some((&node.policy).into()),
        })))
        .await
        .map_err(|_| Status::cancelled("stream closed"))?;
        let span = tracing::info_span!("connection", node = %node.name, conn = parts.conn.id);
        tokio::spawn(self.drive(parts, inbound, tx).instrument(span));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn drive(
        self,
        parts: ConnectionParts,
        mut inbound: Streaming<v1::NodeMessage>,
        tx: mpsc::Sender<Result<v1::HubMessage, Status>>,
    ) {
        let ConnectionParts {
            conn,
            mut rx,
            mut closed,
        } = parts;
        let ending: String = loop {
            tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(v1::NodeMessage { kind: Some(In::Heartbeat(hb)) })) => {
                        let now = self.clock.now();
                        conn.touch(now);
                        self.status.send(StatusUpdate {
                            node_id: conn.node_id.clone(),
                            status: NodeState::Online,
                            last_heartbeat: Some(now),
                            peer_addr: None,
                            capabilities: None,
                            at: now,
                        });
                        let ack = out(Out::HeartbeatAck(v1::HeartbeatAck { seq: hb.seq }));
                        if tx.send(ack).await.is_err() { break "hub side of the stream dropped".into(); }
                    }
                    Some(Ok(v1::NodeMessage { kind: Some(In::Hello(_)) })) => {
                        tracing::warn!("duplicate hello ignored");
                    }
                    Some(Ok(v1::NodeMessage { kind: Some(task_msg) })) => {
                        if let Err(e) = self.on_task_message(&conn.node_id, task_msg).await {
                            tracing::error!(error = %e, "recording a task message failed");
                        }
                    }
                    Some(Ok(v1::NodeMessage { kind: None })) => {
                        tracing::warn!("empty message ignored");
                    }
                    Some(Err(e)) => break format!("stream error: {}", e.message()),
                    None => break "node closed the stream".into(),
                },
                msg = rx.recv() => {
                    let Some(msg) = msg else { break "registry dropped the connection".into() };
                    let wire = match msg {
                        ToNode::Policy(p) => Out::PolicyUpdate(v1::PolicyUpdate { policy: Some((&p).into()) }),
                        ToNode::Dispatch(d) => Out::TaskDispatch(v1::TaskDispatch {
                            task_id: d.id.to_string(),
                            argv: d.argv,
                            cwd: d.cwd.map(|c| c.to_string()).unwrap_or_default(),
                            env: d.env.into_iter().map(|(name, value)| v1::EnvVar { name, value }).collect(),
                            timeout_ms: d.timeout.map_or(0, |t| t.as_millis() as u64),
                            output_cap: d.output_cap,
                        }),
                        ToNode::Cancel(id) => Out::TaskCancel(v1::TaskCancel { task_id: id.to_string() }),
                        ToNode::MirrorNeeds(needs) => Out::MirrorNeeds(v1::MirrorNeeds {
                            needs: needs.into_iter().map(|(path, hash)| v1::MirrorNeed { path: path.to_string(), hash: hash.to_string() }).collect(),
                        }),
                        ToNode::MirrorAck(seq) => Out::MirrorAck(v1::MirrorAck { seq }),
                    };
                    if tx.send(out(wire)).await.is_err() { break "node stopped reading".into(); }
                }
                _ = closed.changed() => {
                    let reason = closed.borrow().clone().unwrap_or(CloseReason::Shutdown);
                    let status = match reason {
                        CloseReason::Revoked => {
                            let _ = tx.send(out(Out::Revoked(v1::Revoked { reason: "revoked by an admin".into() }))).await;
                            Status::permission_denied(format!("node {:?} was revoked", conn.name.as_str()))
                        }
                        CloseReason::Shutdown => Status::unavailable(reason.as_str()),
                        _ => Status::aborted(reason.as_str()),
                    };
                    let _ = tx.send(Err(status)).await;
                    break reason.as_str().to_owned();
                }
            }
        };
        if self.registry.remove(&conn) {
            self.mirrors.detach(conn.name.as_str());
            let now = self.clock.now();
            let (_, last_heartbeat) = conn.last_heartbeat();
            if let Err(e) = self
                .tasks
                .on_node_lost(&conn.node_id, &ending, last_heartbeat)
                .await
            {
                tracing::error!(error = %e, "failing the tasks of a lost node");
            }
            self.status.send(StatusUpdate {
                node_id: conn.node_id.clone(),
                status: NodeState::Offline,
                last_heartbeat: None,
                peer_addr: None,
                capabilities: None,
                at: now,
            });
            tracing::info!(reason = %ending, "node offline");
        } else {
            tracing::info!(reason = %ending, "superseded connection ended");
        }
    }
}

impl ConnectionDriver {
    /// Hands a task message from the node to the task service. Messages about
    /// tasks the node was never given are logged and ignored there.
    async fn on_task_message(
        &self,
        node: &ganglion_core::NodeId,
        msg: In,
    ) -> Result<(), crate::Error> {
        let task_id = |s: &str| {
            TaskId::from_string(s)
                .ok_or_else(|| crate::Error::InvalidArgument(format!("bad task id {s:?}")))
        };
        match msg {
            In::TaskStarted(m) => {
                self.tasks
                    .on_started(node, &task_id(&m.task_id)?, m.pid)
                    .await
            }
            In::TaskOutput(m) => {
                let stream = match v1::OutputStream::try_from(m.stream) {
                    Ok(v1::OutputStream::Stderr) => OutputStream::Stderr,
                    _ => OutputStream::Stdout,
                };
                self.tasks
                    .on_output(node, &task_id(&m.task_id)?, m.seq, stream, m.data);
                Ok(())
            }
            In::TaskFinished(m) => {
                let end = match v1::TaskEnd::try_from(m.end) {
                    Ok(v1::TaskEnd::Exited) => NodeEnd::Exited(m.code),
                    Ok(v1::TaskEnd::Signaled) => NodeEnd::Signaled(m.code),
                    Ok(v1::TaskEnd::TimedOut) => NodeEnd::TimedOut,
                    Ok(v1::TaskEnd::Cancelled) => NodeEnd::Cancelled,
                    Ok(v1::TaskEnd::Refused) => NodeEnd::Refused {
                        exit_code: m.code,
                        error: m.error,
                    },
                    _ => {
                        return Err(crate::Error::InvalidArgument(format!(
                            "unknown task end {}",
                            m.end
                        )));
                    }
                };
                let report = NodeReport {
                    end,
                    output_bytes: m.output_bytes,
                    output_truncated: m.output_truncated,
                    late: m.late,
                };
                self.tasks
                    .on_finished(node, &task_id(&m.task_id)?, report)
                    .await
            }
            In::MirrorNotice(n) => {
                self.notices(node, vec![n]);
                Ok(())
            }
            In::MirrorNotices(n) => {
                self.notices(node, n.notices);
                Ok(())
            }
            In::MirrorBacklog(b) => {
                let name = self.node_name(node);
                self.mirrors.send(
                    &name,
                    crate::mirror::DriverEvent::NodeUnrecorded(b.unrecorded),
                );
                Ok(())
            }
            In::Hello(_) | In::Heartbeat(_) => Ok(()),
        }
    }
}

impl ConnectionDriver {
    /// Hands the node's notices to its mirror, in order, as one event. A
    /// malformed one (hostile path, bad hash, …) is logged and left out, as
    /// it would be alone: the others still count.
    fn notices(&self, node: &ganglion_core::NodeId, wire: Vec<v1::MirrorNotice>) {
        let notices: Vec<_> = wire
            .into_iter()
            .filter_map(|n| match crate::mirror::convert::notice(n) {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!(error = %e, "malformed mirror notice ignored");
                    None
                }
            })
            .collect();
        if notices.is_empty() {
            return;
        }
        let name = self.node_name(node);
        self.mirrors
            .send(&name, crate::mirror::DriverEvent::Notices(notices));
    }

    fn node_name(&self, node: &ganglion_core::NodeId) -> String {
        self.registry
            .get(node)
            .map(|c| c.name.to_string())
            .unwrap_or_default()
    }
}
