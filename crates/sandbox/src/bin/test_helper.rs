//! Test-only helper for the sandbox's integration tests, run as a task and
//! allowed by absolute path. Not part of the node.
//!
//! - `connect ADDR`: TCP connect; exit 0 on success, 3 on failure.
//! - `forkbomb SECONDS`: forks without bound for SECONDS, then exits 0.
//! - `child-sleep`: spawns `sleep 1000`, prints its pid, waits for it.
//! - `read PATH`: prints the file; exit 4 if it cannot be read.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "connect" => match TcpStream::connect(arg(1)) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "connect failed: {e}");
                ExitCode::from(3)
            }
        },
        "forkbomb" => {
            let secs: u64 = arg(1).parse().unwrap_or(2);
            forkbomb(Instant::now() + Duration::from_secs(secs));
            ExitCode::SUCCESS
        }
        "child-sleep" => {
            let mut child = Command::new("sleep")
                .arg("1000")
                .spawn()
                .expect("spawn sleep");
            let _ = writeln!(std::io::stdout(), "{}", child.id());
            let _ = std::io::stdout().flush();
            let _ = child.wait();
            ExitCode::SUCCESS
        }
        "read" => match std::fs::read(arg(1)) {
            Ok(b) => {
                let _ = std::io::stdout().write_all(&b);
                ExitCode::SUCCESS
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "read failed: {e}");
                ExitCode::from(4)
            }
        },
        _ => ExitCode::from(2),
    }
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
