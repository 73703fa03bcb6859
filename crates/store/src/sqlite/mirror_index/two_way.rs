//! The two-way mirror's tables: the hub's outbox of changes for the node
//! (`mirror_outbox`), the counters in `mirror_meta` (`out_seq`, `out_acked`)
//! and the open conflicts (`mirror_conflicts`). Written inside the batch's
//! transaction; read with the rest of a mirror at load.

use ganglion_core::{RelPath, Timestamp};
use ganglion_mirror::change::{Base, Conflict, HubChange, HubOp};
use ganglion_mirror::index::{Batch, Error};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::Failure;

/// Writes a batch's outbox, counters and conflicts (inside its transaction).
pub(super) async fn apply(
    tx: &mut Transaction<'_, Sqlite>,
    mirror: &str,
    batch: &Batch,
) -> Result<(), Failure> {
    for c in &batch.outbox {
        let (op, path, to, put) = match &c.op {
            HubOp::Put {
                path,
                hash,
                size,
                executable,
            } => ("put", path, None, Some((hash, *size, *executable))),
            HubOp::Delete { path } => ("delete", path, None, None),
            HubOp::Move { from, to } => ("move", from, Some(to), None),
        };
        sqlx::query(
            "INSERT OR REPLACE INTO mirror_outbox (mirror_id, seq, op, path, to_path, hash, size, \
             executable, base_kind, base_value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(mirror)
        .bind(c.seq as i64)
        .bind(op)
        .bind(path.as_str())
        .bind(to.map(|t| t.as_str()))
        .bind(put.map(|(h, _, _)| h.to_string()))
        .bind(put.map(|(_, s, _)| s as i64))
        .bind(put.map(|(_, _, x)| i64::from(x)))
        .bind(c.base.kind_str())
        .bind(c.base.value())
        .execute(&mut **tx)
        .await?;
    }
    for seq in &batch.outbox_drop {
        sqlx::query("DELETE FROM mirror_outbox WHERE mirror_id = ? AND seq = ?")
            .bind(mirror)
            .bind(*seq as i64)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(acked) = batch.out_acked {
        sqlx::query("DELETE FROM mirror_outbox WHERE mirror_id = ? AND seq <= ?")
            .bind(mirror)
            .bind(acked as i64)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE mirror_meta SET out_acked = ? WHERE mirror_id = ?")
            .bind(acked as i64)
            .bind(mirror)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(seq) = batch.out_seq {
        sqlx::query("UPDATE mirror_meta SET out_seq = ? WHERE mirror_id = ?")
            .bind(seq as i64)
            .bind(mirror)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(r) = &batch.replica {
        sqlx::query("UPDATE mirror_meta SET replica = ? WHERE mirror_id = ?")
            .bind(r)
            .bind(mirror)
            .execute(&mut **tx)
            .await?;
    }
    for c in &batch.conflicts {
        sqlx::query(
            "INSERT OR REPLACE INTO mirror_conflicts (mirror_id, conflict_path, path, origin, \
             detected_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(mirror)
        .bind(c.conflict_path.as_str())
        .bind(c.path.as_str())
        .bind(&c.origin)
        .bind(c.detected_at.millis())
        .execute(&mut **tx)
        .await?;
    }
    for p in &batch.conflicts_resolved {
        sqlx::query("DELETE FROM mirror_conflicts WHERE mirror_id = ? AND conflict_path = ?")
            .bind(mirror)
            .bind(p.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// What a load adds for the two-way mirror: the counters, the outbox in
/// order and the open conflicts.
pub(super) struct TwoWay {
    pub out_seq: u64,
    pub out_acked: u64,
    pub replica: Option<String>,
    pub outbox: Vec<HubChange>,
    pub conflicts: Vec<Conflict>,
}

pub(super) async fn load(pool: &SqlitePool, mirror: &str) -> Result<TwoWay, Failure> {
    let meta =
        sqlx::query("SELECT out_seq, out_acked, replica FROM mirror_meta WHERE mirror_id = ?")
            .bind(mirror)
            .fetch_optional(pool)
            .await?;
    let (out_seq, out_acked, replica) = meta.map_or((0, 0, None), |r| {
        (
            r.get::<i64, _>(0) as u64,
            r.get::<i64, _>(1) as u64,
            r.get::<Option<String>, _>(2),
        )
    });
    let rows = sqlx::query("SELECT * FROM mirror_outbox WHERE mirror_id = ? ORDER BY seq")
        .bind(mirror)
        .fetch_all(pool)
        .await?;
    let outbox = rows
        .iter()
        .map(|r| change(mirror, r))
        .collect::<Result<_, _>>()?;
    let rows =
        sqlx::query("SELECT * FROM mirror_conflicts WHERE mirror_id = ? ORDER BY conflict_path")
            .bind(mirror)
            .fetch_all(pool)
            .await?;
    let conflicts = rows
        .iter()
        .map(|r| conflict(mirror, r))
        .collect::<Result<_, _>>()?;
    Ok(TwoWay {
        out_seq,
        out_acked,
        replica,
        outbox,
        conflicts,
    })
}

/// Counts for the summary: queued changes and open conflicts.
pub(super) async fn counts(
    pool: &SqlitePool,
    mirror: &str,
) -> Result<(u64, u64, Option<String>), Failure> {
    let r = sqlx::query(
        "SELECT (SELECT count(*) FROM mirror_outbox WHERE mirror_id = ?1), \
                (SELECT count(*) FROM mirror_conflicts WHERE mirror_id = ?1), \
                (SELECT replica FROM mirror_meta WHERE mirror_id = ?1)",
    )
    .bind(mirror)
    .fetch_one(pool)
    .await?;
    Ok((
        r.get::<i64, _>(0) as u64,
        r.get::<i64, _>(1) as u64,
        r.get::<Option<String>, _>(2),
    ))
}

pub(super) async fn drop_mirror(
    tx: &mut Transaction<'_, Sqlite>,
    mirror: &str,
) -> Result<(), Failure> {
    for table in ["mirror_outbox", "mirror_conflicts"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE mirror_id = ?"))
            .bind(mirror)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn corrupt(mirror: &str, path: &str, field: &'static str) -> Error {
    Error::Corrupt {
        mirror: mirror.to_owned(),
        path: path.to_owned(),
        field,
    }
}

fn rel(mirror: &str, s: &str, field: &'static str) -> Result<RelPath, Error> {
    RelPath::parse(s).map_err(|_| corrupt(mirror, s, field))
}

fn change(mirror: &str, r: &SqliteRow) -> Result<HubChange, Error> {
    let path_s: String = r.get("path");
    let path = rel(mirror, &path_s, "path")?;
    let op = match r.get::<String, _>("op").as_str() {
        "put" => HubOp::Put {
            path,
            hash: r
                .get::<Option<String>, _>("hash")
                .and_then(|h| h.parse().ok())
                .ok_or_else(|| corrupt(mirror, &path_s, "hash"))?,
            size: r.get::<Option<i64>, _>("size").unwrap_or(0) as u64,
            executable: r.get::<Option<i64>, _>("executable").unwrap_or(0) != 0,
        },
        "delete" => HubOp::Delete { path },
        "move" => {
            let to: Option<String> = r.get("to_path");
            HubOp::Move {
                from: path,
                to: rel(mirror, to.as_deref().unwrap_or_default(), "to_path")?,
            }
        }
        _ => return Err(corrupt(mirror, &path_s, "op")),
    };
    let base = Base::parse(
        &r.get::<String, _>("base_kind"),
        r.get::<Option<String>, _>("base_value").as_deref(),
    )
    .ok_or_else(|| corrupt(mirror, &path_s, "base"))?;
    Ok(HubChange {
        seq: r.get::<i64, _>("seq") as u64,
        op,
        base,
    })
}

fn conflict(mirror: &str, r: &SqliteRow) -> Result<Conflict, Error> {
    Ok(Conflict {
        path: rel(mirror, &r.get::<String, _>("path"), "path")?,
        conflict_path: rel(
            mirror,
            &r.get::<String, _>("conflict_path"),
            "conflict_path",
        )?,
        origin: r.get("origin"),
        detected_at: Timestamp::from_millis(r.get("detected_at")),
    })
}
