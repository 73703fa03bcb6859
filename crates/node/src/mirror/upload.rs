//! Uploads of the content the hub needs: a queue of files taken in batches
//! by at most [`PARALLEL_UPLOADS`] stream workers, and the blocking reader
//! that turns a batch's files into upload [`Part`]s (the stream itself is
//! `crate::link::upload`).

use std::collections::VecDeque;
use std::path::Path;

use ganglion_core::RelPath;
use ganglion_mirror::receive::Part;
use ganglion_mirror::{ContentHash, TransferFailure, WorkspaceDir};
use tokio::sync::mpsc;

use super::{Input, MirrorWorker};
use crate::link::client::HubClient;
use crate::link::upload::upload_batch;
use crate::progress::ProgressHandle;

/// Data messages carry at most this much. tonic copies every message into
/// its encode buffer, which grows to the message: a profile with 1 MiB
/// messages showed a fresh buffer (and page faults) per chunk. With 256 KiB
/// an initial sync of `linux` was a little faster in alternating runs and
/// `big` took as long (why exactly was not measured further).
const UPLOAD_CHUNK: usize = 256 << 10;
const PARALLEL_UPLOADS: usize = 4;
/// An upload stream carries queued files up to these limits (small files
/// share a stream instead of paying a stream each).
const BATCH_FILES: usize = 1024;
const BATCH_BYTES: u64 = 32 << 20;
/// The file reader hands messages to the stream in bundles of up to these
/// many messages or bytes, at most `READ_AHEAD` bundles ahead: a hand-over
/// per message woke a thread per message (an initial sync of small files
/// spent a fifth of the node's CPU in those wake-ups).
const BUNDLE_MESSAGES: usize = 256;
const BUNDLE_BYTES: usize = 4 << 20;
pub(crate) const READ_AHEAD: usize = 2;

impl MirrorWorker {
    /// Queues an upload; one of at most [`PARALLEL_UPLOADS`] streams takes
    /// it, together with whatever else is queued by then (up to a batch). A
    /// stream worker starts only when fewer than that many run (a task per
    /// file, most of them finding the queue empty, cost an initial sync 78k
    /// tasks and wake-ups).
    pub(super) fn upload(&self, path: RelPath, hash: ContentHash, size: u64) {
        let Some(client) = self.client.clone() else {
            return;
        };
        {
            let mut q = self.queue.lock();
            q.jobs.push_back(UploadJob {
                path,
                hash,
                size,
                client,
            });
            if q.workers >= PARALLEL_UPLOADS {
                return;
            }
            q.workers += 1;
        }
        let queue = self.queue.clone();
        let root = self.opts.workspace.clone();
        let input = self.input.clone();
        let stats = self.stats.clone();
        let progress = self.progress.clone();
        self.workers.spawn("mirror-upload", async move {
            loop {
                let jobs = {
                    let mut q = queue.lock();
                    let jobs = take_batch(&mut q.jobs);
                    crate::recorder::shrink_if_drained(&mut q.jobs);
                    if jobs.is_empty() {
                        q.workers -= 1;
                        return;
                    }
                    jobs
                };
                let client = jobs[0].client.clone();
                let files: Vec<(RelPath, ContentHash, u64)> =
                    jobs.into_iter().map(|j| (j.path, j.hash, j.size)).collect();
                let results =
                    upload_batch(client, root.clone(), files.clone(), progress.clone()).await;
                let (mut ok, mut bytes) = (0, 0);
                for ((path, hash, size), failure) in files.into_iter().zip(results) {
                    match failure {
                        Some(f) => tracing::info!(%path, failure = ?f, "upload failed"),
                        None => {
                            ok += 1;
                            bytes += size;
                        }
                    }
                    let _ = input.send(Input::Uploaded {
                        path,
                        hash,
                        failure,
                    });
                }
                let mut s = stats.lock();
                s.uploads += ok;
                s.bytes_uploaded += bytes;
            }
        });
    }
}

/// Files the hub needs, and how many stream workers upload them.
#[derive(Default)]
pub(super) struct UploadQueue {
    pub(super) jobs: VecDeque<UploadJob>,
    workers: usize,
}

