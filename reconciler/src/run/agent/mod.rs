//! The agent API: the vendor control plane's door into the daemon, on a listener of its own
//! (not the loopback status port), over mutual TLS.
//!
//! - TLS 1.3 only; a client certificate is required and must chain to `clientCaFile`
//!   ([`tls`]); its identity, a URI SAN (a SPIFFE id) or a DNS SAN, must be in
//!   `allowedIdentities`. A certificate that does not verify fails the handshake; a verified
//!   one whose identity is not allowed gets `403` on every request, so the caller learns
//!   which identity was seen and that it is not allowed (it proved it holds the key, so
//!   telling it costs nothing).
//! - Read-only plus one trigger: `GET /v1/status`, `GET /v1/clusters`, `GET /v1/plan`, and
//!   `POST /v1/reconcile`, which only wakes the loop (the revision still comes from git and
//!   is verified; a burst is answered `429` with `Retry-After`). Nothing here changes
//!   desired state: git is the only writer.
//! - The certificate, key and CA bundle are polled every `reloadInterval` and swapped in
//!   when their contents change; open connections keep the material they started with.
//! - Every refusal is logged with its reason and counted in `byoc_agent_refusals_total`.
//!
//! ```yaml
//! agent:
//!   listen: "0.0.0.0:8443"
//!   certFile: /etc/byoc/agent-tls/tls.crt
//!   keyFile: /etc/byoc/agent-tls/tls.key
//!   clientCaFile: /etc/byoc/agent-tls/ca.crt
//!   allowedIdentities: ["spiffe://risingwave.cloud/control-plane", "agent-client.risingwave.cloud"]
//!   reloadInterval: 10s          # default 10s
//!   reconcileMinInterval: 10s    # POST /v1/reconcile at most once per this; default 10s
//! ```

pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rwproxy::diagnostics::{Diagnostic, Position};
use serde::Deserialize;
use serde_json::json;
use serde_saphyr::Spanned;
use tokio_util::sync::CancellationToken;

use super::Shared;

/// The `agent:` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentSpec {
    listen: Spanned<String>,
    cert_file: Spanned<String>,
    key_file: Spanned<String>,
    client_ca_file: Spanned<String>,
    allowed_identities: Spanned<Vec<String>>,
    reload_interval: Option<Spanned<String>>,
    reconcile_min_interval: Option<Spanned<String>>,
}

/// The checked agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the mTLS listener binds.
    pub listen: SocketAddr,
    /// Server certificate, key and client CA bundle.
    pub files: tls::TlsFiles,
    /// URI SANs (with a scheme, e.g. `spiffe://…`) and DNS SANs that may call.
    pub allowed: Vec<String>,
    /// How often the TLS files are checked for a change.
    pub reload_interval: Duration,
    /// `POST /v1/reconcile` is accepted at most once per this.
    pub reconcile_min_interval: Duration,
}

/// Default period of the TLS files check.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Default spacing of accepted reconcile triggers.
pub const DEFAULT_RECONCILE_MIN_INTERVAL: Duration = Duration::from_secs(10);

