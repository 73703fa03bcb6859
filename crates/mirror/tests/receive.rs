//! The hub's receiver against a real filesystem: transfers, group commit,
//! confinement, bad inputs, a full disk.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{entry, file_entry, p, setup, staged_files};
use ganglion_core::RelPath;
use ganglion_mirror::TransferFailure;
use ganglion_mirror::engine::{Content, Op};
use ganglion_mirror::entry::{ContentHash, EntryKind};
use ganglion_mirror::immutable::ImmutablePaths;
use ganglion_mirror::receive::{Error, Receiver};

/// Streams `data` in 3-byte chunks and finishes the transfer.
fn upload(r: &Receiver, path: &str, data: &[u8], mode: u32) -> Result<(), Error> {
    let id = r.open_transfer(
        &p(path),
        ContentHash::of(data),
        data.len() as u64,
        mode,
        &ImmutablePaths::default(),
    )?;
    let mut off = 0u64;
    for c in data.chunks(3) {
        r.chunk(id, off, c)?;
        off += c.len() as u64;
    }
    r.finish(id).map(|_| ())
}

fn staging_is_empty(data_dir: &Path) -> bool {
    staged_files(data_dir) == 0
}

#[tokio::test]
async fn transfer_commit_cat_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (r, locks) = setup(dir.path()).await;
    upload(&r, "bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755).unwrap();
    upload(&r, "src/a.txt", b"hello", 0o644).unwrap();
    assert_eq!(
        locks.locks(),
        2,
        "a staged transfer holds its lock until commit"
    );
    let run = entry(
        "bin/run.sh",
        EntryKind::File,
        b"#!/bin/sh\necho hi\n",
        0o755,
        1,
    );
    let a = entry("src/a.txt", EntryKind::File, b"hello", 0o644, 2);
    let ops = vec![
        Op::Mkdir {
            entry: entry("bin", EntryKind::Dir, b"", 0o755, 1),
        },
        Op::Write {
            entry: run,
            content: Content::Staged,
        },
        Op::Write {
            entry: a.clone(),
            content: Content::Staged,
        },
        Op::Write {
            entry: entry("empty", EntryKind::File, b"", 0o644, 3),
            content: Content::Empty,
        },
    ];
    let out = r.commit(ops).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.done.len(), 4);
    assert_eq!((locks.locks(), locks.in_flight()), (0, 0));
    assert!(staging_is_empty(dir.path()));
    let mirror = dir.path().join("mirrors/node1");
    let mode = std::fs::metadata(mirror.join("bin/run.sh"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o755);
    let mode = std::fs::metadata(mirror.join("src/a.txt"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
    assert_eq!(r.cat(&p("src/a.txt")).unwrap(), b"hello");
    assert_eq!(r.cat(&p("empty")).unwrap(), b"");
    assert_eq!(r.index().list("node1", None).await.unwrap().len(), 4);
    assert!(r.verify().await.unwrap().is_empty());

    // Copy by hash, move, delete (recursive); then corrupt a file behind the index's back.
    let moved = entry("b.txt", EntryKind::File, b"hello", 0o644, 5);
    let copy = entry("copy.txt", EntryKind::File, b"hello", 0o644, 4);
    let ops = vec![
        Op::Write {
            entry: copy,
            content: Content::Copy(p("src/a.txt")),
        },
        Op::Move {
            from: p("src/a.txt"),
            entry: moved,
        },
        Op::Delete {
            path: p("bin"),
            seq: 6,
        },
    ];
    let out = r.commit(ops).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert!(!mirror.join("src/a.txt").exists() && !mirror.join("bin").exists());
    let paths: Vec<String> = r
        .index()
        .list("node1", None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path.to_string())
        .collect();
    assert_eq!(paths, vec!["b.txt", "copy.txt", "empty"]);
    std::fs::write(mirror.join("copy.txt"), b"tampered").unwrap();
    let bad = r.verify().await.unwrap();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].path, p("copy.txt"));
    assert_eq!(bad[0].expected, ContentHash::of(b"hello").to_string());
}

