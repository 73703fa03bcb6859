//! Issue 14 item 7, with real processes: a large file's upload cut mid-way
//! (the node killed, the hub killed, or only the upload's connection cut)
//! continues from what the hub holds once they meet again: the second
//! attempt sends only the rest, the file arrives whole (hash checked,
//! `mirror verify` clean) and no partial is left in staging.

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

/// The file changes while its upload is cut: the hub's partial holds
/// content nobody wants any more. The new content is fetched whole (no
/// resume: its hash differs) and the old partial goes.
#[test]
fn a_file_changed_after_its_upload_was_cut_is_sent_whole_and_the_partial_goes() {
    let s = Scene::new();
    let ws = s.workspace("n1");
    write(&ws, "big.bin", &noise(SIZE, 17));
    let (hub, node) = hub_and_node(&s);
    kill_when_partial_reaches(&hub.dir, &node, 0.4);
    let mut node = node;
    node.wait_exit(Duration::from_secs(10));
    hub.wait_status("n1", "offline", READY);
    wait_for("the hub to keep the partial", READY, || {
        hub.proc.stderr().contains("partial kept").then_some(())
    });
    let first = received(&hub);
    // Edited in the part the hub already holds.
    let mut changed = noise(SIZE, 17);
    changed[1000..2000].copy_from_slice(&noise(1000, 18));
    write(&ws, "big.bin", &changed);

    let mut node = s.start("n1");
    hub.wait_status("n1", "online", READY);
    assert_whole_and_clean(&hub, &ws);
    assert_eq!(resumed(&hub), 0.0, "nothing of the old content was reused");
    assert_eq!(received(&hub) - first, SIZE as f64, "the new content whole");
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

/// The next mirror message from the hub on a hand-made control stream
/// (heartbeat acks and the like skipped).
async fn next_mirror(
    inbound: &mut tonic::Streaming<ganglion_proto::v1::HubMessage>,
) -> ganglion_proto::v1::hub_message::Kind {
    use ganglion_proto::v1::hub_message::Kind as In;
    tokio::time::timeout(CHANGE, async {
        loop {
            match inbound.message().await.unwrap() {
                Some(ganglion_proto::v1::HubMessage {
                    kind:
                        Some(
                            k @ (In::MirrorNeeds(_)
                            | In::MirrorNeed(_)
                            | In::MirrorResume(_)
                            | In::MirrorAck(_)),
                        ),
                }) => return k,
                Some(_) => {}
                None => panic!("the hub closed the stream"),
            }
        }
    })
    .await
    .expect("a mirror message in time")
}

/// A TCP relay to `to` for one connection; aborting its task cuts that
/// connection in the middle (no end of stream, no TLS close).
async fn cuttable_relay(to: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut inbound, _) = listener.accept().await.unwrap();
        let mut outbound = tokio::net::TcpStream::connect(&to).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    });
    (addr, task)
}

/// A client with `node`'s credential dialing the hub at `addr` (a relay).
async fn node_client_via(
    s: &Scene,
    hub: &Hub,
    node: &str,
    addr: String,
) -> ganglion_node::client::HubClient {
    let (_, credential) = ganglion_node::state::StateDir::new(s.state_dir(node))
        .load()
        .unwrap();
    let target = ganglion_node::tls::HubTarget {
        addr,
        cert_sha256: hub.endpoints.cert_sha256.clone(),
        bind_ip: None,
    };
    let channel = ganglion_node::tls::connect(&target).await.unwrap();
    ganglion_node::client::client(channel, &credential)
}

