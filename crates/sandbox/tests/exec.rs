//! STRICT: only the allowlisted program files may be executed (Landlock
//! `Execute` per file), whatever an allowlisted program is told to run.

mod common;

use common::{Fixture, exists, spec};
use ganglion_core::policy::Policy;
use ganglion_sandbox::{Error, Status, probe};

/// The dynamic loader of this machine's programs.
const LOADERS: &[&str] = &["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"];

fn loader() -> Option<&'static str> {
    LOADERS
        .iter()
        .copied()
        .find(|l| std::path::Path::new(l).exists())
}

fn admin_allows(programs: &[&str]) -> Policy {
    Policy {
        allow: programs.iter().map(|p| p.to_string()).collect(),
        ..Policy::strict()
    }
}

/// The reproducer: `sort` runs its `--compress-program` (a shell)
/// with sorted data as its stdin, here lines that create a file.
#[tokio::test]
async fn sort_cannot_run_a_shell_as_its_compress_program() {
    if !probe().landlock_fs {
        eprintln!("skipped: no landlock");
        return;
    }
    let fx = Fixture::new();
    let pwned = fx.path("ws/pwned");
    let line = format!("touch {}\n", pwned.display());
    std::fs::write(fx.path("ws/input"), line.repeat(4000)).unwrap();
    let argv = [
        "sort",
        "-S",
        "1K",
        "--compress-program=sh",
        "-o",
        "sorted",
        "input",
    ];
    let run = fx.run(spec(&argv), &Policy::strict()).await;
    assert_ne!(run.outcome.status, Status::Exited(0), "{}", run.stderr());
    assert!(!exists(&pwned), "the shell ran: {}", run.stderr());
    // Control: the same command, permissive, does run the shell.
    let run = fx.run(spec(&argv), &Policy::permissive()).await;
    assert!(
        exists(&pwned),
        "control: {:?} {}",
        run.outcome,
        run.stderr()
    );
}

/// Admin-allowlisted programs that start others (`env`, `find`, `timeout`)
/// cannot start a shell, an interpreter, the loader with a shell, or a copy
/// of a shell written into the workspace; they still start allowlisted ones.
#[tokio::test]
async fn allowlisted_launchers_start_only_allowlisted_programs() {
    if !probe().landlock_fs {
        eprintln!("skipped: no landlock");
        return;
    }
    let fx = Fixture::new();
    std::fs::write(fx.path("ws/f"), "content\n").unwrap();
    std::fs::copy("/bin/sh", fx.path("ws/mysh")).unwrap();
    let p = admin_allows(&["env", "find", "timeout"]);
    let mut attempts: Vec<Vec<&str>> = vec![
        vec!["env", "sh", "-c", "echo pwned"],
        vec!["env", "/bin/sh", "-c", "echo pwned"],
        vec!["timeout", "5", "sh", "-c", "echo pwned"],
        vec!["env", "python3", "-c", "print('pwned')"],
        vec!["find", "f", "-exec", "python3", "-c", "print('pwned')", ";"],
        vec!["find", "f", "-exec", "sh", "-c", "echo pwned", ";"],
        vec!["env", "./mysh", "-c", "echo pwned"],
    ];
    let ld = loader();
    if let Some(ld) = ld {
        attempts.push(vec!["timeout", "5", ld, "/bin/sh", "-c", "echo pwned"]);
        attempts.push(vec!["env", ld, "/usr/bin/sh", "-c", "echo pwned"]);
        attempts.push(vec![
            "find",
            "f",
            "-exec",
            ld,
            "/bin/sh",
            "-c",
            "echo pwned",
            ";",
        ]);
        // The loader maps the copy: refused on the noexec workspace mount.
        attempts.push(vec!["env", ld, "./mysh", "-c", "echo pwned"]);
    }
    for argv in &attempts {
        let run = fx.run(spec(argv), &p).await;
        assert!(
            !run.stdout().contains("pwned"),
            "{argv:?} ran: {:?} {}",
            run.outcome,
            run.stderr()
        );
        // (`find` reports a failed `-exec` on stderr but may exit 0.)
        assert!(
            run.outcome.status != Status::Exited(0) || run.stderr().contains("Permission denied"),
            "{argv:?}: {:?} {}",
            run.outcome,
            run.stderr()
        );
    }
    // Allowlisted programs started by allowlisted programs work, dynamic ones.
    for argv in [
        vec!["timeout", "5", "cat", "f"],
        vec!["env", "cat", "f"],
        vec!["find", "f", "-exec", "cat", "{}", ";"],
    ] {
        let run = fx.run(spec(&argv), &p).await;
        assert_eq!(
            (run.outcome.status, run.stdout().as_str()),
            (Status::Exited(0), "content\n"),
            "{argv:?}: {}",
            run.stderr()
        );
    }
    // The program directories can still be listed.
    let run = fx.run(spec(&["ls", "/usr/bin"]), &p).await;
    assert_eq!(run.outcome.status, Status::Exited(0), "{}", run.stderr());
    assert!(run.stdout().lines().any(|l| l == "cat"));
    // Control: permissive, the loader runs the shell.
    if let Some(ld) = ld {
        let run = fx
            .run(
                spec(&["timeout", "5", ld, "/bin/sh", "-c", "echo pwned"]),
                &Policy::permissive(),
            )
            .await;
        assert_eq!(run.stdout(), "pwned\n", "control: {}", run.stderr());
    }
}

#[tokio::test]
async fn the_loader_is_refused_as_a_program() {
    let Some(ld) = loader() else {
        eprintln!("skipped: no known loader");
        return;
    };
    let fx = Fixture::new();
    let p = admin_allows(&[ld]);
    match fx.sandbox.start(spec(&[ld, "/bin/echo", "pwned"]), &p) {
        Err(e) => {
            assert!(matches!(e, Error::LoaderRefused { .. }), "{e}");
            assert_eq!(e.exit_code(), 126);
        }
        Ok(t) => panic!("started pid {}", t.pid()),
    }
}
