//! Background workers and their supervisor.
//!
//! A worker is a type with `run(&mut self, cancel)`. The supervisor runs each
//! one in its own task, restarts it with a backoff if it fails or panics, and
//! keeps its state for the hub's status endpoint (`/api/v1/workers`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use ganglion_api::{WorkerState, WorkerStatus};

#[async_trait]
pub trait Worker: Send + 'static {
    fn name(&self) -> &'static str;
    /// Runs until `cancel` fires (then returns `Ok`) or fails.
    async fn run(&mut self, cancel: CancellationToken) -> Result<(), String>;
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

    async fn run(&mut self, cancel: CancellationToken) -> Result<(), String> {
        let mut tick = tokio::time::interval(self.period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => self.tick().await?,
            }
        }
    }
}

#[derive(Clone, Default)]
pub struct Supervisor {
    states: Arc<Mutex<Vec<WorkerStatus>>>,
}

impl Supervisor {
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        self.states.lock().clone()
    }

    fn update(&self, idx: usize, f: impl FnOnce(&mut WorkerStatus)) {
        f(&mut self.states.lock()[idx]);
    }

    /// Starts a worker under supervision in `set`.
    pub fn spawn(
        &self,
        set: &mut JoinSet<()>,
        mut worker: Box<dyn Worker>,
        cancel: CancellationToken,
    ) {
        let idx = {
            let mut states = self.states.lock();
            states.push(WorkerStatus {
                name: worker.name().to_owned(),
                state: WorkerState::Running,
                restarts: 0,
                last_error: None,
            });
            states.len() - 1
        };
        let sup = self.clone();
        set.spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let result = AssertUnwindSafe(worker.run(cancel.clone()))
                    .catch_unwind()
                    .await;
                let error = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some("panicked".to_owned()),
                };
                if cancel.is_cancelled() {
                    sup.update(idx, |s| s.state = WorkerState::Stopped);
                    return;
                }
                let error = error.unwrap_or_else(|| "returned before cancellation".into());
                tracing::error!(worker = worker.name(), %error, "worker failed; restarting");
                sup.update(idx, |s| {
                    s.state = WorkerState::Restarting;
                    s.restarts += 1;
                    s.last_error = Some(error);
                });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => {
                        sup.update(idx, |s| s.state = WorkerState::Stopped);
                        return;
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                sup.update(idx, |s| s.state = WorkerState::Running);
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
        async fn run(&mut self, cancel: CancellationToken) -> Result<(), String> {
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
        assert_eq!(s.last_error.as_deref(), Some("panicked"));
        cancel.cancel();
        while set.join_next().await.is_some() {}
        assert_eq!(sup.statuses()[0].state, WorkerState::Stopped);
    }
}
