//! The mesh monitor and the status writer: two supervised workers.
//!
//! - [`MeshMonitor`] closes the stream of any node silent for longer than the
//!   silence limit (missed heartbeats × interval); closing it marks it offline.
//! - [`StatusWriter`] persists status changes (online, heartbeats, offline)
//!   asynchronously and in batches, so no handler waits on the database for them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ganglion_store::{StatusUpdate, Store};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::registry::{CloseReason, Registry};
use crate::worker::{Periodic, Worker, WorkerHandle};

pub struct MeshMonitor {
    registry: Registry,
    silence_limit: Duration,
    tick: Duration,
}

impl MeshMonitor {
    pub fn new(registry: Registry, heartbeat_interval: Duration, silence_limit: Duration) -> Self {
        let tick = (heartbeat_interval / 2).max(Duration::from_millis(50));
        Self {
            registry,
            silence_limit,
            tick,
        }
    }

    /// Closes every connection silent for longer than the limit; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut closed = 0;
        for conn in self.registry.all() {
            let (seen, _) = conn.last_heartbeat();
            if now.duration_since(seen) > self.silence_limit {
                tracing::warn!(node = %conn.name, silent_s = now.duration_since(seen).as_secs(), "node silent; closing its stream");
                conn.close(CloseReason::HeartbeatTimeout);
                closed += 1;
            }
        }
        closed
    }
}

#[async_trait]
impl Periodic for MeshMonitor {
    fn name(&self) -> &'static str {
        "mesh-monitor"
    }

    fn period(&self) -> Duration {
        self.tick
    }

    async fn tick(&mut self) -> Result<(), String> {
        self.sweep(Instant::now());
        Ok(())
    }
}

/// The sending side of the status writer; cheap to clone, never blocks.
#[derive(Clone)]
pub struct StatusSink(mpsc::UnboundedSender<StatusUpdate>);

impl StatusSink {
    pub fn send(&self, update: StatusUpdate) {
        if self.0.send(update).is_err() {
            // Only after the writer drained and stopped: the hub is shutting
            // down, and marks every node offline as it stops.
            tracing::debug!("status writer stopped; status change left to the shutdown");
        }
    }
}

pub struct StatusWriter {
    store: Arc<dyn Store>,
    rx: mpsc::UnboundedReceiver<StatusUpdate>,
}

/// Updates written in one transaction at most.
const BATCH: usize = 512;

impl StatusWriter {
    pub fn new(store: Arc<dyn Store>) -> (Self, StatusSink) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { store, rx }, StatusSink(tx))
    }

    async fn write(&self, batch: &mut Vec<StatusUpdate>) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        self.store
            .update_status(batch)
            .await
            .map_err(|e| format!("writing node status: {e}"))?;
        batch.clear();
        Ok(())
    }
}

#[async_trait]
impl Worker for StatusWriter {
    fn name(&self) -> &'static str {
        "status-writer"
    }

    async fn run(&mut self, cancel: CancellationToken, _: &WorkerHandle) -> Result<(), String> {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                biased;
                n = self.rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        // Every sender is gone (the servers stopped): nothing
                        // more can arrive; wait for the shutdown to reach us.
                        cancel.cancelled().await;
                        return Ok(());
                    }
                    self.write(&mut batch).await?;
                }
                _ = cancel.cancelled() => {
                    // Drain what is queued, so a clean shutdown loses no status.
                    while let Ok(u) = self.rx.try_recv() {
                        batch.push(u);
                    }
                    return self.write(&mut batch).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ganglion_core::{NodeId, NodeName, Timestamp};

    use super::*;
    use crate::metrics::Metrics;

    #[tokio::test(start_paused = true)]
    async fn silent_nodes_are_closed_after_the_limit() {
        let registry = Registry::new(Metrics::new());
        let parts = registry.register(
            NodeId::generate(),
            NodeName::parse("n1").unwrap(),
            None,
            Timestamp(0),
        );
        let monitor = MeshMonitor::new(
            registry.clone(),
            Duration::from_secs(5),
            Duration::from_secs(15),
        );
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(monitor.sweep(Instant::now()), 0);
        parts.conn.touch(Timestamp(14_000));
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(
            monitor.sweep(Instant::now()),
            0,
            "a heartbeat resets the silence"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(monitor.sweep(Instant::now()), 1);
        assert_eq!(*parts.closed.borrow(), Some(CloseReason::HeartbeatTimeout));
    }
}
