//! The ghost-mirror engine: everything below the network.
//!
//! A node's workspace is mirrored at the hub under `DATA_DIR/mirrors/<node>/`.
//! This crate decides what moves and writes it durably; the hub and node
//! crates carry the messages (gRPC) and convert them to the domain types here.
//! No tonic or prost type appears in this crate.
//!
//! - [`entry`]: [`Entry`], [`EntryKind`], [`ContentHash`] (`blake3:<hex>`),
//!   [`Version`] (`(origin, seq)`, for the later two-writer step).
//! - [`apply`]: the node's confined writer: a hub-side change applied as a
//!   compare-and-swap (`RENAME_EXCHANGE`, re-checked), conflict copies.
//! - [`change`]: hub-side changes ([`HubChange`]: put, delete, move), the
//!   state each was based on ([`Base`]), and [`Conflict`]s.
//! - [`control`]: the mirror's control-stream messages ([`MirrorToNode`],
//!   [`MirrorToHub`]), converted to the wire by `ganglion-proto`.
//! - [`engine`]: the sans-IO core. [`SourceEngine`] (node) and [`SinkEngine`]
//!   (hub) are pure state machines fed events, returning actions.
//! - [`immutable`]: hub-owned paths of a mirror, gitignore-style, versioned.
//! - [`scan`]: the node's scanner; re-hashes only entries whose stat changed.
//! - [`index`]: the persistent index as a trait ([`MirrorIndex`], both sides,
//!   keyed by mirror id; SQLite in `ganglion-store`), and [`MemoryIndex`].
//! - [`receive`]: the hub's confined writer: staging, hash-while-streaming,
//!   group commit, deletes/moves/copies, `cat`, `verify`, staging sweep.
//! - [`locks`]: the transfer lock registry (guards, idle timeout, gauges).
//! - [`fixture`]: entries with every field set, for tests (here and in `store`).
//! - [`sim`]: the seeded simulation of both engines with crashes.
//! - [`workspace`]: the node's reads, from the workspace root and never
//!   through a symlink.
//!
//! Decisions worth knowing:
//! - Names that are not UTF-8 (or that a `RelPath` refuses, e.g. containing
//!   a backslash) are skipped by the scanner and reported in
//!   [`scan::ScanReport::skipped`]; they are never mirrored.
//! - Symlinks are mirrored as links with their target text, whatever it
//!   points at; the hub never follows one (cap-std confinement plus
//!   `O_NOFOLLOW` on reads).
//! - Only the exec bit crosses over: mirrored files are 0o755 or 0o644.
//! - The hub pulls content: the node announces a change with its hash, the
//!   hub copies or moves content it already has and asks the node only for
//!   the rest. Failed fetches are retried by the hub (it knows its disk);
//!   the node re-scans a file that changed while it was being uploaded.
//! - A delete of a directory at the hub removes its subtree, unless
//!   immutable content lies below it (then it is refused and counted).

pub mod apply;
pub mod change;
pub mod control;
pub mod engine;
pub mod entry;
pub mod fixture;
pub mod immutable;
pub mod index;
pub mod locks;
pub mod receive;
pub mod scan;
pub mod sim;
pub mod workspace;

pub use change::{Base, Conflict, HubChange, HubOp};
pub use control::{MirrorToHub, MirrorToNode};
pub use engine::{Notice, SinkEngine, SourceEngine, TransferFailure};
pub use entry::{ContentHash, Entry, EntryKind, Replica, Version};
pub use immutable::ImmutablePaths;
pub use index::{MemoryIndex, MirrorIndex, SharedIndex};
pub use locks::LockRegistry;
pub use receive::Receiver;
pub use workspace::WorkspaceDir;
