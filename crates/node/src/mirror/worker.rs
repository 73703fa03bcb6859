//! [`MirrorWorker`]: the node mirror's event loop. It debounces the
//! watcher's changes, feeds the [`SourceEngine`](ganglion_mirror::SourceEngine)
//! and performs its actions: index writes and notices through the recorder,
//! uploads through the queue.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ganglion_core::RelPath;
use ganglion_mirror::engine::{SourceAction, SourceEvent};
use ganglion_mirror::index::Batch;
use ganglion_mirror::scan::{BUILTIN_IGNORES, ScanReport};
use tokio::sync::mpsc;

use super::watcher::{DEBOUNCE, QUIET, RESCAN_EVERY};
use super::{Input, MirrorWorker};
use crate::recorder::Step;

impl MirrorWorker {
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
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
                self.hub.connected();
                // What was applied goes first, before the notices resent
                // below: the hub must not take a notice made after applying
                // a change for one that met it (and skip it).
                if self.hub.applied() > 0 {
                    let applied = crate::recorder::ToHub::Applied(self.hub.applied());
                    let _ = self.recorder.send(Step::Report(applied));
                }
                if let Some(reason) = self.identity.halted.clone() {
                    let _ = self
                        .recorder
                        .send(Step::Report(crate::recorder::ToHub::Halted(reason)));
                }
                SourceEvent::Connected { hub_applied }
            }
            Input::HubChanges(changes) => {
                self.hub.queue(changes);
                return self.apply_hub_changes().await;
            }
            Input::Downloaded { seq, result } => return self.downloaded(seq, result).await,
            Input::RetryHubChanges => return self.apply_hub_changes().await,
            Input::Disconnected => {
                self.client = None;
                self.hub.disconnected();
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
            #[cfg(test)]
            Input::Panic => panic!("injected fault"),
        };
        self.feed(event).await;
    }

    pub(super) fn excluded(&self, rel: &RelPath) -> bool {
        let first = rel.components().next().unwrap_or_default();
        BUILTIN_IGNORES.contains(&first) || self.opts.exclude.iter().any(|x| rel.starts_with(x))
    }

    pub(super) fn count(&self, report: &ScanReport, full: bool) {
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

    pub(super) async fn feed(&mut self, event: SourceEvent) {
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

    pub(super) async fn perform(&mut self, action: SourceAction) {
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
                    let _ = self.recorder.send(Step::Send(seq, notice));
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
}
