//! `byoc run`: the in-account daemon. Each reconcile runs the same stages the one-shot
//! commands run, in the flow's order:
//!
//! 1. **fetch** the branch into the cache ([`crate::fetch`]); a failure moves nothing, and
//!    after `staleAfter` without a successful fetch the source is `SourceStale`;
//! 2. **verify** `last_verified..tip` ([`crate::verify`]), moving the high-water mark only
//!    on success; a refused range stops here: nothing is applied, the proxy keeps its
//!    routes, and the status names the commit and why;
//! 3. **load** the verified revision's specs ([`crate::spec`]); invalid specs on a signed
//!    commit end the reconcile `Stalled` with every file:line:col;
//! 4. **apply** the clusters' Kubernetes objects and wait for them ([`crate::k8s`]);
//! 5. **publish** the revision's routes ([`crate::publish`]) once every desired cluster is
//!    ready, and only then **prune** the clusters the revision removed, so a published
//!    route never points at a cluster that does not exist;
//! 6. **report** ([`status`]).
//!
//! It polls every `interval` (with up to 10% jitter) and at once when a webhook arrives or
//! the agent API asks; SIGTERM lets the reconcile in progress finish, then exits.
//!
//! Each cluster's cloud identity and the environment's drift ([`identity`]): the roles are
//! converged before the Kubernetes objects and deleted after a removed cluster's objects;
//! the rest of the environment is only observed (`EnvironmentInSync`).
//!
//! Two replicas run it; only the holder of a Kubernetes Lease reconciles ([`leader`]), the
//! other serves the holder's last saved status and waits.

pub mod agent;
pub mod config;
mod http;
pub mod identity;
pub mod leader;
pub mod mirror;
pub mod status;
pub mod webhook;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::state::{StateError, StateStore};
use config::{Config, StateLocation};
use status::{ClusterHealth, LastError, STATUS_KEY, Status};

/// Shared between the loop and the HTTP doors.
pub struct Shared {
    /// The status as last reported.
    pub status: Mutex<Status>,
    /// Wakes the loop (webhook, agent API).
    pub wake: Notify,
    /// Set once the first reconcile finished.
    pub ready: std::sync::atomic::AtomicBool,
    /// Counters for `/metrics`.
    pub metrics: http::Metrics,
    /// Webhook checking, when a secret is configured.
    pub webhooks: Option<webhook::Webhooks>,
    /// This replica's part in the leader election, once it started.
    pub role: std::sync::OnceLock<tokio::sync::watch::Receiver<leader::Role>>,
    /// On a standby: the holder's status as last saved in the state store.
    pub holder_status: Mutex<Option<serde_json::Value>>,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

async fn open_store(config: &Config) -> Result<Box<dyn StateStore>, StateError> {
    let (dir, s3) = match &config.state {
        StateLocation::Dir(dir) => (Some(dir.as_path()), None),
        StateLocation::S3(url) | StateLocation::Gcs(url) | StateLocation::AzureBlob(url) => (None, Some(url.as_str())),
    };
    crate::state::open(dir, s3, config.cloud_endpoint.as_deref())
        .await?
        .ok_or_else(|| StateError::Refused { key: String::new(), message: "no state store configured".into() })
}

/// Why the daemon could not start or stopped before its loop (a reconcile never fails
/// the daemon: it ends `Stopped` and says why in the status).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state store could not be opened.
    #[error("opening the state store: {0}")]
    Store(#[from] StateError),
    /// The HTTP doors could not listen (the address is taken, or not this host's).
    #[error("listening on {addr}: {source}; free the address or change `listen` in the config")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The agent API could not start (its certificates, its address).
    #[error("starting the agent API: {0}")]
    Agent(String),
    /// SIGTERM cannot be listened for.
    #[error("installing the SIGTERM handler: {0}")]
    Signal(std::io::Error),
    /// No Kubernetes client could be built (no kubeconfig, no in-cluster service account).
    #[error("connecting to Kubernetes: {0}")]
    Kubernetes(String),
    /// The API server refused the Lease requests (RBAC, or the namespace is missing)
    /// [`leader::MAX_REFUSALS`] times in a row: the daemon exits, so the pod shows it.
    #[error(
        "the API server refused the Lease {lease} {attempts} times in a row, so this replica can never reconcile: {message}\n  grant the daemon's ServiceAccount get, create and update on leases in {namespace} (manifests/base), or create the namespace {namespace} (or name another in leaderElection.namespace)"
    )]
    LeaseRefused {
        /// `namespace/name`.
        lease: String,
        /// Its namespace.
        namespace: String,
        /// Refusals in a row.
        attempts: u32,
        /// The last refusal, as the API server worded it.
        message: String,
    },
}

