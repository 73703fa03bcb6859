//! The `Upload` stream's adapter: wire messages become the mirror's
//! [`Part`]s (`crate::mirror::upload` writes them), and what the stream did
//! goes back as an `UploadResult`.
//!
//! Status codes (from [`crate::Error::grpc_code`]): `InvalidArgument` for a
//! malformed stream (no header first, a header with a bad path or hash);
//! `Aborted` when the stream breaks or idles out. A file that fails alone
//! does not fail the stream: it is listed in `UploadResult.failures`.

use futures::{Stream, StreamExt};
use ganglion_mirror::TransferFailure;
use ganglion_mirror::receive::Part;
use ganglion_proto::convert::mirror::{part, upload_result};
use ganglion_proto::v1;
use tonic::Streaming;

use crate::Error;
use crate::mirror::upload::Received;

/// The parts of an upload stream: a message that does not convert is an
/// `InvalidArgument`, a broken stream a cancelled transfer.
pub fn parts(stream: Streaming<v1::UploadChunk>) -> impl Stream<Item = Result<Part, Error>> {
    stream.map(|m| match m {
        Ok(chunk) => part(chunk).map_err(|e| Error::InvalidArgument(e.to_string())),
        Err(s) => Err(Error::Transfer {
            failure: TransferFailure::Cancelled,
            message: s.message().to_owned(),
        }),
    })
}

/// What an upload stream did, for the node: its files that failed, and why.
pub fn result(r: Received) -> v1::UploadResult {
    upload_result(r.bytes, r.failures)
}
