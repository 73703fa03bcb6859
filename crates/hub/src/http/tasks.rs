//! Task endpoints: run (streaming NDJSON events), list, show, cancel.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use ganglion_api as api;
use ganglion_core::RelPath;
use ganglion_store::{TaskRecord, TaskStatus};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::body::JsonBody;
use crate::Error;
use crate::hub::HubCore;
use crate::limits;
use crate::tasks::{TaskEvent, TaskRequest};

type Core = State<Arc<HubCore>>;

/// How long `cancel` waits for the node to confirm.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

pub fn task_json(t: &TaskRecord, with_output: bool) -> api::Task {
    api::Task {
        id: t.id.to_string(),
        node: t.node_name.to_string(),
        argv: t.argv.clone(),
        status: t.status,
        exit_code: t.exit_code,
        error: t.error.clone(),
        created_at: t.created_at.to_rfc3339(),
        finished_at: t.finished_at.map(|f| f.to_rfc3339()),
        started_at: t.started_at.map(|f| f.to_rfc3339()),
        cwd: t.cwd.clone(),
        output_bytes: t.output_bytes,
        output_truncated: t.output_truncated,
        stdout_b64: with_output.then(|| STANDARD.encode(&t.stdout)),
        stderr_b64: with_output.then(|| STANDARD.encode(&t.stderr)),
        history: if with_output {
            t.history.clone()
        } else {
            Vec::new()
        },
    }
}

fn line(event: &api::TaskEventLine) -> Result<Bytes, Infallible> {
    let mut v = serde_json::to_vec(event).expect("serialises");
    v.push(b'\n');
    Ok(Bytes::from(v))
}

/// The event as a line; `skipped` output events missed just before it (a
/// watcher that fell behind) are told with the next output event.
fn event_line(e: TaskEvent, skipped: u64) -> api::TaskEventLine {
    match e {
        TaskEvent::Started { pid } => api::TaskEventLine::Started { pid },
        TaskEvent::Output { seq, stream, data } => api::TaskEventLine::Output {
            seq,
            stream,
            data_b64: STANDARD.encode(data),
            skipped,
        },
        TaskEvent::Finished(t) => api::TaskEventLine::Finished {
            task: Box::new(task_json(&t, false)),
        },
    }
}

/// The events as NDJSON. The body is polled only as fast as the client reads
/// it; the hub holds no more than the task's bounded ring meanwhile.
fn ndjson(first: Option<api::TaskEventLine>, rx: broadcast::Receiver<TaskEvent>) -> Response {
    let head = futures::stream::iter(first.map(|f| line(&f)));
    let events = BroadcastStream::new(rx).scan(0u64, |skipped, e| {
        let out = match e {
            Ok(e) => Some(line(&event_line(e, std::mem::take(skipped)))),
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                tracing::debug!(skipped = n, "a task watcher fell behind; events skipped");
                *skipped += n;
                None
            }
        };
        futures::future::ready(Some(out))
    });
    let body = Body::from_stream(head.chain(events.filter_map(futures::future::ready)));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// Runs a task; the answer streams its events until it finishes.
pub async fn run(
    State(core): Core,
    JsonBody(req): JsonBody<api::RunTask>,
) -> Result<Response, Error> {
    let cwd = match req.cwd.as_deref() {
        None => None,
        Some(c) => RelPath::parse_lenient(c)
            .map_err(|e| Error::InvalidArgument(format!("cwd {c:?}: {e}")))?,
    };
    let timeout = req
        .timeout
        .as_deref()
        .map(|t| limits::TASK_TIMEOUT.parse(t))
        .transpose()?;
    let output_cap = req
        .output_cap
        .map(|c| limits::OUTPUT_CAP.check(c))
        .transpose()?;
    let spec = TaskRequest {
        argv: req.argv,
        cwd,
        env: req.env,
        timeout,
        output_cap,
    };
    let (id, rx) = core.tasks.submit(&req.node, spec).await?;
    Ok(ndjson(
        Some(api::TaskEventLine::Created { id: id.to_string() }),
        rx,
    ))
}

/// Attaches to a live task's events, or answers its final record at once.
pub async fn events(State(core): Core, Path(id): Path<String>) -> Result<Response, Error> {
    let record = core.tasks.get(&id).await?;
    match core.tasks.watch(&record.id) {
        Some(rx) => Ok(ndjson(None, rx)),
        None => {
            let (tx, rx) = broadcast::channel(1);
            let _ = tx.send(TaskEvent::Finished(Box::new(record)));
            Ok(ndjson(None, rx))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    node: Option<String>,
    status: Option<String>,
}

pub async fn list(
    State(core): Core,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<api::Task>>, Error> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "status {s:?} is not one of pending|running|succeeded|failed|cancelled"
            ))
        })?),
    };
    let tasks = core.tasks.list(q.node.as_deref(), status).await?;
    Ok(Json(tasks.iter().map(|t| task_json(t, false)).collect()))
}

pub async fn show(State(core): Core, Path(id): Path<String>) -> Result<Json<api::Task>, Error> {
    Ok(Json(task_json(&core.tasks.get(&id).await?, true)))
}

/// Cancels a task and waits for the node to confirm its process group is gone.
pub async fn cancel(State(core): Core, Path(id): Path<String>) -> Result<Json<api::Task>, Error> {
    let record = core.tasks.get(&id).await?;
    let watcher = core.tasks.watch(&record.id);
    core.tasks.cancel(&id).await?;
    if let Some(mut rx) = watcher {
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(TaskEvent::Finished(t)) => return Some(t),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        if let Ok(Some(t)) = tokio::time::timeout(CANCEL_WAIT, wait).await {
            return Ok(Json(task_json(&t, false)));
        }
    }
    Ok(Json(task_json(&core.tasks.get(&id).await?, false)))
}
