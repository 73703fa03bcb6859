//! Tasks: dispatch to a node, live output to watchers, the journal.
//!
//! Every state change is written to the journal before anyone is told of it.
//! When a node's stream ends, each of its unfinished tasks fails at once with
//! a diagnostic; a result the node reports after reconnecting is recorded as
//! a late result, and the history keeps the disconnection.
//!
//! - `live`: the table of live tasks: their watchers' ring and kept output,
//!   journaling a task's end and settling it.
//! - `submit`: checking a task, journaling and dispatching it; cancelling.
//! - `reports`: what nodes report (started, output, finished) and what
//!   happens when they fall silent (a lost node, an expired lease).
//! - `journal`: queries of the journal.

mod journal;
mod live;
mod reports;
mod submit;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ganglion_core::time::SharedClock;
pub use ganglion_core::{NodeEnd, NodeReport, OutputStream};
use ganglion_core::{RelPath, TaskId};
use ganglion_store::{Store, TaskRecord};
// Not poisoned by a panic: one failed request must not stop every later one.
use parking_lot::Mutex;

use crate::registry::Registry;

use live::LiveTask;

/// Output a task may produce before the node drops the rest.
pub const DEFAULT_OUTPUT_CAP: u64 = 16 << 20;
/// Output kept in the journal per task.
pub const STORED_OUTPUT_CAP: usize = 1 << 20;
/// Events a task's watchers may fall behind by. Watchers share one ring of
/// this many events; a watcher that falls further behind (a client that
/// reads slower than the task writes) skips the oldest and is told how many
/// it missed. With the node's 64 KiB output chunks this is 8 MiB per task,
/// whatever the output cap: the cap bounds what the node streams, this what
/// the hub holds. (Slowing the node down instead would stall its one control
/// stream, and with it its heartbeats and every other task on it.)
pub const WATCH_BUFFER_EVENTS: usize = 128;
/// Largest output chunk taken from a node in one message (the node sends
/// 64 KiB); the rest of a bigger one is dropped as truncated output.
pub const MAX_OUTPUT_CHUNK: usize = 256 << 10;
/// Timeout when the caller gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a node keeps running a task it cannot report before killing it.
pub const NODE_GRACE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct TaskRequest {
    pub argv: Vec<String>,
    pub cwd: Option<RelPath>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub output_cap: Option<u64>,
}

/// What a watcher of a task sees, in order.
#[derive(Clone, Debug)]
pub enum TaskEvent {
    Started {
        pid: u32,
    },
    Output {
        seq: u64,
        stream: OutputStream,
        data: Bytes,
    },
    Finished(Box<TaskRecord>),
}

/// How long past its timeout a task may stay unfinished before the hub stops
/// waiting for its node: the node kills at the timeout and reports at once.
pub const LEASE_GRACE: Duration = Duration::from_secs(60);

pub struct Tasks {
    store: Arc<dyn Store>,
    registry: Registry,
    clock: SharedClock,
    live: Mutex<HashMap<TaskId, LiveTask>>,
}

impl Tasks {
    pub fn new(store: Arc<dyn Store>, registry: Registry, clock: SharedClock) -> Self {
        Self {
            store,
            registry,
            clock,
            live: Mutex::default(),
        }
    }

    pub fn live_count(&self) -> usize {
        self.live.lock().len()
    }

    /// Runs `f` with the live table locked (tests: a panic there).
    #[cfg(test)]
    pub(crate) fn with_live_for_test(&self, f: impl FnOnce()) {
        let _live = self.live.lock();
        f();
    }

    #[cfg(test)]
    pub(crate) fn node_of_for_test(&self, id: &TaskId) -> Option<ganglion_core::NodeId> {
        self.live.lock().get(id).map(|t| t.node_id.clone())
    }
}