impl AgentSpec {
    /// Checks the section, adding every problem to `problems`; relative paths through
    /// `resolve`. The TLS files are loaded once here so a bad certificate stops the daemon
    /// before anything starts.
    pub fn check(self, file: &str, resolve: &dyn Fn(&str) -> PathBuf, problems: &mut Vec<Diagnostic>) -> Option<AgentConfig> {
        let at = |s: &Spanned<String>| Position::at(file, &s.referenced);
        let before = problems.len();
        let listen = self
            .listen
            .value
            .parse::<SocketAddr>()
            .map_err(|_| problems.push(Diagnostic::new(at(&self.listen), "agent.listen must be ADDRESS:PORT, like 0.0.0.0:8443")))
            .ok();
        let files = tls::TlsFiles {
            cert: resolve(&self.cert_file.value),
            key: resolve(&self.key_file.value),
            client_ca: resolve(&self.client_ca_file.value),
        };
        if let Err(e) = tls::check(&files) {
            let field = if e.path == files.key.display().to_string() {
                &self.key_file
            } else if e.path == files.client_ca.display().to_string() {
                &self.client_ca_file
            } else {
                &self.cert_file
            };
            problems.push(Diagnostic::new(at(field), format!("agent TLS: {e}")));
        }
        let allowed_at = Position::at(file, &self.allowed_identities.referenced);
        if self.allowed_identities.value.is_empty() {
            problems.push(Diagnostic::new(
                allowed_at.clone(),
                "agent.allowedIdentities is empty: name the control plane's SPIFFE id or DNS name",
            ));
        }
        for id in &self.allowed_identities.value {
            if !valid_identity(id) {
                problems.push(Diagnostic::new(
                    allowed_at.clone(),
                    format!("agent.allowedIdentities: {id:?} is neither a URI (like spiffe://trust-domain/path) nor a DNS name"),
                ));
            }
        }
        let mut duration = |field: &Option<Spanned<String>>, name: &str, default: Duration| match field {
            None => default,
            Some(s) => match super::config::parse_duration(&s.value) {
                Some(d) if d >= Duration::from_millis(100) => d,
                _ => {
                    problems.push(Diagnostic::new(at(s), format!("agent.{name} must be a duration of at least 100ms, like 10s")));
                    default
                }
            },
        };
        let reload_interval = duration(&self.reload_interval, "reloadInterval", DEFAULT_RELOAD_INTERVAL);
        let reconcile_min_interval = duration(&self.reconcile_min_interval, "reconcileMinInterval", DEFAULT_RECONCILE_MIN_INTERVAL);
        if problems.len() > before {
            return None;
        }
        Some(AgentConfig { listen: listen?, files, allowed: self.allowed_identities.value, reload_interval, reconcile_min_interval })
    }
}

fn valid_identity(id: &str) -> bool {
    if let Some((scheme, rest)) = id.split_once("://") {
        return !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) && !rest.is_empty();
    }
    !id.is_empty()
        && id.len() <= 253
        && id.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether one of the certificate's identities is allowed: URIs compared exactly (SPIFFE
/// ids are case-sensitive), DNS names without regard to ASCII case.
pub fn allowed<'a>(identities: &'a [String], allow: &[String]) -> Option<&'a String> {
    identities
        .iter()
        .find(|id| allow.iter().any(|a| if a.contains("://") { a == *id } else { !id.contains("://") && a.eq_ignore_ascii_case(id) }))
}

type Labels = Vec<(&'static str, &'static str)>;

/// The agent API's metrics, label values from fixed sets.
#[derive(Clone, Default)]
pub struct AgentMetrics {
    refusals: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
}

impl AgentMetrics {
    /// Registers the agent's metrics in the daemon's registry.
    pub fn register(registry: &mut Registry) -> AgentMetrics {
        let m = AgentMetrics::default();
        registry.register("agent_refusals", "Agent API refusals by reason", m.refusals.clone());
        registry.register("agent_requests", "Agent API requests answered, by endpoint", m.requests.clone());
        registry.register("agent_tls_reloads", "Agent TLS material reloads by result", m.reloads.clone());
        m
    }

    fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&vec![("reason", reason)]).inc();
    }
}

/// The agent's own state beside [`Shared`].
struct Agent {
    config: AgentConfig,
    shared: Arc<Shared>,
    publish_dir: PathBuf,
    tls: tls::Reloading,
    last_trigger: Mutex<Option<Instant>>,
}

/// Why the agent API could not start: either needs a person (fix the files or the address).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The certificate, key or CA files are missing or do not make a server configuration.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The listen address cannot be bound.
    #[error("agent API: cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The system's reason.
        source: std::io::Error,
    },
}

/// Binds the agent listener and serves it until `shutdown`, with the TLS reloader.
pub async fn start(
    config: &AgentConfig,
    shared: Arc<Shared>,
    publish_dir: &Path,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let tls = tls::Reloading::load(config.files.clone())?;
    let bind = |source| StartError::Listen { addr: config.listen, source };
    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(bind)?;
    tracing::info!(listen = %listener.local_addr().map_err(bind)?, "agent API (mTLS)");
    let agent =
        Arc::new(Agent { config: config.clone(), shared, publish_dir: publish_dir.to_owned(), tls, last_trigger: Mutex::new(None) });
    Ok(tokio::spawn(serve(listener, agent, shutdown)))
}

