//! The workspace's replica identity (the two-way mirror's ancestor is bound
//! to it) and the guard against "everything vanished".
//!
//! The identity is `ID.INCARNATION` (`ID` 16 hex digits), kept in the node's
//! index and in a marker, `WORKSPACE/.ganglion/replica`. At start:
//! - index and marker agree: the same replica, the index is its ancestor;
//! - the index lists entries but the workspace is empty (an unmounted disk,
//!   a removed directory): nothing is synced, the node says why
//!   ([`Identity::halted`]) and waits; an empty workspace is never a mass
//!   delete. `ganglion node restore` forgets the index so that the next
//!   start restores the workspace from the hub;
//! - the index records no replica (a new state dir, or an index written
//!   before replicas existed): a new incarnation, the index kept if any;
//! - the marker is missing or another one (another disk at the same path, a
//!   marker deleted): a new incarnation, the index dropped — it describes
//!   another tree.
//!
//! A new incarnation tells the hub (in its hello) that the ancestor is gone:
//! the hub offers its whole mirror back as changes based on nothing, so
//! differences become conflicts and nothing is deleted.

use std::io::Write;
use std::path::Path;

use ganglion_mirror::index::{Batch, Loaded, SharedIndex};

use crate::recorder::MIRROR;

/// The marker's place below the workspace root.
pub const MARKER: &str = ".ganglion/replica";

/// What the node knows of its replica at start.
#[derive(Clone, Debug)]
pub struct Identity {
    pub replica: String,
    /// Set when syncing must not start: why.
    pub halted: Option<String>,
}

fn parse(s: &str) -> Option<(String, u64)> {
    let (id, inc) = s.trim().split_once('.')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(())
        .and(inc.parse().ok())
        .map(|inc| (id.to_owned(), inc))
}

/// The marker's replica, if there is a valid one.
pub fn read_marker(workspace: &Path) -> Option<String> {
    let text = std::fs::read_to_string(workspace.join(MARKER)).ok()?;
    parse(&text).map(|(id, inc)| format!("{id}.{inc}"))
}

/// Whether the workspace holds nothing but the node's own `.ganglion`
/// (or is not there at all).
pub fn is_empty(workspace: &Path) -> bool {
    match std::fs::read_dir(workspace) {
        Ok(rd) => rd.flatten().all(|e| e.file_name() == ".ganglion"),
        Err(_) => true,
    }
}

fn write_marker(workspace: &Path, replica: &str) -> std::io::Result<()> {
    let dir = workspace.join(".ganglion");
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join("replica.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{replica}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join("replica"))?;
    std::fs::File::open(&dir)?.sync_all()
}

/// Settles the replica identity at start (see the module docs); may drop
/// the index (then `loaded` is emptied too).
pub async fn settle(
    workspace: &Path,
    index: &SharedIndex,
    loaded: &mut Loaded,
) -> Result<Identity, String> {
    let marker = read_marker(workspace);
    let recorded = loaded.replica.clone();
    let known = !loaded.entries.is_empty();
    if let Some(r) = &recorded
        && marker.as_ref() == Some(r)
    {
        return Ok(Identity {
            replica: r.clone(),
            halted: None,
        });
    }
    if known && is_empty(workspace) {
        let reason = format!(
            "the workspace {} is empty (or gone) but its index lists {} entries: not syncing, \
             nothing is deleted (an unmounted disk?). Mount it again, or run `ganglion node \
             restore` to restore it from the hub",
            workspace.display(),
            loaded.entries.len()
        );
        return Ok(Identity {
            replica: recorded.unwrap_or_default(),
            halted: Some(reason),
        });
    }
    let (id, inc) = recorded
        .as_deref()
        .and_then(parse)
        .or_else(|| marker.as_deref().and_then(parse))
        .unwrap_or_else(|| (format!("{:016x}", rand::random::<u64>()), 0));
    let replica = format!("{id}.{}", inc + 1);
    if recorded.is_some() {
        tracing::warn!(
            marker = marker.as_deref().unwrap_or("(none)"),
            index = recorded.as_deref().unwrap_or("(none)"),
            %replica,
            "the workspace is not the replica the index describes (another disk? a marker \
             deleted?): starting a new incarnation; the hub offers its mirror back and keeps \
             both versions of what differs"
        );
        index
            .drop_mirror(MIRROR)
            .await
            .map_err(|e| format!("mirror index: {e}"))?;
        *loaded = Loaded::default();
    }
    write_marker(workspace, &replica).map_err(|e| format!("writing {MARKER}: {e}"))?;
    let batch = Batch {
        replica: Some(replica.clone()),
        ..Batch::default()
    };
    index
        .apply(MIRROR, &batch)
        .await
        .map_err(|e| format!("mirror index: {e}"))?;
    Ok(Identity {
        replica,
        halted: None,
    })
}

/// `ganglion node restore`: forgets the workspace's index (and marker), so
/// that the next start is a new incarnation the hub restores.
pub async fn forget(workspace: &Path, state_dir: &Path) -> Result<usize, String> {
    let index = ganglion_store::SqliteMirrorIndex::open(&state_dir.join("index.db"))
        .await
        .map_err(|e| format!("mirror index: {e}"))?;
    let loaded = ganglion_mirror::MirrorIndex::load(&index, MIRROR)
        .await
        .map_err(|e| format!("mirror index: {e}"))?;
    ganglion_mirror::MirrorIndex::drop_mirror(&index, MIRROR)
        .await
        .map_err(|e| format!("mirror index: {e}"))?;
    match std::fs::remove_file(workspace.join(MARKER)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing {MARKER}: {e}")),
    }
    Ok(loaded.entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_strictly() {
        assert_eq!(
            parse("0123456789abcdef.3\n"),
            Some(("0123456789abcdef".into(), 3))
        );
        assert_eq!(parse("0123456789abcdef"), None);
        assert_eq!(parse("xyz.1"), None);
        assert_eq!(parse("0123456789abcdef.x"), None);
    }
}
