//! Node mirrors at the hub: one driver per node around the sans-IO
//! [`SinkEngine`](ganglion_mirror::SinkEngine), the confined receiver, and the
//! shared index (`DATA_DIR/mirror-index.db`) and transfer lock registry.
//!
//! - [`driver`]: the per-node event loop (notices, fetches, group commits, acks).
//! - [`upload`]: the `Upload` stream: hash while streaming, stage, report.
//! - `supervise`: a driver as a supervised worker (`mirror:NODE`), restarted
//!   from the index after a panic.
//! - [`workers`]: the transfer reaper and the orphan purge.

pub mod driver;
mod supervise;
#[cfg(test)]
mod tests;
pub mod upload;
pub mod workers;
pub mod writes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ganglion_core::NodeId;
use ganglion_core::time::SharedClock;
use ganglion_mirror::index::SharedIndex;
use ganglion_mirror::locks::LockRegistry;
use ganglion_mirror::receive::Receiver;
use ganglion_mirror::{ImmutablePaths, MirrorToHub};
// Not poisoned by a panic: one failed request must not stop every later one.
use ganglion_store::SqliteMirrorIndex;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::Error;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::worker::Supervisor;
pub use driver::{DriverEvent, MirrorStatus};
use driver::{OpenMirror, OpenMirrors};