/// The wire protocol by hand, as a node: an upload stream broken off in
/// the middle (its connection cut) while the control stream stays up. The
/// hub keeps what it received, asks again with a `MirrorResume` naming that
/// offset before the need, accepts the rest from there, and the file is
/// whole; an offset it does not hold would have been refused (the receiver
/// tests cover that).
#[test]
fn an_upload_broken_off_alone_is_asked_again_with_the_offset_held() {
    use ganglion_proto::v1;
    use v1::hub_message::Kind as In;
    use v1::node_message::Kind as Out;
    const LEN: usize = 8 << 20;
    let s = Scene::new();
    s.workspace("n1");
    let (hub, mut node) = hub_and_node(&s);
    wait_in_sync(&hub, "n1", 0, CHANGE);
    node.signal(libc::SIGTERM);
    node.wait_exit(Duration::from_secs(10));
    hub.wait_status("n1", "offline", READY);
    let content = noise(LEN, 16);
    let hash = format!("blake3:{}", blake3::hash(&content).to_hex());
    let half = LEN / 2;
    let chunks = |from: usize, header_offset: u64| {
        let mut v = vec![v1::UploadChunk {
            kind: Some(v1::upload_chunk::Kind::Header(v1::UploadHeader {
                path: "big.bin".into(),
                hash: hash.clone(),
                size: LEN as u64,
                mode: 0o644,
            })),
            offset: header_offset,
        }];
        for off in (from..LEN).step_by(256 << 10) {
            let end = (off + (256 << 10)).min(LEN);
            v.push(data(off as u64, &content[off..end]));
        }
        v
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = node_client(&s, &hub, "n1").await;
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let hello = v1::Hello {
            mirror_replica: String::new(),
            mirror: true,
            capabilities: None,
            instance: String::new(),
        };
        tx.unbounded_send(v1::NodeMessage {
            kind: Some(Out::Hello(hello)),
        })
        .unwrap();
        let mut inbound = client.connect(rx).await.unwrap().into_inner();
        let applied = match inbound.message().await.unwrap() {
            Some(v1::HubMessage {
                kind: Some(In::Welcome(w)),
            }) => w.mirror_applied,
            other => panic!("expected a welcome, got {other:?}"),
        };
        let entry = v1::MirrorEntry {
            path: "big.bin".into(),
            kind: v1::EntryKind::File as i32,
            size: LEN as u64,
            mtime_ns: 1,
            mode: 0o644,
            hash: hash.clone(),
            seq: applied + 1,
            ..Default::default()
        };
        let notice = v1::MirrorNotice {
            kind: Some(v1::mirror_notice::Kind::Upsert(entry)),
        };
        tx.unbounded_send(v1::NodeMessage {
            kind: Some(Out::MirrorNotices(v1::MirrorNotices {
                notices: vec![notice],
            })),
        })
        .unwrap();
        match next_mirror(&mut inbound).await {
            In::MirrorNeeds(n) => assert_eq!(n.needs[0].path, "big.bin"),
            other => panic!("expected the need, got {other:?}"),
        }

        // Half of the file on a connection of its own, which is cut once
        // the hub has written that half (the stream never ends).
        let (up_tx, up_rx) = futures::channel::mpsc::unbounded();
        for c in chunks(0, 0).into_iter().take(1 + half / (256 << 10)) {
            up_tx.unbounded_send(c).unwrap();
        }
        let (relay_addr, relay) = cuttable_relay(hub.endpoints.grpc.clone()).await;
        let mut upload_client = node_client_via(&s, &hub, "n1", relay_addr).await;
        let call = tokio::spawn(async move { upload_client.upload(up_rx).await });
        let hub_dir = hub.dir.clone();
        tokio::task::spawn_blocking(move || {
            wait_for("half the file at the hub", READY, || {
                (partial_bytes(&hub_dir, "n1") == half as u64).then_some(())
            })
        })
        .await
        .unwrap();
        relay.abort();
        let cut = tokio::time::timeout(CHANGE, call).await.unwrap().unwrap();
        assert!(cut.is_err(), "the cut call failed: {cut:?}");
        drop(up_tx);

        // Asked again, with the offset held first.
        match next_mirror(&mut inbound).await {
            In::MirrorResume(r) => {
                assert_eq!(r.files.len(), 1);
                let f = &r.files[0];
                assert_eq!(
                    (f.path.as_str(), f.hash.as_str(), f.offset),
                    ("big.bin", hash.as_str(), half as u64)
                );
            }
            other => panic!("expected a resume, got {other:?}"),
        }
        match next_mirror(&mut inbound).await {
            In::MirrorNeeds(n) => assert_eq!(n.needs[0].path, "big.bin"),
            other => panic!("expected the need again, got {other:?}"),
        }
        let result = client
            .upload(futures::stream::iter(chunks(half, half as u64)))
            .await
            .unwrap()
            .into_inner();
        assert!(result.failures.is_empty(), "{result:?}");
        match next_mirror(&mut inbound).await {
            In::MirrorAck(a) => assert_eq!(a.seq, applied + 1),
            other => panic!("expected the ack, got {other:?}"),
        }
    });
    assert_eq!(
        std::fs::read(hub.dir.join("mirrors/n1/big.bin")).unwrap(),
        content
    );
    assert_eq!(resumed(&hub), half as f64);
    assert_eq!(received(&hub), LEN as f64, "every byte sent once");
    assert_eq!(staged_files(&hub.dir.join("staging/n1")), 0);
    let verify = hub.cli(&["mirror", "verify", "n1"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
}
