//! Hub-side writes into a node's mirror: `PUT|DELETE /api/v1/mirrors/{node}/file?path=`
//! (`if_hash` makes them conditional), `POST …/move`, `GET …/conflicts`,
//! `POST …/resolve`. Thin: parse, call [`crate::mirror::Mirrors`], shape.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use ganglion_api::{ConflictInfo, KeepSide, MoveRequest, ResolveRequest, WriteQuery, WriteResult};
use ganglion_core::RelPath;
use ganglion_mirror::ContentHash;
use ganglion_mirror::engine::HubWrite;

use super::body::{JsonBody, QueryParams};
use crate::Error;
use crate::hub::HubCore;
use crate::mirror::driver::{Keep, WriteDone};
use crate::mirror::writes::Put;

type Core = State<Arc<HubCore>>;

async fn node(core: &HubCore, name: &str) -> Result<ganglion_store::NodeRecord, Error> {
    Ok(core.nodes.get(name).await?.record)
}

/// A path a write names: relative, normalised, inside the mirror.
fn path(p: &str) -> Result<RelPath, Error> {
    RelPath::parse(p).map_err(|e| Error::InvalidArgument(format!("path {p:?}: {e}")))
}

fn if_hash(h: Option<&str>) -> Result<Option<ContentHash>, Error> {
    h.map(|h| {
        h.parse()
            .map_err(|e| Error::InvalidArgument(format!("if_hash {h:?}: {e}")))
    })
    .transpose()
}

fn result(d: WriteDone) -> Json<WriteResult> {
    Json(WriteResult {
        path: d.path.to_string(),
        hash: d.hash.map(|h| h.to_string()),
        version: d.version,
    })
}

pub async fn put(
    State(core): Core,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<WriteQuery>,
    body: Bytes,
) -> Result<Json<WriteResult>, Error> {
    let n = node(&core, &name).await?;
    let p = path(&q.path)?;
    let cond = if_hash(q.if_hash.as_deref())?;
    let exec = q.executable.unwrap_or(false);
    let put = Put {
        path: p,
        data: body,
        executable: exec,
        if_hash: cond,
    };
    let done = core.mirrors.put(n.name.as_str(), &n.id, put).await?;
    Ok(result(done))
}

pub async fn rm(
    State(core): Core,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<WriteQuery>,
) -> Result<Json<WriteResult>, Error> {
    let n = node(&core, &name).await?;
    let write = HubWrite::Delete {
        path: path(&q.path)?,
    };
    let cond = if_hash(q.if_hash.as_deref())?;
    let done = core
        .mirrors
        .write(n.name.as_str(), &n.id, write, cond)
        .await?;
    Ok(result(done))
}

pub async fn mv(
    State(core): Core,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<MoveRequest>,
) -> Result<Json<WriteResult>, Error> {
    let n = node(&core, &name).await?;
    let write = HubWrite::Move {
        from: path(&req.from)?,
        to: path(&req.to)?,
    };
    let cond = if_hash(req.if_hash.as_deref())?;
    let done = core
        .mirrors
        .write(n.name.as_str(), &n.id, write, cond)
        .await?;
    Ok(result(done))
}

fn info(c: ganglion_mirror::Conflict) -> ConflictInfo {
    ConflictInfo {
        path: c.path.to_string(),
        conflict_path: c.conflict_path.to_string(),
        origin: c.origin,
        detected_at: c.detected_at.to_rfc3339(),
    }
}

pub async fn conflicts(
    State(core): Core,
    Path(name): Path<String>,
) -> Result<Json<Vec<ConflictInfo>>, Error> {
    let n = node(&core, &name).await?;
    let list = core.mirrors.conflicts(n.name.as_str(), &n.id).await?;
    Ok(Json(list.into_iter().map(info).collect()))
}

pub async fn resolve(
    State(core): Core,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<ResolveRequest>,
) -> Result<Json<ConflictInfo>, Error> {
    let n = node(&core, &name).await?;
    let keep = match req.keep {
        KeepSide::Current => Keep::Current,
        KeepSide::Conflict => Keep::Conflict,
    };
    let c = core
        .mirrors
        .resolve(n.name.as_str(), &n.id, path(&req.path)?, keep)
        .await?;
    Ok(Json(info(c)))
}
