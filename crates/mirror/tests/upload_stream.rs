//! Upload streams carrying many files: each file stands alone (hashed once,
//! checked when it ends, fails alone); only data before any header breaks
//! the stream; a broken-off stream leaves nothing staged and no lock held.

mod common;

use common::{file_entry, p, setup, staged_files};
use ganglion_mirror::TransferFailure;
use ganglion_mirror::engine::{Content, Op};
use ganglion_mirror::entry::ContentHash;
use ganglion_mirror::immutable::ImmutablePaths;
use ganglion_mirror::receive::{FileOutcome, Part, Receiver, StreamError, UploadStream};

fn header(path: &str, declared: &[u8]) -> Part {
    Part::Header {
        path: p(path),
        hash: ContentHash::of(declared),
        size: declared.len() as u64,
        mode: 0o644,
        offset: 0,
    }
}

/// The parts of one file: a header declaring `declared`, then `sent` in 4-byte chunks.
fn parts(path: &str, declared: &[u8], sent: &[u8]) -> Vec<Part> {
    let mut v = vec![header(path, declared)];
    let mut off = 0;
    for c in sent.chunks(4) {
        v.push(Part::Data {
            offset: off,
            data: c.to_vec().into(),
        });
        off += c.len() as u64;
    }
    v
}

fn feed_all(s: &mut UploadStream, parts: Vec<Part>) -> Vec<FileOutcome> {
    let mut out = Vec::new();
    for part in parts {
        out.extend(s.feed(part).unwrap());
    }
    out
}

fn ok(path: &str, data: &[u8]) -> FileOutcome {
    FileOutcome {
        path: p(path),
        hash: ContentHash::of(data),
        result: Ok(data.len() as u64),
    }
}

async fn commit(r: &Receiver, files: &[(&str, &[u8])]) {
    let ops = files
        .iter()
        .enumerate()
        .map(|(i, (path, data))| Op::Write {
            entry: file_entry(path, data, i as u64 + 1),
            content: Content::Staged,
        })
        .collect();
    let out = r.commit(ops).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
}

#[tokio::test]
async fn many_files_in_one_stream_are_staged_each_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (r, locks) = setup(dir.path()).await;
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    let mut v = parts("a.txt", b"hello world", b"hello world");
    v.extend(parts("d/b.txt", b"", b""));
    v.extend(parts("d/e/c.bin", &[7u8; 37], &[7u8; 37]));
    let mut out = feed_all(&mut s, v);
    out.extend(s.finish());
    assert_eq!(
        out,
        vec![
            ok("a.txt", b"hello world"),
            ok("d/b.txt", b""),
            ok("d/e/c.bin", &[7u8; 37])
        ]
    );
    assert_eq!(locks.locks(), 3, "staged transfers hold their locks");
    commit(
        &r,
        &[
            ("a.txt", b"hello world"),
            ("d/b.txt", b""),
            ("d/e/c.bin", &[7u8; 37]),
        ],
    )
    .await;
    let m = dir.path().join("mirrors/node1");
    assert_eq!(std::fs::read(m.join("a.txt")).unwrap(), b"hello world");
    assert_eq!(std::fs::read(m.join("d/e/c.bin")).unwrap(), [7u8; 37]);
    assert_eq!((locks.locks(), staged_files(dir.path())), (0, 0));
}

#[tokio::test]
async fn a_hash_mismatch_in_the_middle_fails_only_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let (r, locks) = setup(dir.path()).await;
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    let mut v = parts("a", b"first", b"first");
    v.extend(parts("b", b"declared", b"tampered"));
    v.extend(parts("c", b"third file", b"third file"));
    let mut out = feed_all(&mut s, v);
    out.extend(s.finish());
    assert_eq!(
        out,
        vec![
            ok("a", b"first"),
            FileOutcome {
                path: p("b"),
                hash: ContentHash::of(b"declared"),
                result: Err(TransferFailure::HashMismatch),
            },
            ok("c", b"third file"),
        ]
    );
    // b left nothing staged and no lock; a and c commit.
    assert_eq!((locks.locks(), staged_files(dir.path())), (2, 2));
    commit(&r, &[("a", b"first"), ("c", b"third file")]).await;
    let m = dir.path().join("mirrors/node1");
    assert!(m.join("a").exists() && m.join("c").exists() && !m.join("b").exists());
    assert_eq!(locks.locks(), 0);
}

#[tokio::test]
async fn out_of_order_or_overlong_data_fails_that_file_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (r, locks) = setup(dir.path()).await;
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    let mut v = vec![
        header("gap", b"abcdefgh"),
        Part::Data {
            offset: 0,
            data: b"abcd".to_vec().into(),
        },
        // Skips 4 bytes: the file fails; its later data is ignored.
        Part::Data {
            offset: 8,
            data: b"ijkl".to_vec().into(),
        },
        Part::Data {
            offset: 4,
            data: b"efgh".to_vec().into(),
        },
        header("long", b"ab"),
        Part::Data {
            offset: 0,
            data: b"abc".to_vec().into(),
        },
    ];
    v.extend(parts("fine", b"ok", b"ok"));
    let mut out = feed_all(&mut s, v);
    out.extend(s.finish());
    let results: Vec<(String, Result<u64, TransferFailure>)> = out
        .into_iter()
        .map(|o| (o.path.to_string(), o.result))
        .collect();
    assert_eq!(
        results,
        vec![
            ("gap".into(), Err(TransferFailure::Io)),
            ("long".into(), Err(TransferFailure::Io)),
            ("fine".into(), Ok(2)),
        ]
    );
    assert_eq!((locks.locks(), staged_files(dir.path())), (1, 1));
}

