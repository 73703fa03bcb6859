//! Node mirrors at the hub: one driver per node around the sans-IO
//! [`SinkEngine`](ganglion_mirror::SinkEngine), the confined receiver, and the
//! shared index (`DATA_DIR/mirror-index.db`) and transfer lock registry.
//!
//! - [`driver`]: the per-node event loop (notices, fetches, group commits, acks).
//! - [`convert`]: wire ↔ mirror domain types.
//! - [`upload`]: the `Upload` stream: hash while streaming, stage, report.

pub mod convert;
pub mod driver;
pub mod upload;
pub mod workers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ganglion_core::NodeId;
use ganglion_core::time::SharedClock;
use ganglion_mirror::ImmutablePaths;
use ganglion_mirror::index::Index;
use ganglion_mirror::locks::LockRegistry;
use ganglion_mirror::receive::Receiver;
use tokio::sync::{mpsc, oneshot};

use crate::Error;
use crate::metrics::Metrics;
use crate::registry::Registry;
pub use driver::{DriverEvent, MirrorStatus};

/// Idle transfers are dropped (and their locks released) after this long.
pub const TRANSFER_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Mirrors {
    data_dir: PathBuf,
    index: Index,
    locks: LockRegistry,
    registry: Registry,
    clock: SharedClock,
    metrics: Metrics,
    drivers: Mutex<HashMap<String, mpsc::UnboundedSender<DriverEvent>>>,
    /// Held while a driver is being opened, so two callers never load the
    /// same index twice.
    opening: tokio::sync::Mutex<()>,
    receivers: Mutex<HashMap<String, Receiver>>,
    store: Arc<dyn ganglion_store::Store>,
    /// Immutable paths per node: held in memory, versioned, never read per chunk.
    immutable: Mutex<HashMap<String, ImmutablePaths>>,
}

impl Mirrors {
    pub async fn open(
        store: Arc<dyn ganglion_store::Store>,
        data_dir: PathBuf,
        registry: Registry,
        clock: SharedClock,
        metrics: Metrics,
    ) -> Result<Arc<Self>, Error> {
        let index = Index::open(&data_dir.join("mirror-index.db"))
            .await
            .map_err(|e| Error::Unavailable(format!("mirror index: {e}")))?;
        Ok(Arc::new(Self {
            data_dir,
            index,
            locks: LockRegistry::new(TRANSFER_IDLE_TIMEOUT),
            registry,
            clock,
            metrics,
            drivers: Mutex::default(),
            opening: tokio::sync::Mutex::default(),
            receivers: Mutex::default(),
            store,
            immutable: Mutex::default(),
        }))
    }

