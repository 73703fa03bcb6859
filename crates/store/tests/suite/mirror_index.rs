//! [`MirrorIndex`]: the mirror index, each side's (the node's workspace,
//! every node's mirror at the hub), keyed by mirror id.

use ganglion_core::RelPath;
use ganglion_mirror::engine::Tombstone;
use ganglion_mirror::entry::{ContentHash, EntryKind, Replica};
use ganglion_mirror::fixture::file;
use ganglion_mirror::index::{Batch, MirrorIndex, Summary};

pub async fn round_trips_and_keys_by_mirror(idx: &dyn MirrorIndex) {
    let a = file("a/b.txt", b"hello", 1);
    let batch = Batch {
        upserts: vec![a.clone()],
        seq: Some(1),
        ..Batch::default()
    };
    idx.apply("n1", &batch).await.unwrap();
    idx.apply(
        "n2",
        &Batch {
            upserts: vec![file("z", b"", 7)],
            ..Batch::default()
        },
    )
    .await
    .unwrap();
    let l = idx.load("n1").await.unwrap();
    assert_eq!(l.entries, vec![a]);
    assert_eq!(l.seq, 1);
    assert_eq!(idx.mirrors().await.unwrap(), vec!["n1", "n2"]);
    assert_eq!(idx.list("n2", None).await.unwrap().len(), 1);
}

pub async fn removes_below_takes_exactly_the_subtree(idx: &dyn MirrorIndex) {
    let names = [
        "a", "a/b", "a/b/c", "a-x", "a.b", "a0", "ab", "b/a/c", "a%/x",
    ];
    let upserts = names.iter().map(|n| file(n, b"x", 1)).collect();
    let batch = Batch {
        upserts,
        ..Batch::default()
    };
    idx.apply("n", &batch).await.unwrap();
    let batch = Batch {
        removes_below: vec![RelPath::parse("a").unwrap()],
        ..Batch::default()
    };
    idx.apply("n", &batch).await.unwrap();
    let left: Vec<String> = idx
        .list("n", None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path.to_string())
        .collect();
    assert_eq!(left, ["a", "a%/x", "a-x", "a.b", "a0", "ab", "b/a/c"]);
}

pub async fn tombstones_live_until_acknowledged(idx: &dyn MirrorIndex) {
    idx.apply(
        "n",
        &Batch {
            upserts: vec![file("a", b"x", 1)],
            seq: Some(1),
            ..Batch::default()
        },
    )
    .await
    .unwrap();
    let t = Tombstone {
        path: RelPath::parse("a").unwrap(),
        seq: 2,
        hash: Some(ContentHash::of(b"x")),
    };
    idx.apply(
        "n",
        &Batch {
            tombstones: vec![t.clone()],
            seq: Some(2),
            ..Batch::default()
        },
    )
    .await
    .unwrap();
    let l = idx.load("n").await.unwrap();
    assert!(l.entries.is_empty());
    assert_eq!(l.tombstones, vec![t]);
    idx.set_peer_seq("n", 2).await.unwrap();
    let l = idx.load("n").await.unwrap();
    assert!(l.tombstones.is_empty());
    assert_eq!(l.peer_seq, 2);
}

pub async fn load_round_trips_every_field_and_odd_names(idx: &dyn MirrorIndex) {
    let mut link = file("l%n_k", b"", 3);
    link.kind = EntryKind::Symlink;
    link.hash = None;
    link.symlink_target = Some("../t \"q\"\u{7}\u{e9}".into());
    let mut dir = file("d\u{1F600}", b"", 4);
    dir.kind = EntryKind::Dir;
    dir.hash = None;
    dir.version.origin = Replica::Hub;
    dir.mtime_ns = -5;
    let mut upserts = vec![
        file("a\"b", b"1", 1),
        file("tab\there/new\nline", b"22", 2),
        link,
        dir,
    ];
    upserts.sort_by(|a, b| a.path.cmp(&b.path));
    let t = Tombstone {
        path: RelPath::parse("gone/\u{1}x").unwrap(),
        seq: 9,
        hash: Some(ContentHash::of(b"old")),
    };
    let batch = Batch {
        upserts: upserts.clone(),
        tombstones: vec![t.clone()],
        seq: Some(9),
        peer_seq: Some(2),
        ..Batch::default()
    };
    idx.apply("n", &batch).await.unwrap();
    let l = idx.load("n").await.unwrap();
    assert_eq!(l.entries, upserts);
    assert_eq!(l.tombstones, vec![t]);
    assert_eq!((l.seq, l.peer_seq), (9, 2));
    let none = idx.load("other").await.unwrap();
    assert!(none.entries.is_empty() && none.tombstones.is_empty() && none.seq == 0);
}

/// Files and bytes recounted from the entries, as `summary` must hold them.
async fn recount(idx: &dyn MirrorIndex, mirror: &str) -> (u64, u64) {
    let l = idx.load(mirror).await.unwrap();
    let files = l.entries.iter().filter(|e| e.kind == EntryKind::File);
    (files.clone().count() as u64, files.map(|e| e.size).sum())
}

