//! The mirror drivers at the hub: loading, idle close, bounded opens.

use std::sync::Arc;
use std::time::Duration;

use ganglion_core::time::ManualClock;
use ganglion_core::{NodeId, RelPath, Timestamp};
use ganglion_mirror::index::{Batch, SharedIndex};
use ganglion_mirror::locks::LockRegistry;
use ganglion_mirror::receive::Receiver;
use ganglion_mirror::{
    ContentHash, Entry, EntryKind, ImmutablePaths, Notice, Replica, SinkEngine, Version,
};
use ganglion_store::{SqliteMirrorIndex, SqliteStore, Store};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::driver::{Driver, DriverEvent, MirrorStatus, NEEDS_PER_MESSAGE, OpenMirrors, Start};
use super::{EAGER_OPENS, Mirrors};
use crate::metrics::Metrics;
use crate::registry::Registry;

fn file(path: &str, data: &[u8], seq: u64) -> Entry {
    Entry {
        path: RelPath::parse(path).unwrap(),
        kind: EntryKind::File,
        size: data.len() as u64,
        mtime_ns: 1,
        mode: 0o100644,
        inode: seq,
        dev: 1,
        symlink_target: None,
        hash: Some(ContentHash::of(data)),
        seq,
        version: Version {
            origin: Replica::Node,
            seq,
        },
    }
}

/// Two files (5 + 3 bytes), everything up to seq 7 applied.
async fn seeded(index: &SharedIndex, node: &str) {
    let batch = Batch {
        upserts: vec![file("a", b"hello", 6), file("b", b"abc", 7)],
        peer_seq: Some(7),
        ..Batch::default()
    };
    index.apply(node, &batch).await.unwrap();
}

async fn ask_status(tx: &mpsc::UnboundedSender<DriverEvent>) -> MirrorStatus {
    let (reply, rx) = oneshot::channel();
    tx.send(DriverEvent::Status { reply }).unwrap();
    rx.await.unwrap()
}

/// A driver for mirror `n1` of node `node_id` over `index`, its mirror in
/// `dir`, loading entries with `loader`; returns its event sender and task.
async fn start_driver(
    dir: &std::path::Path,
    index: &SharedIndex,
    node_id: NodeId,
    registry: Registry,
    loader: super::driver::Loader,
) -> (
    mpsc::UnboundedSender<DriverEvent>,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let receiver = Receiver::open(
        dir,
        "n1",
        index.clone(),
        LockRegistry::new(Duration::from_secs(60)),
    )
    .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let start = Start {
        summary: index.summary("n1").await.unwrap(),
        immutable: ImmutablePaths::default(),
        loader,
        idle_close: Duration::from_secs(3600),
        open: OpenMirrors::default(),
        worker: crate::worker::Supervisor::default().register("mirror:n1".into()),
    };
    let driver = Driver::new(
        ("n1".into(), node_id),
        receiver,
        registry,
        Arc::new(ManualClock::new(Timestamp(0))),
        tx.clone(),
        start,
    );
    (tx, tokio::spawn(driver.run(rx)))
}

