//! Reading the mirror: `cat` and `verify`, never following a symlink out.

use std::io::{self, Read};

use cap_std::fs::{File, OpenOptions, OpenOptionsExt};
use ganglion_core::RelPath;

use super::{Error, Mismatch, Receiver, io_err};
use crate::entry::{ContentHash, Entry, EntryKind};

impl Receiver {
    /// Opens a mirror file for reading. Refuses a symlink as the last
    /// component; cap-std refuses any path or intermediate link leaving the root.
    pub fn open_no_follow(&self, path: &RelPath) -> Result<File, Error> {
        let md = self
            .inner
            .mirror
            .symlink_metadata(path.as_str())
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => Error::Symlink {
                    path: path.to_string(),
                },
                _ => io_err("stat", path)(e),
            })?;
        if md.file_type().is_symlink() {
            return Err(Error::Symlink {
                path: path.to_string(),
            });
        }
        if !md.is_file() {
            return Err(Error::NotAFile {
                path: path.to_string(),
            });
        }
        let mut o = OpenOptions::new();
        o.read(true).custom_flags(libc::O_NOFOLLOW);
        self.inner
            .mirror
            .open_with(path.as_str(), &o)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => Error::Symlink {
                    path: path.to_string(),
                },
                _ => io_err("open", path)(e),
            })
    }

    /// The content of a mirror file (`ganglion mirror cat`).
    pub fn cat(&self, path: &RelPath) -> Result<Vec<u8>, Error> {
        let mut f = self.open_no_follow(path)?;
        let mut out = Vec::new();
        f.read_to_end(&mut out).map_err(io_err("read", path))?;
        Ok(out)
    }

    /// Re-hashes the mirror against its index; returns every mismatch.
    pub async fn verify(&self) -> Result<Vec<Mismatch>, Error> {
        let entries = self.inner.index.list(&self.inner.node, None).await?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            entries.iter().filter_map(|e| me.verify_one(e)).collect()
        })
        .await
        .map_err(|e| Error::Io {
            op: "join",
            path: String::new(),
            source: io::Error::other(e),
        })
    }

    fn verify_one(&self, e: &Entry) -> Option<Mismatch> {
        let mismatch = |expected: String, found: String| {
            Some(Mismatch {
                path: e.path.clone(),
                expected,
                found,
            })
        };
        let md = match self.inner.mirror.symlink_metadata(e.path.as_str()) {
            Ok(md) => md,
            Err(err) => return mismatch(e.kind.as_str().into(), format!("missing ({err})")),
        };
        let found_kind = if md.file_type().is_symlink() {
            EntryKind::Symlink
        } else if md.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File
        };
        if found_kind != e.kind {
            return mismatch(e.kind.as_str().into(), found_kind.as_str().into());
        }
        match e.kind {
            EntryKind::Dir => None,
            EntryKind::Symlink => {
                let t = self.inner.mirror.read_link_contents(e.path.as_str()).ok();
                let t = t.and_then(|t| t.into_os_string().into_string().ok());
                (t != e.symlink_target).then(|| Mismatch {
                    path: e.path.clone(),
                    expected: e.symlink_target.clone().unwrap_or_default(),
                    found: t.unwrap_or_default(),
                })
            }
            EntryKind::File => {
                let expected = e.hash.map(|h| h.to_string()).unwrap_or_default();
                let found = match self.open_no_follow(&e.path) {
                    Ok(f) => {
                        let mut h = blake3::Hasher::new();
                        match h.update_reader(f) {
                            Ok(_) => ContentHash::from(h.finalize()).to_string(),
                            Err(err) => format!("unreadable ({err})"),
                        }
                    }
                    Err(err) => format!("unreadable ({err})"),
                };
                (found != expected).then_some(Mismatch {
                    path: e.path.clone(),
                    expected,
                    found,
                })
            }
        }
    }
}
