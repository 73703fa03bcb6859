//! Partials: a large transfer cut before its end (its stream broke, the node
//! or the hub restarted, it idled out) keeps its staged file, fsynced, so
//! that the next attempt resumes where it stopped instead of at byte 0.
//!
//! A partial lives in `staging/<node>/partial/`, named after what it holds:
//! `<blake3(path), 32 hex>-<content hash, 64 hex>.part`. The name is found
//! again from the (path, hash) of the next fetch, also after a hub restart
//! (the staging sweep at open registers the partials it finds); its length
//! is the count of bytes held. Nothing else is trusted: the resumed transfer
//! re-hashes the prefix from disk and the whole file's hash is checked at its
//! end, so a prefix that no longer matches the node's file (or was torn by a
//! crash of the machine) fails the hash, is dropped and the file is fetched
//! whole.
//!
//! Bounded: at most [`MAX_PARTIALS`] per node (the oldest goes first), none
//! older than [`PARTIAL_MAX_AGE`], one per path (a fetch of other content
//! for the path drops it), and a dropped fetch (`discard`) drops it too.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom};
use std::time::{Duration, SystemTime};

use std::os::unix::fs::PermissionsExt;

use cap_std::fs::{File, OpenOptions, Permissions};
use ganglion_core::RelPath;
use tracing::{info, warn};

use super::{Error, Receiver, Upload, io_err, lock};
use crate::entry::ContentHash;

/// The directory of partials, in a node's staging directory.
pub(super) const PARTIAL_DIR: &str = "partial";

/// Transfers of at least this many bytes are resumable; smaller ones start
/// again at 0 (resuming them would save less than the partial's fsync).
pub const RESUMABLE_FROM: u64 = 1 << 20;

/// A partial not resumed for this long is removed by the staging sweep.
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Partials kept per node at most.
pub const MAX_PARTIALS: usize = 32;

/// The hex digits of the path's hash in a partial's name.
const PATH_HEX: usize = 32;

/// The staging name of the partial of (path, hash).
pub(super) fn partial_name(path: &RelPath, hash: &ContentHash) -> String {
    format!("{}{}.part", path_prefix(path), hash.to_hex())
}

/// The start of the names of every partial of `path`.
fn path_prefix(path: &RelPath) -> String {
    let h = blake3::hash(path.as_str().as_bytes()).to_hex();
    format!("{PARTIAL_DIR}/{}-", &h[..PATH_HEX])
}

/// Whether a file name in the partial directory is a partial's.
pub(super) fn is_partial_file(file: &str) -> bool {
    let Some(stem) = file.strip_suffix(".part") else {
        return false;
    };
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    match stem.split_once('-') {
        Some((p, h)) => p.len() == PATH_HEX && h.len() == 64 && hex(p) && hex(h),
        None => false,
    }
}

/// A partial at rest: how many bytes it holds, and since when.
#[derive(Clone, Copy, Debug)]
struct Held {
    len: u64,
    at: SystemTime,
}

/// The partials at rest (no transfer writes them), by staging name.
#[derive(Default)]
pub(super) struct Partials {
    by_name: HashMap<String, Held>,
}