#[tokio::test]
async fn answers_attach_and_status_before_the_entries_are_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let index: SharedIndex = Arc::new(SqliteMirrorIndex::open_in_memory().await.unwrap());
    seeded(&index, "n1").await;
    let synced = Timestamp(1_780_000_000_000);
    index.acknowledge("n1", 7, synced).await.unwrap();
    let (engine_tx, engine_rx) = oneshot::channel();
    let slot = Mutex::new(Some(engine_rx));
    let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = loads.clone();
    let loader = Box::new(move |_| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        slot.lock().take().expect("loaded once")
    });
    let registry = Registry::new(Metrics::new());
    let (tx, running) =
        start_driver(dir.path(), &index, NodeId::generate(), registry, loader).await;
    let loads_now = || loads.load(std::sync::atomic::Ordering::SeqCst);

    let (reply, applied) = oneshot::channel();
    tx.send(DriverEvent::Connected {
        reply,
        replica: String::new(),
    })
    .unwrap();
    assert_eq!(
        applied.await.unwrap(),
        7,
        "attach answered from the summary"
    );
    let s = ask_status(&tx).await;
    assert_eq!((s.files, s.bytes, s.pending, s.applied_seq), (2, 8, 0, 7));
    assert_eq!(
        s.last_sync,
        Some(synced.to_rfc3339()),
        "the last sync as the index keeps it"
    );
    assert_eq!(loads_now(), 0, "nothing needed the entries yet");

    // A change waits for the entries (whose load it starts), as pending.
    let c = file("c", b"new", 8);
    tx.send(DriverEvent::Notices(vec![Notice::Upsert(c)]))
        .unwrap();
    let s = ask_status(&tx).await;
    assert_eq!((s.files, s.pending, s.in_flight), (2, 1, 0));
    assert_eq!(loads_now(), 1);

    let l = index.load("n1").await.unwrap();
    let engine = SinkEngine::new(l.entries, l.peer_seq, ImmutablePaths::default());
    engine_tx.send(Box::new(engine)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut s = ask_status(&tx).await;
    while s.in_flight == 0 && tokio::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        s = ask_status(&tx).await;
    }
    assert_eq!(
        (s.files, s.bytes, s.pending, s.in_flight, s.applied_seq),
        (2, 8, 1, 1, 7),
        "once loaded, the held notice is being fetched"
    );
    assert_eq!(loads_now(), 1);
    drop(tx);
    running.abort();
}

/// Many notices at once (a first scan; the held notices a load releases)
/// ask for their content in messages of at most NEEDS_PER_MESSAGE needs,
/// all of them, in the order of the notices.
#[tokio::test]
async fn needs_go_to_the_node_in_bounded_messages() {
    use crate::registry::ToNode;
    let dir = tempfile::tempdir().unwrap();
    let index: SharedIndex = Arc::new(SqliteMirrorIndex::open_in_memory().await.unwrap());
    let registry = Registry::new(Metrics::new());
    let node_id = NodeId::generate();
    let name = ganglion_core::NodeName::parse("n1").unwrap();
    let mut conn = registry.register(node_id.clone(), name, None, Timestamp(0));
    let loader = Box::new(|i| {
        let (engine_tx, engine_rx) = oneshot::channel();
        let _ = engine_tx.send(Box::new(SinkEngine::new(Vec::new(), 0, i)));
        engine_rx
    });
    let (tx, running) = start_driver(dir.path(), &index, node_id, registry.clone(), loader).await;
    let (reply, _) = oneshot::channel();
    tx.send(DriverEvent::Connected {
        reply,
        replica: String::new(),
    })
    .unwrap();
    let files = NEEDS_PER_MESSAGE * 2 + 100;
    let notices = (1..=files)
        .map(|i| {
            Notice::Upsert(file(
                &format!("f{i:05}"),
                format!("{i}").as_bytes(),
                i as u64,
            ))
        })
        .collect();
    tx.send(DriverEvent::Notices(notices)).unwrap();
    let mut sizes = Vec::new();
    let mut paths = Vec::new();
    while paths.len() < files {
        let msg = tokio::time::timeout(Duration::from_secs(10), conn.rx.recv())
            .await
            .expect("needs arrive")
            .expect("connection open");
        if let ToNode::Mirror(ganglion_mirror::MirrorToNode::Needs(needs)) = msg {
            sizes.push(needs.len());
            paths.extend(needs.into_iter().map(|(p, _)| p.to_string()));
        }
    }
    assert!(
        sizes.iter().all(|&n| n <= NEEDS_PER_MESSAGE),
        "message sizes {sizes:?}"
    );
    let want: Vec<String> = (1..=files).map(|i| format!("f{i:05}")).collect();
    assert_eq!(paths, want);
    drop(tx);
    running.abort();
}

