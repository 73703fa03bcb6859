//! Hub-side changes in the workspace (the two-way mirror). They arrive in
//! order on the control stream; each is applied once the one before it is:
//! a put's content is downloaded into `.ganglion/incoming` (hash-checked,
//! synced), then [`Applier`] swaps it in as a compare-and-swap against the
//! change's base. What the workspace then holds is recorded as agreed with
//! the hub (never reported back as the node's change), conflicts and local
//! versions that stay are reported, and the change is acknowledged
//! (`Applied`) once all that is in the index, in order with the notices.
//!
//! A change at or below the last applied seq (resent after a reconnect) is
//! acknowledged again without being applied twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ganglion_core::RelPath;
use ganglion_core::time::{Clock, SystemClock};
use ganglion_mirror::apply::{Applied, Applier};
use ganglion_mirror::engine::SourceAction;
use ganglion_mirror::index::Batch;
use ganglion_mirror::scan::{self, ScanReport};
use ganglion_mirror::{Base, Entry, HubChange, HubOp, WorkspaceDir};

use super::{Input, MirrorOptions, MirrorWorker};
pub use crate::link::download::DownloadError;
use crate::recorder::{Step, ToHub};

/// A failed download or apply is tried again after this long.
const RETRY: Duration = Duration::from_secs(1);

/// The queue of hub-side changes and the writer that applies them.
pub(super) struct HubChanges {
    applier: Option<Arc<Applier>>,
    queue: VecDeque<HubChange>,
    /// The last change applied (persisted in the index as `out_acked`).
    applied: u64,
    /// A download runs for the change in front.
    downloading: bool,
    retry_armed: bool,
    /// Local versions to send again once the change in front is acknowledged.
    resend: Vec<RelPath>,
}

impl HubChanges {
    pub(super) fn open(opts: &MirrorOptions, applied: u64) -> Self {
        let applier = match Applier::open(&opts.workspace, &opts.node_name) {
            Ok(a) => Some(Arc::new(a)),
            Err(e) => {
                tracing::error!(error = %e, "cannot prepare the workspace for hub-side changes; they wait");
                None
            }
        };
        Self {
            applier,
            queue: VecDeque::new(),
            applied,
            downloading: false,
            retry_armed: false,
            resend: Vec::new(),
        }
    }

    /// New changes from the hub, in order (a resent one is queued once).
    pub(super) fn queue(&mut self, changes: Vec<HubChange>) {
        for c in changes {
            if self.queue.back().is_none_or(|b| c.seq > b.seq) {
                self.queue.push_back(c);
            }
        }
    }

    /// A new stream: the hub sends everything not applied again.
    pub(super) fn connected(&mut self) {
        self.queue.clear();
        self.downloading = false;
    }

    /// The last change applied (told to the hub first on a new stream).
    pub(super) fn applied(&self) -> u64 {
        self.applied
    }

    pub(super) fn disconnected(&mut self) {
        self.queue.clear();
        self.downloading = false;
    }
}

