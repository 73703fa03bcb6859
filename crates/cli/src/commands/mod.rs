//! One module per subcommand group. Each turns parsed arguments into calls on
//! the hub, node or API client, and prints the result.

mod bench;
mod hub;
mod invite;
mod node;
mod nodes;
mod up;

use std::process::ExitCode as ProcessExit;

use crate::cli::{Cli, Command};

/// An error that carries the process exit code to use.
#[derive(Debug)]
pub struct ExitCode(pub u8);

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitCode {}

pub async fn dispatch(cli: Cli) -> anyhow::Result<ProcessExit> {
    match cli.command {
        Command::Hub(a) => hub::run(a).await,
        Command::Up(a) => up::run(a).await,
        Command::Node(c) => node::run(c).await,
        Command::Invite(c) => invite::run(c).await,
        Command::Nodes(c) => nodes::run(c).await,
        Command::Bench(c) => bench::run(c).await,
        Command::Run(_) => not_yet("run"),
        Command::Tasks(_) => not_yet("tasks"),
        Command::Mirror(_) => not_yet("mirror"),
    }
}

fn not_yet(what: &str) -> anyhow::Result<ProcessExit> {
    Err(anyhow::anyhow!("`ganglion {what}` is not available yet in this version").context(ExitCode(2)))
}

/// Prints a value as the one JSON document on stdout.
#[allow(clippy::print_stdout)]
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints a line of command output on stdout.
#[allow(clippy::print_stdout)]
pub fn out(line: impl std::fmt::Display) {
    println!("{line}");
}