/// A file the hub needs.
pub(super) struct UploadJob {
    path: RelPath,
    hash: ContentHash,
    size: u64,
    client: HubClient,
}

/// The next batch: at least one job, then more while under the limits.
fn take_batch(queue: &mut VecDeque<UploadJob>) -> Vec<UploadJob> {
    let mut jobs = Vec::new();
    let mut bytes = 0u64;
    while let Some(job) = queue.front() {
        if !jobs.is_empty() && (jobs.len() >= BATCH_FILES || bytes + job.size > BATCH_BYTES) {
            break;
        }
        bytes += job.size;
        jobs.extend(queue.pop_front());
    }
    jobs
}

/// Reads a batch's files into bundles of parts for the stream (blocking);
/// returns, per file, why it failed here (if it did).
pub(crate) fn read_batch(
    root: &Path,
    files: &[(RelPath, ContentHash, u64)],
    tx: mpsc::Sender<Vec<Part>>,
    progress: &ProgressHandle,
) -> Vec<Option<TransferFailure>> {
    let mut stream = Bundler {
        tx,
        bundle: Vec::new(),
        bytes: 0,
    };
    let failures = read_files(root, files, &mut stream, progress);
    stream.flush();
    failures
}

/// Gathers a reader's messages into bundles for the stream (blocking side).
struct Bundler {
    tx: mpsc::Sender<Vec<Part>>,
    bundle: Vec<Part>,
    bytes: usize,
}

impl Bundler {
    /// Queues a message; false once the stream is gone.
    fn send(&mut self, msg: Part) -> bool {
        if let Part::Data { data, .. } = &msg {
            self.bytes += data.len();
        }
        self.bundle.push(msg);
        if self.bundle.len() >= BUNDLE_MESSAGES || self.bytes >= BUNDLE_BYTES {
            return self.flush();
        }
        true
    }

    /// Hands the bundle to the stream; false once the stream is gone.
    fn flush(&mut self) -> bool {
        self.bytes = 0;
        if self.bundle.is_empty() {
            return true;
        }
        self.tx
            .blocking_send(std::mem::take(&mut self.bundle))
            .is_ok()
    }
}

/// Reads the files of a batch into the stream (blocking): a header, then the
/// file's `size` bytes in chunks. A file that is gone, or no longer of the
/// size announced, fails here (`SourceChanged`: it is rescanned).
fn read_files(
    root: &Path,
    files: &[(RelPath, ContentHash, u64)],
    stream: &mut Bundler,
    progress: &ProgressHandle,
) -> Vec<Option<TransferFailure>> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    // Each file reached from the root, never through a symlink (nor one
    // swapped in since the scan), never blocking on a FIFO.
    let Ok(dir) = WorkspaceDir::open(root) else {
        return vec![Some(TransferFailure::SourceChanged); files.len()];
    };
    let mut out = vec![None; files.len()];
    for (i, (path, hash, size)) in files.iter().enumerate() {
        let opened = dir.open_read(path).and_then(|f| {
            let meta = f.metadata()?;
            Ok((f, meta))
        });
        let (mut file, meta) = match opened {
            Ok((f, m)) if m.is_file() && m.len() == *size => (f, m),
            _ => {
                out[i] = Some(TransferFailure::SourceChanged);
                continue;
            }
        };
        let msg = Part::Header {
            path: path.clone(),
            hash: *hash,
            size: *size,
            mode: meta.permissions().mode() & 0o7777,
        };
        if !stream.send(msg) {
            return out; // the stream is gone: its error decides
        }
        let mut offset = 0u64;
        while offset < *size {
            let len = (*size - offset).min(UPLOAD_CHUNK as u64) as usize;
            // Read into spare capacity: no zeroing of each chunk first.
            let mut buf = Vec::with_capacity(len);
            let read = (&mut file).take(len as u64).read_to_end(&mut buf);
            if !matches!(read, Ok(n) if n == len) {
                // Shrunk while read: the hub fails it too (short).
                out[i] = Some(TransferFailure::SourceChanged);
                break;
            }
            let msg = Part::Data {
                offset,
                data: buf.into(),
            };
            offset += len as u64;
            if !stream.send(msg) {
                return out;
            }
            progress.uploaded(len as u64);
        }
    }
    out
}
