//! The node's side of the ghost mirror: watches the workspace, keeps its index
//! (`STATE_DIR/index.db`), feeds the sans-IO [`SourceEngine`], sends notices on
//! the control stream and uploads content on `Upload` streams.
//!
//! Change detection: a `notify` watcher with a debounce (events gathered
//! until 10 ms pass without one, at most 50 ms; paths are
//! stat'ed and, if their stat changed, hashed), plus a stat-only full rescan
//! every minute as a safety net. A restart re-hashes nothing whose stat is
//! unchanged; [`MirrorStats::files_hashed`] counts what was hashed.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ganglion_core::RelPath;
use ganglion_mirror::engine::{Observation, SourceAction, SourceEvent, SourceState};
use ganglion_mirror::index::{Batch, Index};
use ganglion_mirror::scan::{self, BUILTIN_IGNORES, IGNORE_FILE, IgnoreRules, ScanReport};
use ganglion_mirror::{
    ContentHash, Entry, EntryKind, Notice, SourceEngine, TransferFailure, WorkspaceDir,
};
use ganglion_proto::v1;
use notify::Watcher;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::Error;
use crate::client::HubClient;
use crate::progress::{ProgressHandle, SyncProgress};
pub use crate::recorder::ToHub;
use crate::recorder::{self, MIRROR, Step};

/// Watcher events are gathered until none came for QUIET, at most DEBOUNCE.
const DEBOUNCE: Duration = Duration::from_millis(50);
const QUIET: Duration = Duration::from_millis(10);
const RESCAN_EVERY: Duration = Duration::from_secs(60);
/// Data messages carry at most this much. tonic copies every message into
/// its encode buffer, which grows to the message: a profile with 1 MiB
/// messages showed a fresh buffer (and page faults) per chunk. With 256 KiB
/// an initial sync of `linux` was a little faster in alternating runs and
/// `big` took as long (why exactly was not measured further).
const UPLOAD_CHUNK: usize = 256 << 10;
const PARALLEL_UPLOADS: usize = 4;
/// An upload stream carries queued files up to these limits (small files
/// share a stream instead of paying a stream each).
const BATCH_FILES: usize = 1024;
const BATCH_BYTES: u64 = 32 << 20;
/// The file reader hands messages to the stream in bundles of up to these
/// many messages or bytes, at most `READ_AHEAD` bundles ahead: a hand-over
/// per message woke a thread per message (an initial sync of small files
/// spent a fifth of the node's CPU in those wake-ups).
const BUNDLE_MESSAGES: usize = 256;
const BUNDLE_BYTES: usize = 4 << 20;
const READ_AHEAD: usize = 2;

#[derive(Clone, Debug)]
pub struct MirrorOptions {
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
}

/// The session's view of the mirror worker.
pub struct MirrorLink {
    pub input: mpsc::UnboundedSender<Input>,
    pub notices: mpsc::UnboundedReceiver<ToHub>,
    pub stats: Arc<Mutex<MirrorStats>>,
}

struct MirrorWorker {
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
    _watcher: Option<notify::RecommendedWatcher>,
}

fn index_err(e: impl std::fmt::Display) -> Error {
    Error::Hub(format!("mirror index: {e}"))
}

/// Starts the mirror worker: loads the index, watches the workspace, scans it.
pub async fn start(opts: MirrorOptions) -> Result<MirrorLink, Error> {
    let index = Index::open(&opts.state_dir.join("index.db"))
        .await
        .map_err(index_err)?;
    let loaded = index.load(MIRROR).await.map_err(index_err)?;
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
    tokio::spawn(recorder::run(
        index,
        steps,
        notices_tx,
        loaded.seq,
        stats.clone(),
    ));
    let watcher = watch(&opts.workspace, input.clone());
    let ignores = IgnoreRules::load(&opts.workspace, [""]);
    let progress = ProgressHandle::new(opts.progress.clone());
    let worker = MirrorWorker {
        opts,
        engine,
        input: input.clone(),
        recorder,
        client: None,
        queue: Arc::default(),
        progress,
        stats: stats.clone(),
        ignores,
        _watcher: watcher,
    };
    tokio::spawn(worker.run(rx));
    let _ = input.send(Input::Rescan);
    Ok(MirrorLink {
        input,
        notices,
        stats,
    })
}

