//! `ganglion node join|start`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ganglion_core::NodeName;
use ganglion_node::state::StateDir;
use ganglion_node::{ExecutorOptions, NodeRuntime, RuntimeOptions, capabilities, join};

use crate::cli::NodeCommand;

const DEFAULT_STATE_DIR: &str = "./ganglion-node";

pub async fn run(cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NodeCommand::Join(a) => {
            let name = a
                .name
                .as_deref()
                .map(NodeName::parse)
                .transpose()
                .context("--name")?;
            let workspace = workspace_dir(&a.workspace)?;
            let state_dir = StateDir::new(a.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()));
            let caps = capabilities::probe();
            let grace = report_grace(a.report_grace.as_deref())?;
            join::join(&a.invite, name, workspace, &state_dir, caps).await?;
            start(&state_dir, grace).await
        }
        NodeCommand::Start(a) => {
            let state_dir = StateDir::new(a.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()));
            start(&state_dir, report_grace(a.report_grace.as_deref())?).await
        }
    }
}

fn report_grace(flag: Option<&str>) -> anyhow::Result<Option<std::time::Duration>> {
    flag.map(ganglion_core::time::parse_duration)
        .transpose()
        .context("--report-grace")
}

/// The workspace as an absolute path; it must exist and be a directory.
pub fn workspace_dir(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    let abs =
        std::fs::canonicalize(path).with_context(|| format!("workspace {}", path.display()))?;
    if !abs.is_dir() {
        anyhow::bail!("workspace {} is not a directory", path.display());
    }
    Ok(abs)
}

/// Runs a joined node until SIGTERM/SIGINT.
pub async fn start(
    state_dir: &StateDir,
    report_grace: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    let (state, credential) = state_dir.load()?;
    let cancel = crate::signal::shutdown_token()?;
    let mut opts = RuntimeOptions::new(state.clone(), credential, capabilities::probe());
    opts.executor = ExecutorOptions::Sandbox(sandbox_options(
        &state.workspace,
        state_dir.path(),
        &state.name,
    )?);
    opts.mirror = Some(ganglion_node::mirror::MirrorOptions {
        workspace: state.workspace.clone(),
        state_dir: state_dir.path().to_path_buf(),
        exclude: Vec::new(),
        progress: crate::progress::for_terminal(),
    });
    if let Some(g) = report_grace {
        opts.report_grace = g;
    }
    let agent = NodeRuntime::new(opts)?;
    agent.run(cancel).await?;
    Ok(ExitCode::SUCCESS)
}

/// Where a node's tasks run: its workspace, never its state dir, with per-task
/// temp dirs under the system temp dir.
pub fn sandbox_options(
    workspace: &std::path::Path,
    state_dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<ganglion_sandbox::SandboxOptions> {
    let state_dir = std::fs::canonicalize(state_dir)
        .with_context(|| format!("state dir {}", state_dir.display()))?;
    let temp_root = ganglion_sandbox::SandboxOptions::default_temp_root(name);
    Ok(ganglion_sandbox::SandboxOptions::new(
        workspace.to_path_buf(),
        state_dir,
        temp_root,
    ))
}
