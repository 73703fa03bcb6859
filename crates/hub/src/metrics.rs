//! Prometheus metrics, exposed at `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// The hub's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub connected_nodes: Gauge,
    handshakes: Family<ResultLabel, Counter>,
    auth_failures: Family<KindLabel, Counter>,
    connections_refused: Family<KindLabel, Counter>,
    pub handshakes_in_progress: Gauge,
    pub joins: Counter,
    pub transfer_locks: Gauge,
    pub transfers_in_flight: Gauge,
    pub mirror_hashed_bytes: Counter,
    /// Content bytes received on upload streams.
    pub mirror_received_bytes: Counter,
    /// Bytes not sent again thanks to a resumed transfer.
    pub mirror_resumed_bytes: Counter,
    /// Connections refused: another running process holds the credential.
    pub node_duplicate_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ganglion");
        let connected_nodes = Gauge::default();
        let handshakes = Family::<ResultLabel, Counter>::default();
        let auth_failures = Family::<KindLabel, Counter>::default();
        let joins = Counter::default();
        registry.register(
            "connected_nodes",
            "Nodes with an open control stream",
            connected_nodes.clone(),
        );
        registry.register(
            "handshakes",
            "Node credential checks, by result",
            handshakes.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed authentications, by kind (node, admin, invite)",
            auth_failures.clone(),
        );
        registry.register("joins", "Invites redeemed", joins.clone());
        let connections_refused = Family::<KindLabel, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept for being over a cap, by server (grpc: handshakes in progress, http: open connections)",
            connections_refused.clone(),
        );
        let handshakes_in_progress = Gauge::default();
        registry.register(
            "tls_handshakes_in_progress",
            "gRPC TLS handshakes in progress",
            handshakes_in_progress.clone(),
        );
        let transfer_locks = Gauge::default();
        let transfers_in_flight = Gauge::default();
        let mirror_hashed_bytes = Counter::default();
        registry.register(
            "transfer_locks",
            "Transfer locks held",
            transfer_locks.clone(),
        );
        registry.register(
            "transfers_in_flight",
            "Mirror transfers in flight",
            transfers_in_flight.clone(),
        );
        registry.register(
            "mirror_hashed_bytes",
            "Bytes the hub hashed for mirrors (received content, and the prefix of a resumed transfer read back from its partial; restarts re-hash nothing)",
            mirror_hashed_bytes.clone(),
        );
        let mirror_received_bytes = Counter::default();
        registry.register(
            "mirror_received_bytes",
            "Content bytes the hub received on upload streams",
            mirror_received_bytes.clone(),
        );
        let mirror_resumed_bytes = Counter::default();
        registry.register(
            "mirror_resumed_bytes",
            "Bytes not sent again thanks to a resumed transfer (the prefix the hub held)",
            mirror_resumed_bytes.clone(),
        );
        let node_duplicate_refused = Counter::default();
        registry.register(
            "node_duplicate_refused",
            "Node connections refused because another running process holds the credential (a copied state dir)",
            node_duplicate_refused.clone(),
        );
        Self {
            registry: Arc::new(registry),
            connected_nodes,
            handshakes,
            auth_failures,
            connections_refused,
            handshakes_in_progress,
            joins,
            transfer_locks,
            transfers_in_flight,
            mirror_hashed_bytes,
            mirror_received_bytes,
            mirror_resumed_bytes,
            node_duplicate_refused,
        }
    }

    pub fn handshake(&self, result: &str) {
        self.handshakes
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn auth_failure(&self, kind: &str) {
        self.auth_failures
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    pub fn connection_refused(&self, server: &str) {
        self.connections_refused
            .get_or_create(&KindLabel {
                kind: server.into(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encodes");
        out
    }
}
