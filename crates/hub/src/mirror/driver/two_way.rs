//! The driver's side of the two-way mirror: hub-side writes (planned by
//! the engine, committed by the receiver with their outbox rows in the same
//! index transaction), sending the outbox to the node, the node's reports
//! (applied, conflicts) and `mirror resolve`.

use ganglion_core::RelPath;
use ganglion_mirror::engine::{HubWrite, WriteRefusal};
use ganglion_mirror::index::Batch;
use ganglion_mirror::{Conflict, ContentHash, HubChange, MirrorToNode};

use super::{Driver, DriverEvent, State};
use crate::registry::ToNode;

/// Changes sent to the node in one message at most.
const CHANGES_PER_MESSAGE: usize = 256;

/// What a hub-side write did: `{"path", "hash", "version"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteDone {
    pub path: RelPath,
    /// The content now at `path` (`None` after a delete).
    pub hash: Option<ContentHash>,
    /// The hub's change number (`HubChange::seq`) of the write.
    pub version: u64,
}

/// Why a hub-side write did not happen (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Refused(#[from] WriteRefusal),
    #[error("the mirror could not be written: {0}")]
    Failed(String),
}

/// Which side of a conflict `mirror resolve` keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The version at the path; the conflict copy is deleted.
    Current,
    /// The conflict copy's version, moved back to the path.
    Conflict,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no open conflict at {0}")]
    NotFound(RelPath),
    #[error("{path} has {count} open conflicts; name the conflict path")]
    Ambiguous { path: RelPath, count: usize },
    #[error(transparent)]
    Write(#[from] WriteError),
}

pub type WriteReply = tokio::sync::oneshot::Sender<Result<WriteDone, WriteError>>;

impl Driver {
    /// Whether a two-way event can run now: it needs the entries, and no
    /// group commit in flight (a hub-side write is committed on its own).
    pub(super) fn defer_two_way(&mut self, event: DriverEvent) -> Option<DriverEvent> {
        match &self.state {
            State::Summary { .. } => {
                if self.loading.is_none() {
                    let immutable = match &self.state {
                        State::Summary { immutable, .. } => immutable.clone(),
                        State::Ready(_) => unreachable!(),
                    };
                    self.loading = Some((self.loader)(immutable));
                }
                self.deferred.push(event);
                None
            }
            State::Ready(_) if self.committing => {
                self.deferred.push(event);
                None
            }
            State::Ready(_) => Some(event),
        }
    }

    /// Runs the deferred two-way events that can run now.
    pub(super) async fn run_deferred(&mut self) {
        while !self.committing && matches!(self.state, State::Ready(_)) && !self.deferred.is_empty()
        {
            let event = self.deferred.remove(0);
            Box::pin(self.on_event(event)).await;
        }
    }

    pub(super) async fn hub_write(
        &mut self,
        write: HubWrite,
        if_hash: Option<ContentHash>,
    ) -> Result<WriteDone, WriteError> {
        let now = self.clock.now();
        let State::Ready(engine) = &mut self.state else {
            return Err(WriteError::Failed("mirror entries not loaded".into()));
        };
        let plan = engine.plan_hub_write(&write, if_hash.as_ref(), now)?;
        let extra = Batch {
            upserts: plan.moved_below.clone(),
            outbox: plan.changes.clone(),
            outbox_drop: plan.superseded.clone(),
            out_seq: Some(plan.out_seq),
            ..Batch::default()
        };
        let outcome = self
            .receiver
            .commit_with(plan.ops.clone(), extra)
            .await
            .map_err(|e| WriteError::Failed(e.to_string()))?;
        if let Some((op, failure)) = outcome.failed.first() {
            if let HubWrite::Put { path, hash, .. } = &write {
                self.receiver.discard(path, *hash);
            }
            return Err(WriteError::Failed(format!("{}: {failure:?}", op.path())));
        }
        let version = plan.out_seq;
        let State::Ready(engine) = &mut self.state else {
            unreachable!("the state does not change during a write")
        };
        // Node changes at these paths give way (their queued ops too), once
        // the write is in: a write that failed must not drop them (the
        // engine would acknowledge changes the mirror never got).
        let actions = engine.give_way(&plan);
        let replaced = plan.replaced();
        self.batch
            .retain(|op| !replaced.iter().any(|p| op.path().starts_with(p)));
        engine.hub_committed(plan);
        self.perform(actions).await;
        self.send_changes().await;
        let (path, hash) = match write {
            HubWrite::Put { path, hash, .. } => (path, Some(hash)),
            HubWrite::Delete { path } => (path, None),
            HubWrite::Move { to, .. } => {
                let hash = self.engine_entry_hash(&to);
                (to, hash)
            }
        };
        tracing::info!(%path, version, "hub-side write");
        Ok(WriteDone {
            path,
            hash,
            version,
        })
    }

