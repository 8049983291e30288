//! A small, state-keeping FAKE of the Google Cloud REST APIs the GCP provider calls, for
//! tests. No emulator exists for Compute, GKE, IAM, Resource Manager or Service Usage, so
//! the provider is tested against this fake, driven by the real `google-cloud-*` Rust
//! clients (see `tests/`). It is not Google Cloud: it keeps the resources in memory and
//! judges requests by the rules below, each taken from the API's reference page.
//!
//! One plain-HTTP port on 127.0.0.1 serves every API (point the clients at [`Double::url`]
//! with `with_endpoint` and anonymous credentials):
//!
//! - Compute v1 ([`compute`]): networks, subnetworks, firewalls, routers (NAT is a field of
//!   the router), global and regional operations. Every mutation answers an Operation that
//!   goes PENDING -> RUNNING -> DONE over [`Options::operation_polls`] polls (`get` or
//!   `wait`); only DONE makes the change visible
//!   (<https://cloud.google.com/compute/docs/api/how-tos/api-requests-responses#handling_api_responses>).
//!   What Compute reports through the operation (a deletion of something in use, a range
//!   conflicting with another subnetwork's) ends the operation DONE with `error.errors[]`
//!   and `httpErrorStatusCode` 400, and changes nothing; note that the client's
//!   `poller().until_done()` answers such an operation as `Ok`, with `error` set.
//! - GKE, container v1 ([`gke`]): clusters (create, get, list, update, delete,
//!   `:setResourceLabels`) and node pools (create, get, list, update, delete, `:setSize`,
//!   `:setAutoscaling`) and their operations; a cluster is PROVISIONING until its
//!   operation is DONE, then RUNNING with its endpoint and CA.
//! - IAM admin v1 ([`iam`]): service accounts (create with `accountId`, get, list, patch,
//!   update, delete) and their `getIamPolicy`/`setIamPolicy`/`testIamPermissions`.
//! - IAM admin v1 custom roles of the project ([`roles`]): create, get, list, patch with
//!   etag, soft delete, undelete; a binding naming `projects/P/roles/ID` needs the role.
//! - Resource Manager v3 ([`iam`]): `projects/P` (get), its IAM policy with etag
//!   read-modify-write (a stale etag is 409 `ABORTED`, as the API answers), and
//!   `testIamPermissions` (leaving out [`Options::denied_permissions`]).
//! - Service Usage v1 ([`services`]): get, batchGet, list by state, enable/disable.
//! - Cloud Storage ([`gcs`]): `/storage/v1`, `/upload/storage/v1` and `/download/storage/v1`
//!   are forwarded unchanged to the fake-gcs-server given as [`Options::gcs_upstream`],
//!   except bucket IAM (`/storage/v1/b/B/iam`), which fake-gcs-server lacks and this fake
//!   keeps (a stale etag there is 412, as Cloud Storage answers preconditions), and the
//!   bucket fields fake-gcs-server drops (labels, `iamConfiguration`, `lifecycle`, ...;
//!   collection `buckets`), with bucket names and labels judged as Cloud Storage does.
//! - Every API answers 403 `accessNotConfigured` while its service is in
//!   [`Options::disabled_services`].
//!
//! Errors are Google's error JSON ([`error`]). Every request may instead be answered 429
//! `RESOURCE_EXHAUSTED` or 503 `UNAVAILABLE` with probability [`Options::fault_rate`],
//! drawn from a generator seeded by [`Options::seed`], so a run is repeatable.
//!
//! [`Double::snapshot`] shows the stored resources by collection path: Compute's
//! `projects/P/global/networks`, `projects/P/global/firewalls`,
//! `projects/P/regions/R/subnetworks`, `projects/P/regions/R/routers`; GKE's
//! `projects/P/locations/L/clusters`, `projects/P/locations/L/clusters/C/nodePools` and
//! `.../clusters/C/nodePoolSizes` (each pool's node count, `{"nodeCount": N}`);
//! IAM's `projects/P/serviceAccounts` (keyed by email) and `iamPolicies` (keyed by resource:
//! `projects/P`, `projects/P/serviceAccounts/EMAIL`, `b/BUCKET`); `buckets` (the bucket
//! fields the fake keeps over fake-gcs-server, with `metageneration`). Objects and the rest
//! of each bucket live in fake-gcs-server. [`Double::tamper`] takes the same collection
//! paths and names.
//!
//! Beyond the shared contract (additions, nothing changed): [`Options::region`] is only
//! informational (every GCP region is accepted, unknown ones are 400); the modules are
//! public for their constants and rule checks ([`compute::BASE`], [`gke::VERSION`], [`gke::SIZES`],
//! [`iam::POLICIES`], [`iam::PROJECT_NUMBER`], [`gcs::BUCKETS`], [`gcs::KEPT`],
//! [`names::rfc1035`], [`names::location_ok`], [`iam::account_id_ok`],
//! [`gcs::bucket_name_ok`]) and [`error::ApiError`]; `src/main.rs` runs the fake by hand.
//!
//! Not done: Compute addresses, forwarding rules, backend services, health checks and
//! service attachments (the provider makes none: GKE makes the load balancers, and the
//! ServiceAttachment is a Kubernetes object, so "a PSC subnet used for an attachment" is
//! not judged here); GKE verbs other than `setSize`, `setAutoscaling` and
//! `setResourceLabels`; filters other
//! than on `name`; authentication (any or no token is accepted).

