//! Building and running the hub, with an ordered, time-bounded shutdown:
//! stop accepting → close node streams → stop workers → close the store.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ganglion_core::secret::Purpose;
use ganglion_core::time::SharedClock;
use ganglion_core::{Secret, SystemClock};
use ganglion_store::{SqliteStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::Error;
use crate::accept::{AcceptLimits, HttpListener};
use crate::auth::{Authenticator, FailureLimiter};
use crate::datadir::{DataDir, DataDirLock, Endpoints, Ports, write_atomic};
use crate::grpc::{AuthLayer, HubService};
use crate::invites::Invites;
use crate::metrics::Metrics;
use crate::monitor::{MeshMonitor, StatusSink, StatusWriter};
use crate::nodes::Nodes;
use crate::options::HubOptions;
use crate::registry::{CloseReason, Registry};
use crate::tasks::Tasks;
use crate::tls::TlsIdentity;
use crate::worker::{Supervisor, Worker};

/// Time allowed for node streams and HTTP requests to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(4);
/// Time allowed for workers to stop at shutdown.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 flow control of the gRPC server: per stream (one upload) and per
/// connection (one node), and the largest DATA frame a node may send.
const UPLOAD_STREAM_WINDOW: u32 = 4 << 20;
const UPLOAD_CONNECTION_WINDOW: u32 = 16 << 20;
const MAX_FRAME: u32 = 256 << 10;

/// The hub's shared parts, used by the gRPC and HTTP handlers.
pub struct HubCore {
    pub store: Arc<dyn Store>,
    pub auth: Arc<Authenticator>,
    pub invites: Arc<Invites>,
    pub nodes: Nodes,
    pub registry: Registry,
    pub tasks: Arc<Tasks>,
    pub mirrors: Arc<crate::mirror::Mirrors>,
    pub metrics: Metrics,
    pub supervisor: Supervisor,
    pub clock: SharedClock,
}

pub struct Hub {
    /// Held from before anything is written until the hub has stopped.
    lock: DataDirLock,
    core: Arc<HubCore>,
    options: HubOptions,
    data_dir: DataDir,
    tls: TlsIdentity,
    grpc: TcpListener,
    http: TcpListener,
    endpoints: Endpoints,
    workers: Vec<Box<dyn Worker>>,
    status: StatusSink,
    ready: watch::Sender<bool>,
}

/// A cheap handle on a built hub: its parts, endpoints and readiness.
#[derive(Clone)]
pub struct HubHandle {
    pub core: Arc<HubCore>,
    pub endpoints: Endpoints,
    pub data_dir: DataDir,
    ready: watch::Receiver<bool>,
}

impl HubHandle {
    /// Resolves once the hub serves (endpoints published).
    pub async fn ready(&mut self) {
        let _ = self.ready.wait_for(|r| *r).await;
    }
}

async fn ensure_admin_token(
    dir: &DataDir,
    store: &dyn Store,
    clock: &SharedClock,
) -> Result<(), Error> {
    let path = dir.admin_token();
    if tokio::fs::try_exists(&path).await? {
        return Ok(());
    }
    let token = Secret::generate();
    store
        .add_admin_token(&token.hash(Purpose::AdminToken), clock.now())
        .await?;
    write_atomic(
        path.clone(),
        format!("{}\n", token.encode()).into_bytes(),
        0o600,
    )
    .await?;
    tracing::info!(path = %path.display(), "created the admin token");
    Ok(())
}

/// Binds `addr`. Port 0 means "any": then the port bound last time on the
/// same IP is taken again if it is free, so nodes that know the hub by that
/// address find it after a restart.
async fn bind(
    addr: SocketAddr,
    last: Option<SocketAddr>,
    what: &str,
) -> Result<TcpListener, Error> {
    if addr.port() == 0
        && let Some(last) = last.filter(|l| l.ip() == addr.ip() && l.port() != 0)
    {
        match TcpListener::bind(last).await {
            Ok(l) => return Ok(l),
            Err(e) => {
                tracing::info!(%last, error = %e, "{what} port of the last run is taken; picking another")
            }
        }
    }
    TcpListener::bind(addr).await.map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("binding {what} address {addr}: {e}"),
        ))
    })
}

