//! The task subsystem's messages: dispatches and cancels (hub → node), a
//! node's reports (node → hub).

use std::time::Duration;

use ganglion_core::{
    Dispatch, NodeEnd, NodeReport, OutputStream, RelPath, TaskId, TaskToHub, TaskToNode,
};

use super::Invalid;
use crate::v1;
use crate::v1::hub_message::Kind as ToNodeKind;
use crate::v1::node_message::Kind as ToHubKind;

impl From<&Dispatch> for v1::TaskDispatch {
    fn from(d: &Dispatch) -> Self {
        v1::TaskDispatch {
            task_id: d.id.to_string(),
            argv: d.argv.clone(),
            cwd: d.cwd.as_ref().map(|c| c.to_string()).unwrap_or_default(),
            env: d
                .env
                .iter()
                .map(|(name, value)| v1::EnvVar {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            timeout_ms: d.timeout.map_or(0, |t| t.as_millis() as u64),
            output_cap: d.output_cap,
        }
    }
}

/// A dispatch from the wire; when invalid, its raw id and why (the node
/// refuses it by that id).
pub fn dispatch(d: v1::TaskDispatch) -> Result<Dispatch, (String, String)> {
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

impl From<TaskToNode> for ToNodeKind {
    fn from(m: TaskToNode) -> Self {
        match m {
            TaskToNode::Dispatch(d) => ToNodeKind::TaskDispatch((&*d).into()),
            TaskToNode::Cancel(id) => ToNodeKind::TaskCancel(v1::TaskCancel {
                task_id: id.to_string(),
            }),
        }
    }
}

impl From<TaskToHub> for ToHubKind {
    fn from(m: TaskToHub) -> Self {
        match m {
            TaskToHub::Started { id, pid } => ToHubKind::TaskStarted(v1::TaskStarted {
                task_id: id.to_string(),
                pid,
            }),
            TaskToHub::Output {
                id,
                seq,
                stream,
                data,
            } => {
                let stream = match stream {
                    OutputStream::Stdout => v1::OutputStream::Stdout,
                    OutputStream::Stderr => v1::OutputStream::Stderr,
                };
                ToHubKind::TaskOutput(v1::TaskOutput {
                    task_id: id.to_string(),
                    seq,
                    stream: stream as i32,
                    data,
                })
            }
            TaskToHub::Finished { id, report } => ToHubKind::TaskFinished(finished(id, report)),
        }
    }
}

fn finished(id: TaskId, r: NodeReport) -> v1::TaskFinished {
    let (end, code, error) = match r.end {
        NodeEnd::Exited(c) => (v1::TaskEnd::Exited, c, String::new()),
        NodeEnd::Signaled(s) => (v1::TaskEnd::Signaled, s, String::new()),
        NodeEnd::TimedOut => (v1::TaskEnd::TimedOut, 124, String::new()),
        NodeEnd::Cancelled => (v1::TaskEnd::Cancelled, 0, String::new()),
        NodeEnd::Refused { exit_code, error } => (v1::TaskEnd::Refused, exit_code, error),
    };
    v1::TaskFinished {
        task_id: id.to_string(),
        end: end as i32,
        code,
        error,
        output_bytes: r.output_bytes,
        output_truncated: r.output_truncated,
        late: r.late,
    }
}

fn task_id(s: &str) -> Result<TaskId, Invalid> {
    TaskId::from_string(s).ok_or_else(|| Invalid::new("task id", format!("{s:?}")))
}

pub(super) fn started(m: v1::TaskStarted) -> Result<TaskToHub, Invalid> {
    Ok(TaskToHub::Started {
        id: task_id(&m.task_id)?,
        pid: m.pid,
    })
}

pub(super) fn output(m: v1::TaskOutput) -> Result<TaskToHub, Invalid> {
    let stream = match v1::OutputStream::try_from(m.stream) {
        Ok(v1::OutputStream::Stderr) => OutputStream::Stderr,
        _ => OutputStream::Stdout,
    };
    Ok(TaskToHub::Output {
        id: task_id(&m.task_id)?,
        seq: m.seq,
        stream,
        data: m.data,
    })
}

pub(super) fn from_finished(m: v1::TaskFinished) -> Result<TaskToHub, Invalid> {
    let end = match v1::TaskEnd::try_from(m.end) {
        Ok(v1::TaskEnd::Exited) => NodeEnd::Exited(m.code),
        Ok(v1::TaskEnd::Signaled) => NodeEnd::Signaled(m.code),
        Ok(v1::TaskEnd::TimedOut) => NodeEnd::TimedOut,
        Ok(v1::TaskEnd::Cancelled) => NodeEnd::Cancelled,
        Ok(v1::TaskEnd::Refused) => NodeEnd::Refused {
            exit_code: m.code,
            error: m.error,
        },
        _ => return Err(Invalid::new("task end", m.end)),
    };
    let report = NodeReport {
        end,
        output_bytes: m.output_bytes,
        output_truncated: m.output_truncated,
        late: m.late,
    };
    Ok(TaskToHub::Finished {
        id: task_id(&m.task_id)?,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dispatch_round_trips_and_a_bad_cwd_is_refused_by_id() {
        let d = Dispatch {
            id: TaskId::generate(),
            argv: vec!["ls".into(), "-l".into()],
            cwd: Some(RelPath::parse("src").unwrap()),
            env: vec![("A".into(), "1".into())],
            timeout: Some(Duration::from_secs(5)),
            output_cap: 10,
        };
        assert_eq!(dispatch(v1::TaskDispatch::from(&d)).unwrap(), d);
        let bad = v1::TaskDispatch {
            cwd: "../x".into(),
            ..v1::TaskDispatch::from(&d)
        };
        let (id, error) = dispatch(bad).unwrap_err();
        assert_eq!(id, d.id.to_string());
        assert!(error.starts_with("cwd \"../x\""), "{error}");
    }

    #[test]
    fn a_report_round_trips() {
        let id = TaskId::generate();
        let report = NodeReport {
            end: NodeEnd::Refused {
                exit_code: 126,
                error: "no".into(),
            },
            output_bytes: 3,
            output_truncated: true,
            late: true,
        };
        let m = TaskToHub::Finished {
            id: id.clone(),
            report,
        };
        let ToHubKind::TaskFinished(wire) = ToHubKind::from(m.clone()) else {
            panic!("a finish");
        };
        assert_eq!(from_finished(wire).unwrap(), m);
    }
}
