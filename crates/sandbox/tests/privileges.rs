//! STRICT: no set-id files, an unprivileged uid on a root node, and the
//! seccomp filter's classes of denied syscalls, each tried for real.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{Fixture, HELPER, spec, strict_with_helper};
use ganglion_core::policy::{Policy, PolicyMode};
use ganglion_sandbox::{Status, probe};

fn admin_allows(programs: &[&str]) -> Policy {
    Policy {
        allow: programs.iter().map(|p| p.to_string()).collect(),
        ..Policy::strict()
    }
}

fn set_id_bits(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p)
        .map(|m| m.permissions().mode() & 0o6000)
        .unwrap_or(0)
}

#[tokio::test]
async fn strict_tasks_cannot_make_set_id_files() {
    if !probe().seccomp {
        eprintln!("skipped: no seccomp");
        return;
    }
    let fx = Fixture::new();
    std::fs::write(fx.path("ws/f"), "x").unwrap();
    let p = admin_allows(&["chmod", "install", HELPER]);
    for argv in [
        vec!["chmod", "4755", "f"],
        vec!["chmod", "u+s", "f"],
        vec!["chmod", "g+s", "f"],
        vec!["install", "-m", "4755", "f", "suid"],
        vec!["install", "-m", "2755", "f", "sgid"],
        vec!["mkdir", "-m", "2755", "d"],
        vec![HELPER, "chmod", "4755", "f"],
    ] {
        let run = fx.run(spec(&argv), &p).await;
        assert_ne!(run.outcome.status, Status::Exited(0), "{argv:?}");
        assert!(
            run.stderr().contains("Operation not permitted"),
            "{argv:?}: {}",
            run.stderr()
        );
    }
    for name in ["f", "suid", "sgid", "d"] {
        assert_eq!(set_id_bits(&fx.path("ws").join(name)), 0, "{name}");
    }
    // Plain modes still work.
    let run = fx.run(spec(&["chmod", "750", "f"]), &p).await;
    assert_eq!(run.outcome.status, Status::Exited(0), "{}", run.stderr());
    // Control: permissive can.
    let permissive = Policy {
        mode: PolicyMode::Permissive,
        ..p.clone()
    };
    let run = fx.run(spec(&["chmod", "4755", "f"]), &permissive).await;
    assert_eq!(run.outcome.status, Status::Exited(0), "{}", run.stderr());
    assert_eq!(set_id_bits(&fx.path("ws/f")), 0o4000);
}

