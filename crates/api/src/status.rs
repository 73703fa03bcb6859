//! The hub's state: `GET /api/v1/status` and `GET /api/v1/workers`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a supervised background worker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Running,
    /// It failed (returned or panicked) and waits to be started again.
    Restarting,
    /// The hub is shutting down and the worker ended.
    Stopped,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Restarting => "restarting",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// One background worker of the hub.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    pub restarts: u32,
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
        let workers = [
            (WorkerState::Running, "running"),
            (WorkerState::Restarting, "restarting"),
            (WorkerState::Stopped, "stopped"),
        ]
        .map(|(state, word)| {
            assert_eq!(state.as_str(), word);
            WorkerStatus {
                name: "monitor".into(),
                state,
                restarts: u32::from(state == WorkerState::Restarting),
                last_error: (state == WorkerState::Restarting).then(|| "panicked".into()),
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
                r#"{"name":"monitor","state":"restarting","restarts":1,"last_error":"panicked"},"#,
                r#"{"name":"monitor","state":"stopped","restarts":0,"last_error":null}"#,
                r#"],"extra":{}}"#
            ),
        );
    }
}
