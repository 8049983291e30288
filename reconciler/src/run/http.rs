//! The daemon's HTTP doors on the `listen` address (loopback by default): `POST
//! /hooks/git`, `GET /status`, `/metrics`, `/healthz` and `/readyz`. Nothing here changes
//! desired state; a webhook only wakes the loop.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::webhook::{MAX_BODY, Verdict};

type Labels = Vec<(&'static str, &'static str)>;

/// The daemon's metrics, all named `byoc_*`, label values from fixed sets.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    verify_refusals: Counter,
    fetch_failures: Counter,
    webhooks: Family<Labels, Counter>,
    last_success: Gauge,
    /// The agent API's counters.
    pub agent: super::agent::AgentMetrics,
    source_stale: Gauge,
    rewinds: Counter,
    parses_skipped: Counter,
    lease_refusals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("byoc");
        let reconciles = Family::<Labels, Counter>::default();
        let duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
        });
        let (verify_refusals, fetch_failures, last_success) = (Counter::default(), Counter::default(), Gauge::default());
        let webhooks = Family::<Labels, Counter>::default();
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration by result", duration.clone());
        registry.register("verify_refusals", "Ranges the signing policy refused", verify_refusals.clone());
        registry.register("fetch_failures", "Fetches that failed", fetch_failures.clone());
        registry.register("webhooks", "Webhook deliveries by verdict", webhooks.clone());
        registry.register("last_success_timestamp_seconds", "When a revision was last applied", last_success.clone());
        let agent = super::agent::AgentMetrics::register(&mut registry);
        let (source_stale, rewinds, parses_skipped) = (Gauge::default(), Counter::default(), Counter::default());
        registry.register("source_stale", "1 while no fetch succeeded for staleAfter", source_stale.clone());
        registry.register("history_rewrites", "Remote tips that did not descend from the last verified revision", rewinds.clone());
        registry.register(
            "parses_skipped",
            "Reconciles that found the revision or its environment tree already applied",
            parses_skipped.clone(),
        );
        let lease_refusals = Counter::default();
        registry.register(
            "lease_refusals",
            "Lease requests the API server refused (403, or 404 on create: RBAC or the namespace)",
            lease_refusals.clone(),
        );
        Metrics {
            registry,
            reconciles,
            duration,
            verify_refusals,
            fetch_failures,
            webhooks,
            last_success,
            agent,
            source_stale,
            rewinds,
            parses_skipped,
            lease_refusals,
        }
    }
}

impl Metrics {
    /// A reconcile finished with `result` (`applied`, `unchanged`, `stopped`).
    pub fn observe(&self, result: &'static str, took: Duration) {
        self.reconciles.get_or_create(&vec![("result", result)]).inc();
        self.duration.get_or_create(&vec![("result", result)]).observe(took.as_secs_f64());
    }

    /// The signing policy refused a range.
    pub fn verify_refused(&self) {
        self.verify_refusals.inc();
    }

    /// A fetch failed.
    pub fn fetch_failed(&self) {
        self.fetch_failures.inc();
    }

    /// Whether the source is stale now.
    pub fn source_stale(&self, stale: bool) {
        self.source_stale.set(i64::from(stale));
    }

    /// The remote tip stopped descending from the last verified revision.
    pub fn rewound(&self) {
        self.rewinds.inc();
    }

    /// A reconcile skipped parsing: nothing changed.
    pub fn parse_skipped(&self) {
        self.parses_skipped.inc();
    }

    /// `n` more Lease requests were refused.
    pub fn lease_refused(&self, n: u32) {
        self.lease_refusals.inc_by(u64::from(n));
    }

    /// A revision was applied at `now` (seconds since the epoch).
    pub fn succeeded(&self, now: i64) {
        self.last_success.set(now);
    }

    fn webhook(&self, verdict: &'static str) {
        self.webhooks.get_or_create(&vec![("verdict", verdict)]).inc();
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves until `shutdown`; each connection is its own task, bounded by the listener.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let shared = shared.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, shared.clone()));
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            // A slow client gets a bounded share of the daemon's time.
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let text = "text/plain; charset=utf-8";
    Ok(match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => reply(StatusCode::OK, text, "ok\n"),
        ("GET", "/readyz") if shared.ready.load(Ordering::Relaxed) => reply(StatusCode::OK, text, "ready\n"),
        ("GET", "/readyz") => reply(StatusCode::SERVICE_UNAVAILABLE, text, "the first reconcile has not finished\n"),
        ("GET", "/status") => reply(StatusCode::OK, "application/json", serde_json::to_vec_pretty(&status(&shared)).unwrap_or_default()),
        ("GET", "/metrics") => reply(StatusCode::OK, "text/plain; version=0.0.4", shared.metrics.render()),
        ("POST", "/hooks/git") => hook(req, &shared).await,
        _ => reply(StatusCode::NOT_FOUND, text, "not found\n"),
    })
}

/// The status this replica serves: its own while it leads (or before any election), the
/// holder's last saved one on a standby; with `leaderElection` saying which.
fn status(shared: &Shared) -> serde_json::Value {
    let own = || serde_json::to_value(&*shared.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).unwrap_or_default();
    let role = shared.role.get().map(|r| r.borrow().clone());
    let holder = shared.holder_status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let mut out = match (&role, holder) {
        // A replica whose Lease requests are refused says so itself.
        (Some(r), Some(saved)) if !r.is_leader() && r.refusals == 0 => saved,
        _ => own(),
    };
    if let (Some(r), Some(map)) = (role, out.as_object_mut()) {
        map.insert("leaderElection".into(), serde_json::to_value(r).unwrap_or_default());
    }
    out
}

async fn hook(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    let Some(webhooks) = &shared.webhooks else {
        return reply(StatusCode::NOT_FOUND, text, "webhooks are not configured\n");
    };
    let headers = req.headers().clone();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            shared.metrics.webhook("too_large");
            return reply(StatusCode::PAYLOAD_TOO_LARGE, text, "body too large\n");
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    match webhooks.check(&header, &body) {
        Verdict::Wake => {
            shared.metrics.webhook("accepted");
            shared.wake.notify_one();
            reply(StatusCode::ACCEPTED, text, "fetching\n")
        }
        Verdict::Duplicate => {
            shared.metrics.webhook("duplicate");
            reply(StatusCode::OK, text, "delivery seen before; ignored\n")
        }
        Verdict::Refused(why) => {
            shared.metrics.webhook(why.as_str());
            tracing::warn!(reason = why.as_str(), "webhook refused");
            reply(StatusCode::UNAUTHORIZED, text, "signature does not match\n")
        }
    }
}
