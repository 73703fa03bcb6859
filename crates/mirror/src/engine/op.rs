//! The filesystem operations the hub engine asks the receiver to commit.

use ganglion_core::RelPath;

use crate::entry::Entry;

/// Where the bytes of a written file come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A verified staged transfer for `entry.path` with `entry.hash`.
    Staged,
    /// Copy (hash-verified) from another mirror path that holds the same content.
    Copy(RelPath),
    /// The empty file.
    Empty,
}

/// One filesystem change for the receiver's next group commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Write {
        entry: Entry,
        content: Content,
    },
    /// Rename `from` to `entry.path` inside the mirror.
    Move {
        from: RelPath,
        entry: Entry,
    },
    Mkdir {
        entry: Entry,
    },
    Symlink {
        entry: Entry,
    },
    Delete {
        path: RelPath,
        seq: u64,
    },
}

impl Op {
    /// The path whose state this op establishes.
    pub fn path(&self) -> &RelPath {
        match self {
            Self::Write { entry, .. }
            | Self::Move { entry, .. }
            | Self::Mkdir { entry }
            | Self::Symlink { entry } => &entry.path,
            Self::Delete { path, .. } => path,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Self::Write { entry, .. }
            | Self::Move { entry, .. }
            | Self::Mkdir { entry }
            | Self::Symlink { entry } => entry.seq,
            Self::Delete { seq, .. } => *seq,
        }
    }

    /// The entry the index holds after the op, `None` for a delete.
    pub fn entry(&self) -> Option<&Entry> {
        match self {
            Self::Write { entry, .. }
            | Self::Move { entry, .. }
            | Self::Mkdir { entry }
            | Self::Symlink { entry } => Some(entry),
            Self::Delete { .. } => None,
        }
    }
}
