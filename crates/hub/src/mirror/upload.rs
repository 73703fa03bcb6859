//! The `Upload` stream: one file's content, node → hub. The header names the
//! file; data chunks follow in order. Each byte is hashed once while it
//! streams (by the receiver); the hash is compared once at the end. A failed
//! transfer leaves nothing staged and tells the driver, which retries later.

use std::time::Duration;

use ganglion_mirror::TransferFailure;
use ganglion_proto::v1;
use ganglion_store::NodeRecord;
use tonic::Streaming;

use super::convert;
use super::{DriverEvent, Mirrors};
use crate::Error;

/// A transfer with no chunk for this long is abandoned.
const CHUNK_IDLE: Duration = super::TRANSFER_IDLE_TIMEOUT;

fn transfer(failure: TransferFailure, message: impl Into<String>) -> Error {
    Error::Transfer {
        failure,
        message: message.into(),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("blocking task: {e}")))
}

#[tracing::instrument(skip_all, fields(node = %node.name))]
pub async fn receive(
    mirrors: &Mirrors,
    node: &NodeRecord,
    mut stream: Streaming<v1::UploadChunk>,
) -> Result<u64, Error> {
    let header = match stream.message().await {
        Ok(Some(v1::UploadChunk {
            kind: Some(v1::upload_chunk::Kind::Header(h)),
            ..
        })) => h,
        Ok(Some(_)) => {
            return Err(Error::InvalidArgument(
                "the first upload message must be a header".into(),
            ));
        }
        Ok(None) => return Err(Error::InvalidArgument("empty upload".into())),
        Err(s) => {
            return Err(Error::InvalidArgument(format!(
                "upload stream: {}",
                s.message()
            )));
        }
    };
    let path = convert::path(&header.path)?;
    let hash = convert::hash(&header.hash)?;
    let name = node.name.to_string();
    let receiver = mirrors.receiver(&name, &node.id).await?;
    let immutable = mirrors.immutable_of(&name);
    let (r, p) = (receiver.clone(), path.clone());
    let size = header.size;
    let mode = header.mode & 0o7777;
    let opened = blocking(move || r.open_transfer(&p, hash, size, mode, &immutable)).await?;
    let id = match opened {
        Ok(id) => id,
        Err(e) => {
            mirrors.send(
                &name,
                DriverEvent::FetchFailed {
                    path,
                    hash,
                    failure: e.failure(),
                },
            );
            return Err(transfer(e.failure(), e.to_string()));
        }
    };
    let result: Result<(), Error> = async {
        loop {
            let msg = tokio::time::timeout(CHUNK_IDLE, stream.message())
                .await
                .map_err(|_| transfer(TransferFailure::Cancelled, "upload idle for too long"))?;
            let chunk = match msg {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(()),
                Err(s) => return Err(transfer(TransferFailure::Cancelled, s.message())),
            };
            let data = match chunk.kind {
                Some(v1::upload_chunk::Kind::Data(d)) => d,
                _ => {
                    return Err(Error::InvalidArgument(
                        "a second header in one upload".into(),
                    ));
                }
            };
            let len = data.len() as u64;
            let r = receiver.clone();
            let offset = chunk.offset;
            blocking(move || r.chunk(id, offset, &data))
                .await?
                .map_err(|e| transfer(e.failure(), e.to_string()))?;
            mirrors.metrics().mirror_hashed_bytes.inc_by(len);
        }
    }
    .await;
    if let Err(e) = result {
        receiver.abort(id);
        let failure = match &e {
            Error::Transfer { failure, .. } => *failure,
            _ => TransferFailure::Io,
        };
        mirrors.send(
            &name,
            DriverEvent::FetchFailed {
                path,
                hash,
                failure,
            },
        );
        return Err(e);
    }
    let r = receiver.clone();
    match blocking(move || r.finish(id)).await? {
        Ok((path, hash)) => {
            mirrors.send(&name, DriverEvent::Staged { path, hash });
            Ok(size)
        }
        Err(e) => {
            mirrors.send(
                &name,
                DriverEvent::FetchFailed {
                    path,
                    hash,
                    failure: e.failure(),
                },
            );
            Err(transfer(e.failure(), e.to_string()))
        }
    }
}
