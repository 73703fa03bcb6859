//! `ganglion mirror ls|cat|status|wait|verify|immutable`

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use ganglion_api::{
    FileKind, ImmutableChange, MirrorFile, MirrorStatus, PathQuery, VerifyReport, WaitQuery,
    WaitReport,
};
use serde::Serialize;

use super::invite::encode;
use super::{Failure, not_yet, out, print_json};
use crate::cli::{ImmutableAction, MirrorCommand};
use crate::client::ApiClient;

/// The fields CONTRACT.md lists for `mirror ls --json`.
#[derive(Serialize)]
struct FileOut<'a> {
    path: &'a str,
    size: u64,
    hash: Option<&'a str>,
    mtime: &'a str,
    kind: FileKind,
}

pub async fn run(cmd: MirrorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MirrorCommand::Ls {
            node,
            path,
            json,
            hub,
        } => ls(&ApiClient::locate(&hub)?, &node, path, json).await?,
        MirrorCommand::Cat { node, path, hub } => {
            cat(&ApiClient::locate(&hub)?, &node, path).await?
        }
        MirrorCommand::Status { node, json, hub } => {
            let s: MirrorStatus = ApiClient::locate(&hub)?
                .get(&format!("/api/v1/mirrors/{}/status", encode(&node)))
                .await?;
            print_status(&s, json)?;
        }
        MirrorCommand::Wait {
            node,
            files,
            timeout,
            json,
            hub,
        } => wait(&ApiClient::locate(&hub)?, &node, files, timeout, json).await?,
        MirrorCommand::Verify { node, hub } => verify(&ApiClient::locate(&hub)?, &node).await?,
        MirrorCommand::Put(_) => return not_yet("mirror put"),
        MirrorCommand::Immutable {
            node,
            action,
            pattern,
            json,
            hub,
        } => immutable(&ApiClient::locate(&hub)?, &node, action, pattern, json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn ls(
    client: &ApiClient,
    node: &str,
    path: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let q = PathQuery { path };
    let files: Vec<MirrorFile> = client
        .get_query(&format!("/api/v1/mirrors/{}/files", encode(node)), &q)
        .await?;
    if json {
        let v: Vec<FileOut<'_>> = files
            .iter()
            .map(|f| FileOut {
                path: &f.path,
                size: f.size,
                hash: f.hash.as_deref(),
                mtime: &f.mtime,
                kind: f.kind,
            })
            .collect();
        return print_json(&v);
    }
    for f in &files {
        let extra = f
            .target
            .as_deref()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        out(format!(
            "{:<7} {:>12} {} {}{extra}",
            f.kind.as_str(),
            f.size,
            f.mtime,
            f.path
        ));
    }
    Ok(())
}

/// Streamed: a large file never sits whole in memory here either.
async fn cat(client: &ApiClient, node: &str, path: String) -> anyhow::Result<()> {
    let mut resp = client
        .get_stream(
            &format!("/api/v1/mirrors/{}/file", encode(node)),
            &PathQuery { path: Some(path) },
        )
        .await?;
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = resp
        .chunk()
        .await
        .context("reading the file from the hub")?
    {
        stdout.write_all(&chunk)?;
    }
    stdout.flush()?;
    Ok(())
}

/// Asks the hub until the mirror is in sync or `timeout` seconds passed.
async fn wait(
    client: &ApiClient,
    node: &str,
    files: Option<u64>,
    timeout: u64,
    json: bool,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/mirrors/{}/wait", encode(node));
    let total = ganglion_hub::limits::MIRROR_WAIT_TOTAL.check_secs(timeout)?;
    let deadline = std::time::Instant::now() + total;
    // The hub holds a request up to a minute: ask again until done.
    let report = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let query = WaitQuery {
            files,
            timeout_ms: Some(left.as_millis().min(60_000) as u64),
        };
        let r: WaitReport = client.get_query(&path, &query).await?;
        if r.synced || left.is_zero() {
            break r;
        }
    };
    print_status(&report.status, json)?;
    if !report.synced {
        let why = if report.online {
            "not in sync"
        } else {
            "the node is offline"
        };
        return Err(Failure::error(
            1,
            format!("{node}: {why} after {timeout} s"),
        ));
    }
    Ok(())
}

async fn verify(client: &ApiClient, node: &str) -> anyhow::Result<()> {
    let path = format!("/api/v1/mirrors/{}/verify", encode(node));
    let r: VerifyReport = client.post(&path, &serde_json::json!({})).await?;
    for m in &r.mismatches {
        out(format!(
            "MISMATCH {}: index {} but found {}",
            m.path, m.expected, m.found
        ));
    }
    if !r.mismatches.is_empty() {
        let msg = format!(
            "{} of {} mirrored paths do not match the index",
            r.mismatches.len(),
            r.checked
        );
        return Err(Failure::error(1, msg));
    }
    out(format!("ok: {} paths match the index", r.checked));
    Ok(())
}

async fn immutable(
    client: &ApiClient,
    node: &str,
    action: ImmutableAction,
    pattern: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/mirrors/{}/immutable", encode(node));
    let patterns: Vec<String> = match (action, pattern) {
        (ImmutableAction::Ls, _) => client.get(&path).await?,
        (ImmutableAction::Add, Some(pattern)) => {
            client.post(&path, &ImmutableChange { pattern }).await?
        }
        (ImmutableAction::Rm, Some(pattern)) => {
            client
                .delete_json(&path, &ImmutableChange { pattern })
                .await?
        }
        (_, None) => return Err(Failure::error(2, "add and rm take a PATTERN")),
    };
    if json {
        return print_json(&patterns);
    }
    for p in patterns {
        out(p);
    }
    Ok(())
}

/// `mirror status` and `mirror wait` output: the contract's JSON, or lines.
fn print_status(s: &MirrorStatus, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(&serde_json::json!({
            "files": s.files, "bytes": s.bytes, "pending": s.pending,
            "in_flight": s.in_flight, "last_sync": s.last_sync, "refused": s.refused,
            "unrecorded": s.unrecorded,
        }))?;
    } else {
        out(format!("files:     {}", s.files));
        out(format!("bytes:     {}", s.bytes));
        out(format!("pending:   {}", s.pending));
        out(format!("in flight: {}", s.in_flight));
        out(format!(
            "last sync: {}",
            s.last_sync.as_deref().unwrap_or("never")
        ));
        if s.unrecorded > 0 {
            out(format!(
                "unrecorded: {} (the node cannot write its index: disk full?)",
                s.unrecorded
            ));
        }
        if s.refused > 0 {
            out(format!(
                "refused:   {} (changes under immutable paths)",
                s.refused
            ));
        }
    }
    Ok(())
}
