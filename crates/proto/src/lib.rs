//! Ganglion's wire protocol: generated from `proto/ganglion/v1/*.proto`.
//!
//! Only generated code lives here. Conversions to domain types happen at the
//! edge, in the hub and node crates; domain code never touches these structs.

#![allow(clippy::all, missing_docs, rust_2018_idioms)]

pub mod v1 {
    tonic::include_proto!("ganglion.v1");
}
