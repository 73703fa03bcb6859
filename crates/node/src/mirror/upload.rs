//! Uploads of the content the hub needs: a queue of files taken in batches
//! by at most [`PARALLEL_UPLOADS`] stream workers, and the blocking reader
//! that turns a batch's files into upload [`Part`]s (the stream itself is
//! `crate::link::upload`).
//!
//! Resumes: the hub names, before its needs, the contents it holds a cut
//! transfer of and how many bytes ([`MirrorToNode::Resume`]); their uploads
//! state that offset in their header and read the file from there only.
//!
//! [`MirrorToNode::Resume`]: ganglion_mirror::MirrorToNode::Resume

use std::collections::{HashMap, VecDeque};
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
/// Resume offsets kept at most while their needs are on the way (each is
/// taken by its need right after; more means they are stale).
const MAX_RESUMES: usize = 16 * 1024;

/// A file to upload: its content, and where its data starts (0, or what
/// the hub holds of a cut transfer).
#[derive(Clone, Debug)]
pub(crate) struct FileToSend {
    pub path: RelPath,
    pub hash: ContentHash,
    pub size: u64,
    pub offset: u64,
}

impl MirrorWorker {
    /// Queues an upload; one of at most [`PARALLEL_UPLOADS`] streams takes
    /// it, together with whatever else is queued by then (up to a batch). A
    /// stream worker starts only when fewer than that many run (a task per
    /// file, most of them finding the queue empty, cost an initial sync 78k
    /// tasks and wake-ups).
    pub(super) fn upload(&self, path: RelPath, hash: ContentHash, size: u64) {
        {
            let mut q = self.queue.lock();
            // Taken even without a client: it was for this need only.
            let offset = q.take_resume(&path, hash, size);
            let Some(client) = self.client.clone() else {
                return;
            };
            q.jobs.push_back(UploadJob {
                file: FileToSend {
                    path,
                    hash,
                    size,
                    offset,
                },
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
                let files: Vec<FileToSend> = jobs.into_iter().map(|j| j.file).collect();
                let results =
                    upload_batch(client, root.clone(), files.clone(), progress.clone()).await;
                let (mut ok, mut bytes) = (0, 0);
                for (file, failure) in files.into_iter().zip(results) {
                    match failure {
                        Some(f) => tracing::info!(path = %file.path, failure = ?f, "upload failed"),
                        None => {
                            ok += 1;
                            // What was sent: a resume did not send its prefix.
                            bytes += file.size - file.offset;
                        }
                    }
                    let _ = input.send(Input::Uploaded {
                        path: file.path,
                        hash: file.hash,
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
pub(crate) struct UploadQueue {
    pub(super) jobs: VecDeque<UploadJob>,
    workers: usize,
    /// Offsets the hub holds, by content, until their need arrives.
    resume: HashMap<(RelPath, ContentHash), u64>,
}

impl UploadQueue {
    /// Notes where the uploads of these contents start (the hub's
    /// `Resume`, before the needs naming them).
    pub(crate) fn resume_at(&mut self, held: Vec<(RelPath, ContentHash, u64)>) {
        if self.resume.len() + held.len() > MAX_RESUMES {
            self.resume.clear();
        }
        for (path, hash, offset) in held {
            self.resume.insert((path, hash), offset);
        }
    }

    /// Where the upload of this content starts: the offset the hub said it
    /// holds (at most the size), else 0.
    fn take_resume(&mut self, path: &RelPath, hash: ContentHash, size: u64) -> u64 {
        if self.resume.is_empty() {
            return 0;
        }
        self.resume
            .remove(&(path.clone(), hash))
            .filter(|o| *o <= size)
            .unwrap_or(0)
    }
}

/// A file the hub needs.
pub(super) struct UploadJob {
    file: FileToSend,
    client: HubClient,
}

/// The next batch: at least one job, then more while under the limits.
fn take_batch(queue: &mut VecDeque<UploadJob>) -> Vec<UploadJob> {
    let mut jobs = Vec::new();
    let mut bytes = 0u64;
    while let Some(job) = queue.front() {
        let size = job.file.size - job.file.offset;
        if !jobs.is_empty() && (jobs.len() >= BATCH_FILES || bytes + size > BATCH_BYTES) {
            break;
        }
        bytes += size;
        jobs.extend(queue.pop_front());
    }
    jobs
}

/// Reads a batch's files into bundles of parts for the stream (blocking);
/// returns, per file, why it failed here (if it did).
pub(crate) fn read_batch(
    root: &Path,
    files: &[FileToSend],
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
/// file's bytes from its offset on, in chunks (a resume reads only the rest).
/// A file that is gone, or no longer of the size announced, fails here
/// (`SourceChanged`: it is rescanned).
fn read_files(
    root: &Path,
    files: &[FileToSend],
    stream: &mut Bundler,
    progress: &ProgressHandle,
) -> Vec<Option<TransferFailure>> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::PermissionsExt;
    // Each file reached from the root, never through a symlink (nor one
    // swapped in since the scan), never blocking on a FIFO.
    let Ok(dir) = WorkspaceDir::open(root) else {
        return vec![Some(TransferFailure::SourceChanged); files.len()];
    };
    let mut out = vec![None; files.len()];
    for (i, f) in files.iter().enumerate() {
        let (path, hash, size) = (&f.path, &f.hash, &f.size);
        let opened = dir.open_read(path).and_then(|f| {
            let meta = f.metadata()?;
            Ok((f, meta))
        });
        let mut offset = f.offset.min(*size);
        let opened = opened.and_then(|(mut file, meta)| {
            if offset > 0 {
                file.seek(SeekFrom::Start(offset))?;
            }
            Ok((file, meta))
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
            offset,
        };
        if !stream.send(msg) {
            return out; // the stream is gone: its error decides
        }
        // The prefix the hub holds counts as done.
        progress.uploaded(offset);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    /// Reads a batch on a thread; returns its parts and failures.
    fn read(root: &Path, files: Vec<FileToSend>) -> (Vec<Part>, Vec<Option<TransferFailure>>) {
        let (tx, mut rx) = mpsc::channel(READ_AHEAD);
        let root = root.to_path_buf();
        let reader =
            std::thread::spawn(move || read_batch(&root, &files, tx, &ProgressHandle::new(None)));
        let mut parts = Vec::new();
        while let Some(bundle) = rx.blocking_recv() {
            parts.extend(bundle);
        }
        (parts, reader.join().unwrap())
    }

    /// A resumed file states its offset in its header and is read from
    /// there only; the others start at 0.
    #[test]
    fn a_resumed_file_is_read_from_its_offset_only() {
        let ws = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(ws.path().join("big"), &data).unwrap();
        std::fs::write(ws.path().join("small"), b"small").unwrap();
        let file = |path: &str, content: &[u8], offset| FileToSend {
            path: p(path),
            hash: ContentHash::of(content),
            size: content.len() as u64,
            offset,
        };
        let offset = 300_001;
        let files = vec![file("big", &data, offset), file("small", b"small", 0)];
        let (parts, failures) = read(ws.path(), files);
        assert_eq!(failures, vec![None, None]);
        let mut sent: Vec<(String, u64, Vec<u8>)> = Vec::new();
        for part in parts {
            match part {
                Part::Header { path, offset, .. } => sent.push((path.to_string(), offset, vec![])),
                Part::Data { offset, data } => {
                    let (_, start, bytes) = sent.last_mut().unwrap();
                    assert_eq!(offset, *start + bytes.len() as u64, "in order");
                    bytes.extend_from_slice(&data);
                }
            }
        }
        assert_eq!(
            sent,
            vec![
                ("big".into(), offset, data[offset as usize..].to_vec()),
                ("small".into(), 0, b"small".to_vec()),
            ]
        );
    }

    /// The hub's offsets wait for their needs, only for that content and
    /// never past the size; they are bounded.
    #[test]
    fn resume_offsets_are_taken_by_their_need() {
        let mut q = UploadQueue::default();
        let h = ContentHash::of(b"x");
        q.resume_at(vec![(p("a"), h, 10), (p("b"), h, 99)]);
        assert_eq!(q.take_resume(&p("a"), ContentHash::of(b"y"), 50), 0);
        assert_eq!(q.take_resume(&p("a"), h, 50), 10);
        assert_eq!(q.take_resume(&p("a"), h, 50), 0, "taken once");
        assert_eq!(q.take_resume(&p("b"), h, 50), 0, "past the size");
        q.resume_at(
            (0..MAX_RESUMES + 1)
                .map(|i| (p(&format!("f{i}")), h, 1))
                .collect(),
        );
        assert!(q.resume.len() <= MAX_RESUMES + 1);
        q.resume_at(vec![(p("z"), h, 1)]);
        assert!(q.resume.len() <= MAX_RESUMES, "{}", q.resume.len());
    }
}