pub mod authz;
pub mod compute;
pub mod error;
pub mod gcs;
pub mod gke;
pub mod iam;
pub mod names;
pub mod roles;
pub mod services;
mod state;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use error::ApiError;
use state::State;

/// How the double starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// The one project that exists.
    pub project: String,
    /// The region the provider works in (others are accepted too).
    pub region: String,
    /// A fake-gcs-server URL to forward `/storage/v1` and `/upload/storage/v1` to.
    pub gcs_upstream: Option<String>,
    /// Share of requests answered 429 or 503 in Google's error JSON instead.
    pub fault_rate: f64,
    /// Seed of the fault generator (and of fingerprints).
    pub seed: u64,
    /// How many polls an operation takes to reach DONE (0: DONE at once).
    pub operation_polls: u32,
    /// Services (`compute.googleapis.com`, ...) that are disabled in the project.
    pub disabled_services: Vec<String>,
    /// Permissions the caller lacks: `testIamPermissions` leaves them out of its answer, and
    /// a request that needs one ([`authz::permission`]) is answered 403 `PERMISSION_DENIED`.
    pub denied_permissions: Vec<String>,
    /// The principal the caller is (`serviceAccount:EMAIL`), or none: anyone. With one, a
    /// request needing a permission ([`authz::permission`]) is also refused unless a
    /// binding of the project's policy gives that principal, unconditionally, a custom role
    /// of the project ([`roles`]) holding the permission. Predefined roles grant nothing
    /// here (the fake does not know their permissions).
    pub caller: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            project: "byoc-test-project".to_owned(),
            region: "us-central1".to_owned(),
            gcs_upstream: None,
            fault_rate: 0.0,
            seed: 0,
            operation_polls: 2,
            disabled_services: Vec::new(),
            denied_permissions: Vec::new(),
            caller: None,
        }
    }
}

/// The state the server and every handle share.
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Stops the server when the last [`Double`] is dropped.
struct Handle {
    shared: Arc<Shared>,
    url: String,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            // The server may have stopped already; nothing to tell it then.
            let _ = stop.send(());
        }
    }
}

/// The fake; clones share state.
#[derive(Clone)]
pub struct Double {
    handle: Arc<Handle>,
}

impl Double {
    /// Starts on 127.0.0.1:0 on its own thread and tokio runtime (usable from sync tests);
    /// stops when the last clone is dropped.
    pub fn spawn(opts: Options) -> anyhow::Result<Double> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared { state: Mutex::new(State::new(opts)) });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let server = shared.clone();
        std::thread::Builder::new().name("gcp-double".to_owned()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                tokio::select! {
                    _ = serve(server, listener) => {}
                    _ = stopped => {}
                }
            });
        })?;
        Ok(Double { handle: Arc::new(Handle { shared, url: format!("http://{addr}"), stop: Mutex::new(Some(stop)) }) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.handle.shared.state()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.handle.url.clone()
    }

    /// `{"<collection path>": {"<name>": resource JSON as the API returns it}}`.
    pub fn snapshot(&self) -> Value {
        let state = self.state();
        Value::Object(
            state
                .collections
                .iter()
                .map(|(c, items)| (c.clone(), Value::Object(items.iter().map(|(n, v)| (n.clone(), v.clone())).collect())))
                .collect(),
        )
    }

    /// `METHOD PATH` of every mutating request answered 2xx, in order.
    pub fn writes(&self) -> Vec<String> {
        self.state().writes.clone()
    }

    /// Every permission a request was checked for (granted or not), sorted.
    pub fn permissions_checked(&self) -> Vec<String> {
        self.state().permissions_checked.iter().cloned().collect()
    }

    /// Forgets the permissions checked so far.
    pub fn clear_permissions_checked(&self) {
        self.state().permissions_checked.clear();
    }

    /// Denies exactly `permissions` from now on (requests needing one answer 403).
    pub fn set_denied_permissions(&self, permissions: Vec<String>) {
        self.state().opts.denied_permissions = permissions;
    }

    /// From now on, acts as `member` (see [`Options::caller`]); `None`: anyone again.
    pub fn act_as(&self, member: Option<String>) {
        self.state().opts.caller = member;
    }

    /// How many requests were answered with an injected fault.
    pub fn faults_injected(&self) -> u64 {
        self.state().faults
    }

    /// Changes the share of requests answered with a fault from now on.
    pub fn set_fault_rate(&self, rate: f64) {
        self.state().opts.fault_rate = rate;
    }

    /// Drift: changes a stored resource as another actor would (merge-patch of its JSON),
    /// bumping its fingerprint/etag.
    pub fn tamper(&self, collection: &str, name: &str, patch: Value) -> anyhow::Result<()> {
        self.state().tamper(collection, name, &patch).map_err(|e| anyhow::anyhow!("{}", e.message))
    }
}

