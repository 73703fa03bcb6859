//! Fixtures shared by the aggregates' suites.

use std::time::Duration;

use ganglion_core::secret::Purpose;
use ganglion_core::{Capabilities, InviteId, NodeId, NodeName, Secret, Timestamp};
use ganglion_store::{Credential, NewInvite, Redemption, Store};

pub const T0: Timestamp = Timestamp(1_800_000_000_000);

pub fn name(s: &str) -> NodeName {
    NodeName::parse(s).unwrap()
}

pub fn invite(secret: &Secret, scope: Option<&str>) -> NewInvite {
    NewInvite {
        id: InviteId::generate(),
        secret_hash: secret.hash(Purpose::Invite),
        name_scope: scope.map(name),
        policy: None,
        created_at: T0,
        expires_at: T0.saturating_add(Duration::from_secs(3600)),
    }
}

pub fn redemption(secret: &Secret, asked: Option<&str>, now: Timestamp) -> Redemption {
    Redemption {
        invite_hash: secret.hash(Purpose::Invite),
        name: asked.map(name),
        default_name: None,
        node_id: NodeId::generate(),
        credential: Credential {
            hash: Secret::generate().hash(Purpose::NodeCredential),
        },
        capabilities: Capabilities::default(),
        now,
    }
}

/// A node that joined by an unscoped invite.
pub async fn joined(store: &dyn Store, name: &str) -> ganglion_store::NodeRecord {
    let s = Secret::generate();
    store.create_invite(&invite(&s, None)).await.unwrap();
    store
        .redeem_invite(&redemption(&s, Some(name), T0))
        .await
        .unwrap()
}
