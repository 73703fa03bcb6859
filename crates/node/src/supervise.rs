//! The node's long-running loops (the mirror worker, the recorder, the
//! uploads, the runtime's helpers) run as supervised workers: a panic in one
//! is logged at error level with the worker's name and escalated. The
//! runtime stops with [`Error::WorkerFailed`] and the process exits non-zero,
//! so that its service manager starts it again; everything a loop needs to
//! start over is on disk (the index, the credential) and the hub resends
//! what it waits for on reconnect. A loop is not restarted in place: its
//! peers hold channels to it, and a half-done step (an index write followed
//! by its notice) is only sorted out by starting the whole node again.
//!
//! The node has no HTTP API: these workers' states are in its log only.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use ganglion_core::panic::panic_message;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

/// A worker that failed: its name and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub worker: &'static str,
    pub error: String,
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        Error::WorkerFailed {
            worker: f.worker,
            error: f.error,
        }
    }
}

/// Spawns the node's workers and holds the first failure.
#[derive(Clone)]
pub struct Workers {
    failure: Arc<watch::Sender<Option<Failure>>>,
}

impl Default for Workers {
    fn default() -> Self {
        Self {
            failure: Arc::new(watch::channel(None).0),
        }
    }
}

impl Workers {
    /// Runs `work` as the worker `name`: a panic is logged and reported to
    /// [`Self::failed`].
    pub fn spawn<F>(&self, name: &'static str, work: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let failure = self.failure.clone();
        tokio::spawn(async move {
            let Err(panic) = AssertUnwindSafe(work).catch_unwind().await else {
                return;
            };
            let error = panic_message(panic.as_ref());
            tracing::error!(worker = name, %error, "node worker failed; the node stops");
            failure.send_if_modified(|f| {
                let first = f.is_none();
                if first {
                    *f = Some(Failure {
                        worker: name,
                        error,
                    });
                }
                first
            });
        })
    }

    /// Resolves with the first worker failure.
    pub async fn failed(&self) -> Failure {
        let mut rx = self.failure.subscribe();
        let failure = match rx.wait_for(Option::is_some).await {
            Ok(f) => f.clone(),
            // Never: `self` holds the sender.
            Err(_) => None,
        };
        match failure {
            Some(f) => f,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_worker_is_reported_with_its_name_and_message() {
        let workers = Workers::default();
        workers.spawn("fine", async {}).await.unwrap();
        workers.spawn("broken", async { panic!("injected fault") });
        assert_eq!(
            workers.failed().await,
            Failure {
                worker: "broken",
                error: "panicked: injected fault".into()
            }
        );
    }

    /// A panic in the mirror's loop stops the node: its runtime's workers
    /// report it (the runtime ends with `WorkerFailed`, below).
    #[tokio::test]
    async fn a_panic_in_the_mirror_worker_is_escalated() {
        let dir = tempfile::tempdir().unwrap();
        let (workspace, state_dir) = (dir.path().join("ws"), dir.path().join("state"));
        std::fs::create_dir(&workspace).unwrap();
        std::fs::create_dir(&state_dir).unwrap();
        let workers = Workers::default();
        let opts = crate::mirror::MirrorOptions {
            node_name: "n1".to_owned(),
            workspace,
            state_dir,
            exclude: Vec::new(),
            progress: None,
        };
        let link = crate::mirror::start(opts, &workers).await.unwrap();
        link.input.send(crate::mirror::Input::Panic).unwrap();
        let failure = workers.failed().await;
        assert_eq!(
            (failure.worker, failure.error.as_str()),
            ("mirror", "panicked: injected fault")
        );
    }

    #[tokio::test]
    async fn the_runtime_stops_with_the_failure_of_a_worker() {
        use ganglion_core::{Capabilities, Secret};

        use crate::runtime::{NodeRuntime, RuntimeOptions};
        let state = crate::JoinedNode {
            // Nothing listens there: the runtime keeps retrying meanwhile.
            hub_addr: "127.0.0.1:1".into(),
            cert_sha256: "00".repeat(32),
            node_id: "n-test".into(),
            name: "n1".into(),
            workspace: std::env::temp_dir(),
        };
        let opts = RuntimeOptions::new(state, Secret::generate(), Capabilities::default());
        let runtime = NodeRuntime::new(opts).unwrap();
        runtime
            .workers()
            .spawn("report-grace", async { panic!("injected fault") });
        let cancel = tokio_util::sync::CancellationToken::new();
        let ended = runtime.run(cancel).await;
        assert!(
            matches!(
                &ended,
                Err(Error::WorkerFailed { worker: "report-grace", error })
                    if error == "panicked: injected fault"
            ),
            "{ended:?}"
        );
    }
}
