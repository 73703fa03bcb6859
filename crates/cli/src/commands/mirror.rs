//! `ganglion mirror ls|cat|status|wait|verify`

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use ganglion_hub::http::mirrors::{MirrorFile, VerifyReport, WaitReport};
use ganglion_hub::mirror::MirrorStatus;
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
    kind: &'a str,
}

pub async fn run(cmd: MirrorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MirrorCommand::Ls {
            node,
            path,
            json,
            hub,
        } => {
            let q: Vec<(&str, &str)> = path.as_deref().map(|p| ("path", p)).into_iter().collect();
            let files: Vec<MirrorFile> = ApiClient::locate(&hub)?
                .get_query(&format!("/api/v1/mirrors/{}/files", encode(&node)), &q)
                .await?;
            if json {
                let v: Vec<FileOut<'_>> = files
                    .iter()
                    .map(|f| FileOut {
                        path: &f.path,
                        size: f.size,
                        hash: f.hash.as_deref(),
                        mtime: &f.mtime,
                        kind: &f.kind,
                    })
                    .collect();
                print_json(&v)?;
            } else {
                for f in &files {
                    let extra = f
                        .target
                        .as_deref()
                        .map(|t| format!(" -> {t}"))
                        .unwrap_or_default();
                    out(format!(
                        "{:<7} {:>12} {} {}{extra}",
                        f.kind, f.size, f.mtime, f.path
                    ));
                }
            }
        }
        MirrorCommand::Cat { node, path, hub } => {
            // Streamed: a large file never sits whole in memory here either.
            let mut resp = ApiClient::locate(&hub)?
                .get_stream(
                    &format!("/api/v1/mirrors/{}/file", encode(&node)),
                    &[("path", &path)],
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
        } => {
            let client = ApiClient::locate(&hub)?;
            let path = format!("/api/v1/mirrors/{}/wait", encode(&node));
            let files = files.map(|f| f.to_string());
            let total = ganglion_hub::limits::MIRROR_WAIT_TOTAL.check_secs(timeout)?;
            let deadline = std::time::Instant::now() + total;
            // The hub holds a request up to a minute: ask again until done.
            let report = loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let left_ms = left.as_millis().min(60_000).to_string();
                let mut query = vec![("timeout_ms", left_ms.as_str())];
                if let Some(f) = &files {
                    query.push(("files", f.as_str()));
                }
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
        }
        MirrorCommand::Verify { node, hub } => {
            let path = format!("/api/v1/mirrors/{}/verify", encode(&node));
            let r: VerifyReport = ApiClient::locate(&hub)?
                .post(&path, &serde_json::json!({}))
                .await?;
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
        }
        MirrorCommand::Put(_) => return not_yet("mirror put"),
        MirrorCommand::Immutable {
            node,
            action,
            pattern,
            json,
            hub,
        } => {
            let path = format!("/api/v1/mirrors/{}/immutable", encode(&node));
            let client = ApiClient::locate(&hub)?;
            let patterns: Vec<String> = match (action, pattern) {
                (ImmutableAction::Ls, _) => client.get(&path).await?,
                (ImmutableAction::Add, Some(p)) => {
                    client
                        .post(&path, &serde_json::json!({ "pattern": p }))
                        .await?
                }
                (ImmutableAction::Rm, Some(p)) => {
                    client
                        .delete_json(&path, &serde_json::json!({ "pattern": p }))
                        .await?
                }
                (_, None) => return Err(Failure::error(2, "add and rm take a PATTERN")),
            };
            if json {
                print_json(&patterns)?;
            } else {
                for p in patterns {
                    out(p);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
