//! The hub's gRPC surface: thin handlers that adapt tonic to the hub's parts.
//!
//! - [`auth_layer`]: authenticates every RPC except those on the open list.
//! - [`service`]: the `Hub` service's handlers.
//! - [`connection`]: drives one node's `Connect` stream.

pub mod auth_layer;
pub mod connection;
pub mod service;

pub use auth_layer::{AuthLayer, AuthenticatedNode};
pub use service::HubService;