impl Hub {
    /// Prepares everything (data dir, store, certificate, token, listeners)
    /// without serving yet.
    pub async fn build(options: HubOptions) -> Result<Hub, Error> {
        Self::build_with_clock(options, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(options: HubOptions, clock: SharedClock) -> Result<Hub, Error> {
        let data_dir = DataDir::new(&options.data_dir);
        data_dir.create().await?;
        // Before anything is written: a second hub on this dir stops here.
        let lock = data_dir.lock()?;
        data_dir.remove_endpoints().await;
        let (grpc, http) = listen(&data_dir, &options).await?;
        let store = open_store(&data_dir, &clock).await?;
        let grpc_addr = grpc.local_addr()?;
        let advertise = options
            .advertise_addr
            .clone()
            .unwrap_or_else(|| grpc_addr.to_string());
        let tls = load_tls(&data_dir, &options, &advertise).await?;
        let (core, status) = build_core(&options, &data_dir, store, clock, advertise, &tls).await?;
        let endpoints = Endpoints {
            grpc: grpc_addr.to_string(),
            http: http.local_addr()?.to_string(),
            cert_sha256: tls.cert_sha256.clone(),
            pid: std::process::id(),
        };
        let (status_writer, status) = status;
        let workers = fixed_workers(&core, &options, &data_dir, status_writer);
        let (ready, _) = watch::channel(false);
        Ok(Hub {
            lock,
            core,
            options,
            data_dir,
            tls,
            grpc,
            http,
            endpoints,
            workers,
            status,
            ready,
        })
    }

    pub fn handle(&self) -> HubHandle {
        HubHandle {
            core: self.core.clone(),
            endpoints: self.endpoints.clone(),
            data_dir: self.data_dir.clone(),
            ready: self.ready.subscribe(),
        }
    }

    pub fn admin_token_path(&self) -> std::path::PathBuf {
        self.data_dir.admin_token()
    }

    /// Serves until `cancel` fires, then shuts down in order.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), Error> {
        let Hub {
            lock,
            core,
            options,
            data_dir,
            tls,
            grpc,
            http,
            endpoints,
            workers,
            status,
            ready,
        } = self;
        let accepting = CancellationToken::new();
        let workers_cancel = CancellationToken::new();

        let mut worker_set = JoinSet::new();
        for w in workers {
            core.supervisor
                .spawn(&mut worker_set, w, workers_cancel.clone());
        }
        let listeners = (grpc, http);
        let mut servers = serve(&core, &options, &tls, listeners, status, &accepting)?;

        data_dir.write_endpoints(&endpoints).await?;
        let _ = ready.send(true);
        tracing::info!(grpc = %endpoints.grpc, http = %endpoints.http, cert_sha256 = %endpoints.cert_sha256, "hub ready");
        let mirrors = core.mirrors.clone();
        tokio::spawn(async move { mirrors.open_known().await });

        tokio::select! {
            _ = cancel.cancelled() => tracing::info!("shutting down"),
            Some(r) = servers.join_next() => {
                tracing::error!(result = ?r, "a server stopped on its own; shutting down");
            }
        }
        let stopping = Stopping {
            accepting,
            servers,
            workers_cancel,
            worker_set,
        };
        stopping.shutdown(&core).await;
        data_dir.remove_endpoints().await;
        drop(lock);
        tracing::info!("hub stopped");
        Ok(())
    }
}

/// Starts the gRPC and HTTP servers; they stop accepting when `accepting`
/// is cancelled.
fn serve(
    core: &Arc<HubCore>,
    options: &HubOptions,
    tls: &TlsIdentity,
    (grpc, http): (TcpListener, TcpListener),
    status: StatusSink,
    accepting: &CancellationToken,
) -> Result<JoinSet<Result<(), String>>, Error> {
    let service = HubService {
        invites: core.invites.clone(),
        auth: core.auth.clone(),
        registry: core.registry.clone(),
        tasks: core.tasks.clone(),
        mirrors: core.mirrors.clone(),
        status,
        clock: core.clock.clone(),
        heartbeat_interval: options.heartbeat_interval,
        hello_deadline: options.hello_deadline,
        metrics: core.metrics.clone(),
    };
    // TLS is done in the accept loop: bounded handshakes (fd exhaustion).
    let limits = AcceptLimits::from_fd_limit(options.handshake_timeout);
    let acceptor = crate::accept::tls_acceptor(&tls.cert_pem, &tls.key_pem)?;
    let incoming = crate::accept::tls_incoming(grpc, acceptor, limits, core.metrics.clone());
    let grpc_server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // HTTP/2's default 64 KiB windows cap an upload at one window per
        // round trip; uploads stream MiB-sized chunks (bounded per stream
        // by the receiver's processing, so memory stays bounded).
        .initial_stream_window_size(UPLOAD_STREAM_WINDOW)
        .initial_connection_window_size(UPLOAD_CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .layer(AuthLayer::new(core.auth.clone()))
        .add_service(crate::grpc::server(service))
        .serve_with_incoming_shutdown(incoming, accepting.clone().cancelled_owned());
    let mut servers = JoinSet::new();
    servers.spawn(async move { grpc_server.await.map_err(|e| format!("gRPC server: {e}")) });
    let app = crate::http::router(core.clone()).into_make_service_with_connect_info::<SocketAddr>();
    // Capped, and with nodelay: small streamed writes (task events) must
    // not wait for delayed ACKs.
    // (`tap_io` only for axum's connect info, which it knows through `TapIo`.)
    let http = HttpListener::new(http, limits, core.metrics.clone());
    let http_server = axum::serve(axum::serve::ListenerExt::tap_io(http, |_| {}), app)
        .with_graceful_shutdown(accepting.clone().cancelled_owned());
    servers.spawn(async move { http_server.await.map_err(|e| format!("HTTP server: {e}")) });
    Ok(servers)
}

/// What the shutdown stops, in order.
struct Stopping {
    accepting: CancellationToken,
    servers: JoinSet<Result<(), String>>,
    workers_cancel: CancellationToken,
    worker_set: JoinSet<()>,
}

impl Stopping {
    /// Stop accepting → close node streams → stop workers → close the store,
    /// each step time-bounded.
    async fn shutdown(mut self, core: &HubCore) {
        // 1. Stop accepting; 2. close node streams so the servers can drain.
        self.accepting.cancel();
        core.registry.close_all(CloseReason::Shutdown);
        let servers = &mut self.servers;
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(r) = servers.join_next().await {
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "server ended with an error");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("connections did not drain in time; closing them");
            self.servers.abort_all();
        }
        // 3. Stop workers (the status writer flushes what is queued).
        self.workers_cancel.cancel();
        let workers = &mut self.worker_set;
        if tokio::time::timeout(WORKER_STOP_TIMEOUT, async {
            while workers.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("workers did not stop in time");
            self.worker_set.abort_all();
        }
        // 4. Close the store.
        core.store.mark_all_offline(core.clock.now()).await.ok();
        core.store.close().await;
    }
}

/// Binds both listeners, before anything else: nodes retrying while the hub
/// restarts are queued by the kernel and served as soon as it is ready,
/// instead of being refused and waiting out another backoff delay.
async fn listen(
    data_dir: &DataDir,
    options: &HubOptions,
) -> Result<(TcpListener, TcpListener), Error> {
    let last = data_dir.last_ports().await;
    let grpc = bind(options.grpc_addr, last.map(|p| p.grpc), "gRPC").await?;
    let http = bind(options.http_addr, last.map(|p| p.http), "HTTP").await?;
    let ports = Ports {
        grpc: grpc.local_addr()?,
        http: http.local_addr()?,
    };
    if last != Some(ports) {
        data_dir.save_ports(&ports).await?;
    }
    Ok((grpc, http))
}

/// Opens the database, settles what the last run left (nodes online,
/// unfinished tasks) and makes sure an admin token exists.
async fn open_store(data_dir: &DataDir, clock: &SharedClock) -> Result<Arc<dyn Store>, Error> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data_dir.db()).await?);
    store.mark_all_offline(clock.now()).await?;
    let note =
        "the hub restarted while the task was unfinished; the node may still report its result";
    let orphaned = store.fail_unfinished_tasks(None, note, clock.now()).await?;
    if !orphaned.is_empty() {
        tracing::warn!(
            tasks = orphaned.len(),
            "failed tasks left unfinished by the previous run"
        );
    }
    ensure_admin_token(data_dir, store.as_ref(), clock).await?;
    Ok(store)
}

