//! Nodes: `GET /api/v1/nodes[/{name}]`, `PUT /api/v1/nodes/{name}/policy`,
//! `POST /api/v1/nodes/{name}/revoke`.

use ganglion_core::{Capabilities, Policy, PolicyMode};
use serde::{Deserialize, Serialize};

// A node's status is a domain type (the store records it too).
pub use ganglion_core::NodeStatus;

/// A node as CONTRACT.md lists it, plus detail.
#[derive(Debug, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub id: String,
    pub status: NodeStatus,
    pub policy: PolicyMode,
    pub last_heartbeat: Option<String>,
    /// What the node reported when it last connected; `{}` before that.
    #[serde(with = "capabilities_or_empty")]
    pub capabilities: Option<Capabilities>,
    /// Full policy detail (allowlist, network, …), beyond CONTRACT.md's fields.
    pub policy_detail: Policy,
    pub revoked: bool,
    /// The last connection refused because another running process holds
    /// this node's credential (a copied state dir), since the hub started.
    #[serde(default)]
    pub duplicate: Option<NodeDuplicate>,
    /// Set while the node does not sync its workspace: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_halted: Option<String>,
}

/// Connections refused because another process holds the node's credential.
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

/// `PUT /api/v1/nodes/{name}/policy`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPolicy {
    pub mode: PolicyMode,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub network: bool,
    #[serde(default)]
    pub allow_shell: bool,
    #[serde(default)]
    pub allow_weak_sandbox: bool,
}

/// A node's capabilities, or `{}` when it has not reported any (CONTRACT.md
/// shows an object either way).
pub mod capabilities_or_empty {
    use ganglion_core::Capabilities;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(c: &Option<Capabilities>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => c.serialize(s),
            None => serde_json::Map::new().serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Capabilities>, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        if v.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(None);
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pin;

    fn node(status: NodeStatus, capabilities: Option<Capabilities>) -> Node {
        Node {
            name: "n1".into(),
            id: "node_1".into(),
            status,
            policy: PolicyMode::Strict,
            last_heartbeat: None,
            capabilities,
            policy_detail: Policy::strict(),
            revoked: false,
            duplicate: None,
            mirror_halted: None,
        }
    }

    #[test]
    fn a_node_as_contract_md_shows_it() {
        pin(
            &node(NodeStatus::Offline, None),
            r#"{"name":"n1","id":"node_1","status":"offline","policy":"strict","last_heartbeat":null,"capabilities":{},"policy_detail":{"mode":"strict","allow":[],"network":false,"allow_shell":false,"allow_weak_sandbox":false,"version":1},"revoked":false,"duplicate":null}"#,
        );
        let caps = Capabilities {
            os: "linux".into(),
            arch: "x86_64".into(),
            kernel: "6.8".into(),
            landlock_abi: Some(4),
            cores: 2,
            memory_bytes: 1 << 30,
            version: "0.1.0".into(),
            protections: vec!["landlock-fs".into()],
        };
        let mut n = node(NodeStatus::Online, Some(caps));
        n.last_heartbeat = Some("2026-01-01T00:00:00Z".into());
        n.policy = PolicyMode::Permissive;
        n.policy_detail = Policy::permissive();
        n.duplicate = Some(NodeDuplicate {
            refused_peer: Some("10.0.0.2:5000".into()),
            kept_peer: None,
            at: "2026-01-01T00:00:01Z".into(),
            refused: 2,
        });
        pin(
            &n,
            r#"{"name":"n1","id":"node_1","status":"online","policy":"permissive","last_heartbeat":"2026-01-01T00:00:00Z","capabilities":{"os":"linux","arch":"x86_64","kernel":"6.8","landlock_abi":4,"cores":2,"memory_bytes":1073741824,"version":"0.1.0","protections":["landlock-fs"]},"policy_detail":{"mode":"permissive","allow":[],"network":false,"allow_shell":false,"allow_weak_sandbox":false,"version":1},"revoked":false,"duplicate":{"refused_peer":"10.0.0.2:5000","kept_peer":null,"at":"2026-01-01T00:00:01Z","refused":2}}"#,
        );
        assert_eq!(NodeStatus::Online.as_str(), "online");
    }

    #[test]
    fn set_policy_takes_the_mode_as_a_word_and_refuses_unknown_fields() {
        pin(
            &SetPolicy {
                mode: PolicyMode::Strict,
                allow: vec!["git".into()],
                network: true,
                allow_shell: false,
                allow_weak_sandbox: false,
            },
            r#"{"mode":"strict","allow":["git"],"network":true,"allow_shell":false,"allow_weak_sandbox":false}"#,
        );
        let p: SetPolicy = serde_json::from_str(r#"{"mode":"permissive"}"#).unwrap();
        assert_eq!(p.mode, PolicyMode::Permissive);
        assert!(serde_json::from_str::<SetPolicy>(r#"{"mode":"lax"}"#).is_err());
        assert!(serde_json::from_str::<SetPolicy>(r#"{"mode":"strict","netwrk":true}"#).is_err());
    }
}
