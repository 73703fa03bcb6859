//! One connection to the hub: configuration, hello, then the stream served
//! until it ends. The loop knows the stream's own messages (heartbeats);
//! everything else goes through `route`, by subsystem.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::route::Outbound;
use super::{ConnectionEnd, NodeRuntime};
use crate::Error;
use crate::link::{self, FromHub, FromNode, Hello, Incoming, Link};
use crate::mirror::ToHub;
use crate::tls::{self, HubTarget};

fn closed() -> Result<ConnectionEnd, Error> {
    Ok(ConnectionEnd::Closed("outbound stream closed".into()))
}

impl NodeRuntime {
    pub(super) async fn connect_once(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<ConnectionEnd, Error> {
        let target = HubTarget {
            addr: self.opts.state.hub_addr.clone(),
            cert_sha256: self.opts.state.cert_sha256.clone(),
            bind_ip: self.opts.bind_ip,
        };
        let channel = tokio::select! {
            c = tls::connect(&target) => c?,
            _ = cancel.cancelled() => return Ok(ConnectionEnd::Cancelled),
        };
        let mut client = link::client(channel, &self.opts.credential);
        let config = link::configure(&mut client).await?;
        if let Some(p) = config.policy {
            self.apply_policy(p);
        }
        let hello = Hello {
            instance: self.instance.clone(),
            mirror: self.mirror.is_some(),
            capabilities: Some(self.opts.capabilities.clone()),
            mirror_replica: self
                .mirror
                .as_ref()
                .map(|m| m.replica.clone())
                .unwrap_or_default(),
        };
        let mut link = Link::open(&mut client, hello).await?;
        self.status.send_modify(|s| {
            s.connected = true;
            s.connections += 1;
        });
        let connection = self.status.borrow().connections;
        tracing::info!(hub = %target.addr, "connected to the hub");
        if !self.resend(&link).await {
            return closed();
        }
        let interval = config.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(ConnectionEnd::Cancelled),
                _ = heartbeat.tick() => {
                    seq += 1;
                    if !link.send(FromNode::Heartbeat { seq }).await {
                        return closed();
                    }
                }
                out = self.next_outbound() => {
                    if !self.send_outbound(&link, out, connection, seq).await {
                        return closed();
                    }
                }
                msg = link.recv() => match msg {
                    Incoming::Message(FromHub::Welcome(w)) => {
                        tracing::debug!(node_id = %w.node_id, mirror_applied = w.mirror_applied, "welcomed");
                        self.to_mirror(crate::mirror::Input::Connected {
                            hub_applied: w.mirror_applied,
                            client: client.clone(),
                        });
                    }
                    Incoming::Message(FromHub::HeartbeatAck { seq }) => {
                        self.unconfirmed.retain(|(sent_at, _)| *sent_at >= seq);
                    }
                    Incoming::Message(m) => self.inbound(m, connection)?,
                    Incoming::Skipped => {}
                    Incoming::Closed(reason) => return Ok(ConnectionEnd::Closed(reason)),
                    Incoming::Fatal(e) => return Err(e),
                },
            }
        }
    }

    /// What a new connection sends first: the unrecorded mirror changes (the
    /// hub forgets them when a node reconnects), then the task results not
    /// known to have arrived, as late. False if the stream is gone.
    async fn resend(&mut self, link: &Link) -> bool {
        let unrecorded = self
            .mirror
            .as_ref()
            .map_or(0, |m| m.stats.lock().unrecorded);
        if unrecorded > 0 {
            let out = Outbound::Mirror(vec![ToHub::Unrecorded(unrecorded)]);
            if !self.send_outbound(link, out, 0, 0).await {
                return false;
            }
        }
        for (_, mut msg) in std::mem::take(&mut self.unconfirmed) {
            if let ganglion_core::TaskToHub::Finished { report, .. } = &mut msg {
                report.late = true;
            }
            if !link.send(FromNode::Task(msg.clone())).await {
                return false;
            }
            self.unconfirmed.push((0, msg));
        }
        true
    }
}
