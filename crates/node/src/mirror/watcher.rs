//! The workspace watch: a recursive inotify watch whose events become
//! changed paths (or a rescan) for the worker.

use std::path::Path;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;

use super::Input;

/// Watcher events are gathered until none came for QUIET, at most DEBOUNCE.
pub(super) const DEBOUNCE: Duration = Duration::from_millis(50);
pub(super) const QUIET: Duration = Duration::from_millis(10);
pub(super) const RESCAN_EVERY: Duration = Duration::from_secs(60);

/// A recursive inotify watch; events are forwarded as changed paths. Without
/// one (e.g. inotify limits), the periodic rescan still keeps the mirror current.
pub(super) fn watch(
    root: &Path,
    input: mpsc::UnboundedSender<Input>,
) -> Option<notify::RecommendedWatcher> {
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
