//! The node's state dir: `node.json` (hub address, pinned fingerprint, id,
//! name, workspace) and `credential`. The dir is 0700 and both files 0600; a
//! node refuses to start from a state dir others can read or write.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ganglion_core::Secret;
use serde::{Deserialize, Serialize};

use crate::Error;

/// What a joined node remembers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedNode {
    pub hub_addr: String,
    pub cert_sha256: String,
    pub node_id: String,
    pub name: String,
    pub workspace: PathBuf,
}

pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn node_file(&self) -> PathBuf {
        self.path.join("node.json")
    }

    fn credential_file(&self) -> PathBuf {
        self.path.join("credential")
    }

    pub fn is_joined(&self) -> bool {
        self.credential_file().exists() || self.node_file().exists()
    }

    fn problem(&self, problem: impl Into<String>) -> Error {
        Error::StateDir {
            path: self.path.clone(),
            problem: problem.into(),
        }
    }

    /// Checks, before an invite is redeemed (it is single use), that a node
    /// can be joined here and then run: the dir holds no joined node, is (or
    /// can be made) a directory of this user, and neither lies in the
    /// workspace nor contains it (tasks write the workspace; the sandbox
    /// refuses that layout at start). Writes nothing.
    pub fn check_before_join(&self, workspace: &Path) -> Result<(), Error> {
        if self.is_joined() {
            return Err(self.problem("already holds a joined node (use `ganglion node start`)"));
        }
        let workspace = std::fs::canonicalize(workspace).map_err(|e| Error::Workspace {
            path: workspace.to_path_buf(),
            problem: format!("cannot be resolved: {e}"),
        })?;
        if !workspace.is_dir() {
            return Err(Error::Workspace {
                path: workspace,
                problem: "is not a directory".into(),
            });
        }
        let resolved = self.resolve()?;
        if resolved.starts_with(&workspace) || workspace.starts_with(&resolved) {
            return Err(self.problem(format!(
                "overlaps the workspace {}: tasks could reach the node's credential (choose a state dir outside the workspace)",
                workspace.display()
            )));
        }
        Ok(())
    }

    /// The state dir's absolute, symlink-free path, whether or not it exists
    /// yet: its nearest existing ancestor resolved, the rest appended. The
    /// dir itself, if it exists, must be a directory of this user; else the
    /// ancestor must be a directory.
    fn resolve(&self) -> Result<PathBuf, Error> {
        use std::path::Component;
        let abs = std::path::absolute(&self.path)
            .map_err(|e| self.problem(format!("cannot be resolved: {e}")))?;
        let mut existing = abs.as_path();
        let mut rest = Vec::new();
        let meta = loop {
            match std::fs::metadata(existing) {
                Ok(m) => break m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let (Some(parent), Some(Component::Normal(name))) =
                        (existing.parent(), existing.components().next_back())
                    else {
                        return Err(self.problem(format!("cannot be resolved: {e}")));
                    };
                    rest.push(name.to_owned());
                    existing = parent;
                }
                Err(e) => return Err(self.problem(format!("cannot be read: {e}"))),
            }
        };
        if !meta.is_dir() {
            let what = if rest.is_empty() {
                "is not a directory".to_owned()
            } else {
                format!("cannot be made: {} is not a directory", existing.display())
            };
            return Err(self.problem(what));
        }
        if rest.is_empty() && meta.uid() != current_uid() {
            return Err(self.problem(format!(
                "is owned by uid {}, not by this user ({})",
                meta.uid(),
                current_uid()
            )));
        }
        let mut resolved = std::fs::canonicalize(existing)
            .map_err(|e| self.problem(format!("cannot be resolved: {e}")))?;
        resolved.extend(rest.iter().rev());
        Ok(resolved)
    }

    /// Creates the dir (0700) for a node about to join; refuses one that
    /// already holds a joined node.
    pub fn create(&self) -> Result<(), Error> {
        if self.is_joined() {
            return Err(self.problem("already holds a joined node (use `ganglion node start`)"));
        }
        std::fs::create_dir_all(&self.path)?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700))?;
        Ok(())
    }

    pub fn save(&self, state: &JoinedNode, credential: &Secret) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(state).expect("serialises");
        write_private(
            &self.credential_file(),
            format!("{}\n", credential.encode()).as_bytes(),
        )?;
        write_private(&self.node_file(), &json)?;
        Ok(())
    }

    /// Loads a joined node, after checking the permissions of the dir and files.
    pub fn load(&self) -> Result<(JoinedNode, Secret), Error> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| self.problem(format!("cannot be read: {e}")))?;
        if !meta.is_dir() {
            return Err(self.problem("is not a directory"));
        }
        self.check_private(&self.path, &meta, 0o700)?;
        let node_file = self.node_file();
        let cred_file = self.credential_file();
        for f in [&node_file, &cred_file] {
            let meta = std::fs::symlink_metadata(f).map_err(|e| {
                self.problem(format!(
                    "has no usable {}: {e} (was this node joined?)",
                    file_name(f)
                ))
            })?;
            if !meta.is_file() {
                return Err(self.problem(format!("{} is not a regular file", file_name(f))));
            }
            self.check_private(f, &meta, 0o600)?;
        }
        let state: JoinedNode =
            serde_json::from_slice(&std::fs::read(&node_file)?).map_err(|e| Error::Corrupt {
                path: node_file.clone(),
                reason: e.to_string(),
            })?;
        let cred_text = std::fs::read_to_string(&cred_file).map_err(|e| Error::Corrupt {
            path: cred_file.clone(),
            reason: e.to_string(),
        })?;
        let credential = Secret::decode(&cred_text).map_err(|e| Error::Corrupt {
            path: cred_file.clone(),
            reason: e.to_string(),
        })?;
        let fp_ok = state.cert_sha256.len() == 64
            && state.cert_sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !fp_ok {
            let reason = "certificate fingerprint is not 64 hex digits".into();
            return Err(Error::Corrupt {
                path: node_file,
                reason,
            });
        }
        Ok((state, credential))
    }

    fn check_private(&self, path: &Path, meta: &std::fs::Metadata, want: u32) -> Result<(), Error> {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(self.problem(format!(
                "has {} with mode {mode:o}: it must not be accessible to group or others (chmod {want:o} {})",
                file_name(path),
                path.display()
            )));
        }
        // SAFETY-free: geteuid via libc is safe to call; no memory involved.
        let uid = current_uid();
        if meta.uid() != uid {
            return Err(self.problem(format!(
                "{} is owned by uid {}, not by this user ({uid})",
                file_name(path),
                meta.uid()
            )));
        }
        Ok(())
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

