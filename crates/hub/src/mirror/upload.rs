//! The `Upload` stream: file content, node → hub, one or many files per
//! stream. This adapter turns wire messages into [`Part`]s and hands them to
//! one blocking writer per stream ([`UploadStream`]: each byte hashed once
//! while it streams, each file's hash checked once at its end), so receiving
//! the next chunk overlaps writing the last. Each file that ends is reported
//! to the node's driver at once (staged: it can go in the next group commit;
//! failed: the driver fetches it again later).
//!
//! Status codes: `InvalidArgument` for a malformed stream (no header first,
//! a header with a bad path or hash); `Aborted` when the stream breaks or
//! idles out. A file that fails alone does not fail the stream: it is listed
//! in `UploadResult.failures`.

use std::sync::Arc;
use std::time::Duration;

use ganglion_mirror::receive::{FileOutcome, Part, UploadStream};
use ganglion_mirror::{ContentHash, TransferFailure};
use ganglion_proto::v1;
use ganglion_store::NodeRecord;
use tokio::sync::mpsc;
use tonic::Streaming;

use super::convert;
use super::{DriverEvent, Mirrors};
use crate::Error;

/// A transfer with no chunk for this long is abandoned.
const CHUNK_IDLE: Duration = super::TRANSFER_IDLE_TIMEOUT;
/// Parts buffered between the stream and its writer (chunks are ≤ 1 MiB).
const WRITER_QUEUE: usize = 4;

/// What a finished stream did.
#[derive(Debug, Default)]
pub struct Received {
    pub bytes: u64,
    pub failures: Vec<(String, ContentHash, TransferFailure)>,
}

fn transfer(failure: TransferFailure, message: impl Into<String>) -> Error {
    Error::Transfer {
        failure,
        message: message.into(),
    }
}

fn part(chunk: v1::UploadChunk) -> Result<Part, Error> {
    match chunk.kind {
        Some(v1::upload_chunk::Kind::Header(h)) => Ok(Part::Header {
            path: convert::path(&h.path)?,
            hash: convert::hash(&h.hash)?,
            size: h.size,
            mode: h.mode & 0o7777,
        }),
        Some(v1::upload_chunk::Kind::Data(data)) => Ok(Part::Data {
            offset: chunk.offset,
            data,
        }),
        None => Err(Error::InvalidArgument(
            "upload message without content".into(),
        )),
    }
}

/// Tells the node's driver how a file ended, and counts it for the reply.
fn report(mirrors: &Mirrors, name: &str, received: &mut Received, outcome: FileOutcome) {
    match outcome.result {
        Ok(size) => {
            received.bytes += size;
            mirrors.send(
                name,
                DriverEvent::Staged {
                    path: outcome.path,
                    hash: outcome.hash,
                },
            );
        }
        Err(failure) => {
            received
                .failures
                .push((outcome.path.to_string(), outcome.hash, failure));
            mirrors.send(
                name,
                DriverEvent::FetchFailed {
                    path: outcome.path,
                    hash: outcome.hash,
                    failure,
                },
            );
        }
    }
}

#[tracing::instrument(skip_all, fields(node = %node.name))]
pub async fn receive(
    mirrors: &Arc<Mirrors>,
    node: &NodeRecord,
    mut stream: Streaming<v1::UploadChunk>,
) -> Result<Received, Error> {
    let first = match stream.message().await {
        Ok(Some(c)) => part(c)?,
        Ok(None) => return Err(Error::InvalidArgument("empty upload".into())),
        Err(s) => {
            return Err(Error::InvalidArgument(format!(
                "upload stream: {}",
                s.message()
            )));
        }
    };
    if !matches!(first, Part::Header { .. }) {
        return Err(Error::InvalidArgument(
            "the first upload message must be a header".into(),
        ));
    }
    let name = node.name.to_string();
    let receiver = mirrors.receiver(&name, &node.id).await?;
    let immutable = mirrors.immutable_of(&name);

    // The writer reports each file to the driver as it ends (from its own
    // thread: a hop through this task cost a wake-up per file).
    let (parts_tx, mut parts_rx) = mpsc::channel::<Part>(WRITER_QUEUE);
    let hashed = mirrors.metrics().mirror_hashed_bytes.clone();
    let to_driver = mirrors.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut upload = UploadStream::new(receiver, immutable);
        let mut received = Received::default();
        while let Some(part) = parts_rx.blocking_recv() {
            if let Part::Data { data, .. } = &part {
                hashed.inc_by(data.len() as u64);
            }
            match upload.feed(part) {
                Ok(outcomes) => {
                    for o in outcomes {
                        report(&to_driver, &name, &mut received, o);
                    }
                }
                // A broken stream drops the writer's state: the open file's
                // transfer is aborted (nothing staged, lock released); files
                // that ended are kept.
                Err(e) => return (None, received, Some(e)),
            }
        }
        (Some((upload, to_driver, name)), received, None)
    });
    let _ = parts_tx.send(first).await;

    let streamed: Result<(), Error> = async {
        loop {
            let msg = tokio::time::timeout(CHUNK_IDLE, stream.message())
                .await
                .map_err(|_| transfer(TransferFailure::Cancelled, "upload idle for too long"))?;
            match msg {
                Ok(Some(c)) => {
                    if parts_tx.send(part(c)?).await.is_err() {
                        // The writer stopped: its error says why.
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(s) => return Err(transfer(TransferFailure::Cancelled, s.message())),
            }
        }
    }
    .await;
    drop(parts_tx);
    let (upload, received, broken) = writer
        .await
        .map_err(|e| Error::Unavailable(format!("upload writer: {e}")))?;
    if let Some(e) = broken {
        return Err(Error::InvalidArgument(e.to_string()));
    }
    // Dropping the stream here (on error) aborts its open file.
    streamed?;
    let Some((upload, to_driver, name)) = upload else {
        return Ok(received);
    };
    tokio::task::spawn_blocking(move || {
        let mut received = received;
        if let Some(o) = upload.finish() {
            report(&to_driver, &name, &mut received, o);
        }
        received
    })
    .await
    .map_err(|e| Error::Unavailable(format!("upload writer: {e}")))
}