/// A recursive inotify watch; events are forwarded as changed paths. Without
/// one (e.g. inotify limits), the periodic rescan still keeps the mirror current.
fn watch(root: &Path, input: mpsc::UnboundedSender<Input>) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if !changes_content(&ev.kind) => {}
        Ok(ev) => {
            let _ = input.send(Input::Changed(ev.paths));
        }
        Err(e) => {
            tracing::warn!(error = %e, "watcher error; rescanning");
            let _ = input.send(Input::Rescan);
        }
    };
    // Only what may change content: the kernel then never queues opens and
    // read-only closes (the scan and uploads open every file).
    // Not through symlinks either: a link is mirrored as a link, and
    // following one (to `/`, say) would watch what is not the workspace.
    let config = notify::Config::default()
        .with_event_kinds(notify::EventKindMask::CORE | notify::EventKindMask::ACCESS_CLOSE)
        .with_follow_symlinks(false);
    let mut w = match notify::RecommendedWatcher::new(handler, config) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "no filesystem watcher; relying on periodic rescans");
            return None;
        }
    };
    if let Err(e) = w.watch(root, notify::RecursiveMode::Recursive) {
        tracing::warn!(error = %e, "cannot watch the workspace; relying on periodic rescans");
        return None;
    }
    Some(w)
}

/// Whether a watcher event may mean a change. Opening or reading a file (as
/// the scan and the uploads do, for every file) does not: only closing a
/// file written to does, among the access events.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

