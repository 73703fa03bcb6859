//! Wire ↔ mirror domain types, hub side: notices come in, needs go out.
//! Wire input is untrusted: every path is parsed as a [`RelPath`].

use ganglion_core::RelPath;
use ganglion_mirror::{ContentHash, Entry, EntryKind, Notice, Replica, Version};
use ganglion_proto::v1;

use crate::Error;

fn bad(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{what}: {e}"))
}

pub fn path(s: &str) -> Result<RelPath, Error> {
    RelPath::parse(s).map_err(|e| bad(&format!("path {s:?}"), e))
}

pub fn hash(s: &str) -> Result<ContentHash, Error> {
    s.parse::<ContentHash>().map_err(|e| bad("hash", e))
}

pub fn entry(e: v1::MirrorEntry) -> Result<Entry, Error> {
    let kind = match v1::EntryKind::try_from(e.kind) {
        Ok(v1::EntryKind::File) => EntryKind::File,
        Ok(v1::EntryKind::Dir) => EntryKind::Dir,
        Ok(v1::EntryKind::Symlink) => EntryKind::Symlink,
        _ => return Err(bad("entry kind", e.kind)),
    };
    let hash = match (kind, e.hash.as_str()) {
        (EntryKind::File, h) => Some(hash(h)?),
        (_, "") => None,
        (_, _) => return Err(bad("entry", "only files carry a hash")),
    };
    let symlink_target = match kind {
        EntryKind::Symlink if e.symlink_target.contains('\0') || e.symlink_target.is_empty() => {
            return Err(bad("symlink target", "empty or contains NUL"));
        }
        EntryKind::Symlink => Some(e.symlink_target),
        _ => None,
    };
    Ok(Entry {
        path: path(&e.path)?,
        kind,
        size: e.size,
        mtime_ns: e.mtime_ns,
        mode: e.mode & 0o7777,
        inode: 0,
        dev: 0,
        symlink_target,
        hash,
        seq: e.seq,
        version: Version {
            origin: Replica::Node,
            seq: e.seq,
        },
    })
}

pub fn notice(n: v1::MirrorNotice) -> Result<Notice, Error> {
    match n.kind {
        Some(v1::mirror_notice::Kind::Upsert(e)) => Ok(Notice::Upsert(entry(e)?)),
        Some(v1::mirror_notice::Kind::Delete(d)) => Ok(Notice::Delete {
            path: path(&d.path)?,
            seq: d.seq,
        }),
        Some(v1::mirror_notice::Kind::Rename(r)) => {
            let e = r.entry.ok_or_else(|| bad("rename", "no entry"))?;
            Ok(Notice::Rename {
                from: path(&r.from)?,
                entry: entry(e)?,
            })
        }
        None => Err(bad("notice", "empty")),
    }
}

/// What an upload stream did, for the node: its files that failed, and why.
pub fn upload_result(r: super::upload::Received) -> v1::UploadResult {
    use ganglion_mirror::TransferFailure as F;
    let failures = r
        .failures
        .into_iter()
        .map(|(path, hash, failure)| {
            let failure = match failure {
                F::HashMismatch | F::SourceChanged => v1::TransferFailure::HashMismatch,
                F::DiskFull => v1::TransferFailure::DiskFull,
                F::Refused => v1::TransferFailure::Refused,
                F::Cancelled => v1::TransferFailure::Cancelled,
                F::Io => v1::TransferFailure::Io,
            };
            v1::UploadFailure {
                path,
                hash: hash.to_string(),
                failure: failure as i32,
            }
        })
        .collect();
    v1::UploadResult {
        bytes: r.bytes,
        failures,
    }
}
