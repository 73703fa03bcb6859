//! Unit and property tests of the two engines (the seeded simulation in
//! [`crate::sim`] drives them together).

use std::collections::BTreeMap;

use ganglion_core::RelPath;
use proptest::prelude::*;

use super::*;
use crate::entry::{ContentHash, Entry, EntryKind, Replica, Version};
use crate::immutable::ImmutablePaths;

fn p(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

fn file(path: &str, data: &[u8], inode: u64) -> Entry {
    Entry {
        path: p(path),
        kind: EntryKind::File,
        size: data.len() as u64,
        mtime_ns: 1,
        mode: 0o644,
        inode,
        dev: 1,
        symlink_target: None,
        hash: Some(ContentHash::of(data)),
        seq: 0,
        version: Version {
            origin: Replica::Node,
            seq: 0,
        },
    }
}

fn dir(path: &str) -> Entry {
    Entry {
        kind: EntryKind::Dir,
        size: 0,
        hash: None,
        ..file(path, b"", 0)
    }
}

fn sends(actions: &[SourceAction]) -> Vec<Notice> {
    actions
        .iter()
        .filter_map(|a| match a {
            SourceAction::Send(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn connected_source() -> SourceEngine {
    let mut s = SourceEngine::default();
    s.handle(SourceEvent::Connected { hub_applied: 0 });
    s
}

#[test]
fn first_scan_sends_everything_and_a_repeat_sends_nothing() {
    let mut s = connected_source();
    let tree = vec![
        dir("src"),
        file("src/a.rs", b"fn a", 1),
        file("empty", b"", 2),
    ];
    let a = s.handle(SourceEvent::Observed(Observation::Full(tree.clone())));
    assert!(
        matches!(a[0], SourceAction::Record { seq: 3, .. }),
        "record before send: {a:?}"
    );
    assert_eq!(sends(&a).len(), 3);
    assert!(
        s.handle(SourceEvent::Observed(Observation::Full(tree)))
            .is_empty()
    );
}

/// Found by the two-writer simulation (seed 22): the node's index was lost
/// and a scan numbered the tree 1, 2, … before it reconnected to a hub that
/// had applied up to 6 — those numbers were taken as acknowledged and the
/// tree never reached the hub.
#[test]
fn a_lost_index_scanned_before_reconnecting_resends_everything() {
    let mut s = SourceEngine::default();
    let tree = vec![dir("A"), file("A/a", b"x", 1), file("b", b"y", 2)];
    s.handle(SourceEvent::Observed(Observation::Full(tree)));
    assert_eq!(s.seq(), 3);
    let a = s.handle(SourceEvent::Connected { hub_applied: 6 });
    let sent = sends(&a);
    assert_eq!(sent.len(), 3, "every entry is sent again: {a:?}");
    assert!(sent.iter().all(|n| n.seq() > 6), "{sent:?}");
    assert_eq!(s.pending(), 3);
}

/// A hub-side move of a directory in which the node had a change not yet
/// acknowledged (the hub skipped it: the move was queued): the change stays
/// the node's at its new path and goes with the next resend, not recorded
/// as agreed (it would never reach the hub).
#[test]
fn a_local_change_carried_by_a_hub_side_move_is_sent_again() {
    let mut s = connected_source();
    s.handle(SourceEvent::Observed(Observation::Full(vec![dir("A")])));
    s.handle(SourceEvent::Ack { seq: 1 });
    s.handle(SourceEvent::Observed(Observation::Partial {
        upserts: vec![file("A/new", b"n", 5)],
        removed: Vec::new(),
    }));
    assert_eq!(s.pending(), 1);
    let moved = (p("A"), p("B"));
    let a = s.hub_applied(vec![dir("B")], &[p("A")], Some((&moved.0, &moved.1)), 1);
    assert!(sends(&a).is_empty(), "nothing sent before Applied: {a:?}");
    let again = s.resend(&[]);
    let sent = sends(&again);
    assert_eq!(sent.len(), 1, "{again:?}");
    assert!(matches!(&sent[0], Notice::Upsert(e) if e.path == p("B/new")));
    assert_eq!(s.pending(), 1);
}

#[test]
fn a_stat_only_change_is_recorded_but_not_sent() {
    let mut s = connected_source();
    s.handle(SourceEvent::Observed(Observation::Full(vec![file(
        "a", b"x", 1,
    )])));
    let mut touched = file("a", b"x", 1);
    touched.mtime_ns = 99;
    let a = s.handle(SourceEvent::Observed(Observation::Full(vec![touched])));
    assert_eq!(a.len(), 1);
    assert!(
        matches!(&a[0], SourceAction::Record { entries, .. } if entries[0].mtime_ns == 99 && entries[0].seq == 1)
    );
}

#[test]
fn many_changes_are_recorded_and_sent_in_parts_each_recorded_before_it_is_sent() {
    let mut s = connected_source().with_record_part(2);
    s.handle(SourceEvent::Observed(Observation::Full(vec![
        file("a", b"a", 1),
        file("b", b"b", 2),
    ])));
    // `a` only touched (stat-only, keeps seq 1), `b` gone, three new files.
    let mut touched = file("a", b"a", 1);
    touched.mtime_ns = 99;
    let a = s.handle(SourceEvent::Observed(Observation::Full(vec![
        touched,
        file("c", b"c", 3),
        file("d", b"d", 4),
        file("e", b"e", 5),
    ])));
    // Notices: delete b (3), c (4), d (5), e (6): parts of two, then up to four.
    let shape: Vec<String> = a
        .iter()
        .map(|x| match x {
            SourceAction::Record {
                entries,
                tombstones,
                seq,
            } => {
                let e: Vec<String> = entries
                    .iter()
                    .map(|e| format!("{}@{}", e.path, e.seq))
                    .collect();
                let t: Vec<String> = tombstones
                    .iter()
                    .map(|t| format!("-{}@{}", t.path, t.seq))
                    .collect();
                format!("record {seq} [{}]", [e, t].concat().join(" "))
            }
            SourceAction::Send(n) => format!("send {}@{}", n.path(), n.seq()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        shape,
        [
            "record 4 [a@1 c@4 -b@3]",
            "send b@3",
            "send c@4",
            "record 6 [d@5 e@6]",
            "send d@5",
            "send e@6",
        ]
    );
    // Disconnected: the same parts, nothing sent.
    s.handle(SourceEvent::Disconnected);
    let a = s.handle(SourceEvent::Observed(Observation::Full(vec![
        file("x", b"x", 7),
        file("y", b"y", 8),
        file("z", b"z", 9),
    ])));
    assert!(sends(&a).is_empty());
    let seqs: Vec<u64> = a
        .iter()
        .map(|x| match x {
            SourceAction::Record { seq, .. } => *seq,
            other => panic!("only records while disconnected: {other:?}"),
        })
        .collect();
    // 7 changes (delete a c d e, new x y z: seqs 7..=13) in parts of 2, 4, 1;
    // the last part ends at the engine's seq.
    assert_eq!(seqs, [8, 12, 13]);
    assert_eq!(s.seq(), 13);
}

#[test]
fn a_rename_is_recognised_by_hash() {
    let mut s = connected_source();
    s.handle(SourceEvent::Observed(Observation::Full(vec![file(
        "old", b"content", 1,
    )])));
    let a = s.handle(SourceEvent::Observed(Observation::Full(vec![file(
        "new", b"content", 1,
    )])));
    assert_eq!(
        sends(&a),
        vec![Notice::Rename {
            from: p("old"),
            entry: s.entry(&p("new")).unwrap().clone()
        }]
    );
    // After a restart the tombstone and the entry still pair up.
    assert!(matches!(s.changes_since(1)[0], Notice::Rename { .. }));
}

#[test]
fn a_removed_directory_sends_deletes_deepest_first() {
    let mut s = connected_source();
    s.handle(SourceEvent::Observed(Observation::Full(vec![
        dir("d"),
        dir("d/e"),
        file("d/e/f", b"1", 1),
    ])));
    let a = s.handle(SourceEvent::Observed(Observation::Partial {
        upserts: vec![],
        removed: vec![p("d")],
    }));
    let paths: Vec<String> = sends(&a).iter().map(|n| n.path().to_string()).collect();
    assert_eq!(paths, vec!["d/e/f", "d/e", "d"]);
}

#[test]
fn a_rename_out_of_a_deleted_directory_goes_before_the_delete() {
    // `mv d/e/f d/g; rm -r d/e`: the hub must move its copy before deleting d/e.
    let mut s = connected_source();
    s.handle(SourceEvent::Observed(Observation::Full(vec![
        dir("d"),
        dir("d/e"),
        file("d/e/f", b"content", 7),
    ])));
    let a = s.handle(SourceEvent::Observed(Observation::Partial {
        upserts: vec![file("d/g", b"content", 7)],
        removed: vec![p("d/e")],
    }));
    let n = sends(&a);
    assert!(
        matches!(&n[..], [Notice::Rename { from, entry }, Notice::Delete { path, .. }]
            if from.as_str() == "d/e/f" && entry.path.as_str() == "d/g" && path.as_str() == "d/e"),
        "{n:?}"
    );
    assert!(n[0].seq() < n[1].seq());
    // The same order after a restart.
    assert!(matches!(s.changes_since(1)[0], Notice::Rename { .. }));
}

#[test]
fn reconnect_cost_is_proportional_to_changes_not_tree_size() {
    let mut s = connected_source();
    let tree: Vec<Entry> = (0..1000)
        .map(|i| file(&format!("f{i:04}"), format!("{i}").as_bytes(), i))
        .collect();
    s.handle(SourceEvent::Observed(Observation::Full(tree.clone())));
    s.handle(SourceEvent::Ack { seq: 1000 });
    s.handle(SourceEvent::Disconnected);
    let mut changed = tree;
    changed[7] = file("f0007", b"new", 7);
    changed.remove(500);
    changed.push(file("zzz", b"added", 5000));
    let a = s.handle(SourceEvent::Observed(Observation::Full(changed)));
    assert!(sends(&a).is_empty(), "nothing is sent while disconnected");
    let a = s.handle(SourceEvent::Connected { hub_applied: 1000 });
    assert_eq!(sends(&a).len(), 3);
    assert_eq!(s.pending(), 3);
}

#[test]
fn uploads_only_what_is_still_current() {
    let mut s = connected_source();
    s.handle(SourceEvent::Observed(Observation::Full(vec![file(
        "a", b"v1", 1,
    )])));
    let a = s.handle(SourceEvent::Need {
        path: p("a"),
        hash: ContentHash::of(b"v1"),
    });
    assert!(matches!(&a[..], [SourceAction::Upload { size: 2, .. }]));
    // A second request while the upload runs is not a second upload.
    assert!(
        s.handle(SourceEvent::Need {
            path: p("a"),
            hash: ContentHash::of(b"v1")
        })
        .is_empty()
    );
    let a = s.handle(SourceEvent::UploadFailed {
        path: p("a"),
        hash: ContentHash::of(b"v1"),
        failure: TransferFailure::SourceChanged,
    });
    assert_eq!(a, vec![SourceAction::Rescan { path: p("a") }]);
    assert!(
        s.handle(SourceEvent::Need {
            path: p("a"),
            hash: ContentHash::of(b"old")
        })
        .is_empty()
    );
}

fn numbered(mut e: Entry, seq: u64) -> Entry {
    e.seq = seq;
    e.version = Version {
        origin: Replica::Node,
        seq,
    };
    e
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

#[test]
fn fetch_stage_commit_ack() {
    let mut k = SinkEngine::default();
    let e = numbered(file("a", b"data", 1), 1);
    let a = k.handle(SinkEvent::Notice(Notice::Upsert(e.clone())));
    assert_eq!(
        a,
        vec![SinkAction::Fetch {
            path: p("a"),
            hash: ContentHash::of(b"data"),
            size: 4
        }]
    );
    let d = numbered(dir("d"), 2);
    let a = k.handle(SinkEvent::Notice(Notice::Upsert(d.clone())));
    assert_eq!(applies(&a), vec![Op::Mkdir { entry: d.clone() }]);
    let a = k.handle(SinkEvent::Committed {
        done: vec![Op::Mkdir { entry: d }],
        failed: vec![],
    });
    assert!(
        !a.iter().any(|x| matches!(x, SinkAction::Ack { .. })),
        "seq 1 is not durable yet: {a:?}"
    );
    let a = k.handle(SinkEvent::Staged {
        path: p("a"),
        hash: ContentHash::of(b"data"),
    });
    let op = applies(&a).remove(0);
    let a = k.handle(SinkEvent::Committed {
        done: vec![op],
        failed: vec![],
    });
    assert_eq!(a, vec![SinkAction::Ack { seq: 2 }]);
    assert_eq!(k.stats().files, 1);
    // The same notice again (a resend) is stale.
    assert!(k.handle(SinkEvent::Notice(Notice::Upsert(e))).is_empty());
}

#[test]
fn known_content_is_copied_not_fetched() {
    let have = numbered(file("a", b"shared", 1), 1);
    let mut k = SinkEngine::new(vec![have], 1, ImmutablePaths::default());
    let a = k.handle(SinkEvent::Notice(Notice::Upsert(numbered(
        file("b", b"shared", 2),
        2,
    ))));
    assert!(
        matches!(&applies(&a)[..], [Op::Write { content: Content::Copy(from), .. }] if *from == p("a"))
    );
    let a = k.handle(SinkEvent::Notice(Notice::Rename {
        from: p("a"),
        entry: numbered(file("c", b"shared", 3), 3),
    }));
    assert!(matches!(&applies(&a)[..], [Op::Move { from, .. }] if *from == p("a")));
}

#[test]
fn failed_fetches_are_retried_with_backoff() {
    let mut k = SinkEngine::default();
    k.handle(SinkEvent::Notice(Notice::Upsert(numbered(
        file("a", b"x", 1),
        1,
    ))));
    let h = ContentHash::of(b"x");
    let a = k.handle(SinkEvent::FetchFailed {
        path: p("a"),
        hash: h,
        failure: TransferFailure::DiskFull,
    });
    assert!(matches!(&a[..], [SinkAction::RetryLater { after, .. }] if *after == backoff(1)));
    let a = k.handle(SinkEvent::RetryDue { path: p("a") });
    assert!(matches!(&a[..], [SinkAction::Fetch { .. }]));
}

#[test]
fn immutable_paths_are_refused_at_notice_and_before_commit() {
    let imm = ImmutablePaths::new(1, vec!["locked/".into()]).unwrap();
    let mut k = SinkEngine::new(vec![], 0, imm);
    let a = k.handle(SinkEvent::Notice(Notice::Upsert(numbered(
        file("locked/x", b"1", 1),
        1,
    ))));
    assert_eq!(
        a,
        vec![SinkAction::Ack { seq: 1 }],
        "refused, counted, and acknowledged"
    );
    assert_eq!(k.stats().refused, 1);
    // Queued before the policy changed, refused at commit.
    let a = k.handle(SinkEvent::Notice(Notice::Upsert(numbered(dir("later"), 2))));
    let ops = applies(&a);
    k.handle(SinkEvent::SetImmutable(
        k.immutable().with_added("later").unwrap(),
    ));
    assert!(k.admit(ops).is_empty());
    assert_eq!(k.stats().refused, 2);
    // An older policy version never replaces a newer one.
    k.handle(SinkEvent::SetImmutable(ImmutablePaths::default()));
    assert!(k.is_immutable(&p("later"), true));
}

fn link(path: &str, target: &str) -> Entry {
    Entry {
        kind: EntryKind::Symlink,
        size: target.len() as u64,
        hash: None,
        symlink_target: Some(target.into()),
        ..file(path, b"", 0)
    }
}

/// Commits every op the sink queues, one group commit per round, against a
/// model of the mirror's tree (parents created as directories, a file or link
/// replaces the subtree at its path); fetches are never answered.
fn commit_until_quiet(
    k: &mut SinkEngine,
    mut actions: Vec<SinkAction>,
    tree: &mut BTreeMap<RelPath, EntryKind>,
    all: &mut Vec<SinkAction>,
) {
    for _ in 0..100 {
        all.extend(actions.iter().cloned());
        let ops = applies(&actions);
        if ops.is_empty() {
            return;
        }
        for op in &ops {
            let path = op.path().clone();
            tree.retain(|k, _| *k == path || !k.starts_with(&path));
            match op.entry() {
                None => {
                    tree.remove(&path);
                }
                Some(e) => {
                    let mut cur = path.parent();
                    while let Some(d) = cur {
                        tree.insert(d.clone(), EntryKind::Dir);
                        cur = d.parent();
                    }
                    tree.insert(path, e.kind);
                }
            }
        }
        actions = k.handle(SinkEvent::Committed {
            done: ops,
            failed: vec![],
        });
    }
    panic!("the sink did not settle");
}

/// Seeds 1028, 1988, 2080, 2190, 2364, 3533, 4092 and 4593 of the simulation,
/// shrunk: a fetch is in progress below `c` when `c` becomes a link, and the
/// deletes that would have cancelled it wait behind an older `mkdir c/c`.
/// The link must not overtake them (or, once durable, make them obsolete
/// while the fetch lives on): the node no longer has the content, so the
/// fetch would never end and nothing after it would be acknowledged.
#[test]
fn a_path_becoming_a_link_supersedes_a_fetch_below_it() {
    let mut k = SinkEngine::default();
    let mut tree = BTreeMap::new();
    let mut all = Vec::new();
    let x = ContentHash::of(b"x");
    let send = |k: &mut SinkEngine, n: Notice| k.handle(SinkEvent::Notice(n));
    let a = send(&mut k, Notice::Upsert(numbered(file("c/c/a", b"x", 1), 1)));
    assert!(matches!(&a[..], [SinkAction::Fetch { hash, .. }] if *hash == x));
    all.extend(a);
    let mkdir_c = send(&mut k, Notice::Upsert(numbered(dir("c"), 2)));
    assert_eq!(applies(&mkdir_c).len(), 1);
    for n in [
        Notice::Upsert(numbered(dir("c/c"), 3)),
        Notice::Delete {
            path: p("c/c/a"),
            seq: 4,
        },
        Notice::Delete {
            path: p("c/c"),
            seq: 5,
        },
        Notice::Upsert(numbered(link("c", "/etc/passwd"), 6)),
    ] {
        let a = send(&mut k, n);
        assert!(applies(&a).is_empty(), "waits behind mkdir c: {a:?}");
        all.extend(a);
    }
    commit_until_quiet(&mut k, mkdir_c, &mut tree, &mut all);

    assert!(
        all.contains(&SinkAction::Discard {
            path: p("c/c/a"),
            hash: x
        }),
        "the fetch below the link is dropped: {all:?}"
    );
    assert_eq!(k.stats().pending, 0, "{}", k.debug_pending());
    assert_eq!(k.applied(), 6, "{}", k.debug_pending());
    assert_eq!(tree, BTreeMap::from([(p("c"), EntryKind::Symlink)]));
    assert_eq!(k.entries().map(|e| &e.path).collect::<Vec<_>>(), [&p("c")]);
}

/// A path becoming a link waits for the commits below it (a failure there
/// would otherwise come back as a retry landing after the link), and while
/// it commits, an older change below it (say a resent delete) is obsolete.
#[test]
fn a_subtree_replacement_waits_for_commits_below_and_obsoletes_older_changes() {
    let d = numbered(dir("d"), 1);
    let mut k = SinkEngine::new(vec![d], 1, ImmutablePaths::default());
    let x = numbered(file("d/x", b"", 1), 2);
    let a = k.handle(SinkEvent::Notice(Notice::Upsert(x)));
    let below = applies(&a);
    assert!(matches!(&below[..], [Op::Write { .. }]), "{a:?}");
    let l = numbered(link("d", "t"), 4);
    let a = k.handle(SinkEvent::Notice(Notice::Upsert(l.clone())));
    assert!(applies(&a).is_empty(), "waits for d/x: {a:?}");
    // d/x fails to commit: its retry is superseded by the link and
    // cancelled, and the link goes.
    let a = k.handle(SinkEvent::Committed {
        done: vec![],
        failed: vec![(below[0].clone(), TransferFailure::DiskFull)],
    });
    let link_op = Op::Symlink { entry: l };
    assert_eq!(applies(&a), vec![link_op.clone()], "{a:?}");
    let a = k.handle(SinkEvent::RetryDue { path: p("d/x") });
    assert!(
        a.is_empty(),
        "the retry below the link was cancelled: {a:?}"
    );
    k.handle(SinkEvent::Notice(Notice::Upsert(numbered(dir("e"), 5))));
    // While the link commits, an older change below it is not started.
    let a = k.handle(SinkEvent::Notice(Notice::Delete {
        path: p("d/x"),
        seq: 3,
    }));
    assert!(applies(&a).is_empty(), "{a:?}");
    let a = k.handle(SinkEvent::Committed {
        done: applies(&a).into_iter().chain([link_op]).collect(),
        failed: vec![],
    });
    assert!(
        !a.iter().any(|x| matches!(x, SinkAction::Apply(_))),
        "{a:?}"
    );
    assert_eq!(k.stats().pending, 1, "only mkdir e: {}", k.debug_pending());
    assert_eq!(k.applied(), 4);
}

/// Seed 68985 of the simulation, shrunk: a rename whose source is still
/// being committed degrades to delete + upsert; the connection drops, the
/// upsert half commits and the delete half (queued behind the source's
/// commit) is lost. The node resends the rename: its target is already up to
/// date, but its source must still go before the rename is acknowledged.
/// (Acknowledged with the source left behind, the node never sends that
/// delete again, and a later delete and re-create of the parent reaches the
/// hub as one directory upsert: the stale file stays in the mirror for good.)
#[test]
fn a_resent_rename_whose_target_landed_still_removes_its_source() {
    let base = vec![numbered(dir("a"), 1), numbered(dir("b"), 2)];
    let mut k = SinkEngine::new(base, 2, ImmutablePaths::default());
    let src = numbered(file("a/x", b"", 1), 3);
    let rename = Notice::Rename {
        from: p("a/x"),
        entry: numbered(file("b/y", b"", 1), 4),
    };
    let a = k.handle(SinkEvent::Notice(Notice::Upsert(src)));
    let mut ops = applies(&a);
    assert_eq!(ops.len(), 1, "{a:?}");
    let a = k.handle(SinkEvent::Notice(rename.clone()));
    let target = applies(&a);
    assert!(
        matches!(&target[..], [Op::Write { entry, .. }] if entry.path == p("b/y")),
        "degraded: the source is still committing: {a:?}"
    );
    ops.extend(target);
    k.handle(SinkEvent::Disconnected);
    let a = k.handle(SinkEvent::Committed {
        done: ops,
        failed: vec![],
    });
    assert!(a.is_empty(), "nothing above 2 is acknowledged: {a:?}");
    k.handle(SinkEvent::Connected);

    let a = k.handle(SinkEvent::Notice(rename));
    assert!(
        !a.contains(&SinkAction::Ack { seq: 4 }),
        "acknowledged with a/x still in the mirror: {a:?}"
    );
    let mut tree = BTreeMap::from([
        (p("a"), EntryKind::Dir),
        (p("a/x"), EntryKind::File),
        (p("b"), EntryKind::Dir),
        (p("b/y"), EntryKind::File),
    ]);
    let mut all = Vec::new();
    commit_until_quiet(&mut k, a, &mut tree, &mut all);
    assert!(all.contains(&SinkAction::Ack { seq: 4 }), "{all:?}");
    assert_eq!(k.applied(), 4, "{}", k.debug_pending());
    assert_eq!(
        tree,
        BTreeMap::from([
            (p("a"), EntryKind::Dir),
            (p("b"), EntryKind::Dir),
            (p("b/y"), EntryKind::File),
        ])
    );
    assert_eq!(k.entry(&p("a/x")), None);
}

/// Applies notices to a map the way the hub would, ignoring content transfer.
fn apply(tree: &mut BTreeMap<RelPath, Entry>, n: &Notice) {
    match n {
        Notice::Upsert(e) => {
            tree.insert(e.path.clone(), e.clone());
        }
        Notice::Delete { path, .. } => tree.retain(|k, _| !k.starts_with(path)),
        Notice::Rename { from, entry } => {
            tree.remove(from);
            tree.insert(entry.path.clone(), entry.clone());
        }
    }
}

fn arb_tree() -> impl Strategy<Value = Vec<Entry>> {
    proptest::collection::btree_map(0u8..6, 0u8..3, 0..6).prop_map(|m| {
        let mut out = vec![dir("d")];
        for (name, content) in m {
            out.push(file(&format!("d/{name}"), &[content], u64::from(name)));
        }
        out
    })
}

proptest! {
    /// Whatever the sequence of scans, replaying the changes the hub has not
    /// acknowledged onto what it has reproduces the node's last tree.
    #[test]
    fn changes_since_replay_the_tree(trees in proptest::collection::vec(arb_tree(), 1..6), ack_at in 0usize..6) {
        let mut s = connected_source();
        let mut hub = BTreeMap::new();
        for (i, t) in trees.iter().enumerate() {
            let actions = s.handle(SourceEvent::Observed(Observation::Full(t.clone())));
            if i < ack_at {
                for n in sends(&actions) {
                    apply(&mut hub, &n);
                }
                s.handle(SourceEvent::Ack { seq: s.seq() });
            }
        }
        for n in s.changes_since(s.acked()) {
            apply(&mut hub, &n);
        }
        let want: Vec<(RelPath, Option<ContentHash>)> = trees.last().unwrap().iter().map(|e| (e.path.clone(), e.hash)).collect();
        let got: Vec<(RelPath, Option<ContentHash>)> = hub.values().map(|e| (e.path.clone(), e.hash)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn backoff_is_bounded_and_monotonic(a in 0u32..100) {
        prop_assert!(backoff(a) <= backoff(a + 1));
        prop_assert!(backoff(a) <= std::time::Duration::from_secs(30));
    }
}
