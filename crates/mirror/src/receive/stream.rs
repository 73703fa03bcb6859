//! One upload stream, which may carry many files: a header starts a file
//! (ending the one before), data parts follow in order. Batching small files
//! in one stream spares a stream and a lock round per file; each file still
//! stands alone: its bytes are hashed once, its hash is checked when it ends,
//! and a file that fails (hash mismatch, out-of-order data, refused path)
//! fails alone — its remaining data is skipped and the next header starts
//! afresh. Only data before any header breaks the stream. A header may
//! start its file at an offset (a resume of a cut transfer, see
//! `partial.rs`); one the receiver does not hold fails that file.
//!
//! Blocking (it writes): drive it from a blocking thread.

use ganglion_core::RelPath;

use super::{Error, Opening, Receiver, TransferId};
use crate::engine::TransferFailure;
use crate::entry::ContentHash;
use crate::immutable::ImmutablePaths;

/// One message of an upload stream, in domain terms.
#[derive(Debug)]
pub enum Part {
    /// Starts a file, whose data begins at `offset`: 0, or the bytes the
    /// receiver said it holds of a cut transfer (a resume).
    Header {
        path: RelPath,
        hash: ContentHash,
        size: u64,
        mode: u32,
        offset: u64,
    },
    /// The next bytes of the current file, at `offset`.
    Data { offset: u64, data: bytes::Bytes },
}

/// How one file of a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOutcome {
    pub path: RelPath,
    pub hash: ContentHash,
    /// The staged size, or why the file failed.
    pub result: Result<u64, TransferFailure>,
}

/// A stream-level error: the stream cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("data before any header")]
    DataWithoutHeader,
}

enum Current {
    None,
    Open {
        id: TransferId,
        path: RelPath,
        hash: ContentHash,
        size: u64,
    },
    /// The file failed; its remaining data is skipped.
    Failed,
}

/// The receiving end of one upload stream.
pub struct UploadStream {
    receiver: Receiver,
    immutable: ImmutablePaths,
    current: Current,
    /// Bytes not sent again thanks to resumes, since the last take.
    resumed: u64,
}

impl UploadStream {
    pub fn new(receiver: Receiver, immutable: ImmutablePaths) -> Self {
        Self {
            receiver,
            immutable,
            current: Current::None,
            resumed: 0,
        }
    }

    /// Bytes the stream's resumed files did not send again (the prefixes the
    /// receiver held), since the last call.
    pub fn take_resumed(&mut self) -> u64 {
        std::mem::take(&mut self.resumed)
    }

    /// Feeds one part; returns the outcomes of files that ended (the previous
    /// file when a header comes, a file failing on this part).
    pub fn feed(&mut self, part: Part) -> Result<Vec<FileOutcome>, StreamError> {
        let mut out = Vec::new();
        match part {
            Part::Header {
                path,
                hash,
                size,
                mode,
                offset,
            } => {
                out.extend(self.end_current());
                let opening = Opening {
                    path: &path,
                    hash,
                    size,
                    mode,
                    offset,
                };
                match self.receiver.open_transfer_at(opening, &self.immutable) {
                    Ok(id) => {
                        self.resumed += offset;
                        self.current = Current::Open {
                            id,
                            path,
                            hash,
                            size,
                        }
                    }
                    Err(e) => {
                        self.current = Current::Failed;
                        out.push(failed(path, hash, &e));
                    }
                }
            }
            Part::Data { offset, data } => match &self.current {
                Current::None => return Err(StreamError::DataWithoutHeader),
                Current::Failed => {}
                Current::Open { id, path, hash, .. } => {
                    // On error the receiver has already dropped the transfer.
                    if let Err(e) = self.receiver.chunk(*id, offset, &data) {
                        out.push(failed(path.clone(), *hash, &e));
                        self.current = Current::Failed;
                    }
                }
            },
        }
        Ok(out)
    }

    /// The stream ended cleanly: ends the last file.
    pub fn finish(mut self) -> Option<FileOutcome> {
        self.end_current()
    }

    /// The stream broke off: its open file is cut (a resumable one kept as
    /// a partial: blocking, an fsync) and reported `Cancelled`, so that it
    /// is fetched again, from what is held.
    pub fn cut(mut self) -> Option<FileOutcome> {
        match std::mem::replace(&mut self.current, Current::None) {
            Current::Open { id, path, hash, .. } => {
                self.receiver.abort(id);
                Some(FileOutcome {
                    path,
                    hash,
                    result: Err(TransferFailure::Cancelled),
                })
            }
            Current::None | Current::Failed => None,
        }
    }

    fn end_current(&mut self) -> Option<FileOutcome> {
        match std::mem::replace(&mut self.current, Current::None) {
            Current::Open {
                id,
                path,
                hash,
                size,
            } => Some(match self.receiver.finish(id) {
                Ok(_) => FileOutcome {
                    path,
                    hash,
                    result: Ok(size),
                },
                Err(e) => failed(path, hash, &e),
            }),
            Current::None | Current::Failed => None,
        }
    }
}

impl Drop for UploadStream {
    /// A stream that broke off leaves nothing staged for its open file.
    fn drop(&mut self) {
        if let Current::Open { id, .. } = self.current {
            self.receiver.abort(id);
        }
    }
}

fn failed(path: RelPath, hash: ContentHash, e: &Error) -> FileOutcome {
    FileOutcome {
        path,
        hash,
        result: Err(e.failure()),
    }
}
