//! Fixtures shared by the receiver's integration tests.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::sync::Arc;

use ganglion_core::RelPath;
use ganglion_mirror::entry::{ContentHash, Entry, EntryKind, Replica, Version};
use ganglion_mirror::index::MemoryIndex;
use ganglion_mirror::locks::LockRegistry;
use ganglion_mirror::receive::Receiver;

pub fn p(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

/// An index entry from the node (content hash of `data` for files).
pub fn entry(path: &str, kind: EntryKind, data: &[u8], mode: u32, seq: u64) -> Entry {
    Entry {
        path: p(path),
        kind,
        size: data.len() as u64,
        mtime_ns: 0,
        mode,
        inode: 0,
        dev: 0,
        symlink_target: None,
        hash: (kind == EntryKind::File).then(|| ContentHash::of(data)),
        seq,
        version: Version {
            origin: Replica::Node,
            seq,
        },
    }
}

/// A regular file's entry, mode 0644.
pub fn file_entry(path: &str, data: &[u8], seq: u64) -> Entry {
    entry(path, EntryKind::File, data, 0o644, seq)
}

/// A receiver for mirror `node1` under `data_dir`, with an in-memory index.
pub async fn setup(data_dir: &Path) -> (Receiver, LockRegistry) {
    let index = Arc::new(MemoryIndex::new());
    let locks = LockRegistry::default();
    (
        Receiver::open(data_dir, "node1", index, locks.clone()).unwrap(),
        locks,
    )
}

/// Files in a staging directory, its shards included.
pub fn files_below(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| match e.file_type().unwrap().is_dir() {
            true => files_below(&e.path()),
            false => 1,
        })
        .sum()
}

/// Files staged for `node1` under `data_dir`.
pub fn staged_files(data_dir: &Path) -> usize {
    files_below(&data_dir.join("staging/node1"))
}
