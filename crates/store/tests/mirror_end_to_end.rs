//! Every piece together, with a loopback in place of gRPC: scanner → node
//! engine → node index; hub engine → receiver → mirror + hub index. Restarts
//! of either side reload from the indexes and re-hash nothing. The indexes
//! are the SQLite ones, in files (hence here, above the sans-IO mirror crate).

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ganglion_core::RelPath;
use ganglion_mirror::engine::{
    Notice, Observation, SinkAction, SinkEngine, SinkEvent, SourceAction, SourceEngine, SourceEvent,
};
use ganglion_mirror::entry::ContentHash;
use ganglion_mirror::immutable::ImmutablePaths;
use ganglion_mirror::index::{Batch, MirrorIndex};
use ganglion_mirror::locks::LockRegistry;
use ganglion_mirror::receive::Receiver;
use ganglion_mirror::scan;
use ganglion_store::SqliteMirrorIndex;

const NODE: &str = "node1";
const WS: &str = "workspace";

struct World {
    root: PathBuf,
    node_index: SqliteMirrorIndex,
    node: SourceEngine,
    receiver: Receiver,
    hub: SinkEngine,
    locks: LockRegistry,
    to_hub: VecDeque<Notice>,
    to_node: VecDeque<SourceEvent>,
    batch: Vec<ganglion_mirror::engine::Op>,
    uploads: usize,
    notices: Vec<Notice>,
}

impl World {
    async fn start(root: &Path, data_dir: &Path, hub_db: &Path, node_db: &Path) -> Self {
        let node_index = SqliteMirrorIndex::open(node_db).await.unwrap();
        let node = SourceEngine::new(node_index.load(WS).await.unwrap().into_source_state());
        let hub_index = SqliteMirrorIndex::open(hub_db).await.unwrap();
        let loaded = hub_index.load(NODE).await.unwrap();
        let hub = SinkEngine::new(loaded.entries, loaded.peer_seq, ImmutablePaths::default());
        let locks = LockRegistry::default();
        let receiver = Receiver::open(data_dir, NODE, Arc::new(hub_index), locks.clone()).unwrap();
        Self {
            root: root.to_owned(),
            node_index,
            node,
            receiver,
            hub,
            locks,
            to_hub: VecDeque::new(),
            to_node: VecDeque::new(),
            batch: Vec::new(),
            uploads: 0,
            notices: Vec::new(),
        }
    }

    async fn connect(&mut self) {
        self.hub_event(SinkEvent::Connected).await;
        let hub_applied = self.hub.applied();
        self.node_event(SourceEvent::Connected { hub_applied })
            .await;
        self.pump().await;
    }

    /// Scans the workspace; returns how many files were hashed.
    async fn scan(&mut self) -> u64 {
        let prior: HashMap<RelPath, _> = self
            .node
            .entries()
            .map(|e| (e.path.clone(), e.clone()))
            .collect();
        let report = scan::scan(&self.root, &prior).unwrap();
        self.node_event(SourceEvent::Observed(Observation::Full(report.entries)))
            .await;
        self.pump().await;
        report.files_hashed
    }

    async fn node_event(&mut self, ev: SourceEvent) {
        for a in self.node.handle(ev) {
            match a {
                SourceAction::Record {
                    entries,
                    tombstones,
                    seq,
                } => {
                    self.node_index
                        .apply(WS, &Batch::record(entries, tombstones, seq))
                        .await
                        .unwrap();
                }
                SourceAction::Send(n) => self.to_hub.push_back(n),
                SourceAction::PersistAck { seq } => {
                    self.node_index.set_peer_seq(WS, seq).await.unwrap()
                }
                SourceAction::Upload { path, hash, size } => {
                    self.uploads += 1;
                    let data = std::fs::read(self.root.join(path.as_str())).unwrap();
                    let mode = self.node.entry(&path).unwrap().mode;
                    let imm = self.hub.immutable().clone();
                    let id = self
                        .receiver
                        .open_transfer(&path, hash, size, mode, &imm)
                        .unwrap();
                    for (i, c) in data.chunks(1000).enumerate() {
                        self.receiver.chunk(id, (i * 1000) as u64, c).unwrap();
                    }
                    let ev = match self.receiver.finish(id) {
                        Ok(_) => SinkEvent::Staged {
                            path: path.clone(),
                            hash,
                        },
                        Err(e) => SinkEvent::FetchFailed {
                            path: path.clone(),
                            hash,
                            failure: e.failure(),
                        },
                    };
                    Box::pin(self.hub_event(ev)).await;
                    self.to_node
                        .push_back(SourceEvent::UploadDone { path, hash });
                }
                SourceAction::Rescan { .. } => {}
            }
        }
    }

