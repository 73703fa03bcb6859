//! Ganglion's wire protocol, generated from `proto/ganglion/v1/*.proto`, and
//! everything that touches it: no other crate converts a prost type.
//!
//! - [`v1`]: the generated messages and services.
//! - [`convert`]: conversions between wire messages and the domain types of
//!   `ganglion-core` and `ganglion-mirror` (policy, tasks, mirror, the
//!   control stream by subsystem).
//! - [`status`]: domain errors ↔ gRPC codes ↔ HTTP statuses.

pub mod convert;
pub mod status;

#[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("ganglion.v1");
}
