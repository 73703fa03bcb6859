//! Hub-side writes into a node's mirror (the two-way mirror): `mirror
//! put|rm|mv`, `conflicts`, `resolve`, and the content a node downloads to
//! apply a put. Each goes through the node's driver, so it is ordered with
//! the node's own changes; a put's content is staged first (hashed while
//! written), then the driver commits it with its outbox row.
//!
//! The call the agent runtime uses is [`Mirrors::write`] (with
//! [`Mirrors::put`] for content): the same path as an operator's.

use std::io::Read;

use ganglion_core::{NodeId, RelPath};
use ganglion_mirror::engine::{HubWrite, WriteRefusal};
use ganglion_mirror::{Conflict, ContentHash};
use tokio::sync::{mpsc, oneshot};

use super::Mirrors;
use super::driver::{DriverEvent, Keep, ResolveError, WriteDone, WriteError};
use crate::Error;

/// The largest content one `mirror put` takes (it is held in memory while
/// staged; bigger files reach the mirror from the node's side).
pub const MAX_PUT_BYTES: usize = 64 << 20;

/// Bytes per message of a download.
const DOWNLOAD_CHUNK: usize = 256 * 1024;

impl From<WriteError> for Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Refused(r) => match r {
                WriteRefusal::NotFound { .. } => Error::NotFound {
                    what: r.to_string(),
                },
                WriteRefusal::HashMismatch { .. }
                | WriteRefusal::Exists { .. }
                | WriteRefusal::Busy { .. } => Error::Conflict(r.to_string()),
                WriteRefusal::IsADirectory { .. }
                | WriteRefusal::NotADirectory { .. }
                | WriteRefusal::IntoItself { .. } => Error::InvalidArgument(r.to_string()),
            },
            WriteError::Failed(m) => Error::Unavailable(m),
        }
    }
}

impl From<ResolveError> for Error {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::NotFound(_) => Error::NotFound {
                what: e.to_string(),
            },
            ResolveError::Ambiguous { .. } => Error::Conflict(e.to_string()),
            ResolveError::Write(w) => w.into(),
        }
    }
}

/// A `mirror put`: the content, where, and its condition.
pub struct Put {
    pub path: RelPath,
    pub data: bytes::Bytes,
    pub executable: bool,
    /// Write only if the mirror's current hash of `path` is this.
    pub if_hash: Option<ContentHash>,
}

impl Mirrors {
    /// A hub-side write, conditional on the path's current hash if given.
    pub async fn write(
        &self,
        node: &str,
        node_id: &NodeId,
        write: HubWrite,
        if_hash: Option<ContentHash>,
    ) -> Result<WriteDone, Error> {
        let (reply, rx) = oneshot::channel();
        self.deliver(
            node,
            node_id,
            DriverEvent::HubWrite {
                write,
                if_hash,
                reply,
            },
        )
        .await?;
        Ok(rx.await.map_err(|_| stopped())??)
    }

    /// Writes content at a path (stdin or a file of `mirror put`).
    pub async fn put(&self, node: &str, node_id: &NodeId, put: Put) -> Result<WriteDone, Error> {
        let Put {
            path,
            data,
            executable,
            if_hash,
        } = put;
        if data.len() > MAX_PUT_BYTES {
            return Err(Error::InvalidArgument(format!(
                "content of {} bytes is over the limit of {MAX_PUT_BYTES} bytes for a put",
                data.len()
            )));
        }
        let receiver = self.receiver(node, node_id).await?;
        let size = data.len() as u64;
        let (r, p) = (receiver.clone(), path.clone());
        let hash = tokio::task::spawn_blocking(move || r.stage_put(&p, &data, executable))
            .await
            .map_err(|e| Error::Unavailable(format!("staging: {e}")))?
            .map_err(|e| match e {
                ganglion_mirror::receive::Error::Busy(_) => Error::Conflict(format!(
                    "{path} is being transferred from the node; try again"
                )),
                e => Error::Unavailable(format!("staging {path}: {e}")),
            })?;
        let write = HubWrite::Put {
            path: path.clone(),
            hash,
            size,
            executable,
        };
        let done = self.write(node, node_id, write, if_hash).await;
        if done.is_err() {
            receiver.discard(&path, hash);
        }
        done
    }

    pub async fn conflicts(&self, node: &str, node_id: &NodeId) -> Result<Vec<Conflict>, Error> {
        let (reply, rx) = oneshot::channel();
        self.deliver(node, node_id, DriverEvent::Conflicts { reply })
            .await?;
        rx.await.map_err(|_| stopped())
    }

    pub async fn resolve(
        &self,
        node: &str,
        node_id: &NodeId,
        path: RelPath,
        keep: Keep,
    ) -> Result<Conflict, Error> {
        let (reply, rx) = oneshot::channel();
        self.deliver(node, node_id, DriverEvent::Resolve { path, keep, reply })
            .await?;
        Ok(rx.await.map_err(|_| stopped())??)
    }

    /// The content of `path` for the node applying a put, if the mirror
    /// still holds it with `hash` (else `NotFound`: a newer change replaced
    /// it, and follows). Chunks arrive on the returned channel.
    pub async fn download(
        &self,
        node: &str,
        node_id: &NodeId,
        path: RelPath,
        hash: ContentHash,
    ) -> Result<mpsc::Receiver<Result<Vec<u8>, Error>>, Error> {
        let receiver = self.receiver(node, node_id).await?;
        let current = self
            .index
            .get(node, &path)
            .await
            .map_err(|e| Error::Unavailable(format!("mirror index: {e}")))?;
        if current.and_then(|e| e.hash) != Some(hash) {
            return Err(Error::NotFound {
                what: format!("{path} with {hash} in the mirror"),
            });
        }
        let file = receiver
            .open_no_follow(&path)
            .map_err(|e| Error::NotFound {
                what: format!("{path}: {e}"),
            })?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut file = file.into_std();
            loop {
                let mut buf = vec![0u8; DOWNLOAD_CHUNK];
                let n = match file.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Error::Io(e)));
                        return;
                    }
                };
                buf.truncate(n);
                if tx.blocking_send(Ok(buf)).is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

fn stopped() -> Error {
    Error::Unavailable("mirror driver stopped".into())
}