    fn engine_entry_hash(&self, path: &RelPath) -> Option<ContentHash> {
        match &self.state {
            State::Ready(engine) => engine.entry(path).and_then(|e| e.hash),
            State::Summary { .. } => None,
        }
    }

    /// The node connected with another workspace replica than the one the
    /// ancestor was agreed with: the whole mirror is offered back (see
    /// `SinkEngine::plan_restore`), and the new replica recorded with it.
    pub(super) async fn replica_changed(&mut self, replica: String) {
        let State::Ready(engine) = &mut self.state else {
            return;
        };
        let plan = engine.plan_restore();
        let offered = plan.changes.len();
        let batch = Batch {
            outbox: plan.changes.clone(),
            outbox_drop: plan.superseded.clone(),
            out_seq: Some(plan.out_seq),
            replica: Some(replica.clone()),
            ..Batch::default()
        };
        if let Err(e) = self.receiver.index().apply(&self.node, &batch).await {
            tracing::error!(error = %e, "cannot record the node's new replica; next connection tries again");
            return;
        }
        let State::Ready(engine) = &mut self.state else {
            return;
        };
        engine.hub_committed(plan);
        if self.peer_replica.is_some() || offered > 0 {
            tracing::warn!(
                from = self.peer_replica.as_deref().unwrap_or("(none)"),
                to = %replica,
                offered,
                "the node's workspace is another replica (index lost, another disk, a restore): \
                 its mirror is offered back; differences become conflicts, nothing is deleted"
            );
        }
        self.peer_replica = Some(replica);
        self.send_changes().await;
    }

    /// Immutable paths the node changed get the hub's version back (the
    /// node keeps its edit as a conflict copy): queued like any hub-side
    /// change. Only the outbox is written: the mirror holds that version.
    pub(super) async fn reassert_immutable(&mut self) {
        let State::Ready(engine) = &mut self.state else {
            return;
        };
        let paths = engine.take_reasserts();
        if paths.is_empty() {
            return;
        }
        let Some(plan) = engine.plan_reassert(&paths) else {
            return;
        };
        let batch = Batch {
            outbox: plan.changes.clone(),
            outbox_drop: plan.superseded.clone(),
            out_seq: Some(plan.out_seq),
            ..Batch::default()
        };
        if let Err(e) = self.receiver.index().apply(&self.node, &batch).await {
            tracing::error!(error = %e, "cannot queue the hub's version of immutable paths");
            return;
        }
        tracing::info!(
            paths = plan.changes.len(),
            "the hub's version of immutable paths goes back to the node"
        );
        if let State::Ready(engine) = &mut self.state {
            engine.hub_committed(plan);
        }
        self.send_changes().await;
    }

    /// Records the node's replica (a first connection to an empty mirror).
    pub(super) async fn record_replica(&mut self, replica: String) {
        let batch = Batch {
            replica: Some(replica.clone()),
            ..Batch::default()
        };
        match self.receiver.index().apply(&self.node, &batch).await {
            Ok(()) => self.peer_replica = Some(replica),
            Err(e) => tracing::error!(error = %e, "cannot record the node's replica"),
        }
    }

