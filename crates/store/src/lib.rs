//! Ganglion's persistent state, behind one storage interface.
//!
//! - [`model`]: the records the store reads and writes (domain types, no SQL).
//! - [`error`]: the store's error type; database errors are translated here, once.
//! - [`tasks`]: the journal's records (tasks and their history).
//! - [`sqlite`]: the embedded SQLite backend (WAL, foreign keys on).
//!
//! [`Store`] is what the hub programs against. A PostgreSQL backend will
//! implement the same trait and run the same test suite (`tests/suite.rs`).

mod error;
pub mod model;
mod sqlite;
pub mod tasks;

use async_trait::async_trait;
use ganglion_core::{InviteId, NodeId, NodeName, Policy, SecretHash, TaskId, Timestamp};

pub use error::{Error, InviteRefusal, Result};
pub use model::{
    Credential, InviteRecord, NewInvite, NodeRecord, NodeState, Redemption, StatusUpdate,
};
pub use sqlite::SqliteStore;
pub use tasks::{
    EndApplied, Ended, HistoryEntry, NewTask, StoredOutput, TaskEnd, TaskFilter, TaskRecord,
    TaskStatus,
};

/// Everything the hub persists. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
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

    // --- the journal ---
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

    // --- mirrors ---
    /// A node's immutable path patterns, in the order they were added.
    async fn immutable_patterns(&self, node_id: &NodeId) -> Result<Vec<String>>;
    /// Adds a pattern; `false` if it was already there.
    async fn add_immutable(&self, node_id: &NodeId, pattern: &str, at: Timestamp) -> Result<bool>;
    /// Removes a pattern; `false` if it was not there.
    async fn remove_immutable(&self, node_id: &NodeId, pattern: &str) -> Result<bool>;

    // --- operators ---
    async fn add_admin_token(&self, hash: &SecretHash, at: Timestamp) -> Result<()>;
    async fn admin_token_hashes(&self) -> Result<Vec<SecretHash>>;

    /// Cheap liveness probe of the database.
    async fn ping(&self) -> Result<()>;
    /// Flushes and closes; the last step of an ordered shutdown.
    async fn close(&self);
}
