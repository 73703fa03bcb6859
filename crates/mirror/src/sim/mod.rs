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
//! **Two writers** ([`run_two_way`], `two_way.rs`, `apply.rs`): the hub
//! writes too — puts, deletes and moves planned by the sink engine
//! (`plan_hub_write`), committed with their outbox rows as the hub's driver
//! does, node changes in the way giving way, the outbox sent on every
//! stream. The node applies what it receives with `apply.rs`'s semantics on
//! its in-memory workspace (compare-and-swap against the base, a local write
//! injected right before the swap, conflict copies, an edit beats a delete, a
//! local directory beats a file, moves as renames or as content), in the
//! node worker's order (apply → record as agreed → `out_acked` → conflicts
//! → `Applied` → resend), with cut downloads and crashes between the record
//! and what follows it; plus type changes (file ↔ directory) and case-only
//! renames on the node. More invariants: an acknowledgement exempts only
//! node changes that met a queued hub-side change (the node settles those);
//! an `Applied` report never claims more than the node's index holds; at
//! the end the outbox is empty, nothing is left staged, and no write is lost
//! (every version a side wrote is some file's content in the converged tree
//! unless a side that held it replaced or removed it by its own write; see
//! `two_way.rs` for the precise rule). [`Options`] says which parts run: the
//! defaults are what CI runs; parts that find open bugs are behind
//! variables, and four behaviours the node worker must adopt are modelled
//! as it must do them (each has an ignored test with the seed that shows
//! the bug without it, in `tests.rs`).
//!
//! `cargo test -p ganglion-mirror sim` runs a few hundred seeds of 300 steps
//! of each mode (seconds); `GANGLION_SIM_SEEDS=100000` runs that many (about
//! a quarter of an hour per mode in a debug build), `GANGLION_SIM_STEPS=3000`
//! makes each longer, `GANGLION_SIM_SEED=1234` replays one (with the same
//! steps, printing the event log); `GANGLION_SIM_SUPERSEDE`,
//! `GANGLION_SIM_DIR_MOVES`, `GANGLION_SIM_EXEC_BITS`,
//! `GANGLION_SIM_HUB_WRITE_CRASH` and `GANGLION_SIM_INDEX_LOSS` turn on the
//! parts that find open bugs. To run only the two-way mode:
//! `cargo test -p ganglion-mirror sim_two_way`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ganglion_core::RelPath;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::change::{Conflict, HubChange};
use crate::engine::{
    Notice, Op, SinkEngine, SinkEvent, SourceEngine, SourceEvent, SourceState, TransferFailure,
};
use crate::entry::{ContentHash, Entry};
use crate::immutable::ImmutablePaths;
use crate::locks::{LockRegistry, TransferGuard};

mod apply;
mod check;
mod hub;
mod node;
mod two_way;

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
    /// The node applied the hub-side changes up to here.
    Applied(u64),
    Conflict(Conflict),
}

#[derive(Debug)]
enum ToNode {
    Changes(Vec<HubChange>),
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

/// Hub-side durable state: mirror files, index, the node's applied seq,
/// and (two-way) the outbox of hub-side changes with its counter and the
/// conflicts the node reported.
#[derive(Default)]
struct HubDisk {
    files: Fs,
    index: BTreeMap<RelPath, Entry>,
    applied: u64,
    outbox: BTreeMap<u64, HubChange>,
    out_seq: u64,
    conflicts: Vec<Conflict>,
}

/// What the two-writer simulation does. [`Options::default`] is what CI
/// runs; [`Options::from_env`] adds the parts behind variables.
///
/// Four behaviours of the node worker (`crates/node/src/mirror`) are
/// modelled as they must be, not as the worker does them today (each found
/// by this simulation, each off to replay its bug; see the module docs):
/// `applied_on_connect`, `known_at_plan`, `resend_after_last_half`,
/// `parents_when_gone`. The other flags turn on parts that find open bugs,
/// off by default.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The node reports the hub-side changes it applied (`Applied`) first
    /// thing on a new stream, before its notices.
    pub applied_on_connect: bool,
    /// A hub-side delete of a directory removes only the node's changes the
    /// hub had acknowledged when it planned the delete.
    pub known_at_plan: bool,
    /// A move applied as content (two halves) resends the local versions it
    /// met after its `Applied`, not after the first half.
    pub resend_after_last_half: bool,
    /// A put whose content is gone at the hub when the node downloads it
    /// still makes its parent directories (`Applier::parents_only`), which
    /// the hub created for it and keeps.
    pub parents_when_gone: bool,
    /// `GANGLION_SIM_SUPERSEDE`: hub-side writes where the hub's own changes
    /// are still queued (they replace them in the outbox).
    pub supersede: bool,
    /// `GANGLION_SIM_DIR_MOVES`: hub-side moves of directories and links
    /// (what the node cannot apply as content when the rename fails).
    pub dir_moves: bool,
    /// `GANGLION_SIM_EXEC_BITS`: executable files in the two-way run.
    pub exec_bits: bool,
    /// `GANGLION_SIM_HUB_WRITE_CRASH`: hub crashes inside its own writes,
    /// between the retract and publish steps of the commit.
    pub hub_write_crash: bool,
    /// `GANGLION_SIM_INDEX_LOSS`: the node's index is lost at times.
    pub index_loss: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            applied_on_connect: true,
            known_at_plan: true,
            resend_after_last_half: true,
            parents_when_gone: true,
            supersede: false,
            dir_moves: false,
            exec_bits: false,
            hub_write_crash: false,
            index_loss: false,
        }
    }
}

