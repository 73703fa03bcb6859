//! Issue 12's STRICT escapes (items 1, 2 and 11) tried through a real hub and
//! node (port 0, temp dirs). `crates/sandbox/tests` tries every variant at the
//! sandbox level; this shows the node runs its tasks that way, and that
//! `nodes ls` reports the protections.

// Skips are printed for whoever reads the test log.
#![allow(clippy::print_stderr)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use common::*;

fn run(hub: &Hub, argv: &[&str]) -> Output {
    command()
        .arg("run")
        .arg("--data-dir")
        .arg(&hub.dir)
        .args(["--node", "n1", "--"])
        .args(argv)
        .output()
        .unwrap()
}

fn is_root() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe {
        libc::geteuid() == 0
    }
}

#[test]
fn strict_escapes_fail_through_the_real_node() {
    let scene = Scene::new();
    let hub = scene.hub("hub", &[]);
    let invite = hub.invite(&["--name", "n1"]);
    let _node = scene.join(&invite, "n1", &[]);
    hub.wait_status("n1", "online", READY);
    let caps = hub.node("n1").unwrap()["capabilities"]["protections"].to_string();
    for p in [
        "exec-allowlist",
        "seccomp",
        "noexec-workspace",
        "pid-namespace",
    ] {
        assert!(
            caps.contains(p),
            "this test needs {p}; nodes ls shows {caps}"
        );
    }
    let ws = scene.path("ws-n1");

    // Item 1: `sort` runs its compress program, a shell, on its data.
    let pwned = ws.join("pwned");
    let line = format!("touch {}\n", pwned.display());
    std::fs::write(ws.join("input"), line.repeat(4000)).unwrap();
    let o = run(
        &hub,
        &[
            "sort",
            "-S",
            "1K",
            "--compress-program=sh",
            "-o",
            "out",
            "input",
        ],
    );
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(!pwned.exists(), "the shell ran: {}", stderr(&o));

    // Item 11: the task sees its own processes only.
    let o = run(&hub, &["ls", "/proc"]);
    let pids: Vec<u32> = stdout(&o).lines().filter_map(|l| l.parse().ok()).collect();
    assert!(!pids.is_empty() && pids.len() <= 2, "{pids:?}");

    // Item 2: no set-id file; not root on a root node.
    hub.ok(&["nodes", "policy", "n1", "strict", "--allow", "chmod,id"]);
    let o = wait_for("the policy to reach the node", READY, || {
        let o = run(&hub, &["id", "-u"]);
        o.status.success().then_some(o)
    });
    if is_root() {
        assert!(caps.contains("unprivileged-tasks"), "{caps}");
        assert_eq!(stdout(&o).trim(), "65533");
    }
    let o = run(&hub, &["chmod", "4755", "input"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    let mode = std::fs::metadata(ws.join("input"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o6000, 0);
}
