//! One behavioural suite per aggregate, run against every backend: a module
//! per aggregate (`nodes`, `journal`, `immutable`, `mirror_index`), each test
//! a function taking a fresh backend. SQLite now; PostgreSQL will add one
//! line to `backends!`.

mod common;
mod immutable;
mod journal;
mod mirror_index;
mod nodes;

use ganglion_mirror::MemoryIndex;
use ganglion_store::{SqliteMirrorIndex, SqliteStore};
use tempfile::TempDir;

/// `#[tokio::test]`s running `$module::$test` on a fresh `$open` (a
/// `(backend, guard)` pair: the guard lives as long as the test). Two
/// worker threads: the journal's concurrency test needs them.
macro_rules! aggregate {
    ($open:expr; $module:ident: $($test:ident),* $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let (backend, _guard) = $open;
                    crate::$module::$test(&backend).await
                }
            )*
        }
    };
}

/// Every aggregate of the hub's database.
macro_rules! store_suite {
    ($open:expr) => {
        aggregate!($open; nodes:
            redeem_is_single_use,
            refusals_write_nothing,
            policy_status_and_revocation,
            admin_tokens,
        );
        aggregate!($open; journal:
            records_changes_and_late_results,
            concurrent_writes_answer_each_caller,
        );
        aggregate!($open; immutable: add_and_remove_patterns);
    };
}

/// The mirror index.
macro_rules! index_suite {
    ($open:expr) => {
        aggregate!($open; mirror_index:
            round_trips_and_keys_by_mirror,
            removes_below_takes_exactly_the_subtree,
            tombstones_live_until_acknowledged,
            load_round_trips_every_field_and_odd_names,
            summary_counts_follow_every_change,
            outbox_and_conflicts_round_trip,
        );
    };
}

/// A backend: its store and its mirror index.
macro_rules! backends {
    ($($backend:ident => store: $store:expr, index: $index:expr;)*) => {$(
        mod $backend {
            use super::*;
            store_suite!($store);
            index_suite!($index);
        }
    )*};
}

async fn sqlite() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hub.db")).await.unwrap();
    (store, dir)
}

async fn sqlite_index() -> (SqliteMirrorIndex, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let index = SqliteMirrorIndex::open(&dir.path().join("mirror-index.db"))
        .await
        .unwrap();
    (index, dir)
}

backends! {
    sqlite_file => store: sqlite().await, index: sqlite_index().await;
}

/// The mirror engines' in-memory index (tests, simulations) behaves as the
/// real ones do.
mod memory {
    use super::*;
    index_suite!((MemoryIndex::new(), ()));
}

/// The lookups on hot paths use indexes, not table scans.
#[tokio::test]
async fn hot_lookups_use_indexes() {
    let (store, _dir) = sqlite().await;
    let plans = [
        (
            "SELECT node_id FROM node_credentials WHERE hash = x'00'",
            "node_credentials",
        ),
        (
            "SELECT id FROM invites WHERE secret_hash = x'00'",
            "invites",
        ),
        ("SELECT id FROM nodes WHERE name = 'a'", "nodes"),
        (
            "SELECT hash FROM node_credentials WHERE node_id = 'a'",
            "node_credentials",
        ),
        (
            "SELECT id FROM tasks WHERE node_id = 'a' ORDER BY created_at DESC",
            "tasks",
        ),
        ("SELECT id FROM tasks WHERE status = 'running'", "tasks"),
    ];
    for (sql, table) in plans {
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(store.pool())
                .await
                .unwrap();
        let detail = rows
            .iter()
            .map(|r| r.3.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        assert!(
            detail.contains("USING INDEX")
                || detail.contains("USING PRIMARY KEY")
                || detail.contains("USING COVERING INDEX"),
            "{table}: {detail}"
        );
    }
}
