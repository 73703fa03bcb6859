//! A seeded simulation of the node and hub engines, the wire between them,
//! and both sides' durable state, with random edits, renames, deletes,
//! disconnects, injected full disks and crashes of either side (a crash loses
//! everything in memory and keeps only what was durably committed, including a
//! hub crash between the retract and publish steps of a group commit and a
//! node crash between the parts of a record; the node records in parts of
//! [`NODE_RECORD_PART`] changes so that parts happen in small trees).
//!
//! Invariants: after every step, no hub index entry names content the mirror
//! does not hold (nothing torn); whenever the hub acknowledges a sequence,
//! its index holds every path whose last recorded change on the node is at
//! or below it, as the node recorded it (an acknowledgement is never early:
//! the node forgets what was acknowledged, so a wrong one would be final); at
//! the end, once quiet, the mirror and its index equal the node's tree and no
//! transfer lock is held.
//!
//! `cargo test -p ganglion-mirror sim` runs a few hundred seeds of 300 steps;
//! `GANGLION_SIM_SEEDS=10000` runs more, `GANGLION_SIM_STEPS=3000` makes each
//! longer, `GANGLION_SIM_SEED=1234` replays one (with the same steps).

use std::collections::{BTreeMap, HashMap, VecDeque};

use ganglion_core::RelPath;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::engine::{
    Notice, Observation, Op, SinkEngine, SinkEvent, SourceAction, SourceEngine, SourceEvent,
    SourceState, Tombstone, TransferFailure,
};
use crate::entry::{ContentHash, Entry, EntryKind, Replica, Version};
use crate::immutable::ImmutablePaths;
use crate::locks::{LockRegistry, TransferGuard};

mod hub;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File {
        data: Vec<u8>,
        exec: bool,
        inode: u64,
        mtime: i64,
    },
    Link(String),
}

/// A file system: path → node. Parents of every path exist as `Dir`.
type Fs = BTreeMap<RelPath, Node>;

#[derive(Debug)]
enum ToHub {
    Notice(Notice),
    Upload {
        path: RelPath,
        hash: ContentHash,
        data: Vec<u8>,
    },
}

#[derive(Debug)]
enum ToNode {
    Need {
        path: RelPath,
        hash: ContentHash,
    },
    Ack(u64),
    UploadOutcome {
        path: RelPath,
        hash: ContentHash,
        failure: Option<TransferFailure>,
    },
}

/// Hub-side durable state: mirror files, index, the node's applied seq.
#[derive(Default)]
struct HubDisk {
    files: Fs,
    index: BTreeMap<RelPath, Entry>,
    applied: u64,
}

struct Sim {
    rng: StdRng,
    /// Decides node crashes between the actions of one event; separate from
    /// `rng` so that the steps a seed takes do not depend on them. Off once
    /// the run winds down (`quiesce`).
    crash_rng: Option<StdRng>,
    clock: i64,
    next_inode: u64,
    node_fs: Fs,
    node_disk: SourceState,
    node: SourceEngine,
    hub_disk: HubDisk,
    hub: SinkEngine,
    staged: HashMap<RelPath, (ContentHash, Vec<u8>, TransferGuard)>,
    batch: Vec<Op>,
    timers: Vec<RelPath>,
    to_hub: VecDeque<ToHub>,
    to_node: VecDeque<ToNode>,
    connected: bool,
    locks: LockRegistry,
    disk_full: bool,
    /// The first broken invariant seen while handling an event.
    violation: Option<String>,
    log: Vec<String>,
}

const NAMES: &[&str] = &["a", "b", "c"];
const NODE_RECORD_PART: usize = 2;

fn node_engine(state: SourceState) -> SourceEngine {
    SourceEngine::new(state).with_record_part(NODE_RECORD_PART)
}

fn p(s: &str) -> RelPath {
    RelPath::parse(s).expect("sim paths are valid")
}

