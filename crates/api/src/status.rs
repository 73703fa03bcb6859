//! The hub's state: `GET /api/v1/status` and `GET /api/v1/workers`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a supervised background worker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Started; the worker does not say whether it is working.
    Running,
    /// Waiting for work (a periodic worker between passes, a driver with
    /// nothing in progress).
    Idle,
    /// Doing work.
    Busy,
    /// It failed (returned or panicked) and waits to be started again
    /// (`last_error` says why).
    Restarting,
    /// It failed and is not restarted (`last_error` says why): what it does
    /// is unavailable until the hub restarts, or until next use for a
    /// worker opened on use (a mirror driver).
    Failed,
    /// The hub is shutting down and the worker ended.
    Stopped,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Restarting => "restarting",
            WorkerState::Failed => "failed",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// One background worker of the hub: a fixed one (`monitor`, `journal`, …)
/// or one per node with a mirror (`mirror:NODE`, listed while it is open).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    /// Times it failed and was started again.
    pub restarts: u32,
    /// Its last failure (kept after a restart), `null` if none.
    pub last_error: Option<String>,
}

/// `GET /api/v1/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub nodes_online: usize,
    pub workers: Vec<WorkerStatus>,
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pin;

    #[test]
    fn the_status_lists_workers_with_their_state_as_a_word() {
        let failed = |s| matches!(s, WorkerState::Restarting | WorkerState::Failed);
        let workers = [
            (WorkerState::Running, "running"),
            (WorkerState::Idle, "idle"),
            (WorkerState::Busy, "busy"),
            (WorkerState::Restarting, "restarting"),
            (WorkerState::Failed, "failed"),
            (WorkerState::Stopped, "stopped"),
        ]
        .map(|(state, word)| {
            assert_eq!(state.as_str(), word);
            WorkerStatus {
                name: "monitor".into(),
                state,
                restarts: u32::from(state == WorkerState::Restarting),
                last_error: failed(state).then(|| "panicked".into()),
            }
        });
        pin(
            &Status {
                version: "0.1.0".into(),
                nodes_online: 3,
                workers: workers.to_vec(),
                extra: BTreeMap::new(),
            },
            concat!(
                r#"{"version":"0.1.0","nodes_online":3,"workers":["#,
                r#"{"name":"monitor","state":"running","restarts":0,"last_error":null},"#,
                r#"{"name":"monitor","state":"idle","restarts":0,"last_error":null},"#,
                r#"{"name":"monitor","state":"busy","restarts":0,"last_error":null},"#,
                r#"{"name":"monitor","state":"restarting","restarts":1,"last_error":"panicked"},"#,
                r#"{"name":"monitor","state":"failed","restarts":0,"last_error":"panicked"},"#,
                r#"{"name":"monitor","state":"stopped","restarts":0,"last_error":null}"#,
                r#"],"extra":{}}"#
            ),
        );
    }
}
