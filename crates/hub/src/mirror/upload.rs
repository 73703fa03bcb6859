//! The `Upload` stream: file content, node → hub, one or many files per
//! stream. The gRPC adapter (`grpc/upload.rs`) turns wire messages into
//! [`Part`]s; this hands them to one blocking writer per stream ([`UploadStream`]: each byte hashed once
//! while it streams, each file's hash checked once at its end), so receiving
//! the next chunk overlaps writing the last. Parts travel to the writer in
//! batches of whatever had arrived (a hand-over per message woke the writer
//! thread once per message: an initial sync of small files spent a third of
//! the hub's CPU in wake-ups). Files that end are reported to the node's
//! driver after each batch (staged: it can go in the next group commit;
//! failed: the driver fetches it again later).
//!
//! Status codes: `InvalidArgument` for a malformed stream (no header first,
//! a header with a bad path or hash); `Aborted` when the stream breaks or
//! idles out. A file that fails alone does not fail the stream: it is listed
//! in `UploadResult.failures`. The file a broken stream was in the middle of
//! is reported to the driver as cancelled (fetched again, resumed from what
//! the receiver kept).

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use ganglion_mirror::receive::{FileOutcome, Part, StreamError, UploadStream};
use ganglion_mirror::{ContentHash, TransferFailure};
use ganglion_store::NodeRecord;
use tokio::sync::mpsc;

use super::{DriverEvent, Mirrors};
use crate::Error;

/// A transfer with no chunk for this long is abandoned.
const CHUNK_IDLE: Duration = super::TRANSFER_IDLE_TIMEOUT;
/// Batches buffered between the stream and its writer.
const WRITER_QUEUE: usize = 4;
/// A batch closes at this many parts or bytes (data chunks are ≤ 1 MiB), so
/// a stream holds at most about `(WRITER_QUEUE + 2) × BATCH_BYTES` in memory.
const BATCH_PARTS: usize = 512;
const BATCH_BYTES: usize = 4 << 20;

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

/// Tells the node's driver how these files ended (one event for all), and
/// counts them for the reply.
fn report(mirrors: &Mirrors, name: &str, received: &mut Received, ended: Vec<FileOutcome>) {
    if ended.is_empty() {
        return;
    }
    for o in &ended {
        match o.result {
            Ok(size) => received.bytes += size,
            Err(failure) => received
                .failures
                .push((o.path.to_string(), o.hash, failure)),
        }
    }
    mirrors.send(name, DriverEvent::Transfers(ended));
}

/// Bytes of data in a part.
fn part_bytes(part: &Part) -> usize {
    match part {
        Part::Data { data, .. } => data.len(),
        Part::Header { .. } => 0,
    }
}

#[tracing::instrument(skip_all, fields(node = %node.name))]
/// Receives an upload stream's parts: a part that did not convert is an
/// `InvalidArgument`, a broken stream a cancelled `Transfer`.
pub async fn receive(
    mirrors: &Arc<Mirrors>,
    node: &NodeRecord,
    mut stream: impl Stream<Item = Result<Part, Error>> + Unpin,
) -> Result<Received, Error> {
    let first = header(&mut stream).await?;
    let name = node.name.to_string();
    let receiver = mirrors.receiver(&name, &node.id).await?;
    let immutable = mirrors.immutable_of(&name);
    let (parts_tx, parts_rx) = mpsc::channel::<Vec<Part>>(WRITER_QUEUE);
    let writer = spawn_writer(
        Writing {
            upload: Some(UploadStream::new(receiver, immutable)),
            to_driver: mirrors.clone(),
            name,
        },
        parts_rx,
    );
    let streamed = forward(stream, first, &parts_tx).await;
    drop(parts_tx);
    let (upload, received, broken) = writer
        .await
        .map_err(|e| Error::Unavailable(format!("upload writer: {e}")))?;
    if let Some(e) = broken {
        return Err(Error::InvalidArgument(e.to_string()));
    }
    let Some(upload) = upload else {
        streamed?;
        return Ok(received);
    };
    if let Err(e) = streamed {
        // The stream broke off: its open file is cut (on a blocking thread:
        // a large one is kept as a partial, an fsync).
        let _ = tokio::task::spawn_blocking(move || drop(upload)).await;
        return Err(e);
    }
    tokio::task::spawn_blocking(move || {
        let mut received = received;
        upload.finish(&mut received);
        received
    })
    .await
    .map_err(|e| Error::Unavailable(format!("upload writer: {e}")))
}

/// A stream's writing side until the stream ends. Dropped without
/// [`Writing::finish`] — the stream broke off, idled out, or the call was
/// cancelled (then the whole `receive` future is dropped) — it cuts its open
/// file (a large one is kept as a partial) and reports it cancelled, so that
/// the driver fetches it again, from what is held, even while the node's
/// control stream stays up. Blocking either way: dropped on the writer's
/// thread or moved to one.
struct Writing {
    upload: Option<UploadStream>,
    to_driver: Arc<Mirrors>,
    name: String,
}