#[tokio::test]
async fn a_chunk_for_a_never_opened_transfer_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (r, _) = setup(dir.path()).await;
    assert!(matches!(
        r.chunk(42, 0, b"x"),
        Err(Error::UnknownTransfer { id: 42 })
    ));
    assert!(matches!(r.finish(42), Err(Error::UnknownTransfer { .. })));
}

#[tokio::test]
async fn chunks_out_of_order_abort_the_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let (r, locks) = setup(dir.path()).await;
    let data = b"abcdef";
    let id = r
        .open_transfer(
            &p("f"),
            ContentHash::of(data),
            6,
            0o644,
            &ImmutablePaths::default(),
        )
        .unwrap();
    r.chunk(id, 0, b"abc").unwrap();
    let err = r.chunk(id, 4, b"ef").unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfOrder {
                expected: 3,
                got: 4,
                ..
            }
        ),
        "{err:?}"
    );
    // The transfer is gone, its staged file and lock with it.
    assert!(matches!(
        r.chunk(id, 3, b"def"),
        Err(Error::UnknownTransfer { .. })
    ));
    assert!(staging_is_empty(dir.path()));
    assert_eq!((locks.locks(), locks.in_flight()), (0, 0));
    // Longer than declared is refused too.
    let id = r
        .open_transfer(
            &p("f"),
            ContentHash::of(data),
            2,
            0o644,
            &ImmutablePaths::default(),
        )
        .unwrap();
    assert!(matches!(r.chunk(id, 0, b"abc"), Err(Error::TooLong { .. })));
}

#[tokio::test]
async fn a_declared_hash_that_does_not_match_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (r, locks) = setup(dir.path()).await;
    let id = r
        .open_transfer(
            &p("f"),
            ContentHash::of(b"expected"),
            5,
            0o644,
            &ImmutablePaths::default(),
        )
        .unwrap();
    r.chunk(id, 0, b"other").unwrap();
    let err = r.finish(id).unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }));
    assert_eq!(err.failure(), TransferFailure::HashMismatch);
    assert!(staging_is_empty(dir.path()));
    assert_eq!(locks.locks(), 0);
    // Nothing can be committed from it.
    let op = Op::Write {
        entry: entry("f", EntryKind::File, b"expected", 0o644, 1),
        content: Content::Staged,
    };
    let out = r.commit(vec![op]).await.unwrap();
    assert_eq!(out.failed.len(), 1);
    assert!(!dir.path().join("mirrors/node1/f").exists());
    assert!(r.index().list("node1", None).await.unwrap().is_empty());
}

#[tokio::test]
async fn immutable_paths_are_refused_at_transfer_start() {
    let dir = tempfile::tempdir().unwrap();
    let (r, locks) = setup(dir.path()).await;
    let imm = ImmutablePaths::new(1, vec!["secrets/".into()]).unwrap();
    let err = r
        .open_transfer(&p("secrets/key"), ContentHash::of(b"k"), 1, 0o600, &imm)
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }));
    assert_eq!(locks.locks(), 0);
}

#[test]
fn hostile_path_text_cannot_become_a_relpath() {
    // Every path the receiver takes is a RelPath: hostile text never reaches it.
    for bad in [
        "../x",
        "a/../../x",
        "/etc/passwd",
        "a\0b",
        "a\\b",
        "",
        "./a",
        "a//b",
    ] {
        assert!(RelPath::parse(bad).is_err(), "{bad:?} must be refused");
    }
    assert!(RelPath::parse(&"x".repeat(256)).is_err());
    assert!(RelPath::parse(&["x"; 3000].join("/")).is_err());
    // Non-UTF-8 names cannot be represented at all (&str); the scanner skips
    // and reports them (see scan tests).
}

