//! The node's workspace scanner (blocking; run it on a blocking thread).
//!
//! Walks the workspace without following symlinks, honours `.ganglionignore`
//! (gitignore syntax) and the built-in ignores, stats every entry and hashes a
//! file only when its `(size, mtime_ns, inode, dev, mode)` differs from the
//! index. After hashing it stats the open file and the path again: if either
//! moved, the hash is not trusted and the path is reported for a re-scan.
//!
//! Names that are not UTF-8 (or that a [`RelPath`] refuses, such as a name
//! containing a backslash) are skipped and reported: they cannot cross the wire.
//! So are paths deeper or longer than a [`RelPath`] may be, and the walk does
//! not descend below them.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use ganglion_core::RelPath;
use ganglion_core::relpath::{MAX_DEPTH, MAX_PATH};
use ignore::Match;
use ignore::gitignore::Gitignore;
use tracing::{debug, warn};

use crate::entry::{ContentHash, Entry, EntryKind, Replica, Version};
use crate::workspace::WorkspaceDir;

/// Names never mirrored: Ganglion's own state.
pub const BUILTIN_IGNORES: &[&str] = &[".ganglion"];
/// The per-workspace ignore file, gitignore syntax.
pub const IGNORE_FILE: &str = ".ganglionignore";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the workspace root")]
    Root { path: PathBuf, source: io::Error },
}

/// Why a path was left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    NotUtf8,
    InvalidPath(String),
    SymlinkTargetNotUtf8,
    Unreadable(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The path, lossily converted for display.
    pub path: String,
    pub reason: SkipReason,
}

#[derive(Debug, Default)]
pub struct ScanReport {
    /// Every mirrored entry of the workspace (seq and version left at 0).
    pub entries: Vec<Entry>,
    pub skipped: Vec<Skipped>,
    /// Files that changed while being hashed: their prior entry (if any) is
    /// kept in `entries`; scan them again.
    pub unstable: Vec<RelPath>,
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    /// The `.ganglionignore` files the walk honoured, for judging later
    /// single-path changes by the same rules.
    pub ignores: IgnoreRules,
}

/// The workspace's `.ganglionignore` files (the root's and nested ones), as a
/// full scan found them: judges a watched path without walking the tree, with
/// the walk's semantics (a deeper file overrides a shallower one, `!` re-includes,
/// a path under an ignored directory is ignored).
#[derive(Clone, Debug, Default)]
pub struct IgnoreRules {
    root: PathBuf,
    /// Keyed by the directory holding the file ("" for the workspace root).
    by_dir: HashMap<String, Gitignore>,
}

impl IgnoreRules {
    /// Reads the ignore files of `dirs` (relative directories, "" for the
    /// root). A file that is missing or unreadable adds no rules (as in the walk).
    pub fn load<'a>(root: &Path, dirs: impl IntoIterator<Item = &'a str>) -> Self {
        let mut by_dir = HashMap::new();
        for dir in dirs {
            let (gi, err) = Gitignore::new(root.join(dir).join(IGNORE_FILE));
            if let Some(e) = err {
                debug!(dir, error = %e, "ignore file partly read");
            }
            if !gi.is_empty() {
                by_dir.insert(dir.to_owned(), gi);
            }
        }
        Self {
            root: root.to_owned(),
            by_dir,
        }
    }

    /// The directories whose ignore file holds rules.
    pub fn dirs(&self) -> impl Iterator<Item = &str> {
        self.by_dir.keys().map(String::as_str)
    }

    /// Whether `rel` (a directory when `is_dir`) is left out of the mirror.
    pub fn is_ignored(&self, rel: &RelPath, is_dir: bool) -> bool {
        if self.by_dir.is_empty() {
            return false;
        }
        let parts: Vec<&str> = rel.components().collect();
        (1..=parts.len()).any(|n| {
            let path = parts[..n].join("/");
            self.decides(&path, n < parts.len() || is_dir)
        })
    }

    /// The deepest ignore file with an opinion on `path` decides.
    fn decides(&self, path: &str, is_dir: bool) -> bool {
        let full = self.root.join(path);
        let mut dir = path;
        loop {
            dir = dir.rfind('/').map_or("", |i| &dir[..i]);
            if let Some(gi) = self.by_dir.get(dir) {
                match gi.matched(&full, is_dir) {
                    Match::Ignore(_) => return true,
                    Match::Whitelist(_) => return false,
                    Match::None => {}
                }
            }
            if dir.is_empty() {
                return false;
            }
        }
    }
}

