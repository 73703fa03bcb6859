//! Redeeming an invite: connect with the pinned certificate, ask to join,
//! store the credential.

use ganglion_core::{Capabilities, InviteCode, NodeName, Secret};
use ganglion_proto::v1;
use ganglion_proto::v1::hub_client::HubClient;

use crate::Error;
use crate::state::{JoinedNode, StateDir};
use crate::tls::{HubTarget, connect};

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

/// What the hub answers to a successful join.
pub struct Joined {
    pub node_id: String,
    pub name: String,
    pub credential: Secret,
}

/// Connects to the hub of `code` (pinned TLS) and redeems it. Writes nothing.
pub async fn redeem(
    code: &InviteCode,
    name: Option<NodeName>,
    capabilities: Capabilities,
    default_name: Option<String>,
) -> Result<Joined, Error> {
    let target = HubTarget {
        addr: code.hub_addr.clone(),
        cert_sha256: code.cert_sha256.clone(),
        bind_ip: None,
    };
    let channel = connect(&target).await?;
    let mut client = HubClient::new(channel);
    let req = v1::JoinRequest {
        invite_secret: code.secret.encode(),
        name: name.map(|n| n.to_string()).unwrap_or_default(),
        capabilities: Some((&capabilities).into()),
        default_name: default_name.unwrap_or_default(),
    };
    let resp = client
        .join(req)
        .await
        .map_err(|s| Error::JoinRefused(s.message().to_owned()))?
        .into_inner();
    let credential = Secret::decode(&resp.credential)
        .map_err(|e| Error::Hub(format!("hub sent an unusable credential: {e}")))?;
    Ok(Joined {
        node_id: resp.node_id,
        name: resp.name,
        credential,
    })
}