#[tokio::test]
async fn symlinks_are_mirrored_as_links_and_never_followed_out() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside").unwrap();
    let (r, _) = setup(dir.path()).await;
    let mut link = entry("out", EntryKind::Symlink, b"", 0o777, 1);
    link.symlink_target = Some(outside.path().display().to_string());
    let mut rel = entry("up", EntryKind::Symlink, b"", 0o777, 2);
    rel.symlink_target = Some("../../../..".into());
    let out = r
        .commit(vec![
            Op::Symlink { entry: link },
            Op::Symlink { entry: rel },
        ])
        .await
        .unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let mirror = dir.path().join("mirrors/node1");
    assert_eq!(
        std::fs::read_link(mirror.join("out")).unwrap(),
        outside.path()
    );
    // Reading through them is refused.
    assert!(matches!(r.cat(&p("out")), Err(Error::Symlink { .. })));
    assert!(r.cat(&p("out/secret")).is_err());
    assert!(r.cat(&p("up/etc/passwd")).is_err());
    assert!(r.verify().await.unwrap().is_empty());

    // Writing below a symlinked directory replaces the link, never writes outside.
    upload(&r, "out/secret", b"pwned", 0o644).unwrap();
    let w = entry("out/secret", EntryKind::File, b"pwned", 0o644, 3);
    let res = r
        .commit(vec![Op::Write {
            entry: w,
            content: Content::Staged,
        }])
        .await
        .unwrap();
    assert!(res.failed.is_empty(), "{:?}", res.failed);
    assert_eq!(
        std::fs::read(outside.path().join("secret")).unwrap(),
        b"outside"
    );
    assert!(
        std::fs::symlink_metadata(mirror.join("out"))
            .unwrap()
            .is_dir()
    );
    // A symlink planted in the mirror behind the index's back is not followed either.
    symlink(outside.path().join("secret"), mirror.join("planted")).unwrap();
    assert!(r.cat(&p("planted")).is_err());
}

#[tokio::test]
async fn sweep_removes_stale_staging_files() {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging/node1");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("leftover.staged"), b"crashed mid-transfer").unwrap();
    std::fs::create_dir_all(staging.join("u3")).unwrap();
    std::fs::write(staging.join("u3/0123-4567.staged"), b"in a shard").unwrap();
    let (r, _) = setup(dir.path()).await; // sweeps at start
    assert!(staging_is_empty(dir.path()));
    assert!(staging.join("u3").is_dir(), "the shards stay");
    let id = r
        .open_transfer(
            &p("f"),
            ContentHash::of(b"x"),
            1,
            0o644,
            &ImmutablePaths::default(),
        )
        .unwrap();
    std::fs::write(staging.join("another"), b"").unwrap();
    std::fs::write(staging.join("u5/stale.staged"), b"").unwrap();
    assert_eq!(
        r.sweep_staging().unwrap(),
        2,
        "an open transfer's file is kept"
    );
    assert_eq!(staged_files(dir.path()), 1);
    r.chunk(id, 0, b"x").unwrap();
    r.finish(id).unwrap();
}