impl Options {
    /// The defaults, with the parts named by set `GANGLION_SIM_*` variables on.
    pub fn from_env() -> Self {
        let on = |name: &str| std::env::var_os(name).is_some();
        Self {
            supersede: on("GANGLION_SIM_SUPERSEDE"),
            dir_moves: on("GANGLION_SIM_DIR_MOVES"),
            exec_bits: on("GANGLION_SIM_EXEC_BITS"),
            hub_write_crash: on("GANGLION_SIM_HUB_WRITE_CRASH"),
            index_loss: on("GANGLION_SIM_INDEX_LOSS"),
            ..Self::default()
        }
    }
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
    /// Whether the hub writes too (the two-writer simulation).
    two_way: bool,
    /// What the two-way run does (see [`Options`]).
    opts: Options,
    /// The hub's acknowledged node seq when it planned each change.
    planned_known: HashMap<u64, u64>,
    /// Local versions met by the first half of a split move.
    held_resend: Vec<RelPath>,
    /// The node's durable count of hub-side changes applied (`out_acked`).
    node_out_acked: u64,
    /// Hub-side changes received on the current stream, not applied yet.
    node_queue: VecDeque<HubChange>,
    /// Content for the hub-side put being committed.
    hub_content: Option<(RelPath, ContentHash, Vec<u8>)>,
    /// Versions no write has replaced yet (see `two_way`): how many times
    /// each content was written and not replaced by a side that held it.
    required: BTreeMap<ContentHash, u32>,
    /// Makes written contents unique.
    next_content: u64,
    /// The first broken invariant seen while handling an event.
    violation: Option<String>,
    log: Vec<String>,
}

const NODE_RECORD_PART: usize = 2;

fn node_engine(state: SourceState) -> SourceEngine {
    SourceEngine::new(state).with_record_part(NODE_RECORD_PART)
}

fn p(s: &str) -> RelPath {
    RelPath::parse(s).expect("sim paths are valid")
}

impl Sim {
    fn new(seed: u64, two_way: bool, opts: Options) -> Self {
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
            two_way,
            opts,
            planned_known: HashMap::new(),
            held_resend: Vec::new(),
            node_out_acked: 0,
            node_queue: VecDeque::new(),
            hub_content: None,
            required: BTreeMap::new(),
            next_content: 0,
            violation: None,
            log: Vec::new(),
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
        self.node_queue.clear();
        if self.two_way && self.opts.applied_on_connect && self.node_out_acked > 0 {
            // Before the notices: a notice resent after the node applied a
            // hub-side change (a local version that stays) must not meet
            // that change still queued at the hub, or the hub skips it
            // and acknowledges it, and it is never sent again.
            self.to_hub.push_back(ToHub::Applied(self.node_out_acked));
        }
        self.node_event(SourceEvent::Connected {
            hub_applied: applied,
        });
        self.send_changes();
    }

    fn disconnect(&mut self) {
        if !self.connected {
            return;
        }
        self.connected = false;
        self.to_hub.clear();
        self.to_node.clear();
        self.node_queue.clear();
        self.held_resend.clear();
        self.node_event(SourceEvent::Disconnected);
        self.hub_event(SinkEvent::Disconnected);
    }

