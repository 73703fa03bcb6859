//! `ganglion bench tasks`: a real hub process and `--nodes` real nodes
//! (`ganglion node start` processes with the sandbox; with `--simulated`,
//! node runtimes in this process that report each task started and exited 0 without
//! running it, to measure the hub and its journal). Tasks are submitted over
//! the HTTP API from this process, so CLI start-up is not in the figures.
//!
//! - round trip: one node, `true` submitted and read to its `finished` event,
//!   one at a time; p50/p99 against spawning `true` here.
//! - throughput: `--tasks` tasks of `true` spread over the nodes with
//!   `--concurrency` in flight; tasks/s over the whole batch.
//!
//! Output lines are `name value unit  # details`, like ../shared/bench.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use ganglion_api::{self as api, TaskEventLine, TaskStatus};
use ganglion_core::NodeName;
use ganglion_node::state::StateDir;
use ganglion_node::{ExecutorOptions, NodeRuntime, RuntimeOptions, capabilities, join};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use super::bench::{join_one, percentile, start_hub, wait_online};
use super::out;
use crate::cli::{BenchTasksArgs, HubLocator};
use crate::client::ApiClient;

/// Runs `argv` on `node` through the API; the task's final status.
async fn run_task(api: &ApiClient, node: &str) -> anyhow::Result<TaskStatus> {
    let body = api::RunTask {
        node: node.to_owned(),
        argv: vec!["true".into()],
        cwd: None,
        env: Vec::new(),
        timeout: None,
        output_cap: None,
    };
    let resp = api.post_stream("/api/v1/tasks", &body).await?;
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if let TaskEventLine::Finished { task } = serde_json::from_slice(&line)? {
                return Ok(task.status);
            }
        }
    }
    bail!("the event stream ended before the task finished")
}

pub async fn tasks(a: BenchTasksArgs) -> anyhow::Result<ExitCode> {
    ganglion_node::limits::raise_nofile();
    let hub = start_hub().await?;
    let loc = HubLocator {
        data_dir: Some(hub.dir.path().to_path_buf()),
        ..Default::default()
    };
    let api = Arc::new(ApiClient::locate(&loc)?);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    out(format!(
        "# bench tasks: hub pid {} on {cores} cores; {} nodes ({}), journal on SQLite",
        hub.pid,
        a.nodes,
        if a.simulated {
            "in this process: real node runtimes and streams, tasks simulated: started + exit 0 at once"
        } else {
            "`ganglion node` processes, tasks run in the sandbox"
        }
    ));

    let root = tempfile::tempdir()?;
    let cancel = CancellationToken::new();
    let processes = start_nodes(&a, &api, root.path(), &cancel).await?;
    wait_online(&api, a.nodes.max(1)).await?;
    roundtrip(&a, &api).await?;
    if a.tasks > 0 {
        throughput(&a, &api).await?;
    }
    cancel.cancel();
    drop(processes);
    drop(hub);
    Ok(ExitCode::SUCCESS)
}

