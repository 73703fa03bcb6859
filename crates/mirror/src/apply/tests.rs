use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;

use super::*;

fn p(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

fn now() -> Timestamp {
    Timestamp::from_millis(1_796_408_605_000)
}

struct Ws {
    dir: tempfile::TempDir,
    a: Applier,
}

fn ws() -> Ws {
    let dir = tempfile::tempdir().unwrap();
    let a = Applier::open(dir.path(), "n1").unwrap();
    Ws { dir, a }
}

impl Ws {
    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, data: &[u8]) {
        let full = self.path(rel);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, data).unwrap();
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.path(rel)).unwrap()
    }

    /// Content staged in incoming, as a download leaves it.
    fn incoming(&self, data: &[u8]) -> String {
        let (mut f, name) = self.a.create_incoming(1, false).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
        name
    }

    fn put(&self, rel: &str, data: &[u8], base: Base) -> Applied {
        let name = self.incoming(data);
        self.a
            .put(&p(rel), ContentHash::of(data), &base, &name, now())
            .unwrap()
    }

    fn incoming_is_empty(&self) -> bool {
        fs::read_dir(self.path(INCOMING)).unwrap().next().is_none()
    }
}

#[test]
fn a_put_creates_the_file_and_its_parents() {
    let w = ws();
    let out = w.put("a/b/c.txt", b"hub", Base::Absent);
    assert_eq!(w.read("a/b/c.txt"), b"hub");
    assert_eq!(out.agreed, vec![p("a"), p("a/b"), p("a/b/c.txt")]);
    assert!(out.conflicts.is_empty());
    assert!(w.incoming_is_empty());
}

#[test]
fn a_put_on_the_base_swaps_it_in() {
    let w = ws();
    w.write("f.txt", b"old");
    let out = w.put("f.txt", b"new", Base::File(ContentHash::of(b"old")));
    assert_eq!(w.read("f.txt"), b"new");
    assert!(out.conflicts.is_empty());
    assert!(w.incoming_is_empty());
}

#[test]
fn a_concurrent_local_edit_becomes_a_conflict_copy() {
    let w = ws();
    w.write("f.txt", b"local edit");
    let out = w.put("f.txt", b"hub", Base::File(ContentHash::of(b"old")));
    assert_eq!(w.read("f.txt"), b"hub");
    assert_eq!(out.conflicts.len(), 1);
    let c = &out.conflicts[0];
    assert_eq!(c.origin, "n1");
    assert_eq!(
        c.conflict_path.as_str(),
        "f.sync-conflict-20261204-182325-n1.txt"
    );
    assert_eq!(w.read(c.conflict_path.as_str()), b"local edit");
}

#[test]
fn a_write_racing_the_swap_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let a = Applier::open(dir.path(), "n1")
        .unwrap()
        .with_before_swap(move |rel| fs::write(root.join(rel.as_str()), b"raced").unwrap());
    fs::write(dir.path().join("f.txt"), b"old").unwrap();
    let (mut f, name) = a.create_incoming(1, false).unwrap();
    f.write_all(b"hub").unwrap();
    let out = a
        .put(
            &p("f.txt"),
            ContentHash::of(b"hub"),
            &Base::File(ContentHash::of(b"old")),
            &name,
            now(),
        )
        .unwrap();
    assert_eq!(fs::read(dir.path().join("f.txt")).unwrap(), b"hub");
    assert_eq!(out.conflicts.len(), 1, "{out:?}");
    let copy = dir.path().join(out.conflicts[0].conflict_path.as_str());
    assert_eq!(fs::read(copy).unwrap(), b"raced");
}

#[test]
fn the_same_content_is_already_there() {
    let w = ws();
    w.write("f.txt", b"same");
    let out = w.put("f.txt", b"same", Base::File(ContentHash::of(b"old")));
    assert!(out.conflicts.is_empty());
    assert_eq!(out.agreed, vec![p("f.txt")]);
    assert!(w.incoming_is_empty());
}

