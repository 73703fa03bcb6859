//! The Ganglion hub.
//!
//! - [`accept`]: accepting connections with bounded handshakes (fd exhaustion).
//! - [`options`]: what the hub is told (addresses, data dir, timings).
//! - [`datadir`]: the data dir's layout and the files the hub publishes there.
//! - [`tls`]: the hub's certificate (self-signed on first start) and its fingerprint.
//! - [`auth`]: node credentials, admin tokens, the per-address failure limiter.
//! - [`limits`]: the bounds of every duration and size taken from input.
//! - [`invites`]: creating, listing, revoking and redeeming invites.
//! - [`nodes`]: operations on nodes: the merged view (stored record + live
//!   connection), policy changes pushed live, revocation.
//! - [`registry`]: the live control streams, one per connected node.
//! - [`worker`]: the background worker trait and its supervisor.
//! - [`monitor`]: the mesh monitor (heartbeat timeouts) and the status writer.
//! - [`task_lease`]: fails tasks whose connected node never reports their end.
//! - [`tasks`]: the live tasks (submission, node reports, watchers) and the journal's queries.
//! - [`mirror`]: the node mirrors at the hub (one driver per node, the mirror index).
//! - [`metrics`]: Prometheus metrics.
//! - [`grpc`]: the tonic service: thin handlers over the parts above.
//! - [`http`]: the axum API (its JSON shapes are `ganglion_api`'s), `/metrics`,
//!   `/healthz` and the dashboard.
//! - `error`: the hub's errors and their one mapping to gRPC codes.
//! - `test_support`: fixtures for the unit tests.
//! - [`hub`]: builds all of the above and runs it with an ordered shutdown.

pub mod accept;
pub mod auth;
pub mod datadir;
mod error;
pub mod grpc;
pub mod http;
pub mod hub;
pub mod invites;
pub mod limits;
pub mod metrics;
pub mod mirror;
pub mod monitor;
pub mod nodes;
pub mod options;
pub mod registry;
pub mod task_lease;
pub mod tasks;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod worker;

pub use error::Error;
pub use hub::{Hub, HubHandle};
pub use options::HubOptions;
