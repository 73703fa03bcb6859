//! Resumable transfers: a large transfer cut before its end is kept as a
//! partial, found again by a reopened receiver (a hub restart), resumed from
//! the offset it holds (only the rest is sent), checked against the whole
//! file's hash, and leaves nothing behind once committed. Offsets it does
//! not hold are refused and the transfer starts again from 0.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{file_entry, p, setup, staged_files};
use ganglion_mirror::TransferFailure;
use ganglion_mirror::engine::{Content, Op};
use ganglion_mirror::entry::ContentHash;
use ganglion_mirror::immutable::ImmutablePaths;
use ganglion_mirror::receive::{
    FileOutcome, MAX_PARTIALS, PARTIAL_MAX_AGE, Part, RESUMABLE_FROM, Receiver, UploadStream,
};

const CHUNK: usize = 256 << 10;

/// `len` pseudo-random bytes (seeded).
fn content(seed: &str, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

fn header(path: &str, whole: &[u8], offset: u64) -> Part {
    Part::Header {
        path: p(path),
        hash: ContentHash::of(whole),
        size: whole.len() as u64,
        mode: 0o644,
        offset,
    }
}

/// Feeds a header at `from`, then `whole[from..to]` in chunks; returns the
/// outcomes of files that ended.
fn send(
    s: &mut UploadStream,
    path: &str,
    whole: &[u8],
    from: usize,
    to: usize,
) -> Vec<FileOutcome> {
    let mut out = s.feed(header(path, whole, from as u64)).unwrap();
    let mut off = from;
    while off < to {
        let end = (off + CHUNK).min(to);
        out.extend(
            s.feed(Part::Data {
                offset: off as u64,
                data: whole[off..end].to_vec().into(),
            })
            .unwrap(),
        );
        off = end;
    }
    out
}

fn ok(path: &str, whole: &[u8]) -> FileOutcome {
    FileOutcome {
        path: p(path),
        hash: ContentHash::of(whole),
        result: Ok(whole.len() as u64),
    }
}

fn failed(path: &str, whole: &[u8], failure: TransferFailure) -> FileOutcome {
    FileOutcome {
        path: p(path),
        hash: ContentHash::of(whole),
        result: Err(failure),
    }
}

/// Cuts an upload of `whole` after `at` bytes (the stream breaks off).
fn cut_at(r: &Receiver, path: &str, whole: &[u8], at: usize) {
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    assert!(send(&mut s, path, whole, 0, at).is_empty());
    drop(s);
}

/// Uploads `whole` from `from` on one stream; returns its outcome and the
/// bytes it did not send again.
fn upload_from(r: &Receiver, path: &str, whole: &[u8], from: usize) -> (FileOutcome, u64) {
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    let mut out = send(&mut s, path, whole, from, whole.len());
    let resumed = s.take_resumed();
    out.extend(s.finish());
    assert_eq!(out.len(), 1, "{out:?}");
    (out.pop().unwrap(), resumed)
}

async fn commit(r: &Receiver, path: &str, whole: &[u8]) {
    let out = r
        .commit(vec![Op::Write {
            entry: file_entry(path, whole, 1),
            content: Content::Staged,
        }])
        .await
        .unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
}

async fn reopen(data_dir: &Path) -> Receiver {
    setup(data_dir).await.0
}

fn partial_files(data_dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(data_dir.join("staging/node1/partial"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test]
async fn a_cut_transfer_resumes_after_a_hub_restart_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let whole = content("big", 3 << 20);
    let half = whole.len() / 2;
    let r = reopen(dir.path()).await;
    cut_at(&r, "d/big.bin", &whole, half);
    let hash = ContentHash::of(&whole);
    assert_eq!(r.resume_offset(&p("d/big.bin"), hash), Some(half as u64));
    drop(r);

    // The hub restarts: the new receiver finds the partial again.
    let r = reopen(dir.path()).await;
    assert_eq!(r.resume_offset(&p("d/big.bin"), hash), Some(half as u64));
    assert_eq!(r.partials(), 1);
    let (outcome, resumed) = upload_from(&r, "d/big.bin", &whole, half);
    assert_eq!(outcome, ok("d/big.bin", &whole));
    assert_eq!(resumed, half as u64, "the prefix was not sent again");
    commit(&r, "d/big.bin", &whole).await;
    assert_eq!(
        std::fs::read(dir.path().join("mirrors/node1/d/big.bin")).unwrap(),
        whole
    );
    assert_eq!(r.partials(), 0);
    assert_eq!(r.resume_offset(&p("d/big.bin"), hash), None);
    assert_eq!(staged_files(dir.path()), 0, "no partial left behind");
}

#[tokio::test]
async fn a_transfer_cut_twice_resumes_twice() {
    let dir = tempfile::tempdir().unwrap();
    let whole = content("twice", 2 << 20);
    let r = reopen(dir.path()).await;
    cut_at(&r, "f", &whole, 300_000);
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    assert!(send(&mut s, "f", &whole, 300_000, 1_500_000).is_empty());
    drop(s);
    let hash = ContentHash::of(&whole);
    assert_eq!(r.resume_offset(&p("f"), hash), Some(1_500_000));
    let (outcome, resumed) = upload_from(&r, "f", &whole, 1_500_000);
    assert_eq!((outcome, resumed), (ok("f", &whole), 1_500_000));
    commit(&r, "f", &whole).await;
    assert_eq!(staged_files(dir.path()), 0);
}

/// Offsets the receiver does not hold are refused, the partial dropped, and
/// the next attempt (from 0) succeeds; nothing is corrupted or left behind.
#[tokio::test]
async fn hostile_offsets_are_refused_and_the_transfer_restarts_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let whole = content("hostile", 2 << 20);
    let size = whole.len() as u64;
    let held = 1 << 20;
    let r = reopen(dir.path()).await;
    let hash = ContentHash::of(&whole);
    for offset in [held as u64 + 1, size, size + 1, u64::MAX, i64::MAX as u64] {
        cut_at(&r, "f", &whole, held);
        assert_eq!(r.resume_offset(&p("f"), hash), Some(held as u64));
        let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
        let out = s.feed(header("f", &whole, offset)).unwrap();
        assert_eq!(
            out,
            vec![failed("f", &whole, TransferFailure::Io)],
            "{offset}"
        );
        assert_eq!(s.take_resumed(), 0);
        drop(s);
        assert_eq!(r.resume_offset(&p("f"), hash), None, "{offset}: dropped");
        assert_eq!(staged_files(dir.path()), 0, "{offset}");
    }
    // An offset with no partial at all, and one on a file too small to
    // resume, are refused the same way.
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    let small = content("small", 1000);
    assert_eq!(
        s.feed(header("f", &whole, 10)).unwrap(),
        vec![failed("f", &whole, TransferFailure::Io)]
    );
    assert_eq!(
        s.feed(header("s", &small, 10)).unwrap(),
        vec![failed("s", &small, TransferFailure::Io)]
    );
    drop(s);
    // Data that does not continue at the resumed offset fails the file.
    cut_at(&r, "f", &whole, held);
    let mut s = UploadStream::new(r.clone(), ImmutablePaths::default());
    assert!(s.feed(header("f", &whole, held as u64)).unwrap().is_empty());
    let out = s
        .feed(Part::Data {
            offset: 0,
            data: whole[..10].to_vec().into(),
        })
        .unwrap();
    assert_eq!(out, vec![failed("f", &whole, TransferFailure::Io)]);
    drop(s);
    assert_eq!(staged_files(dir.path()), 0);
    // From 0 it goes through.
    assert_eq!(upload_from(&r, "f", &whole, 0).0, ok("f", &whole));
    commit(&r, "f", &whole).await;
    assert_eq!(
        std::fs::read(dir.path().join("mirrors/node1/f")).unwrap(),
        whole
    );
    assert_eq!(staged_files(dir.path()), 0);
}

/// Resuming below what is held is fine: the partial is cut back there.
#[tokio::test]
async fn an_offset_below_what_is_held_resumes_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let whole = content("below", 2 << 20);
    let r = reopen(dir.path()).await;
    cut_at(&r, "f", &whole, 1_800_000);
    let (outcome, resumed) = upload_from(&r, "f", &whole, 700_000);
    assert_eq!((outcome, resumed), (ok("f", &whole), 700_000));
    commit(&r, "f", &whole).await;
    assert_eq!(
        std::fs::read(dir.path().join("mirrors/node1/f")).unwrap(),
        whole
    );
}

