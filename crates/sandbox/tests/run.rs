//! Running tasks: streaming, exit codes, timeout, cancel, output cap.

mod common;

use std::time::Duration;

use common::{Fixture, collect, is_dead, spec};
use ganglion_core::policy::Policy;
use ganglion_sandbox::{Status, Stream};

#[tokio::test]
async fn output_streams_in_order_with_one_sequence() {
    let fx = Fixture::new();
    let mut task = fx
        .sandbox
        .start(
            spec(&[
                "sh",
                "-c",
                "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three; sleep 5",
            ]),
            &Policy::permissive(),
        )
        .unwrap();
    let mut rx = task.take_output().unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let c = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        got.push(c);
    }
    // All three arrived while the task still runs: nothing waits for the end.
    assert!(!is_dead(task.pid()));
    let seen: Vec<_> = got
        .iter()
        .map(|c| (c.seq, c.stream, c.data.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (0, Stream::Stdout, b"one\n".to_vec()),
            (1, Stream::Stderr, b"two\n".to_vec()),
            (2, Stream::Stdout, b"three\n".to_vec()),
        ]
    );
    assert_eq!(task.cancel().await.status, Status::Cancelled);
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let fx = Fixture::new();
    let p = Policy::permissive();
    assert_eq!(
        fx.run(spec(&["sh", "-c", "exit 7"]), &p)
            .await
            .outcome
            .status,
        Status::Exited(7)
    );
    assert_eq!(
        fx.run(spec(&["sh", "-c", "kill -9 $$"]), &p)
            .await
            .outcome
            .status,
        Status::Signaled(9)
    );
    let strict = Policy::strict();
    assert_eq!(
        fx.run(spec(&["true"]), &strict).await.outcome.status,
        Status::Exited(0)
    );
    assert_eq!(
        fx.run(spec(&["false"]), &strict).await.outcome.status,
        Status::Exited(1)
    );
    let run = fx.run(spec(&["echo", "hello"]), &strict).await;
    assert_eq!(run.stdout(), "hello\n");
    assert_eq!(run.outcome.output_bytes, 6);
    assert!(!run.outcome.output_truncated);
}

/// A task that ignores SIGTERM and whose child does too: only the group SIGKILL
/// after the grace period ends them.
const STUBBORN: &str = "trap '' TERM; sleep 1000 & echo $!; wait; wait; wait";

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let fx = Fixture::new();
    let mut s = spec(&["sh", "-c", STUBBORN]);
    s.timeout = Some(Duration::from_millis(800));
    let started = std::time::Instant::now();
    let task = fx.sandbox.start(s, &Policy::permissive()).unwrap();
    let leader = task.pid();
    let run = collect(task).await;
    assert_eq!(run.outcome.status, Status::TimedOut);
    assert!(
        started.elapsed() >= Duration::from_millis(800 + 500),
        "waited the grace period"
    );
    let child: u32 = run.stdout().trim().parse().unwrap();
    assert!(is_dead(leader));
    assert!(
        is_dead(child),
        "the task's child {child} survived the timeout"
    );
}