/// Scans `root` entirely. `prior` is the index's view (by path).
pub fn scan(root: &Path, prior: &HashMap<RelPath, Entry>) -> Result<ScanReport, Error> {
    let dir = WorkspaceDir::open(root).map_err(|source| Error::Root {
        path: root.to_owned(),
        source,
    })?;
    let mut report = ScanReport::default();
    // Walk first (cheap: directory reads), then stat and hash on a few
    // threads: a first scan hashes every byte of the workspace.
    let walked = walk(root, prior, &mut report);
    stat_all(&dir, walked.found, &mut report);
    report.ignores = IgnoreRules::load(root, walked.ignore_dirs.iter().map(String::as_str));
    debug!(
        entries = report.entries.len(),
        hashed = report.files_hashed,
        "scan done"
    );
    Ok(report)
}

/// What the walk of a scan found.
struct Walked<'p> {
    /// Every path to stat, in walk order, with its prior entry: at the same
    /// path, or (a renamed file) with the same inode.
    found: Vec<(RelPath, Option<&'p Entry>)>,
    /// Directories holding an ignore file ("" for the root, always listed).
    ignore_dirs: Vec<String>,
}

/// Walks the workspace; what cannot be mirrored goes to `report.skipped`.
fn walk<'p>(
    root: &Path,
    prior: &'p HashMap<RelPath, Entry>,
    report: &mut ScanReport,
) -> Walked<'p> {
    // A renamed file keeps (dev, inode, size, mtime, mode): its hash is reused.
    let by_inode: HashMap<(u64, u64), &Entry> = prior
        .values()
        .filter(|e| e.kind == EntryKind::File && e.hash.is_some())
        .map(|e| ((e.dev, e.inode), e))
        .collect();
    let pruned: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
    let mut walked = Walked {
        found: Vec::new(),
        ignore_dirs: vec![String::new()],
    };
    for dent in walker(root, pruned.clone()) {
        let dent = match dent {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "scan error");
                report.skipped.push(Skipped {
                    path: String::new(),
                    reason: SkipReason::Unreadable(e.to_string()),
                });
                continue;
            }
        };
        if dent.depth() == 0 {
            continue;
        }
        let Ok(rel) = dent.path().strip_prefix(root) else {
            continue;
        };
        if dent.depth() > 1
            && dent.file_name() == IGNORE_FILE
            && let Some(dir) = rel.parent().and_then(Path::to_str)
        {
            walked.ignore_dirs.push(dir.to_owned());
        }
        let rel = match rel_path(rel) {
            Ok(r) => r,
            Err(reason) => {
                warn!(path = %rel.display(), ?reason, "skipping a name that cannot be mirrored");
                report.skipped.push(Skipped {
                    path: rel.display().to_string(),
                    reason,
                });
                continue;
            }
        };
        // On a first scan nothing is known: no stat to look a rename up.
        let before = prior.get(&rel).or_else(|| {
            if by_inode.is_empty() {
                return None;
            }
            let md = dent.metadata().ok()?;
            by_inode.get(&(md.dev(), md.ino())).copied()
        });
        walked.found.push((rel, before));
    }
    skip_pruned(root, &pruned, report);
    walked
}