impl MirrorWorker {
    /// Applies queued changes until one needs a download (it continues
    /// when the download ends) or the queue is empty.
    pub(super) async fn apply_hub_changes(&mut self) {
        self.hub.retry_armed = false;
        while !self.hub.downloading {
            let Some(change) = self.hub.queue.front().cloned() else {
                return;
            };
            let Some(applier) = self.hub.applier.clone() else {
                return self.retry_later();
            };
            if change.seq <= self.hub.applied {
                // Applied before a reconnect: acknowledge it again.
                self.hub.queue.pop_front();
                let _ = self.recorder.send(Step::Report(ToHub::Applied(change.seq)));
                continue;
            }
            match &change.op {
                HubOp::Put {
                    path,
                    hash,
                    executable,
                    ..
                } => {
                    // Already there (a restore offers what the node has):
                    // recorded as agreed, nothing downloaded.
                    let (a, p) = (applier.clone(), path.clone());
                    let current = tokio::task::spawn_blocking(move || a.current(&p)).await;
                    if matches!(&current, Ok(Ok(Base::File(h))) if h == hash) {
                        let applied = Applied {
                            agreed: vec![path.clone()],
                            ..Applied::default()
                        };
                        self.settle(&change, applied, None).await;
                        continue;
                    }
                    let Some(client) = self.client.clone() else {
                        return;
                    };
                    let (file, name) = match applier.create_incoming(change.seq, *executable) {
                        Ok(f) => f,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot create an incoming file");
                            return self.retry_later();
                        }
                    };
                    self.hub.downloading = true;
                    let (input, seq, path, hash) =
                        (self.input.clone(), change.seq, path.clone(), *hash);
                    tokio::spawn(async move {
                        let result = crate::link::download::download(client, &path, hash, file)
                            .await
                            .map(|_| name.clone());
                        if result.is_err() {
                            applier.discard(&name);
                        }
                        let _ = input.send(Input::Downloaded { seq, result });
                    });
                    return;
                }
                HubOp::Delete { path } => {
                    let unchanged = self.unchanged_below(path);
                    let (a, p, base) = (applier.clone(), path.clone(), change.base.clone());
                    let done = tokio::task::spawn_blocking(move || {
                        a.delete(&p, &base, &|rel| unchanged(rel))
                    })
                    .await;
                    match done {
                        Ok(Ok(applied)) => self.settle(&change, applied, None).await,
                        other => {
                            tracing::warn!(?other, path = %path, "applying a hub-side delete failed; retrying");
                            return self.retry_later();
                        }
                    }
                }
                HubOp::Move { from, to } => {
                    let (a, f, t, base) = (
                        applier.clone(),
                        from.clone(),
                        to.clone(),
                        change.base.clone(),
                    );
                    let now = SystemClock.now();
                    let done =
                        tokio::task::spawn_blocking(move || a.rename(&f, &t, &base, now)).await;
                    match done {
                        Ok(Ok(Some(applied))) => {
                            self.settle(&change, applied, Some((from.clone(), to.clone())))
                                .await
                        }
                        Ok(Ok(None)) => self.move_as_content(change.clone()),
                        other => {
                            tracing::warn!(?other, %from, %to, "applying a hub-side move failed; retrying");
                            return self.retry_later();
                        }
                    }
                }
            }
        }
    }

    /// A move that cannot be a rename here (the source changed, or the
    /// target is taken): the content moves instead, as a delete of the
    /// source (which an edit beats) and a put of a file's content.
    fn move_as_content(&mut self, change: HubChange) {
        let HubOp::Move { from, to } = &change.op else {
            return;
        };
        self.hub.queue.pop_front();
        let mut steps = vec![HubChange {
            seq: change.seq,
            op: HubOp::Delete { path: from.clone() },
            base: change.base.clone(),
        }];
        if let Base::File(hash) = change.base {
            steps.insert(
                0,
                HubChange {
                    seq: change.seq,
                    op: HubOp::Put {
                        path: to.clone(),
                        hash,
                        size: 0,
                        executable: false,
                    },
                    base: Base::Absent,
                },
            );
        } else {
            tracing::warn!(%from, %to, "a moved directory the workspace no longer holds as it was: its source is kept, the target waits for the next changes");
        }
        // Both halves carry the move's seq: only the last acknowledges it.
        for s in steps.into_iter().rev() {
            self.hub.queue.push_front(s);
        }
    }

    pub(super) async fn downloaded(&mut self, seq: u64, result: Result<String, DownloadError>) {
        self.hub.downloading = false;
        let Some(change) = self.hub.queue.front().cloned().filter(|c| c.seq == seq) else {
            // The stream went meanwhile; the hub sends the change again.
            if let (Ok(name), Some(a)) = (&result, &self.hub.applier) {
                a.discard(name);
            }
            return;
        };
        let HubOp::Put { path, hash, .. } = &change.op else {
            return;
        };
        match result {
            Ok(name) => {
                let applier = self
                    .hub
                    .applier
                    .clone()
                    .expect("downloads need the applier");
                let (a, p, h, base) = (applier, path.clone(), *hash, change.base.clone());
                let now = SystemClock.now();
                let done =
                    tokio::task::spawn_blocking(move || a.put(&p, h, &base, &name, now)).await;
                match done {
                    Ok(Ok(applied)) => self.settle(&change, applied, None).await,
                    other => {
                        tracing::warn!(?other, %path, "applying a hub-side put failed; retrying");
                        return self.retry_later();
                    }
                }
            }
            Err(DownloadError::Gone) => {
                // A newer change replaced it; nothing of it to apply but
                // the parent directories the hub made for it (it keeps them).
                tracing::debug!(%path, seq, "hub-side change superseded");
                let applier = self
                    .hub
                    .applier
                    .clone()
                    .expect("downloads need the applier");
                let (a, p) = (applier, path.clone());
                let now = SystemClock.now();
                match tokio::task::spawn_blocking(move || a.parents_only(&p, now)).await {
                    Ok(Ok(applied)) => self.settle(&change, applied, None).await,
                    other => {
                        tracing::warn!(?other, %path, "creating the parents of a superseded put failed; retrying");
                        return self.retry_later();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, %path, "downloading a hub-side change failed; retrying");
                return self.retry_later();
            }
        }
        self.apply_hub_changes().await;
    }

    /// Records what a change left in the workspace and acknowledges it.
    async fn settle(
        &mut self,
        change: &HubChange,
        applied: Applied,
        moved: Option<(RelPath, RelPath)>,
    ) {
        self.hub.queue.pop_front();
        let root = self.opts.workspace.clone();
        let paths = applied.agreed.clone();
        let agreed: Vec<Entry> = tokio::task::spawn_blocking(move || stat_all(&root, &paths))
            .await
            .unwrap_or_default();
        let moved_ref = moved.as_ref().map(|(f, t)| (f, t));
        let actions = self
            .engine
            .hub_applied(agreed, &applied.removed, moved_ref, change.seq);
        for a in actions {
            self.perform(a).await;
        }
        // The second half of a move split in two acknowledges it.
        let last_half = self.hub.queue.front().is_none_or(|c| c.seq != change.seq);
        if last_half {
            self.hub.applied = change.seq;
            let _ = self.recorder.send(Step::Record(Batch {
                out_acked: Some(change.seq),
                ..Batch::default()
            }));
        }
        for c in applied.conflicts {
            tracing::warn!(path = %c.path, conflict_path = %c.conflict_path, origin = %c.origin, "conflict: both versions kept");
            let _ = self.recorder.send(Step::Report(ToHub::Conflict(c)));
        }
        if last_half {
            let _ = self.recorder.send(Step::Report(ToHub::Applied(change.seq)));
        }
        // Resent only once the whole change is acknowledged: sent before,
        // they would meet the still-queued change at the hub and be skipped.
        self.hub.resend.extend(applied.resend);
        if last_half {
            let paths = std::mem::take(&mut self.hub.resend);
            let resend: Vec<SourceAction> = self.engine.resend(&paths);
            for a in resend {
                self.perform(a).await;
            }
        }
    }

    /// Whether a path below a directory the hub deletes still holds what the
    /// hub knows: its entry here is acknowledged and its stat unchanged.
    fn unchanged_below(&self, dir: &RelPath) -> impl Fn(&RelPath) -> bool + Send + 'static {
        let acked = self.engine.acked();
        let known: std::collections::HashMap<RelPath, Entry> = self
            .engine
            .entries()
            .filter(|e| e.path.starts_with(dir) && e.seq <= acked)
            .map(|e| (e.path.clone(), e.clone()))
            .collect();
        let root = self.opts.workspace.clone();
        move |rel: &RelPath| {
            let Some(prior) = known.get(rel) else {
                return false;
            };
            let Ok(ws) = WorkspaceDir::open(&root) else {
                return false;
            };
            let mut report = ScanReport::default();
            matches!(scan::stat_path(&ws, rel, Some(prior), &mut report),
                Ok(Some(now)) if now.same_stat(prior) && now.same_content(prior))
        }
    }

    fn retry_later(&mut self) {
        if self.hub.retry_armed {
            return;
        }
        self.hub.retry_armed = true;
        let input = self.input.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETRY).await;
            let _ = input.send(Input::RetryHubChanges);
        });
    }
}

/// Stats (and hashes) paths for the index (blocking).
fn stat_all(root: &std::path::Path, paths: &[RelPath]) -> Vec<Entry> {
    let Ok(ws) = WorkspaceDir::open(root) else {
        return Vec::new();
    };
    let mut report = ScanReport::default();
    paths
        .iter()
        .filter_map(|p| scan::stat_path(&ws, p, None, &mut report).ok().flatten())
        .collect()
}
