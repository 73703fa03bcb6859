//! `ganglion node join|start|restore`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ganglion_core::NodeName;
use ganglion_node::state::StateDir;
use ganglion_node::{ExecutorOptions, NodeRuntime, RuntimeOptions, capabilities, join};

use crate::cli::NodeCommand;
use crate::config::{self, NodeConfig};

pub async fn run(cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    let flags = match &cmd {
        NodeCommand::Join(a) => &a.node,
        NodeCommand::Start(a) | NodeCommand::Restore(a) => &a.node,
    };
    let config = config::node_config(flags)?;
    if flags.print_config {
        super::out(config::node::print(&config).trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    if let NodeCommand::Restore(_) = cmd {
        return restore(&config).await;
    }
    if let NodeCommand::Join(a) = cmd {
        let name = a
            .name
            .as_deref()
            .map(NodeName::parse)
            .transpose()
            .context("--name")?;
        let workspace = workspace_dir(&a.workspace)?;
        let state_dir = StateDir::new(&config.state_dir);
        join::join(
            &a.invite,
            name,
            workspace,
            &state_dir,
            capabilities::probe(),
        )
        .await?;
    }
    start(&config).await
}

/// `node restore`: drops the workspace index (and its replica marker); the
/// next `node start` is a new incarnation, which the hub restores.
async fn restore(config: &NodeConfig) -> anyhow::Result<ExitCode> {
    let state_dir = StateDir::new(&config.state_dir);
    let (state, _) = state_dir.load()?;
    let forgotten = ganglion_node::mirror::replica::forget(&state.workspace, &config.state_dir)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    super::out(format!(
        "forgot the index of {} ({forgotten} entries): the next `ganglion node start` restores \
         the workspace from the hub (local files that differ are kept as conflicts)",
        state.workspace.display()
    ));
    Ok(ExitCode::SUCCESS)
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
pub async fn start(config: &NodeConfig) -> anyhow::Result<ExitCode> {
    let state_dir = StateDir::new(&config.state_dir);
    let (state, credential) = state_dir.load()?;
    let cancel = crate::signal::shutdown_token()?;
    let mut opts = RuntimeOptions::new(state.clone(), credential, capabilities::probe());
    opts.executor = ExecutorOptions::Sandbox(sandbox_options(
        &state.workspace,
        state_dir.path(),
        &state.name,
    )?);
    opts.mirror = Some(ganglion_node::mirror::MirrorOptions {
        node_name: state.name.clone(),
        workspace: state.workspace.clone(),
        state_dir: state_dir.path().to_path_buf(),
        exclude: Vec::new(),
        progress: crate::progress::for_terminal(),
    });
    opts.report_grace = config.report_grace;
    opts.backoff_base = config.reconnect_delay;
    opts.backoff_cap = config.reconnect_delay_max;
    let runtime = NodeRuntime::new(opts)?;
    runtime.run(cancel).await?;
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
