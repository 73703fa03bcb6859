//! Background workers and their supervisor.
//!
//! A worker is a type with `run(&mut self, cancel, me)`. The supervisor runs
//! each one in its own task, restarts it with a backoff if it fails or
//! panics (logged at error level with its name), and keeps its state for the
//! hub's status endpoint (`/api/v1/workers`). Workers the hub does not spawn
//! itself are listed too: a mirror driver per open mirror ([`Supervisor::register`],
//! removed when it closes) and the journal writer of the store
//! ([`Supervisor::watch`], read when listed).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use ganglion_api::{WorkerState, WorkerStatus};
pub use ganglion_core::panic::panic_message;

#[async_trait]
pub trait Worker: Send + 'static {
    fn name(&self) -> &'static str;
    /// Runs until `cancel` fires (then returns `Ok`) or fails. `me` takes
    /// the worker's state (idle, busy) if it reports one.
    async fn run(&mut self, cancel: CancellationToken, me: &WorkerHandle) -> Result<(), String>;
}

/// A worker that does one pass every `period` (reapers, purges, lease checks).
/// It gets [`Worker`] for free: the interval and cancellation live here once.
#[async_trait]
pub trait Periodic: Send + 'static {
    fn name(&self) -> &'static str;
    fn period(&self) -> Duration;
    /// One pass; an error stops the worker (the supervisor restarts it).
    async fn tick(&mut self) -> Result<(), String>;
}

#[async_trait]
impl<P: Periodic> Worker for P {
    fn name(&self) -> &'static str {
        Periodic::name(self)
    }

    async fn run(&mut self, cancel: CancellationToken, me: &WorkerHandle) -> Result<(), String> {
        let mut tick = tokio::time::interval(self.period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            me.set(WorkerState::Idle);
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    me.set(WorkerState::Busy);
                    self.tick().await?;
                }
            }
        }
    }
}

const STATES: [WorkerState; 6] = [
    WorkerState::Running,
    WorkerState::Idle,
    WorkerState::Busy,
    WorkerState::Restarting,
    WorkerState::Failed,
    WorkerState::Stopped,
];

/// One worker's entry: small, since an open mirror has one.
struct Slot {
    name: String,
    /// An index into [`STATES`]: set on every wake-up of a driver, so no lock.
    state: AtomicU8,
    restarts: AtomicU32,
    last_error: Mutex<Option<String>>,
}

impl Slot {
    fn new(name: String) -> Arc<Self> {
        Arc::new(Self {
            name,
            state: AtomicU8::new(0),
            restarts: AtomicU32::new(0),
            last_error: Mutex::new(None),
        })
    }

    fn status(&self) -> WorkerStatus {
        WorkerStatus {
            name: self.name.clone(),
            state: STATES[usize::from(self.state.load(Ordering::Relaxed))],
            restarts: self.restarts.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }
}

/// Reads the state of a worker the hub does not run itself (the store's
/// journal writer): its state and last error.
pub type Probe = Box<dyn Fn() -> (WorkerState, Option<String>) + Send + Sync>;

enum Entry {
    Slot(Arc<Slot>),
    Probe(String, Probe),
}

#[derive(Default)]
struct Entries {
    /// The hub's own workers, in the order they were started.
    fixed: Vec<Entry>,
    /// Workers that come and go (a driver per open mirror), by name.
    dynamic: BTreeMap<String, Arc<Slot>>,
}

#[derive(Clone, Default)]
pub struct Supervisor {
    entries: Arc<Mutex<Entries>>,
}

/// A worker's hold on its entry: it sets its state, records its failures,
/// and (for a dynamic worker) removes the entry when it ends.
#[derive(Clone)]
pub struct WorkerHandle {
    slot: Arc<Slot>,
    supervisor: Supervisor,
}

impl WorkerHandle {
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    pub fn set(&self, state: WorkerState) {
        let i = STATES.iter().position(|s| *s == state).unwrap_or(0);
        self.slot.state.store(i as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> WorkerState {
        STATES[usize::from(self.slot.state.load(Ordering::Relaxed))]
    }

    pub fn restarts(&self) -> u32 {
        self.slot.restarts.load(Ordering::Relaxed)
    }

    /// Records a failure, logged at error level with the worker's name:
    /// `restarting` counts a restart, else the worker is left `failed`.
    pub fn failed(&self, error: String, restarting: bool) {
        if restarting {
            tracing::error!(worker = self.name(), %error, "worker failed; restarting");
            self.slot.restarts.fetch_add(1, Ordering::Relaxed);
            self.set(WorkerState::Restarting);
        } else {
            tracing::error!(worker = self.name(), %error, "worker failed; not restarted");
            self.set(WorkerState::Failed);
        }
        *self.slot.last_error.lock() = Some(error);
    }

    /// Removes a dynamic worker's entry (it ended normally).
    pub fn remove(&self) {
        let mut entries = self.supervisor.entries.lock();
        if entries
            .dynamic
            .get(&self.slot.name)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            entries.dynamic.remove(&self.slot.name);
        }
    }
}

impl Supervisor {
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        let entries = self.entries.lock();
        let fixed = entries.fixed.iter().map(|e| match e {
            Entry::Slot(s) => s.status(),
            Entry::Probe(name, probe) => {
                let (state, last_error) = probe();
                WorkerStatus {
                    name: name.clone(),
                    state,
                    restarts: 0,
                    last_error,
                }
            }
        });
        let dynamic = entries.dynamic.values().map(|s| s.status());
        fixed.chain(dynamic).collect()
    }

