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
