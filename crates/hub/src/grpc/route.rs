//! The control stream by subsystem, hub side. The connection driver reads a
//! node's messages, converts them ([`FromNode`]) and hands them here; each
//! subsystem's messages go to that subsystem's own handler
//! ([`Tasks::on_node_message`], [`Mirrors::on_node_message`]), and what the
//! hub sends ([`ToNode`], one variant per subsystem) is converted here. A new
//! subsystem (agents, MCP) adds its handler and one arm in each match below,
//! never a branch in the connection's loop.

use std::sync::Arc;

use ganglion_proto::convert::{FromHub, FromNode};
use ganglion_proto::v1;

use crate::mirror::Mirrors;
use crate::registry::{Connection, ToNode};
use crate::tasks::Tasks;

/// The subsystems a node's stream serves.
pub struct Subsystems {
    pub tasks: Arc<Tasks>,
    pub mirrors: Arc<Mirrors>,
}

impl Subsystems {
    /// When the node's stream is registered: what each subsystem needs to
    /// know, and what the welcome tells the node (the last mirror notice
    /// applied). Only nodes that mirror cost the hub a mirror (two directory
    /// handles).
    pub async fn connected(
        &self,
        conn: &Connection,
        mirrors_workspace: bool,
        replica: String,
    ) -> u64 {
        if !mirrors_workspace {
            return 0;
        }
        match self
            .mirrors
            .attach(conn.name.as_str(), &conn.node_id, replica)
            .await
        {
            Ok(seq) => seq,
            Err(e) => {
                tracing::error!(error = %e, "the node's mirror is unavailable");
                0
            }
        }
    }

    /// Hands a node's message to its subsystem.
    pub async fn inbound(&self, conn: &Connection, msg: FromNode) {
        match msg {
            FromNode::Task(m) => {
                if let Err(e) = self.tasks.on_node_message(&conn.node_id, m).await {
                    tracing::error!(error = %e, "recording a task message failed");
                }
            }
            FromNode::Mirror(m) => self.mirrors.on_node_message(conn.name.as_str(), m),
            // The stream's own messages: the connection driver answers them.
            FromNode::Hello(_) | FromNode::Heartbeat { .. } => {}
        }
    }

    /// When the node's stream ended (and it is now offline): its mirror
    /// detaches, its unfinished tasks fail.
    pub async fn disconnected(&self, conn: &Connection, ending: &str) {
        self.mirrors.detach(conn.name.as_str());
        let (_, last_heartbeat) = conn.last_heartbeat();
        if let Err(e) = self
            .tasks
            .on_node_lost(&conn.node_id, ending, last_heartbeat)
            .await
        {
            tracing::error!(error = %e, "failing the tasks of a lost node");
        }
    }
}

/// A hub message on the wire.
pub fn outbound(msg: ToNode) -> v1::HubMessage {
    let kind = match msg {
        ToNode::Policy(p) => return FromHub::Policy(*p).into(),
        ToNode::Task(m) => m.into(),
        ToNode::Mirror(m) => m.into(),
    };
    v1::HubMessage { kind: Some(kind) }
}