/// One request, parsed.
pub(crate) struct Req {
    pub method: Method,
    /// The path without its leading `/`, split at `/`, percent-decoded.
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Value,
}

impl Req {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn segs(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }
}

/// A handler's answer: the body, and whether the request changed something.
pub(crate) struct Reply {
    pub body: Value,
    pub mutating: bool,
}

impl Reply {
    pub(crate) fn read(body: Value) -> Result<Reply, ApiError> {
        Ok(Reply { body, mutating: false })
    }

    pub(crate) fn write(body: Value) -> Result<Reply, ApiError> {
        Ok(Reply { body, mutating: true })
    }
}

async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    Ok::<_, Infallible>(answer(&shared, Request::from_parts(parts, bytes)).await.map(Full::new))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            // A client that goes away mid-request is its own business.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

pub(crate) fn json_response(status: u16, body: &Value) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json; charset=UTF-8"));
    resp
}

async fn answer(shared: &Shared, req: Request<Bytes>) -> Response<Bytes> {
    {
        let mut state = shared.state();
        let rate = state.opts.fault_rate;
        if rate > 0.0 && state.draw() < rate {
            state.faults += 1;
            let e = if state.random().is_multiple_of(2) {
                ApiError::new(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "rateLimitExceeded",
                    "Quota exceeded for quota metric 'Queries' (injected by the fake)",
                )
            } else {
                ApiError::new(503, "UNAVAILABLE", "backendError", "The service is currently unavailable (injected by the fake).")
            };
            return json_response(e.code, &e.body());
        }
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if let Some(p) = authz::permission(&method, &path) {
        let mut state = shared.state();
        state.permissions_checked.insert(p.to_owned());
        let held = match state.opts.caller.clone() {
            Some(member) => granted(&state, &member, p),
            None => true,
        };
        if !held || state.opts.denied_permissions.iter().any(|d| d == p) {
            let e = ApiError::denied("forbidden", format!("Permission '{p}' denied on resource '{path}' (or it may not exist)."));
            return json_response(e.code, &e.body());
        }
    }
    if let Some(resp) = storage(shared, &path, req.clone()).await {
        return resp;
    }
    let segments: Vec<String> = path.trim_start_matches('/').split('/').map(percent_decode).collect();
    let query: Vec<(String, String)> = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let body = if req.body().is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(req.body()) {
            Ok(v) => v,
            Err(e) => {
                let e = ApiError::invalid(format!("Invalid JSON payload received. {e}"));
                return json_response(e.code, &e.body());
            }
        }
    };
    let parsed = Req { method: method.clone(), segments, query, body };
    let mut state = shared.state();
    let result = route(&mut state, &parsed);
    match result {
        Ok(reply) => {
            if reply.mutating {
                state.writes.push(format!("{method} {path}"));
            }
            json_response(200, &reply.body)
        }
        Err(e) => json_response(e.code, &e.body()),
    }
}

/// Whether the project's policy binds `member`, without a condition, to a custom role of
/// the project that holds `permission`.
fn granted(state: &State, member: &str, permission: &str) -> bool {
    let project = format!("projects/{}", state.opts.project);
    let policy = iam::get_policy(state, &project);
    policy["bindings"].as_array().into_iter().flatten().any(|b| {
        b.get("condition").is_none()
            && b["members"].as_array().is_some_and(|ms| ms.iter().any(|m| m == member))
            && b["role"]
                .as_str()
                .filter(|r| r.starts_with(&format!("{project}/roles/")))
                .and_then(|r| roles::permissions_of(state, r))
                .is_some_and(|ps| ps.iter().any(|p| p == permission))
    })
}

