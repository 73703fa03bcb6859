use super::*;
use crate::engine::SinkEvent;
use crate::fixture::file;
use crate::immutable::ImmutablePaths;

fn p(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

fn dir(path: &str) -> Entry {
    let mut e = file(path, b"", 1);
    e.kind = EntryKind::Dir;
    e.hash = None;
    e.size = 0;
    e
}

fn engine() -> SinkEngine {
    SinkEngine::new(
        vec![
            file("a.txt", b"a", 1),
            dir("d"),
            file("d/x.txt", b"x", 2),
            file("d/y.txt", b"y", 3),
        ],
        3,
        ImmutablePaths::default(),
    )
}

fn put(path: &str, data: &[u8]) -> HubWrite {
    HubWrite::Put {
        path: p(path),
        hash: ContentHash::of(data),
        size: data.len() as u64,
        executable: false,
    }
}

fn now() -> Timestamp {
    Timestamp::from_millis(1_796_408_605_000)
}

/// Plans and "commits" a write (what the driver does after the receiver).
fn write(e: &mut SinkEngine, w: HubWrite) -> HubPlan {
    let plan = e.plan_hub_write(&w, None, now()).unwrap();
    e.hub_committed(plan.clone());
    plan
}

#[test]
fn writes_that_cannot_be_done_are_refused() {
    let e = engine();
    let stale = ContentHash::of(b"stale");
    let refused =
        |w: HubWrite, h: Option<&ContentHash>| e.plan_hub_write(&w, h, now()).unwrap_err();
    assert!(matches!(
        refused(put("a.txt", b"n"), Some(&stale)),
        WriteRefusal::HashMismatch { .. }
    ));
    assert!(matches!(
        refused(put("a.txt/under", b"n"), None),
        WriteRefusal::NotADirectory { .. }
    ));
    assert!(matches!(
        refused(put("d", b"n"), None),
        WriteRefusal::IsADirectory { .. }
    ));
    assert!(matches!(
        refused(HubWrite::Delete { path: p("nope") }, None),
        WriteRefusal::NotFound { .. }
    ));
    let mv = |f: &str, t: &str| HubWrite::Move {
        from: p(f),
        to: p(t),
    };
    assert!(matches!(
        refused(mv("d", "d/e"), None),
        WriteRefusal::IntoItself { .. }
    ));
    assert!(matches!(
        refused(mv("a.txt", "d/x.txt"), None),
        WriteRefusal::Exists { .. }
    ));
    // The current hash makes it go.
    let h = ContentHash::of(b"a");
    assert!(
        e.plan_hub_write(&put("a.txt", b"n"), Some(&h), now())
            .is_ok()
    );
}

#[test]
fn a_newer_write_replaces_a_queued_one_and_keeps_its_base() {
    let mut e = engine();
    let first = write(&mut e, put("a.txt", b"v2"));
    assert_eq!(first.changes[0].base, Base::File(ContentHash::of(b"a")));
    let second = write(&mut e, put("a.txt", b"v3"));
    assert_eq!(second.superseded, vec![first.changes[0].seq]);
    assert_eq!(
        second.changes[0].base,
        Base::File(ContentHash::of(b"a")),
        "what the node holds"
    );
    assert_eq!(e.to_node(), 1);
    assert_eq!(
        e.entry(&p("a.txt")).unwrap().hash,
        Some(ContentHash::of(b"v3"))
    );
    // A delete of a directory replaces what was queued below it.
    let below = write(&mut e, put("d/new.txt", b"n"));
    let del = write(&mut e, HubWrite::Delete { path: p("d") });
    assert!(del.superseded.contains(&below.changes[0].seq));
    assert!(e.entry(&p("d/x.txt")).is_none());
    // The node applied everything up to the delete.
    assert!(e.hub_applied(del.out_seq));
    assert_eq!(e.to_node(), 0);
}

#[test]
fn a_node_change_that_meets_a_queued_hub_change_is_skipped() {
    let mut e = engine();
    write(&mut e, put("a.txt", b"hub"));
    write(&mut e, put("d/hub.txt", b"hub"));
    let acked = e.applied();
    // An edit of a.txt, and one below a path the hub writes: skipped (the
    // node keeps its version as a conflict copy when the change reaches it).
    let mut edit = file("a.txt", b"node", acked + 1);
    edit.seq = acked + 1;
    let out = e.handle(SinkEvent::Notice(crate::engine::Notice::Upsert(edit)));
    assert!(
        out.iter().all(|a| !matches!(a, SinkAction::Fetch { .. })),
        "{out:?}"
    );
    assert_eq!(e.skipped(), 1);
    assert_eq!(e.applied(), acked + 1, "acknowledged all the same");
    // The node deletes d: what the hub wrote there stays, the rest goes.
    let del = crate::engine::Notice::Delete {
        path: p("d"),
        seq: acked + 2,
    };
    assert_eq!(
        e.against_outbox(del),
        vec![
            crate::engine::Notice::Delete {
                path: p("d/y.txt"),
                seq: acked + 2
            },
            crate::engine::Notice::Delete {
                path: p("d/x.txt"),
                seq: acked + 2
            },
        ]
    );
}

#[test]
fn a_new_replica_is_offered_every_file_based_on_nothing() {
    let mut e = engine();
    let queued = write(&mut e, HubWrite::Delete { path: p("a.txt") });
    let plan = e.plan_restore();
    assert_eq!(plan.superseded, vec![queued.changes[0].seq]);
    let offered: Vec<&str> = plan.changes.iter().map(|c| c.op.path().as_str()).collect();
    assert_eq!(offered, ["d/x.txt", "d/y.txt"]);
    assert!(plan.changes.iter().all(|c| c.base == Base::Absent));
}

#[test]
fn a_refused_immutable_change_sends_the_hubs_version_back() {
    let mut e = SinkEngine::new(
        vec![dir("cfg"), file("cfg/rules", b"hub", 1)],
        1,
        ImmutablePaths::new(1, vec!["cfg/rules".into()]).unwrap(),
    );
    let edit = file("cfg/rules", b"node", 2);
    e.handle(SinkEvent::Notice(crate::engine::Notice::Upsert(edit)));
    let paths = e.take_reasserts();
    assert_eq!(paths, vec![p("cfg/rules")]);
    let plan = e.plan_reassert(&paths).unwrap();
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].base, Base::Absent);
    assert!(
        matches!(&plan.changes[0].op, HubOp::Put { hash, .. } if *hash == ContentHash::of(b"hub"))
    );
    assert!(e.take_reasserts().is_empty());
}
