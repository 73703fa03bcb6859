//! `ganglion bench nodes`: a real hub process, N in-process simulated nodes.
//!
//! Reports join latency (TLS connect + `Join` RPC, one at a time by default)
//! as p50/p99 over `--joins` joins, and the hub's resident memory per idle
//! connected node (each node a real node runtime: its own TLS connection,
//! configuration, control stream and heartbeats) at each of `--counts`.
//! Output lines are `name value unit  # details`, like ../shared/bench.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ganglion_api as api;
use ganglion_core::{Capabilities, InviteCode, NodeName, Secret};
use ganglion_node::state::JoinedNode;
use ganglion_node::{NodeRuntime, RuntimeOptions, capabilities, join};
use tokio_util::sync::CancellationToken;

use super::out;
use crate::cli::{BenchCommand, BenchNodesArgs, HubLocator};
use crate::client::ApiClient;

pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Nodes(a) => nodes(a).await,
        BenchCommand::Tasks(a) => super::bench_tasks::tasks(a).await,
    }
}

pub(super) struct HubProcess {
    /// Held so the hub process is killed when the bench ends (kill_on_drop).
    _child: tokio::process::Child,
    pub(super) pid: u32,
    pub(super) dir: tempfile::TempDir,
}

pub(super) async fn start_hub() -> anyhow::Result<HubProcess> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let child = tokio::process::Command::new(exe)
        .args([
            "hub",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("GANGLION_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the hub")?;
    let pid = child.id().context("hub pid")?;
    let endpoints = dir.path().join("run/endpoints.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !endpoints.exists() {
        if Instant::now() > deadline {
            bail!("the hub did not become ready in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(HubProcess {
        _child: child,
        pid,
        dir,
    })
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn create_invites(api: &ApiClient, n: usize) -> anyhow::Result<Vec<String>> {
    let mut codes = Vec::with_capacity(n);
    for _ in 0..n {
        let c: api::InviteCreated = api
            .post("/api/v1/invites", &api::CreateInvite::default())
            .await?;
        codes.push(c.invite);
    }
    Ok(codes)
}

/// One timed join: TLS connect with pinning plus the `Join` RPC.
pub(super) async fn join_one(
    code: &str,
    name: String,
) -> anyhow::Result<(Duration, JoinedNode, Secret)> {
    let invite = InviteCode::parse(code)?;
    let caps = Capabilities::default();
    let started = Instant::now();
    let joined = join::redeem(&invite, Some(NodeName::parse(&name)?), caps, None).await?;
    let took = started.elapsed();
    let state = JoinedNode {
        hub_addr: invite.hub_addr.clone(),
        cert_sha256: invite.cert_sha256.clone(),
        node_id: joined.node_id,
        name,
        workspace: PathBuf::from("/nonexistent"),
    };
    Ok((took, state, joined.credential))
}

async fn nodes(a: BenchNodesArgs) -> anyhow::Result<ExitCode> {
    ganglion_node::limits::raise_nofile();
    let hub = start_hub().await?;
    let loc = HubLocator {
        data_dir: Some(hub.dir.path().to_path_buf()),
        ..Default::default()
    };
    let api = Arc::new(ApiClient::locate(&loc)?);
    out(format!(
        "# bench nodes: hub pid {} on {} cores; client and hub share the machine",
        hub.pid,
        num_cpus()
    ));

    let joined = join_all(&a, &api).await?;
    idle_rss(&a, &api, joined, hub.pid).await?;
    drop(hub);
    Ok(ExitCode::SUCCESS)
}

/// Joins as many nodes as the largest count needs, `--concurrency` at a
/// time; prints the join latency of the first `--joins`.
async fn join_all(
    a: &BenchNodesArgs,
    api: &ApiClient,
) -> anyhow::Result<Vec<(JoinedNode, Secret)>> {
    let max_nodes = a.counts.iter().copied().max().unwrap_or(0).max(a.joins);
    let codes = create_invites(api, max_nodes).await?;
    let mut joined = Vec::with_capacity(max_nodes);
    let mut latencies = Vec::with_capacity(a.joins);
    let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, code) in codes.into_iter().enumerate() {
        let permit = sem.clone().acquire_owned().await?;
        set.spawn(async move {
            let r = join_one(&code, format!("bench-{i}")).await;
            drop(permit);
            (i, r)
        });
        while set.len() >= a.concurrency.max(1) {
            let (i, r) = set.join_next().await.context("join task")??;
            record(i, r?, a.joins, &mut latencies, &mut joined);
        }
    }
    while let Some(res) = set.join_next().await {
        let (i, r) = res?;
        record(i, r?, a.joins, &mut latencies, &mut joined);
    }
    latencies.sort();
    let p50 = percentile(&latencies, 0.5);
    let p99 = percentile(&latencies, 0.99);
    let detail = format!(
        "n={} concurrency={} TLS connect + Join RPC",
        latencies.len(),
        a.concurrency
    );
    out(format!(
        "{:<36} {:>10.2} ms  # {detail}",
        "nodes.join_p50",
        p50.as_secs_f64() * 1e3
    ));
    out(format!(
        "{:<36} {:>10.2} ms  # {detail}",
        "nodes.join_p99",
        p99.as_secs_f64() * 1e3
    ));
    Ok(joined)
}

/// Connects the joined nodes, up to each of `--counts` in turn, and prints
/// the hub's resident memory per idle connected node at each.
async fn idle_rss(
    a: &BenchNodesArgs,
    api: &ApiClient,
    joined: Vec<(JoinedNode, Secret)>,
    hub_pid: u32,
) -> anyhow::Result<()> {
    let caps = capabilities::probe();
    let mut counts = a.counts.clone();
    counts.sort();
    let cancel = CancellationToken::new();
    let mut running = 0usize;
    let baseline = rss_kib(hub_pid)?;
    for &n in &counts {
        while running < n {
            let (state, cred) = joined[running].clone();
            let mut opts = RuntimeOptions::new(state, cred, caps.clone());
            // Spread source addresses so 10k connections never exhaust ephemeral ports.
            opts.bind_ip = Some(std::net::IpAddr::from([
                127,
                0,
                1 + (running / 20_000) as u8,
                1,
            ]));
            tokio::spawn(NodeRuntime::new(opts)?.run(cancel.child_token()));
            running += 1;
        }
        wait_online(api, n).await?;
        tokio::time::sleep(Duration::from_secs(2)).await; // let allocations settle after the burst
        let rss = rss_kib(hub_pid)?;
        let per = (rss.saturating_sub(baseline) as f64) / n as f64;
        out(format!(
            "{:<36} {:>10.1} KiB # hub RSS {rss} KiB, baseline {baseline} KiB",
            format!("nodes.hub_rss_per_idle_node@{n}"),
            per
        ));
    }
    cancel.cancel();
    Ok(())
}

fn record(
    i: usize,
    r: (Duration, JoinedNode, Secret),
    timed: usize,
    latencies: &mut Vec<Duration>,
    joined: &mut Vec<(JoinedNode, Secret)>,
) {
    if i < timed {
        latencies.push(r.0);
    }
    joined.push((r.1, r.2));
}

pub(super) async fn wait_online(api: &ApiClient, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s: api::Status = api.get("/api/v1/status").await?;
        if s.nodes_online >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} nodes online after 300 s", s.nodes_online);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
