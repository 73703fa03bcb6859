//! The mirror index's rows → domain types: the JSON array [`LOAD`](super::LOAD)
//! builds, and single rows. Every corrupt field is reported with its mirror
//! and path.

use ganglion_core::RelPath;
use ganglion_mirror::engine::Tombstone;
use ganglion_mirror::entry::{ContentHash, Entry, EntryKind, Replica, Version};
use ganglion_mirror::index::Error;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

/// One row of [`LOAD`](super::LOAD)'s array. Strings borrow from the JSON unless escaped.
#[derive(serde::Deserialize)]
struct JsonRow<'a>(
    #[serde(borrow)] std::borrow::Cow<'a, str>,
    #[serde(borrow)] std::borrow::Cow<'a, str>,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    #[serde(borrow)] Option<std::borrow::Cow<'a, str>>,
    i64,
    #[serde(borrow)] std::borrow::Cow<'a, str>,
    i64,
    i64,
);

/// [`LOAD`](super::LOAD)'s array → live entries and tombstones.
pub(super) fn decode_rows(mirror: &str, json: &str) -> Result<(Vec<Entry>, Vec<Tombstone>), Error> {
    let rows: Vec<JsonRow<'_>> = serde_json::from_str(json).map_err(|e| Error::Corrupt {
        mirror: mirror.to_owned(),
        path: format!("(rows as JSON: {e})"),
        field: "rows",
    })?;
    let (mut entries, mut tombstones) = (Vec::with_capacity(rows.len()), Vec::new());
    for r in rows {
        let (entry, deleted) = r.decode(mirror)?;
        if deleted {
            tombstones.push(Tombstone {
                path: entry.path,
                seq: entry.seq,
                hash: entry.hash,
            });
        } else {
            entries.push(entry);
        }
    }
    Ok((entries, tombstones))
}

impl JsonRow<'_> {
    fn decode(self, mirror: &str) -> Result<(Entry, bool), Error> {
        let JsonRow(
            path,
            kind,
            size,
            mtime_ns,
            mode,
            inode,
            dev,
            symlink_target,
            hash,
            seq,
            origin,
            origin_seq,
            deleted,
        ) = self;
        let corrupt = |field| Error::Corrupt {
            mirror: mirror.to_owned(),
            path: path.to_string(),
            field,
        };
        let entry = Entry {
            path: RelPath::parse(&path).map_err(|_| corrupt("path"))?,
            kind: EntryKind::parse(&kind).ok_or_else(|| corrupt("kind"))?,
            size: size as u64,
            mtime_ns,
            mode: u32::try_from(mode).map_err(|_| corrupt("mode"))?,
            inode: inode as u64,
            dev: dev as u64,
            symlink_target,
            hash: hash
                .map(|h| h.parse::<ContentHash>())
                .transpose()
                .map_err(|_| corrupt("hash"))?,
            seq: seq as u64,
            version: Version {
                origin: Replica::parse(&origin).ok_or_else(|| corrupt("origin"))?,
                seq: origin_seq as u64,
            },
        };
        Ok((entry, deleted != 0))
    }
}

fn corrupt(mirror: &str, row: &SqliteRow, field: &'static str) -> Error {
    Error::Corrupt {
        mirror: mirror.to_owned(),
        path: row.get("path"),
        field,
    }
}

fn parse_path(mirror: &str, row: &SqliteRow) -> Result<RelPath, Error> {
    RelPath::parse(row.get::<&str, _>("path")).map_err(|_| corrupt(mirror, row, "path"))
}

fn parse_hash(mirror: &str, row: &SqliteRow) -> Result<Option<ContentHash>, Error> {
    row.get::<Option<&str>, _>("hash")
        .map(|h| {
            h.parse::<ContentHash>()
                .map_err(|_| corrupt(mirror, row, "hash"))
        })
        .transpose()
}

pub(super) fn row_to_entry(mirror: &str, row: &SqliteRow) -> Result<Entry, Error> {
    Ok(Entry {
        path: parse_path(mirror, row)?,
        kind: EntryKind::parse(row.get("kind")).ok_or_else(|| corrupt(mirror, row, "kind"))?,
        size: row.get::<i64, _>("size") as u64,
        mtime_ns: row.get("mtime_ns"),
        mode: u32::try_from(row.get::<i64, _>("mode")).map_err(|_| corrupt(mirror, row, "mode"))?,
        inode: row.get::<i64, _>("inode") as u64,
        dev: row.get::<i64, _>("dev") as u64,
        symlink_target: row.get("symlink_target"),
        hash: parse_hash(mirror, row)?,
        seq: row.get::<i64, _>("seq") as u64,
        version: Version {
            origin: Replica::parse(row.get("origin"))
                .ok_or_else(|| corrupt(mirror, row, "origin"))?,
            seq: row.get::<i64, _>("origin_seq") as u64,
        },
    })
}
