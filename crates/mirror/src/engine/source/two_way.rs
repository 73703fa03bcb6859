//! The node engine's side of hub-side changes: what the workspace now holds
//! because of one is recorded as agreed with the hub (never sent back as a
//! change of the node's), and local versions that a change met are sent
//! again so that the hub gets them.

use ganglion_core::RelPath;

use super::{SourceAction, SourceEngine, Tombstone, stamp};
use crate::engine::Notice;
use crate::entry::{Entry, Replica, Version};

impl SourceEngine {
    /// Records a hub-side change the workspace now holds: `agreed` entries
    /// (fresh stat) as the hub's version, `removed` paths (and what is below
    /// them) forgotten, a moved subtree re-keyed. None of it is pending: its
    /// sequence numbers are the acknowledged one, so nothing is sent.
    pub fn hub_applied(
        &mut self,
        agreed: Vec<Entry>,
        removed: &[RelPath],
        moved: Option<(&RelPath, &RelPath)>,
        hub_seq: u64,
    ) -> Vec<SourceAction> {
        let acked = self.acked;
        let mut tombstones = Vec::new();
        let mut entries = Vec::new();
        // Local changes the move carried along (not sent yet, or skipped at
        // the hub, which had the move queued): they stay the node's, sent
        // again at their new paths.
        let mut carried = Vec::new();
        if let Some((from, to)) = moved {
            let below: Vec<Entry> = self
                .entries
                .range(from.clone()..)
                .take_while(|(p, _)| p.as_str().starts_with(from.as_str()))
                .filter(|(p, _)| p.starts_with(from))
                .map(|(_, e)| e.clone())
                .collect();
            for mut e in below {
                self.entries.remove(&e.path);
                tombstones.push(self.agreed_tombstone(&e.path));
                let rest = &e.path.as_str()[from.as_str().len()..];
                if let Ok(p) = RelPath::parse(&format!("{to}{rest}")) {
                    if e.seq > acked {
                        carried.push(p.clone());
                    }
                    e.path = p;
                    e.seq = acked;
                    self.entries.insert(e.path.clone(), e.clone());
                    entries.push(e);
                }
            }
        }
        for r in removed {
            let gone: Vec<RelPath> = self
                .entries
                .range(r.clone()..)
                .take_while(|(p, _)| p.as_str().starts_with(r.as_str()))
                .filter(|(p, _)| p.starts_with(r))
                .map(|(p, _)| p.clone())
                .collect();
            for p in gone {
                self.entries.remove(&p);
                tombstones.push(self.agreed_tombstone(&p));
            }
        }
        for mut e in agreed {
            e.seq = acked;
            e.version = Version {
                origin: Replica::Hub,
                seq: hub_seq,
            };
            self.tombstones.remove(&e.path);
            self.entries.insert(e.path.clone(), e.clone());
            entries.push(e);
        }
        // A tombstone at the acknowledged seq is never sent and goes with
        // the next acknowledgement; a path re-created since keeps its entry.
        tombstones.retain(|t: &Tombstone| !self.entries.contains_key(&t.path));
        for t in &tombstones {
            self.tombstones.insert(t.path.clone(), t.clone());
        }
        if entries.is_empty() && tombstones.is_empty() {
            return Vec::new();
        }
        // Sent by the next `resend`, which follows the change's `Applied`
        // (sent now, they would meet the move still queued at the hub).
        self.carried.extend(carried);
        vec![SourceAction::Record {
            entries,
            tombstones,
            seq: self.seq,
        }]
    }

    fn agreed_tombstone(&self, path: &RelPath) -> Tombstone {
        Tombstone {
            path: path.clone(),
            seq: self.acked,
            hash: None,
        }
    }

    /// Local versions at and below `paths` that a hub-side change met and
    /// that stay: numbered anew and sent, so the hub applies them (it
    /// skipped them while its own change was on the way). Local changes a
    /// hub-side move carried to new paths ([`Self::hub_applied`]) go too.
    pub fn resend(&mut self, paths: &[RelPath]) -> Vec<SourceAction> {
        // Parents before what is below them: a path order.
        let mut all: std::collections::BTreeSet<RelPath> = std::collections::BTreeSet::new();
        let carried = std::mem::take(&mut self.carried);
        for r in paths.iter().chain(&carried) {
            all.extend(
                self.entries
                    .range(r.clone()..)
                    .take_while(|(p, _)| p.as_str().starts_with(r.as_str()))
                    .filter(|(p, _)| p.starts_with(r))
                    .map(|(p, _)| p.clone()),
            );
        }
        let mut changed: Vec<Entry> = Vec::with_capacity(all.len());
        for p in all {
            let e = self.entries.get_mut(&p).expect("listed");
            self.seq += 1;
            stamp(e, self.seq);
            changed.push(e.clone());
        }
        if changed.is_empty() {
            return Vec::new();
        }
        let mut actions = vec![SourceAction::Record {
            entries: changed.clone(),
            tombstones: Vec::new(),
            seq: self.seq,
        }];
        if self.connected {
            actions.extend(
                changed
                    .into_iter()
                    .map(|e| SourceAction::Send(Notice::Upsert(e))),
            );
        }
        actions
    }
}