/// The configured certificate, or the hub's own for the advertised host.
async fn load_tls(
    data_dir: &DataDir,
    options: &HubOptions,
    advertise: &str,
) -> Result<TlsIdentity, Error> {
    let advertise_host = advertise
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']).to_owned());
    let configured = match (&options.tls_cert, &options.tls_key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        (None, None) => None,
        _ => return Err(Error::Tls("--tls-cert and --tls-key go together".into())),
    };
    TlsIdentity::load_or_create(data_dir, configured, advertise_host.into_iter().collect()).await
}

/// The hub's shared parts, and the status writer with its sink.
async fn build_core(
    options: &HubOptions,
    data_dir: &DataDir,
    store: Arc<dyn Store>,
    clock: SharedClock,
    advertise: String,
    tls: &TlsIdentity,
) -> Result<(Arc<HubCore>, (StatusWriter, StatusSink)), Error> {
    let metrics = Metrics::new();
    let registry = Registry::new(metrics.clone());
    let limiter = || {
        FailureLimiter::new(
            options.auth_failure_burst,
            options.auth_failure_refill_per_s,
        )
    };
    let admin = store.admin_token_hashes().await?;
    let auth = Arc::new(Authenticator::new(
        store.clone(),
        options.auth_deadline,
        limiter(),
        limiter(),
        admin,
        metrics.clone(),
    ));
    let invites = Arc::new(Invites::new(
        store.clone(),
        clock.clone(),
        advertise,
        tls.cert_sha256.clone(),
    ));
    let supervisor = Supervisor::default();
    supervisor.watch("journal", journal_probe(store.clone()));
    let mirrors = crate::mirror::Mirrors::open(
        store.clone(),
        data_dir.root().to_path_buf(),
        registry.clone(),
        clock.clone(),
        metrics.clone(),
        supervisor.clone(),
    )
    .await?;
    let status = StatusWriter::new(store.clone());
    let core = Arc::new(HubCore {
        mirrors,
        nodes: Nodes::new(store.clone(), registry.clone(), clock.clone()),
        tasks: Arc::new(Tasks::new(store.clone(), registry.clone(), clock.clone())),
        store,
        auth,
        invites,
        registry,
        metrics,
        supervisor,
        clock,
    });
    Ok((core, status))
}