async fn serve(listener: tokio::net::TcpListener, agent: Arc<Agent>, shutdown: CancellationToken) {
    let tracker = tokio_util::task::TaskTracker::new();
    let reloader = agent.clone();
    let stop = shutdown.clone();
    tracker.spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(reloader.config.reload_interval) => {}
            }
            let result = match reloader.tls.reload() {
                tls::Reload::Unchanged => continue,
                tls::Reload::Reloaded => "ok",
                tls::Reload::Failed => "failed",
            };
            reloader.shared.metrics.agent.reloads.get_or_create(&vec![("result", result)]).inc();
        }
    });
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((stream, peer)) = accepted else { continue };
        let agent = agent.clone();
        tracker.spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(agent.tls.current());
            let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let reason = tls::handshake_refusal(&e);
                    tracing::warn!(client.addr = %peer, reason, error = %e, "agent API: TLS handshake refused");
                    agent.shared.metrics.agent.refused(reason);
                    return;
                }
                Err(_) => {
                    tracing::warn!(client.addr = %peer, reason = "handshake_timeout", "agent API: TLS handshake timed out");
                    agent.shared.metrics.agent.refused("handshake_timeout");
                    return;
                }
            };
            let identities = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(tls::identities).unwrap_or_default();
            let identity = allowed(&identities, &agent.config.allowed).cloned();
            let caller = Arc::new(Caller { identity, presented: identities, peer });
            let service = hyper::service::service_fn(move |req| handle(req, agent.clone(), caller.clone()));
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            // A slow client gets a bounded share of the daemon's time.
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}

/// Who is calling, as the handshake established.
struct Caller {
    /// The allowed identity, if one of the certificate's names is allowed.
    identity: Option<String>,
    /// Every identity the certificate names.
    presented: Vec<String>,
    peer: SocketAddr,
}

fn reply(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec_pretty(body).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

async fn handle(req: Request<Incoming>, agent: Arc<Agent>, caller: Arc<Caller>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let metrics = &agent.shared.metrics.agent;
    let Some(identity) = &caller.identity else {
        tracing::warn!(client.addr = %caller.peer, presented = ?caller.presented, reason = "identity_not_allowed", "agent API: request refused");
        metrics.refused("identity_not_allowed");
        let message = format!("none of the certificate's identities {:?} is in agent.allowedIdentities", caller.presented);
        return Ok(reply(StatusCode::FORBIDDEN, &json!({"error": message})));
    };
    let endpoint = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/v1/status") => "status",
        ("GET", "/v1/clusters") => "clusters",
        ("GET", "/v1/plan") => "plan",
        ("POST", "/v1/reconcile") => "reconcile",
        (_, "/v1/status" | "/v1/clusters" | "/v1/plan" | "/v1/reconcile") => {
            return Ok(reply(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method not allowed: the agent API is read-only plus POST /v1/reconcile"}),
            ));
        }
        _ => return Ok(reply(StatusCode::NOT_FOUND, &json!({"error": "not found"}))),
    };
    metrics.requests.get_or_create(&vec![("endpoint", endpoint)]).inc();
    let status = || agent.shared.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    Ok(match endpoint {
        "status" => reply(StatusCode::OK, &serde_json::to_value(status()).unwrap_or_default()),
        "clusters" => reply(StatusCode::OK, &clusters(&status(), &agent.publish_dir)),
        "plan" => reply(StatusCode::OK, &plan(&status())),
        _ => trigger(&agent, identity, &caller),
    })
}

fn trigger(agent: &Agent, identity: &str, caller: &Caller) -> Response<Full<Bytes>> {
    let now = Instant::now();
    let mut last = agent.last_trigger.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(wait) = last.and_then(|t| agent.config.reconcile_min_interval.checked_sub(now.duration_since(t))) {
        let retry = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        tracing::warn!(client.addr = %caller.peer, identity, reason = "rate_limited", retry_after = retry, "agent API: reconcile trigger refused");
        agent.shared.metrics.agent.refused("rate_limited");
        let mut r = reply(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"error": format!("a reconcile was triggered less than {}s ago; retry after {retry}s", agent.config.reconcile_min_interval.as_secs_f64())}),
        );
        if let Ok(v) = retry.to_string().parse() {
            r.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        return r;
    }
    *last = Some(now);
    // A Notify holds at most one permit: triggers before the loop wakes coalesce into one
    // reconcile, which makes the call idempotent.
    agent.shared.wake.notify_one();
    tracing::info!(client.addr = %caller.peer, identity, "agent API: reconcile requested");
    reply(StatusCode::ACCEPTED, &json!({"accepted": true, "message": "the loop is woken: it fetches, verifies and applies the branch tip"}))
}