#[tokio::test]
async fn a_short_file_fails_when_the_next_header_comes() {
    let dir = tempfile::tempdir().unwrap();
    let (r, _locks) = setup(dir.path()).await;
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    let mut v = parts("short", b"twelve bytes", b"twelve");
    v.extend(parts("next", b"x", b"x"));
    let out = feed_all(&mut s, v);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].result, Err(TransferFailure::Io));
    assert_eq!(s.finish(), Some(ok("next", b"x")));
}

#[tokio::test]
async fn data_before_any_header_breaks_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (r, locks) = setup(dir.path()).await;
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    let err = s
        .feed(Part::Data {
            offset: 0,
            data: b"orphan".to_vec().into(),
        })
        .unwrap_err();
    assert!(matches!(err, StreamError::DataWithoutHeader));
    drop(s);
    assert_eq!((locks.locks(), staged_files(dir.path())), (0, 0));
}

#[tokio::test]
async fn an_immutable_path_in_a_batch_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (r, locks) = setup(dir.path()).await;
    let immutable = ImmutablePaths::new(1, vec!["locked/**".to_string()]).unwrap();
    let mut s = UploadStream::new(r.clone(), immutable);
    let mut v = parts("locked/x", b"no", b"no");
    v.extend(parts("free", b"yes", b"yes"));
    let mut out = feed_all(&mut s, v);
    out.extend(s.finish());
    assert_eq!(out[0].result, Err(TransferFailure::Refused));
    assert_eq!(out[1], ok("free", b"yes"));
    assert_eq!(locks.locks(), 1);
}

#[tokio::test]
async fn a_stream_broken_off_mid_file_leaves_nothing_staged_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (r, locks) = setup(dir.path()).await;
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    let mut v = parts("done", b"complete", b"complete");
    v.extend(parts("cut", b"never finished", b"never"));
    let out = feed_all(&mut s, v);
    assert_eq!(out, vec![ok("done", b"complete")]);
    drop(s); // the stream broke: no finish
    assert_eq!((locks.locks(), staged_files(dir.path())), (1, 1));
    commit(&r, &[("done", b"complete")]).await;
    assert_eq!((locks.locks(), staged_files(dir.path())), (0, 0));
}

#[tokio::test]
async fn a_large_batch_commits_through_the_group_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (r, locks) = setup(dir.path()).await;
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    let files: Vec<(String, Vec<u8>)> = (0..80)
        .map(|i| {
            (
                format!("d{}/f{i}", i % 40),
                format!("content {i}").into_bytes(),
            )
        })
        .collect();
    let mut v = Vec::new();
    for (path, data) in &files {
        v.extend(parts(path, data, data));
    }
    let mut out = feed_all(&mut s, v);
    out.extend(s.finish());
    assert!(out.iter().all(|o| o.result.is_ok()), "{out:?}");
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    commit(&r, &refs).await;
    for (path, data) in &files {
        assert_eq!(
            &std::fs::read(dir.path().join("mirrors/node1").join(path)).unwrap(),
            data
        );
    }
    assert_eq!(r.index().list("node1", None).await.unwrap().len(), 80);
    assert_eq!((locks.locks(), staged_files(dir.path())), (0, 0));
}

#[tokio::test]
async fn a_file_replaces_a_directory_and_a_directory_a_file_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (r, _locks) = setup(dir.path()).await;
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    let mut v = parts("x/one", b"1", b"1");
    v.extend(parts("x/two", b"2", b"2"));
    v.extend(parts("y", b"file y", b"file y"));
    feed_all(&mut s, v);
    s.finish();
    commit(&r, &[("x/one", b"1"), ("x/two", b"2"), ("y", b"file y")]).await;
    // Now x becomes a file and y a directory holding a file.
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    let mut v = parts("x", b"now a file", b"now a file");
    v.extend(parts("y/inner", b"below", b"below"));
    let out = feed_all(&mut s, v);
    assert!(out.iter().all(|o| o.result.is_ok()));
    s.finish();
    let ops = vec![
        Op::Write {
            entry: file_entry("x", b"now a file", 10),
            content: Content::Staged,
        },
        Op::Write {
            entry: file_entry("y/inner", b"below", 11),
            content: Content::Staged,
        },
    ];
    let out = r.commit(ops).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let m = dir.path().join("mirrors/node1");
    assert_eq!(std::fs::read(m.join("x")).unwrap(), b"now a file");
    assert_eq!(std::fs::read(m.join("y/inner")).unwrap(), b"below");
    let paths: Vec<String> = r
        .index()
        .list("node1", None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path.to_string())
        .collect();
    assert_eq!(paths, ["x", "y/inner"]);
}
