//! `ganglion nodes ls|policy|revoke`

use std::process::ExitCode;

use ganglion_api::nodes::capabilities_or_empty;
use ganglion_api::{self as api, NodeStatus, PolicyMode};
use ganglion_core::Capabilities;
use serde::Serialize;

use super::invite::encode;
use super::{out, print_json};
use crate::cli::{HubLocator, NodesCommand, PolicyArg};
use crate::client::ApiClient;

/// The fields CONTRACT.md lists for `nodes ls --json`.
#[derive(Serialize)]
struct NodeOut<'a> {
    name: &'a str,
    id: &'a str,
    status: NodeStatus,
    policy: PolicyMode,
    last_heartbeat: Option<&'a str>,
    #[serde(serialize_with = "capabilities")]
    capabilities: &'a Option<Capabilities>,
    allow: &'a [String],
    network: bool,
    revoked: bool,
    duplicate: Option<&'a api::NodeDuplicate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mirror_halted: Option<&'a str>,
}

/// `{}` when the node has not reported any, as the API shows them.
fn capabilities<S: serde::Serializer>(c: &&Option<Capabilities>, s: S) -> Result<S::Ok, S::Error> {
    capabilities_or_empty::serialize(c, s)
}

impl<'a> From<&'a api::Node> for NodeOut<'a> {
    fn from(n: &'a api::Node) -> Self {
        NodeOut {
            name: &n.name,
            id: &n.id,
            status: n.status,
            policy: n.policy,
            last_heartbeat: n.last_heartbeat.as_deref(),
            capabilities: &n.capabilities,
            allow: &n.policy_detail.allow,
            network: n.policy_detail.network,
            revoked: n.revoked,
            duplicate: n.duplicate.as_ref(),
            mirror_halted: n.mirror_halted.as_deref(),
        }
    }
}

pub async fn run(cmd: NodesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NodesCommand::Ls { json, hub } => {
            let nodes: Vec<api::Node> = ApiClient::locate(&hub)?.get("/api/v1/nodes").await?;
            if json {
                print_json(&nodes.iter().map(NodeOut::from).collect::<Vec<_>>())?;
            } else {
                print_table(&nodes);
            }
        }
        NodesCommand::Policy {
            node,
            mode,
            allow,
            network,
            allow_shell,
            allow_weak_sandbox,
            hub,
        } => {
            let body = api::SetPolicy {
                mode: mode.into(),
                allow,
                network,
                allow_shell,
                allow_weak_sandbox,
            };
            set_policy(&hub, &node, mode, &body).await?;
        }
        NodesCommand::Revoke { node, hub } => {
            let path = format!("/api/v1/nodes/{}/revoke", encode(&node));
            let n: api::Node = ApiClient::locate(&hub)?
                .post(&path, &serde_json::json!({}))
                .await?;
            out(format!("node {} revoked", n.name));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `nodes ls`: a line per node, then a note per node whose credential is
/// in use by another running node.
fn print_table(nodes: &[api::Node]) {
    out(format!(
        "{:<20} {:<8} {:<10} {:<25} {}",
        "NAME", "STATUS", "POLICY", "LAST HEARTBEAT", "PROTECTIONS"
    ));
    for n in nodes {
        let hb = n.last_heartbeat.as_deref().unwrap_or("never");
        let prot = n.capabilities.as_ref().map(|c| c.protections.join(","));
        let status = if n.revoked {
            "revoked"
        } else {
            n.status.as_str()
        };
        out(format!(
            "{:<20} {:<8} {:<10} {:<25} {}",
            n.name,
            status,
            n.policy.as_str(),
            hb,
            prot.unwrap_or_default()
        ));
    }
    for n in nodes {
        if let Some(reason) = &n.mirror_halted {
            out(format!("note: {}: mirror halted: {reason}", n.name));
        }
    }
    for n in nodes.iter().filter(|n| n.duplicate.is_some()) {
        let d = n.duplicate.as_ref().expect("filtered");
        out(format!(
            "note: {}: {} connection(s) refused, last at {} from {}: its credential is in use by another running node (a copied state dir?)",
            n.name,
            d.refused,
            d.at,
            d.refused_peer.as_deref().unwrap_or("?")
        ));
    }
}

/// `nodes policy`: sets it and says whether it applies now.
async fn set_policy(
    hub: &HubLocator,
    node: &str,
    mode: PolicyArg,
    body: &api::SetPolicy,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/nodes/{}/policy", encode(node));
    let n: api::Node = ApiClient::locate(hub)?.put(&path, body).await?;
    let live = if n.status == NodeStatus::Online {
        " (applied live)"
    } else {
        " (applies when it connects)"
    };
    let extra = if mode == PolicyArg::Strict && !n.policy_detail.allow.is_empty() {
        format!(", also allowing {}", n.policy_detail.allow.join(","))
    } else {
        String::new()
    };
    out(format!(
        "node {} is now {}{extra}{live}",
        n.name,
        n.policy.as_str()
    ));
    Ok(())
}
