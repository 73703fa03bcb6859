//! The `Hub` gRPC service. Handlers are thin: they check input, call the hub's
//! parts and convert between wire and domain types.
//!
//! Status codes (see [`crate::Error::grpc_code`]):
//! - `Join`: InvalidArgument (bad name or secret), Unauthenticated (unknown
//!   invite), FailedPrecondition (expired, used, revoked, other name's invite),
//!   AlreadyExists (name taken), ResourceExhausted (too many failures from this
//!   address).
//! - `SyncConfiguration`, `Connect`: Unauthenticated / PermissionDenied
//!   (revoked) from the auth layer; `Connect` also InvalidArgument when the
//!   first message is not a hello, and AlreadyExists when another running
//!   process holds a live stream with the same credential (a copied state dir);
//!   see `connection.rs` for how a running stream ends.
//! - `Upload`: see `upload.rs`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use ganglion_core::time::SharedClock;
use ganglion_core::{NodeName, Secret};
use ganglion_proto::v1;
use tonic::{Request, Response, Status, Streaming};

use super::auth_layer::AuthenticatedNode;
use super::connection::ConnectionDriver;
use super::route::Subsystems;
use crate::Error;
use crate::auth::Authenticator;
use crate::invites::Invites;
use crate::metrics::Metrics;
use crate::monitor::StatusSink;
use crate::registry::Registry;

#[derive(Clone)]
pub struct HubService {
    pub invites: Arc<Invites>,
    pub auth: Arc<Authenticator>,
    pub registry: Registry,
    pub tasks: Arc<crate::tasks::Tasks>,
    pub mirrors: Arc<crate::mirror::Mirrors>,
    pub status: StatusSink,
    pub clock: SharedClock,
    pub heartbeat_interval: Duration,
    pub hello_deadline: Duration,
    pub metrics: Metrics,
}

fn authenticated<T>(req: &Request<T>) -> Result<AuthenticatedNode, Status> {
    // The auth layer inserts this for every method not on the open list; its
    // absence means the layer was bypassed, which must never serve a request.
    req.extensions()
        .get::<AuthenticatedNode>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing credential"))
}

type HubStream = Pin<Box<dyn Stream<Item = Result<v1::HubMessage, Status>> + Send>>;
type DownloadStream = Pin<Box<dyn Stream<Item = Result<v1::DownloadChunk, Status>> + Send>>;

#[tonic::async_trait]
impl v1::hub_server::Hub for HubService {
    #[tracing::instrument(skip_all, fields(name = %req.get_ref().name))]
    async fn join(
        &self,
        req: Request<v1::JoinRequest>,
    ) -> Result<Response<v1::JoinResponse>, Status> {
        let peer = req.remote_addr().map(|a| a.ip());
        let result = self.join_inner(req.into_inner(), peer).await;
        match result {
            Ok(joined) => Ok(Response::new(joined)),
            Err(e) => {
                tracing::info!(error = %e, ?peer, "join refused");
                Err(match e {
                    Error::StoreTimeout | Error::Store(_) | Error::RateLimited { .. } => e,
                    e => self.auth.join_failed(peer, e),
                }
                .into())
            }
        }
    }

    async fn sync_configuration(
        &self,
        req: Request<v1::SyncConfigurationRequest>,
    ) -> Result<Response<v1::NodeConfig>, Status> {
        let AuthenticatedNode(node) = authenticated(&req)?;
        Ok(Response::new(v1::NodeConfig {
            node_id: node.id.to_string(),
            name: node.name.to_string(),
            policy: Some((&node.policy).into()),
            heartbeat_interval_ms: millis(self.heartbeat_interval),
            sync: Some(v1::SyncSettings {
                enabled: false,
                debounce_ms: 100,
                rescan_interval_s: 60,
            }),
        }))
    }

    async fn upload(
        &self,
        req: Request<Streaming<v1::UploadChunk>>,
    ) -> Result<Response<v1::UploadResult>, Status> {
        let AuthenticatedNode(node) = authenticated(&req)?;
        let parts = Box::pin(super::upload::parts(req.into_inner()));
        let received = crate::mirror::upload::receive(&self.mirrors, &node, parts).await?;
        Ok(Response::new(super::upload::result(received)))
    }

    type DownloadStream = DownloadStream;

    /// Content of a hub-side write for the node applying it (only its own
    /// mirror: the node is the credential's).
    async fn download(
        &self,
        req: Request<v1::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let AuthenticatedNode(node) = authenticated(&req)?;
        let r = req.into_inner();
        let invalid = |e: ganglion_proto::convert::Invalid| Status::invalid_argument(e.to_string());
        let path = ganglion_proto::convert::mirror::path(&r.path).map_err(invalid)?;
        let hash = ganglion_proto::convert::mirror::hash(&r.hash).map_err(invalid)?;
        let chunks = self
            .mirrors
            .download(node.name.as_str(), &node.id, path, hash)
            .await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(chunks).map(|c| match c {
            Ok(data) => Ok(v1::DownloadChunk { data }),
            Err(e) => Err(Status::from(e)),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type ConnectStream = HubStream;

    async fn connect(
        &self,
        req: Request<Streaming<v1::NodeMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let AuthenticatedNode(node) = authenticated(&req)?;
        let peer = req.remote_addr();
        let driver = ConnectionDriver {
            registry: self.registry.clone(),
            subsystems: Subsystems {
                tasks: self.tasks.clone(),
                mirrors: self.mirrors.clone(),
            },
            status: self.status.clone(),
            clock: self.clock.clone(),
            heartbeat_interval: self.heartbeat_interval,
            hello_deadline: self.hello_deadline,
        };
        let stream = driver.start(node, peer, req.into_inner()).await?;
        Ok(Response::new(stream))
    }
}

impl HubService {
    async fn join_inner(
        &self,
        req: v1::JoinRequest,
        peer: Option<std::net::IpAddr>,
    ) -> Result<v1::JoinResponse, Error> {
        let secret = Secret::decode(&req.invite_secret)
            .map_err(|e| Error::InvalidArgument(format!("invite secret: {e}")))?;
        // From an address over its failure budget, a valid invite still
        // joins; anything else is told to wait, found out by one indexed read
        // rather than a redemption (which takes the store's write lock).
        if let Err(limited) = self.auth.limiter().check(peer)
            && !self
                .auth
                .invite_redeemable(&secret, self.clock.now())
                .await?
        {
            return Err(limited);
        }
        let name = match req.name.as_str() {
            "" => None,
            n => Some(NodeName::parse(n).map_err(|e| Error::InvalidArgument(e.to_string()))?),
        };
        // A bad default name is dropped, not an error: it only stands in.
        let default_name = NodeName::parse(&req.default_name).ok();
        let caps = req.capabilities.map(Into::into).unwrap_or_default();
        let (node, credential) = self
            .invites
            .redeem(&secret, name, default_name, caps)
            .await?;
        self.metrics.joins.inc();
        Ok(v1::JoinResponse {
            node_id: node.id.to_string(),
            name: node.name.to_string(),
            credential: credential.encode(),
        })
    }
}

pub(crate) fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
