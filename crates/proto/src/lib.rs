//! Ganglion's wire protocol, generated from `proto/ganglion/v1/*.proto`.
//!
//! - [`v1`]: the generated messages and services.
//! - [`convert`]: conversions between wire messages and `ganglion-core` domain
//!   types, in one place, so the hub and the node share them and domain code
//!   never touches a prost struct.

pub mod convert;

#[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("ganglion.v1");
}
