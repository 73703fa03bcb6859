//! Mirror endpoints: list, read, status, wait, verify. Reads go through the
//! confined receiver: no path or symlink reaches outside the mirror root.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ganglion_api::{
    FileKind, ImmutableChange, MirrorFile, MirrorStatus, PathQuery, VerifyMismatch, VerifyReport,
    WaitQuery, WaitReport,
};
use ganglion_core::RelPath;
use ganglion_mirror::EntryKind;
use tokio_util::io::ReaderStream;

use super::body::JsonBody;
use crate::Error;
use crate::hub::HubCore;

type Core = State<Arc<HubCore>>;

async fn node(core: &HubCore, name: &str) -> Result<ganglion_store::NodeRecord, Error> {
    Ok(core.nodes.get(name).await?.record)
}

fn rel(path: Option<&str>) -> Result<Option<RelPath>, Error> {
    match path {
        None => Ok(None),
        Some(p) => RelPath::parse_lenient(p)
            .map_err(|e| Error::InvalidArgument(format!("path {p:?}: {e}"))),
    }
}

fn file_kind(k: EntryKind) -> FileKind {
    match k {
        EntryKind::File => FileKind::File,
        EntryKind::Dir => FileKind::Dir,
        EntryKind::Symlink => FileKind::Symlink,
    }
}

fn mtime(ns: i64) -> String {
    ganglion_core::Timestamp::from_millis(ns.div_euclid(1_000_000)).to_rfc3339()
}

pub async fn list(
    State(core): Core,
    Path(name): Path<String>,
    Query(q): Query<PathQuery>,
) -> Result<Json<Vec<MirrorFile>>, Error> {
    let n = node(&core, &name).await?;
    let prefix = rel(q.path.as_deref())?;
    let entries = core
        .mirrors
        .index()
        .list(n.name.as_str(), prefix.as_ref())
        .await
        .map_err(|e| Error::Unavailable(format!("mirror index: {e}")))?;
    Ok(Json(
        entries
            .into_iter()
            .filter(|e| prefix.as_ref().is_none_or(|p| e.path.starts_with(p)))
            .map(|e| MirrorFile {
                path: e.path.to_string(),
                kind: file_kind(e.kind),
                size: e.size,
                hash: e.hash.map(|h| h.to_string()),
                mtime: mtime(e.mtime_ns),
                target: if e.kind == EntryKind::Symlink {
                    e.symlink_target
                } else {
                    None
                },
            })
            .collect(),
    ))
}

/// Bytes read from disk at a time when a mirror file is served.
const CAT_CHUNK: usize = 256 << 10;

/// A mirror file, streamed from disk: the hub holds one chunk of it at a
/// time, read only as fast as the client takes it.
pub async fn cat(
    State(core): Core,
    Path(name): Path<String>,
    Query(q): Query<PathQuery>,
) -> Result<Response, Error> {
    let n = node(&core, &name).await?;
    let path = rel(q.path.as_deref())?
        .ok_or_else(|| Error::InvalidArgument("a file path is required".into()))?;
    let receiver = core.mirrors.receiver(n.name.as_str(), &n.id).await?;
    let p = path.clone();
    let file = tokio::task::spawn_blocking(move || receiver.open_no_follow(&p))
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?
        .map_err(|e| {
            Error::InvalidArgument(format!("cannot read {path} in the mirror of {name}: {e}"))
        })?
        .into_std();
    let chunks = ReaderStream::with_capacity(tokio::fs::File::from_std(file), CAT_CHUNK);
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

pub async fn status(
    State(core): Core,
    Path(name): Path<String>,
) -> Result<Json<MirrorStatus>, Error> {
    let n = node(&core, &name).await?;
    Ok(Json(core.mirrors.status(n.name.as_str(), &n.id).await?))
}

/// How often a waiting request looks at the mirror (inside the hub: a
/// message to its driver, no process or request per look).
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Waits until the node is online and its mirror is in sync both ways:
/// nothing pending from the node, nothing in flight, no hub-side change the
/// node has not applied (and `files` files, if asked).
pub async fn wait(
    State(core): Core,
    Path(name): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Json<WaitReport>, Error> {
    let n = node(&core, &name).await?;
    // Longer asks are cut to the bound (the client asks again), as before.
    let limit = std::time::Duration::from_millis(q.timeout_ms.unwrap_or(30_000))
        .min(crate::limits::MIRROR_WAIT.max);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let status = core.mirrors.status(n.name.as_str(), &n.id).await?;
        let online = core.registry.is_online(&n.id);
        let synced = online
            && status.pending == 0
            && status.in_flight == 0
            && status.to_node == 0
            && q.files.is_none_or(|f| status.files == f);
        if synced || tokio::time::Instant::now() >= deadline {
            return Ok(Json(WaitReport {
                synced,
                online,
                status,
            }));
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

pub async fn verify(
    State(core): Core,
    Path(name): Path<String>,
) -> Result<Json<VerifyReport>, Error> {
    let n = node(&core, &name).await?;
    let receiver = core.mirrors.receiver(n.name.as_str(), &n.id).await?;
    let checked = core
        .mirrors
        .index()
        .list(n.name.as_str(), None)
        .await
        .map(|e| e.len())
        .unwrap_or(0);
    let mismatches = receiver
        .verify()
        .await
        .map_err(|e| Error::Unavailable(format!("verify: {e}")))?;
    Ok(Json(VerifyReport {
        checked,
        mismatches: mismatches
            .into_iter()
            .map(|m| VerifyMismatch {
                path: m.path.to_string(),
                expected: m.expected,
                found: m.found,
            })
            .collect(),
    }))
}

pub async fn immutable_ls(
    State(core): Core,
    Path(name): Path<String>,
) -> Result<Json<Vec<String>>, Error> {
    let n = node(&core, &name).await?;
    Ok(Json(
        core.mirrors
            .immutable_patterns(n.name.as_str(), &n.id)
            .await?,
    ))
}

async fn immutable_change(
    core: &HubCore,
    name: &str,
    pattern: &str,
    add: bool,
) -> Result<Json<Vec<String>>, Error> {
    let bad = pattern.trim().is_empty()
        || pattern.contains('\0')
        || pattern.len() > 1024
        || pattern.contains('\n');
    if bad {
        return Err(Error::InvalidArgument(format!(
            "invalid pattern {pattern:?}"
        )));
    }
    let n = node(core, name).await?;
    Ok(Json(
        core.mirrors
            .change_immutable(n.name.as_str(), &n.id, pattern, add)
            .await?,
    ))
}

pub async fn immutable_add(
    State(core): Core,
    Path(name): Path<String>,
    JsonBody(c): JsonBody<ImmutableChange>,
) -> Result<Json<Vec<String>>, Error> {
    immutable_change(&core, &name, &c.pattern, true).await
}

pub async fn immutable_rm(
    State(core): Core,
    Path(name): Path<String>,
    JsonBody(c): JsonBody<ImmutableChange>,
) -> Result<Json<Vec<String>>, Error> {
    immutable_change(&core, &name, &c.pattern, false).await
}