impl DaemonError {
    /// Whether starting again later can help: a store or an API server that could not
    /// be reached may be back; a bad address, certificate or config will not change.
    pub fn retryable(&self) -> bool {
        match self {
            DaemonError::Store(e) => e.retryable(),
            DaemonError::Kubernetes(_) => true,
            DaemonError::Listen { .. } | DaemonError::Agent(_) | DaemonError::Signal(_) | DaemonError::LeaseRefused { .. } => false,
        }
    }
}

/// How one reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The revision is applied and published.
    Applied,
    /// Nothing new since the last applied revision.
    Unchanged,
    /// Stopped at a stage; the status says why.
    Stopped,
}

/// The daemon: the loop and its doors.
pub struct Daemon {
    config: Config,
    store: Box<dyn StateStore>,
    shared: Arc<Shared>,
    last_fetch_ok: Option<Instant>,
    started: Instant,
    /// The git tree id of the environment directory last applied and published: a
    /// revision with the same tree needs no parsing, no Kubernetes writes and no publish.
    applied_tree: Option<git2::Oid>,
    /// Health wait per reconcile; a cluster not ready by then is retried next time.
    pub health_timeout: Duration,
    /// On a standby: what it verified and published of the holder's.
    mirror: mirror::Mirror,
}

impl Daemon {
    /// Opens the state store; nothing is fetched yet.
    pub async fn new(config: Config) -> Result<Daemon, DaemonError> {
        let store = open_store(&config).await?;
        let shared = Arc::new(Shared {
            status: Mutex::new(Status { name: config.name.clone(), ..Status::default() }),
            wake: Notify::new(),
            ready: false.into(),
            metrics: http::Metrics::default(),
            webhooks: config.webhook_secret.clone().map(webhook::Webhooks::new),
            role: std::sync::OnceLock::new(),
            holder_status: Mutex::new(None),
        });
        Ok(Daemon {
            config,
            store,
            shared,
            last_fetch_ok: None,
            started: Instant::now(),
            applied_tree: None,
            health_timeout: Duration::from_secs(120),
            mirror: mirror::Mirror::default(),
        })
    }

