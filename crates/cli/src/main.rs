//! `ganglion`: one binary for the hub, the node and the operator commands.
//! Parsing lives in [`cli`], layered configuration in [`config`], and each
//! subcommand in [`commands`]; this file only wires them and reports errors.

mod cli;
mod client;
mod commands;
mod config;
mod logging;
mod progress;
mod signal;

use std::io::Write as _;

use clap::Parser;

/// mimalloc instead of glibc's allocator: an initial sync allocates and frees
/// buffers per message and per file, and glibc's (arena consolidation, large
/// buffers returned to the kernel and faulted in again) took about a tenth of
/// the hub's samples in a profile of a linux-tree sync.
/// (`--features system-allocator` keeps glibc's, for heap profilers such as
/// heaptrack, which see only `malloc`.)
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_decommits` in mimalloc's option enum (`mimalloc.h`);
/// the binding names the options of older versions only.
const MI_OPTION_PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;

/// Memory mimalloc gives back goes with `MADV_FREE` instead of
/// `MADV_DONTNEED`: the kernel still takes it when it needs it, but until
/// then reusing it costs no page fault and no zeroing. A sync frees and
/// allocates a message buffer per upload chunk; in alternating linux syncs
/// this cut page faults 3–4× and the sync time by ~7 %. (The freed memory
/// counts in RSS until the kernel reclaims it.) `MIMALLOC_PURGE_DECOMMITS`
/// in the environment still decides.
#[allow(unsafe_code)]
fn tune_allocator() {
    if cfg!(not(feature = "system-allocator"))
        && std::env::var_os("MIMALLOC_PURGE_DECOMMITS").is_none()
    {
        // SAFETY: sets a process-wide option; mimalloc allows it at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DECOMMITS, 0) }
    }
}

/// No transparent huge pages for the hub's process. mimalloc v3 asks for
/// them on its arenas (before `main`, so its option comes too late), and
/// then the hub's RSS grows in 2 MiB steps: `ganglion bench nodes` measured
/// 88 KiB of hub RSS per idle connected node with them, 59.5 KiB (at 1,000
/// nodes; 53 KiB at 10,000) without (glibc's allocator: 54 KiB). Only the
/// hub: children inherit the flag, and a node's tasks must run as they would
/// without ganglion. `MIMALLOC_ALLOW_THP=1` in the environment keeps them.
#[allow(unsafe_code)]
pub(crate) fn hub_without_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some_and(|v| v != "0") {
        return;
    }
    // SAFETY: prctl with integer arguments only; it changes a flag of this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(%error, "transparent huge pages stay enabled");
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let args = cli::Cli::parse();
    warn_secret_flags(std::env::args_os().skip(1));
    // Dropped last (after the runtime): flushes the queued log lines.
    let _log = logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("starting the runtime: {e}")),
    };
    match runtime.block_on(commands::dispatch(args)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// Flags whose value is a secret: on the command line it can be read by any
/// local user (`ps`, `/proc/PID/cmdline`), and STRICT tasks once could.
const SECRET_FLAGS: &[&str] = &["--admin-token"];

/// Warns (one `warning:` line on stderr) when a secret was given as a flag
/// rather than through its environment variable or the data dir. Reads the
/// arguments clap has already accepted, up to `--` (what follows is a remote
/// program's argv). Not clap's `value_source`: the flag is global, defined on
/// some subcommands only, and asking a level that lacks it panics.
fn warn_secret_flags(args: impl Iterator<Item = std::ffi::OsString>) {
    let flag = args.take_while(|a| a != "--").find_map(|a| {
        let a = a.to_string_lossy().into_owned();
        SECRET_FLAGS
            .iter()
            .find(|f| a == **f || a.starts_with(&format!("{f}=")))
            .copied()
    });
    if let Some(flag) = flag {
        let _ = writeln!(
            std::io::stderr(),
            "warning: {flag} on the command line can be read by other local users \
             (ps, /proc/PID/cmdline); set GANGLION_ADMIN_TOKEN or use --data-dir instead"
        );
    }
}

/// The error and its causes joined by `: `, skipping a cause whose text is
/// already shown (errors like `invalid invite: {0}` also chain their source).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// Whether the error is stdout closed under us (`ganglion … | head -1`).
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints the one-line `error: …` CONTRACT.md promises and picks the exit code.
/// A closed stdout ends the command quietly and successfully, as with any
/// Unix tool whose reader has had enough.
fn fail(e: &anyhow::Error) -> std::process::ExitCode {
    if broken_pipe(e) {
        return std::process::ExitCode::SUCCESS;
    }
    let line = one_line(e);
    // Nowhere to report a failure to write the error (stderr full or closed).
    let _ = writeln!(std::io::stderr(), "error: {line}");
    let code = e
        .downcast_ref::<commands::Failure>()
        .map(|c| c.code)
        .unwrap_or(1);
    std::process::ExitCode::from(code)
}
