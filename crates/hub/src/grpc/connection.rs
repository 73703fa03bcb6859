//! Drives one node's `Connect` stream: waits for its hello, registers the
//! connection, answers heartbeats, routes the node's messages to their
//! subsystems and sends the hub's ([`super::route`]), and on any ending
//! (node closed, reset, revoked, silent, shutdown) removes it and marks the
//! node offline at once.
//!
//! Status codes: `DeadlineExceeded` when no hello comes within `hello_deadline`,
//! `InvalidArgument` when the first message is not a hello, `AlreadyExists`
//! when another running process holds the node's stream; once running, the
//! stream ends with `PermissionDenied` (revoked), `Unavailable` (hub shutting
//! down) or `Aborted` (superseded, heartbeat timeout).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use ganglion_core::panic::panic_message;
use ganglion_core::time::SharedClock;
use ganglion_proto::convert::stream::from_node;
use ganglion_proto::convert::{FromHub, FromNode, Hello, Welcome};
use ganglion_proto::v1;
use ganglion_store::{NodeRecord, NodeStatus, StatusUpdate};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::route::{Subsystems, outbound};
use crate::monitor::StatusSink;
use crate::registry::{Arrival, CloseReason, Connection, ConnectionParts, Registry};

pub struct ConnectionDriver {
    pub registry: Registry,
    pub subsystems: Subsystems,
    pub status: StatusSink,
    pub clock: SharedClock,
    pub heartbeat_interval: Duration,
    /// How long the node has to send its hello.
    pub hello_deadline: Duration,
}

type Outbound = Pin<Box<dyn Stream<Item = Result<v1::HubMessage, Status>> + Send>>;
type Tx = mpsc::Sender<Result<v1::HubMessage, Status>>;

/// The node's messages, converted; a malformed one is logged and skipped
/// (and so is a malformed item of a many-item message: the others count).
fn read(m: v1::NodeMessage) -> Option<FromNode> {
    let mut rejected = Vec::new();
    let msg = from_node(m, &mut rejected);
    for e in rejected {
        tracing::warn!(error = %e, "malformed item of a node message ignored");
    }
    msg.map_err(|e| tracing::warn!(error = %e, "malformed node message ignored"))
        .ok()
}

async fn read_hello(
    inbound: &mut Streaming<v1::NodeMessage>,
    deadline: Duration,
) -> Result<Hello, Status> {
    let first = tokio::time::timeout(deadline, inbound.next())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "no hello within {} (hello_deadline)",
                ganglion_core::time::format_duration(deadline)
            ))
        })?;
    match first {
        Some(Ok(m)) => match read(m) {
            Some(FromNode::Hello(h)) => Ok(h),
            _ => Err(Status::invalid_argument(
                "the first message must be a hello",
            )),
        },
        Some(Err(e)) => Err(e),
        None => Err(Status::invalid_argument(
            "the first message must be a hello",
        )),
    }
}

