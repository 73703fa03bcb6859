//! The ghost-mirror engine: everything below the network.
//!
//! A node's workspace is mirrored at the hub under `DATA_DIR/mirrors/<node>/`.
//! This crate decides what moves and writes it durably; the hub and node
//! crates carry the messages (gRPC) and convert them to the domain types here.
//!
//! - [`entry`]: [`Entry`], [`EntryKind`], [`ContentHash`] (`blake3:<hex>`), [`Version`].
//! - [`engine`]: the sans-IO core. [`SourceEngine`] (node) and [`SinkEngine`]
//!   (hub) are pure state machines fed events, returning actions.
//! - [`immutable`]: hub-owned paths of a mirror, gitignore-style, versioned.
//! - [`scan`]: the node's scanner; re-hashes only entries whose stat changed.
//! - [`index`]: the persistent SQLite index (both sides, keyed by mirror id).
//! - [`receive`]: the hub's confined writer: staging, hash-while-streaming,
//!   group commit, deletes/moves/copies, `cat`, `verify`, staging sweep.
//! - [`locks`]: the transfer lock registry (guards, idle timeout, gauges).
//! - [`sim`]: the seeded simulation of both engines with crashes.

pub mod engine;
pub mod entry;
pub mod immutable;
pub mod index;
pub mod locks;
pub mod receive;
pub mod scan;
pub mod sim;

pub use engine::{Notice, SinkEngine, SourceEngine, TransferFailure};
pub use entry::{ContentHash, Entry, EntryKind, Replica, Version};
pub use immutable::ImmutablePaths;
