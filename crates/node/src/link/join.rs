//! The `Join` call: redeems an invite over pinned TLS.

use ganglion_core::{Capabilities, InviteCode, NodeName, Secret};
use ganglion_proto::v1;
use ganglion_proto::v1::hub_client::HubClient;

use crate::Error;
use crate::tls::{HubTarget, connect};

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