/// The periodic sweep running while transfers and commits are under way
/// never takes a file one of them owns: every op commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_during_transfers_and_commits_takes_nothing_live() {
    let dir = tempfile::tempdir().unwrap();
    let (r, _) = setup(dir.path()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (r, stop) = (r.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut rounds, mut swept) = (0u64, 0usize);
            while !stop.load(Ordering::Relaxed) {
                swept += r.sweep_staging().unwrap();
                rounds += 1;
            }
            (rounds, swept)
        })
    };
    let mut seq = 0;
    for round in 0..20 {
        let mut ops = Vec::new();
        for i in 0..60 {
            seq += 1;
            let path = format!("d{round}/f{i}");
            let op = match i % 3 {
                // Uploaded: staged before the commit.
                0 => {
                    let data = format!("{round}-{i}");
                    upload(&r, &path, data.as_bytes(), 0o644).unwrap();
                    Op::Write {
                        entry: file_entry(&path, data.as_bytes(), seq),
                        content: Content::Staged,
                    }
                }
                // Empty files and links: staged by the commit itself.
                1 => Op::Write {
                    entry: file_entry(&path, b"", seq),
                    content: Content::Empty,
                },
                _ => {
                    let mut e = entry(&path, EntryKind::Symlink, b"", 0o777, seq);
                    e.symlink_target = Some("f0".into());
                    Op::Symlink { entry: e }
                }
            };
            ops.push(op);
        }
        let out = r.commit(ops).await.unwrap();
        assert!(
            out.failed.is_empty(),
            "round {round}: {} ops failed, first {:?}",
            out.failed.len(),
            out.failed.first().map(|(op, f)| (op.path(), f))
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (rounds, swept) = sweeper.join().unwrap();
    assert!(rounds > 0);
    assert_eq!(swept, 0, "the sweep removed live staging files");
    assert!(staging_is_empty(dir.path()));
    assert_eq!(r.index().list("node1", None).await.unwrap().len(), 20 * 60);
}

/// A full disk, for real: a 256 KiB tmpfs (needs root and mount; skipped with
/// a message otherwise).
#[tokio::test]
async fn a_full_disk_fails_the_transfer_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("cannot mount a tmpfs (needs root): full-disk test skipped");
        }
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    #[allow(clippy::print_stderr)]
    {
        eprintln!("full-disk test on a real 256 KiB tmpfs");
    }
    let (r, locks) = setup(&mnt).await;
    upload(&r, "small", b"fits", 0o644).unwrap();
    let big = vec![7u8; 1 << 20];
    let id = r
        .open_transfer(
            &p("big"),
            ContentHash::of(&big),
            big.len() as u64,
            0o644,
            &ImmutablePaths::default(),
        )
        .unwrap();
    let mut err = None;
    for (i, c) in big.chunks(64 * 1024).enumerate() {
        if let Err(e) = r.chunk(id, (i * 64 * 1024) as u64, c) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("a 1 MiB file cannot fit in 256 KiB");
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert_eq!(err.failure(), TransferFailure::DiskFull);
    assert!(!mnt.join("mirrors/node1/big").exists());
    // The staged small file is intact and commits; the big one left nothing.
    let e = entry("small", EntryKind::File, b"fits", 0o644, 1);
    let out = r
        .commit(vec![Op::Write {
            entry: e,
            content: Content::Staged,
        }])
        .await
        .unwrap();
    assert!(out.failed.is_empty());
    assert!(staging_is_empty(&mnt));
    assert_eq!((locks.locks(), locks.in_flight()), (0, 0));
    assert!(r.verify().await.unwrap().is_empty());
}

/// A batch that deletes a directory and then moves a file out of it (the node
/// saw `mv d/e/f d/g; rm -r d/e` and sent the delete first): the move's source
/// is taken before the delete is placed, so nothing fails and nothing is lost.
#[tokio::test]
async fn a_move_out_of_a_directory_deleted_earlier_in_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (r, _locks) = setup(dir.path()).await;
    upload(&r, "d/e/f", b"content of f", 0o755).unwrap();
    let f = entry("d/e/f", EntryKind::File, b"content of f", 0o755, 1);
    let out = r
        .commit(vec![Op::Write {
            entry: f,
            content: Content::Staged,
        }])
        .await
        .unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let out = r
        .commit(vec![
            Op::Delete {
                path: p("d/e"),
                seq: 2,
            },
            Op::Move {
                from: p("d/e/f"),
                entry: entry("d/g", EntryKind::File, b"content of f", 0o755, 3),
            },
        ])
        .await
        .unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.done.len(), 2);
    let mirror = dir.path().join("mirrors/node1");
    assert!(!mirror.join("d/e").exists());
    assert_eq!(std::fs::read(mirror.join("d/g")).unwrap(), b"content of f");
    assert!(staging_is_empty(dir.path()));
    let paths: Vec<String> = r
        .index()
        .list("node1", None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path.to_string())
        .collect();
    assert_eq!(paths, vec!["d/g"]);
    assert!(r.verify().await.unwrap().is_empty());
}
