//! Deep trees: the scanner refuses paths beyond a `RelPath`'s bounds (and
//! does not descend below them), and the hub's engine handles a chain of
//! directories as deep as allowed in work linear in its length.

use std::collections::HashMap;
use std::path::PathBuf;

use ganglion_core::RelPath;
use ganglion_core::relpath::{MAX_DEPTH, MAX_PATH};
use ganglion_mirror::engine::{Notice, Op, SinkAction, SinkEngine, SinkEvent};
use ganglion_mirror::scan::{self, SkipReason};
use ganglion_mirror::{Entry, EntryKind, Replica, Version};

fn chain(depth: usize, name: &str) -> String {
    vec![name; depth].join("/")
}

#[test]
fn the_scan_stops_at_the_depth_and_length_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // 40 levels past the depth bound, and a path past the length bound at
    // a modest depth (names of 200 bytes).
    let deep: PathBuf = root.join(chain(MAX_DEPTH + 40, "d"));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("f"), b"x").unwrap();
    let long_name = "l".repeat(200);
    // Made level by level from inside: the whole path passes PATH_MAX.
    std::fs::create_dir(root.join("long")).unwrap();
    std::env::set_current_dir(root.join("long")).unwrap();
    for _ in 0..MAX_PATH / 201 + 5 {
        std::fs::create_dir(&long_name).unwrap();
        std::env::set_current_dir(&long_name).unwrap();
    }
    std::env::set_current_dir(root).unwrap();

    let report = scan::scan(root, &HashMap::new()).unwrap();
    let depth = |e: &Entry| e.path.components().count();
    let deepest = report.entries.iter().map(depth).max().unwrap();
    assert_eq!(deepest, MAX_DEPTH, "mirrored up to the bound");
    assert!(
        report
            .entries
            .iter()
            .all(|e| e.path.as_str().len() <= MAX_PATH)
    );
    // One report per pruned subtree: the first level too deep, the first too long.
    let refused: Vec<&str> = report
        .skipped
        .iter()
        .filter(|s| matches!(s.reason, SkipReason::InvalidPath(_)))
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused
            .iter()
            .any(|p| p.split('/').count() == MAX_DEPTH + 1)
    );
    assert!(
        refused
            .iter()
            .any(|p| p.starts_with("long/") && p.len() > MAX_PATH)
    );
}

fn numbered(path: &str, kind: EntryKind, seq: u64) -> Entry {
    Entry {
        path: RelPath::parse(path).unwrap(),
        kind,
        size: 0,
        mtime_ns: 1,
        mode: 0o755,
        inode: seq,
        dev: 1,
        symlink_target: None,
        hash: None,
        seq,
        version: Version {
            origin: Replica::Node,
            seq,
        },
    }
}

/// Feeds `notices` to a sink in one event, then commits every op it asks
/// for, one group commit per round, until it settles; returns the rounds.
fn settle(k: &mut SinkEngine, notices: Vec<Notice>) -> usize {
    let mut actions = Vec::new();
    for n in notices {
        actions.extend(k.handle(SinkEvent::Notice(n)));
    }
    let mut rounds = 0;
    loop {
        let ops: Vec<Op> = actions
            .iter()
            .filter_map(|a| match a {
                SinkAction::Apply(op) => Some(op.clone()),
                _ => None,
            })
            .collect();
        if ops.is_empty() {
            return rounds;
        }
        rounds += 1;
        actions = k.handle(SinkEvent::Committed {
            done: ops,
            failed: vec![],
        });
    }
}

/// The reported case: a chain of directories, each created at once. Each
/// level waits for the one above to be committed; it used to wait for the
/// level in progress instead, so every commit resumed (and walked up from)
/// every level below it: the notices tried grew with the square of the
/// depth, and each try walked the depth again.
#[test]
fn a_chain_as_deep_as_allowed_costs_work_linear_in_its_depth() {
    let mut k = SinkEngine::default();
    let notices: Vec<Notice> = (1..=MAX_DEPTH)
        .map(|d| Notice::Upsert(numbered(&chain(d, "d"), EntryKind::Dir, d as u64)))
        .collect();
    let started = std::time::Instant::now();
    let rounds = settle(&mut k, notices);
    assert_eq!(k.applied(), MAX_DEPTH as u64);
    assert_eq!(k.entries().count(), MAX_DEPTH);
    assert!(rounds <= MAX_DEPTH, "{rounds} commits");
    let tried = k.notices_tried();
    assert!(
        tried <= 3 * MAX_DEPTH as u64,
        "{tried} notices tried for {MAX_DEPTH} levels"
    );
    // A sanity bound only (a debug build on a loaded machine): the
    // assertion above is the one that counts.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

/// Many siblings in many directories, all at once: each notice is tried a
/// small constant number of times.
#[test]
fn a_wide_tree_costs_work_linear_in_its_size() {
    let mut k = SinkEngine::default();
    let mut notices = Vec::new();
    let mut seq = 0;
    for d in 0..50 {
        seq += 1;
        notices.push(Notice::Upsert(numbered(
            &format!("d{d}"),
            EntryKind::Dir,
            seq,
        )));
        for s in 0..40 {
            seq += 1;
            let path = format!("d{d}/s{s}");
            notices.push(Notice::Upsert(numbered(&path, EntryKind::Dir, seq)));
        }
    }
    let n = notices.len() as u64;
    settle(&mut k, notices);
    assert_eq!(k.applied(), n);
    assert!(
        k.notices_tried() <= 3 * n,
        "{} tried for {n}",
        k.notices_tried()
    );
}
