//! Issue 14 with real processes: hub-side writes (`mirror put|rm|mv`)
//! reach the node's workspace, online or after the node comes back;
//! `--if-hash` is a compare-and-swap; hostile paths and links are refused;
//! concurrent edits keep both versions (a conflict copy on both sides,
//! listed, resolved); an edit beats a delete. After every scenario both
//! trees are equal and `mirror verify` is clean.

use std::io::Write as _;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use super::*;

/// The workspace as the mirror must show it (the node's `.ganglion` aside).
fn workspace_view(ws: &Path) -> BTreeMap<String, Node> {
    expected(ws, &[".ganglion"])
}

/// Waits until the workspace and the mirror are equal and nothing waits
/// either way; then `mirror verify` must be clean.
#[track_caller]
fn wait_converged(hub: &Hub, node: &str, ws: &Path) {
    let root = hub.dir.join("mirrors").join(node);
    wait_for("both trees equal, nothing pending", CHANGE, || {
        let s = status(hub, node);
        let idle = s["pending"] == 0 && s["in_flight"] == 0 && s["to_node"] == 0;
        (idle && workspace_view(ws) == snapshot(&root)).then_some(())
    });
    hub.ok(&["mirror", "verify", node]);
}

fn put(hub: &Hub, s: &Scene, path: &str, data: &[u8], extra: &[&str]) -> Output {
    let local = s.path(&format!("put-{}", rand_name()));
    std::fs::write(&local, data).unwrap();
    let mut args = vec![
        "mirror",
        "put",
        "n1",
        path,
        "--file",
        local.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    hub.cli(&args)
}

fn rand_name() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string()
}

fn hash_of(data: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(data).to_hex())
}

#[track_caller]
fn wait_file(ws: &Path, rel: &str, want: &[u8]) {
    wait_for(&format!("{rel} in the workspace"), CHANGE, || {
        (std::fs::read(ws.join(rel)).ok().as_deref() == Some(want)).then_some(())
    });
}