/// The walk of `root`: no symlink followed, `.ganglionignore` honoured, the
/// built-in ignores left out, and paths beyond the bounds of a [`RelPath`]
/// pruned (listed in `pruned`).
fn walker(root: &Path, pruned: Arc<Mutex<Vec<PathBuf>>>) -> ignore::Walk {
    let root_len = root.as_os_str().len();
    ignore::WalkBuilder::new(root)
        .follow_links(false)
        .hidden(false)
        .parents(false)
        .ignore(false)
        .git_ignore(false)
        .git_global(false)
        .git_exclude(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .filter_entry(move |e| {
            if e.depth() == 1 && BUILTIN_IGNORES.iter().any(|n| e.file_name() == *n) {
                return false;
            }
            // Beyond the bounds of a RelPath: not mirrored, and nothing
            // below it is looked at (a 10,000-deep chain costs one entry).
            let len = e.path().as_os_str().len().saturating_sub(root_len + 1);
            if e.depth() > MAX_DEPTH || len > MAX_PATH {
                pruned.lock().expect("lock").push(e.path().to_path_buf());
                return false;
            }
            true
        })
        .build()
}

/// Reports the paths the walk pruned as skipped.
fn skip_pruned(root: &Path, pruned: &Mutex<Vec<PathBuf>>, report: &mut ScanReport) {
    for p in std::mem::take(&mut *pruned.lock().expect("lock")) {
        let rel = p.strip_prefix(root).unwrap_or(&p);
        let reason = SkipReason::InvalidPath(format!(
            "deeper than {MAX_DEPTH} components or longer than {MAX_PATH} bytes; nothing below it is mirrored"
        ));
        warn!(path = %rel.display(), ?reason, "skipping a path that cannot be mirrored");
        report.skipped.push(Skipped {
            path: rel.display().to_string(),
            reason,
        });
    }
}

/// Threads that stat and hash during a scan, at most.
const SCAN_THREADS: usize = 4;
/// Paths a scan thread takes at a time.
const SCAN_CHUNK: usize = 64;

/// Stats (and hashes, where needed) every path found, on up to
/// [`SCAN_THREADS`] threads; results are kept in walk order.
fn stat_all(dir: &WorkspaceDir, found: Vec<(RelPath, Option<&Entry>)>, report: &mut ScanReport) {
    type Stat = Result<Option<Entry>, SkipReason>;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, SCAN_THREADS)
        .min(found.len().div_ceil(SCAN_CHUNK).max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = |part: &mut ScanReport| {
        let mut out: Vec<(usize, Stat)> = Vec::new();
        loop {
            let start = next.fetch_add(SCAN_CHUNK, std::sync::atomic::Ordering::Relaxed);
            if start >= found.len() {
                return out;
            }
            for (i, (rel, before)) in found.iter().enumerate().skip(start).take(SCAN_CHUNK) {
                out.push((i, stat_path(dir, rel, *before, part)));
            }
        }
    };
    let parts: Vec<(ScanReport, Vec<(usize, Stat)>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut part = ScanReport::default();
                    let out = work(&mut part);
                    (part, out)
                })
            })
            .collect();
        let mut part = ScanReport::default();
        let out = work(&mut part);
        let mut parts = vec![(part, out)];
        parts.extend(
            handles
                .into_iter()
                .map(|h| h.join().expect("scan thread panicked")),
        );
        parts
    });
    let mut results: Vec<Option<Stat>> = (0..found.len()).map(|_| None).collect();
    for (part, out) in parts {
        report.files_hashed += part.files_hashed;
        report.bytes_hashed += part.bytes_hashed;
        report.unstable.extend(part.unstable);
        for (i, r) in out {
            results[i] = Some(r);
        }
    }
    for ((rel, _), r) in found.into_iter().zip(results) {
        match r.expect("every path stat'ed") {
            Ok(Some(e)) => report.entries.push(e),
            Ok(None) => {}
            Err(reason) => report.skipped.push(Skipped {
                path: rel.to_string(),
                reason,
            }),
        }
    }
}

fn rel_path(rel: &Path) -> Result<RelPath, SkipReason> {
    let s = rel.to_str().ok_or(SkipReason::NotUtf8)?;
    RelPath::parse(s).map_err(|e| SkipReason::InvalidPath(e.to_string()))
}

