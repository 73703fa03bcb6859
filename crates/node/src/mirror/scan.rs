//! The worker's scans: a full one (stat only, hashing what changed) and a
//! partial one of the paths the watcher reported.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use ganglion_core::RelPath;
use ganglion_mirror::engine::{Observation, SourceEvent};
use ganglion_mirror::scan::{self, IGNORE_FILE, ScanReport};
use ganglion_mirror::{Entry, EntryKind, WorkspaceDir};

use super::{Input, MirrorWorker};

impl MirrorWorker {
    pub(super) async fn full_scan(&mut self) {
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

    pub(super) async fn partial_scan(&mut self, changed: BTreeSet<PathBuf>) {
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
}