impl Writing {
    fn stream(&mut self) -> &mut UploadStream {
        self.upload.as_mut().expect("until finished")
    }

    /// The stream ended cleanly: its last file ends.
    fn finish(mut self, received: &mut Received) {
        let last = self.upload.take().expect("once").finish();
        report(
            &self.to_driver,
            &self.name,
            received,
            last.into_iter().collect(),
        );
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            let cut = upload.cut().into_iter().collect();
            report(&self.to_driver, &self.name, &mut Received::default(), cut);
        }
    }
}

/// The stream's first part, which must be a header.
async fn header(
    stream: &mut (impl Stream<Item = Result<Part, Error>> + Unpin),
) -> Result<Part, Error> {
    let first = match stream.next().await {
        Some(Ok(p)) => p,
        None => return Err(Error::InvalidArgument("empty upload".into())),
        Some(Err(Error::Transfer { message, .. })) => {
            return Err(Error::InvalidArgument(format!("upload stream: {message}")));
        }
        Some(Err(e)) => return Err(e),
    };
    if !matches!(first, Part::Header { .. }) {
        return Err(Error::InvalidArgument(
            "the first upload message must be a header".into(),
        ));
    }
    Ok(first)
}

/// How the writer ended: the stream's state if it was not broken (its open
/// file ends with `finish`), what it received, and what broke it.
type WriterEnd = (Option<Writing>, Received, Option<StreamError>);

/// The blocking writer of one stream. It reports the files that ended in
/// each batch to the driver itself, from its own thread (a hop back through
/// the stream's task would cost another wake-up).
fn spawn_writer(
    mut writing: Writing,
    mut parts_rx: mpsc::Receiver<Vec<Part>>,
) -> tokio::task::JoinHandle<WriterEnd> {
    let metrics = writing.to_driver.metrics();
    let hashed = metrics.mirror_hashed_bytes.clone();
    let received_bytes = metrics.mirror_received_bytes.clone();
    let resumed = metrics.mirror_resumed_bytes.clone();
    tokio::task::spawn_blocking(move || {
        let mut received = Received::default();
        while let Some(parts) = parts_rx.blocking_recv() {
            let mut ended = Vec::new();
            for part in parts {
                if let Part::Data { data, .. } = &part {
                    hashed.inc_by(data.len() as u64);
                    received_bytes.inc_by(data.len() as u64);
                }
                let upload = writing.stream();
                let fed = upload.feed(part);
                // A resumed file's prefix was hashed again, from disk.
                let prefix = upload.take_resumed();
                resumed.inc_by(prefix);
                hashed.inc_by(prefix);
                match fed {
                    Ok(outcomes) => ended.extend(outcomes),
                    // A broken stream drops the writer's state: the open
                    // file's transfer is aborted (nothing staged, lock
                    // released); files that ended are kept.
                    Err(e) => {
                        report(&writing.to_driver, &writing.name, &mut received, ended);
                        return (None, received, Some(e));
                    }
                }
            }
            report(&writing.to_driver, &writing.name, &mut received, ended);
        }
        (Some(writing), received, None)
    })
}

/// Hands the stream's parts to the writer in batches of what had arrived;
/// `Ok` also when the writer stopped (its error says why).
async fn forward(
    mut stream: impl Stream<Item = Result<Part, Error>> + Unpin,
    first: Part,
    parts_tx: &mpsc::Sender<Vec<Part>>,
) -> Result<(), Error> {
    let mut batch = vec![first];
    let mut bytes = 0;
    let ended = loop {
        // Waits (with the idle timeout) only when nothing has arrived.
        let msg = match stream.next().now_or_never() {
            Some(m) => m,
            None => {
                bytes = 0;
                if !batch.is_empty() && parts_tx.send(std::mem::take(&mut batch)).await.is_err() {
                    // The writer stopped: its error says why.
                    return Ok(());
                }
                match tokio::time::timeout(CHUNK_IDLE, stream.next()).await {
                    Ok(m) => m,
                    Err(_) => {
                        break Err(transfer(
                            TransferFailure::Cancelled,
                            "upload idle for too long",
                        ));
                    }
                }
            }
        };
        match msg {
            Some(Ok(p)) => {
                bytes += part_bytes(&p);
                batch.push(p);
                if batch.len() >= BATCH_PARTS || bytes >= BATCH_BYTES {
                    bytes = 0;
                    if parts_tx.send(std::mem::take(&mut batch)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
        }
    };
    // What arrived before the end (or the break) is written: files that
    // ended before a stream breaks are kept.
    if !batch.is_empty() {
        let _ = parts_tx.send(batch).await;
    }
    ended
}