#[allow(unsafe_code)]
pub(crate) fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Writes a 0600 file through a temp file and a rename (never visible with
/// looser permissions or half-written).
fn write_private(path: &Path, body: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ws: &Path) -> JoinedNode {
        JoinedNode {
            hub_addr: "127.0.0.1:1".into(),
            cert_sha256: "ab".repeat(32),
            node_id: "nd_1".into(),
            name: "n1".into(),
            workspace: ws.to_path_buf(),
        }
    }

    #[test]
    fn saves_private_files_and_loads_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        dir.create().unwrap();
        let secret = Secret::generate();
        dir.save(&sample(tmp.path()), &secret).unwrap();
        let (state, cred) = dir.load().unwrap();
        assert_eq!(state, sample(tmp.path()));
        assert_eq!(cred, secret);
        let mode = std::fs::metadata(dir.path().join("credential"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            matches!(dir.create(), Err(Error::StateDir { .. })),
            "refuses to join twice"
        );
    }

    #[test]
    fn a_join_is_checked_against_the_workspace_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        std::os::unix::fs::symlink(&ws, tmp.path().join("link")).unwrap();
        std::fs::write(tmp.path().join("file"), "").unwrap();
        let refused = |state: &str, why: &str| {
            let existed = tmp.path().join(state).exists();
            let dir = StateDir::new(tmp.path().join(state));
            let e = dir.check_before_join(&ws).unwrap_err().to_string();
            assert!(e.contains(why), "{state}: {e}");
            assert_eq!(tmp.path().join(state).exists(), existed, "{state} created");
        };
        refused("ws/state", "overlaps the workspace");
        refused("ws/a/b/state", "overlaps the workspace");
        refused("link/state", "overlaps the workspace");
        refused("ws", "overlaps the workspace");
        refused(".", "overlaps the workspace");
        refused("file/state", "Not a directory");
        refused("file", "is not a directory");
        let e = StateDir::new(tmp.path().join("state"))
            .check_before_join(&tmp.path().join("nowhere"))
            .unwrap_err();
        assert!(matches!(e, Error::Workspace { .. }), "{e}");
        let ok = StateDir::new(tmp.path().join("state/inner"));
        ok.check_before_join(&ws).unwrap();
        assert!(!tmp.path().join("state").exists(), "nothing written");
        ok.create().unwrap();
        ok.save(&sample(&ws), &Secret::generate()).unwrap();
        let e = ok.check_before_join(&ws).unwrap_err().to_string();
        assert!(e.contains("already holds a joined node"), "{e}");
    }

    #[test]
    fn refuses_loose_permissions_and_corrupt_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        dir.create().unwrap();
        dir.save(&sample(tmp.path()), &Secret::generate()).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = dir.load().unwrap_err().to_string();
        assert!(e.contains("mode 755"), "{e}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let cred = dir.path().join("credential");
        std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(dir.load().unwrap_err().to_string().contains("mode 644"));
        std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&cred, "garbage!").unwrap();
        assert!(matches!(dir.load(), Err(Error::Corrupt { .. })));
    }
}
