//! The live control streams: at most one per node.
//!
//! A [`Connection`] is the hub's side of one node's `Connect` stream: a channel
//! of messages to the node, the time of its last heartbeat, and a way to close
//! it with a reason. The registry knows which nodes are online; closing a
//! connection (revocation, heartbeat silence, shutdown, a newer connection from
//! the same node) ends its stream at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ganglion_core::{NodeId, NodeName, Policy, Timestamp};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Messages the hub sends to a node (domain form; the gRPC layer converts).
#[derive(Clone, Debug, PartialEq)]
pub enum ToNode {
    Policy(Policy),
    Dispatch(crate::tasks::Dispatch),
    Cancel(ganglion_core::TaskId),
    /// Content the mirror asks for, in order (one message for many).
    MirrorNeeds(Vec<(ganglion_core::RelPath, ganglion_mirror::ContentHash)>),
    MirrorAck(u64),
}

/// Why a connection was closed by the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Revoked,
    HeartbeatTimeout,
    Superseded,
    Shutdown,
}

impl CloseReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::Revoked => "revoked",
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::Superseded => "superseded by a newer connection",
            CloseReason::Shutdown => "hub shutting down",
        }
    }
}

pub struct Connection {
    pub id: u64,
    pub node_id: NodeId,
    pub name: NodeName,
    pub peer: Option<SocketAddr>,
    tx: mpsc::Sender<ToNode>,
    close: watch::Sender<Option<CloseReason>>,
    heartbeat: Mutex<(Instant, Timestamp)>,
}

impl Connection {
    pub fn last_heartbeat(&self) -> (Instant, Timestamp) {
        *self.heartbeat.lock().expect("lock")
    }

    pub fn touch(&self, at: Timestamp) {
        *self.heartbeat.lock().expect("lock") = (Instant::now(), at);
    }

    /// Asks the connection's stream to end with `reason` (first reason wins).
    pub fn close(&self, reason: CloseReason) {
        self.close.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Whether the connection was asked to end (revoked, superseded, shutdown).
    pub fn is_closing(&self) -> bool {
        self.close.borrow().is_some()
    }

    /// Queues a message for the node; `false` if the stream is gone or full.
    pub fn send(&self, msg: ToNode) -> bool {
        self.tx.try_send(msg).is_ok()
    }

    /// Queues a message that must not be dropped, waiting up to `within`
    /// while the stream is full (backpressure on the caller); `false` if the
    /// stream is gone or stayed full that long.
    pub async fn send_wait(&self, msg: ToNode, within: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.tx.send(msg)).await,
            Ok(Ok(()))
        )
    }
}

/// What the stream driver holds: the receiving ends of a registered connection.
pub struct ConnectionParts {
    pub conn: Arc<Connection>,
    pub rx: mpsc::Receiver<ToNode>,
    pub closed: watch::Receiver<Option<CloseReason>>,
}

#[derive(Default)]
struct Connections {
    by_id: HashMap<NodeId, Arc<Connection>>,
    /// Node names of `by_id` (names are unique and never change).
    by_name: HashMap<NodeName, NodeId>,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<Connections>>,
    next_id: Arc<AtomicU64>,
    metrics: Metrics,
}

impl Registry {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            inner: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            metrics,
        }
    }

    /// Registers a new connection for a node, closing any older one.
    pub fn register(
        &self,
        node_id: NodeId,
        name: NodeName,
        peer: Option<SocketAddr>,
        now: Timestamp,
    ) -> ConnectionParts {
        let (tx, rx) = mpsc::channel(256);
        let (close, closed) = watch::channel(None);
        let conn = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            node_id: node_id.clone(),
            name,
            peer,
            tx,
            close,
            heartbeat: Mutex::new((Instant::now(), now)),
        });
        let old = {
            let mut map = self.inner.lock().expect("lock");
            map.by_name.insert(conn.name.clone(), node_id.clone());
            map.by_id.insert(node_id, conn.clone())
        };
        match old {
            Some(old) => old.close(CloseReason::Superseded),
            None => {
                self.metrics.connected_nodes.inc();
            }
        }
        ConnectionParts { conn, rx, closed }
    }

    /// Removes the connection if it is still the node's current one.
    /// Returns whether it was (and so whether the node is now offline).
    pub fn remove(&self, conn: &Connection) -> bool {
        let mut map = self.inner.lock().expect("lock");
        let current = map
            .by_id
            .get(&conn.node_id)
            .is_some_and(|c| c.id == conn.id);
        if current {
            map.by_id.remove(&conn.node_id);
            map.by_name.remove(&conn.name);
            self.metrics.connected_nodes.dec();
        }
        current
    }

    pub fn get(&self, node_id: &NodeId) -> Option<Arc<Connection>> {
        self.inner.lock().expect("lock").by_id.get(node_id).cloned()
    }

    /// The connection of the node called `name`, if it is connected.
    pub fn by_name(&self, name: &NodeName) -> Option<Arc<Connection>> {
        let map = self.inner.lock().expect("lock");
        map.by_name
            .get(name)
            .and_then(|id| map.by_id.get(id))
            .cloned()
    }

    pub fn is_online(&self, node_id: &NodeId) -> bool {
        self.inner.lock().expect("lock").by_id.contains_key(node_id)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("lock").by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<Connection>> {
        self.inner
            .lock()
            .expect("lock")
            .by_id
            .values()
            .cloned()
            .collect()
    }

    pub fn close(&self, node_id: &NodeId, reason: CloseReason) -> bool {
        self.get(node_id).map(|c| c.close(reason)).is_some()
    }

    pub fn close_all(&self, reason: CloseReason) {
        for c in self.all() {
            c.close(reason.clone());
        }
    }
}
