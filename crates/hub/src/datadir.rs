//! The hub's data dir: what lives where, and the files the hub publishes.
//!
//! ```text
//! DIR/hub.lock             held (flock) by the hub using the dir; names its pid
//! DIR/hub.db               the store (SQLite, WAL)
//! DIR/admin.token          the operator token, mode 0600 (its hash is in the store)
//! DIR/tls/hub.crt,hub.key  the self-signed certificate (key mode 0600)
//! DIR/run/endpoints.json   written when ready: bound addresses, fingerprint, pid
//! DIR/run/ports.json       the addresses bound last (kept after exit): a hub
//!                          told port 0 takes them again when they are free
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

/// `DIR/run/ports.json`: the addresses the hub bound last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub grpc: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
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
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("hub.lock")
    }
    pub fn endpoints(&self) -> PathBuf {
        self.root.join("run").join("endpoints.json")
    }
    pub fn ports(&self) -> PathBuf {
        self.root.join("run").join("ports.json")
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

    /// Takes the data dir for this process: an exclusive lock on
    /// `DIR/hub.lock`, held until the returned guard drops (or the process
    /// ends, however it ends: the kernel releases it). Refuses, changing
    /// nothing, when another process holds it. Nothing else in the dir may
    /// be written before this.
    pub fn lock(&self) -> Result<DataDirLock, LockError> {
        use std::io::{Read, Seek, Write};
        let path = self.lock_file();
        let io = |e| LockError::Io {
            path: path.clone(),
            source: e,
        };
        // Never truncated before the lock is ours: it names the holder.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::InUse {
                    path: self.root.clone(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file })
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

    /// The addresses bound last, if known.
    pub async fn last_ports(&self) -> Option<Ports> {
        let body = tokio::fs::read(self.ports()).await.ok()?;
        serde_json::from_slice(&body).ok()
    }

    pub async fn save_ports(&self, p: &Ports) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(p).expect("serialises");
        write_atomic(self.ports(), body, 0o644).await
    }

    pub async fn read_endpoints(&self) -> std::io::Result<Endpoints> {
        let body = tokio::fs::read(self.endpoints()).await?;
        serde_json::from_slice(&body).map_err(std::io::Error::other)
    }
}

/// The data dir's lock; released when dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the data dir {} is in use by another hub{}", path.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InUse { path: PathBuf, pid: Option<u32> },
    #[error("locking {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
