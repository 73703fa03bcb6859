//! Hub-side writes against node notices (cases the two-writer simulation
//! found; see `crate::sim`).

use ganglion_core::{RelPath, Timestamp};

use super::*;
use crate::engine::{SinkEvent, TransferFailure};
use crate::fixture::file;
use crate::immutable::ImmutablePaths;

fn p(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

fn dir(path: &str, seq: u64) -> Entry {
    Entry {
        kind: EntryKind::Dir,
        size: 0,
        hash: None,
        mode: 0o755,
        ..file(path, b"", seq)
    }
}

fn applies(actions: &[SinkAction]) -> Vec<Op> {
    actions
        .iter()
        .filter_map(|a| match a {
            SinkAction::Apply(op) => Some(op.clone()),
            _ => None,
        })
        .collect()
}

fn write(engine: &mut SinkEngine, w: HubWrite) -> HubPlan {
    let plan = engine
        .plan_hub_write(&w, None, Timestamp::from_millis(1_800_000_000_000))
        .expect("planned");
    engine.give_way(&plan);
    engine.hub_committed(plan.clone());
    plan
}

/// Seed 42: the hub deleted `b/b` (queued for the node); the node deleted
/// the directory `b`. The node's delete kept `b` at the hub as if the hub
/// had written below it, and the node, applying the hub's delete, had
/// nothing left: an empty `b` stayed at the hub only.
#[test]
fn a_node_delete_of_a_directory_is_not_held_back_by_a_hub_side_delete_below_it() {
    let mut hub = SinkEngine::new(
        vec![dir("b", 1), file("b/b", b"x", 2), file("b/c", b"y", 3)],
        3,
        ImmutablePaths::default(),
    );
    write(&mut hub, HubWrite::Delete { path: p("b/b") });
    let out = hub.handle(SinkEvent::Notice(Notice::Delete {
        path: p("b"),
        seq: 4,
    }));
    let ops = applies(&out);
    assert!(
        ops.iter()
            .any(|op| matches!(op, Op::Delete { path, .. } if *path == p("b"))),
        "the directory goes: {ops:?}"
    );
}

/// What a hub-side put below a directory the node removed keeps: the put
/// and its parents, not its siblings.
#[test]
fn a_node_delete_of_a_directory_keeps_a_hub_side_put_below_it() {
    let mut hub = SinkEngine::new(
        vec![dir("b", 1), file("b/c", b"y", 2)],
        2,
        ImmutablePaths::default(),
    );
    let data = b"hub";
    write(
        &mut hub,
        HubWrite::Put {
            path: p("b/n"),
            hash: ContentHash::of(data),
            size: 3,
            executable: false,
        },
    );
    let out = hub.handle(SinkEvent::Notice(Notice::Delete {
        path: p("b"),
        seq: 3,
    }));
    let deleted: Vec<RelPath> = applies(&out)
        .iter()
        .filter_map(|op| match op {
            Op::Delete { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec![p("b/c")]);
    let _ = TransferFailure::Io;
}

/// A put whose parents the mirror does not hold creates them as
/// directories the index lists (seed 0: the node recorded `b/c` as agreed,
/// the hub's index did not have it); they do not make node changes below
/// them give way.
#[test]
fn a_put_creates_its_missing_parents_as_indexed_directories() {
    let mut hub = SinkEngine::new(Vec::new(), 0, ImmutablePaths::default());
    let plan = write(
        &mut hub,
        HubWrite::Put {
            path: p("b/c/f"),
            hash: ContentHash::of(b"x"),
            size: 1,
            executable: false,
        },
    );
    let kinds: Vec<(String, EntryKind)> = plan
        .ops
        .iter()
        .filter_map(|op| op.entry().map(|e| (e.path.to_string(), e.kind)))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("b".into(), EntryKind::Dir),
            ("b/c".into(), EntryKind::Dir),
            ("b/c/f".into(), EntryKind::File)
        ]
    );
    assert_eq!(plan.replaced(), vec![p("b/c/f")]);
    assert_eq!(hub.entry(&p("b/c")).map(|e| e.kind), Some(EntryKind::Dir));
}

/// Seed 67: the node replaced the directory `a` by a file while a hub-side
/// delete of `a/c/a` was queued. The sink skipped the node's file (as if
/// the node would settle it), but applying a delete of a path that is gone
/// settles nothing: the file never reached the hub.
#[test]
fn a_node_file_over_a_directory_is_applied_despite_a_hub_side_delete_below() {
    let mut hub = SinkEngine::new(
        vec![dir("a", 1), dir("a/c", 2), file("a/c/a", b"x", 3)],
        3,
        ImmutablePaths::default(),
    );
    write(&mut hub, HubWrite::Delete { path: p("a/c/a") });
    let out = hub.handle(SinkEvent::Notice(Notice::Upsert(file("a", b"node", 4))));
    assert!(
        out.iter()
            .any(|a| matches!(a, SinkAction::Fetch { path, .. } if *path == p("a"))),
        "the node's file is fetched: {out:?}"
    );
    // A queued put below still holds it back (the node moves its file
    // aside as a conflict copy when it makes the directory).
    let mut hub = SinkEngine::new(vec![dir("a", 1)], 1, ImmutablePaths::default());
    write(
        &mut hub,
        HubWrite::Put {
            path: p("a/n"),
            hash: ContentHash::of(b"h"),
            size: 1,
            executable: false,
        },
    );
    let out = hub.handle(SinkEvent::Notice(Notice::Upsert(file("a", b"node", 2))));
    assert!(
        applies(&out).is_empty() && !out.iter().any(|a| matches!(a, SinkAction::Fetch { .. })),
        "{out:?}"
    );
}

/// Seed 3: a hub-side move of a directory renames everything below it in
/// the mirror; the index kept the rows below at their old paths (torn) and
/// had none at the new ones. The plan lists them for the commit.
#[test]
fn a_hub_side_move_of_a_directory_lists_the_rows_below_at_their_new_paths() {
    let mut hub = SinkEngine::new(
        vec![dir("c", 1), dir("c/c", 2), file("c/c/a", b"x", 3)],
        3,
        ImmutablePaths::default(),
    );
    let plan = write(
        &mut hub,
        HubWrite::Move {
            from: p("c/c"),
            to: p("d/c"),
        },
    );
    let below: Vec<&RelPath> = plan.moved_below.iter().map(|e| &e.path).collect();
    assert_eq!(below, vec![&p("d/c/a")]);
    assert!(hub.entry(&p("d/c/a")).is_some() && hub.entry(&p("c/c/a")).is_none());
}

/// Seed 130: the node's file replacing the directory `c` was on its way
/// (fetched, then committed) when the hub put `c/c`; committed after the
/// put, it removed the directory with the hub's file in it, before the node
/// had it: the hub's version was gone everywhere. The put waits now.
#[test]
fn a_put_waits_for_a_node_change_replacing_a_parent() {
    let mut hub = SinkEngine::new(vec![dir("c", 1)], 1, ImmutablePaths::default());
    let out = hub.handle(SinkEvent::Notice(Notice::Upsert(file("c", b"node", 2))));
    assert!(
        out.iter().any(|a| matches!(a, SinkAction::Fetch { .. })),
        "{out:?}"
    );
    let put = HubWrite::Put {
        path: p("c/c"),
        hash: ContentHash::of(b"h"),
        size: 1,
        executable: false,
    };
    let now = Timestamp::from_millis(1_800_000_000_000);
    assert_eq!(
        hub.plan_hub_write(&put, None, now).map(|_| ()),
        Err(WriteRefusal::Busy { path: p("c") })
    );
    // A directory on its way is no obstacle.
    let mut hub = SinkEngine::new(Vec::new(), 0, ImmutablePaths::default());
    hub.handle(SinkEvent::Notice(Notice::Upsert(dir("c", 1))));
    assert!(hub.plan_hub_write(&put, None, now).is_ok());
}

/// Seed 259: a node change parked behind an older one above it resumed
/// after a hub-side put at its path was queued, and replaced the put in the
/// mirror before the node had downloaded it (gone from both sides). A
/// resumed notice is checked against the outbox again.
#[test]
fn a_parked_node_change_resumes_against_the_outbox() {
    let mut hub = SinkEngine::new(Vec::new(), 0, ImmutablePaths::default());
    let out = hub.handle(SinkEvent::Notice(Notice::Upsert(dir("a", 1))));
    let mkdir = applies(&out);
    assert_eq!(mkdir.len(), 1, "{out:?}");
    let out = hub.handle(SinkEvent::Notice(Notice::Upsert(file("a/x", b"node", 2))));
    assert!(out.is_empty(), "parked behind a: {out:?}");
    write(
        &mut hub,
        HubWrite::Put {
            path: p("a/x"),
            hash: ContentHash::of(b"hub"),
            size: 3,
            executable: false,
        },
    );
    let out = hub.handle(SinkEvent::Committed {
        done: mkdir,
        failed: Vec::new(),
    });
    assert!(
        !out.iter()
            .any(|a| matches!(a, SinkAction::Fetch { path, .. } if *path == p("a/x"))),
        "the node's a/x meets the hub's put: {out:?}"
    );
}

/// Seed 3866: the node renamed `c` to `C` and the move was on its way to
/// the receiver when the hub put `c`; the move, committed after the put,
/// took the hub's new file to `C` (the index naming the node's content
/// there). A write waits for node changes already being committed at the
/// paths it replaces.
#[test]
fn a_put_waits_for_a_node_move_being_committed_from_its_path() {
    let mut hub = SinkEngine::new(vec![file("c", b"", 1)], 1, ImmutablePaths::default());
    let out = hub.handle(SinkEvent::Notice(Notice::Rename {
        from: p("c"),
        entry: file("C", b"", 2),
    }));
    assert_eq!(applies(&out).len(), 1, "{out:?}");
    let put = HubWrite::Put {
        path: p("c"),
        hash: ContentHash::of(b"hub"),
        size: 3,
        executable: false,
    };
    let now = Timestamp::from_millis(1_800_000_000_000);
    assert_eq!(
        hub.plan_hub_write(&put, None, now).map(|_| ()),
        Err(WriteRefusal::Busy { path: p("c") })
    );
}