    fn crash_node(&mut self) {
        self.disconnect();
        self.node = node_engine(self.node_disk.clone());
    }

    /// The node's index is lost (deleted while it was down): it starts
    /// empty, workspace untouched.
    fn lose_node_index(&mut self) {
        self.log.push("node index lost".into());
        self.disconnect();
        self.node_disk = SourceState::default();
        self.node_out_acked = 0;
        self.node = node_engine(SourceState::default());
    }

    fn crash_hub(&mut self) {
        self.connected = false;
        self.to_hub.clear();
        self.to_node.clear();
        self.node_queue.clear();
        self.held_resend.clear();
        self.node_event(SourceEvent::Disconnected);
        self.staged.clear();
        self.batch.clear();
        self.timers.clear();
        let entries = self.hub_disk.index.values().cloned().collect();
        self.hub = SinkEngine::new(entries, self.hub_disk.applied, ImmutablePaths::default())
            .with_two_way(
                self.hub_disk.outbox.values().cloned().collect(),
                self.hub_disk.out_seq,
                self.hub_disk.conflicts.clone(),
            );
    }

    // ---- driving ----

    fn step(&mut self) {
        if self.two_way && self.two_way_step() {
            return;
        }
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
            Some(ToHub::Applied(seq)) => self.hub_receives_applied(seq),
            Some(ToHub::Conflict(c)) => self.hub_receives_conflict(c),
            None => {}
        }
    }

    fn deliver_to_node(&mut self) {
        match self.to_node.pop_front() {
            Some(ToNode::Need { path, hash }) => self.node_event(SourceEvent::Need { path, hash }),
            Some(ToNode::Ack(seq)) => self.node_event(SourceEvent::Ack { seq }),
            Some(ToNode::Changes(changes)) => self.node_receives_changes(changes),
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
        // A scan after the last apply finds its conflict copies (two-way).
        let mut scanned = true;
        for _ in 0..10_000 {
            if !self.to_hub.is_empty() {
                self.deliver_to_hub();
            } else if !self.to_node.is_empty() {
                self.deliver_to_node();
            } else if !self.batch.is_empty() {
                self.commit(false);
            } else if !self.timers.is_empty() {
                self.fire_timer();
            } else if !self.node_queue.is_empty() {
                self.apply_hub_change();
                scanned = false;
                continue;
            } else if !scanned {
                self.observe_full();
                scanned = true;
                continue;
            } else {
                return Ok(());
            }
            scanned = scanned && !self.two_way;
        }
        Err(format!(
            "did not quiesce in 10000 deliveries; hub files {:?}; hub index {:?}; node files {:?}; hub engine {}",
            self.hub_disk.files.keys().collect::<Vec<_>>(),
            self.hub_disk.index.keys().collect::<Vec<_>>(),
            self.node_fs.keys().collect::<Vec<_>>(),
            self.hub.debug_pending()
        ))
    }
}

/// Runs one seed for `steps` random steps, then quiesces and checks.
pub fn run(seed: u64, steps: usize) -> Result<(), String> {
    run_logged(seed, steps).map_err(|(e, _)| e)
}

/// Like [`run`], returning the event log on failure.
pub fn run_logged(seed: u64, steps: usize) -> Result<(), (String, Vec<String>)> {
    run_sim(seed, steps, None)
}

/// Runs one seed of the two-writer simulation (the hub writes too).
pub fn run_two_way(seed: u64, steps: usize, opts: Options) -> Result<(), String> {
    run_two_way_logged(seed, steps, opts).map_err(|(e, _)| e)
}

/// Like [`run_two_way`], returning the event log on failure.
pub fn run_two_way_logged(
    seed: u64,
    steps: usize,
    opts: Options,
) -> Result<(), (String, Vec<String>)> {
    run_sim(seed, steps, Some(opts))
}

fn run_sim(seed: u64, steps: usize, two_way: Option<Options>) -> Result<(), (String, Vec<String>)> {
    let mut sim = Sim::new(seed, two_way.is_some(), two_way.unwrap_or_default());
    let two_way = two_way.is_some();
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
        sim.check_converged()?;
        if two_way {
            sim.check_two_way_end()?;
        }
        Ok(())
    })();
    res.map_err(|e| (e, std::mem::take(&mut sim.log)))
}

#[cfg(test)]
mod tests;
