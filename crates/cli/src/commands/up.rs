//! `ganglion up`: a hub and a node named `local` in one process.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ganglion_core::{NodeName, RelPath};
use ganglion_hub::{Hub, HubHandle};
use ganglion_node::state::StateDir;
use ganglion_node::{ExecutorOptions, NodeRuntime, RuntimeOptions, capabilities, join};

use super::out;
use crate::cli::UpArgs;
use crate::config;

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let options = config::hub_options(&args.hub)?;
    if args.hub.print_config {
        super::out(config::print(&options).trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let workspace = super::node::workspace_dir(&args.workspace.unwrap_or_else(|| ".".into()))?;
    let data_dir = std::fs::create_dir_all(&options.data_dir)
        .and_then(|_| std::fs::canonicalize(&options.data_dir))
        .with_context(|| format!("data dir {}", options.data_dir.display()))?;
    let exclude = data_dir_in(&workspace, &data_dir);
    let state_dir = local_state_dir(&data_dir, !exclude.is_empty());
    // A hub holds a descriptor per node and per connection: the usual soft
    // limit (1024) is far too low.
    ganglion_node::limits::raise_nofile();
    let cancel = crate::signal::shutdown_token()?;

    let hub = Hub::build(options).await.context("starting the hub")?;
    let mut handle = hub.handle();
    let token_path = hub.admin_token_path();
    let hub_cancel = cancel.child_token();
    let hub_task = tokio::spawn(hub.run(hub_cancel.clone()));
    handle.ready().await;

    if !state_dir.is_joined() {
        join_local(&handle, &workspace, &state_dir).await?;
    }
    let opts = local_node(&handle, &state_dir, workspace, &data_dir, exclude)?;
    let workspace = opts.state.workspace.clone();
    let runtime = NodeRuntime::new(opts)?;
    let mut link = runtime.handle();
    let node_cancel = cancel.child_token();
    let mut node_task = tokio::spawn(runtime.run(node_cancel.clone()));
    link.wait_for(|s| s.connected).await;

    out(format!(
        "ganglion is up: hub and node \"local\" (workspace {})",
        workspace.display()
    ));
    out(format!("dashboard:   http://{}/", handle.endpoints.http));
    out(format!("admin token: {}", token_path.display()));
    out(format!(
        "nodes join with: ganglion invite create --data-dir {}",
        handle.data_dir.root().display()
    ));

    // Until Ctrl-C, or until the node stops by itself (one of its workers
    // failed): then the hub stops too and `up` exits non-zero, so a service
    // manager restarts both.
    let node = tokio::select! {
        _ = cancel.cancelled() => {
            node_cancel.cancel();
            node_task.await
        }
        ended = &mut node_task => ended,
    };
    hub_cancel.cancel();
    hub_task
        .await
        .context("hub task")?
        .context("running the hub")?;
    node.context("node task")?.context("running the node")?;
    Ok(ExitCode::SUCCESS)
}

/// The data dir as a path of the workspace, if it is inside it: such a data
/// dir is never mirrored.
fn data_dir_in(workspace: &Path, data_dir: &Path) -> Vec<RelPath> {
    data_dir
        .strip_prefix(workspace)
        .ok()
        .and_then(|r| r.to_str())
        .and_then(|r| RelPath::parse_lenient(r).ok().flatten())
        .into_iter()
        .collect()
}

/// Where the node "local" keeps its state: in the data dir, unless that is
/// inside the workspace (tasks can write there), then under the home.
fn local_state_dir(data_dir: &Path, in_workspace: bool) -> StateDir {
    if !in_workspace {
        return StateDir::new(data_dir.join("node-local"));
    }
    tracing::info!(
        data_dir = %data_dir.display(),
        "the data dir is inside the workspace: it is not mirrored, and strict tasks on \"local\" see an empty read-only directory in its place"
    );
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let key = &blake3::hash(data_dir.to_string_lossy().as_bytes()).to_hex()[..12];
    StateDir::new(
        home.join(".local/state/ganglion")
            .join(format!("local-{key}")),
    )
}

/// Joins the node "local" to the hub with a short-lived invite.
async fn join_local(
    handle: &HubHandle,
    workspace: &Path,
    state_dir: &StateDir,
) -> anyhow::Result<()> {
    let local = NodeName::parse("local").expect("valid name");
    let invite = handle
        .core
        .invites
        .create(Some(local.clone()), Some(Duration::from_secs(60)), None)
        .await?;
    join::join(
        &invite.code,
        Some(local),
        workspace.to_path_buf(),
        state_dir,
        capabilities::probe(),
    )
    .await?;
    Ok(())
}

/// The node "local"'s options: joined to this hub wherever it listens now,
/// running tasks in the sandbox (the hub's secrets hidden from them when the
/// data dir is in the workspace) and mirroring the workspace.
fn local_node(
    handle: &HubHandle,
    state_dir: &StateDir,
    workspace: PathBuf,
    data_dir: &Path,
    exclude: Vec<RelPath>,
) -> anyhow::Result<RuntimeOptions> {
    let (mut state, credential) = state_dir.load()?;
    // The hub may have moved (port 0, other flags): the local node follows it.
    state.hub_addr = handle.endpoints.grpc.clone();
    state.cert_sha256 = handle.endpoints.cert_sha256.clone();
    state.workspace = workspace;
    let mut opts = RuntimeOptions::new(state.clone(), credential, capabilities::probe());
    let mut sandbox =
        super::node::sandbox_options(&state.workspace, state_dir.path(), &state.name)?;
    if !exclude.is_empty() {
        // The hub's secrets (admin token, TLS key) must stay out of reach.
        sandbox.hidden.push(data_dir.to_path_buf());
    }
    opts.executor = ExecutorOptions::Sandbox(sandbox);
    opts.mirror = Some(ganglion_node::mirror::MirrorOptions {
        node_name: state.name.clone(),
        workspace: state.workspace.clone(),
        state_dir: state_dir.path().to_path_buf(),
        exclude,
        progress: None,
    });
    Ok(opts)
}