impl MirrorWorker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        let mut rescan = tokio::time::interval(RESCAN_EVERY);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rescan.tick().await;
        loop {
            let input = tokio::select! {
                i = rx.recv() => match i { Some(i) => i, None => return },
                _ = rescan.tick() => Input::Rescan,
            };
            match input {
                Input::Changed(paths) => {
                    // Debounce: gather what else changes until the workspace
                    // is quiet for a moment, at most for DEBOUNCE.
                    let mut changed: BTreeSet<PathBuf> = paths.into_iter().collect();
                    let mut full = false;
                    let last = tokio::time::Instant::now() + DEBOUNCE;
                    let mut deadline = (tokio::time::Instant::now() + QUIET).min(last);
                    while let Ok(Some(more)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                        match more {
                            Input::Changed(p) => {
                                changed.extend(p);
                                deadline = (tokio::time::Instant::now() + QUIET).min(last);
                            }
                            Input::Rescan => full = true,
                            other => self.handle(other).await,
                        }
                    }
                    if full {
                        self.full_scan().await;
                    } else {
                        self.partial_scan(changed).await;
                    }
                }
                Input::Rescan => self.full_scan().await,
                other => self.handle(other).await,
            }
        }
    }

    async fn handle(&mut self, input: Input) {
        let event = match input {
            Input::Connected {
                hub_applied,
                client,
            } => {
                self.client = Some(client);
                SourceEvent::Connected { hub_applied }
            }
            Input::Disconnected => {
                self.client = None;
                let _ = self.recorder.send(Step::Disconnected);
                // Queued uploads die with the connection; the hub asks again.
                self.queue.lock().jobs.clear();
                SourceEvent::Disconnected
            }
            Input::Ack(seq) => SourceEvent::Ack { seq },
            Input::Need { path, hash } => SourceEvent::Need { path, hash },
            Input::Uploaded {
                path,
                hash,
                failure: None,
            } => SourceEvent::UploadDone { path, hash },
            Input::Uploaded {
                path,
                hash,
                failure: Some(failure),
            } => SourceEvent::UploadFailed {
                path,
                hash,
                failure,
            },
            Input::Changed(_) | Input::Rescan => return,
        };
        self.feed(event).await;
    }

    fn excluded(&self, rel: &RelPath) -> bool {
        let first = rel.components().next().unwrap_or_default();
        BUILTIN_IGNORES.contains(&first) || self.opts.exclude.iter().any(|x| rel.starts_with(x))
    }

    async fn full_scan(&mut self) {
        let root = self.opts.workspace.clone();
        let prior: HashMap<RelPath, Entry> = self
            .engine
            .entries()
            .map(|e| (e.path.clone(), e.clone()))
            .collect();
        let report = tokio::task::spawn_blocking(move || scan::scan(&root, &prior)).await;
        let mut report = match report {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return tracing::error!(error = %e, "workspace scan failed"),
            Err(e) => return tracing::error!(error = %e, "workspace scan panicked"),
        };
        report.entries.retain(|e| !self.excluded(&e.path));
        self.ignores = std::mem::take(&mut report.ignores);
        self.count(&report, true);
        for s in &report.skipped {
            tracing::warn!(path = %s.path, reason = ?s.reason, "not mirrored");
        }
        let unstable = std::mem::take(&mut report.unstable);
        self.feed(SourceEvent::Observed(Observation::Full(report.entries)))
            .await;
        if !unstable.is_empty() {
            let paths = unstable
                .iter()
                .map(|p| self.opts.workspace.join(p.as_str()))
                .collect();
            let _ = self.input.send(Input::Changed(paths));
        }
    }

    async fn partial_scan(&mut self, changed: BTreeSet<PathBuf>) {
        let mut rels = Vec::new();
        for p in changed {
            let Ok(rel) = p.strip_prefix(&self.opts.workspace) else {
                continue;
            };
            let Some(s) = rel.to_str() else { continue };
            let Ok(Some(rel)) = RelPath::parse_lenient(s) else {
                continue;
            };
            if self.excluded(&rel) {
                continue;
            }
            if rel.file_name() == IGNORE_FILE && !self.ignores.is_ignored(&rel, false) {
                // The ignore rules changed: only a full scan applies them.
                return self.full_scan().await;
            }
            if self.ignores.is_ignored(&rel, false) {
                continue;
            }
            rels.push(rel);
        }
        if rels.is_empty() {
            return;
        }
        let root = self.opts.workspace.clone();
        let prior: HashMap<RelPath, Entry> = rels
            .iter()
            .filter_map(|r| self.engine.entry(r).map(|e| (r.clone(), e.clone())))
            .collect();
        let known_dirs: BTreeSet<RelPath> = rels
            .iter()
            .filter(|r| {
                self.engine
                    .entry(r)
                    .is_some_and(|e| e.kind == EntryKind::Dir)
            })
            .cloned()
            .collect();
        let ignores = self.ignores.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut report = ScanReport::default();
            let mut removed = Vec::new();
            let mut new_dir = false;
            let dir = match WorkspaceDir::open(&root) {
                Ok(d) => d,
                Err(e) => {
                    // The next full scan reports it.
                    tracing::warn!(error = %e, "cannot open the workspace");
                    return (report, removed, new_dir);
                }
            };
            for rel in rels {
                match scan::stat_path(&dir, &rel, prior.get(&rel), &mut report) {
                    // A directory only some rules match (`build/`).
                    Ok(Some(e)) if e.kind == EntryKind::Dir && ignores.is_ignored(&rel, true) => {}
                    Ok(Some(e)) => {
                        new_dir |= e.kind == EntryKind::Dir && !known_dirs.contains(&rel);
                        report.entries.push(e);
                    }
                    Ok(None) if !report.unstable.contains(&rel) => removed.push(rel),
                    Ok(None) => {}
                    Err(reason) => tracing::warn!(path = %rel, ?reason, "not mirrored"),
                }
            }
            (report, removed, new_dir)
        })
        .await;
        let Ok((mut report, removed, new_dir)) = result else {
            return;
        };
        if new_dir {
            // A directory appeared (perhaps moved in whole): its contents may
            // predate the watch on it, so look at everything (stat only).
            return self.full_scan().await;
        }
        self.count(&report, false);
        let unstable = std::mem::take(&mut report.unstable);
        self.feed(SourceEvent::Observed(Observation::Partial {
            upserts: report.entries,
            removed,
        }))
        .await;
        if !unstable.is_empty() {
            let paths = unstable
                .iter()
                .map(|p| self.opts.workspace.join(p.as_str()))
                .collect();
            let _ = self.input.send(Input::Changed(paths));
        }
    }

    fn count(&self, report: &ScanReport, full: bool) {
        let mut s = self.stats.lock();
        s.files_hashed += report.files_hashed;
        s.bytes_hashed += report.bytes_hashed;
        s.scans += u64::from(full);
        if full {
            tracing::debug!(
                entries = report.entries.len(),
                hashed = report.files_hashed,
                "workspace scanned"
            );
        }
    }

    async fn feed(&mut self, event: SourceEvent) {
        // Only these change what is pending; counting it walks the whole
        // index, which per upload would make an initial sync quadratic.
        let recount = matches!(
            event,
            SourceEvent::Observed(_) | SourceEvent::Ack { .. } | SourceEvent::Connected { .. }
        );
        let actions = self.engine.handle(event);
        for action in actions {
            self.perform(action).await;
        }
        if recount {
            let (pending, bytes) = self.engine.pending_totals();
            self.progress.pending(pending, bytes);
            let mut s = self.stats.lock();
            s.acked = self.engine.acked();
            s.pending = pending;
        }
    }

    async fn perform(&mut self, action: SourceAction) {
        match action {
            SourceAction::Record {
                entries,
                tombstones,
                seq,
            } => {
                let batch = Batch {
                    upserts: entries,
                    tombstones,
                    seq: Some(seq),
                    ..Batch::default()
                };
                let _ = self.recorder.send(Step::Record(batch));
            }
            SourceAction::Send(notice) => {
                if self.client.is_some() {
                    let seq = notice.seq();
                    let _ = self.recorder.send(Step::Send(seq, wire_notice(notice)));
                }
            }
            SourceAction::Upload { path, hash, size } => self.upload(path, hash, size),
            SourceAction::PersistAck { seq } => {
                let batch = Batch {
                    peer_seq: Some(seq),
                    ..Batch::default()
                };
                let _ = self.recorder.send(Step::Record(batch));
            }
            SourceAction::Rescan { path } => {
                let _ = self.input.send(Input::Changed(vec![
                    self.opts.workspace.join(path.as_str()),
                ]));
            }
        }
    }

    /// Queues an upload; one of at most [`PARALLEL_UPLOADS`] streams takes
    /// it, together with whatever else is queued by then (up to a batch). A
    /// stream worker starts only when fewer than that many run (a task per
    /// file, most of them finding the queue empty, cost an initial sync 78k
    /// tasks and wake-ups).
    fn upload(&self, path: RelPath, hash: ContentHash, size: u64) {
        let Some(client) = self.client.clone() else {
            return;
        };
        {
            let mut q = self.queue.lock();
            q.jobs.push_back(UploadJob {
                path,
                hash,
                size,
                client,
            });
            if q.workers >= PARALLEL_UPLOADS {
                return;
            }
            q.workers += 1;
        }
        let queue = self.queue.clone();
        let root = self.opts.workspace.clone();
        let input = self.input.clone();
        let stats = self.stats.clone();
        let progress = self.progress.clone();
        tokio::spawn(async move {
            loop {
                let jobs = {
                    let mut q = queue.lock();
                    let jobs = take_batch(&mut q.jobs);
                    if jobs.is_empty() {
                        q.workers -= 1;
                        return;
                    }
                    jobs
                };
                let client = jobs[0].client.clone();
                let files: Vec<(RelPath, ContentHash, u64)> =
                    jobs.into_iter().map(|j| (j.path, j.hash, j.size)).collect();
                let results =
                    upload_batch(client, root.clone(), files.clone(), progress.clone()).await;
                let (mut ok, mut bytes) = (0, 0);
                for ((path, hash, size), failure) in files.into_iter().zip(results) {
                    match failure {
                        Some(f) => tracing::info!(%path, failure = ?f, "upload failed"),
                        None => {
                            ok += 1;
                            bytes += size;
                        }
                    }
                    let _ = input.send(Input::Uploaded {
                        path,
                        hash,
                        failure,
                    });
                }
                let mut s = stats.lock();
                s.uploads += ok;
                s.bytes_uploaded += bytes;
            }
        });
    }
}

