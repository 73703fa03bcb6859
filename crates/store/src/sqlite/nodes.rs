//! Nodes, invites, credentials and admin tokens in SQLite ([`NodeStore`]).

use async_trait::async_trait;
use ganglion_core::{InviteId, NodeId, NodeName, Policy, SecretHash, Timestamp};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::{SqliteStore, json, parse_json, ts};
use crate::NodeStore;
use crate::error::{Error, InviteRefusal, Result};
use crate::model::{InviteRecord, NewInvite, NodeRecord, NodeStatus, Redemption, StatusUpdate};

const NODE_COLUMNS: &str = "n.id, n.name, n.policy, n.capabilities, n.created_at, n.revoked_at, \
     COALESCE(s.status, 'offline') AS status, s.last_heartbeat";

impl SqliteStore {
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
            NodeStatus::Online
        } else {
            NodeStatus::Offline
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

/// The name a redeemed invite gives its node: the one asked for, which must
/// be the invite's scope if it has one; else the scope; else the default.
fn redeemed_name(r: &Redemption, scope: Option<String>) -> Result<NodeName> {
    let asked = r.name.as_ref().or(if scope.is_none() {
        r.default_name.as_ref()
    } else {
        None
    });
    match (asked, scope) {
        (Some(asked), Some(scope)) if asked.as_str() != scope => {
            let asked = asked.to_string();
            Err(InviteRefusal::NameScope { scope, asked }.into())
        }
        (Some(asked), _) => Ok(asked.clone()),
        (None, Some(scope)) => {
            NodeName::parse(&scope).map_err(|e| Error::Corrupt(format!("invite scope: {e}")))
        }
        (None, None) => Err(InviteRefusal::NameRequired.into()),
    }
}

/// Creates a redeeming node and its credential; a taken name is refused
/// (the caller rolls back).
async fn insert_node(
    tx: &mut Transaction<'_, Sqlite>,
    r: &Redemption,
    name: &NodeName,
    policy: &Policy,
) -> Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO nodes (id, name, policy, capabilities, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(r.node_id.as_str())
    .bind(name.as_str())
    .bind(json(policy))
    .bind(json(&r.capabilities))
    .bind(r.now.millis())
    .execute(&mut **tx)
    .await
    .map_err(Error::db("node"));
    if let Err(Error::AlreadyExists { .. }) = inserted {
        return Err(InviteRefusal::NameTaken(name.to_string()).into());
    }
    inserted?;
    sqlx::query("INSERT INTO node_credentials (hash, node_id, created_at) VALUES (?, ?, ?)")
        .bind(&r.credential.hash.as_bytes()[..])
        .bind(r.node_id.as_str())
        .bind(r.now.millis())
        .execute(&mut **tx)
        .await
        .map_err(Error::db("credential"))?;
    Ok(())
}

#[async_trait]
impl NodeStore for SqliteStore {
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
        let name = match redeemed_name(r, scope) {
            Ok(name) => name,
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        };
        let policy: Policy = match policy {
            Some(p) => parse_json(&p, "invite policy")?,
            None => Policy::strict(),
        };
        if let Err(e) = insert_node(&mut tx, r, &name, &policy).await {
            tx.rollback().await?;
            return Err(e);
        }
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
            status: NodeStatus::Offline,
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
}