pub async fn summary_counts_follow_every_change(idx: &dyn MirrorIndex) {
    let check = async |what: &str| {
        let s = idx.summary("n").await.unwrap();
        assert_eq!((s.files, s.bytes), recount(idx, "n").await, "{what}");
    };
    let batch = Batch {
        upserts: ["a", "d/x", "d/y", "d/z/w", "b"]
            .iter()
            .map(|n| file(n, n.as_bytes(), 1))
            .collect(),
        seq: Some(5),
        peer_seq: Some(4),
        ..Batch::default()
    };
    idx.apply("n", &batch).await.unwrap();
    check("inserts").await;
    assert_eq!(idx.summary("n").await.unwrap().files, 5);
    let mut dir = file("b", b"", 2);
    dir.kind = EntryKind::Dir;
    dir.hash = None;
    let batch = Batch {
        upserts: vec![file("a", b"longer content", 2), dir],
        ..Batch::default()
    };
    idx.apply("n", &batch).await.unwrap();
    check("a file grows, another becomes a directory").await;
    let batch = Batch {
        removes: vec![RelPath::parse("d/x").unwrap()],
        removes_below: vec![RelPath::parse("d/z").unwrap()],
        ..Batch::default()
    };
    idx.apply("n", &batch).await.unwrap();
    check("removes").await;
    let t = Tombstone {
        path: RelPath::parse("d/y").unwrap(),
        seq: 6,
        hash: None,
    };
    idx.apply(
        "n",
        &Batch {
            tombstones: vec![t],
            ..Batch::default()
        },
    )
    .await
    .unwrap();
    check("tombstone").await;
    idx.set_peer_seq("n", 6).await.unwrap();
    check("tombstone forgotten").await;
    let s = idx.summary("n").await.unwrap();
    assert_eq!((s.files, s.peer_seq, s.seq), (1, 6, 5));
    idx.drop_mirror("n").await.unwrap();
    assert_eq!(idx.summary("n").await.unwrap(), Summary::default());
}

/// The two-way mirror's rows: the outbox in seq order (superseded and
/// acknowledged rows leave), its counters, open conflicts; all counted in
/// the summary and dropped with the mirror.
pub async fn outbox_and_conflicts_round_trip(idx: &dyn MirrorIndex) {
    use ganglion_core::Timestamp;
    use ganglion_mirror::{Base, Conflict, HubChange, HubOp};
    let p = |s: &str| RelPath::parse(s).unwrap();
    let h = ContentHash::of(b"x");
    let changes = vec![
        HubChange {
            seq: 1,
            op: HubOp::Put {
                path: p("a.txt"),
                hash: h,
                size: 1,
                executable: true,
            },
            base: Base::Absent,
        },
        HubChange {
            seq: 2,
            op: HubOp::Delete { path: p("d") },
            base: Base::Dir,
        },
        HubChange {
            seq: 3,
            op: HubOp::Move {
                from: p("l"),
                to: p("m/n"),
            },
            base: Base::Symlink("../t".into()),
        },
        HubChange {
            seq: 4,
            op: HubOp::Put {
                path: p("odd 'name' %_.txt"),
                hash: h,
                size: 1,
                executable: false,
            },
            base: Base::File(ContentHash::of(b"old")),
        },
    ];
    let conflict = Conflict {
        path: p("a.txt"),
        conflict_path: p("a.sync-conflict-20261204-182325-n1.txt"),
        origin: "n1".into(),
        detected_at: Timestamp::from_millis(1_796_408_605_000),
    };
    idx.apply(
        "n1",
        &Batch {
            outbox: changes.clone(),
            out_seq: Some(4),
            conflicts: vec![conflict.clone()],
            ..Batch::default()
        },
    )
    .await
    .unwrap();
    let l = idx.load("n1").await.unwrap();
    assert_eq!(l.outbox, changes);
    assert_eq!(l.out_seq, 4);
    assert_eq!(l.conflicts, vec![conflict.clone()]);
    let s = idx.summary("n1").await.unwrap();
    assert_eq!((s.to_node, s.conflicts), (4, 1));
    // Superseded and acknowledged rows leave; the conflict is resolved.
    idx.apply(
        "n1",
        &Batch {
            outbox_drop: vec![4],
            out_acked: Some(2),
            conflicts_resolved: vec![conflict.conflict_path.clone()],
            ..Batch::default()
        },
    )
    .await
    .unwrap();
    let l = idx.load("n1").await.unwrap();
    assert_eq!(l.outbox, vec![changes[2].clone()]);
    assert_eq!(l.out_acked, 2);
    assert!(l.conflicts.is_empty());
    assert_eq!(
        idx.summary("n2").await.unwrap().to_node,
        0,
        "keyed by mirror"
    );
    idx.drop_mirror("n1").await.unwrap();
    let l = idx.load("n1").await.unwrap();
    assert!(l.outbox.is_empty() && l.out_seq == 0);
}