/// Files the hub needs, and how many stream workers upload them.
#[derive(Default)]
struct UploadQueue {
    jobs: VecDeque<UploadJob>,
    workers: usize,
}

/// A file the hub needs.
struct UploadJob {
    path: RelPath,
    hash: ContentHash,
    size: u64,
    client: HubClient,
}

/// The next batch: at least one job, then more while under the limits.
fn take_batch(queue: &mut VecDeque<UploadJob>) -> Vec<UploadJob> {
    let mut jobs = Vec::new();
    let mut bytes = 0u64;
    while let Some(job) = queue.front() {
        if !jobs.is_empty() && (jobs.len() >= BATCH_FILES || bytes + job.size > BATCH_BYTES) {
            break;
        }
        bytes += job.size;
        jobs.extend(queue.pop_front());
    }
    jobs
}

/// Streams a batch of files on one `Upload` stream; returns, per file, why it
/// failed (if it did). The hub hashes each file as it arrives and checks it
/// against the hash announced: a file that changed since it was hashed here
/// fails there (`HashMismatch`) and is rescanned, so it is not hashed twice.
async fn upload_batch(
    mut client: HubClient,
    root: PathBuf,
    files: Vec<(RelPath, ContentHash, u64)>,
    progress: ProgressHandle,
) -> Vec<Option<TransferFailure>> {
    let (tx, rx) = mpsc::channel::<Vec<v1::UploadChunk>>(READ_AHEAD);
    let list = files.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut stream = Bundler {
            tx,
            bundle: Vec::new(),
            bytes: 0,
        };
        let failures = read_files(&root, &list, &mut stream, &progress);
        stream.flush();
        failures
    });
    let messages = futures::StreamExt::flat_map(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        futures::stream::iter,
    );
    let sent = client.upload(messages).await;
    let local = reader
        .await
        .unwrap_or_else(|_| vec![Some(TransferFailure::Io); files.len()]);
    match sent {
        Ok(resp) => {
            let remote: HashMap<(String, String), TransferFailure> = resp
                .into_inner()
                .failures
                .into_iter()
                .map(|f| ((f.path, f.hash), wire_failure(f.failure)))
                .collect();
            files
                .iter()
                .zip(local)
                .map(|((path, hash, _), local)| {
                    local.or_else(|| remote.get(&(path.to_string(), hash.to_string())).copied())
                })
                .collect()
        }
        Err(status) => {
            let failure = match status.code() {
                tonic::Code::DataLoss => TransferFailure::HashMismatch,
                tonic::Code::ResourceExhausted => TransferFailure::DiskFull,
                tonic::Code::FailedPrecondition => TransferFailure::Refused,
                tonic::Code::Aborted | tonic::Code::Cancelled | tonic::Code::Unavailable => {
                    TransferFailure::Cancelled
                }
                _ => TransferFailure::Io,
            };
            local.into_iter().map(|l| l.or(Some(failure))).collect()
        }
    }
}

