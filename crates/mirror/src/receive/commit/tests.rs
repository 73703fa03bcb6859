//! The group commit's tests (their own file: commit.rs stays under ~600 lines).

use std::sync::Arc;

use super::*;
use crate::immutable::ImmutablePaths;
use crate::index::MemoryIndex;
use crate::locks::LockRegistry;

/// A file entry (seq 1).
fn file(path: &str, data: &[u8]) -> Entry {
    crate::fixture::file(path, data, 1)
}

/// A staged file a commit has taken (between staging and placing) is
/// not stale: a sweep then left the rename without its source.
#[tokio::test]
async fn a_sweep_during_a_commit_keeps_the_files_it_places() {
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(MemoryIndex::new());
    let r = Receiver::open(dir.path(), "n", index, LockRegistry::default()).unwrap();
    let e = file("a/f", b"data");
    let id = r
        .open_transfer(
            &e.path,
            e.hash.unwrap(),
            4,
            0o644,
            &ImmutablePaths::default(),
        )
        .unwrap();
    r.chunk(id, 0, b"data").unwrap();
    r.finish(id).unwrap();
    let link = Entry {
        kind: EntryKind::Symlink,
        symlink_target: Some("f".into()),
        hash: None,
        ..file("a/l", b"")
    };
    let ops = vec![
        Op::Write {
            entry: e.clone(),
            content: Content::Staged,
        },
        Op::Write {
            entry: file("a/empty", b""),
            content: Content::Empty,
        },
        Op::Symlink { entry: link },
    ];
    let (prepared, failed) = r.stage(ops);
    assert!(failed.is_empty());
    assert_eq!(r.sweep_staging().unwrap(), 0);
    let (done, failed) = r.place(prepared);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(done.len(), 3);
    assert_eq!(
        std::fs::read(dir.path().join("mirrors/n/a/f")).unwrap(),
        b"data"
    );
    assert!(
        lock(&r.inner.claimed).is_empty(),
        "names are released once placed"
    );
}

/// Through `commit`, nothing stays claimed.
#[tokio::test]
async fn a_commit_releases_its_staged_names() {
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(MemoryIndex::new());
    let r = Receiver::open(dir.path(), "n", index, LockRegistry::default()).unwrap();
    let ops = vec![Op::Write {
        entry: file("f", b""),
        content: Content::Empty,
    }];
    let out = r.commit(ops).await.unwrap();
    assert_eq!(out.done.len(), 1);
    assert!(lock(&r.inner.claimed).is_empty());
}

/// A hub-side write whose put cannot be staged (nothing staged for it)
/// places nothing: not the parent directory planned with it (sim seed 21).
#[tokio::test]
async fn a_hub_side_write_that_cannot_be_staged_places_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(MemoryIndex::new());
    let r = Receiver::open(dir.path(), "n", index, LockRegistry::default()).unwrap();
    let parent = Entry {
        kind: EntryKind::Dir,
        hash: None,
        size: 0,
        ..file("p", b"")
    };
    let ops = vec![
        Op::Mkdir { entry: parent },
        Op::Write {
            entry: file("p/f", b"never staged"),
            content: Content::Staged,
        },
    ];
    let out = r.commit_with(ops, Batch::default()).await.unwrap();
    assert!(out.done.is_empty(), "{:?}", out.done);
    assert_eq!(out.failed.len(), 1);
    assert!(!dir.path().join("mirrors/n/p").exists());
}