    /// Sends the queued changes the node's current stream has not had.
    pub(super) async fn send_changes(&mut self) {
        if !self.connected {
            return;
        }
        let State::Ready(engine) = &mut self.state else {
            return;
        };
        let changes: Vec<HubChange> = engine.unsent_changes();
        for part in changes.chunks(CHANGES_PER_MESSAGE) {
            self.to_node(ToNode::Mirror(MirrorToNode::Changes(part.to_vec())))
                .await;
        }
    }

    /// The node applied the hub-side changes up to `seq`: persisted, then
    /// they leave the outbox. Handled at once, in order with the node's
    /// notices (a deferred one let a notice made after the apply meet the
    /// change it followed and be skipped).
    pub(super) async fn node_applied(&mut self, seq: u64) {
        let batch = Batch {
            out_acked: Some(seq),
            ..Batch::default()
        };
        if let Err(e) = self.receiver.index().apply(&self.node, &batch).await {
            tracing::error!(error = %e, seq, "cannot record the node's applied changes; it reports them again");
            return;
        }
        self.node_out_acked = self.node_out_acked.max(seq);
        if let State::Ready(engine) = &mut self.state {
            engine.hub_applied(seq);
        }
    }

    pub(super) async fn node_conflict(&mut self, conflict: Conflict) {
        tracing::warn!(
            path = %conflict.path,
            conflict_path = %conflict.conflict_path,
            origin = %conflict.origin,
            "conflict: both versions kept"
        );
        let batch = Batch {
            conflicts: vec![conflict.clone()],
            ..Batch::default()
        };
        if let Err(e) = self.receiver.index().apply(&self.node, &batch).await {
            tracing::error!(error = %e, "cannot record a conflict");
            return;
        }
        if let State::Ready(engine) = &mut self.state {
            engine.add_conflict(conflict);
        }
    }

    pub(super) fn conflicts(&self) -> Vec<Conflict> {
        match &self.state {
            State::Ready(engine) => engine.conflicts().cloned().collect(),
            State::Summary { .. } => Vec::new(),
        }
    }

    /// Ends a conflict: keeps one side at the path (a hub-side write, which
    /// reaches the node as any other) and forgets the conflict.
    pub(super) async fn resolve(
        &mut self,
        path: RelPath,
        keep: Keep,
    ) -> Result<Conflict, ResolveError> {
        let State::Ready(engine) = &self.state else {
            return Err(ResolveError::NotFound(path));
        };
        let by_copy = engine
            .conflicts()
            .find(|c| c.conflict_path == path)
            .cloned();
        let conflict = match by_copy {
            Some(c) => c,
            None => {
                let at: Vec<Conflict> = engine
                    .conflicts()
                    .filter(|c| c.path == path)
                    .cloned()
                    .collect();
                match at.len() {
                    0 => return Err(ResolveError::NotFound(path)),
                    1 => at.into_iter().next().expect("one"),
                    count => return Err(ResolveError::Ambiguous { path, count }),
                }
            }
        };
        let copy_exists = engine.entry(&conflict.conflict_path).is_some();
        if copy_exists {
            let write = match keep {
                Keep::Current => HubWrite::Delete {
                    path: conflict.conflict_path.clone(),
                },
                Keep::Conflict => {
                    let current_exists = engine.entry(&conflict.path).is_some();
                    if current_exists {
                        self.hub_write(
                            HubWrite::Delete {
                                path: conflict.path.clone(),
                            },
                            None,
                        )
                        .await?;
                    }
                    HubWrite::Move {
                        from: conflict.conflict_path.clone(),
                        to: conflict.path.clone(),
                    }
                }
            };
            self.hub_write(write, None).await?;
        }
        let batch = Batch {
            conflicts_resolved: vec![conflict.conflict_path.clone()],
            ..Batch::default()
        };
        self.receiver
            .index()
            .apply(&self.node, &batch)
            .await
            .map_err(|e| WriteError::Failed(e.to_string()))?;
        if let State::Ready(engine) = &mut self.state {
            engine.remove_conflict(&conflict.conflict_path);
        }
        tracing::info!(path = %conflict.path, conflict_path = %conflict.conflict_path, ?keep, "conflict resolved");
        Ok(conflict)
    }
}
