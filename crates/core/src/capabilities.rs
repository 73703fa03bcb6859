//! What a node's machine can do, reported at the handshake.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub os: String,
    pub arch: String,
    pub kernel: String,
    /// Landlock ABI version the kernel supports, `None` when unavailable.
    pub landlock_abi: Option<u32>,
    pub cores: u32,
    pub memory_bytes: u64,
    pub version: String,
    /// Which sandbox protections this node can enforce (see [`Protection`]).
    #[serde(default)]
    pub protections: Vec<String>,
}

/// Names of the protections a node may report in [`Capabilities::protections`].
pub mod protection {
    /// Landlock confines filesystem writes to the workspace and a task temp dir.
    pub const FS_WRITE: &str = "landlock-fs";
    /// Landlock forbids TCP bind/connect (ABI ≥ 4).
    pub const NET_TCP: &str = "landlock-net";
    /// Resource limits (setrlimit).
    pub const RLIMITS: &str = "rlimits";
    /// Whole process group killed on cancel and timeout.
    pub const PROCESS_GROUP: &str = "process-group";
}

impl Capabilities {
    pub fn enforces(&self, protection: &str) -> bool {
        self.protections.iter().any(|p| p == protection)
    }
}