/// `GET /v1/clusters`: per cluster its health after the last reconcile, the revision that
/// state belongs to, and its endpoints (the in-cluster frontend and the published routes).
fn clusters(status: &super::status::Status, publish_dir: &Path) -> serde_json::Value {
    let routes = rwproxy::routes::load_dir(&publish_dir.join("current")).map(|t| t.routes).unwrap_or_default();
    let list: Vec<serde_json::Value> = status
        .clusters
        .iter()
        .map(|c| {
            let namespace = rwproxy::routes::cluster_namespace(&c.name);
            let frontend =
                format!("{}.{namespace}.svc:{}", rwproxy::routes::frontend_service(&c.name), rwproxy::routes::OPERATOR_FRONTEND_PORT);
            let published: Vec<&str> = routes.iter().filter(|r| r.cluster == c.name).map(|r| r.name.as_str()).collect();
            json!({
                "name": c.name,
                "health": c.outcome,
                "message": c.message,
                "revision": status.last_applied_revision,
                "endpoints": {"frontend": frontend, "routes": published},
            })
        })
        .collect();
    json!({"lastAppliedRevision": status.last_applied_revision, "clusters": list})
}

/// `GET /v1/plan`: what the next reconcile would do and why, from what the daemon knows. It
/// keeps no computed plan between reconciles, and says so rather than invent one.
fn plan(status: &super::status::Status) -> serde_json::Value {
    let pending = status.last_attempted_revision.is_some() && status.last_attempted_revision != status.last_applied_revision;
    let blocked: Vec<serde_json::Value> = status
        .conditions
        .iter()
        .filter(|c| matches!((c.kind, c.status), ("SourceVerified" | "Ready", "False") | ("Stalled" | "SourceStale", "True")))
        .map(|c| json!({"condition": c.kind, "reason": c.reason, "message": c.message}))
        .collect();
    let next = if !pending {
        "fetch the branch; if its tip is the applied revision, nothing to do; otherwise verify the new commits, then apply and publish"
    } else if blocked.is_empty() {
        "the last attempted revision is not applied yet: fetch, verify it (and anything newer), apply the clusters, publish the routes"
    } else {
        "the last attempted revision was stopped (see blockedBy); the next reconcile retries from fetch and stops the same way until a new signed commit or a fixed environment changes it"
    };
    json!({
        "planComputed": false,
        "note": "the daemon does not keep a computed plan between reconciles; this is what it knows. For the full plan of a revision run `byoc plan` on it.",
        "lastAttemptedRevision": status.last_attempted_revision,
        "lastAppliedRevision": status.last_applied_revision,
        "pending": pending,
        "blockedBy": blocked,
        "lastError": status.last_error,
        "next": next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_match_uris_exactly_and_dns_names_without_case() {
        let allow = vec!["spiffe://rw.cloud/cp".to_owned(), "cp.rw.cloud".to_owned()];
        let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(allowed(&ids(&["spiffe://rw.cloud/cp"]), &allow).map(String::as_str), Some("spiffe://rw.cloud/cp"));
        assert_eq!(allowed(&ids(&["spiffe://rw.cloud/CP"]), &allow), None);
        assert_eq!(allowed(&ids(&["spiffe://rw.cloud/cp/extra"]), &allow), None);
        assert_eq!(allowed(&ids(&["other.example", "CP.rw.cloud"]), &allow).map(String::as_str), Some("CP.rw.cloud"));
        assert_eq!(allowed(&ids(&["x.cp.rw.cloud"]), &allow), None);
        assert_eq!(allowed(&[], &allow), None);
    }

    #[test]
    fn allow_list_entries_are_uris_or_dns_names() {
        assert!(valid_identity("spiffe://rw.cloud/cp"));
        assert!(valid_identity("cp.rw.cloud"));
        assert!(!valid_identity("*.rw.cloud"));
        assert!(!valid_identity("://x"));
        assert!(!valid_identity(""));
    }
}
