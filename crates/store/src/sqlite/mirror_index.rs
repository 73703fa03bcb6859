//! The mirror index in SQLite ([`MirrorIndex`]), used by both sides: the
//! node's `STATE_DIR/index.db`, the hub's `DATA_DIR/mirror-index.db` (every
//! node's mirror in one database, keyed by mirror id).
//!
//! It is its own database file, apart from the hub's `hub.db`: the node
//! keeps one without any other store, and it commits with `synchronous=FULL`
//! (WAL): a committed batch survives power loss, so a sequence number is
//! never reused. Its migrations (`migrations/mirror_index/`) are embedded
//! with `sqlx::migrate!` and keep their own `_sqlx_migrations` table.

mod rows;
mod two_way;

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use ganglion_core::{RelPath, Timestamp};
use ganglion_mirror::entry::Entry;
use ganglion_mirror::index::{Batch, Error, Loaded, MirrorIndex, Summary};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use rows::{decode_rows, row_to_entry};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mirror_index");

/// Failures inside this module, `?`-friendly; [`Error::Backend`] at the trait.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("database")]
    Db(#[from] sqlx::Error),
    #[error("migration")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("load task")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Index(#[from] Error),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Index(e) => e,
            other => Error::backend(other),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SqliteMirrorIndex {
    pool: SqlitePool,
}

impl SqliteMirrorIndex {
    /// Opens (creating if missing) the index file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // 64 MiB of page cache per connection (the default 2 MiB): an
            // initial sync writes a row per file into three b-trees keyed by
            // path, sequence and hash, and the node's whole-workspace record
            // of a kernel tree spent most of its time re-reading pages.
            .pragma("cache_size", "-65536");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(Failure::from)?;
        Ok(Self::from_pool(pool).await?)
    }

    /// A private in-memory index (tests, simulations).
    pub async fn open_in_memory() -> Result<Self, Error> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:").map_err(Failure::from)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(Failure::from)?;
        Ok(Self::from_pool(pool).await?)
    }

    async fn from_pool(pool: SqlitePool) -> Result<Self, Failure> {
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

/// The trait's methods, each one of the statements below.
#[async_trait]
impl MirrorIndex for SqliteMirrorIndex {
    async fn load(&self, mirror: &str) -> Result<Loaded, Error> {
        Ok(load(&self.pool, mirror).await?)
    }

    async fn summary(&self, mirror: &str) -> Result<Summary, Error> {
        Ok(summary(&self.pool, mirror).await?)
    }

    async fn list(&self, mirror: &str, prefix: Option<&RelPath>) -> Result<Vec<Entry>, Error> {
        Ok(list(&self.pool, mirror, prefix).await?)
    }

    async fn get(&self, mirror: &str, path: &RelPath) -> Result<Option<Entry>, Error> {
        Ok(get(&self.pool, mirror, path).await?)
    }

    async fn mirrors(&self) -> Result<Vec<String>, Error> {
        Ok(mirrors(&self.pool).await?)
    }

    async fn apply(&self, mirror: &str, batch: &Batch) -> Result<(), Error> {
        Ok(apply(&self.pool, mirror, batch).await?)
    }

    async fn set_peer_seq(&self, mirror: &str, seq: u64) -> Result<(), Error> {
        Ok(peer_seq_at(&self.pool, mirror, seq, None).await?)
    }

    async fn acknowledge(&self, mirror: &str, seq: u64, at: Timestamp) -> Result<(), Error> {
        Ok(peer_seq_at(&self.pool, mirror, seq, Some(at)).await?)
    }

    async fn drop_mirror(&self, mirror: &str) -> Result<(), Error> {
        Ok(drop_mirror(&self.pool, mirror).await?)
    }
}

/// Everything the index holds for one mirror, read in ONE statement: the
/// rows come back as a single JSON array built by SQLite, so the cost is
/// SQLite's scan plus one parse, not a driver round trip per row (that
/// made 80k entries take 0.6–0.9 s, this 0.15–0.2 s).
async fn load(pool: &SqlitePool, mirror: &str) -> Result<Loaded, Failure> {
    let row = sqlx::query(LOAD).bind(mirror).fetch_one(pool).await?;
    let mut out = Loaded {
        seq: row.get::<Option<i64>, _>(0).unwrap_or(0) as u64,
        peer_seq: row.get::<Option<i64>, _>(1).unwrap_or(0) as u64,
        ..Loaded::default()
    };
    // Parsing 80k rows takes tens of ms: off the async workers.
    let (json, name) = (row.get::<String, _>(2), mirror.to_owned());
    let decoded = tokio::task::spawn_blocking(move || decode_rows(&name, &json)).await?;
    (out.entries, out.tombstones) = decoded?;
    let two_way = two_way::load(pool, mirror).await?;
    out.out_seq = two_way.out_seq;
    out.out_acked = two_way.out_acked;
    out.outbox = two_way.outbox;
    out.conflicts = two_way.conflicts;
    out.replica = two_way.replica;
    Ok(out)
}

async fn summary(pool: &SqlitePool, mirror: &str) -> Result<Summary, Failure> {
    let row = sqlx::query(
        "SELECT seq, peer_seq, files, bytes, synced_at FROM mirror_meta WHERE mirror_id = ?",
    )
    .bind(mirror)
    .fetch_optional(pool)
    .await?;
    let (to_node, conflicts, replica) = two_way::counts(pool, mirror).await?;
    Ok(row.map_or_else(Summary::default, |r| Summary {
        seq: r.get::<i64, _>(0) as u64,
        peer_seq: r.get::<i64, _>(1) as u64,
        files: r.get::<i64, _>(2) as u64,
        bytes: r.get::<i64, _>(3) as u64,
        synced_at: r.get::<Option<i64>, _>(4).map(Timestamp::from_millis),
        to_node,
        conflicts,
        replica,
    }))
}

async fn list(
    pool: &SqlitePool,
    mirror: &str,
    prefix: Option<&RelPath>,
) -> Result<Vec<Entry>, Failure> {
    let rows = sqlx::query(SELECT_ENTRY)
        .bind(mirror)
        .fetch_all(pool)
        .await?;
    let mut out = Vec::new();
    for row in rows.iter().filter(|r| r.get::<i64, _>("deleted") == 0) {
        let e = row_to_entry(mirror, row)?;
        if prefix.is_none_or(|p| e.path.starts_with(p)) {
            out.push(e);
        }
    }
    Ok(out)
}

async fn get(pool: &SqlitePool, mirror: &str, path: &RelPath) -> Result<Option<Entry>, Failure> {
    let row = sqlx::query(
        "SELECT * FROM mirror_entries WHERE mirror_id = ? AND path = ? AND deleted = 0",
    )
    .bind(mirror)
    .bind(path.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| row_to_entry(mirror, &r)).transpose()?)
}

