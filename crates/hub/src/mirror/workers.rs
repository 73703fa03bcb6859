//! The mirror's background workers: the transfer reaper and the orphan purge.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ganglion_core::time::SharedClock;
use ganglion_store::Store;

use super::Mirrors;
use crate::worker::Periodic;

/// Releases idle transfers (and their locks) and sweeps stale staging files.
pub struct TransferReaper {
    pub mirrors: Arc<Mirrors>,
    pub every: Duration,
}

impl TransferReaper {
    pub fn sweep(&self) -> usize {
        let mut n = self.mirrors.locks().reap_idle();
        for r in self.mirrors.open_receivers() {
            n += r.reap_idle();
            if let Err(e) = r.sweep_staging() {
                tracing::warn!(node = r.node(), error = %e, "staging sweep failed");
            }
        }
        n
    }
}

#[async_trait]
impl Periodic for TransferReaper {
    fn name(&self) -> &'static str {
        "transfer-reaper"
    }

    fn period(&self) -> Duration {
        self.every
    }

    async fn tick(&mut self) -> Result<(), String> {
        // Blocking: the sweep lists directories, and a reaped transfer kept
        // as a partial is fsynced.
        let me = Self {
            mirrors: self.mirrors.clone(),
            every: self.every,
        };
        let reaped = tokio::task::spawn_blocking(move || me.sweep())
            .await
            .map_err(|e| format!("transfer reaper: {e}"))?;
        if reaped > 0 {
            tracing::info!(reaped, "idle transfers released");
        }
        Ok(())
    }
}

/// Moves the mirror of a node that no longer exists to `DATA_DIR/trash/`, and
/// deletes trash older than the grace period. It refuses to act when the
/// store cannot be read, or lists no nodes at all while mirrors exist: an
/// empty answer is more likely a broken store than a deleted fleet.
pub struct OrphanPurge {
    pub store: Arc<dyn Store>,
    pub data_dir: PathBuf,
    pub clock: SharedClock,
    pub grace: Duration,
    pub every: Duration,
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub trashed: Vec<String>,
    pub deleted: Vec<String>,
    /// Staging directories of unknown nodes removed (transfers in progress
    /// and partials of cut ones: nothing a mirror holds).
    pub staging: Vec<String>,
    pub refused: Option<String>,
}

impl OrphanPurge {
    pub async fn pass(&self) -> PurgeReport {
        let nodes = match self.store.list_nodes().await {
            Ok(n) => n
                .into_iter()
                .map(|n| n.name.to_string())
                .collect::<Vec<_>>(),
            Err(e) => {
                return PurgeReport {
                    refused: Some(format!("the store is unreachable: {e}")),
                    ..Default::default()
                };
            }
        };
        let (dir, now, grace) = (self.data_dir.clone(), self.clock.now(), self.grace);
        // Filesystem work never runs on the async runtime.
        tokio::task::spawn_blocking(move || purge_dirs(&dir, &nodes, now, grace))
            .await
            .unwrap_or_else(|e| PurgeReport {
                refused: Some(format!("purge task failed: {e}")),
                ..Default::default()
            })
    }
}

fn purge_dirs(
    data_dir: &std::path::Path,
    nodes: &[String],
    now: ganglion_core::Timestamp,
    grace: Duration,
) -> PurgeReport {
    let mut report = PurgeReport::default();
    let mirrors_dir = data_dir.join("mirrors");
    let trash = data_dir.join("trash");
    let mirrors: Vec<String> = match std::fs::read_dir(&mirrors_dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    if nodes.is_empty() && !mirrors.is_empty() {
        report.refused = Some("the store lists no nodes while mirrors exist".into());
        return report;
    }
    for m in mirrors {
        if nodes.contains(&m) {
            continue;
        }
        let _ = std::fs::create_dir_all(&trash);
        let to = trash.join(format!("{m}.{}", now.millis()));
        match std::fs::rename(mirrors_dir.join(&m), &to) {
            Ok(()) => {
                tracing::warn!(mirror = %m, to = %to.display(), "mirror of an unknown node moved to trash");
                report.trashed.push(m);
            }
            Err(e) => {
                tracing::error!(mirror = %m, error = %e, "cannot move an orphaned mirror to trash")
            }
        }
    }
    // An empty list is more likely a broken store (as above): no staging goes.
    if !nodes.is_empty() {
        report.staging = purge_staging(&data_dir.join("staging"), nodes);
    }
    let Ok(rd) = std::fs::read_dir(&trash) else {
        return report;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(ms) = name
            .rsplit_once('.')
            .and_then(|(_, t)| t.parse::<i64>().ok())
        else {
            continue;
        };
        if now.since(ganglion_core::Timestamp::from_millis(ms)) < grace {
            continue;
        }
        match std::fs::remove_dir_all(e.path()) {
            Ok(()) => report.deleted.push(name),
            Err(err) => {
                tracing::error!(path = %e.path().display(), error = %err, "cannot delete trash")
            }
        }
    }
    report
}

/// Removes the staging directories of nodes the store does not list (their
/// partials would otherwise stay: no receiver opens to age them out).
/// Called only with a non-empty list (see `purge_dirs`).
fn purge_staging(staging: &std::path::Path, nodes: &[String]) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(staging) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if nodes.contains(&name) {
            continue;
        }
        match std::fs::remove_dir_all(e.path()) {
            Ok(()) => {
                tracing::info!(node = %name, "staging of an unknown node removed");
                removed.push(name);
            }
            Err(err) => {
                tracing::error!(path = %e.path().display(), error = %err, "cannot remove staging")
            }
        }
    }
    removed
}