/// The workers the hub runs from start to shutdown (mirror drivers come and
/// go with their mirrors; the journal writer is the store's).
fn fixed_workers(
    core: &Arc<HubCore>,
    options: &HubOptions,
    data_dir: &DataDir,
    status_writer: StatusWriter,
) -> Vec<Box<dyn Worker>> {
    let monitor = MeshMonitor::new(
        core.registry.clone(),
        options.heartbeat_interval,
        options.silence_limit(),
    );
    vec![
        Box::new(status_writer),
        Box::new(monitor),
        Box::new(crate::task_lease::TaskLeaseMonitor {
            tasks: core.tasks.clone(),
            every: options.task_lease_period,
        }),
        Box::new(crate::mirror::workers::TransferReaper {
            mirrors: core.mirrors.clone(),
            every: options.transfer_reaper_period,
        }),
        Box::new(crate::mirror::workers::OrphanPurge {
            store: core.store.clone(),
            data_dir: data_dir.root().to_path_buf(),
            clock: core.clock.clone(),
            grace: options.orphan_grace,
            every: options.orphan_purge_period,
        }),
    ]
}

/// The store's journal writer as a worker: it is not restarted (a failed
/// batch may be half written); a failure refuses task writes with its error
/// until the hub restarts, and shows here as `failed`.
fn journal_probe(store: Arc<dyn Store>) -> crate::worker::Probe {
    use ganglion_api::WorkerState;
    use ganglion_store::WriterState;
    Box::new(move || match store.journal_writer() {
        WriterState::Idle => (WorkerState::Idle, None),
        WriterState::Busy => (WorkerState::Busy, None),
        WriterState::Failed(e) => (WorkerState::Failed, Some(e)),
    })
}

/// Reads the admin token the hub wrote into its data dir.
pub async fn read_admin_token(data_dir: &Path) -> std::io::Result<String> {
    let t = tokio::fs::read_to_string(DataDir::new(data_dir).admin_token()).await?;
    Ok(t.trim().to_owned())
}
