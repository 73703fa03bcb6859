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

use crate::monitor::StatusSink;
use crate::registry::{CloseReason, ConnectionParts, Registry, ToNode};

/// How long a node has to send its hello after opening the stream.
const HELLO_DEADLINE: Duration = Duration::from_secs(10);

pub struct ConnectionDriver {
    pub registry: Registry,
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
            Some(Ok(v1::NodeMessage { kind: Some(In::Hello(h)) })) => h,
            Some(Err(e)) => return Err(e),
            _ => return Err(Status::invalid_argument("the first message must be a hello")),
        };
        let now = self.clock.now();
        let parts = self.registry.register(node.id.clone(), node.name.clone(), peer, now);
        self.status.send(StatusUpdate {
            node_id: node.id.clone(),
            status: NodeState::Online,
            last_heartbeat: Some(now),
            peer_addr: peer.map(|p| p.to_string()),
            capabilities: hello.capabilities.map(Into::into),
            at: now,
        });
        tracing::info!(?peer, "node online");

        let (tx, rx) = mpsc::channel(64);
        let welcome = Out::Welcome(v1::Welcome {
            node_id: node.id.to_string(),
            heartbeat_interval_ms: super::service::millis(self.heartbeat_interval),
        });
        tx.send(out(welcome)).await.map_err(|_| Status::cancelled("stream closed"))?;
        // Apply the current policy even if it changed between config and connect.
        tx.send(out(Out::PolicyUpdate(v1::PolicyUpdate { policy: Some((&node.policy).into()) })))
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
        let ConnectionParts { conn, mut rx, mut closed } = parts;
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
            let now = self.clock.now();
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
