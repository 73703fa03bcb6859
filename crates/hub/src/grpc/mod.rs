//! The hub's gRPC surface: thin handlers that adapt tonic to the hub's parts.
//!
//! - [`auth_layer`]: authenticates every RPC except those on the open list.
//! - [`service`]: the `Hub` service's handlers.
//! - [`connection`]: drives one node's `Connect` stream.
//! - [`route`]: the control stream by subsystem: each one's messages to its
//!   handler, the hub's messages to the wire.
//! - [`upload`]: the `Upload` stream's adapter (wire → mirror parts).

pub mod auth_layer;
pub mod connection;
pub mod route;
pub mod service;
pub mod upload;

pub use auth_layer::{AuthLayer, AuthenticatedNode};
pub use service::HubService;

/// The tonic server of the `Hub` service.
pub fn server(service: HubService) -> ganglion_proto::v1::hub_server::HubServer<HubService> {
    ganglion_proto::v1::hub_server::HubServer::new(service)
}