/// Cloud Storage: everything but bucket IAM goes to the upstream (`None`: not a storage path,
/// or bucket IAM, which [`route`] answers).
async fn storage(shared: &Shared, path: &str, req: Request<Bytes>) -> Option<Response<Bytes>> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let upstream = shared.state().opts.gcs_upstream.clone();
    match segs.as_slice() {
        ["storage", "v1", "b", bucket, "iam", ..] => {
            // IAM of a bucket the upstream lacks is 404, as Cloud Storage answers.
            let upstream = upstream?;
            let probe = Request::get(format!("/storage/v1/b/{bucket}")).body(Bytes::new()).ok()?;
            match gcs::forward(&upstream, probe).await {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(r),
                Err(e) => Some(json_response(e.code, &e.body())),
            }
        }
        ["storage", "v1", ..] | ["upload", "storage", "v1", ..] | ["download", "storage", "v1", ..] => {
            let method = req.method().clone();
            let resp = match upstream {
                Some(up) => gcs::storage_call(shared, &up, &segs, req).await,
                None => {
                    let e = ApiError::new(404, "NOT_FOUND", "notFound", "the fake has no GCS upstream (Options::gcs_upstream)");
                    json_response(e.code, &e.body())
                }
            };
            if resp.status().is_success() && method != Method::GET && method != Method::HEAD {
                shared.state().writes.push(format!("{method} {path}"));
            }
            Some(resp)
        }
        _ => None,
    }
}

fn route(state: &mut State, req: &Req) -> Result<Reply, ApiError> {
    let segs = req.segs();
    match segs.as_slice() {
        ["compute", "v1", "projects", project, rest @ ..] => {
            check_project(state, project)?;
            check_service(state, "compute.googleapis.com", "Compute Engine API", project)?;
            compute::route(state, req, project, rest)
        }
        ["v1", "projects", project, "locations", location, rest @ ..] => {
            check_project(state, project)?;
            check_service(state, "container.googleapis.com", "Kubernetes Engine API", project)?;
            gke::route(state, req, project, location, rest)
        }
        ["v1", "projects", project, rest @ ..] if rest.first() == Some(&"roles") => {
            check_project(state, project)?;
            check_service(state, "iam.googleapis.com", "Identity and Access Management (IAM) API", project)?;
            roles::route(state, req, project, rest)
        }
        ["v1", "projects", project, rest @ ..] if rest.first().is_some_and(|s| s.starts_with("serviceAccounts")) => {
            // `projects/-/serviceAccounts/EMAIL`: IAM infers the project from the account.
            let owned = state.opts.project.clone();
            let project = if *project == "-" { owned.as_str() } else { project };
            check_project(state, project)?;
            check_service(state, "iam.googleapis.com", "Identity and Access Management (IAM) API", project)?;
            iam::route_accounts(state, req, project, rest)
        }
        ["v1", "projects", project, rest @ ..] if rest.first().is_some_and(|s| s.starts_with("services")) => {
            if *project != state.opts.project && *project != iam::PROJECT_NUMBER {
                check_project(state, project)?;
            }
            services::route(state, req, rest)
        }
        ["storage", "v1", "b", bucket, "iam", rest @ ..] => gcs::route_iam(state, req, bucket, rest),
        ["v3", "projects", target] => {
            check_service(state, "cloudresourcemanager.googleapis.com", "Cloud Resource Manager API", &state.opts.project.clone())?;
            iam::route_project(state, req, target)
        }
        _ => Err(ApiError::new(404, "NOT_FOUND", "notFound", format!("the fake does not serve {} /{}", req.method, segs.join("/")))),
    }
}

/// Only the configured project exists (403 as Google answers for a project one cannot see).
pub(crate) fn check_project(state: &State, project: &str) -> Result<(), ApiError> {
    if project == state.opts.project {
        Ok(())
    } else {
        Err(ApiError::denied("forbidden", format!("Permission denied on resource project {project} (or it may not exist).")))
    }
}

/// One page of `items` from `pageToken` (an offset) with at most `maxResults` (default 500).
pub(crate) fn page(items: Vec<Value>, max: Option<&str>, token: Option<&str>) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let max: usize = match max {
        Some(m) => m.parse().map_err(|_| ApiError::invalid(format!("Invalid value for field 'maxResults': '{m}'")))?,
        None => 500,
    };
    let start: usize = match token.filter(|t| !t.is_empty()) {
        Some(t) => t.parse().map_err(|_| ApiError::invalid(format!("Invalid value for field 'pageToken': '{t}'")))?,
        None => 0,
    };
    let max = if max == 0 { 500 } else { max };
    let end = (start + max).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items.into_iter().skip(start).take(max).collect(), next))
}

/// 403 `SERVICE_DISABLED` for an API that is not enabled in the project, as Google answers
/// (<https://cloud.google.com/service-usage/docs/reference/rest>: "API has not been used in
/// project ... before or it is disabled"; `errors[].reason` is `accessNotConfigured`).
pub(crate) fn check_service(state: &State, service: &str, title: &str, project: &str) -> Result<(), ApiError> {
    if state.opts.disabled_services.iter().any(|s| s == service) {
        return Err(ApiError::denied(
            "accessNotConfigured",
            format!(
                "{title} has not been used in project {project} before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/{service}/overview?project={project} then retry."
            ),
        ));
    }
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit() {
            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
