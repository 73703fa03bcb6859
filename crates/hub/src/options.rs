//! What the hub is told. Layering (flags, environment, file) happens in the CLI;
//! this is the resolved result.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct HubOptions {
    pub data_dir: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The gRPC address put into invites; the bound address when `None`.
    pub advertise_addr: Option<String>,
    /// A certificate and key (PEM) to serve instead of the self-signed one.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub heartbeat_interval: Duration,
    /// Heartbeats a node may miss before the monitor marks it offline.
    pub missed_heartbeats: u32,
    /// Deadline for a credential lookup during a handshake.
    pub auth_deadline: Duration,
    /// Failed handshakes an address may make in a burst before it is limited.
    pub auth_failure_burst: u32,
    /// Failed handshakes per second an address regains.
    pub auth_failure_refill_per_s: f64,
    /// How long a TLS handshake (gRPC) or a first HTTP request may take.
    pub handshake_timeout: Duration,
    /// How long a node has to send its hello after opening its control stream.
    pub hello_deadline: Duration,
    /// How often the hub looks for tasks whose node went silent.
    pub task_lease_period: Duration,
    /// How often idle mirror transfers are dropped (and their locks freed).
    pub transfer_reaper_period: Duration,
    /// How often mirrors of nodes that no longer exist are moved to the trash
    /// and old trash is deleted.
    pub orphan_purge_period: Duration,
    /// How long a trashed mirror is kept before it is deleted.
    pub orphan_grace: Duration,
}

impl HubOptions {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 7443)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7080)),
            advertise_addr: None,
            tls_cert: None,
            tls_key: None,
            heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats: 3,
            auth_deadline: Duration::from_secs(2),
            auth_failure_burst: 20,
            auth_failure_refill_per_s: 2.0,
            handshake_timeout: Duration::from_secs(10),
            hello_deadline: Duration::from_secs(10),
            task_lease_period: Duration::from_secs(5),
            transfer_reaper_period: Duration::from_secs(10),
            orphan_purge_period: Duration::from_secs(600),
            orphan_grace: Duration::from_secs(24 * 3600),
        }
    }

    /// How long a node may stay silent before it is marked offline.
    pub fn silence_limit(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats
    }
}
