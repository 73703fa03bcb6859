//! The task messages of the control stream: a dispatch from the wire, and a
//! runner event to the wire.

use std::time::Duration;

use ganglion_core::{Dispatch, RelPath, TaskId};
use ganglion_proto::v1;
use ganglion_proto::v1::node_message::Kind as Out;

use crate::tasks::{End, RunnerEvent};

pub(crate) fn dispatch_from_wire(d: v1::TaskDispatch) -> Result<Dispatch, (String, String)> {
    let Some(id) = TaskId::from_string(d.task_id.as_str()) else {
        return Err((d.task_id, "invalid task id".to_owned()));
    };
    let cwd = match d.cwd.as_str() {
        "" => None,
        c => Some(RelPath::parse(c).map_err(|e| (d.task_id.clone(), format!("cwd {c:?}: {e}")))?),
    };
    Ok(Dispatch {
        id,
        argv: d.argv,
        cwd,
        env: d.env.into_iter().map(|e| (e.name, e.value)).collect(),
        timeout: (d.timeout_ms > 0).then(|| Duration::from_millis(d.timeout_ms)),
        output_cap: d.output_cap,
    })
}

/// The wire message for a runner event in the current connection, or `None` for
/// live events (start, output) of an earlier connection: the hub has already
/// failed those tasks and only their result is still worth sending.
pub(crate) fn event_message(event: RunnerEvent, current: u64) -> Option<v1::NodeMessage> {
    let kind = match event {
        RunnerEvent::Started {
            id,
            pid,
            connection,
        } if connection == current => Out::TaskStarted(v1::TaskStarted { task_id: id, pid }),
        RunnerEvent::Output {
            id,
            seq,
            stderr,
            data,
            connection,
        } if connection == current => {
            let stream = if stderr {
                v1::OutputStream::Stderr
            } else {
                v1::OutputStream::Stdout
            };
            Out::TaskOutput(v1::TaskOutput {
                task_id: id,
                seq,
                stream: stream as i32,
                data,
            })
        }
        RunnerEvent::Started { .. } | RunnerEvent::Output { .. } => return None,
        RunnerEvent::Finished {
            id,
            end,
            output_bytes,
            output_truncated,
            connection,
        } => {
            let (end, code, error) = match end {
                End::Exited(c) => (v1::TaskEnd::Exited, c, String::new()),
                End::Signaled(s) => (v1::TaskEnd::Signaled, s, String::new()),
                End::TimedOut => (v1::TaskEnd::TimedOut, 124, String::new()),
                End::Cancelled => (v1::TaskEnd::Cancelled, 0, String::new()),
                End::Refused { exit_code, error } => (v1::TaskEnd::Refused, exit_code, error),
            };
            Out::TaskFinished(v1::TaskFinished {
                task_id: id,
                end: end as i32,
                code,
                error,
                output_bytes,
                output_truncated,
                late: connection != current,
            })
        }
    };
    Some(v1::NodeMessage { kind: Some(kind) })
}
