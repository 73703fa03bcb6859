//! The live control streams: at most one per node.
//!
//! A [`Connection`] is the hub's side of one node's `Connect` stream: a channel
//! of messages to the node, the time of its last heartbeat, and a way to close
//! it with a reason. The registry knows which nodes are online; closing a
//! connection (revocation, heartbeat silence, shutdown, a newer connection from
//! the same node) ends its stream at once.
//!
//! A node process names itself with a random instance id at connect. A
//! connection from the same instance (a network blip) supersedes the old one;
//! one from a *different* instance while the old one is alive (it heartbeated
//! recently) is refused: two processes share one credential (a copied state
//! dir), and superseding would make them take turns forever. The refusal is
//! remembered per node for `nodes ls`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ganglion_core::{Dispatch, NodeId, NodeName, Policy, TaskId, TaskToNode, Timestamp};
use ganglion_mirror::MirrorToNode;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Messages the hub sends to a node (domain form; the gRPC layer converts),
/// one variant per subsystem. Every slot of a connection's queue is as large
/// as the largest variant, so large ones are boxed (the policy here, the
/// dispatch in [`TaskToNode`]).
#[derive(Clone, Debug, PartialEq)]
pub enum ToNode {
    Policy(Box<Policy>),
    Task(TaskToNode),
    Mirror(MirrorToNode),
}

impl ToNode {
    pub fn policy(p: Policy) -> Self {
        ToNode::Policy(Box::new(p))
    }

    pub fn dispatch(d: Dispatch) -> Self {
        ToNode::Task(TaskToNode::Dispatch(Box::new(d)))
    }

    pub fn cancel(id: TaskId) -> Self {
        ToNode::Task(TaskToNode::Cancel(id))
    }
}

/// Why a connection was closed by the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Revoked,
    HeartbeatTimeout,
    Superseded,
    Shutdown,
    /// The hub's driver of the node's mirror failed and restarted from the
    /// index: the node reconnects and resends what it held.
    MirrorRestarted,
}

impl CloseReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::Revoked => "revoked",
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::Superseded => "superseded by a newer connection",
            CloseReason::Shutdown => "hub shutting down",
            CloseReason::MirrorRestarted => "the hub's mirror of this node restarted",
        }
    }
}

pub struct Connection {
    pub id: u64,
    pub node_id: NodeId,
    pub name: NodeName,
    pub peer: Option<SocketAddr>,
    /// The node process's random instance id (empty: not sent).
    pub instance: String,
    tx: mpsc::Sender<ToNode>,
    close: watch::Sender<Option<CloseReason>>,
    heartbeat: Mutex<(Instant, Timestamp)>,
}

impl Connection {
    pub fn last_heartbeat(&self) -> (Instant, Timestamp) {
        *self.heartbeat.lock()
    }

    pub fn touch(&self, at: Timestamp) {
        *self.heartbeat.lock() = (Instant::now(), at);
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
    /// The last duplicate refused per node (kept until the hub restarts).
    duplicates: HashMap<NodeId, Duplicate>,
}

/// A connection refused because another running process holds the node's
/// credential (see the module docs), as `nodes ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// Where the refused connection came from.
    pub refused_peer: Option<SocketAddr>,
    /// Where the connection kept comes from.
    pub kept_peer: Option<SocketAddr>,
    /// When the last one was refused.
    pub at: Timestamp,
    /// How many were refused (since the hub started).
    pub refused: u64,
}

/// A node's connection as it arrives, for [`Registry::connect`].
pub struct Arrival {
    pub node_id: NodeId,
    pub name: NodeName,
    pub peer: Option<SocketAddr>,
    /// The node process's random instance id (from its hello).
    pub instance: String,
}

