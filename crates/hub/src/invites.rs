//! Invites: made by operators, redeemed once by a joining node.

use std::sync::Arc;
use std::time::Duration;

use ganglion_core::secret::Purpose;
use ganglion_core::time::SharedClock;
use ganglion_core::{Capabilities, InviteCode, InviteId, NodeId, NodeName, Policy, Secret};
use ganglion_store::{Credential, InviteRecord, NewInvite, NodeRecord, Redemption, Store};

use crate::Error;

pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

pub struct Invites {
    store: Arc<dyn Store>,
    clock: SharedClock,
    hub_addr: String,
    cert_sha256: String,
}

/// An invite just made: its record and the string to hand to the new machine.
pub struct Created {
    pub record: InviteRecord,
    pub code: String,
}

impl Invites {
    pub fn new(
        store: Arc<dyn Store>,
        clock: SharedClock,
        hub_addr: String,
        cert_sha256: String,
    ) -> Self {
        Self {
            store,
            clock,
            hub_addr,
            cert_sha256,
        }
    }

    pub async fn create(
        &self,
        name: Option<NodeName>,
        ttl: Option<Duration>,
        policy: Option<Policy>,
    ) -> Result<Created, Error> {
        // Invites are meant to be used soon: at most 30 days.
        let ttl = crate::limits::INVITE_TTL.check(ttl.unwrap_or(DEFAULT_TTL))?;
        let secret = Secret::generate();
        let now = self.clock.now();
        let record = self
            .store
            .create_invite(&NewInvite {
                id: InviteId::generate(),
                secret_hash: secret.hash(Purpose::Invite),
                name_scope: name,
                policy,
                created_at: now,
                expires_at: now.saturating_add(ttl),
            })
            .await?;
        let code = InviteCode {
            hub_addr: self.hub_addr.clone(),
            cert_sha256: self.cert_sha256.clone(),
            secret,
        }
        .encode();
        tracing::info!(invite = %record.id, expires_at = %record.expires_at, "invite created");
        Ok(Created { record, code })
    }

    pub async fn list(&self) -> Result<Vec<InviteRecord>, Error> {
        Ok(self.store.list_invites().await?)
    }

    pub async fn revoke(&self, id: &str) -> Result<InviteRecord, Error> {
        let id = InviteId::from_string(id).ok_or_else(|| Error::NotFound {
            what: format!("invite {id:?}"),
        })?;
        let rec = self
            .store
            .revoke_invite(&id, self.clock.now())
            .await
            .map_err(|e| match e {
                ganglion_store::Error::NotFound { .. } => Error::NotFound {
                    what: format!("invite {id}"),
                },
                e => e.into(),
            })?;
        if rec.used_at.is_some() {
            return Err(Error::Conflict(format!("invite {id} was already used")));
        }
        tracing::info!(invite = %id, "invite revoked");
        Ok(rec)
    }

    /// Redeems an invite: a new node and its credential, or a refusal that
    /// changed nothing.
    pub async fn redeem(
        &self,
        secret: &Secret,
        name: Option<NodeName>,
        default_name: Option<NodeName>,
        capabilities: Capabilities,
    ) -> Result<(NodeRecord, Secret), Error> {
        let credential = Secret::generate();
        let node = self
            .store
            .redeem_invite(&Redemption {
                invite_hash: secret.hash(Purpose::Invite),
                name,
                default_name,
                node_id: NodeId::generate(),
                credential: Credential {
                    hash: credential.hash(Purpose::NodeCredential),
                },
                capabilities,
                now: self.clock.now(),
            })
            .await?;
        tracing::info!(node = %node.name, node_id = %node.id, "node joined");
        Ok((node, credential))
    }
}