/// Idle transfers are dropped (and their locks released) after this long.
pub const TRANSFER_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A mirror driver idle this long while its node is away closes (two
/// directory handles and the entries in memory each); next use reopens it.
pub const DRIVER_IDLE_CLOSE: Duration = Duration::from_secs(300);
// A reopened mirror sweeps its staging: every transfer of the closed one must
// have timed out by then (a node's uploads can outlive its control stream).
const _: () = assert!(DRIVER_IDLE_CLOSE.as_secs() > 2 * TRANSFER_IDLE_TIMEOUT.as_secs());

/// At hub start, the mirrors of at most this many nodes (those seen last)
/// are opened ahead of their reconnect; the others open on first use.
pub const EAGER_OPENS: usize = 64;

/// A failed load of a mirror's entries is retried after this long (the
/// driver holds the events that wait for them).
const LOAD_RETRY: Duration = Duration::from_secs(1);

pub struct Mirrors {
    data_dir: PathBuf,
    index: SharedIndex,
    locks: LockRegistry,
    registry: Registry,
    clock: SharedClock,
    metrics: Metrics,
    /// Running drivers and their receivers. Events are sent under this lock
    /// only (see [`Self::deliver`]), which lets an idle driver close safely.
    open: OpenMirrors,
    /// One lock per mirror being opened, so two callers never open the same
    /// mirror twice while different mirrors open in parallel (nodes
    /// reconnecting after a hub restart do not queue behind each other).
    opening: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    idle_close: Mutex<Duration>,
    store: Arc<dyn ganglion_store::Store>,
    /// Immutable paths per node: held in memory, versioned, never read per chunk.
    immutable: Mutex<HashMap<String, ImmutablePaths>>,
    /// Where each open driver is listed (`mirror:NODE`).
    supervisor: Supervisor,
    /// Nodes that do not sync their workspace, and why (as they said; an
    /// emptied or unmounted workspace). Cleared when the node says it syncs
    /// again or connects without saying it.
    halted: Mutex<HashMap<String, String>>,
    /// Itself, for drivers restarting after a panic.
    me: Weak<Mirrors>,
}

impl Mirrors {
    pub async fn open(
        store: Arc<dyn ganglion_store::Store>,
        data_dir: PathBuf,
        registry: Registry,
        clock: SharedClock,
        metrics: Metrics,
        supervisor: Supervisor,
    ) -> Result<Arc<Self>, Error> {
        let index = SqliteMirrorIndex::open(&data_dir.join("mirror-index.db"))
            .await
            .map_err(|e| Error::Unavailable(format!("mirror index: {e}")))?;
        Ok(Arc::new_cyclic(|me| Self {
            data_dir,
            index: Arc::new(index),
            locks: LockRegistry::new(TRANSFER_IDLE_TIMEOUT),
            registry,
            clock,
            metrics,
            open: OpenMirrors::default(),
            opening: Mutex::default(),
            idle_close: Mutex::new(DRIVER_IDLE_CLOSE),
            store,
            immutable: Mutex::default(),
            supervisor,
            halted: Mutex::default(),
            me: me.clone(),
        }))
    }

    pub fn locks(&self) -> &LockRegistry {
        &self.locks
    }

    pub fn index(&self) -> &SharedIndex {
        &self.index
    }

    #[cfg(test)]
    pub(crate) fn store_for_tests(&self) -> &dyn ganglion_store::Store {
        self.store.as_ref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// How long a driver stays open, idle, with its node away (tests shorten it).
    pub fn set_idle_close(&self, after: Duration) {
        *self.idle_close.lock() = after;
    }

    /// Whether a driver is running for the node's mirror.
    pub fn is_open(&self, node: &str) -> bool {
        self.running_driver(node).is_some()
    }

    /// Sends an event to the node's mirror driver, opening it if needed. The
    /// send happens under the lock of the open mirrors: a driver closing for
    /// idleness either sees the event queued and stays, or has closed its
    /// channel, and then the event goes to a freshly opened driver.
    async fn deliver(&self, node: &str, node_id: &NodeId, event: DriverEvent) -> Result<(), Error> {
        let mut event = event;
        loop {
            {
                let open = self.open.lock();
                if let Some(m) = open.get(node) {
                    match m.tx.send(event) {
                        Ok(()) => return Ok(()),
                        Err(mpsc::error::SendError(e)) => event = e,
                    }
                }
            }
            self.driver(node, node_id).await?;
        }
    }

    /// Starts the driver of a node's mirror unless one runs. Cheap at any
    /// mirror size: two directory handles and one index row. The entries
    /// load when a change needs them (the driver holds it meanwhile).
    /// Nothing is re-hashed: the hub trusts what it wrote.
    pub async fn driver(&self, node: &str, node_id: &NodeId) -> Result<(), Error> {
        if self.running_driver(node).is_some() {
            return Ok(());
        }
        let lock = {
            let mut opening = self.opening.lock();
            opening.entry(node.to_owned()).or_default().clone()
        };
        let opened = {
            let _opening = lock.lock().await;
            if self.running_driver(node).is_some() {
                Ok(())
            } else {
                self.start_driver(node, node_id).await
            }
        };
        let mut opening = self.opening.lock();
        // Ours and the map's: nobody else waits on it.
        if Arc::strong_count(&lock) == 2 {
            opening.remove(node);
        }
        opened
    }

    async fn start_driver(&self, node: &str, node_id: &NodeId) -> Result<(), Error> {
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
        let summary = self
            .index
            .summary(node)
            .await
            .map_err(|e| Error::Unavailable(format!("reading the mirror index: {e}")))?;
        let patterns = self.store.immutable_patterns(node_id).await?;
        let immutable = ImmutablePaths::new(1, patterns)
            .map_err(|e| Error::Unavailable(format!("stored immutable paths of {node}: {e}")))?;
        self.immutable
            .lock()
            .insert(node.to_owned(), immutable.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let (index, name) = (self.index.clone(), node.to_owned());
        let start = driver::Start {
            summary,
            immutable,
            loader: Box::new(move |immutable| {
                let (to, engine) = oneshot::channel();
                tokio::spawn(load(index.clone(), name.clone(), immutable, to));
                engine
            }),
            idle_close: *self.idle_close.lock(),
            open: self.open.clone(),
            worker: self.supervisor.register(format!("mirror:{node}")),
        };
        let supervised = supervise::Supervised {
            mirrors: self.me.clone(),
            node: node.to_owned(),
            node_id: node_id.clone(),
            tx: tx.clone(),
            worker: start.worker.clone(),
        };
        let driver = driver::Driver::new(
            (node.to_owned(), node_id.clone()),
            receiver.clone(),
            self.registry.clone(),
            self.clock.clone(),
            tx.clone(),
            start,
        );
        let mut open = self.open.lock();
        tokio::spawn(supervise::run(driver, rx, supervised));
        open.insert(node.to_owned(), OpenMirror { tx, receiver });
        Ok(())
    }

    fn running_driver(&self, node: &str) -> Option<mpsc::UnboundedSender<DriverEvent>> {
        let open = self.open.lock();
        open.get(node)
            .map(|m| &m.tx)
            .filter(|t| !t.is_closed())
            .cloned()
    }

    /// Opens the drivers of the mirrors of the [`EAGER_OPENS`] nodes seen
    /// last (not revoked), so that they find them open when they reconnect
    /// after a hub restart (and their staging is swept). Run once the hub
    /// serves; other mirrors open on first use, and drivers of nodes that
    /// stay away close when idle ([`DRIVER_IDLE_CLOSE`]).
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
        let mirrors: std::collections::HashSet<String> = mirrors.into_iter().collect();
        let mut nodes: Vec<_> = nodes
            .into_iter()
            .filter(|n| n.revoked_at.is_none() && mirrors.contains(n.name.as_str()))
            .collect();
        nodes.sort_by_key(|n| std::cmp::Reverse(n.last_heartbeat));
        let mut opened = 0usize;
        for n in nodes.iter().take(EAGER_OPENS) {
            match self.driver(n.name.as_str(), &n.id).await {
                Ok(()) => opened += 1,
                Err(e) => tracing::warn!(node = %n.name, error = %e, "opening a mirror failed"),
            }
        }
        tracing::info!(
            mirrors = opened,
            known = nodes.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "mirrors opened"
        );
    }

    /// The node's control stream is up (its workspace replica identity as
    /// it says): returns the sequence applied so far.
    pub async fn attach(
        &self,
        node: &str,
        node_id: &NodeId,
        replica: String,
    ) -> Result<u64, Error> {
        self.halted.lock().remove(node);
        let (reply, rx) = oneshot::channel();
        self.deliver(node, node_id, DriverEvent::Connected { reply, replica })
            .await?;
        rx.await
            .map_err(|_| Error::Unavailable("mirror driver stopped".into()))
    }

    pub fn detach(&self, node: &str) {
        self.send(node, DriverEvent::Disconnected);
    }

    /// Sends to a running driver; dropped when none runs (a closed driver
    /// had nothing in progress, so there is nothing for the event to update).
    pub fn send(&self, node: &str, event: DriverEvent) {
        if let Some(m) = self.open.lock().get(node) {
            let _ = m.tx.send(event);
        }
    }

    /// Hands a node's mirror message from its control stream to its driver.
    pub fn on_node_message(&self, node: &str, msg: MirrorToHub) {
        let event = match msg {
            MirrorToHub::Notices(n) if n.is_empty() => return,
            MirrorToHub::Notices(n) => DriverEvent::Notices(n),
            MirrorToHub::Unrecorded(n) => DriverEvent::NodeUnrecorded(n),
            MirrorToHub::Applied(seq) => DriverEvent::NodeApplied(seq),
            MirrorToHub::Conflict(c) => DriverEvent::NodeConflict(c),
            MirrorToHub::Halted(reason) => {
                let mut halted = self.halted.lock();
                if reason.is_empty() {
                    tracing::info!(node, "the node syncs its workspace again");
                    halted.remove(node);
                } else {
                    tracing::error!(node, %reason, "the node halted its workspace mirror");
                    halted.insert(node.to_owned(), reason);
                }
                return;
            }
        };
        self.send(node, event);
    }

    pub async fn status(&self, node: &str, node_id: &NodeId) -> Result<MirrorStatus, Error> {
        let (reply, rx) = oneshot::channel();
        self.deliver(node, node_id, DriverEvent::Status { reply })
            .await?;
        let mut status = rx
            .await
            .map_err(|_| Error::Unavailable("mirror driver stopped".into()))?;
        status.in_flight = self.locks.in_flight_for(node) as u64;
        status.halted = self.halted_reason(node);
        Ok(status)
    }

    /// Why the node does not sync its workspace, if it said so.
    pub fn halted_reason(&self, node: &str) -> Option<String> {
        self.halted.lock().get(node).cloned()
    }

    /// The receiver of a node's mirror (for reads, verify and uploads).
    pub async fn receiver(&self, node: &str, node_id: &NodeId) -> Result<Receiver, Error> {
        let (reply, rx) = oneshot::channel();
        self.deliver(node, node_id, DriverEvent::Receiver { reply })
            .await?;
        rx.await
            .map_err(|_| Error::Unavailable("mirror driver stopped".into()))
    }

    /// The receivers opened so far (for the transfer reaper).
    pub fn open_receivers(&self) -> Vec<Receiver> {
        self.open
            .lock()
            .values()
            .map(|m| m.receiver.clone())
            .collect()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The node's immutable paths as they are now (checked at transfer start).
    pub fn immutable_of(&self, node: &str) -> ImmutablePaths {
        self.immutable.lock().get(node).cloned().unwrap_or_default()
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
        self.immutable.lock().insert(node.to_owned(), next.clone());
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

/// Loads a mirror's entries into an engine for its driver (the engine is
/// built off the async workers), retrying failed loads. Stops when the
/// driver is gone.
async fn load(
    index: SharedIndex,
    node: String,
    immutable: ImmutablePaths,
    mut to: oneshot::Sender<Box<ganglion_mirror::SinkEngine>>,
) {
    loop {
        match index.load(&node).await {
            Ok(l) => {
                let build = move || {
                    Box::new(
                        ganglion_mirror::SinkEngine::new(l.entries, l.peer_seq, immutable)
                            .with_two_way(l.outbox, l.out_seq, l.conflicts),
                    )
                };
                match tokio::task::spawn_blocking(build).await {
                    Ok(engine) => {
                        let _ = to.send(engine);
                    }
                    Err(e) => {
                        tracing::error!(node, error = %e, "building the mirror engine failed")
                    }
                }
                return;
            }
            Err(e) => {
                tracing::error!(node, error = %e, "loading the mirror entries failed; retrying")
            }
        }
        tokio::select! {
            () = to.closed() => return,
            () = tokio::time::sleep(LOAD_RETRY) => {}
        }
    }
}
