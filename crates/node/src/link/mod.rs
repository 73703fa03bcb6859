//! The node's gRPC adapter: the only part of the node that sees the wire.
//! The runtime and the subsystems speak [`FromNode`] and [`FromHub`]; this
//! module connects, converts and maps the hub's status codes to the node's
//! errors (`ganglion_proto::status`).
//!
//! - [`client`]: the authenticated gRPC client.
//! - [`join`]: the `Join` call.
//! - [`upload`]: the `Upload` stream of the mirror.

pub mod client;
pub(crate) mod download;
pub mod join;
pub(crate) mod upload;

use std::time::Duration;

use ganglion_core::{Policy, Secret};
use ganglion_proto::convert::stream::from_hub;
pub use ganglion_proto::convert::{FromHub, FromNode, Hello, Welcome};
use ganglion_proto::status::Refusal;
use ganglion_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::Error;
use client::HubClient;

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Revoked => Error::Revoked,
            Refusal::Unauthenticated(m) => Error::Unauthenticated(m),
            Refusal::Duplicate(m) => Error::Duplicate(m),
            Refusal::Other(m) => Error::Hub(m),
        }
    }
}

fn from_status(s: &Status) -> Error {
    Refusal::from(s).into()
}

/// What the hub tells a node before its stream opens.
pub struct Configuration {
    /// The node's current policy, if the hub sent a valid one.
    pub policy: Option<Policy>,
    pub heartbeat_interval: Duration,
}

/// Asks the hub for the node's configuration.
pub async fn configure(client: &mut HubClient) -> Result<Configuration, Error> {
    let config = client
        .sync_configuration(v1::SyncConfigurationRequest {})
        .await
        .map_err(|s| from_status(&s))?
        .into_inner();
    let policy = config.policy.and_then(|p| {
        Policy::try_from(p)
            .map_err(|e| tracing::error!(error = %e, "ignoring an invalid policy from the hub"))
            .ok()
    });
    Ok(Configuration {
        policy,
        heartbeat_interval: Duration::from_millis(u64::from(config.heartbeat_interval_ms.max(100))),
    })
}

/// What the stream gave.
pub enum Incoming {
    Message(FromHub),
    /// A malformed message (logged).
    Skipped,
    /// The stream ended; the node reconnects.
    Closed(String),
    /// The hub refused the node for good.
    Fatal(Error),
}

/// One open control stream.
pub struct Link {
    tx: mpsc::Sender<v1::NodeMessage>,
    inbound: Streaming<v1::HubMessage>,
}

impl Link {
    /// Opens the control stream with `hello`.
    pub async fn open(client: &mut HubClient, hello: Hello) -> Result<Self, Error> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(FromNode::Hello(hello).into())
            .await
            .expect("receiver alive");
        let inbound = client
            .connect(ReceiverStream::new(rx))
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok(Self { tx, inbound })
    }

    /// Sends a message; false once the stream is gone.
    pub async fn send(&self, msg: FromNode) -> bool {
        self.tx.send(msg.into()).await.is_ok()
    }

    /// The hub's next message. Cancel safe.
    pub async fn recv(&mut self) -> Incoming {
        let m = match self.inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Incoming::Closed("the hub closed the stream".into()),
            Err(s) => {
                let e = from_status(&s);
                if e.is_fatal() {
                    return Incoming::Fatal(e);
                }
                return Incoming::Closed(s.message().to_owned());
            }
        };
        let mut rejected = Vec::new();
        let msg = from_hub(m, &mut rejected);
        for e in rejected {
            tracing::warn!(error = %e, "invalid item of a hub message ignored");
        }
        match msg {
            Ok(m) => Incoming::Message(m),
            Err(e) if e.field == "policy" || e.field.starts_with("policy.") => {
                tracing::error!(error = %e, "ignoring an invalid policy from the hub");
                Incoming::Skipped
            }
            Err(e) => {
                tracing::warn!(error = %e, "invalid message from the hub ignored");
                Incoming::Skipped
            }
        }
    }
}

/// The client of the node's credential on `channel`.
pub fn client(channel: tonic::transport::Channel, credential: &Secret) -> HubClient {
    client::client(channel, credential)
}
