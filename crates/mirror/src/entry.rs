//! What the mirror knows about one path: [`Entry`], its [`EntryKind`], the
//! algorithm-tagged [`ContentHash`] and the [`Version`] that says who wrote it.

use std::fmt;
use std::str::FromStr;

use ganglion_core::RelPath;

/// The kind of a workspace entry. Symlinks are mirrored as links, never followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "dir",
            Self::Symlink => "symlink",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "file" => Some(Self::File),
            "dir" => Some(Self::Dir),
            "symlink" => Some(Self::Symlink),
            _ => None,
        }
    }
}

/// A content hash, printed and parsed as `blake3:<64 hex digits>`.
///
/// The algorithm tag is part of the text so another algorithm can be added
/// without ambiguity; only BLAKE3 exists today.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashParseError {
    #[error("hash has no algorithm tag, expected `blake3:<hex>`")]
    MissingTag,
    #[error("unknown hash algorithm")]
    UnknownAlgorithm { algorithm: String },
    #[error("hash digest is not 64 hex digits")]
    BadDigest,
}

impl ContentHash {
    pub const ALGORITHM: &'static str = "blake3";

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash of `data` in one call (small content, tests).
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// The hash of the empty content.
    pub fn empty() -> Self {
        Self::of(b"")
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl From<blake3::Hash> for ContentHash {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Self::ALGORITHM, self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}…", Self::ALGORITHM, &self.to_hex()[..12])
    }
}

impl FromStr for ContentHash {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, HashParseError> {
        let (algo, hex) = s.split_once(':').ok_or(HashParseError::MissingTag)?;
        if algo != Self::ALGORITHM {
            return Err(HashParseError::UnknownAlgorithm {
                algorithm: algo.to_owned(),
            });
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HashParseError::BadDigest);
        }
        blake3::Hash::from_hex(hex)
            .map(Self::from)
            .map_err(|_| HashParseError::BadDigest)
    }
}

/// Which replica authored a change. Two writers exist by design (the node and,
/// in a later step, the hub); a future conflict step compares [`Version`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Replica {
    Node,
    Hub,
}

impl Replica {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Hub => "hub",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "node" => Some(Self::Node),
            "hub" => Some(Self::Hub),
            _ => None,
        }
    }
}

/// `(origin, seq)`: the replica that made this state of the entry and the
/// sequence number it had there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    pub origin: Replica,
    pub seq: u64,
}

/// One path of a workspace or mirror, as the index stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: RelPath,
    pub kind: EntryKind,
    /// Bytes of content (files), length of the target (symlinks), 0 (dirs).
    pub size: u64,
    pub mtime_ns: i64,
    /// Unix permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub inode: u64,
    pub dev: u64,
    pub symlink_target: Option<String>,
    /// Set for files; `None` for dirs and symlinks.
    pub hash: Option<ContentHash>,
    /// This index's own sequence number for the entry's last change.
    pub seq: u64,
    /// Who authored this state, and at which of their sequence numbers.
    pub version: Version,
}

impl Entry {
    /// Whether the executable bit is set for anyone.
    pub fn is_executable(&self) -> bool {
        self.mode & 0o111 != 0
    }

    /// Whether the stat fields the scanner compares are equal: if they are, the
    /// content is assumed unchanged and is not re-hashed.
    pub fn same_stat(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.inode == other.inode
            && self.dev == other.dev
            && self.mode == other.mode
    }

    /// Whether the mirrored state (what the hub must reproduce) is the same:
    /// kind, content, link target, exec bit. Stat noise (inode, mtime) is not.
    pub fn same_content(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.hash == other.hash
            && self.symlink_target == other.symlink_target
            && (self.kind != EntryKind::File || self.is_executable() == other.is_executable())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn prints_algorithm_tag() {
        let h = ContentHash::of(b"");
        assert_eq!(
            h.to_string(),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn refuses_bad_text() {
        assert_eq!(
            "abc".parse::<ContentHash>(),
            Err(HashParseError::MissingTag)
        );
        assert!(matches!(
            "sha256:00".parse::<ContentHash>(),
            Err(HashParseError::UnknownAlgorithm { .. })
        ));
        assert_eq!(
            "blake3:zz".parse::<ContentHash>(),
            Err(HashParseError::BadDigest)
        );
        assert_eq!(
            format!("blake3:{}", "g".repeat(64)).parse::<ContentHash>(),
            Err(HashParseError::BadDigest)
        );
    }

    proptest! {
        #[test]
        fn print_parse_round_trips(bytes in any::<[u8; 32]>()) {
            let h = ContentHash::from_bytes(bytes);
            prop_assert_eq!(h.to_string().parse::<ContentHash>().unwrap(), h);
        }
    }
}