/// A partial whose prefix is not the node's file's (torn by a crash here)
/// fails the whole file's hash, is dropped, and the file is fetched whole.
#[tokio::test]
async fn a_partial_whose_prefix_differs_fails_the_hash_then_a_full_fetch_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let whole = content("torn", 2 << 20);
    let r = reopen(dir.path()).await;
    cut_at(&r, "f", &whole, 1 << 20);
    drop(r);
    let [partial] = partial_files(dir.path()).try_into().unwrap();
    let mut bytes = std::fs::read(&partial).unwrap();
    bytes[4096] ^= 0xff;
    std::fs::write(&partial, bytes).unwrap();

    let r = reopen(dir.path()).await;
    let hash = ContentHash::of(&whole);
    assert_eq!(r.resume_offset(&p("f"), hash), Some(1 << 20));
    let (outcome, _) = upload_from(&r, "f", &whole, 1 << 20);
    assert_eq!(outcome, failed("f", &whole, TransferFailure::HashMismatch));
    assert_eq!(r.resume_offset(&p("f"), hash), None);
    assert_eq!(staged_files(dir.path()), 0, "the bad partial is gone");
    let (outcome, resumed) = upload_from(&r, "f", &whole, 0);
    assert_eq!((outcome, resumed), (ok("f", &whole), 0));
    commit(&r, "f", &whole).await;
    assert_eq!(
        std::fs::read(dir.path().join("mirrors/node1/f")).unwrap(),
        whole
    );
}

