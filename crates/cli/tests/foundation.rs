//! Issue 2's "Done when": the real `ganglion` binary as hub and node processes.
//!
//! - this file: node lifecycle (join, online, offline on kill and on silence,
//!   restart), revocation, hub shutdown and restart, `up`, configuration.
//! - [`security`]: the TLS fingerprint, secrets at rest, the handshake flood.
//! - [`bad_input`]: every refused input of the issue's "Bad input" list.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

#[path = "foundation/bad_input.rs"]
mod bad_input;
mod common;
#[path = "foundation/hub_hardening.rs"]
mod hub_hardening;
#[path = "foundation/security.rs"]
mod security;

use std::time::{Duration, Instant};

use common::*;

/// Fast silence detection: a node that stops heartbeating is offline in ~3 s.
const FAST: &[&str] = &["--heartbeat-interval", "1s", "--missed-heartbeats", "3"];

#[test]
fn join_online_then_kill_offline_then_start_online() {
    let s = Scene::new();
    let hub = s.hub("hub", FAST);
    let invite = hub.invite(&[]);
    let mut node = s.join(&invite, "n1", &["--name", "n1"]);

    let n = hub.wait_status("n1", "online", READY);
    node.assert_running();
    // Every field CONTRACT.md promises for `nodes ls --json`.
    let id = n["id"].as_str().expect("id is a string");
    assert!(!id.is_empty());
    assert_eq!(
        n["policy"], "strict",
        "strict unless an admin chose otherwise"
    );
    let hb = n["last_heartbeat"]
        .as_str()
        .expect("online node has a heartbeat");
    assert!(
        hb.len() >= 20 && hb.as_bytes()[10] == b'T' && (hb.ends_with('Z') || hb.contains('+')),
        "last_heartbeat is RFC 3339: {hb}"
    );
    let caps = n["capabilities"].as_object().expect("capabilities object");
    assert_eq!(caps["os"], std::env::consts::OS);
    assert_eq!(caps["arch"], std::env::consts::ARCH);
    assert!(caps["cores"].as_u64().unwrap() >= 1, "{caps:?}");
    assert!(caps.contains_key("kernel") && caps.contains_key("version"));
    // The state dir holds the credential privately.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.state_dir("n1")), 0o700);
    assert_eq!(mode(&s.state_dir("n1").join("credential")), 0o600);

    // SIGKILL: the stream closes with the process, the node is offline within 20 s.
    let killed = Instant::now();
    node.signal(libc::SIGKILL);
    hub.wait_status("n1", "offline", Duration::from_secs(20));
    eprintln!("offline {:?} after SIGKILL", killed.elapsed());

    // `node start` from the same state dir brings the same node back.
    let mut again = s.start("n1");
    let back = hub.wait_status("n1", "online", READY);
    again.assert_running();
    assert_eq!(back["id"], id, "same node, not a new one");
    assert_eq!(hub.nodes().len(), 1);
}

#[test]
fn silent_node_goes_offline_after_missed_heartbeats() {
    let s = Scene::new();
    let hub = s.hub("hub", FAST);
    let mut node = s.join(&hub.invite(&[]), "quiet", &["--name", "quiet"]);
    hub.wait_status("quiet", "online", READY);

    // SIGSTOP: the TCP stream stays open but nothing more is sent.
    node.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    hub.wait_status("quiet", "offline", Duration::from_secs(15));
    let took = stopped.elapsed();
    // Up to one interval may already have passed since the last heartbeat.
    assert!(
        took >= Duration::from_millis(1800),
        "offline after {took:?}: too early for 3 missed 1 s heartbeats"
    );
    assert!(
        took <= Duration::from_secs(8),
        "offline only after {took:?}"
    );

    // Woken up, the node finds its way back by itself.
    node.signal(libc::SIGCONT);
    hub.wait_status("quiet", "online", READY);
    node.assert_running();
}

