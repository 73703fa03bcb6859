//! Test-only helper for the sandbox's integration tests, run as a task and
//! allowed by absolute path. Not part of the node.
//!
//! - `connect ADDR`: TCP connect; exit 0 on success, 3 on failure.
//! - `forkbomb SECONDS`: forks without bound for SECONDS, then exits 0.
//! - `child-sleep`: spawns `sleep 1000`, prints its pid, waits for it.
//! - `read PATH`: prints the file; exit 4 if it cannot be read.
//! - `socket udp|udp6|tcp|unix|netlink|packet`: creates one; exit 0, or 5
//!   with the error on stderr (`EPERM` → "Operation not permitted").
//! - `unix-connect PATH`: connects a stream UNIX socket to PATH; 0 or 5.
//! - `unshare user|mount|pid|net`: unshares that namespace; 0 or 5.
//! - `clone3`: calls `clone3` with a user-namespace flag; 0 or 5.
//! - `chmod MODE PATH`: `chmod` with an octal mode; 0 or 5.
//! - `exec PATH ARGS…`: `execv` (what `find -exec` does); 5 if it fails.
//! - `ptrace`, `bpf`, `io-uring`, `keyctl`, `personality-rie`, `mount`:
//!   the syscall with harmless arguments; 0 or 5.
//! - `read-fd N`: prints what can be read from fd N (no reopening); 0 or 5.
//! - `raise SIG`: dies by signal SIG (exit 6 if it survives).
//! - `node WS STATE TMP SECONDS`: a node in miniature: starts a STRICT
//!   `sleep SECONDS` in a sandbox, prints "started", waits for it.

#![allow(unsafe_code)]

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "connect" => connect(&arg(1)),
        "forkbomb" => {
            let secs: u64 = arg(1).parse().unwrap_or(2);
            forkbomb(Instant::now() + Duration::from_secs(secs));
            ExitCode::SUCCESS
        }
        "child-sleep" => child_sleep(),
        "read" => read(&arg(1)),
        "socket" => socket(&arg(1)),
        "unix-connect" => report(
            std::os::unix::net::UnixStream::connect(arg(1))
                .map(drop)
                .map_err(|e| e.to_string()),
        ),
        "unshare" => unshare(&arg(1)),
        "clone3" => clone3(),
        "chmod" => chmod(&arg(1), &arg(2)),
        "exec" => {
            let err = Command::new(arg(1)).args(&args[2..]).exec();
            let _ = writeln!(std::io::stderr(), "exec failed: {err}");
            ExitCode::from(5)
        }
        "read-fd" => read_fd(arg(1).parse().unwrap_or(-1)),
        "raise" => raise(arg(1).parse().unwrap_or(libc::SIGTERM)),
        "node" => node(&args[1..]),
        name => match harmless_syscall(name) {
            Some(r) => report(r),
            None => ExitCode::from(2),
        },
    }
}

fn connect(addr: &str) -> ExitCode {
    match TcpStream::connect(addr) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "connect failed: {e}");
            ExitCode::from(3)
        }
    }
}

fn child_sleep() -> ExitCode {
    let mut child = Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("spawn sleep");
    let _ = writeln!(std::io::stdout(), "{}", child.id());
    let _ = std::io::stdout().flush();
    let _ = child.wait();
    ExitCode::SUCCESS
}

fn read(path: &str) -> ExitCode {
    match std::fs::read(path) {
        Ok(b) => {
            let _ = std::io::stdout().write_all(&b);
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "read failed: {e}");
            ExitCode::from(4)
        }
    }
}

fn socket(kind: &str) -> ExitCode {
    let (domain, ty) = match kind {
        "udp" => (libc::AF_INET, libc::SOCK_DGRAM),
        "udp6" => (libc::AF_INET6, libc::SOCK_DGRAM),
        "tcp" => (libc::AF_INET, libc::SOCK_STREAM),
        "unix" => (libc::AF_UNIX, libc::SOCK_STREAM),
        "netlink" => (libc::AF_NETLINK, libc::SOCK_RAW),
        "packet" => (libc::AF_PACKET, libc::SOCK_DGRAM),
        _ => return ExitCode::from(2),
    };
    report(sys(|| unsafe { libc::socket(domain, ty, 0) } as i64))
}