#[tokio::test]
async fn small_transfers_are_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let whole = content("small", RESUMABLE_FROM as usize - 1);
    let r = reopen(dir.path()).await;
    cut_at(&r, "f", &whole, 1000);
    assert_eq!((r.partials(), staged_files(dir.path())), (0, 0));
    assert_eq!(r.resume_offset(&p("f"), ContentHash::of(&whole)), None);
}

/// Partials are bounded: one per path (other content drops it), a dropped
/// fetch drops it, at most MAX_PARTIALS, none past the age limit.
#[tokio::test]
async fn partials_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let r = reopen(dir.path()).await;
    let old = content("old", 2 << 20);
    let new = content("new", 2 << 20);
    cut_at(&r, "f", &old, 1000);
    cut_at(&r, "f", &new, 2000);
    assert_eq!(r.partials(), 1, "the old content's partial went");
    assert_eq!(r.resume_offset(&p("f"), ContentHash::of(&old)), None);
    assert_eq!(r.resume_offset(&p("f"), ContentHash::of(&new)), Some(2000));
    r.discard(&p("f"), ContentHash::of(&new));
    assert_eq!((r.partials(), staged_files(dir.path())), (0, 0));

    let big = content("many", RESUMABLE_FROM as usize);
    for i in 0..=MAX_PARTIALS {
        cut_at(&r, &format!("m{i}"), &big, 10);
        // Distinct modification times (the oldest goes first).
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(r.partials(), MAX_PARTIALS);
    assert_eq!(staged_files(dir.path()), MAX_PARTIALS);
    assert_eq!(r.resume_offset(&p("m0"), ContentHash::of(&big)), None);
    drop(r);

    // Past the age limit, the sweep at open removes them.
    let old_time = SystemTime::now() - PARTIAL_MAX_AGE - Duration::from_secs(60);
    for f in partial_files(dir.path()) {
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(old_time)
            .unwrap();
    }
    let r = reopen(dir.path()).await;
    assert_eq!((r.partials(), staged_files(dir.path())), (0, 0));
}

/// A stray file in the partial directory (not a partial's name) is swept.
#[tokio::test]
async fn the_sweep_removes_what_is_not_a_partial() {
    let dir = tempfile::tempdir().unwrap();
    let r = reopen(dir.path()).await;
    let whole = content("keep", 2 << 20);
    cut_at(&r, "f", &whole, 5000);
    let partial_dir = dir.path().join("staging/node1/partial");
    std::fs::write(partial_dir.join("junk"), b"x").unwrap();
    std::fs::create_dir(partial_dir.join("d")).unwrap();
    assert_eq!(r.sweep_staging().unwrap(), 2);
    assert_eq!(r.partials(), 1);
    assert_eq!(staged_files(dir.path()), 1);
}

/// A partial removed behind the receiver's back is forgotten by the next
/// sweep (not offered for a resume it could not serve).
#[tokio::test]
async fn a_partial_removed_behind_the_receivers_back_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let whole = content("gone", 2 << 20);
    let hash = ContentHash::of(&whole);
    let r = reopen(dir.path()).await;
    cut_at(&r, "f", &whole, 5000);
    assert_eq!(r.resume_offset(&p("f"), hash), Some(5000));
    for f in partial_files(dir.path()) {
        std::fs::remove_file(f).unwrap();
    }
    r.sweep_staging().unwrap();
    assert_eq!((r.resume_offset(&p("f"), hash), r.partials()), (None, 0));
    assert_eq!(upload_from(&r, "f", &whole, 0).0, ok("f", &whole));
}
