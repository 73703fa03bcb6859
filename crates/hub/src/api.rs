//! JSON shapes of the HTTP API (`/api/v1/…`). The CLI prints these as they are,
//! so field names follow CONTRACT.md exactly.

use std::collections::BTreeMap;

use ganglion_core::Capabilities;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInvite {
    pub name: Option<String>,
    /// A duration such as `1h`; default 1h.
    pub ttl: Option<String>,
    pub policy: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InviteCreated {
    pub id: String,
    pub invite: String,
    pub expires_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Invite {
    pub id: String,
    pub name: Option<String>,
    pub policy: Option<String>,
    pub state: String,
    pub created_at: String,
    pub expires_at: String,
    pub used_at: Option<String>,
    pub used_by: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub id: String,
    pub status: String,
    pub policy: String,
    pub last_heartbeat: Option<String>,
    pub capabilities: serde_json::Value,
    /// Full policy detail (allowlist, network, …), beyond CONTRACT.md's fields.
    pub policy_detail: ganglion_core::Policy,
    pub revoked: bool,
    /// The last connection refused because another running process holds
    /// this node's credential (a copied state dir), since the hub started.
    #[serde(default)]
    pub duplicate: Option<NodeDuplicate>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeDuplicate {
    /// Where the refused connection came from.
    pub refused_peer: Option<String>,
    /// Where the connection kept (the node online) comes from.
    pub kept_peer: Option<String>,
    /// When the last one was refused (RFC 3339).
    pub at: String,
    /// How many were refused.
    pub refused: u64,
}

impl Node {
    pub fn capabilities_json(c: Option<&Capabilities>) -> serde_json::Value {
        c.map(|c| serde_json::to_value(c).expect("serialises"))
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPolicy {
    pub mode: String,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub network: bool,
    #[serde(default)]
    pub allow_shell: bool,
    #[serde(default)]
    pub allow_weak_sandbox: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub name: String,
    pub state: String,
    pub restarts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub nodes_online: usize,
    pub workers: Vec<WorkerStatus>,
    pub extra: BTreeMap<String, serde_json::Value>,
}

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
    pub status: String,
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
    pub history: Vec<ganglion_store::HistoryEntry>,
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
        stream: String,
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
