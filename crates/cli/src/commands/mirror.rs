//! `ganglion mirror ls|cat|status|wait|verify|immutable|put|rm|mv|conflicts|resolve`

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use ganglion_api::{
    ConflictInfo, FileKind, ImmutableChange, KeepSide, MirrorFile, MirrorStatus, MoveRequest,
    PathQuery, ResolveRequest, VerifyReport, WaitQuery, WaitReport, WriteQuery, WriteResult,
};
use serde::Serialize;

use super::invite::encode;
use super::{Failure, out, print_json};
use crate::cli::{ImmutableAction, KeepArg, MirrorCommand, WriteArgs};
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
        MirrorCommand::Put {
            node,
            path,
            file,
            executable,
            write,
        } => put(&node, &path, file, executable, write).await?,
        MirrorCommand::Rm { node, path, write } => {
            let client = ApiClient::locate(&write.hub)?;
            let q = WriteQuery {
                path,
                if_hash: write.if_hash,
                executable: None,
            };
            let r: WriteResult = client
                .delete_query(&format!("/api/v1/mirrors/{}/file", encode(&node)), &q)
                .await?;
            print_write(&r, write.json)?;
        }
        MirrorCommand::Mv {
            node,
            from,
            to,
            write,
        } => {
            let client = ApiClient::locate(&write.hub)?;
            let req = MoveRequest {
                from,
                to,
                if_hash: write.if_hash,
            };
            let r: WriteResult = client
                .post(&format!("/api/v1/mirrors/{}/move", encode(&node)), &req)
                .await?;
            print_write(&r, write.json)?;
        }
        MirrorCommand::Conflicts { node, json, hub } => {
            let list: Vec<ConflictInfo> = ApiClient::locate(&hub)?
                .get(&format!("/api/v1/mirrors/{}/conflicts", encode(&node)))
                .await?;
            if json {
                print_json(&list)?;
            } else if list.is_empty() {
                out("no conflicts".to_owned());
            } else {
                for c in &list {
                    out(format!(
                        "{}  {} ({} version, {})",
                        c.path, c.conflict_path, c.origin, c.detected_at
                    ));
                }
            }
        }
        MirrorCommand::Resolve {
            node,
            path,
            keep,
            json,
            hub,
        } => {
            let keep = match keep {
                KeepArg::Current => KeepSide::Current,
                KeepArg::Conflict => KeepSide::Conflict,
            };
            let c: ConflictInfo = ApiClient::locate(&hub)?
                .post(
                    &format!("/api/v1/mirrors/{}/resolve", encode(&node)),
                    &ResolveRequest { path, keep },
                )
                .await?;
            if json {
                print_json(&c)?;
            } else {
                out(format!("resolved {} ({})", c.path, c.conflict_path));
            }
        }
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

/// `mirror put`: stdin or a local file, sent whole (bounded by the hub).
async fn put(
    node: &str,
    path: &str,
    file: Option<std::path::PathBuf>,
    executable: bool,
    write: WriteArgs,
) -> anyhow::Result<()> {
    let client = ApiClient::locate(&write.hub)?;
    let data = match &file {
        Some(f) => std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
        None => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading stdin")?;
            buf
        }
    };
    let q = WriteQuery {
        path: path.to_owned(),
        if_hash: write.if_hash,
        executable: executable.then_some(true),
    };
    let r: WriteResult = client
        .put_bytes(&format!("/api/v1/mirrors/{}/file", encode(node)), &q, data)
        .await?;
    print_write(&r, write.json)
}

/// `{"path", "hash", "version"}` with `--json`, a line otherwise.
fn print_write(r: &WriteResult, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(r);
    }
    match &r.hash {
        Some(h) => out(format!("{} {h} (version {})", r.path, r.version)),
        None => out(format!("{} deleted (version {})", r.path, r.version)),
    }
    Ok(())
}

/// `mirror status` and `mirror wait` output: the contract's JSON, or lines.
fn print_status(s: &MirrorStatus, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(&serde_json::json!({
            "files": s.files, "bytes": s.bytes, "pending": s.pending,
            "in_flight": s.in_flight, "last_sync": s.last_sync, "refused": s.refused,
            "unrecorded": s.unrecorded, "to_node": s.to_node, "conflicts": s.conflicts,
            "halted": s.halted,
        }))?;
    } else {
        out(format!("files:     {}", s.files));
        out(format!("bytes:     {}", s.bytes));
        out(format!("pending:   {}", s.pending));
        out(format!("in flight: {}", s.in_flight));
        out(format!("to node:   {}", s.to_node));
        out(format!("conflicts: {}", s.conflicts));
        if let Some(reason) = &s.halted {
            out(format!("halted:    {reason}"));
        }
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