fn unshare(namespace: &str) -> ExitCode {
    let flag = match namespace {
        "user" => libc::CLONE_NEWUSER,
        "mount" => libc::CLONE_NEWNS,
        "pid" => libc::CLONE_NEWPID,
        "net" => libc::CLONE_NEWNET,
        _ => return ExitCode::from(2),
    };
    report(sys(|| unsafe { libc::unshare(flag) } as i64))
}

fn clone3() -> ExitCode {
    // struct clone_args: flags first, exit_signal at offset 32; size 64.
    let mut args = [0u64; 8];
    args[0] = libc::CLONE_NEWUSER as u64;
    args[4] = libc::SIGCHLD as u64;
    let r = sys(|| unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 64usize) });
    if r == Ok(0) {
        unsafe { libc::_exit(0) };
    }
    report(r)
}

fn chmod(mode: &str, path: &str) -> ExitCode {
    let mode = u32::from_str_radix(mode, 8).unwrap_or(0);
    let path = std::ffi::CString::new(path).unwrap_or_default();
    report(sys(|| unsafe { libc::chmod(path.as_ptr(), mode) } as i64))
}

/// `ptrace`, `bpf`, `io-uring`, `keyctl`, `personality-rie`, `mount` with
/// harmless arguments; `None` for another name.
fn harmless_syscall(name: &str) -> Option<Result<i64, String>> {
    let r = match name {
        "ptrace" => sys(|| unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) }),
        "bpf" => sys(|| unsafe { libc::syscall(libc::SYS_bpf, 0, 0, 0) }),
        "io-uring" => {
            let mut params = [0u8; 120];
            sys(|| unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) })
        }
        "keyctl" => sys(|| unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) }),
        "personality-rie" => sys(|| unsafe { libc::personality(0x0040_0000) as i64 }),
        "mount" => sys(|| unsafe {
            libc::mount(
                c"none".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            ) as i64
        }),
        _ => return None,
    };
    Some(r)
}

fn read_fd(fd: i32) -> ExitCode {
    let mut buf = [0u8; 4096];
    // Raw read: the fd may not be open (no std ownership of it).
    let r = sys(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } as i64);
    report(r.map(|n| {
        let _ = std::io::stdout().write_all(&buf[..n as usize]);
    }))
}

fn raise(sig: i32) -> ExitCode {
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
    ExitCode::from(6)
}

/// Runs a raw syscall; `Err` with the OS error text when it returns -1.
#[allow(unsafe_code)]
fn sys(f: impl FnOnce() -> i64) -> Result<i64, String> {
    let r = f();
    if r < 0 {
        Err(std::io::Error::last_os_error().to_string())
    } else {
        Ok(r)
    }
}

fn report<T>(r: Result<T, String>) -> ExitCode {
    match r {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::from(5)
        }
    }
}

fn node(args: &[String]) -> ExitCode {
    use ganglion_sandbox::{Sandbox, SandboxOptions, TaskSpec};
    let opts = SandboxOptions::new(
        args[0].clone().into(),
        args[1].clone().into(),
        args[2].clone().into(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let sandbox = Sandbox::new(opts).expect("sandbox");
        let spec = TaskSpec {
            argv: vec!["sleep".into(), args[3].clone()],
            output_cap: 1 << 20,
            ..TaskSpec::default()
        };
        let mut task = sandbox
            .start(spec, &ganglion_core::policy::Policy::strict())
            .expect("start");
        let _ = writeln!(std::io::stdout(), "started {}", task.pid());
        let _ = std::io::stdout().flush();
        task.wait().await;
    });
    ExitCode::SUCCESS
}

/// Every process forks as fast as it can until `until`; children do the same.
fn forkbomb(until: Instant) {
    while Instant::now() < until {
        if fork() < 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[allow(unsafe_code)]
fn fork() -> i32 {
    // SAFETY: the helper is single-threaded, so the child may keep running Rust
    // code after fork.
    unsafe { libc::fork() }
}
