//! Issue 14 item 7, with real processes: a large file's upload cut mid-way
//! (the node killed, or the hub killed) continues from what the hub holds
//! once they meet again: the second attempt sends only the rest, the file
//! arrives whole (hash checked, `mirror verify` clean) and no partial is
//! left in staging.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

/// Big enough that a debug build takes a moment to send it.
const SIZE: usize = 192 << 20;

fn received(hub: &Hub) -> f64 {
    metric(hub, "ganglion_mirror_received_bytes_total")
}

fn resumed(hub: &Hub) -> f64 {
    metric(hub, "ganglion_mirror_resumed_bytes_total")
}

/// Bytes in the hub's partials for `node` (0 if none).
fn partial_bytes(hub_dir: &Path, node: &str) -> u64 {
    std::fs::read_dir(hub_dir.join("staging").join(node).join("partial")).map_or(0, |d| {
        d.filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

/// Polls (tightly) until the hub's partial of the big file holds at least
/// `fraction` of it, then kills `victim` at once; returns the fraction the
/// partial held at the kill.
fn kill_when_partial_reaches(hub_dir: &Path, victim: &Proc, fraction: f64) -> f64 {
    let want = (SIZE as f64 * fraction) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let held = partial_bytes(hub_dir, "n1");
        if held >= want {
            victim.signal(libc::SIGKILL);
            return held as f64 / SIZE as f64;
        }
        assert!(Instant::now() < deadline, "the upload never reached {want}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The file arrived whole, the mirror verifies, no partial or staged file
/// is left.
#[track_caller]
fn assert_whole_and_clean(hub: &Hub, ws: &Path) {
    wait_mirror(hub, "n1", &expected(ws, &[]), Duration::from_secs(120));
    wait_in_sync(hub, "n1", 1, CHANGE);
    wait_transfers_idle(hub);
    let verify = hub.cli(&["mirror", "verify", "n1"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
    assert_eq!(
        staged_files(&hub.dir.join("staging/n1")),
        0,
        "a partial or staged file was left behind"
    );
}

#[test]
fn an_upload_cut_by_a_node_kill_resumes_where_it_stopped() {
    let s = Scene::new();
    let ws = s.workspace("n1");
    write(&ws, "big.bin", &noise(SIZE, 14));
    let (hub, node) = hub_and_node(&s);
    let at = kill_when_partial_reaches(&hub.dir, &node, 0.4);
    let mut node = node;
    node.wait_exit(Duration::from_secs(10));
    hub.wait_status("n1", "offline", READY);
    wait_for("the hub to keep the partial", READY, || {
        hub.proc.stderr().contains("partial kept").then_some(())
    });
    let first = received(&hub);
    let held = partial_bytes(&hub.dir, "n1") as f64;
    assert!(held < SIZE as f64, "the transfer had already finished");
    eprintln!(
        "node killed at {:.0} %, partial holds {:.0} %, first attempt sent {:.0} %",
        at * 100.0,
        held * 100.0 / SIZE as f64,
        first * 100.0 / SIZE as f64
    );

    let mut node = s.start("n1");
    hub.wait_status("n1", "online", READY);
    assert_whole_and_clean(&hub, &ws);
    let total = received(&hub);
    let second = total - first;
    eprintln!(
        "second attempt sent {:.1} % of the file, {:.1} % in total; resumed {:.1} %",
        second * 100.0 / SIZE as f64,
        total * 100.0 / SIZE as f64,
        resumed(&hub) * 100.0 / SIZE as f64
    );
    assert_eq!(resumed(&hub), held, "resumed from what the partial held");
    assert_eq!(second, SIZE as f64 - held, "only the rest was sent again");
    assert!(total <= SIZE as f64 * 1.01, "sent {total} bytes in total");
    node.assert_running();
}

#[test]
fn an_upload_cut_by_a_hub_kill_resumes_after_the_restart() {
    let s = Scene::new();
    let ws = s.workspace("n1");
    write(&ws, "big.bin", &noise(SIZE, 15));
    let (hub, mut node) = hub_and_node(&s);
    let (grpc, http_addr) = (hub.endpoints.grpc.clone(), hub.endpoints.http.clone());
    let at = kill_when_partial_reaches(&hub.dir, &hub.proc, 0.4);
    let mut hub = hub;
    hub.proc.wait_exit(Duration::from_secs(10));
    // Killed: what it wrote is in the partial (the page cache outlives
    // the process), found again by the restarted hub's staging sweep.
    let held = partial_bytes(&hub.dir, "n1") as f64;
    assert!(held < SIZE as f64, "the transfer had already finished");
    eprintln!(
        "hub killed at {:.0} %, partial holds {:.0} %",
        at * 100.0,
        held * 100.0 / SIZE as f64
    );

    let hub = s.hub_at("hub", &grpc, &http_addr, &[]);
    hub.wait_status("n1", "online", READY);
    assert_whole_and_clean(&hub, &ws);
    let sent = received(&hub);
    eprintln!(
        "after the restart: sent {:.1} % of the file, resumed {:.1} %",
        sent * 100.0 / SIZE as f64,
        resumed(&hub) * 100.0 / SIZE as f64
    );
    assert_eq!(resumed(&hub), held, "resumed from what the partial held");
    assert_eq!(sent, SIZE as f64 - held, "only the rest was sent again");
    node.assert_running();
}
