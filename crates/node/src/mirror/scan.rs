//! The worker's scans: a full one (stat only, hashing what changed) and a
//! partial one of the paths the watcher reported.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use ganglion_core::RelPath;
use ganglion_mirror::engine::{Observation, SourceEvent};
use ganglion_mirror::scan::{self, IGNORE_FILE, IgnoreRules, ScanReport};
use ganglion_mirror::{Entry, EntryKind, WorkspaceDir};

use super::{Input, MirrorWorker};

impl MirrorWorker {
    pub(super) async fn full_scan(&mut self) {
        if !self.workspace_present() {
            return;
        }
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
        if report.entries.is_empty() && self.engine.entries().next().is_some() {
            // Everything gone at once: an unmounted disk, not a mass delete.
            return self.halt(format!(
                "the workspace {} is suddenly empty: not syncing, nothing is deleted \
                 (an unmounted disk?); the node resumes once it is back",
                self.opts.workspace.display()
            ));
        }
        self.feed(SourceEvent::Observed(Observation::Full(report.entries)))
            .await;
        self.rescan(&unstable);
    }

    pub(super) async fn partial_scan(&mut self, changed: BTreeSet<PathBuf>) {
        if self.identity.halted.is_some() {
            return;
        }
        let Some(rels) = self.watched(changed) else {
            // The ignore rules changed: only a full scan applies them.
            return self.full_scan().await;
        };
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
            stat_changed(&root, rels, &prior, &known_dirs, &ignores)
        })
        .await;
        let Ok(PartialScan {
            mut report,
            removed,
            new_dir,
        }) = result
        else {
            return;
        };
        if new_dir {
            // A directory appeared (perhaps moved in whole): its contents may
            // predate the watch on it, so look at everything (stat only).
            return self.full_scan().await;
        }
        self.count(&report, false);
        if !removed.is_empty() && !self.workspace_present() {
            return;
        }
        let unstable = std::mem::take(&mut report.unstable);
        self.feed(SourceEvent::Observed(Observation::Partial {
            upserts: report.entries,
            removed,
        }))
        .await;
        self.rescan(&unstable);
    }

    /// The watched paths to look at: inside the workspace, mirrored, not
    /// ignored. `None` when an ignore file changed.
    fn watched(&self, changed: BTreeSet<PathBuf>) -> Option<Vec<RelPath>> {
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
                return None;
            }
            if self.ignores.is_ignored(&rel, false) {
                continue;
            }
            rels.push(rel);
        }
        Some(rels)
    }

    /// Whether the workspace is still the replica this node syncs: its
    /// marker is there and names it. If not (the disk was unmounted, the
    /// directory removed), the mirror halts instead of sending deletes; if
    /// it was halted and the workspace is back, it resumes.
    fn workspace_present(&mut self) -> bool {
        let marker = super::replica::read_marker(&self.opts.workspace);
        let known = self.engine.entries().next().is_some();
        let present = marker.as_deref() == Some(self.identity.replica.as_str())
            && !(known && super::replica::is_empty(&self.opts.workspace));
        match (&self.identity.halted, present) {
            (None, true) => true,
            (Some(_), false) => false,
            (None, false) => {
                self.halt(format!(
                    "the workspace {} lost its replica marker {} (unmounted disk? directory \
                     removed?): not syncing, nothing is deleted; the node resumes once it is back",
                    self.opts.workspace.display(),
                    super::replica::MARKER
                ));
                false
            }
            (Some(_), true) => {
                tracing::info!("the workspace is back: the mirror resumes");
                self.identity.halted = None;
                let _ = self.recorder.send(crate::recorder::Step::Report(
                    crate::recorder::ToHub::Halted(String::new()),
                ));
                true
            }
        }
    }

    /// Stops syncing the workspace, says why (log, hub).
    pub(super) fn halt(&mut self, reason: String) {
        tracing::error!(%reason, "the workspace mirror is halted");
        self.identity.halted = Some(reason.clone());
        let _ = self.recorder.send(crate::recorder::Step::Report(
            crate::recorder::ToHub::Halted(reason),
        ));
    }

    /// Paths that changed while being read are looked at again.
    fn rescan(&self, unstable: &[RelPath]) {
        if !unstable.is_empty() {
            let paths = unstable
                .iter()
                .map(|p| self.opts.workspace.join(p.as_str()))
                .collect();
            let _ = self.input.send(Input::Changed(paths));
        }
    }
}

/// What a partial scan saw.
struct PartialScan {
    report: ScanReport,
    /// Paths that are gone.
    removed: Vec<RelPath>,
    /// A directory the index did not know appeared.
    new_dir: bool,
}

/// Stats (and hashes, where needed) the watched paths (blocking).
fn stat_changed(
    root: &Path,
    rels: Vec<RelPath>,
    prior: &HashMap<RelPath, Entry>,
    known_dirs: &BTreeSet<RelPath>,
    ignores: &IgnoreRules,
) -> PartialScan {
    let mut out = PartialScan {
        report: ScanReport::default(),
        removed: Vec::new(),
        new_dir: false,
    };
    let dir = match WorkspaceDir::open(root) {
        Ok(d) => d,
        Err(e) => {
            // The next full scan reports it.
            tracing::warn!(error = %e, "cannot open the workspace");
            return out;
        }
    };
    let report = &mut out.report;
    for rel in rels {
        match scan::stat_path(&dir, &rel, prior.get(&rel), report) {
            // A directory only some rules match (`build/`).
            Ok(Some(e)) if e.kind == EntryKind::Dir && ignores.is_ignored(&rel, true) => {}
            Ok(Some(e)) => {
                out.new_dir |= e.kind == EntryKind::Dir && !known_dirs.contains(&rel);
                report.entries.push(e);
            }
            Ok(None) if !report.unstable.contains(&rel) => out.removed.push(rel),
            Ok(None) => {}
            Err(reason) => tracing::warn!(path = %rel, ?reason, "not mirrored"),
        }
    }
    out
}
