//! The mirror's messages: entries and notices (node → hub), needs and acks
//! (hub → node), the parts of an `Upload` stream and how its files failed.
//! Every path from the wire is parsed as a [`RelPath`], every hash checked.

use ganglion_core::RelPath;
use ganglion_mirror::receive::Part;
use ganglion_mirror::{
    Base, Conflict, ContentHash, Entry, EntryKind, HubChange, HubOp, MirrorToHub, MirrorToNode,
    Notice, Replica, TransferFailure, Version,
};

use super::Invalid;
use crate::v1;
use crate::v1::hub_message::Kind as ToNodeKind;
use crate::v1::node_message::Kind as ToHubKind;

pub fn path(s: &str) -> Result<RelPath, Invalid> {
    RelPath::parse(s).map_err(|e| Invalid::new("path", format!("{s:?}: {e}")))
}

pub fn hash(s: &str) -> Result<ContentHash, Invalid> {
    s.parse::<ContentHash>()
        .map_err(|e| Invalid::new("hash", e))
}

fn wire_entry(e: &Entry) -> v1::MirrorEntry {
    let kind = match e.kind {
        EntryKind::File => v1::EntryKind::File,
        EntryKind::Dir => v1::EntryKind::Dir,
        EntryKind::Symlink => v1::EntryKind::Symlink,
    };
    v1::MirrorEntry {
        path: e.path.to_string(),
        kind: kind as i32,
        size: e.size,
        mtime_ns: e.mtime_ns,
        mode: e.mode,
        symlink_target: e.symlink_target.clone().unwrap_or_default(),
        hash: e.hash.map(|h| h.to_string()).unwrap_or_default(),
        seq: e.seq,
    }
}

