//! Hub-side changes (the two-way mirror): what the hub writes into a node's
//! mirror and queues, durably, for the node's workspace; the state each
//! change was based on; and the conflicts that keep both sides.
//!
//! The hub numbers its own changes of a mirror (`HubChange::seq`, one counter
//! per mirror, apart from the node's). A change names the state of the path
//! it replaces as the node was last known to hold it ([`Base`], the
//! ancestor), so the node applies it as a compare-and-swap: if the workspace
//! still holds the base, the change goes in; if not, the node's version is
//! concurrent and one of the two becomes a conflict copy (never lost).

use ganglion_core::{RelPath, Timestamp};

use crate::entry::{ContentHash, Entry, EntryKind};

/// What a path held: the state a change was based on, or what a side holds now.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Base {
    Absent,
    File(ContentHash),
    Dir,
    Symlink(String),
}

impl Base {
    /// The state an index entry describes (`None`: nothing at the path).
    pub fn of(entry: Option<&Entry>) -> Self {
        match entry {
            None => Self::Absent,
            Some(e) => match e.kind {
                EntryKind::File => e.hash.map_or(Self::Absent, Self::File),
                EntryKind::Dir => Self::Dir,
                EntryKind::Symlink => Self::Symlink(e.symlink_target.clone().unwrap_or_default()),
            },
        }
    }

    pub fn kind_str(&self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::File(_) => "file",
            Self::Dir => "dir",
            Self::Symlink(_) => "symlink",
        }
    }

    /// The hash or link target, as text (`None` for absent and dirs).
    pub fn value(&self) -> Option<String> {
        match self {
            Self::File(h) => Some(h.to_string()),
            Self::Symlink(t) => Some(t.clone()),
            Self::Absent | Self::Dir => None,
        }
    }

    /// The inverse of [`Self::kind_str`] and [`Self::value`].
    pub fn parse(kind: &str, value: Option<&str>) -> Option<Self> {
        Some(match kind {
            "absent" => Self::Absent,
            "dir" => Self::Dir,
            "file" => Self::File(value?.parse().ok()?),
            "symlink" => Self::Symlink(value?.to_owned()),
            _ => return None,
        })
    }
}

/// What a hub-side change does to the node's workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubOp {
    /// Write this content at `path` (parents created as directories). The
    /// node fetches the bytes from the hub's mirror (by path and hash).
    Put {
        path: RelPath,
        hash: ContentHash,
        size: u64,
        executable: bool,
    },
    /// Remove `path` (a directory with everything below it that the node
    /// has not changed: an edit beats a delete).
    Delete { path: RelPath },
    /// Rename `from` to `to` (which the hub had free).
    Move { from: RelPath, to: RelPath },
}

impl HubOp {
    /// The path whose state the change replaces (the source of a move).
    pub fn path(&self) -> &RelPath {
        match self {
            Self::Put { path, .. } | Self::Delete { path } => path,
            Self::Move { from, .. } => from,
        }
    }
}

/// One hub-side change, queued for the node until it reports it applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubChange {
    /// The hub's sequence number of this mirror's changes (1, 2, …).
    pub seq: u64,
    pub op: HubOp,
    /// What the node was last known to hold at [`HubOp::path`].
    pub base: Base,
}

/// Who made the version that lost a conflict (and is kept as the copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The path both sides changed.
    pub path: RelPath,
    /// Where the losing version is kept.
    pub conflict_path: RelPath,
    /// `hub` or the node's name.
    pub origin: String,
    pub detected_at: Timestamp,
}

/// The marker every conflict copy's name carries.
pub const CONFLICT_MARK: &str = ".sync-conflict-";

/// `NAME.sync-conflict-YYYYMMDD-HHMMSS-<origin>.EXT` next to `path` (the
/// extension is the last one; a name without one gets none; `attempt` > 0
/// appends `-N` to the origin, for a name already taken).
pub fn conflict_path(path: &RelPath, at: Timestamp, origin: &str, attempt: u32) -> RelPath {
    let name = path.file_name();
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    };
    // 2026-12-04T18:30:00.123Z → 20261204-183000
    let t = at.to_rfc3339();
    let stamp: String = t
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .map(|c| if c == 'T' { '-' } else { c })
        .collect();
    let origin: String = origin
        .chars()
        .map(|c| if c == '/' || c == '.' { '_' } else { c })
        .collect();
    let suffix = if attempt > 0 {
        format!("-{attempt}")
    } else {
        String::new()
    };
    let file = match ext {
        Some(ext) => format!("{stem}{CONFLICT_MARK}{stamp}-{origin}{suffix}.{ext}"),
        None => format!("{stem}{CONFLICT_MARK}{stamp}-{origin}{suffix}"),
    };
    match path.parent() {
        Some(p) => p.join(&file),
        None => RelPath::parse(&file),
    }
    .unwrap_or_else(|_| path.clone())
}

/// Whether a name is a conflict copy's.
pub fn is_conflict_copy(path: &RelPath) -> bool {
    path.file_name().contains(CONFLICT_MARK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn conflict_names_keep_the_extension() {
        // 2026-12-04T18:30:05Z
        let at = Timestamp::from_millis(1_796_408_605_000);
        assert_eq!(at.to_rfc3339()[..19].to_owned(), "2026-12-04T18:23:25");
        let c = conflict_path(&p("src/main.rs"), at, "n1", 0);
        assert_eq!(c.as_str(), "src/main.sync-conflict-20261204-182325-n1.rs");
        assert_eq!(
            conflict_path(&p("Makefile"), at, "hub", 0).as_str(),
            "Makefile.sync-conflict-20261204-182325-hub"
        );
        assert_eq!(
            conflict_path(&p("a.tar.gz"), at, "hub", 2).as_str(),
            "a.tar.sync-conflict-20261204-182325-hub-2.gz"
        );
        assert_eq!(
            conflict_path(&p(".bashrc"), at, "hub", 0).as_str(),
            ".bashrc.sync-conflict-20261204-182325-hub"
        );
        assert!(is_conflict_copy(&c));
        assert!(!is_conflict_copy(&p("src/main.rs")));
    }

    #[test]
    fn base_round_trips_as_text() {
        for b in [
            Base::Absent,
            Base::Dir,
            Base::File(ContentHash::of(b"x")),
            Base::Symlink("../t".into()),
        ] {
            assert_eq!(
                Base::parse(b.kind_str(), b.value().as_deref()),
                Some(b.clone())
            );
        }
        assert_eq!(Base::parse("file", Some("nope")), None);
        assert_eq!(Base::parse("what", None), None);
    }
}
