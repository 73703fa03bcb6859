//! One module per subcommand group. Each turns parsed arguments into calls on
//! the hub, node or API client, and prints the result.

mod bench;
mod bench_tasks;
mod hub;
mod invite;
mod mirror;
mod node;
mod nodes;
mod run;
mod tasks;
mod up;

use std::process::ExitCode as ProcessExit;

use crate::cli::{Cli, Command};

/// An error that carries the process exit code to use with its message.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn error(code: u8, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Failure {
            code,
            message: message.into(),
        })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

pub async fn dispatch(cli: Cli) -> anyhow::Result<ProcessExit> {
    match cli.command {
        Command::Hub(a) => hub::run(a).await,
        Command::Up(a) => up::run(a).await,
        Command::Node(c) => node::run(c).await,
        Command::Invite(c) => invite::run(c).await,
        Command::Nodes(c) => nodes::run(c).await,
        Command::Bench(c) => bench::run(c).await,
        Command::Run(a) => run::run(a).await,
        Command::Tasks(c) => tasks::run(c).await,
        Command::Mirror(c) => mirror::run(c).await,
    }
}

/// Prints a value as the one JSON document on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    out(serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints a line of command output on stdout. When stdout was closed by its
/// reader (`ganglion tasks ls | head -1`) the command ends quietly with
/// status 0, as Unix tools do; other write errors are ignored (`println!`
/// would panic on either).
pub fn out(line: impl std::fmt::Display) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    if written.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
        std::process::exit(0);
    }
}