/// On a root node the task is not root, cannot read `/etc/shadow`, and still
/// writes the root-owned workspace; its files are root's on disk.
#[tokio::test]
async fn strict_tasks_of_a_root_node_are_unprivileged() {
    if !probe().root {
        eprintln!("skipped: the node is not root");
        return;
    }
    let fx = Fixture::new();
    if !fx
        .sandbox
        .protections()
        .iter()
        .any(|p| p == "unprivileged-tasks")
    {
        eprintln!("skipped: no idmapped mounts here");
        return;
    }
    assert_eq!(std::fs::metadata(fx.ws()).unwrap().uid(), 0);
    std::fs::write(fx.path("ws/old"), "old").unwrap();
    let p = admin_allows(&["id"]);
    let run = fx.run(spec(&["id", "-u"]), &p).await;
    assert_eq!(run.stdout().trim(), "65533", "{}", run.stderr());
    let run = fx.run(spec(&["id", "-G"]), &p).await;
    assert_eq!(run.stdout().trim(), "65533", "{}", run.stderr());
    if std::path::Path::new("/etc/shadow").exists() {
        let run = fx.run(spec(&["cat", "/etc/shadow"]), &p).await;
        assert_ne!(run.outcome.status, Status::Exited(0));
        assert!(run.stdout().is_empty());
    }
    for argv in [
        vec!["mkdir", "sub"],
        vec!["touch", "sub/new"],
        vec!["cp", "old", "sub/copy"],
        vec!["mv", "sub/copy", "moved"],
        vec!["rm", "old"],
    ] {
        let run = fx.run(spec(&argv), &p).await;
        assert_eq!(
            run.outcome.status,
            Status::Exited(0),
            "{argv:?}: {}",
            run.stderr()
        );
    }
    for made in ["sub", "sub/new", "moved"] {
        let m = std::fs::metadata(fx.path("ws").join(made)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{made}");
    }
    assert!(!fx.path("ws/old").exists());
    // Its temp dir ($TMPDIR, root's on disk) is writable: `sort` spills there.
    std::fs::write(fx.path("ws/big"), "line\n".repeat(20_000)).unwrap();
    let run = fx
        .run(spec(&["sort", "-S", "1K", "-o", "sorted", "big"]), &p)
        .await;
    assert_eq!(run.outcome.status, Status::Exited(0), "{}", run.stderr());
}

async fn helper(fx: &Fixture, args: &[&str], p: &Policy) -> (Status, String) {
    let mut argv = vec![HELPER];
    argv.extend_from_slice(args);
    let run = fx.run(spec(&argv), p).await;
    (run.outcome.status, run.stderr())
}

const EPERM: &str = "Operation not permitted";

#[tokio::test]
async fn seccomp_denies_sockets_namespaces_and_kernel_surface() {
    if !probe().seccomp {
        eprintln!("skipped: no seccomp");
        return;
    }
    let fx = Fixture::new();
    let p = strict_with_helper();
    let net = Policy {
        network: true,
        ..strict_with_helper()
    };
    let listener = std::os::unix::net::UnixListener::bind(fx.path("ws/sock")).unwrap();
    let sock = fx.path("ws/sock");
    let sock = sock.to_str().unwrap();
    for (args, policy, denied) in [
        (vec!["socket", "udp"], &p, true),
        (vec!["socket", "udp6"], &p, true),
        (vec!["socket", "tcp"], &p, true),
        (vec!["socket", "unix"], &p, true),
        (vec!["unix-connect", sock], &p, true),
        (vec!["socket", "netlink"], &p, true),
        (vec!["socket", "packet"], &p, true),
        (vec!["socket", "udp"], &net, false),
        (vec!["socket", "unix"], &net, false),
        (vec!["unix-connect", sock], &net, false),
        (vec!["socket", "netlink"], &net, true),
        (vec!["socket", "packet"], &net, true),
        (vec!["unshare", "user"], &p, true),
        (vec!["unshare", "mount"], &p, true),
        (vec!["unshare", "net"], &p, true),
        (vec!["ptrace"], &p, true),
        (vec!["bpf"], &p, true),
        (vec!["io-uring"], &p, true),
        (vec!["keyctl"], &p, true),
        (vec!["personality-rie"], &p, true),
        (vec!["mount"], &p, true),
    ] {
        let (status, stderr) = helper(&fx, &args, policy).await;
        if denied {
            assert_eq!(status, Status::Exited(5), "{args:?}: {stderr}");
            assert!(stderr.contains(EPERM), "{args:?}: {stderr}");
        } else {
            assert_eq!(status, Status::Exited(0), "{args:?}: {stderr}");
        }
    }
    // clone3 is "not implemented", so libc falls back to clone.
    let (status, stderr) = helper(&fx, &["clone3"], &p).await;
    assert_eq!(status, Status::Exited(5), "{stderr}");
    assert!(stderr.contains("Function not implemented"), "{stderr}");
    // Control: permissive tasks have no filter.
    let perm = Policy::permissive();
    for args in [
        vec!["socket", "udp"],
        vec!["socket", "netlink"],
        vec!["unshare", "user"],
    ] {
        let (status, stderr) = helper(&fx, &args, &perm).await;
        assert_eq!(status, Status::Exited(0), "{args:?}: {stderr}");
    }
    drop(listener);
}
