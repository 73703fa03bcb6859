//! STRICT: refusals before spawning, and rules enforced by the kernel.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Fixture, HELPER, exists, spec, strict_with_helper};
use ganglion_core::policy::Policy;
use ganglion_core::relpath::{self, RelPath};
use ganglion_sandbox::{Error, ForkLimit, Status, TaskSpec, probe};

fn refused(fx: &Fixture, s: TaskSpec, p: &Policy) -> Error {
    match fx.sandbox.start(s, p) {
        Err(e) => e,
        Ok(t) => panic!("started pid {} instead of refusing", t.pid()),
    }
}

fn skip_without_landlock() -> bool {
    if !probe().landlock_fs {
        eprintln!(
            "skipped: the kernel has no landlock filesystem rules ({:?})",
            probe().landlock_abi
        );
        return true;
    }
    false
}

#[tokio::test]
async fn malformed_tasks_are_refused_before_spawning() {
    let fx = Fixture::new();
    let p = Policy::strict();
    let e = refused(&fx, spec(&[]), &p);
    assert!(matches!(e, Error::EmptyArgv));
    assert_eq!(e.exit_code(), 126);

    let e = refused(&fx, spec(&["echo", "a\0b"]), &p);
    assert!(matches!(e, Error::NulByte), "{e}");
    let mut s = spec(&["echo"]);
    s.env = vec![("X".into(), "a\0b".into())];
    assert!(matches!(refused(&fx, s, &p), Error::NulByte));

    let huge = "x".repeat(100 << 20);
    let huge_spec = spec(&["echo", &huge]);
    // Refused from its size alone: no scan of the 100 MB, no spawn.
    let started = Instant::now();
    let e = refused(&fx, huge_spec, &Policy::permissive());
    assert!(matches!(e, Error::ArgumentsTooLarge { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "argument list too large ({} bytes, at most 1048576)",
            huge.len() + 6
        )
    );
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn programs_are_checked_against_the_policy() {
    let fx = Fixture::new();
    let p = Policy::strict();
    let e = refused(&fx, spec(&["sh", "-c", "true"]), &p);
    assert_eq!(
        e.to_string(),
        r#"program "sh" is not allowed by the strict policy"#
    );
    assert_eq!(e.exit_code(), 126);
    let e = refused(
        &fx,
        spec(&["/bin/bash"]),
        &Policy {
            allow: vec!["bash".into()],
            ..p.clone()
        },
    );
    assert!(matches!(e, Error::ShellRefused { .. }));
    let e = refused(&fx, spec(&["python3", "-c", "1"]), &p);
    assert_eq!(
        e.to_string(),
        r#"program "python3" is not on the allowlist of the strict policy"#
    );
    assert_eq!(e.exit_code(), 126);

    // Allowlisted but absent: 127.
    let p2 = Policy {
        allow: vec!["no-such-program-xyz".into()],
        ..p.clone()
    };
    let e = refused(&fx, spec(&["no-such-program-xyz"]), &p2);
    assert_eq!(e.to_string(), r#"program "no-such-program-xyz" not found"#);
    assert_eq!(e.exit_code(), 127);
    let e = refused(&fx, spec(&["no-such-program-xyz"]), &Policy::permissive());
    assert_eq!(e.exit_code(), 127);

    // A name on the allowlist does not make any file of that name allowed.
    let fake = fx.path("ws/cat");
    std::fs::copy("/bin/cat", &fake).unwrap();
    let e = refused(&fx, spec(&[fake.to_str().unwrap(), "/etc/hostname"]), &p);
    assert!(matches!(e, Error::NotAllowlisted { .. }), "{e}");
    let e = refused(&fx, spec(&["./cat"]), &p);
    assert!(matches!(e, Error::RelativeProgramPath { .. }), "{e}");
    // The real one, by absolute path, is fine.
    let run = fx.run(spec(&["/usr/bin/echo", "ok"]), &p).await;
    assert_eq!(run.stdout(), "ok\n");
}

#[tokio::test]
async fn cwd_cannot_escape_the_workspace() {
    let fx = Fixture::new();
    let p = Policy::strict();
    // `..` and absolute paths cannot even be expressed.
    assert_eq!(RelPath::parse(".."), Err(relpath::Error::DotDot));
    assert_eq!(RelPath::parse("/etc"), Err(relpath::Error::Absolute));
    // Through a symlink, pointing out, directly or in the middle of the path.
    std::os::unix::fs::symlink("/etc", fx.path("ws/out")).unwrap();
    std::os::unix::fs::symlink("../state", fx.path("ws/up")).unwrap();
    for cwd in ["out", "up", "out/ssl"] {
        let mut s = spec(&["pwd"]);
        s.cwd = Some(RelPath::parse(cwd).unwrap());
        let e = refused(&fx, s, &p);
        assert!(matches!(e, Error::CwdEscapes { .. }), "{cwd}: {e}");
        assert_eq!(e.exit_code(), 126);
    }
    // A symlink that stays inside is fine, and the task runs there.
    std::fs::create_dir(fx.path("ws/sub")).unwrap();
    std::os::unix::fs::symlink("sub", fx.path("ws/alias")).unwrap();
    let mut s = spec(&["pwd"]);
    s.cwd = Some(RelPath::parse("alias").unwrap());
    let run = fx.run(s, &p).await;
    assert_eq!(
        run.stdout().trim(),
        fx.path("ws/sub").canonicalize().unwrap().to_str().unwrap()
    );
    let mut s = spec(&["pwd"]);
    s.cwd = Some(RelPath::parse("missing").unwrap());
    assert!(matches!(refused(&fx, s, &p), Error::CwdUnusable { .. }));
}

#[tokio::test]
async fn writes_outside_the_workspace_fail() {
    if skip_without_landlock() {
        return;
    }
    let fx = Fixture::new();
    let outside = PathBuf::from(format!("/tmp/ganglion-outside-{}", std::process::id()));
    let run = fx
        .run(
            spec(&["touch", outside.to_str().unwrap()]),
            &Policy::strict(),
        )
        .await;
    assert_ne!(run.outcome.status, Status::Exited(0));
    assert!(
        run.stderr().contains("Permission denied"),
        "{}",
        run.stderr()
    );
    assert!(!exists(&outside));
    // Inside the workspace it works, and so does the same command when permissive.
    let run = fx.run(spec(&["mkdir", "made"]), &Policy::strict()).await;
    assert_eq!(run.outcome.status, Status::Exited(0), "{}", run.stderr());
    assert!(fx.path("ws/made").is_dir());
    let run = fx
        .run(
            spec(&["touch", outside.to_str().unwrap()]),
            &Policy::permissive(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Exited(0));
    std::fs::remove_file(&outside).unwrap();
}

#[tokio::test]
async fn the_state_dir_is_unreadable_even_under_a_readable_root() {
    if skip_without_landlock() {
        return;
    }
    // The base dir (parent of the state dir) is granted as a system root.
    let fx = Fixture::with(|o| {
        o.system_roots
            .push(o.state_dir.parent().unwrap().to_path_buf())
    });
    std::fs::write(fx.path("public"), "public").unwrap();
    let secret = fx.path("state/secret");
    let p = Policy::strict();
    let run = fx.run(spec(&["cat", secret.to_str().unwrap()]), &p).await;
    assert_ne!(run.outcome.status, Status::Exited(0));
    assert!(!run.stdout().contains("credential"));
    let run = fx
        .run(spec(&["ls", fx.path("state").to_str().unwrap()]), &p)
        .await;
    assert_ne!(
        run.outcome.status,
        Status::Exited(0),
        "listed: {}",
        run.stdout()
    );
    // Its siblings are readable; a symlink into the state dir is not a way in.
    let run = fx
        .run(spec(&["cat", fx.path("public").to_str().unwrap()]), &p)
        .await;
    assert_eq!(run.stdout(), "public");
    std::os::unix::fs::symlink(fx.path("state"), fx.path("ws/peek")).unwrap();
    let run = fx.run(spec(&["cat", "peek/secret"]), &p).await;
    assert_ne!(run.outcome.status, Status::Exited(0));
    // Control: permissive reads it.
    let run = fx
        .run(
            spec(&["cat", secret.to_str().unwrap()]),
            &Policy::permissive(),
        )
        .await;
    assert_eq!(run.stdout(), "node credential");
}

/// A directory inside the workspace that tasks must not see (the hub's data
/// dir under `ganglion up`): strict tasks find an empty read-only directory.
#[tokio::test]
async fn hidden_directories_are_empty_and_read_only_for_strict_tasks() {
    if skip_without_landlock() {
        return;
    }
    let fx = Fixture::with(|o| {
        let data = o.workspace.join("hub-data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("admin.token"), "secret-token").unwrap();
        o.hidden.push(data);
    });
    std::fs::write(fx.path("ws/visible"), "visible").unwrap();
    let p = Policy::strict();
    let run = fx.run(spec(&["cat", "hub-data/admin.token"]), &p).await;
    assert_ne!(run.outcome.status, Status::Exited(0));
    assert!(!run.stdout().contains("secret"), "{}", run.stdout());
    assert!(run.stderr().contains("No such file"), "{}", run.stderr());
    let run = fx.run(spec(&["ls", "-A", "hub-data"]), &p).await;
    assert_eq!(
        (run.outcome.status, run.stdout().as_str()),
        (Status::Exited(0), "")
    );
    let with_mkdir = Policy {
        allow: vec!["mkdir".into()],
        ..Policy::strict()
    };
    let run = fx.run(spec(&["mkdir", "planted"]), &with_mkdir).await;
    assert_eq!(
        run.outcome.status,
        Status::Exited(0),
        "control: {}",
        run.stderr()
    );
    let run = fx
        .run(spec(&["mkdir", "hub-data/planted"]), &with_mkdir)
        .await;
    assert_ne!(run.outcome.status, Status::Exited(0));
    assert!(!exists(&fx.path("ws/hub-data/planted")));
    // The rest of the workspace is as before.
    let run = fx.run(spec(&["cat", "visible"]), &p).await;
    assert_eq!(run.stdout(), "visible");
    // No way around it: not by symlink, not as the working directory.
    std::os::unix::fs::symlink("hub-data", fx.path("ws/peek")).unwrap();
    let run = fx.run(spec(&["cat", "peek/admin.token"]), &p).await;
    assert!(!run.stdout().contains("secret"));
    let mut in_hidden = spec(&["cat", "admin.token"]);
    in_hidden.cwd = Some(RelPath::parse("peek").unwrap());
    let e = refused(&fx, in_hidden, &p);
    assert!(matches!(e, Error::CwdHidden { .. }), "{e}");
    // The cover lives in the task's mount namespace only.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("ganglion-hidden"), "{mounts}");
    assert_eq!(
        std::fs::read_to_string(fx.path("ws/hub-data/admin.token")).unwrap(),
        "secret-token"
    );
}

#[tokio::test]
async fn tcp_needs_the_network_permission() {
    if !probe().landlock_net {
        eprintln!(
            "skipped: the kernel has no landlock network rules (abi {:?})",
            probe().landlock_abi
        );
        return;
    }
    let fx = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let denied = fx
        .run(spec(&[HELPER, "connect", &addr]), &strict_with_helper())
        .await;
    assert_eq!(
        denied.outcome.status,
        Status::Exited(3),
        "{}",
        denied.stderr()
    );
    let p = Policy {
        network: true,
        ..strict_with_helper()
    };
    let allowed = fx.run(spec(&[HELPER, "connect", &addr]), &p).await;
    assert_eq!(
        allowed.outcome.status,
        Status::Exited(0),
        "{}",
        allowed.stderr()
    );
}

#[tokio::test]
async fn strict_tasks_get_limits_and_no_capabilities() {
    let fx = Fixture::new();
    let run = fx
        .run(
            spec(&["cat", "/proc/self/limits", "/proc/self/status"]),
            &Policy::strict(),
        )
        .await;
    let out = run.stdout();
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("Max open files").contains("1024"), "{out}");
    assert!(
        line("Max core file size")
            .split_whitespace()
            .any(|w| w == "0"),
        "{out}"
    );
    if probe().root {
        assert!(
            line("CapEff:").ends_with("0000000000000000"),
            "{}",
            line("CapEff:")
        );
        assert!(
            line("CapBnd:").ends_with("0000000000000000"),
            "{}",
            line("CapBnd:")
        );
    }
    assert!(line("NoNewPrivs:").ends_with('1') || !probe().landlock_fs);
}

fn count_processes() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .count()
}

/// Processes of the bomb, alive or not (`include_zombies`).
fn helper_processes(include_zombies: bool) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                c.starts_with(HELPER.as_bytes()) && c.windows(8).any(|w| w == b"forkbomb")
            })
        })
        .filter(|e| {
            include_zombies
                || !common::is_dead(e.file_name().to_string_lossy().parse().unwrap_or(0))
        })
        .count()
}

