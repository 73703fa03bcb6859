//! The SQLite index's own tests: statement sizes, query plans, files
//! reopened, upgrades over older schemas. Its behaviour as a
//! [`MirrorIndex`] is the store suite's (`tests/suite/mirror_index.rs`).

use ganglion_core::RelPath;
use ganglion_mirror::entry::ContentHash;
use ganglion_mirror::fixture::file;
use sqlx::sqlite::SqliteConnectOptions;

use super::*;

/// Batches larger than one statement's rows: every row lands, a path
/// listed twice ends as its last row, deletes reach every chunk.
#[tokio::test]
async fn batches_span_several_statements() {
    let idx = SqliteMirrorIndex::open_in_memory().await.unwrap();
    let n = ROWS_PER_STATEMENT * 2 + 7;
    let mut upserts: Vec<Entry> = (0..n).map(|i| file(&format!("d{i}/f"), b"x", 1)).collect();
    upserts.push(file("d0/f", b"last", 2));
    idx.apply(
        "other",
        &Batch {
            upserts: upserts.clone(),
            ..Batch::default()
        },
    )
    .await
    .unwrap();
    idx.apply(
        "n",
        &Batch {
            upserts,
            ..Batch::default()
        },
    )
    .await
    .unwrap();
    let got = idx
        .get("n", &RelPath::parse("d0/f").unwrap())
        .await
        .unwrap();
    assert_eq!(got.unwrap().hash, Some(ContentHash::of(b"last")));
    assert_eq!(idx.list("n", None).await.unwrap().len(), n);
    // Remove every even file by path, everything below every odd directory.
    let removes = (0..n)
        .step_by(2)
        .map(|i| RelPath::parse(&format!("d{i}/f")).unwrap())
        .collect();
    let removes_below = (1..n)
        .step_by(2)
        .map(|i| RelPath::parse(&format!("d{i}")).unwrap())
        .collect();
    idx.apply(
        "n",
        &Batch {
            removes,
            removes_below,
            ..Batch::default()
        },
    )
    .await
    .unwrap();
    assert!(idx.list("n", None).await.unwrap().is_empty());
    assert_eq!(
        idx.list("other", None).await.unwrap().len(),
        n,
        "other mirror untouched"
    );
}

/// The lines of an `EXPLAIN QUERY PLAN` query's answer.
async fn query_plan<'q>(
    idx: &SqliteMirrorIndex,
    q: sqlx::query::Query<'q, Sqlite, <Sqlite as sqlx::Database>::Arguments<'q>>,
) -> String {
    let rows = q.fetch_all(&idx.pool).await.unwrap();
    let lines: Vec<String> = rows.iter().map(|r| r.get("detail")).collect();
    lines.join("\n")
}

/// The subtree delete seeks the primary key per path; it never scans the
/// table (that made each file of a sync cost O(files)).
#[tokio::test]
async fn removes_below_searches_the_primary_key() {
    let idx = SqliteMirrorIndex::open_in_memory().await.unwrap();
    let sql = format!("EXPLAIN QUERY PLAN {}", removes_below_sql(3));
    let mut q = sqlx::query(&sql).bind("n");
    for p in ["a", "b", "c"] {
        q = q.bind(format!("{p}/")).bind(format!("{p}0"));
    }
    let plan = query_plan(&idx, q.bind("n")).await;
    assert!(
        !plan.contains("SCAN e") && !plan.contains("SCAN mirror_entries"),
        "{plan}"
    );
    assert!(plan.contains("SEARCH e USING PRIMARY KEY"), "{plan}");
}

/// A live row is written to the table alone (no secondary index to keep),
/// and forgetting acknowledged tombstones searches an index of
/// tombstones, not the mirror's rows.
#[tokio::test]
async fn live_rows_carry_no_secondary_index_and_tombstones_have_one() {
    let idx = SqliteMirrorIndex::open_in_memory().await.unwrap();
    let indexes: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'mirror_entries' \
         AND sql IS NOT NULL",
    )
    .fetch_all(&idx.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(indexes, vec!["mirror_tombstones_by_seq"]);
    let (partial,): (String,) =
        sqlx::query_as("SELECT sql FROM sqlite_schema WHERE name = 'mirror_tombstones_by_seq'")
            .fetch_one(&idx.pool)
            .await
            .unwrap();
    assert!(partial.ends_with("WHERE deleted = 1"), "{partial}");
    let sql = format!("EXPLAIN QUERY PLAN {FORGET_TOMBSTONES}");
    let plan = query_plan(&idx, sqlx::query(&sql).bind("n").bind(5_i64)).await;
    assert!(
        plan.starts_with("SEARCH mirror_entries USING")
            && plan.contains("INDEX mirror_tombstones_by_seq (mirror_id=? AND seq<?)")
            && !plan.contains('\n'),
        "{plan}"
    );
}

