//! The `Download` stream, node side: the content of a hub-side write,
//! written to an incoming file while it is hashed; the hash is checked
//! against the change's before anything is applied.

use std::io::Write;

use ganglion_core::RelPath;
use ganglion_mirror::ContentHash;
use ganglion_proto::v1;

use super::client::HubClient;

/// Why a download did not produce the content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// The hub's mirror holds something else at the path by now: a newer
    /// change replaced this one and follows it.
    #[error("the hub no longer holds this content")]
    Gone,
    /// The bytes did not hash to the change's hash.
    #[error("downloaded content does not match its hash")]
    HashMismatch,
    /// The stream failed, or writing the incoming file did: try again.
    #[error("{0}")]
    Failed(String),
}

/// Downloads `path` with `hash` into `file` (synced before it returns).
pub(crate) async fn download(
    mut client: HubClient,
    path: &RelPath,
    hash: ContentHash,
    mut file: std::fs::File,
) -> Result<u64, DownloadError> {
    let req = v1::DownloadRequest {
        path: path.to_string(),
        hash: hash.to_string(),
    };
    let mut stream = match client.download(req).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Err(DownloadError::Gone),
        Err(s) => return Err(DownloadError::Failed(s.message().to_owned())),
    };
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                hasher.update(&chunk.data);
                bytes += chunk.data.len() as u64;
                file.write_all(&chunk.data)
                    .map_err(|e| DownloadError::Failed(format!("writing: {e}")))?;
            }
            Ok(None) => break,
            Err(s) if s.code() == tonic::Code::NotFound => return Err(DownloadError::Gone),
            Err(s) => return Err(DownloadError::Failed(s.message().to_owned())),
        }
    }
    if ContentHash::from(hasher.finalize()) != hash {
        return Err(DownloadError::HashMismatch);
    }
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(|e| DownloadError::Failed(e.to_string()))?
        .map_err(|e| DownloadError::Failed(format!("fsync: {e}")))?;
    Ok(bytes)
}