fn wire_failure(f: i32) -> TransferFailure {
    match v1::TransferFailure::try_from(f) {
        Ok(v1::TransferFailure::HashMismatch) => TransferFailure::HashMismatch,
        Ok(v1::TransferFailure::DiskFull) => TransferFailure::DiskFull,
        Ok(v1::TransferFailure::Refused) => TransferFailure::Refused,
        Ok(v1::TransferFailure::Cancelled) => TransferFailure::Cancelled,
        _ => TransferFailure::Io,
    }
}

/// Gathers a reader's messages into bundles for the stream (blocking side).
struct Bundler {
    tx: mpsc::Sender<Vec<v1::UploadChunk>>,
    bundle: Vec<v1::UploadChunk>,
    bytes: usize,
}

impl Bundler {
    /// Queues a message; false once the stream is gone.
    fn send(&mut self, msg: v1::UploadChunk) -> bool {
        if let Some(v1::upload_chunk::Kind::Data(d)) = &msg.kind {
            self.bytes += d.len();
        }
        self.bundle.push(msg);
        if self.bundle.len() >= BUNDLE_MESSAGES || self.bytes >= BUNDLE_BYTES {
            return self.flush();
        }
        true
    }

    /// Hands the bundle to the stream; false once the stream is gone.
    fn flush(&mut self) -> bool {
        self.bytes = 0;
        if self.bundle.is_empty() {
            return true;
        }
        self.tx
            .blocking_send(std::mem::take(&mut self.bundle))
            .is_ok()
    }
}

