//! Tasks: `POST /api/v1/tasks` runs one and streams its events (NDJSON),
//! `GET /api/v1/tasks[/{id}]` lists and shows them, `…/{id}/events` attaches
//! to one, `…/{id}/cancel` cancels one. And the exit code `ganglion run`
//! ends with, decided here once.

use ganglion_core::task::{HistoryEntry, OutputStream, TaskStatus};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/tasks`: run a program on a node.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunTask {
    pub node: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// A duration such as `30s`; default 1h.
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub output_cap: Option<u64>,
}

/// A task as CONTRACT.md lists it, plus detail for `tasks show`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub node: String,
    pub argv: Vec<String>,
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub started_at: Option<String>,
    pub cwd: Option<String>,
    pub output_bytes: u64,
    pub output_truncated: bool,
    /// Stored output (capped), base64; only in `tasks show`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// One line of a task's event stream (NDJSON).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum TaskEventLine {
    Created {
        id: String,
    },
    Started {
        pid: u32,
    },
    Output {
        seq: u64,
        stream: OutputStream,
        data_b64: String,
        /// Output events this watcher missed just before this one, because
        /// it read slower than the task wrote (the journal keeps the capped
        /// output; `tasks show` prints it). Absent when none were.
        #[serde(default, skip_serializing_if = "is_zero")]
        skipped: u64,
    },
    Finished {
        task: Box<Task>,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The exit code `ganglion run` ends with once its task ended: 0 when it
/// succeeded, 130 (as for SIGINT) when it was cancelled, the program's own
/// code when it exited non-zero (out of range codes are clamped to 1..=255),
/// and 1 for any other end (refused by the sandbox, timed out, node lost).
pub fn run_exit_code(status: TaskStatus, exit_code: Option<i32>) -> u8 {
    match (status, exit_code) {
        (TaskStatus::Succeeded, _) => 0,
        (TaskStatus::Cancelled, _) => 130,
        (_, Some(c)) => c.clamp(1, 255) as u8,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use ganglion_core::Timestamp;

    use super::*;
    use crate::pin;

    fn task(status: TaskStatus) -> Task {
        Task {
            id: "task_1".into(),
            node: "n1".into(),
            argv: vec!["ls".into(), "-l".into()],
            status,
            exit_code: None,
            error: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            finished_at: None,
            started_at: None,
            cwd: None,
            output_bytes: 0,
            output_truncated: false,
            stdout_b64: None,
            stderr_b64: None,
            history: Vec::new(),
        }
    }

    #[test]
    fn run_task_refuses_unknown_fields() {
        pin(
            &RunTask {
                node: "n1".into(),
                argv: vec!["env".into()],
                cwd: Some("src".into()),
                env: vec![("A".into(), "1".into())],
                timeout: Some("30s".into()),
                output_cap: Some(1024),
            },
            r#"{"node":"n1","argv":["env"],"cwd":"src","env":[["A","1"]],"timeout":"30s","output_cap":1024}"#,
        );
        let r: RunTask = serde_json::from_str(r#"{"node":"n1","argv":["ls"]}"#).unwrap();
        assert!(r.env.is_empty() && r.timeout.is_none());
        assert!(
            serde_json::from_str::<RunTask>(r#"{"node":"n1","argv":[],"tmeout":"1s"}"#).is_err()
        );
    }

    #[test]
    fn a_task_as_contract_md_lists_it_with_its_status_as_a_word() {
        for (status, word) in [
            (TaskStatus::Pending, "pending"),
            (TaskStatus::Running, "running"),
            (TaskStatus::Succeeded, "succeeded"),
            (TaskStatus::Failed, "failed"),
            (TaskStatus::Cancelled, "cancelled"),
        ] {
            assert_eq!(status.as_str(), word);
            pin(
                &task(status),
                &format!(
                    r#"{{"id":"task_1","node":"n1","argv":["ls","-l"],"status":"{word}","exit_code":null,"error":null,"created_at":"2026-01-01T00:00:00Z","finished_at":null,"started_at":null,"cwd":null,"output_bytes":0,"output_truncated":false}}"#
                ),
            );
        }
        let mut shown = task(TaskStatus::Failed);
        shown.exit_code = Some(2);
        shown.error = Some("timed out".into());
        shown.finished_at = Some("2026-01-01T00:00:01Z".into());
        shown.stdout_b64 = Some("aGk=".into());
        shown.stderr_b64 = Some(String::new());
        shown.history = vec![
            HistoryEntry {
                at: Timestamp(1_000),
                status: TaskStatus::Pending,
                note: None,
            },
            HistoryEntry {
                at: Timestamp(2_000),
                status: TaskStatus::Failed,
                note: Some("timed out".into()),
            },
        ];
        pin(
            &shown,
            concat!(
                r#"{"id":"task_1","node":"n1","argv":["ls","-l"],"status":"failed","exit_code":2,"#,
                r#""error":"timed out","created_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:01Z","#,
                r#""started_at":null,"cwd":null,"output_bytes":0,"output_truncated":false,"#,
                r#""stdout_b64":"aGk=","stderr_b64":"","#,
                r#""history":[{"at":1000,"status":"pending"},{"at":2000,"status":"failed","note":"timed out"}]}"#
            ),
        );
    }

    #[test]
    fn event_lines_are_tagged_by_event() {
        pin(
            &TaskEventLine::Created {
                id: "task_1".into(),
            },
            r#"{"event":"created","id":"task_1"}"#,
        );
        pin(
            &TaskEventLine::Started { pid: 42 },
            r#"{"event":"started","pid":42}"#,
        );
        pin(
            &TaskEventLine::Output {
                seq: 3,
                stream: OutputStream::Stderr,
                data_b64: "aGk=".into(),
                skipped: 0,
            },
            r#"{"event":"output","seq":3,"stream":"stderr","data_b64":"aGk="}"#,
        );
        pin(
            &TaskEventLine::Output {
                seq: 4,
                stream: OutputStream::Stdout,
                data_b64: String::new(),
                skipped: 7,
            },
            r#"{"event":"output","seq":4,"stream":"stdout","data_b64":"","skipped":7}"#,
        );
        let finished = serde_json::to_string(&TaskEventLine::Finished {
            task: Box::new(task(TaskStatus::Succeeded)),
        })
        .unwrap();
        assert!(
            finished.starts_with(r#"{"event":"finished","task":{"id":"task_1","#),
            "{finished}"
        );
    }

    #[test]
    fn run_exits_with_the_remote_code_or_says_why_not() {
        use TaskStatus::*;
        assert_eq!(run_exit_code(Succeeded, Some(0)), 0);
        assert_eq!(run_exit_code(Failed, Some(3)), 3);
        assert_eq!(run_exit_code(Failed, Some(300)), 255);
        assert_eq!(run_exit_code(Failed, Some(-9)), 1);
        assert_eq!(
            run_exit_code(Failed, None),
            1,
            "refused, timed out, node lost"
        );
        assert_eq!(run_exit_code(Cancelled, Some(0)), 130);
        assert_eq!(run_exit_code(Cancelled, None), 130);
    }
}