impl ConnectionDriver {
    #[tracing::instrument(skip_all, fields(node = %node.name))]
    pub async fn start(
        self,
        node: NodeRecord,
        peer: Option<SocketAddr>,
        mut inbound: Streaming<v1::NodeMessage>,
    ) -> Result<Outbound, Status> {
        let hello = read_hello(&mut inbound, self.hello_deadline).await?;
        let now = self.clock.now();
        // A live connection of another process refuses this one: see
        // `Registry::connect`. Its heartbeats come every interval.
        let alive_within = self.heartbeat_interval + self.heartbeat_interval / 2;
        let arrival = Arrival {
            node_id: node.id.clone(),
            name: node.name.clone(),
            peer,
            instance: hello.instance,
        };
        let parts = self
            .registry
            .connect(arrival, now, alive_within)
            .map_err(|e| Status::already_exists(e.to_string()))?;
        self.status.send(StatusUpdate {
            node_id: node.id.clone(),
            status: NodeStatus::Online,
            last_heartbeat: Some(now),
            peer_addr: peer.map(|p| p.to_string()),
            capabilities: hello.capabilities,
            at: now,
        });
        tracing::info!(?peer, "node online");
        let mirror_applied = self
            .subsystems
            .connected(&parts.conn, hello.mirror, hello.mirror_replica)
            .await;
        let (tx, rx) = mpsc::channel(64);
        let welcome = FromHub::Welcome(Welcome {
            node_id: node.id.to_string(),
            heartbeat_interval_ms: super::service::millis(self.heartbeat_interval),
            mirror_applied,
        });
        // Then the current policy, even if it changed between config and connect.
        for m in [welcome, FromHub::Policy(node.policy)] {
            tx.send(Ok(m.into()))
                .await
                .map_err(|_| Status::cancelled("stream closed"))?;
        }
        let span = tracing::info_span!("connection", node = %node.name, conn = parts.conn.id);
        tokio::spawn(self.drive(parts, inbound, tx).instrument(span));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Serves the stream until it ends, then marks the node offline. A
    /// panic in a handler is caught here: logged, the stream closed (the
    /// node reconnects) and the node marked offline, never left online with
    /// nobody serving it.
    async fn drive(self, parts: ConnectionParts, inbound: Streaming<v1::NodeMessage>, tx: Tx) {
        let conn = parts.conn.clone();
        let served = AssertUnwindSafe(self.serve(parts, inbound, tx))
            .catch_unwind()
            .await;
        let ending = served.unwrap_or_else(|panic| {
            let error = panic_message(panic.as_ref());
            tracing::error!(%error, "the connection's loop panicked; its stream is closed");
            format!("hub error ({error})")
        });
        self.ended(&conn, &ending).await;
    }

    /// The connection's loop; returns why it ended.
    async fn serve(
        &self,
        parts: ConnectionParts,
        mut inbound: Streaming<v1::NodeMessage>,
        tx: Tx,
    ) -> String {
        let ConnectionParts {
            conn,
            mut rx,
            mut closed,
        } = parts;
        loop {
            tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(m)) => match read(m) {
                        Some(FromNode::Heartbeat { seq }) if !self.heartbeat(&conn, &tx, seq).await => {
                            break "hub side of the stream dropped".into();
                        }
                        Some(FromNode::Heartbeat { .. }) => {}
                        Some(FromNode::Hello(_)) => tracing::warn!("duplicate hello ignored"),
                        Some(msg) => self.subsystems.inbound(&conn, msg).await,
                        None => {}
                    },
                    Some(Err(e)) => break format!("stream error: {}", e.message()),
                    None => break "node closed the stream".into(),
                },
                msg = rx.recv() => {
                    let Some(msg) = msg else { break "registry dropped the connection".into() };
                    if tx.send(Ok(outbound(msg))).await.is_err() { break "node stopped reading".into(); }
                }
                _ = closed.changed() => break closing(&conn, &closed, &tx).await,
            }
        }
    }

    /// Records a heartbeat and acknowledges it; false if the stream is gone.
    async fn heartbeat(&self, conn: &Connection, tx: &Tx, seq: u64) -> bool {
        let now = self.clock.now();
        conn.touch(now);
        self.status.send(StatusUpdate {
            node_id: conn.node_id.clone(),
            status: NodeStatus::Online,
            last_heartbeat: Some(now),
            peer_addr: None,
            capabilities: None,
            at: now,
        });
        let ack = FromHub::HeartbeatAck { seq };
        tx.send(Ok(ack.into())).await.is_ok()
    }

    /// After the stream ended: the node is offline unless a newer
    /// connection superseded this one.
    async fn ended(&self, conn: &Connection, ending: &str) {
        if !self.registry.remove(conn) {
            tracing::info!(reason = %ending, "superseded connection ended");
            return;
        }
        self.subsystems.disconnected(conn, ending).await;
        self.status.send(StatusUpdate {
            node_id: conn.node_id.clone(),
            status: NodeStatus::Offline,
            last_heartbeat: None,
            peer_addr: None,
            capabilities: None,
            at: self.clock.now(),
        });
        tracing::info!(reason = %ending, "node offline");
    }
}

/// Ends the stream for the reason the hub closed it with; returns the reason.
async fn closing(
    conn: &Connection,
    closed: &watch::Receiver<Option<CloseReason>>,
    tx: &Tx,
) -> String {
    let reason = closed.borrow().clone().unwrap_or(CloseReason::Shutdown);
    let status = match reason {
        CloseReason::Revoked => {
            let revoked = FromHub::Revoked {
                reason: "revoked by an admin".into(),
            };
            let _ = tx.send(Ok(revoked.into())).await;
            Status::permission_denied(format!("node {:?} was revoked", conn.name.as_str()))
        }
        CloseReason::Shutdown => Status::unavailable(reason.as_str()),
        _ => Status::aborted(reason.as_str()),
    };
    let _ = tx.send(Err(status)).await;
    reason.as_str().to_owned()
}
