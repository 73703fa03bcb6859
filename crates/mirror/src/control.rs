//! The mirror's messages on a node's control stream, in domain form
//! (`ganglion-proto` converts them to and from the wire). Content itself
//! travels on `Upload` streams, not here.

use ganglion_core::RelPath;

use crate::{ContentHash, Notice};

/// What the hub tells a node's mirror.
#[derive(Clone, Debug, PartialEq)]
pub enum MirrorToNode {
    /// Content the hub asks for, in order (one message for many).
    Needs(Vec<(RelPath, ContentHash)>),
    /// The hub applied every notice up to this seq.
    Ack(u64),
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
}
