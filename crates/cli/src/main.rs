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

use clap::Parser;

/// mimalloc instead of glibc's allocator: an initial sync allocates and frees
/// buffers per message and per file, and glibc's (arena consolidation, large
/// buffers returned to the kernel and faulted in again) took about a tenth of
/// the hub's samples in a profile of a linux-tree sync.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    logging::init();
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

/// Prints the one-line `error: …` CONTRACT.md promises and picks the exit code.
#[allow(clippy::print_stderr)]
fn fail(e: &anyhow::Error) -> std::process::ExitCode {
    let line = one_line(e);
    eprintln!("error: {line}");
    let code = e
        .downcast_ref::<commands::Failure>()
        .map(|c| c.code)
        .unwrap_or(1);
    std::process::ExitCode::from(code)
}
