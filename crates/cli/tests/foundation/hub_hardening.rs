//! Issue 12, the hub's side: the data dir lock, logging to a full disk, the
//! rate limiter that must never refuse a valid credential, unauthenticated
//! fd exhaustion, a closed stdout, port reuse and unknown JSON fields. Each
//! runs the real binary as an attacker or a user would.

use std::io::Write as _;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

/// Item 6: a second hub on a data dir in use refuses with one error line
/// naming the holder, and changes nothing: endpoints.json, the nodes'
/// statuses, and the file is still there after it exits. `up` too.
#[test]
fn a_second_hub_on_a_data_dir_in_use_refuses_and_changes_nothing() {
    let s = Scene::new();
    let hub = s.hub("hub", &[]);
    let _node = s.join(&hub.invite(&[]), "n1", &["--name", "n1"]);
    hub.wait_status("n1", "online", READY);
    let endpoints = std::fs::read(hub.dir.join("run/endpoints.json")).unwrap();

    let ws = s.workspace("up");
    for args in [vec!["hub"], vec!["up", "--workspace", ws.to_str().unwrap()]] {
        let out = command()
            .args(&args)
            .arg("--data-dir")
            .arg(&hub.dir)
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .output()
            .unwrap();
        let line = assert_error(&out);
        assert!(line.contains("in use by another hub"), "{args:?}: {line}");
        assert!(
            line.contains(&format!("pid {}", hub.proc.pid())),
            "{args:?} names the holder: {line}"
        );
        assert_eq!(
            std::fs::read(hub.dir.join("run/endpoints.json")).ok(),
            Some(endpoints.clone()),
            "{args:?} left endpoints.json as it was"
        );
        assert_eq!(hub.node("n1").unwrap()["status"], "online", "{args:?}");
    }
    assert!(
        !hub.dir.join("node-local").exists(),
        "the refused `up` joined no local node"
    );
    assert!(hub.ok(&["tasks", "ls"]).lines().count() == 1);
}

/// Item 5: with stderr on a full device the hub starts, serves, and a
/// SIGTERM stops it cleanly within 10 s (it used to panic at start).
#[test]
fn a_hub_logging_to_a_full_disk_starts_and_stops_on_sigterm() {
    let s = Scene::new();
    let dir = s.path("hub");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = command()
        .arg("hub")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("GANGLION_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(full)
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child.id() as i32);
    let ep = wait_for("the hub's endpoints.json", READY, || {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the hub exited early ({st})");
        }
        Endpoints::read(&dir)
    });
    // It serves (and logs each request into the full device).
    for _ in 0..20 {
        assert_eq!(http(&ep.http, "GET", "/healthz", None, "").0, 200);
    }
    let started = Instant::now();
    // SAFETY: kill(2) on our own child.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(guard.0, libc::SIGTERM)
    };
    let status = wait_for("the hub to exit", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0), "after {:?}", started.elapsed());
    assert!(Endpoints::read(&dir).is_none(), "endpoints.json removed");
}

struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; harmless if it is gone.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.0, libc::SIGKILL)
        };
    }
}

/// Item 12: bad admin tokens are limited, but the valid token always passes,
/// even from the address that is over its budget.
#[test]
fn bad_admin_tokens_never_lock_out_the_valid_one() {
    let s = Scene::new();
    let hub = s.hub("hub", &[]);
    let good = format!("Bearer {}", hub.admin_token());
    let bad = format!("Bearer {}", ganglion_core::Secret::generate().encode());
    let codes: Vec<u16> = (0..25)
        .map(|_| http(&hub.endpoints.http, "GET", "/api/v1/nodes", Some(&bad), "").0)
        .collect();
    assert!(codes[..20].iter().all(|c| *c == 401), "{codes:?}");
    assert!(codes[20..].iter().all(|c| *c == 429), "{codes:?}");
    let (code, body) = http(&hub.endpoints.http, "GET", "/api/v1/nodes", Some(&good), "");
    assert_eq!(code, 200, "{body}");
    // Bad ones are still limited afterwards.
    let (code, _) = http(&hub.endpoints.http, "GET", "/api/v1/nodes", Some(&bad), "");
    assert_eq!(code, 429);
    // And the CLI (same address) works.
    hub.ok(&["nodes", "ls"]);
}