#[test]
fn revoke_drops_the_node_at_once_and_refuses_it_after() {
    let s = Scene::new();
    let hub = s.hub("hub", &[]);
    let mut node = s.join(&hub.invite(&[]), "bad", &["--name", "bad"]);
    hub.wait_status("bad", "online", READY);

    let out = hub.ok(&["nodes", "revoke", "bad"]);
    assert!(out.contains("revoked"), "{out}");
    let revoked = Instant::now();
    let status = node.wait_exit(Duration::from_secs(3));
    eprintln!("node exited {:?} after revoke", revoked.elapsed());
    assert!(!status.success(), "a revoked node exits non-zero");
    let err = node.stderr();
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error: …` line:\n{err}"));
    assert!(line.contains("revoked"), "{line}");

    let n = hub.wait_status("bad", "offline", Duration::from_secs(5));
    assert_eq!(n["revoked"], true, "{n}");

    // Its credential is refused from then on, without retrying forever.
    let line = s.start_fails("bad");
    assert!(line.contains("revoked"), "{line}");
}

#[test]
fn hub_restart_on_same_addresses_keeps_state_and_node_reconnects() {
    let s = Scene::new();
    let mut hub = s.hub("hub", FAST);
    let first = hub.endpoints.clone();

    let mut stay = s.join(&hub.invite(&[]), "stay", &["--name", "stay"]);
    let gone = s.join(&hub.invite(&[]), "gone", &["--name", "gone"]);
    let mut dies = s.join(&hub.invite(&[]), "dies", &["--name", "dies"]);
    hub.wait_status("stay", "online", READY);
    hub.wait_status("gone", "online", READY);
    hub.wait_status("dies", "online", READY);
    hub.ok(&["nodes", "policy", "stay", "permissive"]);
    let _pending = hub.invite(&["--name", "later", "--ttl", "2h"]);
    let revoked_id = hub.json(&["invite", "create"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    hub.ok(&["invite", "revoke", &revoked_id]);
    gone.signal(libc::SIGKILL);
    let gone_before = hub.wait_status("gone", "offline", READY);
    let invites_before = hub.invites();
    assert_eq!(invites_before.len(), 5);
    let stay_hb = hub.node("stay").unwrap()["last_heartbeat"]
        .as_str()
        .unwrap()
        .to_owned();

    // SIGTERM: exit 0 within 10 s; the node keeps running and retrying.
    let status = hub.terminate();
    assert_eq!(status.code(), Some(0), "hub stderr:\n{}", hub.proc.stderr());
    stay.assert_running();
    drop(hub);
    // A node that was online at shutdown dies while the hub is down.
    dies.signal(libc::SIGKILL);
    dies.wait_exit(READY);

    let hub = s.hub_at("hub", &first.grpc, &first.http, FAST);
    assert_eq!(hub.endpoints.grpc, first.grpc);
    assert_eq!(hub.endpoints.http, first.http);
    assert_eq!(
        hub.endpoints.cert_sha256, first.cert_sha256,
        "the certificate survives, so pinned nodes still trust the hub"
    );

    // The node reconnects by itself: online, with a heartbeat newer than any
    // the first hub saw (not a stale status read back from the store).
    let n = wait_for("stay to reconnect", READY, || {
        hub.node("stay").filter(|n| {
            n["status"] == "online" && n["last_heartbeat"].as_str().unwrap() > stay_hb.as_str()
        })
    });
    stay.assert_running();
    // The node that died meanwhile is not shown online from stale state.
    assert_eq!(hub.node("dies").unwrap()["status"], "offline");
    assert_eq!(n["policy"], "permissive", "policy survives the restart");

    // Nodes, invites and status survive.
    let g = hub.node("gone").expect("offline node is still known");
    assert_eq!(g["status"], "offline");
    assert_eq!(g["id"], gone_before["id"]);
    assert_eq!(g["last_heartbeat"], gone_before["last_heartbeat"]);
    let key = |v: &serde_json::Value| (v["id"].to_string(), v["state"].to_string());
    let mut before: Vec<_> = invites_before.iter().map(key).collect();
    let mut after: Vec<_> = hub.invites().iter().map(key).collect();
    before.sort();
    after.sort();
    assert_eq!(before, after, "invites and their states survive");
    let states: Vec<_> = after
        .iter()
        .map(|(_, s)| s.trim_matches('"').to_owned())
        .collect();
    for want in ["used", "pending", "revoked"] {
        assert!(
            states.iter().any(|s| s == want),
            "{want} missing in {states:?}"
        );
    }
}

#[test]
fn up_runs_a_hub_and_the_local_node() {
    let s = Scene::new();
    let data = s.path("data");
    let ws = s.workspace("up");
    let start_up = || {
        let mut cmd = command();
        cmd.arg("up")
            .arg("--data-dir")
            .arg(&data)
            .arg("--workspace")
            .arg(&ws)
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]);
        let mut up = Proc::spawn(cmd, "up", &s.logs());
        let out = wait_for("`up` to print the admin token path", READY, || {
            if let Some(st) = up.try_exit() {
                panic!("up exited ({st}):\n{}", up.stderr());
            }
            let out = up.stdout();
            out.contains("admin token:").then_some(out)
        });
        (up, out)
    };

    let (mut up, out) = start_up();
    let e = Endpoints::read(&data).expect("endpoints.json");
    let url = format!("http://{}/", e.http);
    assert!(out.contains(&url), "dashboard URL {url} in:\n{out}");
    let token = data.join("admin.token");
    assert!(
        out.contains(&token.display().to_string()),
        "admin token path in:\n{out}"
    );
    assert!(token.exists());
    let (code, page) = http(&e.http, "GET", "/", None, "");
    assert_eq!(code, 200);
    assert!(page.contains("Ganglion"));

    let ls = |args: &[&str]| {
        let o = command()
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let online = || {
        let v = ls(&["nodes", "ls", "--json"]);
        let nodes = v.as_array().unwrap().clone();
        (nodes.len() == 1 && nodes[0]["name"] == "local" && nodes[0]["status"] == "online")
            .then_some(())
    };
    wait_for("node local online", READY, online);

    up.signal(libc::SIGTERM);
    let st = up.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "{}", up.stderr());

    // A second `up` on the same data dir reuses the joined `local` node.
    let (mut up, _) = start_up();
    wait_for("node local online again", READY, online);
    up.signal(libc::SIGINT);
    assert_eq!(up.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

/// The contract's default layout puts the data dir (admin token, TLS key)
/// inside the workspace of `local`: strict tasks there must not read it.
#[test]
fn up_hides_its_data_dir_from_tasks_in_the_workspace() {
    let s = Scene::new();
    let ws = s.workspace("up");
    let data = ws.join("ganglion-data");
    std::fs::write(ws.join("notes.txt"), "visible").unwrap();
    let mut cmd = command();
    cmd.current_dir(&ws).arg("up").args([
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    let mut up = Proc::spawn(cmd, "up", &s.logs());
    wait_for("`up` to be ready", READY, || {
        if let Some(st) = up.try_exit() {
            panic!("up exited ({st}):\n{}", up.stderr());
        }
        up.stdout().contains("admin token:").then_some(())
    });
    let run = |argv: &[&str]| {
        command()
            .args(["run", "--node", "local", "--data-dir"])
            .arg(&data)
            .arg("--")
            .args(argv)
            .output()
            .unwrap()
    };
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let o = wait_for("the local node to run a task", READY, || {
        let o = run(&["cat", "notes.txt"]);
        o.status.success().then_some(o)
    });
    assert_eq!(String::from_utf8_lossy(&o.stdout), "visible");
    for file in ["admin.token", "tls/hub.key", "hub.db"] {
        let o = run(&["cat", &format!("ganglion-data/{file}")]);
        assert!(!o.status.success(), "read {file}");
        assert!(
            o.stdout.is_empty(),
            "{file}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let o = run(&["ls", "-A", "ganglion-data"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = run(&["grep", "-r", token.trim(), "."]);
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn print_config_shows_flag_over_env_over_file_over_default() {
    let s = Scene::new();
    let file = s.path("hub.toml");
    std::fs::create_dir_all(s.root.path()).unwrap();
    std::fs::write(
        &file,
        "grpc_addr = \"127.0.0.1:9000\"\nhttp_addr = \"127.0.0.1:9001\"\n\
         heartbeat_interval = \"7s\"\nmissed_heartbeats = 5\n",
    )
    .unwrap();
    let o = command()
        .current_dir(s.root.path())
        .args(["hub", "--print-config", "--config"])
        .arg(&file)
        .args(["--heartbeat-interval", "9s"])
        .env("GANGLION_HTTP_ADDR", "127.0.0.1:9002")
        .env("GANGLION_HEARTBEAT_INTERVAL", "8s")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg: toml::Table = toml::from_str(&stdout(&o)).expect("the printed config is TOML");
    assert_eq!(
        cfg["grpc_addr"].as_str(),
        Some("127.0.0.1:9000"),
        "file > default"
    );
    assert_eq!(
        cfg["http_addr"].as_str(),
        Some("127.0.0.1:9002"),
        "env > file"
    );
    assert_eq!(cfg["heartbeat_interval"].as_str(), Some("9s"), "flag > env");
    assert_eq!(cfg["missed_heartbeats"].as_integer(), Some(5), "file");
    assert_eq!(cfg["data_dir"].as_str(), Some("./ganglion-data"), "default");
    assert!(
        !s.path("ganglion-data").exists(),
        "--print-config creates nothing"
    );

    // A typo in the file is an error, not silently ignored.
    std::fs::write(&file, "grpc_adr = \"127.0.0.1:1\"\n").unwrap();
    let o = command()
        .args(["hub", "--print-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let line = assert_error(&o);
    assert!(line.contains("grpc_adr"), "{line}");
}

#[test]
fn node_print_config_shows_flag_over_env_over_file_over_default() {
    let s = Scene::new();
    let file = s.path("node.toml");
    std::fs::create_dir_all(s.root.path()).unwrap();
    std::fs::write(
        &file,
        "state_dir = \"/srv/ganglion-node\"\nreport_grace = \"5m\"\nreconnect_delay = \"1s\"\n",
    )
    .unwrap();
    let o = command()
        .current_dir(s.root.path())
        .args(["node", "start", "--print-config", "--config"])
        .arg(&file)
        .args(["--report-grace", "2m"])
        .env("GANGLION_REPORT_GRACE", "3m")
        .env("GANGLION_RECONNECT_DELAY", "2s")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg: toml::Table = toml::from_str(&stdout(&o)).expect("the printed config is TOML");
    assert_eq!(
        cfg["state_dir"].as_str(),
        Some("/srv/ganglion-node"),
        "file > default"
    );
    assert_eq!(cfg["reconnect_delay"].as_str(), Some("2s"), "env > file");
    assert_eq!(cfg["report_grace"].as_str(), Some("2m"), "flag > env");
    assert_eq!(cfg["reconnect_delay_max"].as_str(), Some("30s"), "default");
    assert!(
        !s.path("ganglion-node").exists(),
        "--print-config creates nothing"
    );

    // A typo in the file is an error, not silently ignored.
    std::fs::write(&file, "state_dri = \"/tmp/x\"\n").unwrap();
    let o = command()
        .args(["node", "start", "--print-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let line = assert_error(&o);
    assert!(line.contains("state_dri"), "{line}");
}

#[test]
fn help_lists_every_subcommand() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let help = stdout(&o);
    let listed: Vec<&str> = help
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for cmd in [
        "hub", "up", "node", "invite", "nodes", "run", "tasks", "mirror",
    ] {
        assert!(
            listed.contains(&cmd),
            "`{cmd}` missing from --help:\n{help}"
        );
    }
    for (group, subs) in [
        ("node", &["join", "start"][..]),
        ("invite", &["create", "ls", "revoke"][..]),
        ("nodes", &["ls", "policy", "revoke"][..]),
    ] {
        let help = stdout(&run(&[group, "--help"]));
        for sub in subs {
            assert!(help.contains(sub), "`{group} {sub}` missing:\n{help}");
        }
    }
}