/// Reads the files of a batch into the stream (blocking): a header, then the
/// file's `size` bytes in chunks. A file that is gone, or no longer of the
/// size announced, fails here (`SourceChanged`: it is rescanned).
fn read_files(
    root: &Path,
    files: &[(RelPath, ContentHash, u64)],
    stream: &mut Bundler,
    progress: &ProgressHandle,
) -> Vec<Option<TransferFailure>> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    // Each file reached from the root, never through a symlink (nor one
    // swapped in since the scan), never blocking on a FIFO.
    let Ok(dir) = WorkspaceDir::open(root) else {
        return vec![Some(TransferFailure::SourceChanged); files.len()];
    };
    let mut out = vec![None; files.len()];
    for (i, (path, hash, size)) in files.iter().enumerate() {
        let opened = dir.open_read(path).and_then(|f| {
            let meta = f.metadata()?;
            Ok((f, meta))
        });
        let (mut file, meta) = match opened {
            Ok((f, m)) if m.is_file() && m.len() == *size => (f, m),
            _ => {
                out[i] = Some(TransferFailure::SourceChanged);
                continue;
            }
        };
        let header = v1::UploadHeader {
            path: path.to_string(),
            hash: hash.to_string(),
            size: *size,
            mode: meta.permissions().mode() & 0o7777,
        };
        let msg = v1::UploadChunk {
            kind: Some(v1::upload_chunk::Kind::Header(header)),
            offset: 0,
        };
        if !stream.send(msg) {
            return out; // the stream is gone: its error decides
        }
        let mut offset = 0u64;
        while offset < *size {
            let len = (*size - offset).min(UPLOAD_CHUNK as u64) as usize;
            // Read into spare capacity: no zeroing of each chunk first.
            let mut buf = Vec::with_capacity(len);
            let read = (&mut file).take(len as u64).read_to_end(&mut buf);
            if !matches!(read, Ok(n) if n == len) {
                // Shrunk while read: the hub fails it too (short).
                out[i] = Some(TransferFailure::SourceChanged);
                break;
            }
            let msg = v1::UploadChunk {
                kind: Some(v1::upload_chunk::Kind::Data(buf.into())),
                offset,
            };
            offset += len as u64;
            if !stream.send(msg) {
                return out;
            }
            progress.uploaded(len as u64);
        }
    }
    out
}

fn wire_entry(e: &Entry) -> v1::MirrorEntry {
    let kind = match e.kind {
        EntryKind::File => v1::EntryKind::File,
        EntryKind::Dir => v1::EntryKind::Dir,
        EntryKind::Symlink => v1::EntryKind::Symlink,
    };
    v1::MirrorEntry {
        path: e.path.to_string(),
        kind: kind as i32,
        size: e.size,
        mtime_ns: e.mtime_ns,
        mode: e.mode,
        symlink_target: e.symlink_target.clone().unwrap_or_default(),
        hash: e.hash.map(|h| h.to_string()).unwrap_or_default(),
        seq: e.seq,
    }
}

fn wire_notice(n: Notice) -> v1::MirrorNotice {
    use v1::mirror_notice::Kind;
    let kind = match n {
        Notice::Upsert(e) => Kind::Upsert(wire_entry(&e)),
        Notice::Delete { path, seq } => Kind::Delete(v1::MirrorDelete {
            path: path.to_string(),
            seq,
        }),
        Notice::Rename { from, entry } => Kind::Rename(v1::MirrorRename {
            from: from.to_string(),
            entry: Some(wire_entry(&entry)),
        }),
    };
    v1::MirrorNotice { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};

    #[test]
    fn reading_files_is_not_a_change() {
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Read)));
        assert!(changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Any)));
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
        assert!(changes_content(&EventKind::Any));
    }
}
