//! The control stream's messages, by subsystem: each side converts what it
//! reads into a [`FromNode`] or [`FromHub`] and routes it to the handler of
//! its subsystem (tasks, mirror, policy, and the stream's own hello,
//! heartbeats and welcome). A new subsystem adds a variant here, its
//! conversions in a module of its own, and a handler on each side.

use ganglion_core::{Capabilities, Policy, TaskToHub, TaskToNode};
use ganglion_mirror::{MirrorToHub, MirrorToNode};

use super::mirror::{change, conflict, need, notice, resume_at, valid};
use super::tasks;
use super::{Invalid, tasks::dispatch};
use crate::v1;
use crate::v1::hub_message::Kind as ToNodeKind;
use crate::v1::node_message::Kind as ToHubKind;

/// A node's first message on its stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Hello {
    /// A random id of the node process (new at every start).
    pub instance: String,
    /// The node mirrors its workspace.
    pub mirror: bool,
    pub capabilities: Option<Capabilities>,
    /// The node's workspace replica identity (empty: not told).
    pub mirror_replica: String,
}

/// The hub's first message on a node's stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Welcome {
    pub node_id: String,
    pub heartbeat_interval_ms: u32,
    /// The last mirror notice the hub applied.
    pub mirror_applied: u64,
}

/// What a node sends, by subsystem.
#[derive(Clone, Debug, PartialEq)]
pub enum FromNode {
    Hello(Hello),
    Heartbeat { seq: u64 },
    Task(TaskToHub),
    Mirror(MirrorToHub),
}

/// What the hub sends, by subsystem.
#[derive(Clone, Debug, PartialEq)]
pub enum FromHub {
    Welcome(Welcome),
    HeartbeatAck {
        seq: u64,
    },
    Policy(Policy),
    Revoked {
        reason: String,
    },
    Task(TaskToNode),
    /// A dispatch that did not convert: the node refuses it by its raw id.
    UnreadableTask {
        task_id: String,
        error: String,
    },
    Mirror(MirrorToNode),
}

impl From<FromNode> for v1::NodeMessage {
    fn from(m: FromNode) -> Self {
        let kind = match m {
            FromNode::Hello(h) => ToHubKind::Hello(v1::Hello {
                instance: h.instance,
                mirror: h.mirror,
                capabilities: h.capabilities.as_ref().map(Into::into),
                mirror_replica: h.mirror_replica,
            }),
            FromNode::Heartbeat { seq } => ToHubKind::Heartbeat(v1::Heartbeat { seq }),
            FromNode::Task(t) => t.into(),
            FromNode::Mirror(m) => m.into(),
        };
        v1::NodeMessage { kind: Some(kind) }
    }
}

impl From<FromHub> for v1::HubMessage {
    fn from(m: FromHub) -> Self {
        let kind = match m {
            FromHub::Welcome(w) => ToNodeKind::Welcome(v1::Welcome {
                node_id: w.node_id,
                heartbeat_interval_ms: w.heartbeat_interval_ms,
                mirror_applied: w.mirror_applied,
            }),
            FromHub::HeartbeatAck { seq } => ToNodeKind::HeartbeatAck(v1::HeartbeatAck { seq }),
            FromHub::Policy(p) => ToNodeKind::PolicyUpdate(v1::PolicyUpdate {
                policy: Some((&p).into()),
            }),
            FromHub::Revoked { reason } => ToNodeKind::Revoked(v1::Revoked { reason }),
            FromHub::Task(t) => t.into(),
            // Only a node makes one, from what it read: as it came, with its id.
            FromHub::UnreadableTask { task_id, .. } => ToNodeKind::TaskDispatch(v1::TaskDispatch {
                task_id,
                ..Default::default()
            }),
            FromHub::Mirror(m) => m.into(),
        };
        v1::HubMessage { kind: Some(kind) }
    }
}

