//! The hub's data dir: what lives where, and the files the hub publishes.
//!
//! ```text
//! DIR/hub.db               the store (SQLite, WAL)
//! DIR/admin.token          the operator token, mode 0600 (its hash is in the store)
//! DIR/tls/hub.crt,hub.key  the self-signed certificate (key mode 0600)
//! DIR/run/endpoints.json   written when ready: bound addresses, fingerprint, pid
//! DIR/mirrors/<node>/      node mirrors
//! ```

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

/// `DIR/run/endpoints.json`, as CONTRACT.md defines it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    pub grpc: String,
    pub http: String,
    pub cert_sha256: String,
    pub pid: u32,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("hub.db")
    }
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin.token")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
    pub fn endpoints(&self) -> PathBuf {
        self.root.join("run").join("endpoints.json")
    }
    pub fn mirrors(&self) -> PathBuf {
        self.root.join("mirrors")
    }

    /// Creates the directory tree (0700: it holds secrets).
    pub async fn create(&self) -> std::io::Result<()> {
        for dir in [self.root.clone(), self.root.join("run"), self.tls_dir()] {
            tokio::fs::create_dir_all(&dir).await?;
        }
        tokio::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700)).await?;
        tokio::fs::set_permissions(self.tls_dir(), std::fs::Permissions::from_mode(0o700)).await
    }

    /// Publishes the endpoints atomically (temp file, then rename), so a reader
    /// never sees a half-written file.
    pub async fn write_endpoints(&self, e: &Endpoints) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(e).expect("serialises");
        write_atomic(self.endpoints(), body, 0o644).await
    }

    pub async fn remove_endpoints(&self) {
        let _ = tokio::fs::remove_file(self.endpoints()).await;
    }

    pub async fn read_endpoints(&self) -> std::io::Result<Endpoints> {
        let body = tokio::fs::read(self.endpoints()).await?;
        serde_json::from_slice(&body).map_err(std::io::Error::other)
    }
}

/// Writes `body` to `path` through a temp file created with `mode`, then renames.
/// The file is never visible with looser permissions or partial content.
pub async fn write_atomic(path: PathBuf, body: Vec<u8>, mode: u32) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(std::io::Error::other)?
}
