//! Redeeming an invite: connect with the pinned certificate, ask to join,
//! store the credential.

use ganglion_core::{Capabilities, InviteCode, NodeName};

use crate::Error;
pub use crate::link::join::{Joined, redeem};
use crate::state::{JoinedNode, StateDir};

/// Redeems `invite` and saves the node's state into `state_dir`.
/// Nothing is written to the state dir unless the hub accepted the join, and
/// the invite is not redeemed unless the state dir and workspace are usable.
pub async fn join(
    invite: &str,
    name: Option<NodeName>,
    workspace: std::path::PathBuf,
    state_dir: &StateDir,
    capabilities: Capabilities,
) -> Result<JoinedNode, Error> {
    let code = InviteCode::parse(invite)?;
    // The invite is single use: whatever would stop the node from running
    // afterwards must refuse the join before it is redeemed.
    state_dir.check_before_join(&workspace)?;
    let joined = redeem(&code, name, capabilities, host_name()).await?;
    let state = JoinedNode {
        hub_addr: code.hub_addr,
        cert_sha256: code.cert_sha256,
        node_id: joined.node_id,
        name: joined.name,
        workspace,
    };
    state_dir.create()?;
    state_dir.save(&state, &joined.credential)?;
    tracing::info!(node = %state.name, node_id = %state.node_id, "joined the hub");
    Ok(state)
}

/// The host name made into a valid node name (lowercase, other characters as
/// `-`), or `None` if nothing usable is left.
pub fn host_name() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let cleaned: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches(['.', '_', '-']);
    NodeName::parse(&trimmed[..trimmed.len().min(63)])
        .ok()
        .map(|n| n.to_string())
}
