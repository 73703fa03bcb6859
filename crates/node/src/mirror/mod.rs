//! The node's side of the ghost mirror: watches the workspace, keeps its index
//! (`STATE_DIR/index.db`), feeds the sans-IO [`SourceEngine`], sends notices on
//! the control stream and uploads content on `Upload` streams.
//!
//! Change detection: a `notify` watcher with a debounce (events gathered
//! until 10 ms pass without one, at most 50 ms; paths are
//! stat'ed and, if their stat changed, hashed), plus a stat-only full rescan
//! every minute as a safety net. A restart re-hashes nothing whose stat is
//! unchanged; [`MirrorStats::files_hashed`] counts what was hashed.
//!
//! - `watcher`: the inotify watch and which events mean a change.
//! - `worker`: [`MirrorWorker`], the event loop around the engine.
//! - `scan`: full and partial scans of the workspace.
//! - `hub_changes`: hub-side changes (the two-way mirror): downloaded into
//!   `.ganglion/incoming`, applied by [`ganglion_mirror::apply::Applier`] as
//!   compare-and-swaps, recorded as agreed, acknowledged in order.
//! - [`replica`]: the workspace's replica identity (marker and index) and
//!   the guard that never turns an emptied workspace into a mass delete.
//! - `upload`: the upload queue and the file reader (the RPC is in
//!   `crate::link::upload`).

mod hub_changes;
pub mod replica;
mod scan;
pub(crate) mod upload;
mod watcher;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use ganglion_core::RelPath;
use ganglion_mirror::engine::SourceState;
use ganglion_mirror::index::SharedIndex;
use ganglion_mirror::scan::IgnoreRules;
use ganglion_mirror::{ContentHash, MirrorToNode, SourceEngine, TransferFailure};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::Error;
use crate::link::client::HubClient;
use crate::progress::{ProgressHandle, SyncProgress};
pub use crate::recorder::ToHub;
use crate::recorder::{self, MIRROR, Step};
use crate::supervise::Workers;
use upload::UploadQueue;
use watcher::watch;

#[derive(Clone, Debug)]
pub struct MirrorOptions {
    /// The node's name: conflict copies of its versions carry it.
    pub node_name: String,
    pub workspace: PathBuf,
    pub state_dir: PathBuf,
    /// Paths inside the workspace never mirrored (e.g. a hub data dir that
    /// `ganglion up` keeps in the workspace).
    pub exclude: Vec<RelPath>,
    /// Where to publish sync progress (for a progress display), if anywhere.
    pub progress: Option<tokio::sync::watch::Sender<SyncProgress>>,
}

/// Counters, for logs, tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct MirrorStats {
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    pub scans: u64,
    pub uploads: u64,
    pub bytes_uploaded: u64,
    pub acked: u64,
    pub pending: u64,
    /// Changes waiting for an index write that keeps failing (not sent).
    pub unrecorded: u64,
}

pub enum Input {
    Connected {
        hub_applied: u64,
        client: HubClient,
    },
    Disconnected,
    Ack(u64),
    Need {
        path: RelPath,
        hash: ContentHash,
    },
    Uploaded {
        path: RelPath,
        hash: ContentHash,
        failure: Option<TransferFailure>,
    },
    Changed(Vec<PathBuf>),
    Rescan,
    /// Hub-side changes, in order.
    HubChanges(Vec<ganglion_mirror::HubChange>),
    /// The content of the hub-side change `seq` is in the incoming file
    /// `name` (verified, durable); `Err` when it could not be fetched.
    Downloaded {
        seq: u64,
        result: Result<String, hub_changes::DownloadError>,
    },
    /// Try the hub-side changes again (after a failed download or apply).
    RetryHubChanges,
    /// A fault for tests: the worker panics.
    #[cfg(test)]
    Panic,
}

/// The session's view of the mirror worker.
pub struct MirrorLink {
    /// The workspace's replica identity, told to the hub in the hello.
    pub replica: String,
    pub input: mpsc::UnboundedSender<Input>,
    pub notices: mpsc::UnboundedReceiver<ToHub>,
    pub stats: Arc<Mutex<MirrorStats>>,
    /// The upload queue, shared with the worker: the hub's resume offsets
    /// go there directly, ahead of the needs that use them.
    queue: Arc<Mutex<UploadQueue>>,
}