/// Stats one path (and hashes it if needed), reached from the workspace root
/// without following a symlink on the way ([`WorkspaceDir`]). `Ok(None)`: it
/// does not exist (nor does a path through a symlink or a file: the link is
/// the entry, what lies behind it is not the workspace's), or it is new and
/// changed while being hashed (listed in `report.unstable`).
pub fn stat_path(
    dir: &WorkspaceDir,
    rel: &RelPath,
    prior: Option<&Entry>,
    report: &mut ScanReport,
) -> Result<Option<Entry>, SkipReason> {
    let unreadable = |e: io::Error| SkipReason::Unreadable(e.to_string());
    let (handle, meta) = match dir.entry(rel).and_then(|f| f.metadata().map(|m| (f, m))) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound || through_link(&e) => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let mut entry = entry_from_meta(rel.clone(), &meta);
    match entry.kind {
        EntryKind::Dir => {}
        EntryKind::Symlink => {
            let target = WorkspaceDir::read_link(&handle).map_err(unreadable)?;
            let target = String::from_utf8(target).map_err(|_| SkipReason::SymlinkTargetNotUtf8)?;
            entry.symlink_target = Some(target);
        }
        EntryKind::File => {
            if let Some(p) = prior.filter(|p| p.same_stat(&entry) && p.hash.is_some()) {
                entry.hash = p.hash;
            } else {
                match hash_stable(dir, rel, &meta) {
                    Ok(Some((hash, n))) => {
                        report.files_hashed += 1;
                        report.bytes_hashed += n;
                        entry.hash = Some(hash);
                    }
                    Ok(None) => {
                        debug!(path = %rel, "file changed while being hashed");
                        report.unstable.push(rel.clone());
                        return Ok(prior.filter(|p| p.path == *rel).cloned());
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(unreadable(e)),
                }
            }
        }
    }
    Ok(Some(entry))
}

/// Builds an entry (no hash) from `lstat` results.
pub fn entry_from_meta(path: RelPath, meta: &Metadata) -> Entry {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else {
        EntryKind::File
    };
    Entry {
        path,
        kind,
        size: if kind == EntryKind::Dir {
            0
        } else {
            meta.size()
        },
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        mode: meta.mode() & 0o7777,
        inode: meta.ino(),
        dev: meta.dev(),
        symlink_target: None,
        hash: None,
        seq: 0,
        version: Version {
            origin: Replica::Node,
            seq: 0,
        },
    }
}

fn stat_key(m: &Metadata) -> (u64, i64, i64, u64, u64, u32) {
    (
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino(),
        m.dev(),
        m.mode(),
    )
}

/// Whether opening a path failed because a symlink (or a file, where a
/// directory must be) lies on it.
fn through_link(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
}

/// Hashes a regular file (reached as [`stat_path`] reaches it, so a symlink
/// swapped in is refused), then checks that neither the open file nor the
/// path changed meanwhile.
fn hash_stable(
    dir: &WorkspaceDir,
    rel: &RelPath,
    before: &Metadata,
) -> io::Result<Option<(ContentHash, u64)>> {
    let file = match dir.open_read(rel) {
        Ok(f) => f,
        // Replaced by a link since the stat.
        Err(e) if through_link(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let opened = file.metadata()?;
    if !opened.is_file() || stat_key(&opened) != stat_key(before) {
        return Ok(None);
    }
    let mut hasher = blake3::Hasher::new();
    let n = hasher.update_reader(&file)?.count();
    let after_fd = file.metadata()?;
    let after_path = dir.metadata(rel)?;
    if stat_key(&after_fd) != stat_key(before)
        || stat_key(&after_path) != stat_key(before)
        || n != before.size()
    {
        return Ok(None);
    }
    Ok(Some((hasher.finalize().into(), n)))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::Instant;

    use super::*;

    fn by_path(r: &ScanReport) -> HashMap<RelPath, Entry> {
        r.entries
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect()
    }

    #[test]
    fn second_scan_hashes_nothing_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/c.txt"), b"hello").unwrap();
        fs::write(root.join("x"), b"").unwrap();
        let first = scan(root, &HashMap::new()).unwrap();
        assert_eq!(first.files_hashed, 2);
        let second = scan(root, &by_path(&first)).unwrap();
        assert_eq!(second.files_hashed, 0);
        assert_eq!(second.entries, first.entries);
        fs::write(root.join("x"), b"changed").unwrap();
        let third = scan(root, &by_path(&second)).unwrap();
        assert_eq!(third.files_hashed, 1);
        assert_eq!(third.bytes_hashed, 7);
    }

    /// Every path of the tree, relative, with whether it is a directory.
    fn all_paths(root: &Path, dir: &Path, out: &mut Vec<(RelPath, bool)>) {
        for d in fs::read_dir(dir).unwrap() {
            let d = d.unwrap();
            let is_dir = d.file_type().unwrap().is_dir();
            let rel = d
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            out.push((RelPath::parse(&rel).unwrap(), is_dir));
            if is_dir {
                all_paths(root, &d.path(), out);
            }
        }
    }

    #[test]
    fn ignore_rules_judge_single_paths_as_the_walk_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let files = [
            ".ganglionignore",
            "a.log",
            "keep.rs",
            "build/out.o",
            "src/.ganglionignore",
            "src/x.tmp",
            "src/main.rs",
            "src/important.log",
            "src/deep/.ganglionignore",
            "src/deep/y.tmp",
            "src/deep/z.rs",
            "src/deep/cache/c",
            "other/x.tmp",
            "other/cache/c",
            "docs/build/b",
        ];
        for f in files {
            fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            fs::write(root.join(f), b"x").unwrap();
        }
        fs::write(root.join(".ganglionignore"), b"*.log\n/build/\n").unwrap();
        // Nested: ignores *.tmp, re-includes one log the root ignores.
        fs::write(root.join("src/.ganglionignore"), b"*.tmp\n!important.log\n").unwrap();
        // Deeper: re-includes *.tmp again, ignores a directory.
        fs::write(root.join("src/deep/.ganglionignore"), b"!*.tmp\ncache/\n").unwrap();
        let report = scan(root, &HashMap::new()).unwrap();
        let mirrored: std::collections::HashSet<&str> =
            report.entries.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "keep.rs",
            "src/main.rs",
            "src/important.log",
            "src/deep/y.tmp",
            "other/x.tmp",
            "docs/build/b",
        ] {
            assert!(mirrored.contains(want), "{want} mirrored: {mirrored:?}");
        }
        for not in ["a.log", "build", "src/x.tmp", "src/deep/cache"] {
            assert!(!mirrored.contains(not), "{not} ignored");
        }
        let mut paths = Vec::new();
        all_paths(root, root, &mut paths);
        assert!(paths.len() > 15);
        for (rel, is_dir) in paths {
            assert_eq!(
                report.ignores.is_ignored(&rel, is_dir),
                !mirrored.contains(rel.as_str()),
                "{rel}: single-path judgement differs from the walk"
            );
        }
    }

    #[test]
    fn honours_ignores_and_skips_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join(".ganglion")).unwrap();
        fs::write(root.join(".ganglion/state"), b"s").unwrap();
        fs::write(root.join(".ganglionignore"), b"*.log\nbuild/\n").unwrap();
        fs::create_dir_all(root.join("build")).unwrap();
        fs::write(root.join("build/out"), b"o").unwrap();
        fs::write(root.join("debug.log"), b"l").unwrap();
        fs::write(root.join("keep.rs"), b"k").unwrap();
        fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad\xff")), b"b").unwrap();
        fs::write(root.join("back\\slash"), b"b").unwrap();
        let r = scan(root, &HashMap::new()).unwrap();
        let names: Vec<&str> = r.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            names
                .iter()
                .filter(|n| **n == "keep.rs" || **n == ".ganglionignore")
                .count(),
            2
        );
        assert!(
            !names.iter().any(|n| n.starts_with(".ganglion/")
                || n.starts_with("build")
                || n.ends_with(".log"))
        );
        assert!(r.skipped.iter().any(|s| s.reason == SkipReason::NotUtf8));
        assert!(
            r.skipped
                .iter()
                .any(|s| matches!(s.reason, SkipReason::InvalidPath(_)))
        );
    }

    #[test]
    fn symlinks_are_links_and_exec_bit_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        symlink("/etc/passwd", root.join("out")).unwrap();
        fs::write(root.join("run.sh"), b"#!/bin/sh").unwrap();
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let r = scan(root, &HashMap::new()).unwrap();
        let m = by_path(&r);
        let link = &m[&RelPath::parse("out").unwrap()];
        assert_eq!(link.kind, EntryKind::Symlink);
        assert_eq!(link.symlink_target.as_deref(), Some("/etc/passwd"));
        assert!(link.hash.is_none());
        assert!(m[&RelPath::parse("run.sh").unwrap()].is_executable());
        assert_eq!(r.files_hashed, 1);
    }

    #[test]
    fn a_file_changing_while_hashed_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let path = root.join("grow");
        fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let before = fs::symlink_metadata(&path).unwrap();
        let (ws, grow) = (
            WorkspaceDir::open(root).unwrap(),
            RelPath::parse("grow").unwrap(),
        );
        // The file changes after the stat the hash would be checked against.
        fs::write(&path, vec![8u8; (1 << 20) + 1]).unwrap();
        assert!(hash_stable(&ws, &grow, &before).unwrap().is_none());
        // A file whose content changes but keeps its size and mtime is caught
        // by the fd/path re-stat only if the stat moved; equal stat keys mean
        // the scanner trusts the hash (the classic mtime-granularity limit).
        let now = fs::symlink_metadata(&path).unwrap();
        assert!(hash_stable(&ws, &grow, &now).unwrap().is_some());
        // Replaced by a link after the stat: not hashed through it.
        fs::remove_file(&path).unwrap();
        symlink("/etc/passwd", &path).unwrap();
        assert!(hash_stable(&ws, &grow, &now).unwrap().is_none());
    }

    /// A path below a symlink (as a watcher event or a race could name one)
    /// is not the workspace's: nothing behind the link is stat'ed or hashed,
    /// and a full scan lists the link alone.
    #[test]
    fn nothing_is_reached_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("ws"), dir.path().join("outside"));
        fs::create_dir_all(root.join("d")).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"secret").unwrap();
        fs::write(root.join("d/f"), b"inside").unwrap();
        symlink(&outside, root.join("out")).unwrap();
        symlink("d", root.join("in")).unwrap();
        let ws = WorkspaceDir::open(&root).unwrap();
        let mut report = ScanReport::default();
        for p in ["out/secret", "in/f", "d/f/below-a-file"] {
            let r = stat_path(&ws, &RelPath::parse(p).unwrap(), None, &mut report);
            assert_eq!(r, Ok(None), "{p}");
        }
        assert_eq!((report.files_hashed, report.skipped.len()), (0, 0));
        let r = scan(&root, &HashMap::new()).unwrap();
        let mut paths: Vec<&str> = r.entries.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["d", "d/f", "in", "out"]);
        assert_eq!(r.files_hashed, 1);
    }

    #[test]
    #[ignore = "slow (10k files): cargo test -p ganglion-mirror scan_10k -- --ignored"]
    fn scan_10k_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in 0..100 {
            fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
            for f in 0..100 {
                fs::write(root.join(format!("d{d}/f{f}")), format!("{d}-{f}")).unwrap();
            }
        }
        let first = scan(root, &HashMap::new()).unwrap();
        let prior = by_path(&first);
        let t = Instant::now();
        let second = scan(root, &prior).unwrap();
        let took = t.elapsed();
        assert_eq!(second.files_hashed, 0);
        tracing::info!(
            ?took,
            entries = second.entries.len(),
            "rescan of 10k unchanged files"
        );
    }
}
