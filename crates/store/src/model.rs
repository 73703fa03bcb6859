//! Records the store reads and writes. Plain domain types: no SQL, no wire types.

use ganglion_core::invite::InviteState;
use ganglion_core::{Capabilities, InviteId, NodeId, NodeName, Policy, SecretHash, Timestamp};

#[derive(Clone, Debug)]
pub struct NewInvite {
    pub id: InviteId,
    pub secret_hash: SecretHash,
    pub name_scope: Option<NodeName>,
    pub policy: Option<Policy>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteRecord {
    pub id: InviteId,
    pub name_scope: Option<NodeName>,
    pub policy: Option<Policy>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
    pub used_by: Option<NodeId>,
    pub revoked_at: Option<Timestamp>,
}

impl InviteRecord {
    /// Pending, used, revoked or expired, as seen at `now`.
    pub fn state(&self, now: Timestamp) -> InviteState {
        if self.used_at.is_some() {
            InviteState::Used
        } else if self.revoked_at.is_some() {
            InviteState::Revoked
        } else if self.expires_at <= now {
            InviteState::Expired
        } else {
            InviteState::Pending
        }
    }
}

/// A node credential about to be stored (only its hash).
#[derive(Clone, Debug)]
pub struct Credential {
    pub hash: SecretHash,
}

/// Redeeming an invite: which invite, which name, and the credential to store.
#[derive(Clone, Debug)]
pub struct Redemption {
    pub invite_hash: SecretHash,
    /// The name the node asked for; `None` takes the invite's scope.
    pub name: Option<NodeName>,
    /// Used when neither `name` nor the invite's scope gives a name.
    pub default_name: Option<NodeName>,
    pub node_id: NodeId,
    pub credential: Credential,
    pub capabilities: Capabilities,
    pub now: Timestamp,
}

pub use ganglion_core::NodeStatus;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: NodeId,
    pub name: NodeName,
    pub policy: Policy,
    pub capabilities: Option<Capabilities>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub status: NodeStatus,
    pub last_heartbeat: Option<Timestamp>,
}

/// One status change, written asynchronously by the hub's status writer.
#[derive(Clone, Debug)]
pub struct StatusUpdate {
    pub node_id: NodeId,
    pub status: NodeStatus,
    pub last_heartbeat: Option<Timestamp>,
    pub peer_addr: Option<String>,
    pub capabilities: Option<Capabilities>,
    pub at: Timestamp,
}
