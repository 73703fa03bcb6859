//! The persistent mirror index, as the engines and the receiver see it: the
//! [`MirrorIndex`] trait, keyed by a mirror id (the hub keeps every node's
//! mirror in one index), and the records it reads and writes. No IO here:
//! the SQLite implementation lives in `ganglion-store` (`SqliteMirrorIndex`,
//! used by both the node and the hub); [`MemoryIndex`] is an in-memory one
//! for tests and simulations.
//!
//! An implementation applies each [`Batch`] atomically and durably before
//! it returns: a committed batch survives power loss, so a sequence number
//! is never reused.

mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use ganglion_core::{RelPath, Timestamp};

use crate::change::{Conflict, HubChange};
use crate::engine::{SourceState, Tombstone};
use crate::entry::Entry;

pub use memory::MemoryIndex;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend failed (database, migration, a task it ran).
    #[error("index database error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("index row is corrupt")]
    Corrupt {
        mirror: String,
        path: String,
        field: &'static str,
    },
}

impl Error {
    /// Wraps a backend's own error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// The index of every mirror one side keeps. Every method is one transaction.
#[async_trait]
pub trait MirrorIndex: Send + Sync + 'static {
    /// Everything the index holds for one mirror (empty for an unknown one).
    async fn load(&self, mirror: &str) -> Result<Loaded, Error>;
    /// The mirror's counters (zero for a mirror the index does not know).
    async fn summary(&self, mirror: &str) -> Result<Summary, Error>;
    /// Live entries, optionally only those at or below `prefix`, in path order.
    async fn list(&self, mirror: &str, prefix: Option<&RelPath>) -> Result<Vec<Entry>, Error>;
    /// One live entry.
    async fn get(&self, mirror: &str, path: &RelPath) -> Result<Option<Entry>, Error>;
    /// Every mirror id the index knows, in order.
    async fn mirrors(&self) -> Result<Vec<String>, Error>;
    /// Applies a batch in ONE transaction (an empty batch writes nothing).
    async fn apply(&self, mirror: &str, batch: &Batch) -> Result<(), Error>;
    /// Records the peer sequence and forgets tombstones at or below it.
    async fn set_peer_seq(&self, mirror: &str, seq: u64) -> Result<(), Error>;
    /// The hub acknowledges the node's changes up to `seq` at `at`: records
    /// the sequence (as [`set_peer_seq`](Self::set_peer_seq)) and the time,
    /// in one transaction, so [`Summary::synced_at`] is the time of the
    /// acknowledged sequence, across restarts.
    async fn acknowledge(&self, mirror: &str, seq: u64, at: Timestamp) -> Result<(), Error>;
    /// Deletes a mirror's whole index.
    async fn drop_mirror(&self, mirror: &str) -> Result<(), Error>;
}

/// How the node and the hub hold their index: cheap to clone, shared by
/// every mirror's driver.
pub type SharedIndex = Arc<dyn MirrorIndex>;

/// The row a tombstone is stored as (marked deleted by the backend): its
/// path, hash and sequence; every other field empty.
pub fn tombstone_row(t: &Tombstone) -> Entry {
    Entry {
        path: t.path.clone(),
        kind: crate::entry::EntryKind::File,
        size: 0,
        mtime_ns: 0,
        mode: 0,
        inode: 0,
        dev: 0,
        symlink_target: None,
        hash: t.hash,
        seq: t.seq,
        version: crate::entry::Version {
            origin: crate::entry::Replica::Node,
            seq: t.seq,
        },
    }
}

/// One transaction's worth of changes to one mirror's index.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub upserts: Vec<Entry>,
    /// Rows to delete outright (hub side).
    pub removes: Vec<RelPath>,
    /// Rows strictly below these paths are deleted too (directory deletes).
    pub removes_below: Vec<RelPath>,
    /// Rows to turn into tombstones (node side).
    pub tombstones: Vec<Tombstone>,
    /// New value of the mirror's own sequence counter.
    pub seq: Option<u64>,
    /// New value of the peer sequence.
    pub peer_seq: Option<u64>,
    /// Hub-side changes queued for the node (hub side).
    pub outbox: Vec<HubChange>,
    /// Queued hub-side changes dropped (superseded by a newer one).
    pub outbox_drop: Vec<u64>,
    /// The node applied every hub-side change up to here: they leave the
    /// outbox (hub side); the node's record of what it applied (node side).
    pub out_acked: Option<u64>,
    /// New value of the hub-side change counter (hub side).
    pub out_seq: Option<u64>,
    /// Conflicts detected, and conflicts ended (by their conflict path).
    pub conflicts: Vec<Conflict>,
    pub conflicts_resolved: Vec<RelPath>,
    /// The replica identity the index describes (`id.incarnation`).
    pub replica: Option<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.removes.is_empty()
            && self.removes_below.is_empty()
            && self.tombstones.is_empty()
            && self.seq.is_none()
            && self.peer_seq.is_none()
            && self.outbox.is_empty()
            && self.outbox_drop.is_empty()
            && self.out_acked.is_none()
            && self.out_seq.is_none()
            && self.conflicts.is_empty()
            && self.conflicts_resolved.is_empty()
            && self.replica.is_none()
    }

    /// The node's [`SourceAction::Record`](crate::engine::SourceAction::Record) as a batch.
    pub fn record(entries: Vec<Entry>, tombstones: Vec<Tombstone>, seq: u64) -> Self {
        Self {
            upserts: entries,
            tombstones,
            seq: Some(seq),
            ..Self::default()
        }
    }
}

/// Everything the index holds for one mirror.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub entries: Vec<Entry>,
    pub tombstones: Vec<Tombstone>,
    pub seq: u64,
    pub peer_seq: u64,
    /// Hub-side changes not yet applied by the node, in seq order.
    pub outbox: Vec<HubChange>,
    /// The last hub-side change number assigned (hub) or applied (node).
    pub out_seq: u64,
    /// Hub: the node applied every hub-side change up to here.
    pub out_acked: u64,
    /// Open conflicts, by conflict path.
    pub conflicts: Vec<Conflict>,
    /// The replica identity the index describes, if recorded.
    pub replica: Option<String>,
}

impl Loaded {
    /// The node engine's starting state.
    pub fn into_source_state(self) -> SourceState {
        SourceState {
            entries: self.entries,
            tombstones: self.tombstones,
            seq: self.seq,
            acked: self.peer_seq,
        }
    }
}

/// What the index keeps per mirror besides its entries: read in one row,
/// without loading the entries (a restarted hub answers a reconnecting node
/// and `mirror status` from it while the entries load).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub seq: u64,
    pub peer_seq: u64,
    /// Live files (not directories, links or tombstones) and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// When the hub last acknowledged the peer's changes
    /// ([`MirrorIndex::acknowledge`]); `None`: never, or before the index
    /// kept it.
    pub synced_at: Option<Timestamp>,
    /// Hub-side changes the node has not applied yet.
    pub to_node: u64,
    /// Open conflicts.
    pub conflicts: u64,
    /// The replica identity the index describes, if recorded.
    pub replica: Option<String>,
}