#[test]
fn a_local_directory_beats_a_file_from_the_hub() {
    let w = ws();
    w.write("d/inside.txt", b"keep me");
    let out = w.put("d", b"hub file", Base::Absent);
    assert_eq!(w.read("d/inside.txt"), b"keep me");
    assert_eq!(out.resend, vec![p("d")]);
    assert_eq!(out.conflicts[0].origin, "hub");
    assert_eq!(w.read(out.conflicts[0].conflict_path.as_str()), b"hub file");
}

#[test]
fn a_file_where_a_parent_must_be_is_moved_aside() {
    let w = ws();
    w.write("d", b"a file");
    w.put("d/x.txt", b"hub", Base::Absent);
    assert_eq!(w.read("d/x.txt"), b"hub");
    let copies: Vec<_> = fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".sync-conflict-"))
        .collect();
    assert_eq!(copies.len(), 1);
    assert_eq!(w.read(&copies[0]), b"a file");
}

#[test]
fn a_symlinked_parent_is_never_followed() {
    let w = ws();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), w.path("link")).unwrap();
    w.put("link/x.txt", b"hub", Base::Absent);
    assert!(
        fs::read_dir(outside.path()).unwrap().next().is_none(),
        "nothing written outside the workspace"
    );
    assert!(w.path("link").is_dir() && !w.path("link").is_symlink());
    assert_eq!(w.read("link/x.txt"), b"hub");
}

#[test]
fn an_edit_beats_a_delete() {
    let w = ws();
    w.write("f.txt", b"edited");
    let out =
        w.a.delete(&p("f.txt"), &Base::File(ContentHash::of(b"old")), &|_| true)
            .unwrap();
    assert_eq!(w.read("f.txt"), b"edited");
    assert_eq!(out.resend, vec![p("f.txt")]);
    w.write("g.txt", b"old");
    let out =
        w.a.delete(&p("g.txt"), &Base::File(ContentHash::of(b"old")), &|_| true)
            .unwrap();
    assert!(!w.path("g.txt").exists());
    assert_eq!(out.removed, vec![p("g.txt")]);
}

#[test]
fn a_directory_delete_keeps_what_changed() {
    let w = ws();
    w.write("d/a.txt", b"a");
    w.write("d/e/b.txt", b"b");
    w.write("d/e/changed.txt", b"c");
    let out =
        w.a.delete(&p("d"), &Base::Dir, &|rel| {
            rel.as_str() != "d/e/changed.txt"
        })
        .unwrap();
    assert!(!w.path("d/a.txt").exists() && !w.path("d/e/b.txt").exists());
    assert_eq!(w.read("d/e/changed.txt"), b"c");
    assert_eq!(out.resend, vec![p("d/e/changed.txt"), p("d")]);
}

#[test]
fn a_rename_needs_the_base_and_a_free_target() {
    let w = ws();
    w.write("a.txt", b"x");
    let base = Base::File(ContentHash::of(b"x"));
    let out =
        w.a.rename(&p("a.txt"), &p("sub/b.txt"), &base, now())
            .unwrap()
            .unwrap();
    assert_eq!(w.read("sub/b.txt"), b"x");
    assert!(out.removed.contains(&p("a.txt")));
    w.write("c.txt", b"x");
    w.write("taken.txt", b"y");
    assert_eq!(
        w.a.rename(&p("c.txt"), &p("taken.txt"), &base, now())
            .unwrap(),
        None
    );
    w.write("d.txt", b"edited");
    assert_eq!(
        w.a.rename(&p("d.txt"), &p("e.txt"), &base, now()).unwrap(),
        None
    );
}

#[test]
fn leftovers_in_incoming_are_swept_at_open() {
    let w = ws();
    w.incoming(b"half");
    let again = Applier::open(w.dir.path(), "n1").unwrap();
    drop(again);
    assert!(w.incoming_is_empty());
}

/// A put whose content is gone still leaves its parents, as at the hub.
#[test]
fn parents_only_makes_the_directories_of_a_gone_put() {
    let w = ws();
    w.write("x", b"local file where a directory goes");
    let out = w.a.parents_only(&p("x/y/z"), now()).unwrap();
    assert_eq!(out.agreed, vec![p("x"), p("x/y")]);
    assert_eq!(out.conflicts.len(), 1, "the local file is kept aside");
    assert!(w.path("x/y").is_dir());
    assert!(!w.path("x/y/z").exists());
}
