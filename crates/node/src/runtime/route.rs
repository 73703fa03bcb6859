//! The control stream by subsystem, node side. What the hub sends goes to
//! the handler of its subsystem ([`TaskRunner::on_message`](crate::tasks::TaskRunner::on_message),
//! [`MirrorLink::on_message`], the runtime's policy); what the subsystems
//! have to say (task events, mirror notices) is gathered here for the
//! stream. A new subsystem adds its handler and an arm in each function
//! below, never a branch in the connection's loop.

use ganglion_core::TaskToHub;
use ganglion_mirror::{MirrorToHub, Notice};

use super::NodeRuntime;
use crate::Error;
use crate::link::{FromHub, FromNode, Link};
use crate::mirror::{Input as MirrorInput, MirrorLink, ToHub};
use crate::tasks::{RunnerEvent, update};

/// Notices queued at once travel in one message, up to this many.
const NOTICES_PER_MESSAGE: usize = 1024;

/// What a subsystem has for the hub.
pub(super) enum Outbound {
    Task(RunnerEvent),
    Mirror(Vec<ToHub>),
}

impl NodeRuntime {
    /// Hands the hub's message to its subsystem; an error ends the node.
    pub(super) fn inbound(&self, msg: FromHub, connection: u64) -> Result<(), Error> {
        match msg {
            FromHub::Policy(p) => self.apply_policy(p),
            FromHub::Revoked { reason } => {
                tracing::error!(%reason, "the hub revoked this node");
                return Err(Error::Revoked);
            }
            FromHub::Task(m) => {
                let policy = self.status.borrow().policy.clone();
                self.runner.on_message(m, &policy, connection);
            }
            FromHub::UnreadableTask { task_id, error } => {
                tracing::warn!(task = %task_id, %error, "invalid task refused");
                self.runner.refuse(task_id, connection, 126, error);
            }
            FromHub::Mirror(m) => {
                if let Some(mirror) = &self.mirror {
                    mirror.on_message(m);
                }
            }
            // The stream's own messages: the connection loop takes them.
            FromHub::Welcome(_) | FromHub::HeartbeatAck { .. } => {}
        }
        Ok(())
    }

    /// The next thing a subsystem has for the hub. Cancel safe; never
    /// resolves when no subsystem has anything left.
    pub(super) async fn next_outbound(&mut self) -> Outbound {
        tokio::select! {
            Some(queued) = next_notices(&mut self.mirror) => Outbound::Mirror(queued),
            Some(event) = self.events.recv() => Outbound::Task(event),
            else => std::future::pending().await,
        }
    }

    /// Sends a subsystem's output on the stream (task results are kept
    /// until a heartbeat ack confirms them); false if the stream is gone.
    pub(super) async fn send_outbound(
        &mut self,
        link: &Link,
        out: Outbound,
        connection: u64,
        seq: u64,
    ) -> bool {
        match out {
            Outbound::Task(event) => {
                let Some(msg) = update(event, connection) else {
                    return true;
                };
                if matches!(msg, TaskToHub::Finished { .. }) {
                    self.unconfirmed.push((seq, msg.clone()));
                }
                link.send(FromNode::Task(msg)).await
            }
            Outbound::Mirror(queued) => {
                for m in mirror_messages(queued) {
                    if !link.send(FromNode::Mirror(m)).await {
                        return false;
                    }
                }
                true
            }
        }
    }

    pub(super) fn to_mirror(&self, input: MirrorInput) {
        if let Some(m) = &self.mirror {
            let _ = m.input.send(input);
        }
    }
}

/// The next mirror messages to send: the next one and what queued behind it;
/// never resolves when there is no mirror.
async fn next_notices(mirror: &mut Option<MirrorLink>) -> Option<Vec<ToHub>> {
    let Some(m) = mirror else {
        return std::future::pending().await;
    };
    let mut notices = Vec::new();
    if m.notices.recv_many(&mut notices, NOTICES_PER_MESSAGE).await == 0 {
        return None;
    }
    Some(notices)
}

/// The messages for queued mirror output, in order: notices in a row travel
/// in one message.
fn mirror_messages(queued: Vec<ToHub>) -> Vec<MirrorToHub> {
    let mut out = Vec::new();
    let mut notices: Vec<Notice> = Vec::new();
    for q in queued {
        match q {
            ToHub::Notice(n) => notices.push(n),
            other => {
                if !notices.is_empty() {
                    out.push(MirrorToHub::Notices(std::mem::take(&mut notices)));
                }
                out.push(match other {
                    ToHub::Unrecorded(n) => MirrorToHub::Unrecorded(n),
                    ToHub::Applied(seq) => MirrorToHub::Applied(seq),
                    ToHub::Conflict(c) => MirrorToHub::Conflict(c),
                    ToHub::Halted(reason) => MirrorToHub::Halted(reason),
                    ToHub::Notice(_) => unreachable!("matched above"),
                });
            }
        }
    }
    if !notices.is_empty() {
        out.push(MirrorToHub::Notices(notices));
    }
    out
}