/// A node's message, by subsystem. Items of a many-item message that are
/// invalid are left out and pushed to `rejected`.
pub fn from_node(m: v1::NodeMessage, rejected: &mut Vec<Invalid>) -> Result<FromNode, Invalid> {
    let Some(kind) = m.kind else {
        return Err(Invalid::new("node message", "empty"));
    };
    Ok(match kind {
        ToHubKind::Hello(h) => FromNode::Hello(Hello {
            instance: h.instance,
            mirror: h.mirror,
            mirror_replica: h.mirror_replica,
            capabilities: h.capabilities.map(Into::into),
        }),
        ToHubKind::Heartbeat(hb) => FromNode::Heartbeat { seq: hb.seq },
        ToHubKind::TaskStarted(m) => FromNode::Task(tasks::started(m)?),
        ToHubKind::TaskOutput(m) => FromNode::Task(tasks::output(m)?),
        ToHubKind::TaskFinished(m) => FromNode::Task(tasks::from_finished(m)?),
        ToHubKind::MirrorNotice(n) => FromNode::Mirror(MirrorToHub::Notices(vec![notice(n)?])),
        ToHubKind::MirrorNotices(n) => {
            FromNode::Mirror(MirrorToHub::Notices(valid(n.notices, notice, rejected)))
        }
        ToHubKind::MirrorBacklog(b) => FromNode::Mirror(MirrorToHub::Unrecorded(b.unrecorded)),
        ToHubKind::MirrorApplied(a) => FromNode::Mirror(MirrorToHub::Applied(a.seq)),
        ToHubKind::MirrorHalted(h) => FromNode::Mirror(MirrorToHub::Halted(h.reason)),
        ToHubKind::MirrorConflict(c) => FromNode::Mirror(MirrorToHub::Conflict(conflict(c)?)),
    })
}

/// The hub's message, by subsystem. Items of a many-item message that are
/// invalid are left out and pushed to `rejected`.
pub fn from_hub(m: v1::HubMessage, rejected: &mut Vec<Invalid>) -> Result<FromHub, Invalid> {
    let Some(kind) = m.kind else {
        return Err(Invalid::new("hub message", "empty"));
    };
    Ok(match kind {
        ToNodeKind::Welcome(w) => FromHub::Welcome(Welcome {
            node_id: w.node_id,
            heartbeat_interval_ms: w.heartbeat_interval_ms,
            mirror_applied: w.mirror_applied,
        }),
        ToNodeKind::HeartbeatAck(ack) => FromHub::HeartbeatAck { seq: ack.seq },
        ToNodeKind::PolicyUpdate(u) => {
            let p = u.policy.ok_or_else(|| Invalid::new("policy", "missing"))?;
            FromHub::Policy(Policy::try_from(p)?)
        }
        ToNodeKind::Revoked(r) => FromHub::Revoked { reason: r.reason },
        ToNodeKind::TaskDispatch(d) => match dispatch(d) {
            Ok(d) => FromHub::Task(TaskToNode::Dispatch(Box::new(d))),
            Err((task_id, error)) => FromHub::UnreadableTask { task_id, error },
        },
        ToNodeKind::TaskCancel(c) => {
            let id = ganglion_core::TaskId::from_string(c.task_id.as_str())
                .ok_or_else(|| Invalid::new("task id", format!("{:?}", c.task_id)))?;
            FromHub::Task(TaskToNode::Cancel(id))
        }
        ToNodeKind::MirrorNeed(n) => FromHub::Mirror(MirrorToNode::Needs(vec![need(&n)?])),
        ToNodeKind::MirrorNeeds(n) => {
            let needs = valid(n.needs, |n| need(&n), rejected);
            FromHub::Mirror(MirrorToNode::Needs(needs))
        }
        ToNodeKind::MirrorAck(a) => FromHub::Mirror(MirrorToNode::Ack(a.seq)),
        ToNodeKind::MirrorChanges(c) => {
            FromHub::Mirror(MirrorToNode::Changes(valid(c.changes, change, rejected)))
        }
        ToNodeKind::MirrorResume(r) => {
            let held = valid(r.files, |r| resume_at(&r), rejected);
            FromHub::Mirror(MirrorToNode::Resume(held))
        }
    })
}
