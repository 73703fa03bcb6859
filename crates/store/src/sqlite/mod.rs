//! The embedded SQLite backend: one file, WAL, foreign keys on.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use ganglion_core::{InviteId, NodeId, NodeName, Policy, SecretHash, TaskId, Timestamp};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::Store;
use crate::error::{Error, InviteRefusal, Result};
use crate::model::{InviteRecord, NewInvite, NodeRecord, NodeState, Redemption, StatusUpdate};
use crate::tasks::{
    Ended, HistoryEntry, NewTask, TASK_COLUMNS, TaskEnd, TaskFilter, TaskRecord, TaskStatus,
    task_from_row,
};

mod journal;

use journal::Journal;

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

const NODE_COLUMNS: &str = "n.id, n.name, n.policy, n.capabilities, n.created_at, n.revoked_at, \
     COALESCE(s.status, 'offline') AS status, s.last_heartbeat";

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

    async fn node_where(&self, clause: &str, bind: &str) -> Result<Option<NodeRecord>> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM nodes n LEFT JOIN node_status s ON s.node_id = n.id \
             WHERE {clause}"
        );
        let row = sqlx::query(&sql)
            .bind(bind)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(node_from_row).transpose()
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

fn node_from_row(row: &SqliteRow) -> Result<NodeRecord> {
    let id: String = row.try_get("id")?;
    let name: String = row.try_get("name")?;
    let policy: String = row.try_get("policy")?;
    let caps: Option<String> = row.try_get("capabilities")?;
    let status: String = row.try_get("status")?;
    Ok(NodeRecord {
        id: NodeId::from_string(id).ok_or_else(|| Error::Corrupt("node id".into()))?,
        name: NodeName::parse(&name).map_err(|e| Error::Corrupt(format!("node name: {e}")))?,
        policy: parse_json(&policy, "node policy")?,
        capabilities: caps
            .as_deref()
            .map(|c| parse_json(c, "capabilities"))
            .transpose()?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        revoked_at: ts(row.try_get("revoked_at")?),
        status: if status == "online" {
            NodeState::Online
        } else {
            NodeState::Offline
        },
        last_heartbeat: ts(row.try_get("last_heartbeat")?),
    })
}

fn invite_from_row(row: &SqliteRow) -> Result<InviteRecord> {
    let id: String = row.try_get("id")?;
    let scope: Option<String> = row.try_get("name_scope")?;
    let policy: Option<String> = row.try_get("policy")?;
    let used_by: Option<String> = row.try_get("used_by")?;
    Ok(InviteRecord {
        id: InviteId::from_string(id).ok_or_else(|| Error::Corrupt("invite id".into()))?,
        name_scope: scope
            .map(|s| NodeName::parse(&s))
            .transpose()
            .map_err(|e| Error::Corrupt(format!("invite scope: {e}")))?,
        policy: policy
            .as_deref()
            .map(|p| parse_json(p, "invite policy"))
            .transpose()?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        expires_at: Timestamp::from_millis(row.try_get("expires_at")?),
        used_at: ts(row.try_get("used_at")?),
        used_by: used_by.and_then(NodeId::from_string),
        revoked_at: ts(row.try_get("revoked_at")?),
    })
}

const INVITE_COLUMNS: &str =
    "id, name_scope, policy, created_at, expires_at, used_at, used_by, revoked_at";

