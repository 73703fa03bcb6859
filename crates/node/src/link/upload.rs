//! The `Upload` stream, node side: a batch of files read into parts
//! (`crate::mirror`), converted to wire messages, and the hub's answer (or
//! the stream's status) turned into a failure per file.

use std::collections::HashMap;
use std::path::PathBuf;

use futures::StreamExt;
use ganglion_mirror::TransferFailure;
use ganglion_proto::convert::mirror::upload_failures;
use ganglion_proto::status::transfer_failure;
use ganglion_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::client::HubClient;
use crate::mirror::upload::{FileToSend, READ_AHEAD, read_batch};
use crate::progress::ProgressHandle;

/// Streams a batch of files on one `Upload` stream; returns, per file, why it
/// failed (if it did). The hub hashes each file as it arrives and checks it
/// against the hash announced: a file that changed since it was hashed here
/// fails there (`HashMismatch`) and is rescanned, so it is not hashed twice.
pub(crate) async fn upload_batch(
    mut client: HubClient,
    root: PathBuf,
    files: Vec<FileToSend>,
    progress: ProgressHandle,
) -> Vec<Option<TransferFailure>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let list = files.clone();
    let reader = tokio::task::spawn_blocking(move || read_batch(&root, &list, tx, &progress));
    let messages = ReceiverStream::new(rx).flat_map(|bundle: Vec<_>| {
        futures::stream::iter(bundle.into_iter().map(v1::UploadChunk::from))
    });
    let sent = client.upload(messages).await;
    let local = reader
        .await
        .unwrap_or_else(|_| vec![Some(TransferFailure::Io); files.len()]);
    match sent {
        Ok(resp) => {
            let remote: HashMap<(String, String), TransferFailure> =
                upload_failures(resp.into_inner()).into_iter().collect();
            files
                .iter()
                .zip(local)
                .map(|(f, local)| {
                    local.or_else(|| {
                        remote
                            .get(&(f.path.to_string(), f.hash.to_string()))
                            .copied()
                    })
                })
                .collect()
        }
        Err(status) => {
            let failure = transfer_failure(status.code());
            local.into_iter().map(|l| l.or(Some(failure))).collect()
        }
    }
}
