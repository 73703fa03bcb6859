//! The authenticated gRPC client a node uses for every RPC after joining.

use ganglion_proto::v1::hub_client::HubClient as Generated;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds `authorization: Bearer <credential>` to every request.
#[derive(Clone)]
pub struct BearerAuth(AsciiMetadataValue);

impl BearerAuth {
    pub fn new(credential: &ganglion_core::Secret) -> Self {
        let value: MetadataValue<_> = format!("Bearer {}", credential.encode())
            .parse()
            .expect("base64url is valid metadata");
        Self(value)
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type HubClient = Generated<InterceptedService<Channel, BearerAuth>>;

pub fn client(channel: Channel, credential: &ganglion_core::Secret) -> HubClient {
    Generated::with_interceptor(channel, BearerAuth::new(credential))
}