    async fn hub_event(&mut self, ev: SinkEvent) {
        for a in self.hub.handle(ev) {
            match a {
                SinkAction::Fetch { path, hash, .. } => {
                    self.to_node.push_back(SourceEvent::Need { path, hash })
                }
                SinkAction::Discard { path, hash } => self.receiver.discard(&path, hash),
                SinkAction::Apply(op) => self.batch.push(op),
                SinkAction::Ack { seq } => {
                    self.receiver.index().set_peer_seq(NODE, seq).await.unwrap();
                    self.to_node.push_back(SourceEvent::Ack { seq });
                }
                SinkAction::RetryLater { path, .. } => panic!("unexpected retry for {path}"),
            }
        }
    }

    async fn pump(&mut self) {
        loop {
            if let Some(n) = self.to_hub.pop_front() {
                self.notices.push(n.clone());
                self.hub_event(SinkEvent::Notice(n)).await;
            } else if let Some(ev) = self.to_node.pop_front() {
                self.node_event(ev).await;
            } else if !self.batch.is_empty() {
                let ops = self.hub.admit(std::mem::take(&mut self.batch));
                let out = self.receiver.commit(ops).await.unwrap();
                self.hub_event(SinkEvent::Committed {
                    done: out.done,
                    failed: out.failed,
                })
                .await;
            } else {
                return;
            }
        }
    }
}

fn mirror(data_dir: &Path) -> PathBuf {
    data_dir.join("mirrors").join(NODE)
}

#[tokio::test]
async fn a_workspace_is_mirrored_and_restarts_rehash_nothing() {
    let ws = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (root, hub_db, node_db) = (
        ws.path().join("ws"),
        data.path().join("hub.db"),
        ws.path().join("node.db"),
    );
    std::fs::create_dir_all(root.join("src/deep")).unwrap();
    std::fs::write(root.join("src/main.rs"), b"fn main() {}").unwrap();
    std::fs::write(root.join("src/deep/big.bin"), vec![42u8; 300_000]).unwrap();
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    symlink("/etc/passwd", root.join("escape")).unwrap();
    std::fs::create_dir_all(root.join(".ganglion")).unwrap();
    std::fs::write(root.join(".ganglion/state"), b"private").unwrap();

    let mut w = World::start(&root, data.path(), &hub_db, &node_db).await;
    w.connect().await;
    assert_eq!(w.scan().await, 4);
    let m = mirror(data.path());
    assert_eq!(
        std::fs::read(m.join("src/main.rs")).unwrap(),
        b"fn main() {}"
    );
    assert_eq!(
        std::fs::read(m.join("src/deep/big.bin")).unwrap().len(),
        300_000
    );
    assert_eq!(
        std::fs::metadata(m.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_link(m.join("escape")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(!m.join(".ganglion").exists());
    assert_eq!(w.uploads, 3, "the empty file needs no upload");
    assert!(w.receiver.verify().await.unwrap().is_empty());
    assert_eq!(w.node.pending(), 0);
    assert_eq!((w.locks.locks(), w.locks.in_flight()), (0, 0));

    // A rename moves what the hub has: no upload.
    std::fs::rename(root.join("src/deep/big.bin"), root.join("moved.bin")).unwrap();
    w.notices.clear();
    assert_eq!(
        w.scan().await,
        0,
        "a rename keeps the inode and stat: nothing re-hashed"
    );
    assert_eq!(w.uploads, 3);
    assert!(
        matches!(&w.notices[..], [Notice::Rename { .. }]),
        "{:?}",
        w.notices
    );
    assert!(m.join("moved.bin").exists() && !m.join("src/deep/big.bin").exists());

    // A deleted directory goes; a copy of known content is copied at the hub.
    std::fs::remove_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("again.rs"), b"fn main() {}").unwrap();
    w.scan().await;
    assert!(!m.join("src").exists());
    assert_eq!(std::fs::read(m.join("again.rs")).unwrap(), b"fn main() {}");
    let hub_seq = w.hub.applied();
    drop(w);

    // Both sides restart: nothing re-hashed, nothing resent.
    let mut w = World::start(&root, data.path(), &hub_db, &node_db).await;
    assert_eq!(w.hub.applied(), hub_seq);
    w.connect().await;
    assert!(w.notices.is_empty(), "reconnect resent {:?}", w.notices);
    assert_eq!(
        w.scan().await,
        0,
        "node restart with nothing changed: zero files re-hashed"
    );
    assert!(w.notices.is_empty());
    assert!(w.receiver.verify().await.unwrap().is_empty());
    assert_eq!(
        w.receiver
            .cat(&RelPath::parse("moved.bin").unwrap())
            .unwrap()
            .len(),
        300_000
    );
    assert_eq!(
        w.receiver
            .index()
            .get(NODE, &RelPath::parse("again.rs").unwrap())
            .await
            .unwrap()
            .unwrap()
            .hash,
        Some(ContentHash::of(b"fn main() {}"))
    );
}