/// Finds out why an invite could not be consumed (after the conditional update
/// matched nothing), so the node gets a precise refusal.
async fn invite_refusal(
    tx: &mut Transaction<'_, Sqlite>,
    hash: &SecretHash,
    now: Timestamp,
) -> Result<InviteRefusal> {
    let sql = format!("SELECT {INVITE_COLUMNS} FROM invites WHERE secret_hash = ?");
    let row = sqlx::query(&sql)
        .bind(&hash.as_bytes()[..])
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(InviteRefusal::Unknown);
    };
    let inv = invite_from_row(&row)?;
    Ok(if inv.used_at.is_some() {
        InviteRefusal::Used
    } else if inv.revoked_at.is_some() {
        InviteRefusal::Revoked
    } else if inv.expires_at <= now {
        InviteRefusal::Expired(inv.expires_at)
    } else {
        InviteRefusal::Unknown
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_invite(&self, invite: &NewInvite) -> Result<InviteRecord> {
        sqlx::query(
            "INSERT INTO invites (id, secret_hash, name_scope, policy, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(invite.id.as_str())
        .bind(&invite.secret_hash.as_bytes()[..])
        .bind(invite.name_scope.as_ref().map(|n| n.as_str()))
        .bind(invite.policy.as_ref().map(json))
        .bind(invite.created_at.millis())
        .bind(invite.expires_at.millis())
        .execute(&self.writer)
        .await
        .map_err(Error::db("invite"))?;
        Ok(InviteRecord {
            id: invite.id.clone(),
            name_scope: invite.name_scope.clone(),
            policy: invite.policy.clone(),
            created_at: invite.created_at,
            expires_at: invite.expires_at,
            used_at: None,
            used_by: None,
            revoked_at: None,
        })
    }

    async fn list_invites(&self) -> Result<Vec<InviteRecord>> {
        let sql = format!("SELECT {INVITE_COLUMNS} FROM invites ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(invite_from_row).collect()
    }

    async fn invite_redeemable(&self, hash: &SecretHash, now: Timestamp) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM invites WHERE secret_hash = ? AND used_at IS NULL \
             AND revoked_at IS NULL AND expires_at > ?",
        )
        .bind(&hash.as_bytes()[..])
        .bind(now.millis())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn revoke_invite(&self, id: &InviteId, at: Timestamp) -> Result<InviteRecord> {
        let sql = format!(
            "UPDATE invites SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? \
             RETURNING {INVITE_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(at.millis())
            .bind(id.as_str())
            .fetch_one(&self.writer)
            .await
            .map_err(Error::db("invite"))?;
        invite_from_row(&row)
    }

    async fn redeem_invite(&self, r: &Redemption) -> Result<NodeRecord> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        // Consume first: the write takes SQLite's write lock at once, so two
        // concurrent redemptions of one invite cannot both succeed.
        let consumed = sqlx::query(
            "UPDATE invites SET used_at = ?, used_by = NULL \
             WHERE secret_hash = ? AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ? \
             RETURNING id, name_scope, policy",
        )
        .bind(r.now.millis())
        .bind(&r.invite_hash.as_bytes()[..])
        .bind(r.now.millis())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = consumed else {
            let refusal = invite_refusal(&mut tx, &r.invite_hash, r.now).await?;
            tx.rollback().await?;
            return Err(refusal.into());
        };
        let invite_id: String = row.try_get("id")?;
        let scope: Option<String> = row.try_get("name_scope")?;
        let policy: Option<String> = row.try_get("policy")?;

        let name = match (
            r.name.as_ref().or(if scope.is_none() {
                r.default_name.as_ref()
            } else {
                None
            }),
            scope,
        ) {
            (Some(asked), Some(scope)) if asked.as_str() != scope => {
                tx.rollback().await?;
                let asked = asked.to_string();
                return Err(InviteRefusal::NameScope { scope, asked }.into());
            }
            (Some(asked), _) => asked.clone(),
            (None, Some(scope)) => {
                NodeName::parse(&scope).map_err(|e| Error::Corrupt(format!("invite scope: {e}")))?
            }
            (None, None) => {
                tx.rollback().await?;
                return Err(InviteRefusal::NameRequired.into());
            }
        };
        let policy: Policy = match policy {
            Some(p) => parse_json(&p, "invite policy")?,
            None => Policy::strict(),
        };

        let inserted = sqlx::query(
            "INSERT INTO nodes (id, name, policy, capabilities, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(r.node_id.as_str())
        .bind(name.as_str())
        .bind(json(&policy))
        .bind(json(&r.capabilities))
        .bind(r.now.millis())
        .execute(&mut *tx)
        .await
        .map_err(Error::db("node"));
        if let Err(Error::AlreadyExists { .. }) = inserted {
            tx.rollback().await?;
            return Err(InviteRefusal::NameTaken(name.to_string()).into());
        }
        inserted?;
        sqlx::query("INSERT INTO node_credentials (hash, node_id, created_at) VALUES (?, ?, ?)")
            .bind(&r.credential.hash.as_bytes()[..])
            .bind(r.node_id.as_str())
            .bind(r.now.millis())
            .execute(&mut *tx)
            .await
            .map_err(Error::db("credential"))?;
        sqlx::query("UPDATE invites SET used_by = ? WHERE id = ?")
            .bind(r.node_id.as_str())
            .bind(&invite_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(NodeRecord {
            id: r.node_id.clone(),
            name,
            policy,
            capabilities: Some(r.capabilities.clone()),
            created_at: r.now,
            revoked_at: None,
            status: NodeState::Offline,
            last_heartbeat: None,
        })
    }

    async fn node_by_credential(&self, hash: &SecretHash) -> Result<Option<NodeRecord>> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM node_credentials c JOIN nodes n ON n.id = c.node_id \
             LEFT JOIN node_status s ON s.node_id = n.id WHERE c.hash = ?"
        );
        let row = sqlx::query(&sql)
            .bind(&hash.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(node_from_row).transpose()
    }

    async fn node_by_name(&self, name: &NodeName) -> Result<Option<NodeRecord>> {
        self.node_where("n.name = ?", name.as_str()).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM nodes n LEFT JOIN node_status s ON s.node_id = n.id \
             ORDER BY n.name"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(node_from_row).collect()
    }

    async fn set_policy(&self, name: &NodeName, policy: &Policy) -> Result<NodeRecord> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let current: String = sqlx::query_scalar("SELECT policy FROM nodes WHERE name = ?")
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(Error::db("node"))?;
        let current: Policy = parse_json(&current, "node policy")?;
        let next = Policy {
            version: current.version + 1,
            ..policy.clone()
        };
        sqlx::query("UPDATE nodes SET policy = ? WHERE name = ?")
            .bind(json(&next))
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.node_by_name(name)
            .await?
            .ok_or(Error::NotFound { what: "node" })
    }

    async fn revoke_node(&self, name: &NodeName, at: Timestamp) -> Result<NodeRecord> {
        sqlx::query(
            "UPDATE nodes SET revoked_at = COALESCE(revoked_at, ?) WHERE name = ? RETURNING id",
        )
        .bind(at.millis())
        .bind(name.as_str())
        .fetch_one(&self.writer)
        .await
        .map_err(Error::db("node"))?;
        self.node_by_name(name)
            .await?
            .ok_or(Error::NotFound { what: "node" })
    }

    async fn update_status(&self, updates: &[StatusUpdate]) -> Result<()> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for u in updates {
            sqlx::query(
                "INSERT INTO node_status (node_id, status, last_heartbeat, peer_addr, updated_at) \
                 VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT(node_id) DO UPDATE SET status = excluded.status, \
                   last_heartbeat = COALESCE(excluded.last_heartbeat, node_status.last_heartbeat), \
                   peer_addr = COALESCE(excluded.peer_addr, node_status.peer_addr), \
                   updated_at = excluded.updated_at",
            )
            .bind(u.node_id.as_str())
            .bind(u.status.as_str())
            .bind(u.last_heartbeat.map(Timestamp::millis))
            .bind(u.peer_addr.as_deref())
            .bind(u.at.millis())
            .execute(&mut *tx)
            .await
            .map_err(Error::db("node status"))?;
            if let Some(caps) = &u.capabilities {
                sqlx::query("UPDATE nodes SET capabilities = ? WHERE id = ?")
                    .bind(json(caps))
                    .bind(u.node_id.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn mark_all_offline(&self, at: Timestamp) -> Result<()> {
        sqlx::query(
            "UPDATE node_status SET status = 'offline', updated_at = ? WHERE status != 'offline'",
        )
        .bind(at.millis())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn create_task(&self, t: &NewTask) -> Result<()> {
        self.journal.create(t).await
    }

    async fn mark_task_running(&self, id: &TaskId, at: Timestamp) -> Result<bool> {
        self.journal.running(id, at).await
    }

    async fn finish_task(&self, end: &TaskEnd) -> Result<Ended> {
        self.journal.finish(end).await
    }

    async fn fail_unfinished_tasks(
        &self,
        node_id: Option<&NodeId>,
        error: &str,
        at: Timestamp,
    ) -> Result<Vec<TaskId>> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "SELECT id, history FROM tasks WHERE status IN ('pending', 'running') \
             AND (? IS NULL OR node_id = ?)",
        )
        .bind(node_id.map(|n| n.as_str()))
        .bind(node_id.map(|n| n.as_str()))
        .fetch_all(&mut *tx)
        .await?;
        let mut failed = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let mut history: Vec<HistoryEntry> =
                parse_json(&row.try_get::<String, _>("history")?, "task history")?;
            history.push(HistoryEntry {
                at,
                status: TaskStatus::Failed,
                note: Some(error.to_owned()),
            });
            sqlx::query(
                "UPDATE tasks SET status = 'failed', error = ?, finished_at = ?, lost_at = ?, history = ? WHERE id = ?",
            )
            .bind(error)
            .bind(at.millis())
            .bind(at.millis())
            .bind(json(&history))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            failed.push(TaskId::from_string(id).ok_or_else(|| Error::Corrupt("task id".into()))?);
        }
        tx.commit().await?;
        Ok(failed)
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<TaskRecord>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN nodes n ON n.id = t.node_id WHERE t.id = ?"
        );
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list_tasks(&self, f: &TaskFilter) -> Result<Vec<TaskRecord>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN nodes n ON n.id = t.node_id \
             WHERE (? IS NULL OR t.node_id = ?) AND (? IS NULL OR t.status = ?) \
             ORDER BY t.created_at DESC, t.id DESC LIMIT ?"
        );
        let node = f.node_id.as_ref().map(|n| n.as_str());
        let status = f.status.map(|s| s.as_str());
        let rows = sqlx::query(&sql)
            .bind(node)
            .bind(node)
            .bind(status)
            .bind(status)
            .bind(i64::from(f.limit.unwrap_or(1000)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

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

    async fn add_admin_token(&self, hash: &SecretHash, at: Timestamp) -> Result<()> {
        sqlx::query("INSERT INTO admin_tokens (hash, created_at) VALUES (?, ?)")
            .bind(&hash.as_bytes()[..])
            .bind(at.millis())
            .execute(&self.writer)
            .await
            .map_err(Error::db("admin token"))?;
        Ok(())
    }

    async fn admin_token_hashes(&self) -> Result<Vec<SecretHash>> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM admin_tokens")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|b| SecretHash::from_bytes(b).ok_or_else(|| Error::Corrupt("admin token".into())))
            .collect()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}