    /// The state shared with the HTTP doors.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut s = self.shared.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut s);
    }

    fn stop(&self, stage: &'static str, condition: &'static str, reason: &str, message: String) -> Ended {
        tracing::error!(stage, reason, "{message}");
        let t = now();
        self.update(|s| {
            // Stalled says a person must act: it is the one condition set True by a stop.
            s.set(condition, condition == "Stalled", reason, message.clone(), t);
            if condition != "Ready" {
                s.set("Ready", false, reason, message.clone(), t);
            }
            s.set("Reconciling", false, reason, "", t);
            s.last_error = Some(LastError { stage, message });
        });
        Ended::Stopped
    }

    /// One reconcile, start to end.
    pub async fn reconcile(&mut self) -> Ended {
        let started = Instant::now();
        let t = now();
        self.update(|s| s.set("Reconciling", true, "Progressing", "reconciling", t));
        let ended = self.stages().await;
        let result = match ended {
            Ended::Applied => "applied",
            Ended::Unchanged => "unchanged",
            Ended::Stopped => "stopped",
        };
        self.shared.metrics.observe(result, started.elapsed());
        tracing::info!(result, took_ms = started.elapsed().as_secs_f64() * 1e3, "reconcile finished");
        let t = now();
        self.update(|s| {
            s.reconciles += 1;
            if ended != Ended::Stopped {
                s.set("Reconciling", false, "Succeeded", "", t);
                s.last_error = None;
            }
        });
        let snapshot = self.shared.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Ok(bytes) = serde_json::to_vec_pretty(&snapshot) {
            let version = self.store.get(STATUS_KEY).await.ok().flatten().map(|v| v.version);
            if let Err(e) = self.store.put(STATUS_KEY, &bytes, version.as_deref()).await {
                tracing::warn!("cannot save the status: {e}");
            }
        }
        self.shared.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        ended
    }

    async fn stages(&mut self) -> Ended {
        use crate::pipeline::{apply as apply_stage, load, publish, source};

        let stage_started = Instant::now();
        // fetch
        let remote = self.config.remote.clone();
        let cache = self.config.cache_dir.clone();
        let fetched = tokio::task::spawn_blocking(move || source::fetch(&remote, &cache)).await;
        let (repo, tip) = match fetched {
            Ok(Ok(f)) => (f.repo, f.tip),
            Ok(Err(e)) => return self.fetch_failed(format!("{e:#}")),
            Err(e) => return self.fetch_failed(e.to_string()),
        };
        self.last_fetch_ok = Some(Instant::now());
        self.shared.metrics.source_stale(false);
        let fetch_ms = stage_started.elapsed().as_secs_f64() * 1e3;
        let stage_started = Instant::now();
        let t = now();
        self.update(|s| {
            s.last_fetch = Some(t);
            s.set("SourceStale", false, "Fetched", format!("fetched {} at {tip}", self.config.remote.branch), t);
        });

        // verify
        let revision = crate::source::label(Some(&self.config.remote.branch), tip);
        self.update(|s| s.last_attempted_revision = Some(revision.clone()));
        // A tip that does not descend from the last verified revision is a force-push or a
        // reset of the branch: refused before any signature is read.
        let from = match source::last_verified(&repo, self.store.as_ref()).await {
            Ok(f) => f,
            Err(e) => return self.stop("verify", "SourceVerified", "StateUnreadable", e.to_string()),
        };
        if let Some(f) = from
            && f != tip
            && !repo.graph_descendant_of(tip, f).unwrap_or(false)
        {
            self.shared.metrics.rewound();
            let message = format!(
                "{revision} refused: history rewritten: the remote tip {tip} is not a descendant of the last verified revision {f} (a force-push or a reset of {}); nothing from it is applied; roll back with a new signed commit (git revert) instead",
                self.config.remote.branch
            );
            return self.stop("verify", "SourceVerified", "HistoryRewritten", message);
        }
        let report = match source::verify(&repo, &self.config.policy, Some(self.store.as_ref()), None, tip, now()).await {
            Ok(r) => r,
            Err(e @ source::VerifyError::Walk(_)) => return self.stop("verify", "SourceVerified", "VerifyFailed", e.to_string()),
            Err(e @ source::VerifyError::StateUnwritable(_)) => {
                return self.stop("verify", "SourceVerified", "StateUnwritable", e.to_string());
            }
            Err(e @ source::VerifyError::StateUnreadable(_)) => {
                return self.stop("verify", "SourceVerified", "StateUnreadable", e.to_string());
            }
        };
        if !report.ok {
            self.shared.metrics.verify_refused();
            let why = report.reasons.first().cloned().unwrap_or_default();
            return self.stop("verify", "SourceVerified", "VerificationFailed", format!("{revision} refused: {why}"));
        }
        let t = now();
        self.update(|s| s.set("SourceVerified", true, "Verified", format!("{revision}: {} commit(s) verified", report.commits.len()), t));
        let verify_ms = stage_started.elapsed().as_secs_f64() * 1e3;
        let stage_started = Instant::now();
        if self.applied() == Some(revision.clone()) {
            self.shared.metrics.parse_skipped();
            // Still applied: a stop since (a fetch that failed) is over.
            let t = now();
            self.update(|s| {
                s.set("Ready", true, "Applied", format!("{revision} is applied"), t);
                s.set("Stalled", false, "Applied", "", t);
            });
            tracing::info!(revision, fetch_ms, verify_ms, "unchanged revision; nothing parsed");
            return Ended::Unchanged;
        }
        // The same environment tree as the one applied: nothing to parse, write or publish.
        let tree = env_tree(&repo, tip, &self.config.environment);
        if tree.is_some() && tree == self.applied_tree {
            self.shared.metrics.parse_skipped();
            let t = now();
            self.update(|s| {
                s.last_applied_revision = Some(revision.clone());
                s.set(
                    "Ready",
                    true,
                    "Applied",
                    format!("{revision}: {} is unchanged since the last applied revision", self.config.environment),
                    t,
                );
                s.set("Stalled", false, "Applied", "", t);
            });
            tracing::info!(revision, fetch_ms, verify_ms, "environment tree unchanged; nothing parsed");
            return Ended::Unchanged;
        }

        // load
        let loaded = match load::at_revision(&repo, &tip.to_string(), &self.config.environment) {
            Ok(l) => l,
            Err(e @ load::LoadError::Missing { .. }) => return self.stop("load", "Stalled", "EnvironmentMissing", e.to_string()),
            Err(load::LoadError::Invalid { problems, .. }) => {
                let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
                return self.stop("load", "Stalled", "InvalidSpecs", format!("{revision} is not valid:\n{}", all.join("\n")));
            }
            Err(e @ load::LoadError::Source(_)) => return self.stop("load", "Stalled", "SourceUnreadable", e.to_string()),
        };

        let load_ms = stage_started.elapsed().as_secs_f64() * 1e3;
        let stage_started = Instant::now();

        // apply: the clusters' cloud identities first (their service accounts name them),
        // then the Kubernetes half
        if let Err(ended) = self.cloud_pass(&loaded.specs, &revision, identity::Pass::Converge).await {
            return ended;
        }
        let client = match crate::k8s::client_as(
            self.config.kubeconfig.as_deref(),
            self.config.context.as_deref(),
            Some(&self.user_agent()),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => return self.stop("apply", "Ready", "KubernetesUnreachable", format!("{e:#}")),
        };
        let options = crate::k8s::reconcile::Options {
            health_timeout: self.health_timeout,
            poll_interval: Duration::from_millis(500).min(self.health_timeout),
            ..Default::default()
        };
        let mut k8s = match apply_stage::Kubernetes::new(client, self.store.as_ref(), &loaded.specs, options).await {
            Ok(k) => k,
            Err(e @ apply_stage::KubernetesError::Objects(_)) => return self.stop("apply", "Stalled", "ObjectsInvalid", e.to_string()),
            Err(e) => return self.stop("apply", "Ready", "InventoryUnreadable", e.to_string()),
        };
        let report = match k8s.converge_and_wait().await {
            Ok(r) => r,
            Err(e) => return self.stop("apply", "Ready", "ApplyFailed", e.to_string()),
        };
        let clusters: Vec<ClusterHealth> = report.clusters.iter().map(health).collect();
        self.update(|s| s.clusters = clusters);
        if !report.ok() {
            let stalled: Vec<String> = report
                .clusters
                .iter()
                .filter(|c| c.outcome == crate::k8s::reconcile::Outcome::Stalled)
                .map(|c| format!("{}: {}", c.cluster, c.message))
                .collect();
            return self.stop("apply", "Ready", "ClustersNotReady", format!("{revision}: not published; {}", stalled.join("; ")));
        }

        let apply_ms = stage_started.elapsed().as_secs_f64() * 1e3;
        let stage_started = Instant::now();

        // publish, then prune
        if let Err(e) = publish::publish(&self.config.publish_dir, &tip.to_string(), &self.config.environment, &loaded.files) {
            return self.stop("publish", "Ready", "PublishFailed", e.to_string());
        }
        // For the standby's RWProxy: what was published, every cluster Ready (a stalled
        // one stopped the reconcile above). The standby checks it against git itself.
        let ready: Vec<String> =
            report.clusters.iter().filter(|c| c.outcome == crate::k8s::reconcile::Outcome::Ready).map(|c| c.cluster.clone()).collect();
        self.record_published(&mirror::record(&loaded, &self.config.environment, &ready, &self.config.lease.identity)).await;
        let removed = match k8s.prune().await {
            Ok(r) => r,
            Err(e) => return self.stop("apply", "Ready", "PruneFailed", e.to_string()),
        };
        // a removed cluster's identity goes once its Kubernetes objects are gone
        if let Err(ended) = self.cloud_pass(&loaded.specs, &revision, identity::Pass::Prune).await {
            return ended;
        }
        if let Err(e) = k8s.record(Some(tip), &self.config.environment).await {
            return self.stop("apply", "Ready", "StateUnwritable", e.to_string());
        }
        let t = now();
        self.update(|s| {
            s.clusters.extend(removed.iter().map(health));
            s.last_applied_revision = Some(revision.clone());
            s.set("Ready", true, "Applied", format!("applied and published {revision}"), t);
            s.set("Stalled", false, "Applied", "", t);
        });
        self.shared.metrics.succeeded(t);
        self.applied_tree = tree;
        let publish_ms = stage_started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(revision, fetch_ms, verify_ms, load_ms, apply_ms, publish_ms, "applied and published");
        Ended::Applied
    }

    fn applied(&self) -> Option<String> {
        self.shared.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).last_applied_revision.clone()
    }

    fn fetch_failed(&mut self, message: String) -> Ended {
        self.shared.metrics.fetch_failed();
        let since = self.last_fetch_ok.unwrap_or(self.started);
        if since.elapsed() >= self.config.stale_after {
            self.shared.metrics.source_stale(true);
            let t = now();
            let m = format!("no successful fetch for {}s: {message}", since.elapsed().as_secs());
            self.update(|s| s.set("SourceStale", true, "FetchFailing", m, t));
        }
        self.stop("fetch", "Ready", "FetchFailed", message)
    }

    /// `byoc/VERSION (IDENTITY)`: what the API server sees this replica as.
    fn user_agent(&self) -> String {
        format!("byoc/{} ({})", env!("CARGO_PKG_VERSION"), self.config.lease.identity)
    }

    /// Reconciles until SIGTERM (or, with `once`, one time), serving the doors meanwhile;
    /// only while this replica holds the lease.
    pub async fn run(mut self, once: bool) -> Result<Ended, DaemonError> {
        let addr = self.config.listen;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| DaemonError::Listen { addr, source })?;
        let bound = listener.local_addr().map_err(|source| DaemonError::Listen { addr, source })?;
        tracing::info!(listen = %bound, "status, metrics and webhooks");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(http::serve(listener, self.shared.clone(), shutdown.clone()));
        let agent = match &self.config.agent {
            Some(a) => Some(
                agent::start(a, self.shared.clone(), &self.config.publish_dir, shutdown.clone())
                    .await
                    .map_err(|e| DaemonError::Agent(format!("{e:#}")))?,
            ),
            None => None,
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(DaemonError::Signal)?;
        let client = crate::k8s::client_as(self.config.kubeconfig.as_deref(), self.config.context.as_deref(), Some(&self.user_agent()))
            .await
            .map_err(|e| DaemonError::Kubernetes(format!("{e:#}")))?;
        let mut leadership = leader::Leadership::start(client, self.config.lease.clone());
        let _ = self.shared.role.set(leadership.watch());
        let mut last = Ended::Unchanged;
        let outcome = loop {
            if !leadership.role().is_leader() {
                match self.standby(&mut leadership, &mut term).await {
                    Standby::Leading => {}
                    Standby::Stopping => break Ok(last),
                    Standby::Refused(e) => break Err(e),
                }
            }
            let mut lost = false;
            let ended = tokio::select! {
                ended = self.reconcile() => ended,
                () = leadership.lost() => {
                    // Another replica may take over from now on: not one more write of
                    // what the reconcile was doing.
                    tracing::error!(stage = "lease", "lost the lease during a reconcile; stopped it");
                    lost = true;
                    Ended::Stopped
                }
            };
            if lost {
                // The one write still made: freeing what the stopped reconcile held, so the
                // new holder's cloud pass does not wait for it to expire.
                self.give_back_apply_lease().await;
            }
            last = ended;
            if once {
                break Ok(ended);
            }
            let jitter = self.config.interval.mul_f64(rand::random::<f64>() * 0.1);
            tokio::select! {
                () = tokio::time::sleep(self.config.interval + jitter) => {}
                () = self.shared.wake.notified() => {}
                _ = term.recv() => break Ok(ended),
                _ = tokio::signal::ctrl_c() => break Ok(ended),
            }
        };
        // The step in progress has finished: give the lease to the other replica at once.
        leadership.release().await;
        shutdown.cancel();
        let _ = server.await;
        if let Some(agent) = agent {
            let _ = agent.await;
        }
        outcome
    }

    /// Records what this holder published for the standby (a failure only delays the
    /// standby's routes: logged, not a stop).
    async fn record_published(&self, record: &mirror::PublishedRecord) {
        let Ok(bytes) = serde_json::to_vec_pretty(record) else { return };
        let version = match self.store.get(mirror::PUBLISHED_KEY).await {
            Ok(v) => v.map(|v| v.version),
            Err(e) => {
                tracing::warn!(stage = "publish", "cannot record the published revision for the standby: {e}");
                return;
            }
        };
        if let Err(e) = self.store.put(mirror::PUBLISHED_KEY, &bytes, version.as_deref()).await {
            tracing::warn!(stage = "publish", "cannot record the published revision for the standby: {e}");
        }
    }

    /// A reconcile stopped part-way (its future dropped when the Kubernetes Lease was
    /// lost) may have held the environment's apply lease in the state store for a cloud
    /// pass: give it back by name, so the next holder need not wait for it to expire.
    async fn give_back_apply_lease(&self) {
        match crate::state::lease::release_held_by(self.store.as_ref(), &identity::holder(), now()).await {
            Ok(true) => tracing::info!(stage = "lease", "gave back the environment's apply lease a stopped reconcile held"),
            Ok(false) => {}
            Err(e) => tracing::warn!(stage = "lease", "could not give back the environment's apply lease ({e}); it expires on its own"),
        }
    }

    /// Waits while another replica holds the lease, serving its last saved status, until
    /// this one leads, SIGTERM (or Ctrl-C) comes, or the API server keeps refusing the Lease.
    ///
    /// A refused Lease (403: RBAC; 404 on create: no namespace) is reported at once, on
    /// each refusal (`Stalled` with reason `LeaseRefused`, an error log line,
    /// `byoc_lease_refusals_total`), and after [`leader::MAX_REFUSALS`] in a row ends the
    /// daemon with an error: the pod then shows `CrashLoopBackOff` with the message as its
    /// last log, where a platform engineer looks first, and each restart tries again, so a
    /// fixed Role heals it without a person restarting anything. Staying up in standby
    /// would look healthy (a standby is ready, for its RWProxy) while nothing reconciles.
    async fn standby(&mut self, leadership: &mut leader::Leadership, term: &mut tokio::signal::unix::Signal) -> Standby {
        let retry = self.config.lease.retry();
        let mut refusals_seen = 0;
        loop {
            let role = leadership.role();
            if role.is_leader() {
                *self.shared.holder_status.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                // Another replica may have written since this one last did: converge fully.
                self.applied_tree = None;
                self.update(|s| s.last_applied_revision = None);
                return Standby::Leading;
            }
            if role.refusals > refusals_seen {
                self.shared.metrics.lease_refused(role.refusals - refusals_seen);
                refusals_seen = role.refusals;
                let lease = format!("{}/{}", self.config.lease.namespace, self.config.lease.name);
                let message = format!(
                    "the API server refused the Lease {lease} ({} of {} tries): {}",
                    role.refusals,
                    leader::MAX_REFUSALS,
                    role.error.clone().unwrap_or_default()
                );
                self.stop("lease", "Stalled", "LeaseRefused", message);
                if role.role == "refused" {
                    return Standby::Refused(DaemonError::LeaseRefused {
                        lease,
                        namespace: self.config.lease.namespace.clone(),
                        attempts: role.refusals,
                        message: role.error.unwrap_or_default(),
                    });
                }
            } else if role.refusals == 0 {
                refusals_seen = 0;
            }
            if role.role == "standby" && role.refusals == 0 {
                let saved = self.store.get(STATUS_KEY).await.ok().flatten().and_then(|v| serde_json::from_slice(&v.value).ok());
                *self.shared.holder_status.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = saved;
                // Ready: the pod's RWProxy serves SQL whichever replica writes, from the
                // holder's revision, which this replica fetches, verifies and publishes.
                self.shared.ready.store(true, std::sync::atomic::Ordering::Relaxed);
                self.mirror_holder().await;
            }
            tokio::select! {
                () = leadership.changed() => {}
                () = tokio::time::sleep(retry) => {}
                _ = term.recv() => return Standby::Stopping,
                _ = tokio::signal::ctrl_c() => return Standby::Stopping,
            }
        }
    }
}

/// How a standby wait ended.
enum Standby {
    /// This replica holds the lease now.
    Leading,
    /// SIGTERM or Ctrl-C.
    Stopping,
    /// The API server kept refusing the Lease.
    Refused(DaemonError),
}

/// The git tree id of `env` at `commit`: equal ids, equal files, byte for byte.
fn env_tree(repo: &git2::Repository, commit: git2::Oid, env: &str) -> Option<git2::Oid> {
    let root = repo.find_commit(commit).ok()?.tree().ok()?;
    let dir = env.trim_matches('/');
    if dir.is_empty() || dir == "." {
        return Some(root.id());
    }
    root.get_path(std::path::Path::new(dir)).ok().map(|e| e.id())
}

/// One cluster's line in the status.
fn health(c: &crate::k8s::reconcile::ClusterReport) -> ClusterHealth {
    ClusterHealth { name: c.cluster.clone(), outcome: format!("{:?}", c.outcome).to_lowercase(), message: c.message.clone() }
}
