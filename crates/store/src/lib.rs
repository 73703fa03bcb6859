//! Ganglion's persistent state, one storage trait per aggregate.
//!
//! - [`model`]: the records of nodes, invites and credentials (domain types, no SQL).
//! - [`tasks`]: the journal's records (tasks and their history; no SQL).
//! - [`error`]: the store's error type; database errors are translated here, once.
//! - `sqlite/`: the embedded SQLite backend (WAL, foreign keys on): the hub's
//!   database ([`SqliteStore`]) and the mirror index ([`SqliteMirrorIndex`]).
//!   All SQL, and every row → record conversion, lives there.
//!
//! The aggregates, each a trait a backend implements:
//! - [`NodeStore`]: nodes, invites, credentials, admin tokens;
//! - [`JournalStore`]: tasks and their history;
//! - [`ImmutableStore`]: the hub-owned paths of each node's mirror;
//! - [`MirrorIndex`] (defined by `ganglion-mirror`, whose engines use it):
//!   the mirror index, one per side, in its own database.
//!
//! [`Store`] is every aggregate of the hub's database together: what the
//! hub holds (`Arc<dyn Store>`). Agents will add their aggregate trait here
//! and to `Store`'s bounds. A PostgreSQL backend will implement the same
//! traits and run the same suite (`tests/suite/`, one module per aggregate).

mod error;
pub mod model;
mod sqlite;
pub mod tasks;

use async_trait::async_trait;
use ganglion_core::{InviteId, NodeId, NodeName, Policy, SecretHash, TaskId, Timestamp};

pub use error::{Error, InviteRefusal, Result};
pub use ganglion_mirror::index::MirrorIndex;
pub use model::{
    Credential, InviteRecord, NewInvite, NodeRecord, NodeStatus, Redemption, StatusUpdate,
};
pub use sqlite::{SqliteMirrorIndex, SqliteStore};
pub use tasks::{
    EndApplied, Ended, HistoryEntry, NewTask, StoredOutput, TaskEnd, TaskFilter, TaskRecord,
    TaskStatus, WriterState,
};

/// Nodes and how they join: invites, credentials, policy and status, and
/// the operators' admin tokens. Every method is one transaction.
#[async_trait]
pub trait NodeStore: Send + Sync + 'static {
    // --- invites ---
    async fn create_invite(&self, invite: &NewInvite) -> Result<InviteRecord>;
    async fn list_invites(&self) -> Result<Vec<InviteRecord>>;
    /// Revokes an unused invite. Errors with `NotFound` for an unknown id.
    async fn revoke_invite(&self, id: &InviteId, at: Timestamp) -> Result<InviteRecord>;
    /// Consumes the invite and creates the node and its credential, atomically:
    /// if anything is refused (expired, used, revoked, name taken, name outside
    /// the invite's scope) nothing is written and the invite stays as it was.
    async fn redeem_invite(&self, redemption: &Redemption) -> Result<NodeRecord>;
    /// Whether an invite with this hash could be redeemed now (known, unused,
    /// unrevoked, unexpired): one indexed read, no write. Lets the hub check
    /// an invite from an address over its failure budget without taking the
    /// write lock for every bad one.
    async fn invite_redeemable(&self, hash: &SecretHash, now: Timestamp) -> Result<bool>;

    // --- nodes ---
    /// One indexed lookup by credential hash. Returns revoked nodes too: the
    /// caller decides (a revoked node is told so, not just refused).
    async fn node_by_credential(&self, hash: &SecretHash) -> Result<Option<NodeRecord>>;
    async fn node_by_name(&self, name: &NodeName) -> Result<Option<NodeRecord>>;
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;
    /// Replaces a node's policy; the stored version becomes the previous one plus one.
    async fn set_policy(&self, name: &NodeName, policy: &Policy) -> Result<NodeRecord>;
    async fn revoke_node(&self, name: &NodeName, at: Timestamp) -> Result<NodeRecord>;
    /// Applies status changes in one transaction (the monitor batches them).
    async fn update_status(&self, updates: &[StatusUpdate]) -> Result<()>;
    /// At hub start: no stream is open yet, so every node is offline.
    async fn mark_all_offline(&self, at: Timestamp) -> Result<()>;

    // --- operators ---
    async fn add_admin_token(&self, hash: &SecretHash, at: Timestamp) -> Result<()>;
    async fn admin_token_hashes(&self) -> Result<Vec<SecretHash>>;
}

/// The journal: every task and its history. Every method is one transaction.
#[async_trait]
pub trait JournalStore: Send + Sync + 'static {
    /// Records a new task as `pending`.
    async fn create_task(&self, task: &NewTask) -> Result<()>;
    /// `pending` → `running`; `false` if the task was not pending.
    async fn mark_task_running(&self, id: &TaskId, at: Timestamp) -> Result<bool>;
    /// Records a task's end (see [`EndApplied`]); the record afterwards.
    /// `NotFound` for an unknown task.
    async fn finish_task(&self, end: &TaskEnd) -> Result<Ended>;
    /// Fails every unfinished task (of one node, or all) with `error`;
    /// returns the ids it failed.
    async fn fail_unfinished_tasks(
        &self,
        node_id: Option<&NodeId>,
        error: &str,
        at: Timestamp,
    ) -> Result<Vec<TaskId>>;
    async fn get_task(&self, id: &TaskId) -> Result<Option<TaskRecord>>;
    /// Newest first.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>>;
    /// The state of the backend's journal writer, if it has one (listed by
    /// the hub as the `journal` worker).
    fn journal_writer(&self) -> WriterState {
        WriterState::Idle
    }
}

/// The hub-owned (immutable) paths of each node's mirror.
#[async_trait]
pub trait ImmutableStore: Send + Sync + 'static {
    /// A node's immutable path patterns, in the order they were added.
    async fn immutable_patterns(&self, node_id: &NodeId) -> Result<Vec<String>>;
    /// Adds a pattern; `false` if it was already there.
    async fn add_immutable(&self, node_id: &NodeId, pattern: &str, at: Timestamp) -> Result<bool>;
    /// Removes a pattern; `false` if it was not there.
    async fn remove_immutable(&self, node_id: &NodeId, pattern: &str) -> Result<bool>;
}

/// What a backend's database answers besides its aggregates.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Cheap liveness probe of the database.
    async fn ping(&self) -> Result<()>;
    /// Flushes and closes; the last step of an ordered shutdown.
    async fn close(&self);
}

/// Every aggregate of the hub's database: what the hub programs against.
/// Implemented by any backend that implements them all.
pub trait Store: Backend + NodeStore + JournalStore + ImmutableStore {}

impl<T: Backend + NodeStore + JournalStore + ImmutableStore> Store for T {}