    /// Lists a worker run elsewhere; `probe` is read each time the workers
    /// are listed.
    pub fn watch(&self, name: &str, probe: Probe) {
        self.entries
            .lock()
            .fixed
            .push(Entry::Probe(name.to_owned(), probe));
    }

    /// An entry for a worker that comes and goes (a mirror driver). A
    /// worker started again under the same name while its entry is there
    /// (after a failure) keeps its restarts and last error; the entry is
    /// new, so the previous worker's handle can no longer remove it.
    pub fn register(&self, name: String) -> WorkerHandle {
        let slot = Slot::new(name);
        {
            let mut entries = self.entries.lock();
            if let Some(old) = entries.dynamic.get(&slot.name) {
                let restarts = old.restarts.load(Ordering::Relaxed);
                slot.restarts.store(restarts, Ordering::Relaxed);
                *slot.last_error.lock() = old.last_error.lock().clone();
            }
            entries.dynamic.insert(slot.name.clone(), slot.clone());
        }
        WorkerHandle {
            slot,
            supervisor: self.clone(),
        }
    }

    /// Starts a worker under supervision in `set`.
    pub fn spawn(
        &self,
        set: &mut JoinSet<()>,
        mut worker: Box<dyn Worker>,
        cancel: CancellationToken,
    ) {
        let slot = Slot::new(worker.name().to_owned());
        self.entries.lock().fixed.push(Entry::Slot(slot.clone()));
        let me = WorkerHandle {
            slot,
            supervisor: self.clone(),
        };
        set.spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let result = AssertUnwindSafe(worker.run(cancel.clone(), &me))
                    .catch_unwind()
                    .await;
                let error = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(panic) => Some(panic_message(panic.as_ref())),
                };
                if cancel.is_cancelled() {
                    me.set(WorkerState::Stopped);
                    return;
                }
                let error = error.unwrap_or_else(|| "returned before cancellation".into());
                me.failed(error, true);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => {
                        me.set(WorkerState::Stopped);
                        return;
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                me.set(WorkerState::Running);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flaky {
        runs: u32,
    }

    #[async_trait]
    impl Worker for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn run(&mut self, cancel: CancellationToken, _: &WorkerHandle) -> Result<(), String> {
            self.runs += 1;
            match self.runs {
                1 => Err("first run fails".into()),
                2 => panic!("second run panics"),
                _ => {
                    cancel.cancelled().await;
                    Ok(())
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_failed_and_panicked_workers_then_stops() {
        let sup = Supervisor::default();
        let cancel = CancellationToken::new();
        let mut set = JoinSet::new();
        sup.spawn(&mut set, Box::new(Flaky { runs: 0 }), cancel.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = &sup.statuses()[0];
        assert_eq!((s.state, s.restarts), (WorkerState::Running, 2));
        assert_eq!(s.last_error.as_deref(), Some("panicked: second run panics"));
        cancel.cancel();
        while set.join_next().await.is_some() {}
        assert_eq!(sup.statuses()[0].state, WorkerState::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_workers_say_when_they_are_idle() {
        struct Tick;
        #[async_trait]
        impl Periodic for Tick {
            fn name(&self) -> &'static str {
                "tick"
            }
            fn period(&self) -> Duration {
                Duration::from_secs(10)
            }
            async fn tick(&mut self) -> Result<(), String> {
                Ok(())
            }
        }
        let sup = Supervisor::default();
        let cancel = CancellationToken::new();
        let mut set = JoinSet::new();
        sup.spawn(&mut set, Box::new(Tick), cancel.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(sup.statuses()[0].state, WorkerState::Idle);
        cancel.cancel();
        while set.join_next().await.is_some() {}
        assert_eq!(sup.statuses()[0].state, WorkerState::Stopped);
    }

    #[test]
    fn dynamic_workers_come_and_go_and_a_restart_keeps_the_entry() {
        let sup = Supervisor::default();
        sup.watch(
            "journal",
            Box::new(|| (WorkerState::Failed, Some("disk gone".into()))),
        );
        let a = sup.register("mirror:a".into());
        let b = sup.register("mirror:b".into());
        a.set(WorkerState::Busy);
        b.failed("panicked: boom".into(), true);
        let listed: Vec<_> = sup
            .statuses()
            .into_iter()
            .map(|s| (s.name, s.state, s.restarts, s.last_error))
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "journal".into(),
                    WorkerState::Failed,
                    0,
                    Some("disk gone".into())
                ),
                ("mirror:a".into(), WorkerState::Busy, 0, None),
                (
                    "mirror:b".into(),
                    WorkerState::Restarting,
                    1,
                    Some("panicked: boom".into())
                ),
            ]
        );
        // The restarted driver takes over the entry; the old handle cannot
        // remove the new one's.
        let b2 = sup.register("mirror:b".into());
        assert_eq!((b2.state(), b2.restarts()), (WorkerState::Running, 1));
        b.remove();
        assert_eq!(sup.statuses().len(), 3);
        a.remove();
        b2.remove();
        assert_eq!(sup.statuses().len(), 1);
    }
}