/// An entry a node announced (its version is the node's).
pub fn entry(e: v1::MirrorEntry) -> Result<Entry, Invalid> {
    let kind = match v1::EntryKind::try_from(e.kind) {
        Ok(v1::EntryKind::File) => EntryKind::File,
        Ok(v1::EntryKind::Dir) => EntryKind::Dir,
        Ok(v1::EntryKind::Symlink) => EntryKind::Symlink,
        _ => return Err(Invalid::new("entry kind", e.kind)),
    };
    let hash = match (kind, e.hash.as_str()) {
        (EntryKind::File, h) => Some(hash(h)?),
        (_, "") => None,
        (_, _) => return Err(Invalid::new("entry", "only files carry a hash")),
    };
    let symlink_target = match kind {
        EntryKind::Symlink if e.symlink_target.contains('\0') || e.symlink_target.is_empty() => {
            return Err(Invalid::new("symlink target", "empty or contains NUL"));
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

impl From<&Notice> for v1::MirrorNotice {
    fn from(n: &Notice) -> Self {
        use v1::mirror_notice::Kind;
        let kind = match n {
            Notice::Upsert(e) => Kind::Upsert(wire_entry(e)),
            Notice::Delete { path, seq } => Kind::Delete(v1::MirrorDelete {
                path: path.to_string(),
                seq: *seq,
            }),
            Notice::Rename { from, entry } => Kind::Rename(v1::MirrorRename {
                from: from.to_string(),
                entry: Some(wire_entry(entry)),
            }),
        };
        v1::MirrorNotice { kind: Some(kind) }
    }
}

pub fn notice(n: v1::MirrorNotice) -> Result<Notice, Invalid> {
    match n.kind {
        Some(v1::mirror_notice::Kind::Upsert(e)) => Ok(Notice::Upsert(entry(e)?)),
        Some(v1::mirror_notice::Kind::Delete(d)) => Ok(Notice::Delete {
            path: path(&d.path)?,
            seq: d.seq,
        }),
        Some(v1::mirror_notice::Kind::Rename(r)) => {
            let e = r.entry.ok_or_else(|| Invalid::new("rename", "no entry"))?;
            Ok(Notice::Rename {
                from: path(&r.from)?,
                entry: entry(e)?,
            })
        }
        None => Err(Invalid::new("notice", "empty")),
    }
}

/// A content request from the hub, if its path can name something in a
/// workspace: a path that climbs out, is absolute, or passes the bounds of a
/// [`RelPath`] never reaches the node's mirror.
pub fn need(n: &v1::MirrorNeed) -> Result<(RelPath, ContentHash), Invalid> {
    Ok((path(&n.path)?, hash(&n.hash)?))
}

/// A resume offset from the hub, checked like a need.
pub fn resume_at(r: &v1::MirrorResumeAt) -> Result<(RelPath, ContentHash, u64), Invalid> {
    Ok((path(&r.path)?, hash(&r.hash)?, r.offset))
}

impl From<MirrorToNode> for ToNodeKind {
    fn from(m: MirrorToNode) -> Self {
        match m {
            MirrorToNode::Needs(needs) => ToNodeKind::MirrorNeeds(v1::MirrorNeeds {
                needs: needs
                    .into_iter()
                    .map(|(path, hash)| v1::MirrorNeed {
                        path: path.to_string(),
                        hash: hash.to_string(),
                    })
                    .collect(),
            }),
            MirrorToNode::Ack(seq) => ToNodeKind::MirrorAck(v1::MirrorAck { seq }),
            MirrorToNode::Changes(changes) => ToNodeKind::MirrorChanges(v1::MirrorChanges {
                changes: changes.iter().map(Into::into).collect(),
            }),
            MirrorToNode::Resume(held) => ToNodeKind::MirrorResume(v1::MirrorResume {
                files: held
                    .into_iter()
                    .map(|(path, hash, offset)| v1::MirrorResumeAt {
                        path: path.to_string(),
                        hash: hash.to_string(),
                        offset,
                    })
                    .collect(),
            }),
        }
    }
}

impl From<MirrorToHub> for ToHubKind {
    fn from(m: MirrorToHub) -> Self {
        match m {
            MirrorToHub::Notices(notices) => ToHubKind::MirrorNotices(v1::MirrorNotices {
                notices: notices.iter().map(Into::into).collect(),
            }),
            MirrorToHub::Unrecorded(unrecorded) => {
                ToHubKind::MirrorBacklog(v1::MirrorBacklog { unrecorded })
            }
            MirrorToHub::Applied(seq) => ToHubKind::MirrorApplied(v1::MirrorApplied { seq }),
            MirrorToHub::Halted(reason) => ToHubKind::MirrorHalted(v1::MirrorHalted { reason }),
            MirrorToHub::Conflict(c) => ToHubKind::MirrorConflict(v1::MirrorConflict {
                path: c.path.to_string(),
                conflict_path: c.conflict_path.to_string(),
                origin: c.origin,
                detected_at_ms: c.detected_at.millis(),
            }),
        }
    }
}

/// The valid items of a many-item message; each invalid one goes to
/// `rejected` (it is left out, as it would be alone: the others still count).
pub(super) fn valid<W, T>(
    items: Vec<W>,
    convert: impl Fn(W) -> Result<T, Invalid>,
    rejected: &mut Vec<Invalid>,
) -> Vec<T> {
    items
        .into_iter()
        .filter_map(|w| convert(w).map_err(|e| rejected.push(e)).ok())
        .collect()
}

impl From<Part> for v1::UploadChunk {
    fn from(p: Part) -> Self {
        match p {
            Part::Header {
                path,
                hash,
                size,
                mode,
                offset,
            } => v1::UploadChunk {
                kind: Some(v1::upload_chunk::Kind::Header(v1::UploadHeader {
                    path: path.to_string(),
                    hash: hash.to_string(),
                    size,
                    mode,
                })),
                offset,
            },
            Part::Data { offset, data } => v1::UploadChunk {
                kind: Some(v1::upload_chunk::Kind::Data(data)),
                offset,
            },
        }
    }
}

/// A part of an `Upload` stream.
pub fn part(chunk: v1::UploadChunk) -> Result<Part, Invalid> {
    match chunk.kind {
        Some(v1::upload_chunk::Kind::Header(h)) => Ok(Part::Header {
            path: path(&h.path)?,
            hash: hash(&h.hash)?,
            size: h.size,
            mode: h.mode & 0o7777,
            offset: chunk.offset,
        }),
        Some(v1::upload_chunk::Kind::Data(data)) => Ok(Part::Data {
            offset: chunk.offset,
            data,
        }),
        None => Err(Invalid::new("upload message", "without content")),
    }
}

impl From<TransferFailure> for v1::TransferFailure {
    fn from(f: TransferFailure) -> Self {
        match f {
            TransferFailure::HashMismatch | TransferFailure::SourceChanged => {
                v1::TransferFailure::HashMismatch
            }
            TransferFailure::DiskFull => v1::TransferFailure::DiskFull,
            TransferFailure::Refused => v1::TransferFailure::Refused,
            TransferFailure::Cancelled => v1::TransferFailure::Cancelled,
            TransferFailure::Io => v1::TransferFailure::Io,
        }
    }
}

/// A failure from the wire; anything unknown is an IO failure.
pub fn transfer_failure(f: i32) -> TransferFailure {
    match v1::TransferFailure::try_from(f) {
        Ok(v1::TransferFailure::HashMismatch) => TransferFailure::HashMismatch,
        Ok(v1::TransferFailure::DiskFull) => TransferFailure::DiskFull,
        Ok(v1::TransferFailure::Refused) => TransferFailure::Refused,
        Ok(v1::TransferFailure::Cancelled) => TransferFailure::Cancelled,
        _ => TransferFailure::Io,
    }
}

/// What an upload stream did, for the node: its bytes, and the files that
/// failed (path, hash) with why.
pub fn upload_result(
    bytes: u64,
    failures: impl IntoIterator<Item = (String, ContentHash, TransferFailure)>,
) -> v1::UploadResult {
    let failures = failures
        .into_iter()
        .map(|(path, hash, failure)| v1::UploadFailure {
            path,
            hash: hash.to_string(),
            failure: v1::TransferFailure::from(failure) as i32,
        })
        .collect();
    v1::UploadResult { bytes, failures }
}

/// The files of an upload stream that failed at the hub, as (path, hash)
/// text with why.
pub fn upload_failures(r: v1::UploadResult) -> Vec<((String, String), TransferFailure)> {
    r.failures
        .into_iter()
        .map(|f| ((f.path, f.hash), transfer_failure(f.failure)))
        .collect()
}

impl From<&HubChange> for v1::MirrorChange {
    fn from(c: &HubChange) -> Self {
        let mut m = v1::MirrorChange {
            seq: c.seq,
            path: c.op.path().to_string(),
            base: Some(v1::MirrorBase {
                kind: c.base.kind_str().to_owned(),
                value: c.base.value().unwrap_or_default(),
            }),
            ..Default::default()
        };
        match &c.op {
            HubOp::Put {
                hash,
                size,
                executable,
                ..
            } => {
                m.op = "put".into();
                m.hash = hash.to_string();
                m.size = *size;
                m.executable = *executable;
            }
            HubOp::Delete { .. } => m.op = "delete".into(),
            HubOp::Move { to, .. } => {
                m.op = "move".into();
                m.to = to.to_string();
            }
        }
        m
    }
}

/// A hub-side change, if its paths can name something in a workspace (the
/// same bounds as every path from the hub) and its fields are complete.
pub fn change(c: v1::MirrorChange) -> Result<HubChange, Invalid> {
    let p = path(&c.path)?;
    let op = match c.op.as_str() {
        "put" => HubOp::Put {
            path: p,
            hash: hash(&c.hash)?,
            size: c.size,
            executable: c.executable,
        },
        "delete" => HubOp::Delete { path: p },
        "move" => HubOp::Move {
            from: p,
            to: path(&c.to)?,
        },
        other => return Err(Invalid::new("change op", format!("{other:?}"))),
    };
    let b = c.base.ok_or_else(|| Invalid::new("change", "no base"))?;
    let value = (!b.value.is_empty()).then_some(b.value.as_str());
    let base = Base::parse(&b.kind, value)
        .ok_or_else(|| Invalid::new("change base", format!("{:?}", b.kind)))?;
    Ok(HubChange {
        seq: c.seq,
        op,
        base,
    })
}

/// A conflict the node reports.
pub fn conflict(c: v1::MirrorConflict) -> Result<Conflict, Invalid> {
    Ok(Conflict {
        path: path(&c.path)?,
        conflict_path: path(&c.conflict_path)?,
        origin: c.origin,
        detected_at: ganglion_core::Timestamp::from_millis(c.detected_at_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_mirror_request_never_reaches_the_mirror() {
        let h = ContentHash::of(b"x").to_string();
        let need_of = |path: &str| v1::MirrorNeed {
            path: path.into(),
            hash: h.clone(),
        };
        assert!(need(&need_of("src/a.rs")).is_ok());
        let too_deep = vec!["d"; ganglion_core::relpath::MAX_DEPTH + 1].join("/");
        let too_long = vec!["x".repeat(200); 21].join("/");
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "",
            "a//b",
            "a\\..\\x",
            too_deep.as_str(),
            too_long.as_str(),
        ] {
            assert!(need(&need_of(bad)).is_err(), "{bad:?}");
        }
        let bad_hash = v1::MirrorNeed {
            path: "a".into(),
            hash: "md5:00".into(),
        };
        assert!(need(&bad_hash).is_err());
    }

    #[test]
    fn resume_offsets_round_trip_and_hostile_paths_are_refused() {
        let h = ContentHash::of(b"x");
        let held = vec![(RelPath::parse("a/b").unwrap(), h, 7)];
        let ToNodeKind::MirrorResume(wire) = ToNodeKind::from(MirrorToNode::Resume(held.clone()))
        else {
            panic!("not a resume");
        };
        let back: Vec<_> = wire.files.iter().map(|r| resume_at(r).unwrap()).collect();
        assert_eq!(back, held);
        let hostile = v1::MirrorResumeAt {
            path: "../x".into(),
            hash: h.to_string(),
            offset: 1,
        };
        assert!(resume_at(&hostile).is_err());
    }

    #[test]
    fn a_header_states_its_offset() {
        let header = Part::Header {
            path: RelPath::parse("f").unwrap(),
            hash: ContentHash::of(b"x"),
            size: 10,
            mode: 0o644,
            offset: 4,
        };
        match part(v1::UploadChunk::from(header)).unwrap() {
            Part::Header { offset, size, .. } => assert_eq!((offset, size), (4, 10)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_notice_round_trips() {
        let e = Entry {
            path: RelPath::parse("a/b").unwrap(),
            kind: EntryKind::File,
            size: 1,
            mtime_ns: 2,
            mode: 0o644,
            inode: 0,
            dev: 0,
            symlink_target: None,
            hash: Some(ContentHash::of(b"x")),
            seq: 7,
            version: Version {
                origin: Replica::Node,
                seq: 7,
            },
        };
        let n = Notice::Rename {
            from: RelPath::parse("c").unwrap(),
            entry: e,
        };
        assert_eq!(notice(v1::MirrorNotice::from(&n)).unwrap(), n);
    }

    #[test]
    fn hub_changes_round_trip_and_hostile_ones_are_refused() {
        let p = |s: &str| RelPath::parse(s).unwrap();
        for c in [
            HubChange {
                seq: 1,
                op: HubOp::Put {
                    path: p("a/b.txt"),
                    hash: ContentHash::of(b"x"),
                    size: 1,
                    executable: true,
                },
                base: Base::File(ContentHash::of(b"old")),
            },
            HubChange {
                seq: 2,
                op: HubOp::Delete { path: p("d") },
                base: Base::Dir,
            },
            HubChange {
                seq: 3,
                op: HubOp::Move {
                    from: p("l"),
                    to: p("m"),
                },
                base: Base::Symlink("t".into()),
            },
        ] {
            assert_eq!(change(v1::MirrorChange::from(&c)).unwrap(), c);
        }
        let good = v1::MirrorChange::from(&HubChange {
            seq: 4,
            op: HubOp::Delete { path: p("x") },
            base: Base::Absent,
        });
        for bad in [
            v1::MirrorChange {
                path: "../etc/passwd".into(),
                ..good.clone()
            },
            v1::MirrorChange {
                path: "/etc/passwd".into(),
                ..good.clone()
            },
            v1::MirrorChange {
                op: "chmod".into(),
                ..good.clone()
            },
            v1::MirrorChange {
                op: "move".into(),
                to: "../out".into(),
                ..good.clone()
            },
            v1::MirrorChange {
                op: "put".into(),
                hash: "md5:00".into(),
                ..good.clone()
            },
            v1::MirrorChange {
                base: None,
                ..good.clone()
            },
            v1::MirrorChange {
                base: Some(v1::MirrorBase {
                    kind: "file".into(),
                    value: String::new(),
                }),
                ..good.clone()
            },
        ] {
            assert!(change(bad.clone()).is_err(), "{bad:?} accepted");
        }
    }
}
