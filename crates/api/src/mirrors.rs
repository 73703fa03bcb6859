//! Mirrors: `GET /api/v1/mirrors/{node}/files|file|status|wait`,
//! `POST …/verify`, `GET|POST|DELETE …/immutable`; hub-side writes:
//! `PUT|DELETE …/file?path=`, `POST …/move`, `GET …/conflicts`, `POST …/resolve`.

use serde::{Deserialize, Serialize};

/// `?path=`: a path in the mirror (`files` lists under it, `file` reads it).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PathQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// What a mirrored path is. Symlinks are mirrored as links, never followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
        }
    }
}

/// One mirrored path, as `mirror ls --json` prints it.
#[derive(Debug, Serialize, Deserialize)]
pub struct MirrorFile {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// `algo:hex`, e.g. `blake3:…`; none for directories and symlinks.
    pub hash: Option<String>,
    pub mtime: String,
    /// A symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `mirror status`, as CONTRACT.md lists it (plus refused changes).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MirrorStatus {
    pub files: u64,
    pub bytes: u64,
    pub pending: u64,
    pub in_flight: u64,
    pub last_sync: Option<String>,
    /// Node-side changes under immutable paths that were not applied.
    pub refused: u64,
    pub applied_seq: u64,
    /// Changes the node observed but cannot record in its index (a full
    /// disk, say), so has not sent yet; included in `pending`.
    #[serde(default)]
    pub unrecorded: u64,
    /// Hub-side changes the node has not applied yet.
    #[serde(default)]
    pub to_node: u64,
    /// Open conflicts (`mirror conflicts`).
    #[serde(default)]
    pub conflicts: u64,
    /// Set while the node does not sync its workspace: why (an emptied or
    /// unmounted workspace is never taken for a mass delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
}

/// `GET …/wait` parameters.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WaitQuery {
    /// Also wait for the mirror to hold exactly this many files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// How long to wait, in milliseconds, at most the hub's bound (a
    /// minute); 0 looks once. Default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The answer to a wait: whether the mirror got in sync in time, and its
/// status at that moment.
#[derive(Debug, Serialize, Deserialize)]
pub struct WaitReport {
    pub synced: bool,
    pub online: bool,
    pub status: MirrorStatus,
}

/// The answer to `POST …/verify`: every path whose content does not match
/// the index.
#[derive(Debug, Serialize, Deserialize)]
pub struct VerifyReport {
    pub checked: usize,
    pub mismatches: Vec<VerifyMismatch>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VerifyMismatch {
    pub path: String,
    pub expected: String,
    pub found: String,
}

/// `POST` (add) or `DELETE` (remove) `…/immutable`; both answer the
/// patterns as a JSON array of strings.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImmutableChange {
    pub pattern: String,
}

/// `PUT|DELETE …/file` parameters: the path, and the write's condition.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    pub path: String,
    /// Write only if the mirror's current hash of `path` is this (`algo:hex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_hash: Option<String>,
    /// `PUT`: make the file executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<bool>,
}

/// `POST …/move`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_hash: Option<String>,
}

/// What a hub-side write did, as `mirror put|rm|mv --json` prints it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WriteResult {
    pub path: String,
    /// The content now at `path`; `null` after `rm`.
    pub hash: Option<String>,
    /// The hub's change number of this write (it reaches the node in order).
    pub version: u64,
}

/// An open conflict, as `mirror conflicts --json` prints it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConflictInfo {
    pub path: String,
    pub conflict_path: String,
    /// `hub` or the node's name: who made the version kept as the copy.
    pub origin: String,
    pub detected_at: String,
}

/// Which side `mirror resolve` keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepSide {
    /// The version at the path; the conflict copy is deleted.
    Current,
    /// The conflict copy's version, moved to the path.
    Conflict,
}

