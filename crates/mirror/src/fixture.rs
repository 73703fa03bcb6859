//! Entries for tests: of this crate, and of the crates that store or send
//! entries (`ganglion-store`'s index suite). Every field is set, with values
//! at the edges a backend must carry unchanged (an inode above `i64::MAX`,
//! an executable mode, a nanosecond mtime).

use ganglion_core::RelPath;

use crate::entry::{ContentHash, Entry, EntryKind, Replica, Version};

/// A file entry of `data` (its size and hash), written by the node at `seq`.
pub fn file(path: &str, data: &[u8], seq: u64) -> Entry {
    Entry {
        path: RelPath::parse(path).expect("a fixture path is valid"),
        kind: EntryKind::File,
        size: data.len() as u64,
        mtime_ns: 1_700_000_000_000_000_000,
        mode: 0o100755,
        inode: u64::MAX - 3,
        dev: 42,
        symlink_target: None,
        hash: Some(ContentHash::of(data)),
        seq,
        version: Version {
            origin: Replica::Node,
            seq,
        },
    }
}
