//! Prometheus metrics (all named `rwproxy_*`, label values from fixed sets) and the admin
//! endpoint that serves them.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How a connection ended, or how far it got, and on which route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// One of the fixed values in [`crate::server`]'s outcomes.
    pub outcome: &'static str,
    /// The route's name from the verified table; empty when the connection was not routed.
    /// Clients cannot add values: only the table's names appear.
    pub route: String,
}

/// Direction of relayed bytes, by route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Direction {
    /// `client_to_backend` or `backend_to_client`.
    pub direction: &'static str,
    /// The route's name.
    pub route: String,
}

/// Result of a routes reload.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadResult {
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// What became of a spare backend connection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpareFate {
    /// One of [`crate::spares::fate`].
    pub result: &'static str,
}

/// Every metric of the proxy.
pub struct Metrics {
    /// Connections by outcome and route.
    pub connections: Family<Outcome, Counter>,
    /// Connections open now (accepted and not yet closed, handshakes included): the count
    /// that `client_connections_limit` caps.
    pub active: Gauge,
    /// The process-wide cap on open client connections (`--max-client-connections`).
    pub client_connections_limit: Gauge,
    /// Times the accept loop found every connection slot taken and stopped accepting.
    pub accept_paused: Counter,
    /// Time from accept to a ready session.
    pub handshake_seconds: Histogram,
    /// Bytes relayed, by direction and route, counted as they pass.
    pub bytes: Family<Direction, Counter>,
    /// Route table reloads, by result.
    pub reloads: Family<ReloadResult, Counter>,
    /// Spare backend connections by what became of them.
    pub spares: Family<SpareFate, Counter>,
    /// Spare backend connections open and unused now.
    pub spares_held: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let connections = Family::<Outcome, Counter>::default();
        let active = Gauge::default();
        let client_connections_limit = Gauge::default();
        let accept_paused = Counter::default();
        let handshake_seconds = Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0]);
        let bytes = Family::<Direction, Counter>::default();
        let reloads = Family::<ReloadResult, Counter>::default();
        let spares = Family::<SpareFate, Counter>::default();
        let spares_held = Gauge::default();
        let mut registry = Registry::with_prefix("rwproxy");
        registry.register("connections", "Connections by outcome and route", connections.clone());
        registry.register("active_connections", "Connections open now", active.clone());
        registry.register(
            "client_connections_limit",
            "Most client connections open at once; at the limit new clients wait in the listen queue",
            client_connections_limit.clone(),
        );
        registry.register("accept_paused", "Times accepting paused because every connection slot was taken", accept_paused.clone());
        registry.register("handshake_seconds", "Time from accept to a ready session", handshake_seconds.clone());
        registry.register("bytes", "Bytes relayed by direction and route", bytes.clone());
        registry.register("route_reloads", "Route table reloads by result", reloads.clone());
        registry.register("backend_spares", "Spare backend connections (opened ahead of clients) by what became of them", spares.clone());
        registry.register("backend_spares_held", "Spare backend connections open and unused now", spares_held.clone());
        Self {
            connections,
            active,
            client_connections_limit,
            accept_paused,
            handshake_seconds,
            bytes,
            reloads,
            spares,
            spares_held,
            registry,
        }
    }
}

impl Metrics {
    /// Counts a connection outcome on `route` (empty when not routed).
    pub fn outcome(&self, outcome: &'static str, route: &str) {
        self.connections.get_or_create(&Outcome { outcome, route: route.to_owned() }).inc();
    }

    /// Counts a spare backend connection's fate.
    pub fn spare(&self, result: &'static str) {
        self.spares.get_or_create(&SpareFate { result }).inc();
    }

    /// The byte counter of one direction of a route.
    pub fn bytes(&self, direction: &'static str, route: &str) -> Counter {
        self.bytes.get_or_create(&Direction { direction, route: route.to_owned() }).clone()
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` and `GET /healthz` until `shutdown`.
pub async fn serve_admin(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        let (mut stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await else { return };
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if request.starts_with("GET /metrics") {
                ("200 OK", metrics.encode())
            } else if request.starts_with("GET /healthz") {
                ("200 OK", "ok\n".to_owned())
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