impl Partials {
    /// The bytes held for `name`.
    pub(super) fn get(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).map(|h| h.len)
    }

    /// Takes `name` out of the set (a transfer now owns it).
    pub(super) fn take(&mut self, name: &str) -> Option<u64> {
        self.by_name.remove(name).map(|h| h.len)
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Adds a partial; returns the names evicted to stay within
    /// [`MAX_PARTIALS`] (the oldest), for the caller to remove.
    pub(super) fn insert(&mut self, name: String, len: u64, at: SystemTime) -> Vec<String> {
        self.by_name.insert(name, Held { len, at });
        let mut evicted = Vec::new();
        while self.by_name.len() > MAX_PARTIALS {
            let oldest = self
                .by_name
                .iter()
                .min_by_key(|(_, h)| h.at)
                .map(|(n, _)| n.clone())
                .expect("not empty");
            self.by_name.remove(&oldest);
            evicted.push(oldest);
        }
        evicted
    }

    /// Takes out every partial of `path` but `keep`; returns their names.
    pub(super) fn take_others_of(&mut self, path: &RelPath, keep: &str) -> Vec<String> {
        let prefix = path_prefix(path);
        let names: Vec<String> = self
            .by_name
            .keys()
            .filter(|n| n.starts_with(&prefix) && n.as_str() != keep)
            .cloned()
            .collect();
        for n in &names {
            self.by_name.remove(n);
        }
        names
    }

    /// Forgets the partials known since before `since` whose file a sweep
    /// did not find (removed behind the receiver's back).
    pub(super) fn forget_missing(&mut self, found: &HashSet<String>, since: SystemTime) {
        self.by_name
            .retain(|name, held| held.at >= since || found.contains(name));
    }

    pub(super) fn len(&self) -> usize {
        self.by_name.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Whether a partial last written at `modified` is too old to keep.
pub(super) fn expired(modified: SystemTime, now: SystemTime) -> bool {
    now.duration_since(modified)
        .is_ok_and(|age| age > PARTIAL_MAX_AGE)
}

/// Hashes the first `len` bytes of `file` (read from disk) and leaves the
/// file positioned at `len`, where the transfer goes on.
pub(super) fn hash_prefix(file: &mut File, len: u64) -> io::Result<blake3::Hasher> {
    let mut hasher = blake3::Hasher::new();
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    file.seek(SeekFrom::Start(len))?;
    Ok(hasher)
}

/// The receiver's side of partials: reopening one for a resume, keeping a
/// cut transfer, removing and sweeping them.
impl Receiver {
    /// The staged file of a resumable transfer (claimed under its partial
    /// name), positioned at `offset`, with the hash of the bytes before it.
    pub(super) fn open_partial(
        &self,
        path: &RelPath,
        hash: ContentHash,
        size: u64,
        mode: u32,
        offset: u64,
    ) -> Result<(File, String, blake3::Hasher), Error> {
        let name = self.claim(partial_name(path, &hash));
        let (held, others) = {
            let mut partials = lock(&self.inner.partials);
            let held = partials.take(&name);
            // Another content's partial of this path is not wanted any more
            // (the lock on the path keeps transfers off them).
            (held, partials.take_others_of(path, &name))
        };
        for other in others {
            self.remove_staged(&other);
        }
        let refuse = |held: u64| {
            warn!(%path, offset, held, size, "resume refused: offset not held");
            self.remove_staged(&name);
            Err(Error::BadOffset {
                path: path.to_string(),
                offset,
                held,
            })
        };
        if offset == 0 {
            // A stale partial (or a file a crash left) starts afresh.
            if let Err(e) = self.inner.staging.remove_file(&name)
                && e.kind() != io::ErrorKind::NotFound
            {
                self.release(&name);
                return Err(io_err("remove_partial", &name)(e));
            }
            let file = self.create_named(&name, mode)?;
            return Ok((file, name, blake3::Hasher::new()));
        }
        let held = held.unwrap_or(0);
        if offset > held || offset > size {
            return refuse(held);
        }
        let mut o = OpenOptions::new();
        o.write(true).read(true);
        let reopened = self.inner.staging.open_with(&name, &o).and_then(|mut f| {
            f.set_len(offset)?;
            f.set_permissions(Permissions::from_std(std::fs::Permissions::from_mode(mode)))?;
            let hasher = hash_prefix(&mut f, offset)?;
            Ok((f, hasher))
        });
        match reopened {
            Ok((file, hasher)) => {
                info!(%path, offset, size, "transfer resumed");
                Ok((file, name, hasher))
            }
            // Gone or shorter than recorded: not held after all.
            Err(e) => {
                warn!(%path, error = %e, "cannot reopen partial");
                refuse(0)
            }
        }
    }

    /// A cut transfer: a resumable one with bytes in is made durable and
    /// kept as a partial (its claim released: it is at rest); anything else
    /// is removed. Blocking (fsync).
    pub(super) fn keep_or_remove(&self, up: Upload) {
        if !up.resumable || up.written == 0 {
            self.remove_staged(&up.staged_name);
            return;
        }
        // Only what is durable is offered for a resume.
        if let Err(e) = up.file.sync_data() {
            warn!(path = %up.path, error = %e, "cannot keep partial");
            self.remove_staged(&up.staged_name);
            return;
        }
        drop(up.file);
        let evicted = lock(&self.inner.partials).insert(
            up.staged_name.clone(),
            up.written,
            std::time::SystemTime::now(),
        );
        self.release(&up.staged_name);
        info!(path = %up.path, held = up.written, size = up.size, "transfer cut, partial kept");
        for name in evicted {
            self.remove_partial(&name);
        }
    }

    /// Removes a partial at rest, unless a transfer claimed it meanwhile.
    pub(super) fn remove_partial(&self, name: &str) {
        let claimed = lock(&self.inner.claimed);
        if claimed.contains(name) {
            return;
        }
        if let Err(e) = self.inner.staging.remove_file(name)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(name, error = %e, "cannot remove partial");
        }
    }

    /// Sweeps the partials: each unclaimed one is registered (found after a
    /// restart) or removed (expired, not a partial's name, not a file);
    /// then the oldest beyond [`MAX_PARTIALS`] go.
    pub(super) fn sweep_partials(&self) -> Result<usize, Error> {
        let staging = &self.inner.staging;
        let entries = match staging.read_dir(PARTIAL_DIR) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            r => r.map_err(io_err("read_dir", "staging/partial"))?,
        };
        let now = std::time::SystemTime::now();
        let (mut n, mut evicted, mut found) = (0, Vec::new(), HashSet::new());
        for ent in entries {
            let ent = ent.map_err(io_err("read_dir", "staging/partial"))?;
            let file = ent.file_name().to_string_lossy().into_owned();
            let name = format!("{}/{file}", PARTIAL_DIR);
            let meta = ent.metadata().ok().filter(|m| m.is_file());
            // Decided under the claims lock: a transfer claiming it after
            // the listing was taken is seen here.
            let claimed = lock(&self.inner.claimed);
            if claimed.contains(&name) {
                found.insert(name);
                continue;
            }
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let keep = match (&meta, modified) {
                (Some(m), Some(t)) if is_partial_file(&file) && m.len() > 0 => {
                    (!expired(t.into_std(), now)).then_some((m.len(), t.into_std()))
                }
                _ => None,
            };
            let mut partials = lock(&self.inner.partials);
            if let Some((len, at)) = keep {
                if !partials.contains(&name) {
                    evicted.extend(partials.insert(name.clone(), len, at));
                }
                found.insert(name);
                continue;
            }
            partials.take(&name);
            drop(partials);
            let r = if meta.is_none() && ent.file_type().is_ok_and(|t| t.is_dir()) {
                staging.remove_dir_all(&name)
            } else {
                staging.remove_file(&name)
            };
            drop(claimed);
            match r {
                Ok(()) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warn!(name, error = %e, "cannot sweep partial"),
            }
        }
        // Kept since the listing was taken, a partial is not in it: only
        // older ones are forgotten.
        lock(&self.inner.partials).forget_missing(&found, now);
        for name in &evicted {
            self.remove_partial(name);
        }
        Ok(n + evicted.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn names_are_found_again_and_recognised() {
        let h = ContentHash::of(b"x");
        let name = partial_name(&p("a/b.bin"), &h);
        assert_eq!(name, partial_name(&p("a/b.bin"), &h));
        assert_ne!(name, partial_name(&p("a/c.bin"), &h));
        let file = name.strip_prefix("partial/").unwrap();
        assert!(is_partial_file(file), "{file}");
        for bad in ["x.part", "u0", "abc-def.part", &format!("{file}.tmp")] {
            assert!(!is_partial_file(bad), "{bad}");
        }
    }

    #[test]
    fn the_set_is_bounded_oldest_first_and_one_path_drops_its_others() {
        let mut set = Partials::default();
        let t0 = SystemTime::UNIX_EPOCH;
        for i in 0..MAX_PARTIALS as u64 {
            let name = partial_name(&p(&format!("f{i}")), &ContentHash::of(b"x"));
            assert!(
                set.insert(name, i, t0 + Duration::from_secs(i + 1))
                    .is_empty()
            );
        }
        let newest = partial_name(&p("new"), &ContentHash::of(b"x"));
        let evicted = set.insert(newest.clone(), 1, t0 + Duration::from_secs(1000));
        assert_eq!(
            evicted,
            vec![partial_name(&p("f0"), &ContentHash::of(b"x"))]
        );
        assert_eq!(set.len(), MAX_PARTIALS);
        let other = partial_name(&p("new"), &ContentHash::of(b"y"));
        assert_eq!(set.take_others_of(&p("new"), &other), vec![newest]);
        assert!(set.get(&other).is_none());
    }

    #[test]
    fn age_limit() {
        let now = SystemTime::now();
        assert!(!expired(now - Duration::from_secs(60), now));
        assert!(expired(now - PARTIAL_MAX_AGE - Duration::from_secs(1), now));
        // A clock gone backwards does not expire it.
        assert!(!expired(now + Duration::from_secs(60), now));
    }
}