/// Why [`Registry::connect`] refused a connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("credential in use by another running node (a copied state dir?)")]
    Duplicate { kept_peer: Option<SocketAddr> },
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
        let conn = self.connection(node_id, name, peer, String::new(), now);
        let old = {
            let mut map = self.inner.lock();
            Self::insert(&mut map, &conn.0)
        };
        self.closed_old(old);
        conn.1
    }

    /// Registers a node's connection from process `instance`, unless another
    /// process holds a live connection for the node: one that heartbeated
    /// (or connected) within `alive_within`. An older connection of the same
    /// instance, or a silent one (a crashed node's stream that lingers), is
    /// superseded.
    pub fn connect(
        &self,
        arrival: Arrival,
        now: Timestamp,
        alive_within: std::time::Duration,
    ) -> Result<ConnectionParts, Refused> {
        let Arrival {
            node_id,
            name,
            peer,
            instance,
        } = arrival;
        let (conn, parts) = self.connection(node_id, name, peer, instance, now);
        let old = {
            let mut map = self.inner.lock();
            if let Some(old) = map.by_id.get(&conn.node_id)
                && !old.instance.is_empty()
                && old.instance != conn.instance
                && !old.is_closing()
                && old.last_heartbeat().0.elapsed() <= alive_within
            {
                let kept_peer = old.peer;
                let d = map
                    .duplicates
                    .entry(conn.node_id.clone())
                    .or_insert(Duplicate {
                        refused_peer: peer,
                        kept_peer,
                        at: now,
                        refused: 0,
                    });
                d.refused_peer = peer;
                d.kept_peer = kept_peer;
                d.at = now;
                d.refused += 1;
                drop(map);
                self.metrics.node_duplicate_refused.inc();
                tracing::warn!(
                    node = %conn.name,
                    kept = ?kept_peer,
                    refused = ?peer,
                    "credential in use by another running node (a copied state dir?); refusing the newcomer"
                );
                return Err(Refused::Duplicate { kept_peer });
            }
            Self::insert(&mut map, &conn)
        };
        self.closed_old(old);
        Ok(parts)
    }

    /// The last duplicate connection refused for this node, if any.
    pub fn duplicate(&self, node_id: &NodeId) -> Option<Duplicate> {
        self.inner.lock().duplicates.get(node_id).cloned()
    }

    fn insert(map: &mut Connections, conn: &Arc<Connection>) -> Option<Arc<Connection>> {
        map.by_name.insert(conn.name.clone(), conn.node_id.clone());
        map.by_id.insert(conn.node_id.clone(), conn.clone())
    }

    fn closed_old(&self, old: Option<Arc<Connection>>) {
        match old {
            Some(old) => old.close(CloseReason::Superseded),
            None => {
                self.metrics.connected_nodes.inc();
            }
        }
    }

    fn connection(
        &self,
        node_id: NodeId,
        name: NodeName,
        peer: Option<SocketAddr>,
        instance: String,
        now: Timestamp,
    ) -> (Arc<Connection>, ConnectionParts) {
        let (tx, rx) = mpsc::channel(256);
        let (close, closed) = watch::channel(None);
        let conn = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            node_id,
            name,
            peer,
            instance,
            tx,
            close,
            heartbeat: Mutex::new((Instant::now(), now)),
        });
        let parts = ConnectionParts {
            conn: conn.clone(),
            rx,
            closed,
        };
        (conn, parts)
    }

    /// Removes the connection if it is still the node's current one.
    /// Returns whether it was (and so whether the node is now offline).
    pub fn remove(&self, conn: &Connection) -> bool {
        let mut map = self.inner.lock();
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
        self.inner.lock().by_id.get(node_id).cloned()
    }

    /// The connection of the node called `name`, if it is connected.
    pub fn by_name(&self, name: &NodeName) -> Option<Arc<Connection>> {
        let map = self.inner.lock();
        map.by_name
            .get(name)
            .and_then(|id| map.by_id.get(id))
            .cloned()
    }

    pub fn is_online(&self, node_id: &NodeId) -> bool {
        self.inner.lock().by_id.contains_key(node_id)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<Connection>> {
        self.inner.lock().by_id.values().cloned().collect()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const ALIVE: Duration = Duration::from_secs(7);

    fn node() -> (NodeId, NodeName) {
        (NodeId::generate(), NodeName::parse("n1").expect("valid"))
    }

    fn peer(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn arrival(node: &(NodeId, NodeName), port: u16, instance: &str) -> Arrival {
        Arrival {
            node_id: node.0.clone(),
            name: node.1.clone(),
            peer: peer(port),
            instance: instance.into(),
        }
    }

    #[tokio::test]
    async fn a_panic_while_holding_the_registry_leaves_it_usable() {
        let registry = Registry::new(Metrics::new());
        let r = registry.clone();
        let panicked = std::thread::spawn(move || {
            let _map = r.inner.lock();
            panic!("a request panics while it holds the registry");
        })
        .join();
        assert!(panicked.is_err());
        let n = node();
        let parts = registry
            .connect(arrival(&n, 1, "a"), Timestamp(1), ALIVE)
            .expect("connects after the panic");
        parts.conn.touch(Timestamp(2));
        assert!(registry.is_online(&n.0));
        assert!(registry.remove(&parts.conn));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_process_is_refused_while_the_first_is_alive() {
        let registry = Registry::new(Metrics::new());
        let n = node();
        let first = registry
            .connect(arrival(&n, 1, "a"), Timestamp(1), ALIVE)
            .expect("first connects");
        // Another process (a copied state dir), while the first heartbeats.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(5)).await;
            first.conn.touch(Timestamp(2));
            let refused = registry.connect(arrival(&n, 2, "b"), Timestamp(3), ALIVE);
            assert!(
                matches!(refused, Err(Refused::Duplicate { kept_peer }) if kept_peer == peer(1))
            );
        }
        assert!(!first.conn.is_closing(), "the first one keeps working");
        assert_eq!(registry.get(&n.0).map(|c| c.id), Some(first.conn.id));
        let d = registry.duplicate(&n.0).expect("remembered");
        assert_eq!(
            (d.refused_peer, d.kept_peer, d.refused),
            (peer(2), peer(1), 3)
        );
        assert_eq!(registry.metrics.node_duplicate_refused.get(), 3);
        assert!(
            registry
                .metrics
                .encode()
                .contains("ganglion_node_duplicate_refused_total 3")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_process_or_a_silent_stream_is_superseded() {
        let registry = Registry::new(Metrics::new());
        let n = node();
        let first = registry
            .connect(arrival(&n, 1, "a"), Timestamp(1), ALIVE)
            .expect("first connects");
        // The same process again (a network blip): supersedes at once.
        let again = registry
            .connect(arrival(&n, 3, "a"), Timestamp(2), ALIVE)
            .expect("same instance reconnects");
        assert!(first.conn.is_closing());
        // Another process after the old stream went silent (a crashed
        // node's stream lingering): supersedes too.
        tokio::time::advance(ALIVE + Duration::from_millis(1)).await;
        let restarted = registry
            .connect(arrival(&n, 4, "b"), Timestamp(3), ALIVE)
            .expect("a silent stream does not hold the credential");
        assert!(again.conn.is_closing());
        assert_eq!(registry.get(&n.0).map(|c| c.id), Some(restarted.conn.id));
        assert_eq!(registry.duplicate(&n.0), None);
    }
}