pub(crate) struct MirrorWorker {
    /// The replica identity; `halted` while the workspace must not sync.
    identity: replica::Identity,
    opts: MirrorOptions,
    engine: SourceEngine,
    input: mpsc::UnboundedSender<Input>,
    /// Index writes and notices, in the engine's order (see [`crate::recorder`]).
    recorder: mpsc::UnboundedSender<Step>,
    client: Option<HubClient>,
    queue: Arc<Mutex<UploadQueue>>,
    stats: Arc<Mutex<MirrorStats>>,
    progress: ProgressHandle,
    /// The ignore files as of the last full scan (a change to one of them
    /// triggers a full scan, which reloads them).
    ignores: IgnoreRules,
    /// Where its upload workers run.
    workers: Workers,
    /// Hub-side changes: the writer, the queue, what was applied.
    hub: hub_changes::HubChanges,
    _watcher: Option<notify::RecommendedWatcher>,
}

fn index_err(e: impl std::fmt::Display) -> Error {
    Error::Hub(format!("mirror index: {e}"))
}

/// Starts the mirror worker: loads the index, watches the workspace, scans it.
/// Its loops (`mirror`, `mirror-recorder`, `mirror-upload`) run in `workers`.
pub async fn start(opts: MirrorOptions, workers: &Workers) -> Result<MirrorLink, Error> {
    let index: SharedIndex = Arc::new(
        ganglion_store::SqliteMirrorIndex::open(&opts.state_dir.join("index.db"))
            .await
            .map_err(index_err)?,
    );
    let mut loaded = index.load(MIRROR).await.map_err(index_err)?;
    let identity = replica::settle(&opts.workspace, &index, &mut loaded)
        .await
        .map_err(Error::Hub)?;
    if let Some(reason) = &identity.halted {
        tracing::error!(%reason, "the workspace mirror is halted");
    }
    let hub = hub_changes::HubChanges::open(&opts, loaded.out_acked);
    let engine = SourceEngine::new(SourceState {
        entries: loaded.entries,
        tombstones: loaded.tombstones,
        seq: loaded.seq,
        acked: loaded.peer_seq,
    });
    let (input, rx) = mpsc::unbounded_channel();
    let (notices_tx, notices) = mpsc::unbounded_channel();
    let (recorder, steps) = mpsc::unbounded_channel();
    let stats = Arc::new(Mutex::new(MirrorStats::default()));
    workers.spawn(
        "mirror-recorder",
        recorder::run(index, steps, notices_tx, loaded.seq, stats.clone()),
    );
    let watcher = watch(&opts.workspace, input.clone());
    let ignores = IgnoreRules::load(&opts.workspace, [""]);
    let progress = ProgressHandle::new(opts.progress.clone());
    let replica = identity.replica.clone();
    let queue: Arc<Mutex<UploadQueue>> = Arc::default();
    let worker = MirrorWorker {
        identity,
        opts,
        engine,
        input: input.clone(),
        recorder,
        client: None,
        queue: queue.clone(),
        progress,
        stats: stats.clone(),
        ignores,
        workers: workers.clone(),
        hub,
        _watcher: watcher,
    };
    workers.spawn("mirror", worker.run(rx));
    let _ = input.send(Input::Rescan);
    Ok(MirrorLink {
        replica,
        input,
        notices,
        stats,
        queue,
    })
}

impl MirrorLink {
    /// Handles the hub's mirror message (the mirror subsystem of the control
    /// stream).
    pub fn on_message(&self, msg: MirrorToNode) {
        match msg {
            MirrorToNode::Needs(needs) => {
                for (path, hash) in needs {
                    let _ = self.input.send(Input::Need { path, hash });
                }
            }
            MirrorToNode::Ack(seq) => {
                let _ = self.input.send(Input::Ack(seq));
            }
            MirrorToNode::Changes(changes) => {
                let _ = self.input.send(Input::HubChanges(changes));
            }
            MirrorToNode::Resume(held) => self.queue.lock().resume_at(held),
        }
    }
}