/// `POST …/resolve`: `path` is the conflict copy's path, or the path in
/// conflict if it has only one.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub path: String,
    pub keep: KeepSide,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pin;

    #[test]
    fn mirror_files_as_contract_md_lists_them() {
        pin(
            &MirrorFile {
                path: "src/main.rs".into(),
                kind: FileKind::File,
                size: 12,
                hash: Some("blake3:00ff".into()),
                mtime: "2026-01-01T00:00:00Z".into(),
                target: None,
            },
            r#"{"path":"src/main.rs","kind":"file","size":12,"hash":"blake3:00ff","mtime":"2026-01-01T00:00:00Z"}"#,
        );
        pin(
            &MirrorFile {
                path: "link".into(),
                kind: FileKind::Symlink,
                size: 0,
                hash: None,
                mtime: "2026-01-01T00:00:00Z".into(),
                target: Some("src".into()),
            },
            r#"{"path":"link","kind":"symlink","size":0,"hash":null,"mtime":"2026-01-01T00:00:00Z","target":"src"}"#,
        );
        assert_eq!(FileKind::Dir.as_str(), "dir");
        assert_eq!(serde_json::to_string(&FileKind::Dir).unwrap(), r#""dir""#);
    }

    #[test]
    fn status_and_wait_as_contract_md_shows_them() {
        let status = MirrorStatus {
            files: 3,
            bytes: 100,
            pending: 1,
            in_flight: 0,
            last_sync: Some("2026-01-01T00:00:00Z".into()),
            refused: 0,
            applied_seq: 9,
            unrecorded: 0,
            to_node: 2,
            conflicts: 1,
            halted: None,
        };
        let json = r#"{"files":3,"bytes":100,"pending":1,"in_flight":0,"last_sync":"2026-01-01T00:00:00Z","refused":0,"applied_seq":9,"unrecorded":0,"to_node":2,"conflicts":1}"#;
        pin(&status, json);
        pin(
            &WaitReport {
                synced: false,
                online: true,
                status,
            },
            &format!(r#"{{"synced":false,"online":true,"status":{json}}}"#),
        );
        let old: MirrorStatus = serde_json::from_str(
            r#"{"files":0,"bytes":0,"pending":0,"in_flight":0,"last_sync":null,"refused":0,"applied_seq":0}"#,
        )
        .unwrap();
        assert_eq!(
            old.unrecorded, 0,
            "a hub without `unrecorded` reads as none"
        );
    }

    #[test]
    fn queries_leave_out_what_is_not_asked() {
        assert_eq!(serde_json::to_string(&PathQuery::default()).unwrap(), "{}");
        pin(
            &WaitQuery {
                files: Some(2),
                timeout_ms: Some(500),
            },
            r#"{"files":2,"timeout_ms":500}"#,
        );
        pin(
            &WaitQuery {
                files: None,
                timeout_ms: Some(0),
            },
            r#"{"timeout_ms":0}"#,
        );
    }

    #[test]
    fn verify_and_immutable_shapes() {
        pin(
            &VerifyReport {
                checked: 2,
                mismatches: vec![VerifyMismatch {
                    path: "a".into(),
                    expected: "blake3:00".into(),
                    found: "blake3:11".into(),
                }],
            },
            r#"{"checked":2,"mismatches":[{"path":"a","expected":"blake3:00","found":"blake3:11"}]}"#,
        );
        pin(
            &ImmutableChange {
                pattern: "*.lock".into(),
            },
            r#"{"pattern":"*.lock"}"#,
        );
        assert!(serde_json::from_str::<ImmutableChange>(r#"{"pattern":"x","add":true}"#).is_err());
    }

    #[test]
    fn hub_side_writes_as_contract_md_shows_them() {
        pin(
            &WriteResult {
                path: "a.txt".into(),
                hash: Some("blake3:00".into()),
                version: 3,
            },
            r#"{"path":"a.txt","hash":"blake3:00","version":3}"#,
        );
        pin(
            &WriteResult {
                path: "a.txt".into(),
                hash: None,
                version: 4,
            },
            r#"{"path":"a.txt","hash":null,"version":4}"#,
        );
        pin(
            &ConflictInfo {
                path: "a.txt".into(),
                conflict_path: "a.sync-conflict-20261204-182325-n1.txt".into(),
                origin: "n1".into(),
                detected_at: "2026-12-04T18:23:25Z".into(),
            },
            r#"{"path":"a.txt","conflict_path":"a.sync-conflict-20261204-182325-n1.txt","origin":"n1","detected_at":"2026-12-04T18:23:25Z"}"#,
        );
        let r: ResolveRequest =
            serde_json::from_str(r#"{"path":"a.txt","keep":"conflict"}"#).unwrap();
        assert_eq!(r.keep, KeepSide::Conflict);
        assert!(serde_json::from_str::<ResolveRequest>(r#"{"path":"a","keep":"both"}"#).is_err());
    }
}