impl Sim {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            crash_rng: Some(StdRng::seed_from_u64(seed ^ 0x6e6f_6465_6372_6173)),
            clock: 1,
            next_inode: 1,
            node_fs: Fs::new(),
            node_disk: SourceState::default(),
            node: node_engine(SourceState::default()),
            hub_disk: HubDisk::default(),
            hub: SinkEngine::default(),
            staged: HashMap::new(),
            batch: Vec::new(),
            timers: Vec::new(),
            to_hub: VecDeque::new(),
            to_node: VecDeque::new(),
            connected: false,
            locks: LockRegistry::default(),
            disk_full: false,
            violation: None,
            log: Vec::new(),
        }
    }

    fn random_path(&mut self) -> RelPath {
        let depth = self.rng.random_range(1..=3);
        let parts: Vec<&str> = (0..depth)
            .map(|_| NAMES[self.rng.random_range(0..NAMES.len())])
            .collect();
        p(&parts.join("/"))
    }

    // ---- the node's workspace ----

    fn edit(&mut self) -> Vec<RelPath> {
        let path = self.random_path();
        let mut touched = vec![path.clone()];
        self.clock += 1;
        match self.rng.random_range(0..10) {
            0..=3 => {
                let len = self.rng.random_range(0..3);
                let data = (0..len)
                    .map(|_| b"xy"[self.rng.random_range(0..2)])
                    .collect();
                let exec = self.rng.random_bool(0.2);
                if self.make_parents(&path) && !matches!(self.node_fs.get(&path), Some(Node::Dir)) {
                    self.next_inode += 1;
                    let node = Node::File {
                        data,
                        exec,
                        inode: self.next_inode,
                        mtime: self.clock,
                    };
                    self.node_fs.insert(path, node);
                }
            }
            4 => {
                if self.make_parents(&path) && !self.node_fs.contains_key(&path) {
                    self.node_fs.insert(path, Node::Dir);
                }
            }
            5 => {
                let target = if self.rng.random_bool(0.5) {
                    "/etc/passwd".into()
                } else {
                    "../../x".into()
                };
                if self.make_parents(&path) && !matches!(self.node_fs.get(&path), Some(Node::Dir)) {
                    self.node_fs.insert(path, Node::Link(target));
                }
            }
            6 | 7 => {
                let dst = self.random_path();
                if self.node_fs.contains_key(&path)
                    && !dst.starts_with(&path)
                    && !path.starts_with(&dst)
                {
                    let moved: Vec<(RelPath, Node)> = self
                        .node_fs
                        .range(path.clone()..)
                        .filter(|(k, _)| k.starts_with(&path))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let dst_is_dir = matches!(self.node_fs.get(&dst), Some(Node::Dir));
                    if !dst_is_dir && self.make_parents(&dst) {
                        for (k, _) in &moved {
                            self.node_fs.remove(k);
                        }
                        for (k, v) in moved {
                            let rest = &k.as_str()[path.as_str().len()..];
                            self.node_fs.insert(p(&format!("{dst}{rest}")), v);
                        }
                        touched.push(dst);
                    }
                }
            }
            8 => {
                let gone: Vec<RelPath> = self
                    .node_fs
                    .keys()
                    .filter(|k| k.starts_with(&path))
                    .cloned()
                    .collect();
                for k in gone {
                    self.node_fs.remove(&k);
                }
            }
            _ => {
                // chmod or touch: stat changes, maybe the exec bit.
                let flip = self.rng.random_bool(0.5);
                if let Some(Node::File { exec, mtime, .. }) = self.node_fs.get_mut(&path) {
                    *mtime = self.clock;
                    if flip {
                        *exec = !*exec;
                    }
                }
            }
        }
        touched
    }

    /// Makes the parents of `path` directories; false if a non-dir is in the way.
    fn make_parents(&mut self, path: &RelPath) -> bool {
        let mut cur = path.parent();
        let mut chain = Vec::new();
        while let Some(d) = cur {
            match self.node_fs.get(&d) {
                Some(Node::Dir) => break,
                Some(_) => return false,
                None => chain.push(d.clone()),
            }
            cur = d.parent();
        }
        for d in chain {
            self.node_fs.insert(d, Node::Dir);
        }
        true
    }

    fn stat(&self, path: &RelPath, node: &Node) -> Entry {
        let (kind, size, mode, inode, mtime, target, hash) = match node {
            Node::Dir => (EntryKind::Dir, 0, 0o755, 0, 0, None, None),
            Node::Link(t) => (
                EntryKind::Symlink,
                t.len() as u64,
                0o777,
                0,
                0,
                Some(t.clone()),
                None,
            ),
            Node::File {
                data,
                exec,
                inode,
                mtime,
            } => {
                let mode = if *exec { 0o755 } else { 0o644 };
                (
                    EntryKind::File,
                    data.len() as u64,
                    mode,
                    *inode,
                    *mtime,
                    None,
                    Some(ContentHash::of(data)),
                )
            }
        };
        Entry {
            path: path.clone(),
            kind,
            size,
            mtime_ns: mtime,
            mode,
            inode,
            dev: 1,
            symlink_target: target,
            hash,
            seq: 0,
            version: Version {
                origin: Replica::Node,
                seq: 0,
            },
        }
    }

    fn observe_full(&mut self) {
        let all = self.node_fs.iter().map(|(k, v)| self.stat(k, v)).collect();
        self.node_event(SourceEvent::Observed(Observation::Full(all)));
    }

    fn observe_partial(&mut self, touched: Vec<RelPath>) {
        let mut upserts = Vec::new();
        let mut removed = Vec::new();
        for t in touched {
            if self.node_fs.contains_key(&t) {
                let mut a = t.parent();
                while let Some(d) = a {
                    upserts.push(self.stat(&d, &Node::Dir));
                    a = d.parent();
                }
                for (k, v) in self.node_fs.iter().filter(|(k, _)| k.starts_with(&t)) {
                    upserts.push(self.stat(k, v));
                }
            } else {
                removed.push(t);
            }
        }
        self.node_event(SourceEvent::Observed(Observation::Partial {
            upserts,
            removed,
        }));
    }

    fn node_event(&mut self, ev: SourceEvent) {
        self.log.push(format!("node <- {ev:?}"));
        let actions = self.node.handle(ev);
        self.log.push(format!("node -> {actions:?}"));
        let mut actions = actions.into_iter().peekable();
        while let Some(a) = actions.next() {
            let recorded = matches!(a, SourceAction::Record { .. });
            match a {
                SourceAction::Record {
                    entries,
                    tombstones,
                    seq,
                } => {
                    let d = &mut self.node_disk;
                    for t in tombstones {
                        d.entries.retain(|e| e.path != t.path);
                        d.tombstones.retain(|x| x.path != t.path);
                        d.tombstones.push(t);
                    }
                    for e in entries {
                        d.entries.retain(|x| x.path != e.path);
                        d.tombstones.retain(|x| x.path != e.path);
                        d.entries.push(e);
                    }
                    d.seq = seq;
                }
                SourceAction::PersistAck { seq } => {
                    self.node_disk.acked = seq;
                    self.node_disk
                        .tombstones
                        .retain(|t: &Tombstone| t.seq > seq);
                }
                SourceAction::Send(n) => {
                    if self.connected {
                        self.to_hub.push_back(ToHub::Notice(n));
                    }
                }
                SourceAction::Upload { path, hash, .. } => {
                    // The stream carries whatever the file holds now.
                    let data = match self.node_fs.get(&path) {
                        Some(Node::File { data, .. }) => data.clone(),
                        _ => Vec::new(),
                    };
                    if self.connected {
                        self.to_hub.push_back(ToHub::Upload { path, hash, data });
                    }
                }
                SourceAction::Rescan { path } => self.observe_partial(vec![path]),
            }
            let crash = |r: &mut StdRng| r.random_ratio(1, 16);
            if recorded && actions.peek().is_some() && self.crash_rng.as_mut().is_some_and(crash) {
                self.log
                    .push("node crash after a record, before what follows it".into());
                return self.crash_node();
            }
        }
    }

    // ---- connection and crashes ----

    fn connect(&mut self) {
        if self.connected {
            return;
        }
        self.connected = true;
        self.hub_event(SinkEvent::Connected);
        let applied = self.hub.applied();
        self.node_event(SourceEvent::Connected {
            hub_applied: applied,
        });
    }

    fn disconnect(&mut self) {
        if !self.connected {
            return;
        }
        self.connected = false;
        self.to_hub.clear();
        self.to_node.clear();
        self.node_event(SourceEvent::Disconnected);
        self.hub_event(SinkEvent::Disconnected);
    }

    fn crash_node(&mut self) {
        self.disconnect();
        self.node = node_engine(self.node_disk.clone());
    }

    fn crash_hub(&mut self) {
        self.connected = false;
        self.to_hub.clear();
        self.to_node.clear();
        self.node_event(SourceEvent::Disconnected);
        self.staged.clear();
        self.batch.clear();
        self.timers.clear();
        let entries = self.hub_disk.index.values().cloned().collect();
        self.hub = SinkEngine::new(entries, self.hub_disk.applied, ImmutablePaths::default());
    }

    // ---- driving ----

    fn step(&mut self) {
        match self.rng.random_range(0..100) {
            0..=24 => {
                let n = self.rng.random_range(1..=3);
                let mut touched = Vec::new();
                for _ in 0..n {
                    touched.extend(self.edit());
                }
                match self.rng.random_range(0..10) {
                    0..=2 => self.observe_full(),
                    3..=8 => self.observe_partial(touched),
                    _ => {} // seen later by a full scan
                }
            }
            25..=44 => self.deliver_to_hub(),
            45..=59 => self.deliver_to_node(),
            60..=69 => self.commit(false),
            70..=74 => self.fire_timer(),
            75..=84 => self.connect(),
            85..=88 => self.disconnect(),
            89..=91 => {
                self.log.push("node crash".into());
                self.crash_node();
            }
            92..=93 => {
                self.log.push("hub crash".into());
                self.crash_hub();
            }
            94 => self.commit(true),
            95..=96 => self.disk_full = !self.disk_full,
            _ => self.observe_full(),
        }
    }

    fn deliver_to_hub(&mut self) {
        match self.to_hub.pop_front() {
            Some(ToHub::Notice(n)) => self.hub_event(SinkEvent::Notice(n)),
            Some(ToHub::Upload { path, hash, data }) => self.receive_upload(path, hash, data),
            None => {}
        }
    }

    fn deliver_to_node(&mut self) {
        match self.to_node.pop_front() {
            Some(ToNode::Need { path, hash }) => self.node_event(SourceEvent::Need { path, hash }),
            Some(ToNode::Ack(seq)) => self.node_event(SourceEvent::Ack { seq }),
            Some(ToNode::UploadOutcome {
                path,
                hash,
                failure,
            }) => self.node_event(match failure {
                None => SourceEvent::UploadDone { path, hash },
                Some(failure) => SourceEvent::UploadFailed {
                    path,
                    hash,
                    failure,
                },
            }),
            None => {}
        }
    }

    fn fire_timer(&mut self) {
        if !self.timers.is_empty() {
            let i = self.rng.random_range(0..self.timers.len());
            let path = self.timers.swap_remove(i);
            self.hub_event(SinkEvent::RetryDue { path });
        }
    }

    fn quiesce(&mut self) -> Result<(), String> {
        self.disk_full = false;
        self.crash_rng = None;
        self.connect();
        self.observe_full();
        for _ in 0..10_000 {
            if !self.to_hub.is_empty() {
                self.deliver_to_hub();
            } else if !self.to_node.is_empty() {
                self.deliver_to_node();
            } else if !self.batch.is_empty() {
                self.commit(false);
            } else if !self.timers.is_empty() {
                self.fire_timer();
            } else {
                return Ok(());
            }
        }
        Err(format!(
            "did not quiesce in 10000 deliveries; hub files {:?}; hub index {:?}; node files {:?}; hub engine {}",
            self.hub_disk.files.keys().collect::<Vec<_>>(),
            self.hub_disk.index.keys().collect::<Vec<_>>(),
            self.node_fs.keys().collect::<Vec<_>>(),
            self.hub.debug_pending()
        ))
    }

    /// An acknowledgement of `seq` is sound: every path whose last change
    /// recorded on the node has a sequence at or below `seq` is in the hub's
    /// index as recorded (same kind, content, exec bit, link target), and
    /// every path deleted at or below `seq` is absent.
    fn check_ack(&self, seq: u64) -> Result<(), String> {
        let index = &self.hub_disk.index;
        for e in self.node_disk.entries.iter().filter(|e| e.seq <= seq) {
            let same = index.get(&e.path).is_some_and(|h| {
                h.kind == e.kind
                    && match e.kind {
                        EntryKind::File => {
                            h.hash == e.hash && (h.mode & 0o111 != 0) == (e.mode & 0o111 != 0)
                        }
                        EntryKind::Symlink => h.symlink_target == e.symlink_target,
                        EntryKind::Dir => true,
                    }
            });
            if !same {
                return Err(format!(
                    "early ack {seq}: the node recorded {} ({:?}, seq {}) but the hub index holds {:?}",
                    e.path,
                    e.kind,
                    e.seq,
                    index.get(&e.path).map(|h| (h.kind, h.hash, h.seq))
                ));
            }
        }
        for t in self.node_disk.tombstones.iter().filter(|t| t.seq <= seq) {
            if let Some(h) = index.get(&t.path) {
                return Err(format!(
                    "early ack {seq}: the node deleted {} (seq {}) but the hub index still holds it ({:?}, seq {})",
                    t.path, t.seq, h.kind, h.seq
                ));
            }
        }
        Ok(())
    }

    /// Nothing torn: every index entry names content the mirror holds.
    fn check_not_torn(&self) -> Result<(), String> {
        for (path, e) in &self.hub_disk.index {
            let ok = match (self.hub_disk.files.get(path), e.kind) {
                (Some(Node::Dir), EntryKind::Dir) => true,
                (Some(Node::Link(t)), EntryKind::Symlink) => Some(t) == e.symlink_target.as_ref(),
                (Some(Node::File { data, .. }), EntryKind::File) => {
                    Some(ContentHash::of(data)) == e.hash
                }
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "torn: index names {path} ({:?}) but the mirror holds {:?}",
                    e.kind,
                    self.hub_disk.files.get(path)
                ));
            }
        }
        Ok(())
    }

    fn check_converged(&self) -> Result<(), String> {
        let strip = |fs: &Fs| -> BTreeMap<RelPath, Node> {
            fs.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Node::File { data, exec, .. } => Node::File {
                            data: data.clone(),
                            exec: *exec,
                            inode: 0,
                            mtime: 0,
                        },
                        other => other.clone(),
                    };
                    (k.clone(), v)
                })
                .collect()
        };
        let (node, hub) = (strip(&self.node_fs), strip(&self.hub_disk.files));
        if node != hub {
            let only_node: Vec<_> = node
                .iter()
                .filter(|(k, v)| hub.get(*k) != Some(*v))
                .collect();
            let only_hub: Vec<_> = hub
                .iter()
                .filter(|(k, v)| node.get(*k) != Some(*v))
                .collect();
            return Err(format!(
                "mirror differs from the node: node has {only_node:?}, hub has {only_hub:?}; hub engine {}",
                self.hub.debug_pending()
            ));
        }
        let indexed: Vec<&RelPath> = self.hub_disk.index.keys().collect();
        let present: Vec<&RelPath> = self.hub_disk.files.keys().collect();
        if indexed != present {
            return Err(format!(
                "index paths {indexed:?} differ from mirror paths {present:?}"
            ));
        }
        if self.locks.locks() != 0 || self.locks.in_flight() != 0 {
            return Err(format!(
                "leaked locks: {} held, {} in flight",
                self.locks.locks(),
                self.locks.in_flight()
            ));
        }
        if self.node.pending() != 0 {
            return Err(format!(
                "node still has {} unacknowledged changes (node seq {}, acked {}; hub applied {}; hub engine {})",
                self.node.pending(),
                self.node.seq(),
                self.node.acked(),
                self.hub.applied(),
                self.hub.debug_pending()
            ));
        }
        Ok(())
    }
}