#[test]
fn hub_writes_reach_the_workspace_and_if_hash_is_a_compare_and_swap() {
    let s = Scene::new();
    let ws = s.workspace("n1");
    write(&ws, "keep.txt", b"node file\n");
    std::os::unix::fs::symlink("/etc", ws.join("link")).unwrap();
    let (hub, _node) = hub_and_node(&s);
    wait_in_sync(&hub, "n1", 1, READY);

    // A put: the contract's JSON, then the file in the workspace.
    let o = put(&hub, &s, "docs/new.md", b"from the hub\n", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["path"], "docs/new.md");
    assert_eq!(r["hash"], hash_of(b"from the hub\n"));
    assert!(r["version"].as_u64().unwrap() >= 1);
    wait_file(&ws, "docs/new.md", b"from the hub\n");
    wait_converged(&hub, "n1", &ws);

    // Stdin works as well as --file, and the exec bit crosses over.
    let mut cmd = command();
    cmd.args([
        "mirror",
        "put",
        "n1",
        "run.sh",
        "--executable",
        "--data-dir",
    ])
    .arg(&hub.dir)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"#!/bin/sh\necho hi\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    wait_file(&ws, "run.sh", b"#!/bin/sh\necho hi\n");
    let mode = std::fs::metadata(ws.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o111, 0, "executable on the node");

    // --if-hash with a stale hash: exit 1, nothing changed anywhere.
    let o = put(
        &hub,
        &s,
        "keep.txt",
        b"lost?\n",
        &["--if-hash", &hash_of(b"stale\n")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("not blake3:"), "{}", stderr(&o));
    // With the current hash it goes through.
    let o = put(
        &hub,
        &s,
        "keep.txt",
        b"edited by the hub\n",
        &["--if-hash", &hash_of(b"node file\n")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    wait_file(&ws, "keep.txt", b"edited by the hub\n");

    // mv and rm.
    hub.ok(&["mirror", "mv", "n1", "docs/new.md", "docs/renamed.md"]);
    wait_file(&ws, "docs/renamed.md", b"from the hub\n");
    assert!(!ws.join("docs/new.md").exists());
    hub.ok(&["mirror", "rm", "n1", "run.sh"]);
    wait_for("run.sh removed", CHANGE, || {
        (!ws.join("run.sh").exists()).then_some(())
    });
    let o = hub.cli(&["mirror", "rm", "n1", "never-was.txt"]);
    assert_eq!(o.status.code(), Some(1));

    // Hostile paths and a write through the node's symlink: refused,
    // nothing written (in the mirror, the workspace or outside).
    for bad in ["../escape.txt", "/etc/passwd", "a/../../b", "link/x.txt"] {
        let o = put(&hub, &s, bad, b"hostile\n", &[]);
        assert!(!o.status.success(), "{bad} was accepted");
    }
    assert!(!s.path("escape.txt").exists());
    assert!(
        std::fs::symlink_metadata(ws.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    wait_converged(&hub, "n1", &ws);
    let st = status(&hub, "n1");
    assert_eq!(st["to_node"], 0);
    assert_eq!(st["conflicts"], 0);
}

#[test]
fn an_offline_put_and_a_node_edit_keep_both_versions_until_resolved() {
    let s = Scene::new();
    let ws = s.workspace("n1");
    write(&ws, "notes.txt", b"v1\n");
    write(&ws, "gone.txt", b"v1\n");
    let (hub, node) = hub_and_node(&s);
    wait_in_sync(&hub, "n1", 2, READY);

    // The node goes away; the hub writes both files and deletes one.
    drop(node);
    hub.wait_status("n1", "offline", Duration::from_secs(30));
    let o = put(&hub, &s, "notes.txt", b"hub's v2\n", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    hub.ok(&["mirror", "rm", "n1", "gone.txt"]);
    assert_eq!(status(&hub, "n1")["to_node"], 2, "queued while offline");

    // Meanwhile the node's user edits both.
    write(&ws, "notes.txt", b"node's v2\n");
    write(&ws, "gone.txt", b"node's edit beats the hub's delete\n");
    let _node = s.start("n1");

    // Both versions of notes.txt on both sides; the edit of gone.txt kept.
    wait_file(&ws, "notes.txt", b"hub's v2\n");
    wait_converged(&hub, "n1", &ws);
    assert_eq!(
        std::fs::read(ws.join("gone.txt")).unwrap(),
        b"node's edit beats the hub's delete\n"
    );
    let conflicts = hub.json(&["mirror", "conflicts", "n1"]);
    let list = conflicts.as_array().unwrap();
    assert_eq!(list.len(), 1, "{conflicts}");
    let c = &list[0];
    assert_eq!(c["path"], "notes.txt");
    assert_eq!(c["origin"], "n1");
    let copy = c["conflict_path"].as_str().unwrap();
    assert!(
        copy.starts_with("notes.sync-conflict-") && copy.ends_with("-n1.txt"),
        "{copy}"
    );
    assert_eq!(std::fs::read(ws.join(copy)).unwrap(), b"node's v2\n");
    assert_eq!(status(&hub, "n1")["conflicts"], 1);

    // Keep the node's version: it goes back to the path, the copy goes.
    hub.ok(&["mirror", "resolve", "n1", "notes.txt", "--keep", "conflict"]);
    wait_file(&ws, "notes.txt", b"node's v2\n");
    wait_for("the copy removed", CHANGE, || {
        (!ws.join(copy).exists()).then_some(())
    });
    wait_converged(&hub, "n1", &ws);
    assert_eq!(
        hub.json(&["mirror", "conflicts", "n1"]),
        serde_json::json!([])
    );
    assert_eq!(status(&hub, "n1")["conflicts"], 0);
    let o = hub.cli(&["mirror", "resolve", "n1", "notes.txt", "--keep", "current"]);
    assert_eq!(o.status.code(), Some(1), "no conflict left to resolve");
}

#[test]
fn a_hub_write_survives_a_hub_restart_before_the_node_applies_it() {
    let s = Scene::new();
    let ws = s.workspace("n1");
    write(&ws, "a.txt", b"a\n");
    let (mut hub, node) = hub_and_node(&s);
    wait_in_sync(&hub, "n1", 1, READY);
    drop(node);
    hub.wait_status("n1", "offline", Duration::from_secs(30));
    let o = put(&hub, &s, "queued/b.txt", b"queued across a restart\n", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (grpc, http_addr) = (hub.endpoints.grpc.clone(), hub.endpoints.http.clone());
    assert!(hub.terminate().success());
    let hub = s.hub_at("hub", &grpc, &http_addr, &[]);
    assert_eq!(status(&hub, "n1")["to_node"], 1, "the queue is durable");
    let _node = s.start("n1");
    wait_file(&ws, "queued/b.txt", b"queued across a restart\n");
    wait_converged(&hub, "n1", &ws);
}

#[test]
fn a_lost_index_turns_differences_into_conflicts_and_deletes_nothing() {
    let s = Scene::new();
    let ws = s.workspace("n1");
    write(&ws, "a.txt", b"a\n");
    write(&ws, "sub/c.txt", b"c\n");
    let (hub, node) = hub_and_node(&s);
    wait_in_sync(&hub, "n1", 2, READY);
    assert!(
        put(&hub, &s, "hub-only.txt", b"hub\n", &[])
            .status
            .success()
    );
    wait_converged(&hub, "n1", &ws);

    // Offline, the node's index is lost; its workspace changes meanwhile.
    drop(node);
    hub.wait_status("n1", "offline", Duration::from_secs(30));
    for f in ["index.db", "index.db-wal", "index.db-shm"] {
        let _ = std::fs::remove_file(s.state_dir("n1").join(f));
    }
    write(&ws, "a.txt", b"node's a, unknown to the hub\n");
    std::fs::remove_file(ws.join("hub-only.txt")).unwrap();
    let _node = s.start("n1");

    // Without an ancestor nothing is a delete: hub-only.txt comes back, and
    // both versions of a.txt are kept.
    wait_file(&ws, "hub-only.txt", b"hub\n");
    wait_converged(&hub, "n1", &ws);
    assert_eq!(std::fs::read(ws.join("a.txt")).unwrap(), b"a\n");
    let conflicts = hub.json(&["mirror", "conflicts", "n1"]);
    let list = conflicts.as_array().unwrap();
    assert_eq!(list.len(), 1, "{conflicts}");
    let copy = list[0]["conflict_path"].as_str().unwrap();
    assert_eq!(
        std::fs::read(ws.join(copy)).unwrap(),
        b"node's a, unknown to the hub\n"
    );
    assert_eq!(std::fs::read(ws.join("sub/c.txt")).unwrap(), b"c\n");
}

#[test]
fn an_emptied_workspace_halts_instead_of_deleting_and_node_restore_brings_it_back() {
    let s = Scene::new();
    let ws = s.workspace("n1");
    write(&ws, "a.txt", b"a\n");
    write(&ws, "deep/b.txt", b"b\n");
    let (hub, node) = hub_and_node(&s);
    wait_in_sync(&hub, "n1", 2, READY);
    let before = workspace_view(&ws);

    // The disk goes away: the workspace path is an empty directory.
    drop(node);
    hub.wait_status("n1", "offline", Duration::from_secs(30));
    std::fs::rename(&ws, s.path("ws-n1.away")).unwrap();
    std::fs::create_dir(&ws).unwrap();
    let node = s.start("n1");
    let st = wait_for("the mirror halted", CHANGE, || {
        let st = status(&hub, "n1");
        st["halted"].is_string().then_some(st)
    });
    assert!(st["halted"].as_str().unwrap().contains("empty"), "{st}");
    let n = hub.node("n1").unwrap();
    assert!(n["mirror_halted"].is_string(), "{n}");
    assert!(hub.ok(&["nodes", "ls"]).contains("mirror halted"));
    // Nothing was deleted at the hub.
    assert_eq!(snapshot(&hub.dir.join("mirrors").join("n1")), before);

    // `node restore` (node stopped), then a start: restored from the hub.
    drop(node);
    hub.wait_status("n1", "offline", Duration::from_secs(30));
    let mut cmd = command();
    cmd.args(["node", "restore", "--state-dir"])
        .arg(s.state_dir("n1"));
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let _node = s.start("n1");
    wait_converged(&hub, "n1", &ws);
    assert_eq!(workspace_view(&ws), before);
    assert!(status(&hub, "n1")["halted"].is_null());
    assert_eq!(
        hub.json(&["mirror", "conflicts", "n1"]),
        serde_json::json!([])
    );
}

#[test]
fn an_immutable_path_gets_the_hubs_version_back_and_the_edit_is_kept_aside() {
    let s = Scene::new();
    let ws = s.workspace("n1");
    write(&ws, "policy/rules.txt", b"hub-owned v1\n");
    write(&ws, "free.txt", b"free\n");
    let (hub, _node) = hub_and_node(&s);
    wait_in_sync(&hub, "n1", 2, READY);
    hub.ok(&["mirror", "immutable", "n1", "add", "policy/rules.txt"]);

    // The node edits the hub-owned file: the hub's version comes back, the
    // edit is kept as a conflict copy (not immutable: it reaches the hub).
    write(&ws, "policy/rules.txt", b"the node's edit\n");
    wait_file(&ws, "policy/rules.txt", b"hub-owned v1\n");
    wait_converged(&hub, "n1", &ws);
    let copies: Vec<String> = workspace_view(&ws)
        .into_keys()
        .filter(|k| k.contains(".sync-conflict-"))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        std::fs::read(ws.join(&copies[0])).unwrap(),
        b"the node's edit\n"
    );
    let conflicts = hub.json(&["mirror", "conflicts", "n1"]);
    assert_eq!(conflicts[0]["path"], "policy/rules.txt", "{conflicts}");

    // Deleted on the node: restored.
    std::fs::remove_file(ws.join("policy/rules.txt")).unwrap();
    wait_file(&ws, "policy/rules.txt", b"hub-owned v1\n");
    wait_converged(&hub, "n1", &ws);
}

#[test]
fn bad_hub_side_writes_over_http_are_refused_and_change_nothing() {
    let s = Scene::new();
    let ws = s.workspace("n1");
    write(&ws, "a.txt", b"a\n");
    let (hub, _node) = hub_and_node(&s);
    wait_in_sync(&hub, "n1", 1, READY);
    let auth = format!("Bearer {}", hub.admin_token());
    let addr = hub.endpoints.http.clone();
    let req = |method: &str, path: &str, body: &str| http(&addr, method, path, Some(&auth), body);
    let stale = hash_of(b"stale\n");
    for (method, path, body, want) in [
        (
            "PUT",
            format!("/api/v1/mirrors/n1/file?path=a.txt&if_hash={stale}"),
            "x",
            409,
        ),
        (
            "PUT",
            "/api/v1/mirrors/n1/file?path=a.txt&if_hash=md5:00".into(),
            "x",
            400,
        ),
        (
            "PUT",
            "/api/v1/mirrors/n1/file?path=..%2Fout.txt".into(),
            "x",
            400,
        ),
        (
            "PUT",
            "/api/v1/mirrors/n1/file?path=%2Fetc%2Fpasswd".into(),
            "x",
            400,
        ),
        (
            "PUT",
            "/api/v1/mirrors/n1/file?path=a.txt%2Funder".into(),
            "x",
            400,
        ),
        ("PUT", "/api/v1/mirrors/nobody/file?path=x".into(), "x", 404),
        ("PUT", "/api/v1/mirrors/n1/file".into(), "x", 400),
        (
            "DELETE",
            "/api/v1/mirrors/n1/file?path=missing.txt".into(),
            "",
            404,
        ),
        (
            "DELETE",
            format!("/api/v1/mirrors/n1/file?path=a.txt&if_hash={stale}"),
            "",
            409,
        ),
        (
            "POST",
            "/api/v1/mirrors/n1/move".into(),
            r#"{"from":"a.txt","to":"a.txt/b"}"#,
            400,
        ),
        (
            "POST",
            "/api/v1/mirrors/n1/move".into(),
            r#"{"from":"nope","to":"b"}"#,
            404,
        ),
        (
            "POST",
            "/api/v1/mirrors/n1/move".into(),
            r#"{"from":"a.txt"}"#,
            400,
        ),
        (
            "POST",
            "/api/v1/mirrors/n1/resolve".into(),
            r#"{"path":"a.txt","keep":"current"}"#,
            404,
        ),
        (
            "POST",
            "/api/v1/mirrors/n1/resolve".into(),
            r#"{"path":"a.txt","keep":"both"}"#,
            400,
        ),
    ] {
        let (code, out) = req(method, &path, body);
        assert_eq!(code, want, "{method} {path} {body}: {out}");
        assert!(
            out.contains("error"),
            "{method} {path}: a clear error: {out}"
        );
    }
    let (code, _) = http(
        &addr,
        "PUT",
        "/api/v1/mirrors/n1/file?path=x.txt",
        None,
        "x",
    );
    assert_eq!(code, 401);
    // Too large: 413, nothing staged or written.
    let big = s.path("big.bin");
    std::fs::write(&big, vec![0u8; (64 << 20) + 1]).unwrap();
    let o = hub.cli(&[
        "mirror",
        "put",
        "n1",
        "big.bin",
        "--file",
        big.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("too large"), "{}", stderr(&o));
    // Nothing of it anywhere: the workspace, the mirror, the queue.
    let st = status(&hub, "n1");
    assert_eq!(
        (st["to_node"].as_u64(), st["files"].as_u64()),
        (Some(0), Some(1)),
        "{st}"
    );
    assert_eq!(std::fs::read(ws.join("a.txt")).unwrap(), b"a\n");
    assert_eq!(staged_files(&hub.dir.join("staging").join("n1")), 0);
    wait_converged(&hub, "n1", &ws);
}

#[test]
fn case_only_renames_work_both_ways() {
    let s = Scene::new();
    let ws = s.workspace("n1");
    write(&ws, "readme.md", b"r\n");
    write(&ws, "Makefile", b"m\n");
    let (hub, _node) = hub_and_node(&s);
    wait_in_sync(&hub, "n1", 2, READY);
    // On the node: readme.md -> README.md.
    std::fs::rename(ws.join("readme.md"), ws.join("README.md")).unwrap();
    wait_converged(&hub, "n1", &ws);
    assert_eq!(mirror_paths(&hub, "n1"), ["Makefile", "README.md"]);
    // At the hub: Makefile -> makefile.
    hub.ok(&["mirror", "mv", "n1", "Makefile", "makefile"]);
    wait_file(&ws, "makefile", b"m\n");
    wait_converged(&hub, "n1", &ws);
    assert!(!ws.join("Makefile").exists());
    assert_eq!(mirror_paths(&hub, "n1"), ["README.md", "makefile"]);
}
