//! Fixtures for the hub's unit tests.

use ganglion_core::secret::Purpose;
use ganglion_core::{Capabilities, InviteId, NodeId, NodeName, Secret, Timestamp};
use ganglion_store::{Credential, NewInvite, NodeRecord, Redemption, Store};

/// A node called `name` that joined by an unscoped invite at time 0.
pub async fn joined_node(store: &dyn Store, name: &str) -> NodeRecord {
    let s = Secret::generate();
    store
        .create_invite(&NewInvite {
            id: InviteId::generate(),
            secret_hash: s.hash(Purpose::Invite),
            name_scope: None,
            policy: None,
            created_at: Timestamp(0),
            expires_at: Timestamp(i64::MAX),
        })
        .await
        .unwrap();
    store
        .redeem_invite(&Redemption {
            invite_hash: s.hash(Purpose::Invite),
            name: Some(NodeName::parse(name).unwrap()),
            default_name: None,
            node_id: NodeId::generate(),
            credential: Credential {
                hash: Secret::generate().hash(Purpose::NodeCredential),
            },
            capabilities: Capabilities::default(),
            now: Timestamp(0),
        })
        .await
        .unwrap()
}