/// Runs one seed for `steps` random steps, then quiesces and checks.
pub fn run(seed: u64, steps: usize) -> Result<(), String> {
    run_logged(seed, steps).map_err(|(e, _)| e)
}

/// Like [`run`], returning the event log on failure.
pub fn run_logged(seed: u64, steps: usize) -> Result<(), (String, Vec<String>)> {
    let mut sim = Sim::new(seed);
    let res = (|| {
        for i in 0..steps {
            sim.step();
            if let Some(v) = sim.violation.take() {
                return Err(format!("step {i}: {v}"));
            }
            sim.check_not_torn().map_err(|e| format!("step {i}: {e}"))?;
        }
        sim.quiesce()?;
        if let Some(v) = sim.violation.take() {
            return Err(format!("while quiescing: {v}"));
        }
        sim.check_not_torn()?;
        sim.check_converged()
    })();
    res.map_err(|e| (e, std::mem::take(&mut sim.log)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim() {
        let steps = std::env::var("GANGLION_SIM_STEPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300);
        if let Some(seed) = std::env::var("GANGLION_SIM_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            if let Err((e, log)) = run_logged(seed, steps) {
                let tail = log.len().saturating_sub(20_000);
                panic!(
                    "seed {seed} failed: {e}\nlast events:\n{}",
                    log[tail..].join("\n")
                );
            }
            return;
        }
        let seeds: u64 = std::env::var("GANGLION_SIM_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300);
        check_seeds(0..seeds, steps);
    }

    /// Seeds that once failed, beyond the few hundred CI runs by default:
    /// 1028, 1988, 2080, 2190, 2364, 3533, 4092 and 4593 left a fetch below a
    /// path that had become a link (see
    /// `engine::tests::a_path_becoming_a_link_supersedes_a_fetch_below_it`);
    /// 68985 acknowledged a resent rename without removing its source (see
    /// `engine::tests::a_resent_rename_whose_target_landed_still_removes_its_source`).
    #[test]
    fn sim_regressions() {
        check_seeds([1028, 1988, 2080, 2190, 2364, 3533, 4092, 4593, 68985], 300);
    }

    /// Runs every seed and reports all that fail, not just the first.
    fn check_seeds(seeds: impl IntoIterator<Item = u64>, steps: usize) {
        let mut failed = Vec::new();
        let mut first = None;
        for seed in seeds {
            if let Err(e) = run(seed, steps) {
                first.get_or_insert((seed, e));
                failed.push(seed);
            }
        }
        if let Some((seed, e)) = first {
            panic!(
                "simulation failed for {} seeds {failed:?}; first, seed {seed}: {e}\nreplay: GANGLION_SIM_SEED={seed} cargo test -p ganglion-mirror sim",
                failed.len()
            );
        }
    }
}
