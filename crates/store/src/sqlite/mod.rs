//! The embedded SQLite backend: one file, WAL, foreign keys on.
//!
//! [`SqliteStore`] is the hub's database, one module per aggregate:
//! `nodes.rs` ([`NodeStore`](crate::NodeStore)), `tasks.rs` and the
//! group-committed `journal.rs` ([`JournalStore`](crate::JournalStore)),
//! the immutable paths and [`Backend`] here. [`SqliteMirrorIndex`]
//! (`mirror_index.rs`) is the mirror index, in a file of its own.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use ganglion_core::{NodeId, Timestamp};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{Error, Result};
use crate::{Backend, ImmutableStore};

mod journal;
mod mirror_index;
mod nodes;
mod tasks;

use journal::Journal;
pub use mirror_index::SqliteMirrorIndex;

/// The hub's database (`hub.db`). `migrations/mirror_index/` belongs to the
/// mirror index's own file: sqlx reads no subdirectory of `migrations/`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Reads go to a pool of connections; writes to one connection of their own,
/// so writers queue in the process (in order, without sleeping in SQLite's
/// busy handler) and readers never wait for them (WAL).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: SqlitePool,
    /// Task writes, group-committed on `writer`.
    journal: Journal,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let writer = Self::pool_of(options.clone(), 1).await?;
        MIGRATOR.run(&writer).await?;
        let pool = Self::pool_of(options, 8).await?;
        Ok(Self {
            journal: Journal::start(writer.clone()),
            pool,
            writer,
        })
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(Error::Database)?
            .foreign_keys(true);
        // One connection: every connection to ":memory:" is its own database.
        let pool = Self::pool_of(options, 1).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            journal: Journal::start(pool.clone()),
            writer: pool.clone(),
            pool,
        })
    }

    /// Makes the journal writer panic, for tests of what a failed writer
    /// does (feature `test-faults`, never in a release build).
    #[cfg(any(test, feature = "test-faults"))]
    pub fn inject_journal_panic(&self) {
        self.journal.inject_panic();
    }

    async fn pool_of(options: SqliteConnectOptions, max: u32) -> Result<SqlitePool> {
        SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(options)
            .await
            .map_err(Error::Database)
    }

    /// The pool, for crates that keep their own tables in the same database.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("domain types serialise")
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_millis)
}

#[async_trait]
impl ImmutableStore for SqliteStore {
    async fn immutable_patterns(&self, node_id: &NodeId) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT pattern FROM immutable_paths WHERE node_id = ? ORDER BY created_at, pattern",
        )
        .bind(node_id.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn add_immutable(&self, node_id: &NodeId, pattern: &str, at: Timestamp) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO immutable_paths (node_id, pattern, created_at) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(node_id.as_str())
        .bind(pattern)
        .bind(at.millis())
        .execute(&self.writer)
        .await
        .map_err(Error::db("immutable path"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn remove_immutable(&self, node_id: &NodeId, pattern: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM immutable_paths WHERE node_id = ? AND pattern = ?")
            .bind(node_id.as_str())
            .bind(pattern)
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}

#[async_trait]
impl Backend for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}
