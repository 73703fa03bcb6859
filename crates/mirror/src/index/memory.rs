//! An in-memory [`MirrorIndex`], for tests and simulations. It behaves as
//! the SQLite index does (the store's suite runs both), without the disk:
//! clones share one index, so a "restart" that keeps a clone reloads what
//! was committed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use ganglion_core::{RelPath, Timestamp};

use super::{Batch, Error, Loaded, MirrorIndex, Summary};
use crate::change::{Conflict, HubChange};
use crate::engine::Tombstone;
use crate::entry::{Entry, EntryKind};

#[derive(Clone, Debug, Default)]
pub struct MemoryIndex {
    mirrors: Arc<Mutex<BTreeMap<String, Mirror>>>,
}

#[derive(Clone, Debug, Default)]
struct Mirror {
    seq: u64,
    peer_seq: u64,
    synced_at: Option<Timestamp>,
    out_seq: u64,
    out_acked: u64,
    replica: Option<String>,
    outbox: BTreeMap<u64, HubChange>,
    conflicts: BTreeMap<RelPath, Conflict>,
    /// By path; `true` marks a tombstone.
    rows: BTreeMap<RelPath, (Entry, bool)>,
}

impl Mirror {
    fn live(&self) -> impl Iterator<Item = &Entry> {
        self.rows.values().filter(|(_, t)| !t).map(|(e, _)| e)
    }

    fn set_peer_seq(&mut self, seq: u64) {
        self.peer_seq = seq;
        self.rows.retain(|_, (e, t)| !*t || e.seq > seq);
    }
}

impl MemoryIndex {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Mirror>> {
        self.mirrors.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl MirrorIndex for MemoryIndex {
    async fn load(&self, mirror: &str) -> Result<Loaded, Error> {
        let mirrors = self.lock();
        let Some(m) = mirrors.get(mirror) else {
            return Ok(Loaded::default());
        };
        let mut out = Loaded {
            seq: m.seq,
            peer_seq: m.peer_seq,
            outbox: m.outbox.values().cloned().collect(),
            out_seq: m.out_seq,
            out_acked: m.out_acked,
            conflicts: m.conflicts.values().cloned().collect(),
            replica: m.replica.clone(),
            ..Loaded::default()
        };
        for (e, tombstone) in m.rows.values() {
            match tombstone {
                true => out.tombstones.push(Tombstone {
                    path: e.path.clone(),
                    seq: e.seq,
                    hash: e.hash,
                }),
                false => out.entries.push(e.clone()),
            }
        }
        Ok(out)
    }

    async fn summary(&self, mirror: &str) -> Result<Summary, Error> {
        let mirrors = self.lock();
        Ok(mirrors.get(mirror).map_or_else(Summary::default, |m| {
            let files = m.live().filter(|e| e.kind == EntryKind::File);
            let (files, bytes) = files.fold((0, 0), |(n, b), e| (n + 1, b + e.size));
            Summary {
                seq: m.seq,
                peer_seq: m.peer_seq,
                files,
                bytes,
                synced_at: m.synced_at,
                to_node: m.outbox.len() as u64,
                conflicts: m.conflicts.len() as u64,
                replica: m.replica.clone(),
            }
        }))
    }

    async fn list(&self, mirror: &str, prefix: Option<&RelPath>) -> Result<Vec<Entry>, Error> {
        let mirrors = self.lock();
        let Some(m) = mirrors.get(mirror) else {
            return Ok(Vec::new());
        };
        Ok(m.live()
            .filter(|e| prefix.is_none_or(|p| e.path.starts_with(p)))
            .cloned()
            .collect())
    }

    async fn get(&self, mirror: &str, path: &RelPath) -> Result<Option<Entry>, Error> {
        let mirrors = self.lock();
        let row = mirrors.get(mirror).and_then(|m| m.rows.get(path));
        Ok(row.filter(|(_, t)| !t).map(|(e, _)| e.clone()))
    }

    async fn mirrors(&self) -> Result<Vec<String>, Error> {
        Ok(self.lock().keys().cloned().collect())
    }

    async fn apply(&self, mirror: &str, batch: &Batch) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut mirrors = self.lock();
        let m = mirrors.entry(mirror.to_owned()).or_default();
        for p in &batch.removes {
            m.rows.remove(p);
        }
        for p in &batch.removes_below {
            m.rows.retain(|path, _| path == p || !path.starts_with(p));
        }
        for t in &batch.tombstones {
            m.rows
                .insert(t.path.clone(), (super::tombstone_row(t), true));
        }
        for e in &batch.upserts {
            m.rows.insert(e.path.clone(), (e.clone(), false));
        }
        if let Some(seq) = batch.seq {
            m.seq = seq;
        }
        if let Some(peer) = batch.peer_seq {
            m.set_peer_seq(peer);
        }
        for c in &batch.outbox {
            m.outbox.insert(c.seq, c.clone());
        }
        for s in &batch.outbox_drop {
            m.outbox.remove(s);
        }
        if let Some(acked) = batch.out_acked {
            m.out_acked = acked;
            m.outbox.retain(|s, _| *s > acked);
        }
        if let Some(s) = batch.out_seq {
            m.out_seq = s;
        }
        for c in &batch.conflicts {
            m.conflicts.insert(c.conflict_path.clone(), c.clone());
        }
        for p in &batch.conflicts_resolved {
            m.conflicts.remove(p);
        }
        if let Some(r) = &batch.replica {
            m.replica = Some(r.clone());
        }
        Ok(())
    }

    async fn set_peer_seq(&self, mirror: &str, seq: u64) -> Result<(), Error> {
        let mut mirrors = self.lock();
        mirrors
            .entry(mirror.to_owned())
            .or_default()
            .set_peer_seq(seq);
        Ok(())
    }

    async fn acknowledge(&self, mirror: &str, seq: u64, at: Timestamp) -> Result<(), Error> {
        let mut mirrors = self.lock();
        let m = mirrors.entry(mirror.to_owned()).or_default();
        m.set_peer_seq(seq);
        m.synced_at = Some(at);
        Ok(())
    }

    async fn drop_mirror(&self, mirror: &str) -> Result<(), Error> {
        self.lock().remove(mirror);
        Ok(())
    }
}