#[tokio::test]
async fn fork_bomb_under_strict_the_limit_holds_the_node_stays_healthy() {
    const LIMIT: u64 = 64;
    match probe().fork_limit {
        ForkLimit::Cgroup { .. } | ForkLimit::Rlimit { effective: true } => {}
        ref other => {
            eprintln!("skipped: no process limit holds on this node ({other:?})");
            return;
        }
    }
    let fx = Fixture::with(|o| o.limits.processes = LIMIT);
    let p = strict_with_helper();
    if let ForkLimit::Cgroup { .. } = probe().fork_limit {
        // First make sure the task really lands in its cgroup: never bomb blind.
        let run = fx.run(spec(&["cat", "/proc/self/cgroup"]), &p).await;
        assert!(run.stdout().contains("ganglion-task-"), "{}", run.stdout());
    }
    let baseline = count_processes();
    let mut s = spec(&[HELPER, "forkbomb", "3"]);
    s.timeout = Some(Duration::from_secs(20));
    let task = fx.sandbox.start(s, &p).unwrap();
    // The bomb's own cgroup (other tests of this process run tasks concurrently).
    let bomb_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", task.pid()))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .find(|n| n.starts_with("ganglion-task-"))
        .unwrap_or_default()
        .to_owned();
    let watcher = tokio::spawn(async move {
        let mut peak = 0;
        let end = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < end {
            peak = peak.max(helper_processes(true));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    });
    let run = common::collect(task).await;
    let peak = watcher.await.unwrap();
    eprintln!(
        "fork bomb: baseline {baseline} processes, peak {peak}, limit {LIMIT}, {:?}",
        run.outcome
    );
    // Exactly the bomb's processes, whatever else runs on the machine.
    assert!(
        peak <= LIMIT as usize,
        "the bomb reached {peak} processes (limit {LIMIT})"
    );
    assert!(
        peak > LIMIT as usize / 2,
        "the bomb never got going: peak {peak}"
    );
    assert!(
        !matches!(run.outcome.status, Status::TimedOut),
        "{:?}",
        run.outcome
    );
    // Nothing of the bomb is left, and the node still starts tasks at once.
    assert_eq!(helper_processes(false), 0);
    let started = Instant::now();
    let ok = fx.run(spec(&["echo", "alive"]), &Policy::strict()).await;
    assert_eq!(ok.stdout(), "alive\n");
    assert!(started.elapsed() < Duration::from_secs(5));
    let leftovers: Vec<_> = [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
    ]
    .iter()
    .map(|d| PathBuf::from(d).join(&bomb_cgroup))
    .filter(|d| !bomb_cgroup.is_empty() && d.exists())
    .collect();
    assert!(
        leftovers.is_empty(),
        "task cgroups left behind: {leftovers:?}"
    );
}
