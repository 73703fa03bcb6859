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
    receivers: Mutex<HashMap<String, Receiver>>,
}

impl Mirrors {
    pub async fn open(
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
            receivers: Mutex::default(),
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
        if let Some(tx) = self
            .drivers
            .lock()
            .expect("lock")
            .get(node)
            .filter(|t| !t.is_closed())
        {
            return Ok(tx.clone());
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
        let receiver_for_reaper = receiver.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = driver::Driver::new(
            (node.to_owned(), node_id.clone()),
            loaded,
            receiver,
            self.registry.clone(),
            self.clock.clone(),
            tx.clone(),
        );
        let mut drivers = self.drivers.lock().expect("lock");
        if let Some(existing) = drivers.get(node).filter(|t| !t.is_closed()) {
            return Ok(existing.clone());
        }
        tokio::spawn(driver.run(rx));
        drivers.insert(node.to_owned(), tx.clone());
        self.receivers
            .lock()
            .expect("lock")
            .insert(node.to_owned(), receiver_for_reaper);
        Ok(tx)
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

    pub fn immutable_of(&self, _node: &str) -> ganglion_mirror::ImmutablePaths {
        ganglion_mirror::ImmutablePaths::default()
    }
}
