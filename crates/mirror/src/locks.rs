//! The transfer lock registry: at most one in-flight transfer per (node, path).
//!
//! A lock is held by a [`TransferGuard`] owned by the transfer; dropping the
//! guard (finish, error, cancel, panic unwinding the task) releases it. A
//! transfer idle longer than the timeout (default 60 s, `tokio::time`, so tests
//! can pause the clock) is reaped: its lock is released and its guard reports
//! cancellation. [`LockRegistry::locks`] and [`LockRegistry::in_flight`] feed
//! the gauges `ganglion_transfer_locks` and `ganglion_transfers_in_flight`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ganglion_core::RelPath;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("a transfer for this path is already in flight")]
    Busy { node: String, path: RelPath },
}

type Key = (String, RelPath);

#[derive(Debug)]
struct Held {
    id: u64,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    last_activity: Mutex<Instant>,
    cancelled: AtomicBool,
    notify: Notify,
}

#[derive(Debug)]
struct Inner {
    held: Mutex<HashMap<Key, Held>>,
    in_flight: AtomicUsize,
    next_id: AtomicU64,
    idle_timeout: Duration,
}

/// Cheap to clone; all clones share one registry.
#[derive(Clone, Debug)]
pub struct LockRegistry {
    inner: Arc<Inner>,
}

impl Default for LockRegistry {
    fn default() -> Self {
        Self::new(DEFAULT_IDLE_TIMEOUT)
    }
}

impl LockRegistry {
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                held: Mutex::new(HashMap::new()),
                in_flight: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                idle_timeout,
            }),
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.inner.idle_timeout
    }

    fn held(&self) -> MutexGuard<'_, HashMap<Key, Held>> {
        // A panic while holding this short lock cannot leave the map inconsistent.
        self.inner.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the lock for (node, path), or fails if a transfer holds it.
    pub fn acquire(&self, node: &str, path: &RelPath) -> Result<TransferGuard, Error> {
        let key = (node.to_owned(), path.clone());
        let mut held = self.held();
        if held.contains_key(&key) {
            return Err(Error::Busy {
                node: node.to_owned(),
                path: path.clone(),
            });
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            last_activity: Mutex::new(Instant::now()),
            cancelled: AtomicBool::new(false),
            notify: Notify::new(),
        });
        held.insert(
            key.clone(),
            Held {
                id,
                shared: shared.clone(),
            },
        );
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        debug!(node, %path, "transfer lock taken");
        Ok(TransferGuard {
            registry: self.clone(),
            key,
            id,
            shared,
        })
    }

    /// Locks held (gauge `ganglion_transfer_locks`).
    pub fn locks(&self) -> usize {
        self.held().len()
    }

    /// Guards alive (gauge `ganglion_transfers_in_flight`).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// In-flight transfers of one node (for `mirror status`).
    pub fn in_flight_for(&self, node: &str) -> usize {
        self.held().keys().filter(|(n, _)| n == node).count()
    }

    /// Releases every lock idle for longer than the timeout and cancels its
    /// transfer. Returns how many were reaped. Run it periodically.
    pub fn reap_idle(&self) -> usize {
        let now = Instant::now();
        let timeout = self.inner.idle_timeout;
        let mut held = self.held();
        let before = held.len();
        held.retain(|(node, path), h| {
            let last = *h
                .shared
                .last_activity
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let idle = now.duration_since(last) >= timeout;
            if idle {
                warn!(node, %path, ?timeout, "idle transfer timed out");
                h.shared.cancelled.store(true, Ordering::SeqCst);
                h.shared.notify.notify_waiters();
            }
            !idle
        });
        before - held.len()
    }

    /// Runs [`Self::reap_idle`] every `every` until the token's future resolves.
    pub async fn run_reaper(self, every: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => { self.reap_idle(); }
            }
        }
    }
}

/// Proof of holding the lock for one (node, path). Release is `Drop`.
#[derive(Debug)]
pub struct TransferGuard {
    registry: LockRegistry,
    key: Key,
    id: u64,
    shared: Arc<Shared>,
}

impl TransferGuard {
    pub fn node(&self) -> &str {
        &self.key.0
    }

    pub fn path(&self) -> &RelPath {
        &self.key.1
    }

    /// Records activity (call on every chunk).
    pub fn touch(&self) {
        *self
            .shared
            .last_activity
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves when the transfer is reaped for idleness or exceeds the idle
    /// timeout since its last activity (whichever comes first); select on it
    /// next to the stream.
    pub async fn idle_or_cancelled(&self) {
        loop {
            if self.is_cancelled() {
                return;
            }
            let last = *self
                .shared
                .last_activity
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let deadline = last + self.registry.inner.idle_timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shared.notify.notified() => {}
            }
        }
    }
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        let mut held = self.registry.held();
        if held.get(&self.key).is_some_and(|h| h.id == self.id) {
            held.remove(&self.key);
        }
        drop(held);
        self.registry.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        debug!(node = %self.key.0, path = %self.key.1, "transfer lock released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[tokio::test]
    async fn one_transfer_per_path_and_drop_releases() {
        let reg = LockRegistry::default();
        let g = reg.acquire("n1", &p("a")).unwrap();
        assert!(matches!(
            reg.acquire("n1", &p("a")),
            Err(Error::Busy { .. })
        ));
        let other = reg.acquire("n2", &p("a")).unwrap();
        assert_eq!((reg.locks(), reg.in_flight()), (2, 2));
        drop(g);
        drop(other);
        assert_eq!((reg.locks(), reg.in_flight()), (0, 0));
    }

    #[tokio::test]
    async fn a_panicking_transfer_releases_its_lock() {
        let reg = LockRegistry::default();
        let r = reg.clone();
        let task = tokio::spawn(async move {
            let _g = r.acquire("n", &p("x")).unwrap();
            panic!("transfer blew up");
        });
        assert!(task.await.is_err());
        assert_eq!((reg.locks(), reg.in_flight()), (0, 0));
    }

    #[tokio::test]
    async fn a_cancelled_transfer_releases_its_lock() {
        let reg = LockRegistry::default();
        let r = reg.clone();
        let task = tokio::spawn(async move {
            let _g = r.acquire("n", &p("x")).unwrap();
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        assert_eq!(reg.locks(), 1);
        task.abort();
        let _ = task.await;
        assert_eq!((reg.locks(), reg.in_flight()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_transfers_time_out() {
        let reg = LockRegistry::default();
        let g = reg.acquire("n", &p("x")).unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        g.touch();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(reg.reap_idle(), 0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(reg.reap_idle(), 1);
        assert!(g.is_cancelled());
        assert_eq!(reg.locks(), 0);
        // A new transfer may start while the old guard still unwinds.
        let g2 = reg.acquire("n", &p("x")).unwrap();
        drop(g);
        assert_eq!(
            reg.locks(),
            1,
            "the stale guard must not release the new lock"
        );
        drop(g2);
        assert_eq!((reg.locks(), reg.in_flight()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_future_fires_after_the_timeout() {
        let reg = LockRegistry::new(Duration::from_secs(5));
        let g = reg.acquire("n", &p("x")).unwrap();
        let start = Instant::now();
        g.idle_or_cancelled().await;
        assert!(start.elapsed() >= Duration::from_secs(5));
    }
}