#[tokio::test]
async fn cancel_kills_the_group_and_returns_after_reaping() {
    let fx = Fixture::new();
    let mut task = fx
        .sandbox
        .start(spec(&["sh", "-c", STUBBORN]), &Policy::permissive())
        .unwrap();
    let leader = task.pid();
    let mut rx = task.take_output().unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let child: u32 = String::from_utf8(first.data)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!is_dead(child));
    let outcome = task.cancel().await;
    assert_eq!(outcome.status, Status::Cancelled);
    // Reaped (not even a zombie) by the time cancel returns.
    assert!(
        !std::path::Path::new(&format!("/proc/{leader}")).exists(),
        "leader not reaped"
    );
    assert!(is_dead(child), "the task's child {child} survived cancel");
    // wait() after cancel gives the same outcome.
    assert_eq!(task.wait().await, outcome);
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn output_flood_is_capped_while_the_task_finishes() {
    let fx = Fixture::new();
    const FLOOD: u64 = 300_000_000;
    let mut s = spec(&["head", "-c", &FLOOD.to_string(), "/dev/zero"]);
    s.output_cap = 1 << 20;
    let before = peak_rss_kib();
    let run = fx.run(s, &Policy::strict()).await;
    let grown_mib = (peak_rss_kib() - before) / 1024;
    eprintln!("flood: peak RSS grew by {grown_mib} MiB for {FLOOD} bytes");
    assert_eq!(
        run.outcome.status,
        Status::Exited(0),
        "the task ran to completion"
    );
    assert_eq!(run.outcome.output_bytes, FLOOD);
    assert!(run.outcome.output_truncated);
    let delivered: usize = run.chunks.iter().map(|c| c.data.len()).sum();
    assert_eq!(delivered, 1 << 20);
    assert!(
        grown_mib < 64,
        "memory grew by {grown_mib} MiB for a {FLOOD}-byte flood"
    );
}

#[tokio::test]
async fn output_not_taken_is_discarded_without_blocking_the_task() {
    let fx = Fixture::new();
    let mut task = fx
        .sandbox
        .start(
            spec(&["head", "-c", "50000000", "/dev/zero"]),
            &Policy::strict(),
        )
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), task.wait())
        .await
        .unwrap();
    assert_eq!(outcome.status, Status::Exited(0));
    assert_eq!(outcome.output_bytes, 50_000_000);
}

#[tokio::test]
async fn strict_task_gets_a_scrubbed_environment_and_a_private_temp_dir() {
    let fx = Fixture::new();
    let mut s = spec(&["cat", "/proc/self/environ"]);
    s.env = vec![
        ("LD_PRELOAD".into(), "/x.so".into()),
        ("GREETING".into(), "hi".into()),
    ];
    let run = fx.run(s, &Policy::strict()).await;
    let env: Vec<String> = run
        .stdout()
        .split('\0')
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect();
    assert!(
        env.contains(&"PATH=/usr/local/bin:/usr/bin:/bin".to_owned()),
        "{env:?}"
    );
    assert!(env.contains(&"LANG=C.UTF-8".to_owned()));
    assert!(env.contains(&"GREETING=hi".to_owned()));
    assert!(!env.iter().any(|e| e.starts_with("LD_PRELOAD")));
    assert!(
        !env.iter().any(|e| e.starts_with("CARGO")),
        "node environment leaked: {env:?}"
    );
    let home = env.iter().find_map(|e| e.strip_prefix("HOME=")).unwrap();
    assert!(home.starts_with(fx.path("tmp").canonicalize().unwrap().to_str().unwrap()));
    assert!(
        !std::path::Path::new(home).exists(),
        "task temp dir removed after the task"
    );
}

/// The temp root (under /tmp by default) must be this user's alone: one made
/// by someone else, writable by others, or a symlink is refused.
#[test]
fn a_temp_root_someone_else_controls_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let dir = |d: &str| {
        let p = base.path().join(d);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let (ws, state) = (dir("ws"), dir("state"));
    let open = |temp: std::path::PathBuf| {
        ganglion_sandbox::Sandbox::new(ganglion_sandbox::SandboxOptions::new(
            ws.clone(),
            state.clone(),
            temp,
        ))
    };
    let fresh = base.path().join("fresh");
    open(fresh.clone()).unwrap();
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "made private");

    let shared = dir("shared");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let Err(e) = open(shared) else {
        panic!("a group/other-writable temp root was accepted");
    };
    assert!(e.to_string().contains("no one else can write"), "{e}");

    std::os::unix::fs::symlink(dir("elsewhere"), base.path().join("link")).unwrap();
    assert!(
        open(base.path().join("link")).is_err(),
        "symlinked temp root"
    );

    if ganglion_sandbox::probe().root {
        let theirs = dir("theirs");
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        assert!(open(theirs).is_err(), "temp root owned by another user");
    }
}