/// Item 16: `ganglion tasks ls | head -1`: stdout closed early ends the
/// command quietly with status 0 (it used to panic with a backtrace).
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let s = Scene::new();
    let hub = s.hub("hub", &[]);
    for args in [vec!["tasks", "ls"], vec!["invite", "ls", "--json"]] {
        let mut child = command()
            .args(&args)
            .arg("--data-dir")
            .arg(&hub.dir)
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the command writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("error:"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

/// Unknown JSON fields in a request body are refused with a 400 naming the
/// field (a misspelt option must not be ignored silently).
#[test]
fn unknown_json_fields_are_refused_naming_the_field() {
    let s = Scene::new();
    let hub = s.hub("hub", &[]);
    let auth = format!("Bearer {}", hub.admin_token());
    for (path, body) in [
        ("/api/v1/invites", r#"{"ttl": "1h", "tll": "2h"}"#),
        (
            "/api/v1/tasks",
            r#"{"node": "n1", "argv": ["true"], "timout": "1s"}"#,
        ),
    ] {
        let (code, text) = http(&hub.endpoints.http, "POST", path, Some(&auth), body);
        assert_eq!(code, 400, "{path}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("unknown field") && e.contains("t"),
            "{path}: {e}"
        );
        assert!(e.contains("`tll`") || e.contains("`timout`"), "{path}: {e}");
    }
    assert!(hub.invites().is_empty(), "nothing was created");
}

/// A hub started on port 0 takes the ports it had last time when they are
/// free, so nodes that joined it find it again after a restart.
#[test]
fn a_hub_on_port_0_gets_its_last_ports_back_after_a_restart() {
    let s = Scene::new();
    let mut hub = s.hub("hub", &["--heartbeat-interval", "1s"]);
    let first = hub.endpoints.clone();
    let mut node = s.join(&hub.invite(&[]), "n1", &["--name", "n1"]);
    hub.wait_status("n1", "online", READY);
    assert_eq!(hub.terminate().code(), Some(0));
    drop(hub);
    let hub = s.hub("hub", &["--heartbeat-interval", "1s"]);
    assert_eq!(hub.endpoints.grpc, first.grpc);
    assert_eq!(hub.endpoints.http, first.http);
    hub.wait_status("n1", "online", READY);
    node.assert_running();

    // A port taken meanwhile: a new one is picked, the hub still starts.
    let mut hub = hub;
    let last = hub.endpoints.clone();
    assert_eq!(hub.terminate().code(), Some(0));
    drop(hub);
    let _squatter = std::net::TcpListener::bind(&last.http).unwrap();
    let hub = s.hub("hub", &[]);
    assert_ne!(hub.endpoints.http, last.http);
    assert_eq!(hub.endpoints.grpc, last.grpc);
}

/// Item 4: more slow ClientHellos than the hub has file descriptors. The
/// hub keeps answering `/healthz`, and a real node joins.
#[test]
fn slow_client_hellos_cannot_exhaust_the_hubs_descriptors() {
    const FDS: u64 = 256;
    raise_own_nofile(4096);
    let s = Scene::new();
    let dir = s.path("hub");
    let mut cmd = command();
    cmd.arg("hub")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("GANGLION_HANDSHAKE_TIMEOUT", "2s");
    // SAFETY: setrlimit(2) between fork and exec, no allocation.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: FDS,
                rlim_max: FDS,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut proc = Proc::spawn(cmd, "hub", &s.logs());
    let ep = wait_for("the hub's endpoints.json", READY, || {
        if let Some(st) = proc.try_exit() {
            panic!("the hub exited early ({st}):\n{}", proc.stderr());
        }
        Endpoints::read(&dir)
    });
    let hub = Hub {
        proc,
        dir,
        endpoints: ep.clone(),
    };

    // The first 11 bytes of a TLS ClientHello, then nothing, many times over.
    let hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let mut attack: Vec<TcpStream> = Vec::new();
    for _ in 0..(FDS + 100) {
        if let Ok(mut c) = TcpStream::connect(&ep.grpc) {
            let _ = c.write_all(&hello);
            attack.push(c);
        }
    }
    // Under attack: health answers at once, again and again.
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(http(&ep.http, "GET", "/healthz", None, "").0, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // Handshakes that never finish are dropped at the timeout; then a real
    // node joins and comes online (the attack's sockets are still open).
    let auth = format!("Bearer {}", hub.admin_token());
    wait_for("stalled handshakes to time out", READY, || {
        let m = http(&ep.http, "GET", "/metrics", Some(&auth), "").1;
        m.contains("ganglion_tls_handshakes_in_progress 0\n")
            .then_some(())
    });
    let _node = s.join(&hub.invite(&[]), "n1", &["--name", "n1"]);
    hub.wait_status("n1", "online", READY);
    let metrics = http(&ep.http, "GET", "/metrics", Some(&auth), "");
    assert!(
        metrics
            .1
            .contains("ganglion_connections_refused_total{kind=\"grpc\"}"),
        "{}",
        metrics.1
    );
    drop(attack);
}

fn raise_own_nofile(want: u64) {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    #[allow(unsafe_code)]
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = want.min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// Item 12: bad-credential gRPC spam from the address real nodes use, then a
/// real `node join` from that address: it joins and comes online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_spam_does_not_stop_a_valid_join_from_the_same_address() {
    use ganglion_core::Secret;
    use ganglion_node::tls::{HubTarget, connect};
    use ganglion_proto::v1;
    use ganglion_proto::v1::hub_client::HubClient;

    let s = Scene::new();
    let hub = s.hub("hub", &[]);
    let target = HubTarget {
        addr: hub.endpoints.grpc.clone(),
        cert_sha256: hub.endpoints.cert_sha256.clone(),
        bind_ip: None,
    };
    let mut client = HubClient::new(connect(&target).await.unwrap());
    let mut codes = Vec::new();
    for i in 0..30 {
        let st = client
            .join(v1::JoinRequest {
                invite_secret: Secret::generate().encode(),
                name: format!("spam-{i}"),
                ..Default::default()
            })
            .await
            .unwrap_err();
        codes.push(st.code());
        let mut req = tonic::Request::new(v1::SyncConfigurationRequest {});
        let bad = format!("Bearer {}", Secret::generate().encode());
        req.metadata_mut()
            .insert("authorization", bad.parse().unwrap());
        codes.push(client.sync_configuration(req).await.unwrap_err().code());
    }
    assert!(
        codes.ends_with(&[tonic::Code::ResourceExhausted; 10]),
        "bad attempts are limited: {codes:?}"
    );
    tokio::task::block_in_place(|| {
        let mut node = s.join(&hub.invite(&[]), "n1", &["--name", "n1"]);
        hub.wait_status("n1", "online", READY);
        node.assert_running();
    });
}

/// The first-request deadline covers a request's head only: a request the
/// hub holds longer than the handshake timeout (`mirror wait`) is answered.
#[test]
fn a_request_the_hub_holds_outlives_the_handshake_timeout() {
    let s = Scene::new();
    let hub = s.hub("hub", &["--handshake-timeout", "1s"]);
    let _node = s.join(&hub.invite(&[]), "n1", &["--name", "n1"]);
    hub.wait_status("n1", "online", READY);
    let o = hub.cli(&["mirror", "wait", "n1", "--files", "999", "--timeout", "3"]);
    let line = assert_error(&o);
    assert!(line.contains("not in sync after 3 s"), "{line}");
}

/// A stream opened with a valid credential that never says hello is ended
/// with `DeadlineExceeded` after `hello_deadline` (a key now, 10 s by
/// default), naming the key; the node then connects as before.
#[test]
fn a_control_stream_without_a_hello_ends_at_the_hello_deadline() {
    use ganglion_proto::v1;

    let s = Scene::new();
    let hub = s.hub("hub", &["--hello-deadline", "300ms"]);
    let mut node = s.join(&hub.invite(&[]), "n1", &["--name", "n1"]);
    hub.wait_status("n1", "online", READY);
    node.signal(libc::SIGTERM);
    node.wait_exit(Duration::from_secs(10));
    hub.wait_status("n1", "offline", READY);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, took) = rt.block_on(async {
        let mut client = node_client(&s, &hub, "n1").await;
        // Kept open and silent: the hub must not wait for it forever.
        let (_tx, rx) = futures::channel::mpsc::unbounded::<v1::NodeMessage>();
        let started = Instant::now();
        let status = client.connect(rx).await.expect_err("no hello, no stream");
        (status, started.elapsed())
    });
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("hello_deadline"), "{status:?}");
    assert!(took < Duration::from_secs(5), "ended after {took:?}");
    assert_eq!(hub.node("n1").unwrap()["status"], "offline");
}