#[tokio::test]
async fn persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    {
        let idx = SqliteMirrorIndex::open(&path).await.unwrap();
        let batch = Batch {
            upserts: (0..500).map(|i| file(&format!("f{i}"), b"x", i)).collect(),
            ..Batch::default()
        };
        idx.apply("n", &batch).await.unwrap();
    }
    let idx = SqliteMirrorIndex::open(&path).await.unwrap();
    assert_eq!(idx.list("n", None).await.unwrap().len(), 500);
}

/// An index file migrated by the first `n` migrations only (what an older
/// version left), opened without running the others.
async fn written_by_first_migrations(path: &Path, n: usize) -> SqliteMirrorIndex {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
    let mut first = sqlx::migrate!("./migrations/mirror_index");
    first.migrations = std::borrow::Cow::Owned(first.migrations[..n].to_vec());
    first.run(&pool).await.unwrap();
    SqliteMirrorIndex { pool }
}

/// A hub upgraded over an index written before the counters existed
/// opens it (the migration backfills them) and loads the same entries.
#[tokio::test]
async fn index_written_before_the_counters_opens_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let entries: Vec<Entry> = (0..300)
        .map(|i| file(&format!("f{i:03}"), &vec![b'x'; i], i as u64 + 1))
        .collect();
    {
        // What the previous version wrote: its statements, its schema.
        let old = written_by_first_migrations(&path, 1).await;
        let batch = Batch {
            upserts: entries.clone(),
            seq: Some(300),
            peer_seq: Some(300),
            ..Batch::default()
        };
        old.apply("n", &batch).await.unwrap();
        old.pool.close().await;
    }
    let idx = SqliteMirrorIndex::open(&path).await.unwrap();
    let s = idx.summary("n").await.unwrap();
    let bytes: u64 = (0..300u64).sum();
    assert_eq!((s.files, s.bytes, s.peer_seq), (300, bytes, 300));
    assert_eq!(idx.load("n").await.unwrap().entries, entries);
    idx.apply(
        "n",
        &Batch {
            removes: vec![RelPath::parse("f299").unwrap()],
            ..Batch::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(idx.summary("n").await.unwrap().files, 299);
}

/// The hub's acknowledgement records its time with the sequence, and both
/// outlive a reopen (a hub restart showed last sync "never"); the node's
/// own record of the hub's acknowledgement leaves the time alone.
#[tokio::test]
async fn the_acknowledgement_time_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let at = Timestamp::from_millis(1_780_000_000_123);
    {
        let idx = SqliteMirrorIndex::open(&path).await.unwrap();
        let batch = Batch {
            upserts: vec![file("a", b"x", 1)],
            ..Batch::default()
        };
        idx.apply("n", &batch).await.unwrap();
        assert_eq!(idx.summary("n").await.unwrap().synced_at, None);
        idx.acknowledge("n", 1, at).await.unwrap();
        idx.set_peer_seq("other", 4).await.unwrap();
        idx.pool.close().await;
    }
    let idx = SqliteMirrorIndex::open(&path).await.unwrap();
    let s = idx.summary("n").await.unwrap();
    assert_eq!((s.peer_seq, s.files, s.synced_at), (1, 1, Some(at)));
    assert_eq!(idx.summary("other").await.unwrap().synced_at, None);
    idx.set_peer_seq("n", 2).await.unwrap();
    let s = idx.summary("n").await.unwrap();
    assert_eq!((s.peer_seq, s.synced_at), (2, Some(at)));
    let later = Timestamp::from_millis(at.millis() + 5);
    idx.acknowledge("n", 3, later).await.unwrap();
    assert_eq!(idx.summary("n").await.unwrap().synced_at, Some(later));
    idx.drop_mirror("n").await.unwrap();
    assert_eq!(idx.summary("n").await.unwrap(), Summary::default());
}

/// A hub upgraded over an index written before the acknowledgement time
/// existed opens it: counts and sequence kept, the time unknown (`None`)
/// until the next acknowledgement, which it then keeps.
#[tokio::test]
async fn index_written_before_the_sync_time_opens_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    {
        let old = written_by_first_migrations(&path, 3).await;
        let batch = Batch {
            upserts: vec![file("a", b"xy", 1), file("b", b"z", 2)],
            seq: Some(2),
            ..Batch::default()
        };
        old.apply("n", &batch).await.unwrap();
        old.set_peer_seq("n", 2).await.unwrap();
        old.pool.close().await;
    }
    let idx = SqliteMirrorIndex::open(&path).await.unwrap();
    let s = idx.summary("n").await.unwrap();
    assert_eq!((s.files, s.bytes, s.peer_seq, s.synced_at), (2, 3, 2, None));
    let at = Timestamp::from_millis(1_780_000_000_000);
    idx.acknowledge("n", 3, at).await.unwrap();
    idx.pool.close().await;
    let idx = SqliteMirrorIndex::open(&path).await.unwrap();
    let s = idx.summary("n").await.unwrap();
    assert_eq!((s.peer_seq, s.synced_at), (3, Some(at)));
}
