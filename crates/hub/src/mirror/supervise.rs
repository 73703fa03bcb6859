//! A node's mirror driver under supervision. It is listed among the hub's
//! workers as `mirror:NODE` while it is open (idle or busy), and its entry
//! goes when it closes. A panic is logged with the worker's name, counted
//! (restarts, last error), and the driver restarts the way the hub starts
//! one: from the index. What the node sent and was not acknowledged was in
//! the failed driver only, so the node's stream is closed: the node
//! reconnects and sends again from the applied sequence, as after a hub
//! restart (its unfinished tasks fail, as on any stream loss).

use std::panic::AssertUnwindSafe;
use std::sync::Weak;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use ganglion_core::NodeId;
use tokio::sync::mpsc;

use super::Mirrors;
use super::driver::{Driver, DriverEvent};
use crate::Error;
use crate::registry::CloseReason;
use crate::worker::{WorkerHandle, panic_message};

/// The first restart waits this long, each next one twice as long, up to
/// [`RESTART_CAP`] (a driver that panics on every start does not spin).
const RESTART_FIRST: Duration = Duration::from_millis(100);
const RESTART_CAP: Duration = Duration::from_secs(30);

/// What a supervised driver needs to be started again.
pub(super) struct Supervised {
    pub mirrors: Weak<Mirrors>,
    pub node: String,
    pub node_id: NodeId,
    pub tx: mpsc::UnboundedSender<DriverEvent>,
    pub worker: WorkerHandle,
}

/// Runs the driver until it closes (its entry goes) or fails or panics (it
/// restarts).
pub(super) async fn run(driver: Driver, rx: mpsc::UnboundedReceiver<DriverEvent>, s: Supervised) {
    let error = match AssertUnwindSafe(driver.run(rx)).catch_unwind().await {
        Ok(Ok(())) => {
            s.worker.remove();
            return;
        }
        Ok(Err(e)) => e,
        Err(panic) => panic_message(panic.as_ref()),
    };
    s.worker.failed(error, true);
    if let Some(mirrors) = s.mirrors.upgrade() {
        restart(&mirrors, &s).await;
    }
}

async fn restart(mirrors: &Mirrors, s: &Supervised) {
    // Its channel leaves the open mirrors: the next event opens a new driver.
    {
        let mut open = mirrors.open.lock();
        if open.get(&s.node).is_some_and(|m| m.tx.same_channel(&s.tx)) {
            open.remove(&s.node);
        }
    }
    if mirrors
        .registry
        .close(&s.node_id, CloseReason::MirrorRestarted)
    {
        tracing::warn!(
            node = s.node,
            "closed the node's stream: it resends what the failed driver held"
        );
    }
    let exp = s.worker.restarts().saturating_sub(1).min(16);
    tokio::time::sleep(RESTART_FIRST.saturating_mul(1 << exp).min(RESTART_CAP)).await;
    if let Err(e) = reopen(mirrors, s).await {
        // Listed as failed; the next use of the mirror tries again.
        s.worker.failed(format!("reopening the mirror: {e}"), false);
    }
}

/// Opening a driver spawns this supervision, which may open a driver: the
/// box breaks the cycle in the future's type.
fn reopen<'a>(mirrors: &'a Mirrors, s: &'a Supervised) -> BoxFuture<'a, Result<(), Error>> {
    Box::pin(mirrors.driver(&s.node, &s.node_id))
}
