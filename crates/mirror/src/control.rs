//! The mirror's messages on a node's control stream, in domain form
//! (`ganglion-proto` converts them to and from the wire). Content itself
//! travels on `Upload` streams, not here.

use ganglion_core::RelPath;

use crate::{Conflict, ContentHash, HubChange, Notice};

/// What the hub tells a node's mirror.
#[derive(Clone, Debug, PartialEq)]
pub enum MirrorToNode {
    /// Content the hub asks for, in order (one message for many).
    Needs(Vec<(RelPath, ContentHash)>),
    /// The hub applied every notice up to this seq.
    Ack(u64),
    /// Hub-side changes for the workspace, in seq order.
    Changes(Vec<HubChange>),
    /// The hub holds the first `offset` bytes of these contents from a cut
    /// transfer: sent right before the `Needs` asking for them, so that
    /// their uploads start there (a resume).
    Resume(Vec<(RelPath, ContentHash, u64)>),
}

/// What a node's mirror tells the hub.
#[derive(Clone, Debug, PartialEq)]
pub enum MirrorToHub {
    /// Changes, in order (many to a message).
    Notices(Vec<Notice>),
    /// Changes observed but not yet durably recorded (so not sent), because
    /// the node's index writes fail; 0 once all are in.
    Unrecorded(u64),
    /// Every hub-side change up to this seq is applied (or settled as a
    /// conflict) in the workspace and recorded in the node's index.
    Applied(u64),
    /// A conflict the node settled while applying a hub-side change.
    Conflict(Conflict),
    /// The node does not sync its workspace, and why (an emptied or
    /// unmounted workspace); empty: it syncs again.
    Halted(String),
}