async fn mirrors(dir: &std::path::Path) -> (Arc<Mirrors>, NodeId) {
    let store = SqliteStore::in_memory().await.unwrap();
    let node = crate::test_support::joined_node(&store, "n1").await;
    let store: Arc<dyn Store> = Arc::new(store);
    let metrics = Metrics::new();
    let m = Mirrors::open(
        store,
        dir.to_path_buf(),
        Registry::new(metrics.clone()),
        Arc::new(ManualClock::new(Timestamp(0))),
        metrics,
        crate::worker::Supervisor::default(),
    )
    .await
    .unwrap();
    (m, node.id)
}

async fn wait_closed(m: &Mirrors, node: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while m.is_open(node) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "driver never closed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn idle_driver_of_an_absent_node_closes_and_reopens_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let (m, id) = mirrors(dir.path()).await;
    seeded(m.index(), "n1").await;
    m.set_idle_close(Duration::from_millis(50));

    let s = m.status("n1", &id).await.unwrap();
    assert_eq!((s.files, s.bytes, s.applied_seq), (2, 8, 7));
    assert!(m.is_open("n1"));
    wait_closed(&m, "n1").await;
    assert!(m.open_receivers().is_empty(), "directory handles released");

    // Reopened by the next use, from the index: same state.
    let s = m.status("n1", &id).await.unwrap();
    assert_eq!((s.files, s.bytes, s.applied_seq), (2, 8, 7));
    assert_eq!(m.attach("n1", &id, String::new()).await.unwrap(), 7);
    // Attached: stays open however long it idles.
    let s = m.status("n1", &id).await.unwrap();
    assert_eq!((s.files, s.pending), (2, 0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(m.is_open("n1"), "a connected node's driver stays");
    m.detach("n1");
    wait_closed(&m, "n1").await;
    assert_eq!(m.attach("n1", &id, String::new()).await.unwrap(), 7);
}

#[tokio::test]
async fn hub_start_opens_a_bounded_number_of_mirrors() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = mirrors(dir.path()).await;
    let mut names = vec!["n1".to_owned()];
    for i in 0..EAGER_OPENS + 5 {
        let name = format!("m{i:03}");
        crate::test_support::joined_node(m.store_for_tests(), &name).await;
        names.push(name);
    }
    for name in &names {
        seeded(m.index(), name).await;
    }
    m.open_known().await;
    let open = names.iter().filter(|n| m.is_open(n)).count();
    assert_eq!(open, EAGER_OPENS);
}

/// Events racing a driver that closes for idleness are never lost: each
/// either reaches the closing driver (which then stays) or a new one.
#[tokio::test]
async fn no_event_is_lost_to_a_closing_driver() {
    let dir = tempfile::tempdir().unwrap();
    let (m, id) = mirrors(dir.path()).await;
    seeded(m.index(), "n1").await;
    m.set_idle_close(Duration::from_millis(1));
    for _ in 0..200 {
        let s = m.status("n1", &id).await.unwrap();
        assert_eq!(s.applied_seq, 7);
        tokio::task::yield_now().await;
    }
}

/// A panic while the open mirrors are locked (one request's bug) does not
/// poison them: later requests of every node go on.
#[tokio::test]
async fn a_panic_holding_the_open_mirrors_does_not_stop_later_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (m, id) = mirrors(dir.path()).await;
    seeded(m.index(), "n1").await;
    assert_eq!(m.status("n1", &id).await.unwrap().applied_seq, 7);
    let held = m.clone();
    let panicked = std::thread::spawn(move || {
        let _open = held.open.lock();
        panic!("boom");
    })
    .join();
    assert!(panicked.is_err());
    assert_eq!(m.status("n1", &id).await.unwrap().applied_seq, 7);
    assert!(m.is_open("n1"));
}