#[async_trait]
impl Periodic for OrphanPurge {
    fn name(&self) -> &'static str {
        "orphan-purge"
    }

    fn period(&self) -> Duration {
        self.every
    }

    async fn tick(&mut self) -> Result<(), String> {
        if let Some(why) = self.pass().await.refused {
            tracing::warn!(%why, "orphan purge refused to act");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ganglion_core::Timestamp;
    use ganglion_core::time::ManualClock;
    use ganglion_store::{Backend, SqliteStore};

    use super::*;

    async fn store_with(name: &str) -> Arc<dyn Store> {
        let store = SqliteStore::in_memory().await.unwrap();
        crate::test_support::joined_node(&store, name).await;
        Arc::new(store)
    }

    #[tokio::test]
    async fn trashes_orphans_then_deletes_after_grace() {
        let dir = tempfile::tempdir().unwrap();
        for m in ["kept", "gone"] {
            std::fs::create_dir_all(dir.path().join("mirrors").join(m).join("sub")).unwrap();
        }
        let clock = ManualClock::new(Timestamp(1_000_000));
        let purge = OrphanPurge {
            store: store_with("kept").await,
            data_dir: dir.path().to_path_buf(),
            clock: Arc::new(clock.clone()),
            grace: Duration::from_secs(3600),
            every: Duration::from_secs(60),
        };
        let r = purge.pass().await;
        assert_eq!(r.trashed, vec!["gone".to_owned()]);
        assert!(dir.path().join("mirrors/kept/sub").exists());
        assert!(!dir.path().join("mirrors/gone").exists());
        assert!(
            purge.pass().await.deleted.is_empty(),
            "not before the grace period"
        );
        clock.advance(Duration::from_secs(3601));
        assert_eq!(purge.pass().await.deleted.len(), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("trash")).unwrap().count(),
            0
        );
    }

    /// An unknown node's staging (its partials) goes at once; a known
    /// node's stays.
    #[tokio::test]
    async fn removes_the_staging_of_unknown_nodes() {
        let dir = tempfile::tempdir().unwrap();
        for m in ["kept", "gone"] {
            let partial = dir.path().join("staging").join(m).join("partial");
            std::fs::create_dir_all(&partial).unwrap();
            std::fs::write(partial.join("p.part"), b"held").unwrap();
        }
        let purge = OrphanPurge {
            store: store_with("kept").await,
            data_dir: dir.path().to_path_buf(),
            clock: Arc::new(ManualClock::new(Timestamp(0))),
            grace: Duration::from_secs(3600),
            every: Duration::from_secs(60),
        };
        assert_eq!(purge.pass().await.staging, vec!["gone".to_owned()]);
        assert!(dir.path().join("staging/kept/partial/p.part").exists());
        assert!(!dir.path().join("staging/gone").exists());
    }

    #[tokio::test]
    async fn refuses_when_the_store_lists_no_nodes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("mirrors/n1")).unwrap();
        let purge = OrphanPurge {
            store: Arc::new(SqliteStore::in_memory().await.unwrap()),
            data_dir: dir.path().to_path_buf(),
            clock: Arc::new(ManualClock::new(Timestamp(0))),
            grace: Duration::ZERO,
            every: Duration::from_secs(60),
        };
        let r = purge.pass().await;
        assert!(r.refused.is_some());
        assert!(dir.path().join("mirrors/n1").exists(), "nothing moved");
    }

    #[tokio::test]
    async fn refuses_when_the_store_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("mirrors/n1")).unwrap();
        let store = SqliteStore::in_memory().await.unwrap();
        store.close().await;
        let purge = OrphanPurge {
            store: Arc::new(store),
            data_dir: dir.path().to_path_buf(),
            clock: Arc::new(ManualClock::new(Timestamp(0))),
            grace: Duration::ZERO,
            every: Duration::from_secs(60),
        };
        assert!(purge.pass().await.refused.unwrap().contains("unreachable"));
        assert!(dir.path().join("mirrors/n1").exists());
    }
}
