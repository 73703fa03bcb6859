//! Operations on nodes: the merged view (stored record + live connection),
//! policy changes pushed live, and revocation.

use std::sync::Arc;

use ganglion_core::time::SharedClock;
use ganglion_core::{NodeName, Policy, Timestamp};
use ganglion_store::{NodeRecord, NodeStatus, Store};

use crate::Error;
use crate::registry::{CloseReason, Registry, ToNode};

pub struct Nodes {
    store: Arc<dyn Store>,
    registry: Registry,
    clock: SharedClock,
}

/// A node as operators see it: the stored record, with liveness from the registry.
pub struct NodeView {
    pub record: NodeRecord,
    pub online: bool,
    pub last_heartbeat: Option<Timestamp>,
    /// A connection refused: another process holds the credential.
    pub duplicate: Option<crate::registry::Duplicate>,
}

fn parse_name(name: &str) -> Result<NodeName, Error> {
    NodeName::parse(name).map_err(|_| Error::NotFound {
        what: format!("node {name:?}"),
    })
}

impl Nodes {
    pub fn new(store: Arc<dyn Store>, registry: Registry, clock: SharedClock) -> Self {
        Self {
            store,
            registry,
            clock,
        }
    }

    fn view(&self, record: NodeRecord) -> NodeView {
        let live = self.registry.get(&record.id);
        let last_heartbeat = live
            .as_ref()
            .map(|c| c.last_heartbeat().1)
            .or(record.last_heartbeat);
        NodeView {
            duplicate: self.registry.duplicate(&record.id),
            online: live.is_some(),
            last_heartbeat,
            record,
        }
    }

    pub async fn list(&self) -> Result<Vec<NodeView>, Error> {
        let records = self.store.list_nodes().await?;
        Ok(records.into_iter().map(|r| self.view(r)).collect())
    }

    pub async fn get(&self, name: &str) -> Result<NodeView, Error> {
        let n = parse_name(name)?;
        let record = self.store.node_by_name(&n).await?;
        let record = record.ok_or_else(|| Error::NotFound {
            what: format!("node {name:?}"),
        })?;
        Ok(self.view(record))
    }

    /// Stores the new policy and pushes it to the node if it is connected.
    pub async fn set_policy(&self, name: &str, policy: Policy) -> Result<NodeView, Error> {
        let n = parse_name(name)?;
        let record = self
            .store
            .set_policy(&n, &policy)
            .await
            .map_err(|e| match e {
                ganglion_store::Error::NotFound { .. } => Error::NotFound {
                    what: format!("node {name:?}"),
                },
                e => e.into(),
            })?;
        let pushed = self
            .registry
            .get(&record.id)
            .is_some_and(|c| c.send(ToNode::policy(record.policy.clone())));
        tracing::info!(node = %n, mode = record.policy.mode.as_str(), version = record.policy.version, pushed, "policy changed");
        Ok(self.view(record))
    }

    /// Refuses the node's credential from now on and closes its stream at once.
    pub async fn revoke(&self, name: &str) -> Result<NodeView, Error> {
        let n = parse_name(name)?;
        let record = self
            .store
            .revoke_node(&n, self.clock.now())
            .await
            .map_err(|e| match e {
                ganglion_store::Error::NotFound { .. } => Error::NotFound {
                    what: format!("node {name:?}"),
                },
                e => e.into(),
            })?;
        let closed = self.registry.close(&record.id, CloseReason::Revoked);
        tracing::warn!(node = %n, closed, "node revoked");
        let mut view = self.view(record);
        view.online = false;
        Ok(view)
    }
}

impl NodeView {
    pub fn state(&self) -> NodeStatus {
        if self.online {
            NodeStatus::Online
        } else {
            NodeStatus::Offline
        }
    }
}