/// A driver that panics is listed with its error, the node's stream is
/// closed (it resends what the driver held), and a new driver runs from
/// the index under the same entry; a closed driver's entry goes.
#[tokio::test]
async fn a_panicking_driver_is_reported_and_restarted_from_the_index() {
    use ganglion_api::WorkerState;

    use crate::registry::CloseReason;
    let dir = tempfile::tempdir().unwrap();
    let (m, id) = mirrors(dir.path()).await;
    seeded(m.index(), "n1").await;
    let name = ganglion_core::NodeName::parse("n1").unwrap();
    let mut conn = m.registry.register(id.clone(), name, None, Timestamp(0));
    assert_eq!(m.attach("n1", &id, String::new()).await.unwrap(), 7);
    let listed = || {
        m.supervisor
            .statuses()
            .into_iter()
            .find(|s| s.name == "mirror:n1")
    };
    let before = listed().expect("an open driver is listed");
    assert!(
        matches!(before.state, WorkerState::Idle | WorkerState::Busy),
        "{before:?}"
    );
    assert_eq!(before.restarts, 0);

    m.set_idle_close(Duration::from_millis(50));
    m.send("n1", DriverEvent::Panic);
    conn.closed.wait_for(|c| c.is_some()).await.unwrap();
    assert_eq!(*conn.closed.borrow(), Some(CloseReason::MirrorRestarted));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = listed().expect("a failed driver stays listed");
        if s.state != WorkerState::Restarting && m.is_open("n1") {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never restarted: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(after.restarts, 1);
    assert_eq!(
        after.last_error.as_deref(),
        Some("panicked: injected fault")
    );
    let s = m.status("n1", &id).await.unwrap();
    assert_eq!((s.files, s.bytes, s.applied_seq), (2, 8, 7));

    // The restarted driver's node is away: it closes when idle, and its
    // entry goes with it.
    wait_closed(&m, "n1").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listed().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "entry never removed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `GET /api/v1/workers` of a running hub: a driver that panicked shows with
/// its restart and error, beside the fixed workers and the journal writer.
#[tokio::test]
async fn the_workers_endpoint_lists_a_restarted_driver_with_its_error() {
    use ganglion_api::{WorkerState, WorkerStatus};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let mut opts = crate::options::HubOptions::new(dir.path().to_path_buf());
    opts.grpc_addr = "127.0.0.1:0".parse().unwrap();
    opts.http_addr = "127.0.0.1:0".parse().unwrap();
    let hub = crate::hub::Hub::build(opts).await.unwrap();
    let mut handle = hub.handle();
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(hub.run(cancel.clone()));
    handle.ready().await;
    let token = crate::hub::read_admin_token(dir.path()).await.unwrap();
    let core = handle.core.clone();
    let node = crate::test_support::joined_node(core.store.as_ref(), "n1").await;
    seeded(core.mirrors.index(), "n1").await;
    assert_eq!(
        core.mirrors
            .status("n1", &node.id)
            .await
            .unwrap()
            .applied_seq,
        7
    );

    core.mirrors.send("n1", DriverEvent::Panic);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = core.supervisor.statuses();
        let driver = s.iter().find(|s| s.name == "mirror:n1");
        if driver.is_some_and(|d| d.restarts >= 1 && d.state != WorkerState::Restarting) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never restarted: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut http = tokio::net::TcpStream::connect(&handle.endpoints.http)
        .await
        .unwrap();
    let request = format!(
        "GET /api/v1/workers HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    http.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let workers: Vec<WorkerStatus> = serde_json::from_str(body).unwrap();
    let named = |n: &str| workers.iter().find(|w| w.name == n).cloned();
    let driver = named("mirror:n1").expect("the driver is listed");
    assert_eq!(driver.restarts, 1);
    assert_eq!(
        driver.last_error.as_deref(),
        Some("panicked: injected fault")
    );
    let journal = named("journal").expect("the journal writer is listed");
    assert!(
        matches!(journal.state, WorkerState::Idle | WorkerState::Busy),
        "{journal:?}"
    );
    assert!(named("mesh-monitor").is_some(), "{workers:?}");

    cancel.cancel();
    running.await.unwrap().unwrap();
}

/// A task of the driver that fails (a group commit that panicked) fails the
/// driver, which restarts like one that panicked.
#[tokio::test]
async fn a_failed_driver_task_restarts_the_driver() {
    use ganglion_api::WorkerState;
    let dir = tempfile::tempdir().unwrap();
    let (m, id) = mirrors(dir.path()).await;
    seeded(m.index(), "n1").await;
    assert_eq!(m.status("n1", &id).await.unwrap().applied_seq, 7);
    m.send(
        "n1",
        DriverEvent::Failed("group commit panicked: boom".into()),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = m.supervisor.statuses();
        let d = s.iter().find(|s| s.name == "mirror:n1");
        if d.is_some_and(|d| d.restarts == 1 && d.state != WorkerState::Restarting)
            && m.is_open("n1")
        {
            let d = d.unwrap();
            assert_eq!(d.last_error.as_deref(), Some("group commit panicked: boom"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never restarted: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(m.status("n1", &id).await.unwrap().applied_seq, 7);
}

/// A content the receiver holds a cut transfer of (found again by the
/// receiver the driver opens, as after a hub restart) is named with its
/// offset in a `Resume` sent before the needs asking for it; the others
/// are needed from 0.
#[tokio::test]
async fn the_offset_held_of_a_cut_transfer_goes_before_its_need() {
    use crate::registry::ToNode;
    use ganglion_mirror::MirrorToNode;
    use ganglion_mirror::receive::{Part, UploadStream};
    let dir = tempfile::tempdir().unwrap();
    let index: SharedIndex = Arc::new(SqliteMirrorIndex::open_in_memory().await.unwrap());
    let big = vec![7u8; 2 << 20];
    let held = 1 << 20;
    {
        let r = Receiver::open(dir.path(), "n1", index.clone(), LockRegistry::default()).unwrap();
        let mut s = UploadStream::new(r, ImmutablePaths::default());
        s.feed(Part::Header {
            path: RelPath::parse("big").unwrap(),
            hash: ContentHash::of(&big),
            size: big.len() as u64,
            mode: 0o644,
            offset: 0,
        })
        .unwrap();
        s.feed(Part::Data {
            offset: 0,
            data: big[..held].to_vec().into(),
        })
        .unwrap();
        // The stream breaks off: the transfer is kept as a partial.
    }
    let registry = Registry::new(Metrics::new());
    let node_id = NodeId::generate();
    let name = ganglion_core::NodeName::parse("n1").unwrap();
    let mut conn = registry.register(node_id.clone(), name, None, Timestamp(0));
    let loader = Box::new(|i| {
        let (engine_tx, engine_rx) = oneshot::channel();
        let _ = engine_tx.send(Box::new(SinkEngine::new(Vec::new(), 0, i)));
        engine_rx
    });
    let (tx, running) = start_driver(dir.path(), &index, node_id, registry.clone(), loader).await;
    let (reply, _) = oneshot::channel();
    tx.send(DriverEvent::Connected {
        reply,
        replica: String::new(),
    })
    .unwrap();
    let notices = vec![
        Notice::Upsert(file("small", b"small", 1)),
        Notice::Upsert(file("big", &big, 2)),
    ];
    tx.send(DriverEvent::Notices(notices)).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(10), conn.rx.recv())
            .await
            .expect("messages arrive")
            .expect("connection open");
        if let ToNode::Mirror(m) = msg {
            got.push(m);
        }
    }
    let p = |s: &str| RelPath::parse(s).unwrap();
    assert_eq!(
        got,
        vec![
            MirrorToNode::Resume(vec![(p("big"), ContentHash::of(&big), held as u64)]),
            MirrorToNode::Needs(vec![
                (p("small"), ContentHash::of(b"small")),
                (p("big"), ContentHash::of(&big)),
            ]),
        ]
    );
    drop(tx);
    running.abort();
}
