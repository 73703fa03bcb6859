//! The sans-IO sync core: pure state machines fed events, returning actions.
//! No tokio, no `std::fs`: drivers (the scanner, the receiver, the transport
//! the lead wires in the hub and node crates) perform the actions and feed the
//! outcomes back.
//!
//! - [`SourceEngine`] (node side) decides which [`Notice`]s to send and which
//!   uploads to perform.
//! - [`SinkEngine`] (hub side) decides what to fetch, copy, move, delete or
//!   refuse, and what to acknowledge.
//!
//! The conversation, with the transport's message in brackets:
//!
//! ```text
//! node                                   hub
//!  Connected{hub_applied} ◄─[Hello]──── SinkEngine::applied()
//!  Send(Notice) ──────────[Notice]────► SinkEvent::Notice
//!  SourceEvent::Need ◄────[Need]─────── SinkAction::Fetch
//!  Upload{..} ────────────[Upload stream]► receiver → SinkEvent::Staged
//!  SourceEvent::Ack ◄─────[Ack]──────── SinkAction::Ack (after the commit)
//! ```
//!
//! Sequence numbers: the node numbers every change of its workspace (one
//! counter per workspace, persisted before the notice is sent). The hub
//! acknowledges the highest `seq` below which everything is durably applied;
//! on reconnect the node resends only entries and tombstones with a larger
//! `seq`, so reconnect cost is proportional to changes, not tree size.

mod op;
mod sink;
mod source;
#[cfg(test)]
mod tests;

use std::time::Duration;

use ganglion_core::RelPath;

pub use op::{Content, Op};
pub use sink::{HubPlan, HubWrite, SinkAction, SinkEngine, SinkEvent, SinkStats, WriteRefusal};
pub use source::{Observation, SourceAction, SourceEngine, SourceEvent, SourceState, Tombstone};

use crate::entry::{ContentHash, Entry};

/// A change of the node's workspace, node → hub, on the control stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The path now holds this entry (file with hash, dir, or symlink).
    Upsert(Entry),
    /// The path (and anything below it) is gone.
    Delete { path: RelPath, seq: u64 },
    /// `from` was renamed to `entry.path`, content unchanged: the hub moves
    /// what it already has instead of fetching.
    Rename { from: RelPath, entry: Entry },
}

impl Notice {
    pub fn seq(&self) -> u64 {
        match self {
            Self::Upsert(e) | Self::Rename { entry: e, .. } => e.seq,
            Self::Delete { seq, .. } => *seq,
        }
    }

    /// The path the notice creates or removes (the destination of a rename).
    pub fn path(&self) -> &RelPath {
        match self {
            Self::Upsert(e) | Self::Rename { entry: e, .. } => &e.path,
            Self::Delete { path, .. } => path,
        }
    }
}

/// Why a transfer (or a commit) failed, as the engines need to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferFailure {
    /// The received bytes did not hash to the declared hash.
    HashMismatch,
    /// The node's file changed while it was being read.
    SourceChanged,
    /// The hub's disk is full.
    DiskFull,
    /// The path is (now) immutable at the hub.
    Refused,
    /// The stream ended or the transfer idled out.
    Cancelled,
    /// Any other IO error.
    Io,
}

/// Backoff for retried fetches: 250 ms doubling, capped at 30 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 250u64.saturating_mul(1u64 << attempt.min(7));
    Duration::from_millis(ms.min(30_000))
}

pub(crate) fn file_hash(e: &Entry) -> Option<ContentHash> {
    match e.kind {
        crate::entry::EntryKind::File => e.hash,
        _ => None,
    }
}