async fn mirrors(pool: &SqlitePool) -> Result<Vec<String>, Failure> {
    let rows = sqlx::query("SELECT mirror_id FROM mirror_meta ORDER BY mirror_id")
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Applies a batch in ONE transaction.
async fn apply(pool: &SqlitePool, mirror: &str, batch: &Batch) -> Result<(), Failure> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO mirror_meta (mirror_id) VALUES (?) ON CONFLICT DO NOTHING")
        .bind(mirror)
        .execute(&mut *tx)
        .await?;
    remove_rows(&mut tx, mirror, batch).await?;
    let rows: Vec<(std::borrow::Cow<'_, Entry>, bool)> = batch
        .tombstones
        .iter()
        .map(|t| {
            (
                std::borrow::Cow::Owned(ganglion_mirror::index::tombstone_row(t)),
                true,
            )
        })
        .chain(
            batch
                .upserts
                .iter()
                .map(|e| (std::borrow::Cow::Borrowed(e), false)),
        )
        .collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        upsert_rows(&mut tx, mirror, chunk).await?;
    }
    if let Some(seq) = batch.seq {
        sqlx::query("UPDATE mirror_meta SET seq = ? WHERE mirror_id = ?")
            .bind(seq as i64)
            .bind(mirror)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(peer) = batch.peer_seq {
        set_peer_seq_tx(&mut tx, mirror, peer).await?;
    }
    two_way::apply(&mut tx, mirror, batch).await?;
    tx.commit().await?;
    Ok(())
}

/// A batch's `removes` and `removes_below`. Many rows per statement: each
/// statement is a round trip to the database thread, and a group commit of
/// an initial sync names thousands of paths (three statements per file cost
/// more than the files' own IO).
async fn remove_rows(
    tx: &mut Transaction<'_, Sqlite>,
    mirror: &str,
    batch: &Batch,
) -> Result<(), Failure> {
    for chunk in batch.removes.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM mirror_entries WHERE mirror_id = ? AND path IN ({})",
            placeholders(chunk.len(), "?")
        );
        let mut q = sqlx::query(&sql).bind(mirror);
        for p in chunk {
            q = q.bind(p.as_str());
        }
        q.execute(&mut **tx).await?;
    }
    for chunk in batch.removes_below.chunks(ROWS_PER_STATEMENT) {
        // Everything below `p` sorts in [`p/`, `p0`) ('0' follows '/'
        // bytewise): a range on the primary key per path, not a scan of
        // the table (a substr() test per row made each file of a sync
        // cost O(n)). Not LIKE either: names may contain '%' and '_'.
        let sql = removes_below_sql(chunk.len());
        let mut q = sqlx::query(&sql).bind(mirror);
        for p in chunk {
            q = q.bind(format!("{p}/")).bind(format!("{p}0"));
        }
        q.bind(mirror).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Records the peer sequence (forgetting tombstones at or below it) and,
/// for an acknowledgement, its time: one transaction.
async fn peer_seq_at(
    pool: &SqlitePool,
    mirror: &str,
    seq: u64,
    at: Option<Timestamp>,
) -> Result<(), Failure> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO mirror_meta (mirror_id) VALUES (?) ON CONFLICT DO NOTHING")
        .bind(mirror)
        .execute(&mut *tx)
        .await?;
    set_peer_seq_tx(&mut tx, mirror, seq).await?;
    if let Some(at) = at {
        sqlx::query("UPDATE mirror_meta SET synced_at = ? WHERE mirror_id = ?")
            .bind(at.millis())
            .bind(mirror)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn drop_mirror(pool: &SqlitePool, mirror: &str) -> Result<(), Failure> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM mirror_entries WHERE mirror_id = ?")
        .bind(mirror)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM mirror_meta WHERE mirror_id = ?")
        .bind(mirror)
        .execute(&mut *tx)
        .await?;
    two_way::drop_mirror(&mut tx, mirror).await?;
    tx.commit().await?;
    Ok(())
}

const SELECT_ENTRY: &str = "SELECT * FROM mirror_entries WHERE mirror_id = ? ORDER BY path";

/// Meta and every row of a mirror in one row; the rows as a JSON array of
/// arrays in `rows::JsonRow`'s field order, by path.
const LOAD: &str = "SELECT (SELECT seq FROM mirror_meta WHERE mirror_id = ?1), \
     (SELECT peer_seq FROM mirror_meta WHERE mirror_id = ?1), \
     (SELECT json_group_array(json_array(path, kind, size, mtime_ns, mode, inode, dev, \
        symlink_target, hash, seq, origin, origin_seq, deleted)) \
      FROM (SELECT * FROM mirror_entries WHERE mirror_id = ?1 ORDER BY path))";

/// Forgets a mirror's tombstones at or below a sequence number (bound: the
/// mirror, the sequence number); `mirror_tombstones_by_seq` answers it.
const FORGET_TOMBSTONES: &str =
    "DELETE FROM mirror_entries WHERE mirror_id = ? AND deleted = 1 AND seq <= ?";

async fn set_peer_seq_tx(
    tx: &mut Transaction<'_, Sqlite>,
    mirror: &str,
    seq: u64,
) -> Result<(), Failure> {
    sqlx::query("UPDATE mirror_meta SET peer_seq = ? WHERE mirror_id = ?")
        .bind(seq as i64)
        .bind(mirror)
        .execute(&mut **tx)
        .await?;
    sqlx::query(FORGET_TOMBSTONES)
        .bind(mirror)
        .bind(seq as i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Rows per multi-row statement (14 parameters each: well under SQLite's
/// 32,766 parameters per statement).
const ROWS_PER_STATEMENT: usize = 256;

/// `n` copies of `one`, comma-separated.
fn placeholders(n: usize, one: &str) -> String {
    let mut s = String::with_capacity(n * (one.len() + 2));
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(one);
    }
    s
}

/// Deletes the rows strictly below `n` paths (bound: the mirror, a `(p/, p0)`
/// pair per path, the mirror again; numbered and plain `?` do not mix in sqlx).
fn removes_below_sql(n: usize) -> String {
    format!(
        "DELETE FROM mirror_entries WHERE mirror_id = ? AND path IN \
         (SELECT e.path FROM (VALUES {}) AS r \
          JOIN mirror_entries AS e ON e.mirror_id = ? AND e.path >= r.column1 AND e.path < r.column2)",
        placeholders(n, "(?, ?)")
    )
}

/// Inserts or replaces rows, in order (a path listed twice ends as its last row).
async fn upsert_rows(
    tx: &mut Transaction<'_, Sqlite>,
    mirror: &str,
    rows: &[(std::borrow::Cow<'_, Entry>, bool)],
) -> Result<(), Failure> {
    let sql = format!(
        "INSERT INTO mirror_entries (mirror_id, path, kind, size, mtime_ns, mode, inode, dev, symlink_target, \
         hash, seq, origin, origin_seq, deleted) VALUES {} \
         ON CONFLICT (mirror_id, path) DO UPDATE SET kind = excluded.kind, size = excluded.size, \
         mtime_ns = excluded.mtime_ns, mode = excluded.mode, inode = excluded.inode, dev = excluded.dev, \
         symlink_target = excluded.symlink_target, hash = excluded.hash, seq = excluded.seq, \
         origin = excluded.origin, origin_seq = excluded.origin_seq, deleted = excluded.deleted",
        placeholders(rows.len(), "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    );
    let mut q = sqlx::query(&sql);
    for (e, deleted) in rows {
        q = q
            .bind(mirror)
            .bind(e.path.as_str())
            .bind(e.kind.as_str())
            .bind(e.size as i64)
            .bind(e.mtime_ns)
            .bind(i64::from(e.mode))
            // u64 stored bit-for-bit in SQLite's i64
            .bind(e.inode as i64)
            .bind(e.dev as i64)
            .bind(e.symlink_target.as_deref())
            .bind(e.hash.map(|h| h.to_string()))
            .bind(e.seq as i64)
            .bind(e.version.origin.as_str())
            .bind(e.version.seq as i64)
            .bind(i64::from(*deleted));
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