/// Joins `--nodes` nodes and starts them. Real nodes are `ganglion node
/// start` processes, as deployed (a task's fork copies its node's address
/// space: one process per node keeps that at a node's size); the returned
/// processes are killed when dropped. Simulated nodes share this process
/// and stop with `cancel`.
async fn start_nodes(
    a: &BenchTasksArgs,
    api: &ApiClient,
    root: &Path,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<Child>> {
    let caps = capabilities::probe();
    let mut processes = Vec::new();
    for i in 0..a.nodes.max(1) {
        let c: api::InviteCreated = api
            .post("/api/v1/invites", &api::CreateInvite::default())
            .await?;
        let name = format!("bench-{i}");
        let ws = root.join(format!("ws-{i}"));
        let st = root.join(format!("state-{i}"));
        std::fs::create_dir_all(&ws)?;
        if a.simulated {
            std::fs::create_dir_all(&st)?;
            let (_, mut state, cred) = join_one(&c.invite, name.clone()).await?;
            state.workspace = ws.clone();
            let mut opts = RuntimeOptions::new(state, cred, caps.clone());
            opts.executor = ExecutorOptions::Simulated;
            tokio::spawn(NodeRuntime::new(opts)?.run(cancel.child_token()));
        } else {
            let state_dir = StateDir::new(st.clone());
            let node_name = NodeName::parse(&name)?;
            join::join(&c.invite, Some(node_name), ws, &state_dir, caps.clone()).await?;
            let child = tokio::process::Command::new(std::env::current_exe()?)
                .args(["node", "start", "--state-dir"])
                .arg(&st)
                .env("GANGLION_LOG", "warn")
                // Task temp roots inside the bench's temp dir, removed with it.
                .env("TMPDIR", root)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting a node")?;
            processes.push(child);
        }
    }
    Ok(processes)
}

/// Round trip, one at a time, against spawning `true` here.
async fn roundtrip(a: &BenchTasksArgs, api: &ApiClient) -> anyhow::Result<()> {
    let mut local = Vec::with_capacity(a.roundtrips);
    for _ in 0..a.roundtrips {
        let t = Instant::now();
        let st = tokio::process::Command::new("true").status().await?;
        local.push(t.elapsed());
        anyhow::ensure!(st.success(), "true failed locally");
    }
    for _ in 0..a.warmup {
        run_task(api, "bench-0").await?;
    }
    let mut rtt = Vec::with_capacity(a.roundtrips);
    for _ in 0..a.roundtrips {
        let t = Instant::now();
        let status = run_task(api, "bench-0").await?;
        rtt.push(t.elapsed());
        succeeded(status)?;
    }
    local.sort();
    rtt.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let n = a.roundtrips;
    out(format!(
        "{:<36} {:>10.3} ms  # p99 {:.3} ms, n={n}, tokio::process spawn+wait",
        "tasks.local_spawn_true_p50",
        ms(percentile(&local, 0.5)),
        ms(percentile(&local, 0.99))
    ));
    out(format!(
        "{:<36} {:>10.3} ms  # p99 {:.3} ms, n={n}, HTTP submit → node sandbox → finished event",
        "tasks.roundtrip_true_p50",
        ms(percentile(&rtt, 0.5)),
        ms(percentile(&rtt, 0.99))
    ));
    out(format!(
        "{:<36} {:>10.3} ms  # roundtrip p50 minus local spawn p50",
        "tasks.roundtrip_overhead_p50",
        ms(percentile(&rtt, 0.5)) - ms(percentile(&local, 0.5))
    ));
    Ok(())
}

/// Throughput over all nodes: `--tasks` tasks, `--concurrency` in flight.
async fn throughput(a: &BenchTasksArgs, api: &Arc<ApiClient>) -> anyhow::Result<()> {
    let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..a.tasks {
        let permit = sem.clone().acquire_owned().await?;
        let api = api.clone();
        let node = format!("bench-{}", i % a.nodes.max(1));
        set.spawn(async move {
            let r = run_task(&api, &node).await;
            drop(permit);
            r
        });
        while let Some(r) = set.try_join_next() {
            succeeded(r.context("task")??)?;
        }
    }
    while let Some(r) = set.join_next().await {
        succeeded(r.context("task")??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    out(format!(
        "{:<36} {:>10.0} tasks/s  # {} tasks of `true` over {} nodes, {} in flight, {secs:.2} s",
        if a.simulated {
            "tasks.throughput_simulated"
        } else {
            "tasks.throughput"
        },
        a.tasks as f64 / secs,
        a.tasks,
        a.nodes,
        a.concurrency
    ));
    Ok(())
}

fn succeeded(status: TaskStatus) -> anyhow::Result<()> {
    anyhow::ensure!(
        status == TaskStatus::Succeeded,
        "task ended {}",
        status.as_str()
    );
    Ok(())
}
