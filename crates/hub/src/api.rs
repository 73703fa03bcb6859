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
}

impl Node {
    pub fn capabilities_json(c: Option<&Capabilities>) -> serde_json::Value {
        c.map(|c| serde_json::to_value(c).expect("serialises")).unwrap_or_else(|| {
            serde_json::Value::Object(serde_json::Map::new())
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
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