    pub fn locks(&self) -> &LockRegistry {
        &self.locks
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The driver of a node's mirror, started on first use. Loading the index
    /// re-hashes nothing: the hub trusts what it wrote.
    pub async fn driver(
        &self,
        node: &str,
        node_id: &NodeId,
    ) -> Result<mpsc::UnboundedSender<DriverEvent>, Error> {
        if let Some(tx) = self.running_driver(node) {
            return Ok(tx);
        }
        let _opening = self.opening.lock().await;
        if let Some(tx) = self.running_driver(node) {
            return Ok(tx);
        }
        let receiver = {
            let (dir, node, index, locks) = (
                self.data_dir.clone(),
                node.to_owned(),
                self.index.clone(),
                self.locks.clone(),
            );
            tokio::task::spawn_blocking(move || Receiver::open(&dir, &node, index, locks))
                .await
                .map_err(|e| Error::Unavailable(format!("opening the mirror: {e}")))?
                .map_err(|e| Error::Unavailable(format!("opening the mirror: {e}")))?
        };
        let loaded = self
            .index
            .load(node)
            .await
            .map_err(|e| Error::Unavailable(format!("loading the mirror index: {e}")))?;
        let patterns = self.store.immutable_patterns(node_id).await?;
        let immutable = ImmutablePaths::new(1, patterns)
            .map_err(|e| Error::Unavailable(format!("stored immutable paths of {node}: {e}")))?;
        self.immutable
            .lock()
            .expect("lock")
            .insert(node.to_owned(), immutable.clone());
        let receiver_for_reaper = receiver.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = driver::Driver::new(
            (node.to_owned(), node_id.clone()),
            ganglion_mirror::SinkEngine::new(loaded.entries, loaded.peer_seq, immutable),
            receiver,
            self.registry.clone(),
            self.clock.clone(),
            tx.clone(),
        );
        let mut drivers = self.drivers.lock().expect("lock");
        tokio::spawn(driver.run(rx));
        drivers.insert(node.to_owned(), tx.clone());
        self.receivers
            .lock()
            .expect("lock")
            .insert(node.to_owned(), receiver_for_reaper);
        Ok(tx)
    }

    fn running_driver(&self, node: &str) -> Option<mpsc::UnboundedSender<DriverEvent>> {
        let drivers = self.drivers.lock().expect("lock");
        drivers.get(node).filter(|t| !t.is_closed()).cloned()
    }

    /// Opens the driver of every mirror the index knows (of nodes not
    /// revoked), so that nodes reconnecting after a hub restart find their
    /// index loaded. Run once the hub serves: a node that comes first waits
    /// for its own mirror only. Loading re-hashes nothing.
    pub async fn open_known(&self) {
        let started = std::time::Instant::now();
        let (mirrors, nodes) = match (self.index.mirrors().await, self.store.list_nodes().await) {
            (Ok(m), Ok(n)) => (m, n),
            (Err(e), _) => {
                return tracing::warn!(error = %e, "listing mirrors failed; they open on first use");
            }
            (_, Err(e)) => {
                return tracing::warn!(error = %e, "listing nodes failed; mirrors open on first use");
            }
        };
        let ids: HashMap<String, NodeId> = nodes
            .into_iter()
            .filter(|n| n.revoked_at.is_none())
            .map(|n| (n.name.to_string(), n.id))
            .collect();
        let mut opened = 0usize;
        for name in mirrors {
            let Some(id) = ids.get(&name) else { continue };
            match self.driver(&name, id).await {
                Ok(_) => opened += 1,
                Err(e) => tracing::warn!(node = %name, error = %e, "opening a mirror failed"),
            }
        }
        tracing::info!(
            mirrors = opened,
            took_ms = started.elapsed().as_millis() as u64,
            "mirrors opened"
        );
    }

    /// The node's control stream is up: returns the sequence applied so far.
    pub async fn attach(&self, node: &str, node_id: &NodeId) -> Result<u64, Error> {
        let tx = self.driver(node, node_id).await?;
        let (reply, rx) = oneshot::channel();
        let _ = tx.send(DriverEvent::Connected { reply });
        rx.await
            .map_err(|_| Error::Unavailable("mirror driver stopped".into()))
    }

    pub fn detach(&self, node: &str) {
        if let Some(tx) = self.drivers.lock().expect("lock").get(node) {
            let _ = tx.send(DriverEvent::Disconnected);
        }
    }

    pub fn send(&self, node: &str, event: DriverEvent) {
        if let Some(tx) = self.drivers.lock().expect("lock").get(node) {
            let _ = tx.send(event);
        }
    }

    pub async fn status(&self, node: &str, node_id: &NodeId) -> Result<MirrorStatus, Error> {
        let tx = self.driver(node, node_id).await?;
        let (reply, rx) = oneshot::channel();
        let _ = tx.send(DriverEvent::Status { reply });
        let mut status = rx
            .await
            .map_err(|_| Error::Unavailable("mirror driver stopped".into()))?;
        status.in_flight = self.locks.in_flight_for(node) as u64;
        Ok(status)
    }

    /// The receiver of a node's mirror (for reads, verify and uploads).
    pub async fn receiver(&self, node: &str, node_id: &NodeId) -> Result<Receiver, Error> {
        let tx = self.driver(node, node_id).await?;
        let (reply, rx) = oneshot::channel();
        let _ = tx.send(DriverEvent::Receiver { reply });
        rx.await
            .map_err(|_| Error::Unavailable("mirror driver stopped".into()))
    }

    /// The receivers opened so far (for the transfer reaper).
    pub fn open_receivers(&self) -> Vec<Receiver> {
        self.receivers
            .lock()
            .expect("lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The node's immutable paths as they are now (checked at transfer start).
    pub fn immutable_of(&self, node: &str) -> ImmutablePaths {
        self.immutable
            .lock()
            .expect("lock")
            .get(node)
            .cloned()
            .unwrap_or_default()
    }

    pub async fn immutable_patterns(
        &self,
        node: &str,
        node_id: &NodeId,
    ) -> Result<Vec<String>, Error> {
        self.driver(node, node_id).await?;
        Ok(self.immutable_of(node).patterns().to_vec())
    }

    /// Adds or removes a pattern: stored first, then a new version is pushed
    /// to the driver (which checks it again before every commit).
    pub async fn change_immutable(
        &self,
        node: &str,
        node_id: &NodeId,
        pattern: &str,
        add: bool,
    ) -> Result<Vec<String>, Error> {
        self.driver(node, node_id).await?;
        let current = self.immutable_of(node);
        let mut patterns: Vec<String> = current.patterns().to_vec();
        if add {
            patterns.push(pattern.to_owned());
        } else {
            patterns.retain(|p| p != pattern);
        }
        // Validate before storing anything.
        let next = ImmutablePaths::new(current.version() + 1, patterns)
            .map_err(|e| Error::InvalidArgument(format!("pattern {pattern:?}: {e}")))?;
        let changed = if add {
            self.store
                .add_immutable(node_id, pattern, self.clock.now())
                .await?
        } else {
            self.store.remove_immutable(node_id, pattern).await?
        };
        if !changed {
            let what = if add {
                "is already immutable"
            } else {
                "is not an immutable pattern"
            };
            return Err(Error::Conflict(format!("{pattern:?} {what} for {node}")));
        }
        self.immutable
            .lock()
            .expect("lock")
            .insert(node.to_owned(), next.clone());
        self.send(node, DriverEvent::SetImmutable(next.clone()));
        tracing::info!(
            node,
            pattern,
            add,
            version = next.version(),
            "immutable paths changed"
        );
        Ok(next.patterns().to_vec())
    }
}
