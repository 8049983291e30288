//! [`Cloud`] on GCP with Google's generated REST clients, one file per service:
//! [`network`] (VPC network, subnetworks, firewall rules, Cloud Router + NAT),
//! [`kubernetes`] (GKE cluster, node pools), [`identity`] (service accounts, IAM bindings),
//! [`custom_role`] (the agent's custom IAM role),
//! [`storage`] (GCS buckets over the JSON API) and [`preflight`] (checks made before any
//! change). This file holds the provider type, its clients, Google's errors as
//! [`CloudError`]s, waiting on operations, and the [`Cloud`] impl that dispatches each
//! `gcp.*` kind to its service.
//!
//! Ownership is proven per kind as GCP allows (see `expand/gcp.rs`):
//! - GKE clusters, node pools and buckets carry labels: `byoc-environment` (this
//!   environment), `byoc-managed-by=byoc` and `byoc-resource` (the graph's id, in label
//!   form). Observe lists clusters (and their pools) in the region and keeps those with the
//!   environment's labels; buckets have fixed names ([`Gcp::buckets`]), are read by name
//!   and are ours when labelled so (or when the inventory records them).
//! - Networks, subnetworks, firewall rules, routers and service accounts take no labels:
//!   they are named from the environment (`byoc-<env>-...`) and their `description` holds
//!   the ownership line (`names::gcp::ownership_description`), which names the environment
//!   and the graph's resource id exactly. Observe lists them and keeps those whose
//!   description names this environment. A create answered ALREADY_EXISTS adopts the
//!   resource only if its description names this resource of this environment; otherwise
//!   it is an [`OWNERSHIP_CONFLICT`].
//! - The agent's custom role takes no labels either: its id is named from the environment
//!   and its `description` carries the ownership line; observe reads it by id.
//! - IAM bindings are not resources in GCP: a binding is ours when the inventory or the
//!   desired graph names it ([`Gcp::bindings`]) and the policy holds its role and member
//!   (one of our service accounts, or the workload-identity member of one). Bindings are
//!   changed by read-modify-write with the policy's etag, so another member's binding is
//!   never dropped.
//! - `gcp.service-attachment` is a GKE `ServiceAttachment` object, applied in the cluster
//!   by the Kubernetes half: [`super::cloud_part`] leaves it out, and this provider refuses
//!   it rather than call Compute for it.

mod custom_role;
mod identity;
mod kubernetes;
mod network;
pub mod preflight;
mod storage;

use std::time::{Duration, Instant};

use google_cloud_auth::credentials::Credentials;
use google_cloud_gax::retry_policy::NeverRetry;

use super::retry::{Retrier, Retry, chain};
use super::{Cloud, CloudError, Found, Refs};
use crate::expand::names;
use crate::resource::{Kind, Map, Resource, ResourceId, Value};

/// Code of the error for a resource that exists under our name but is not ours.
pub const OWNERSHIP_CONFLICT: &str = "OwnershipConflict";
/// Code of the error made for an endpoint that cannot be reached at all.
pub const UNREACHABLE: &str = super::retry::UNREACHABLE;

/// Google's canonical codes a retry may get past (google.rpc.Code): throttling and quota
/// (RESOURCE_EXHAUSTED, HTTP 429), an unavailable or failing backend (UNAVAILABLE 503,
/// INTERNAL 500), a deadline passed (DEADLINE_EXCEEDED 504). ABORTED (a concurrent
/// change, 409 on setIamPolicy) is not retried blindly: the caller reads again first.
const TRANSIENT: &[&str] = &["RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"];

/// A GCP project and region, through Google's clients.
pub struct Gcp {
    environment: String,
    project: String,
    region: String,
    networks: google_cloud_compute_v1::client::Networks,
    subnetworks: google_cloud_compute_v1::client::Subnetworks,
    firewalls: google_cloud_compute_v1::client::Firewalls,
    routers: google_cloud_compute_v1::client::Routers,
    global_operations: google_cloud_compute_v1::client::GlobalOperations,
    region_operations: google_cloud_compute_v1::client::RegionOperations,
    gke: google_cloud_container_v1::client::ClusterManager,
    iam: google_cloud_iam_admin_v1::client::Iam,
    projects: google_cloud_resourcemanager_v3::client::Projects,
    usage: google_cloud_api_serviceusage_v1::client::ServiceUsage,
    storage: storage::Client,
    /// The names of the environment's buckets by resource id: observe reads these only.
    pub buckets: Vec<(ResourceId, String)>,
    /// Buckets the inventory records: ours by that record even where the storage
    /// service keeps no labels (an emulator).
    pub recorded_buckets: Vec<String>,
    /// The IAM bindings the desired graph and the inventory name: observe looks for these
    /// in the policies they are on (see the module doc).
    pub bindings: Vec<Resource>,
    /// Service accounts' emails by resource id, for the bindings whose member or target
    /// is one that observe did not find.
    pub accounts: Vec<(ResourceId, String)>,
    /// Custom roles' full names (`projects/P/roles/ID`) by resource id: observe reads these.
    pub roles: Vec<(ResourceId, String)>,
    /// Retries of every call.
    pub retry: Retrier,
    /// Time between operation and status reads while waiting.
    pub poll: Duration,
    /// Longest wait for one operation or resource.
    pub wait_limit: Duration,
}

/// Builds one client: at `endpoint` with anonymous credentials (an emulator), or at
/// Google with the default credentials chain; the client's own retries off.
macro_rules! client {
    ($t:ty, $endpoint:expr, $credentials:expr) => {{
        let mut b = <$t>::builder().with_retry_policy(NeverRetry);
        if let Some(e) = $endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(c) = $credentials.clone() {
            b = b.with_credentials(c);
        }
        b.build().await.map_err(|e| {
            CloudError::new(
                concat!("connecting ", stringify!($t)),
                format!(
                    "{e}\n  hint: byoc reads Google credentials from the default chain: GOOGLE_APPLICATION_CREDENTIALS (a service-account key or a workload identity federation config), gcloud's application-default login, or the metadata server"
                ),
            )
        })?
    }};
}

impl Gcp {
    /// Clients for `project` and `region`. With `endpoint` every client (and the GCS JSON
    /// calls) go there with anonymous credentials (an emulator, over plain HTTP, where a
    /// token must never be sent); without, Google's endpoints with the default credentials
    /// chain (workload identity federation or a service-account key through
    /// `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's login, the metadata server on GCP).
    pub async fn connect(environment: &str, project: &str, region: &str, endpoint: Option<&str>) -> Result<Gcp, CloudError> {
        // The clients are built without a crypto provider of their own: use the process's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoint = endpoint.map(|e| e.trim_end_matches('/').to_owned());
        let anonymous: Option<Credentials> = endpoint.as_ref().map(|_| google_cloud_auth::credentials::anonymous::Builder::new().build());
        let e = endpoint.as_deref();
        use google_cloud_compute_v1::client as compute;
        Ok(Gcp {
            environment: environment.to_owned(),
            project: project.to_owned(),
            region: region.to_owned(),
            networks: client!(compute::Networks, e, anonymous),
            subnetworks: client!(compute::Subnetworks, e, anonymous),
            firewalls: client!(compute::Firewalls, e, anonymous),
            routers: client!(compute::Routers, e, anonymous),
            global_operations: client!(compute::GlobalOperations, e, anonymous),
            region_operations: client!(compute::RegionOperations, e, anonymous),
            gke: client!(google_cloud_container_v1::client::ClusterManager, e, anonymous),
            iam: client!(google_cloud_iam_admin_v1::client::Iam, e, anonymous),
            projects: client!(google_cloud_resourcemanager_v3::client::Projects, e, anonymous),
            usage: client!(google_cloud_api_serviceusage_v1::client::ServiceUsage, e, anonymous),
            storage: storage::Client::new(e)?,
            buckets: Vec::new(),
            recorded_buckets: Vec::new(),
            bindings: Vec::new(),
            accounts: Vec::new(),
            roles: Vec::new(),
            retry: Retrier::default(),
            poll: Duration::from_secs(10),
            wait_limit: Duration::from_secs(40 * 60),
        })
    }

    /// Tells observe what GCP cannot list by ownership, from the desired graph and the
    /// inventory's applied resources (so what is no longer desired is still found and
    /// deleted), and which buckets an earlier apply recorded. `byoc apply` and the daemon
    /// both connect through this.
    pub fn know(&mut self, desired: &crate::resource::Graph, inventory: &super::Inventory) {
        let recorded: Vec<Resource> = inventory
            .resources
            .iter()
            .filter_map(|(id, r)| ResourceId::parse(id).map(|(kind, id)| super::Inventory::applied_resource(&id, kind, r)))
            .collect();
        self.expect(desired.resources.values().chain(recorded.iter()));
        self.recorded_buckets =
            inventory.resources.values().filter(|r| r.kind == Kind::GcpBucket.as_str()).map(|r| r.cloud_id.clone()).collect();
    }

    /// Tells observe what to look for that GCP cannot list by ownership: the buckets (by
    /// name), the IAM bindings, and the service accounts' emails, from the resources of
    /// `graphs` (the desired cloud graph and the inventory's applied resources).
    pub fn expect<'a>(&mut self, resources: impl IntoIterator<Item = &'a Resource>) {
        for r in resources {
            match r.kind {
                Kind::GcpBucket if !self.buckets.iter().any(|(id, _)| *id == r.id) => {
                    self.buckets.push((r.id.clone(), text(r, "name").to_owned()));
                }
                Kind::GcpIamBinding if !self.bindings.iter().any(|b| b.id == r.id) => self.bindings.push(r.clone()),
                Kind::GcpServiceAccount if !self.accounts.iter().any(|(id, _)| *id == r.id) => {
                    let project = match text(r, "project") {
                        "" => self.project.as_str(),
                        p => p,
                    };
                    self.accounts.push((r.id.clone(), identity::email(text(r, "accountId"), project)));
                }
                Kind::GcpCustomRole => self.expect_custom_role(r),
                _ => {}
            }
        }
    }

    /// The project's resource name.
    fn project_path(&self) -> String {
        format!("projects/{}", self.project)
    }

    /// Calls `op` through the retrier, Google's errors sorted by [`sort`].
    async fn call<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = google_cloud_gax::Result<T>>,
    {
        self.retry
            .call_sorted(what, || {
                let f = op();
                async move { f.await.map_err(|e| sort(what, &e)) }
            })
            .await
    }

    /// Whether a description marks a resource as `id` of this environment.
    fn described_as(&self, description: Option<&str>) -> Option<(Kind, ResourceId)> {
        let (env, id) = names::gcp::owner_of(description?)?;
        if env != self.environment {
            return None;
        }
        ResourceId::parse(id)
    }

    /// [`Gcp::described_as`] for a resource of `kind`.
    fn described_kind(&self, kind: Kind, description: Option<&str>) -> Option<ResourceId> {
        self.described_as(description).filter(|(k, _)| *k == kind).map(|(_, id)| id)
    }

    /// The error for a resource that exists under `r`'s name without this environment's
    /// ownership mark for `r`: byoc never takes over what it did not make.
    fn not_ours(&self, r: &Resource, what: String, noun: &str, name: &str) -> CloudError {
        CloudError {
            what,
            code: Some(OWNERSHIP_CONFLICT.to_owned()),
            message: format!(
                "{noun} {name:?} already exists and is not marked as {} of environment {} (its description or labels name another owner, or none); byoc does not take over what it did not make. Delete or rename it, or choose another environment name",
                r.id, self.environment
            ),
        }
    }

    /// Labels marking a resource as `id` of this environment, as expand writes them.
    fn labelled_as(&self, labels: &std::collections::HashMap<String, String>, id: &ResourceId) -> bool {
        labels.get("byoc-environment").map(String::as_str) == Some(names::gcp::label_value(&self.environment).as_str())
            && labels.get("byoc-managed-by").map(String::as_str) == Some("byoc")
            && labels.get("byoc-resource").map(String::as_str) == Some(names::gcp::label_value(id.as_str()).as_str())
    }

    /// Whether labels mark a resource as this environment's (any resource).
    fn labelled_ours(&self, labels: &std::collections::HashMap<String, String>) -> bool {
        labels.get("byoc-environment").map(String::as_str) == Some(names::gcp::label_value(&self.environment).as_str())
            && labels.get("byoc-managed-by").map(String::as_str) == Some("byoc")
    }

    /// Waits for a Compute operation (global when `region` is `None`) to be DONE; its
    /// errors, if any, are the call's, with the canonical code of its HTTP status.
    async fn compute_done(
        &self,
        what: &str,
        op: google_cloud_compute_v1::model::Operation,
        region: Option<&str>,
    ) -> Result<(), CloudError> {
        use google_cloud_compute_v1::model::operation::Status;
        let started = Instant::now();
        let name = op.name.clone().unwrap_or_default();
        let mut op = op;
        loop {
            if let Some(first) = op.error.as_ref().and_then(|e| e.errors.first()) {
                let reason = first.code.clone().unwrap_or_default();
                let code = match reason.as_str() {
                    "RESOURCE_ALREADY_EXISTS" | "ALREADY_EXISTS" => Some("ALREADY_EXISTS"),
                    "RESOURCE_NOT_FOUND" | "NOT_FOUND" => Some("NOT_FOUND"),
                    _ => op.http_error_status_code.and_then(|s| u16::try_from(s).ok()).and_then(|s| code_of_http(s, None)),
                };
                return Err(CloudError {
                    what: what.to_owned(),
                    code: code.map(str::to_owned),
                    message: format!("operation {name} failed: {reason}: {}", first.message.clone().unwrap_or_default()),
                });
            }
            if op.status == Some(Status::Done) || name.is_empty() {
                return Ok(());
            }
            let state = op.status.as_ref().and_then(|s| s.name()).unwrap_or("PENDING").to_owned();
            if started.elapsed() > self.wait_limit {
                return Err(CloudError::new(
                    what,
                    format!("operation {name} still {state} after {}s; apply again later", started.elapsed().as_secs()),
                ));
            }
            println!("waiting {what}: {state} ({}s)", started.elapsed().as_secs());
            tokio::time::sleep(self.poll).await;
            op = match region {
                None => {
                    self.call(&format!("compute globalOperations.get {name}"), || {
                        self.global_operations.get().set_project(&self.project).set_operation(&name).send()
                    })
                    .await?
                }
                Some(r) => {
                    self.call(&format!("compute regionOperations.get {name}"), || {
                        self.region_operations.get().set_project(&self.project).set_region(r).set_operation(&name).send()
                    })
                    .await?
                }
            };
        }
    }
}

/// The canonical code of an HTTP status Google's REST APIs answer with, where the body
/// did not name one (Compute's errors carry only `code` and `errors[].reason`).
fn code_of_http(status: u16, reason: Option<&str>) -> Option<&'static str> {
    Some(match (status, reason) {
        (400, _) => "INVALID_ARGUMENT",
        (401, _) => "UNAUTHENTICATED",
        (403, Some("rateLimitExceeded" | "userRateLimitExceeded" | "quotaExceeded")) => "RESOURCE_EXHAUSTED",
        (403, _) => "PERMISSION_DENIED",
        (404, _) => "NOT_FOUND",
        (409, Some("aborted")) => "ABORTED",
        (409, _) => "ALREADY_EXISTS",
        (412, _) => "FAILED_PRECONDITION",
        (429, _) => "RESOURCE_EXHAUSTED",
        (500, _) => "INTERNAL",
        (503, _) => "UNAVAILABLE",
        (504, _) => "DEADLINE_EXCEEDED",
        _ => return None,
    })
}

/// The first `errors[].reason` of Google's error JSON, if the body is one.
fn reason_in(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/errors/0/reason").and_then(|r| r.as_str()).map(str::to_owned)
}

/// A Google client's error as ours, and whether a retry may help.
fn sort(what: &str, e: &google_cloud_gax::error::Error) -> (Retry, CloudError) {
    let http = e.http_status_code();
    let reason = e.http_payload().and_then(|b| reason_in(b));
    let named = e.status().map(|s| s.code.name()).filter(|c| *c != "UNKNOWN" && *c != "OK");
    let code = named.or_else(|| http.and_then(|s| code_of_http(s, reason.as_deref())));
    if let Some(code) = code {
        let message = e.status().map(|s| s.message.clone()).filter(|m| !m.is_empty()).unwrap_or_else(|| chain(e));
        let retry = if TRANSIENT.contains(&code) { Retry::Yes } else { Retry::No };
        let message = match reason {
            Some(r) if !message.contains(&r) => format!("{message} ({r})"),
            _ => message,
        };
        return (retry, CloudError { what: what.to_owned(), code: Some(code.to_owned()), message });
    }
    if e.is_connect() {
        let message = format!(
            "the endpoint refused the connection or does not resolve ({})\n  hint: check --endpoint-url and that it is up",
            chain(e)
        );
        return (Retry::No, CloudError { what: what.to_owned(), code: Some(UNREACHABLE.to_owned()), message });
    }
    if e.is_authentication() {
        // A token endpoint that failed for a moment may answer next time; a missing or
        // refused credential will not.
        let transient = e.is_transient_and_before_rpc();
        let message = format!(
            "the Google credentials could not be used: {}\n  hint: set GOOGLE_APPLICATION_CREDENTIALS (a service-account key or a workload identity federation config), run `gcloud auth application-default login`, or run where the metadata server answers",
            chain(e)
        );
        return (
            if transient { Retry::Yes } else { Retry::No },
            CloudError { what: what.to_owned(), code: Some("NoCredentials".into()), message },
        );
    }
    let retry =
        if e.is_timeout() || e.is_io() || e.is_transport() || http.is_some_and(|s| s >= 500 || s == 429) { Retry::Yes } else { Retry::No };
    (retry, CloudError::new(what, chain(e)))
}

fn text<'a>(r: &'a Resource, name: &str) -> &'a str {
    r.properties.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn int(v: Option<&Value>) -> i32 {
    match v {
        Some(Value::Int(n)) => i32::try_from(*n).unwrap_or(i32::MAX),
        _ => 0,
    }
}

fn flag(r: &Resource, name: &str) -> bool {
    matches!(r.properties.get(name), Some(Value::Bool(true)))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::List(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// A map property of strings (`labels`, `nodeLabels`).
fn string_map(v: Option<&Value>) -> std::collections::HashMap<String, String> {
    match v {
        Some(Value::Map(m)) => m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.to_owned(), v.to_owned()))).collect(),
        _ => std::collections::HashMap::new(),
    }
}

/// The name part of a resource id (`risingwave` of `gcp.node-pool/risingwave`).
fn short_name(id: &ResourceId) -> &str {
    id.as_str().split_once('/').map_or(id.as_str(), |(_, n)| n)
}

/// What a reference resolves to: the referred resource's cloud id (a self link, an
/// email, a bucket name).
fn resolve<'a>(refs: &'a Refs, r: &Resource, name: &str) -> Result<&'a str, CloudError> {
    let id = r.refs_in(name).into_iter().next().ok_or_else(|| CloudError::new(r.id.to_string(), format!("`{name}` names no resource")))?;
    let f = refs.get(&id).ok_or_else(|| CloudError::new(r.id.to_string(), format!("{id} does not exist yet")))?;
    Ok(f.cloud_id.as_str())
}

fn found(
    r: &ResourceId,
    kind: Kind,
    cloud_id: impl Into<String>,
    outputs: impl IntoIterator<Item = (&'static str, String)>,
    live: Map,
) -> Found {
    Found { live, id: r.clone(), kind, cloud_id: cloud_id.into(), outputs: outputs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect() }
}

/// `None` when the call failed with NOT_FOUND: deletion is idempotent.
fn unless_gone<T>(result: Result<T, CloudError>) -> Result<Option<T>, CloudError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is(&["NOT_FOUND"]) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether an error says the service's API is not enabled in the project (403 with
/// reason `accessNotConfigured`, or `SERVICE_DISABLED`).
pub(super) fn api_disabled(e: &CloudError) -> bool {
    e.is(&["PERMISSION_DENIED"])
        && ["accessNotConfigured", "SERVICE_DISABLED", "before or it is disabled"].iter().any(|m| e.message.contains(m))
}

/// Whether an error says the region does not exist: Compute answers a regional list there
/// 400 `Invalid value for field 'region': 'X'. Unknown region.`, GKE 400 `Location "X" does
/// not exist.` (both INVALID_ARGUMENT, naming the region).
pub(super) fn unknown_region(e: &CloudError, region: &str) -> bool {
    e.is(&["INVALID_ARGUMENT"]) && (e.message.contains(&format!("'{region}'")) || e.message.contains(&format!("\"{region}\"")))
}

/// The items of a regional list, none where the region does not exist: nothing byoc made
/// can be there, and preflight reports the region (with every other problem) before any
/// change.
pub(super) fn none_in_unknown_region<T>(result: Result<Vec<T>, CloudError>, region: &str) -> Result<Vec<T>, CloudError> {
    match result {
        Err(e) if unknown_region(&e, region) => Ok(Vec::new()),
        other => other,
    }
}

/// `Ok` for a read refused because its API is off.
fn disabled_is_empty(result: Result<(), CloudError>) -> Result<(), CloudError> {
    match result {
        Err(e) if api_disabled(&e) => Ok(()),
        other => other,
    }
}

/// The last path segment of a self link or resource name.
fn last_segment(link: &str) -> &str {
    link.rsplit('/').next().unwrap_or(link)
}

impl Cloud for Gcp {
    async fn observe(&self) -> Result<Vec<Found>, CloudError> {
        let mut out = Vec::new();
        // A service whose API is off holds nothing byoc can manage; preflight reports the
        // API (with every other problem) before anything changes, so observe goes on.
        disabled_is_empty(self.observe_network(&mut out).await)?;
        disabled_is_empty(self.observe_gke(&mut out).await)?;
        disabled_is_empty(self.observe_service_accounts(&mut out).await)?;
        disabled_is_empty(self.observe_custom_roles(&mut out).await)?;
        disabled_is_empty(self.observe_buckets(&mut out).await)?;
        disabled_is_empty(self.observe_bindings(&mut out).await)?;
        Ok(out)
    }

    async fn ensure(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        match r.kind {
            Kind::GcpNetwork => self.ensure_network(r, existing).await,
            Kind::GcpSubnetwork => self.ensure_subnetwork(r, existing, refs).await,
            Kind::GcpFirewall => self.ensure_firewall(r, existing, refs).await,
            Kind::GcpRouterNat => self.ensure_router(r, existing, refs).await,
            Kind::GcpGkeCluster => self.ensure_cluster(r, existing, refs).await,
            Kind::GcpNodePool => self.ensure_node_pool(r, existing, refs).await,
            Kind::GcpServiceAccount => self.ensure_service_account(r, existing).await,
            Kind::GcpIamBinding => self.ensure_binding(r, refs).await,
            Kind::GcpCustomRole => self.ensure_custom_role(r, existing).await,
            Kind::GcpBucket => self.ensure_bucket(r, existing).await,
            Kind::GcpServiceAttachment => Err(CloudError::new(
                r.id.to_string(),
                "a GKE ServiceAttachment is a Kubernetes object, applied in the cluster, not by the cloud half",
            )),
            other => Err(CloudError::new(r.id.to_string(), format!("{} is not a GCP resource", other.label()))),
        }
    }

    async fn delete(&self, f: &Found) -> Result<(), CloudError> {
        let result = match f.kind {
            Kind::GcpNetwork => self.delete_network(f).await,
            Kind::GcpSubnetwork => self.delete_subnetwork(f).await,
            Kind::GcpFirewall => self.delete_firewall(f).await,
            Kind::GcpRouterNat => self.delete_router(f).await,
            Kind::GcpGkeCluster => self.delete_cluster(f).await,
            Kind::GcpNodePool => self.delete_node_pool(f).await,
            Kind::GcpServiceAccount => self.delete_service_account(f).await,
            Kind::GcpIamBinding => self.delete_binding(f).await,
            Kind::GcpCustomRole => self.delete_custom_role(f).await,
            Kind::GcpBucket => self.delete_bucket(f).await,
            other => Err(CloudError::new(f.id.to_string(), format!("{} is not a GCP resource", other.label()))),
        };
        match result {
            Err(e) if e.is(&["NOT_FOUND"]) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn googles_http_answers_map_to_canonical_codes_and_only_transient_ones_are_retried() {
        assert_eq!(code_of_http(409, None), Some("ALREADY_EXISTS"));
        assert_eq!(code_of_http(409, Some("aborted")), Some("ABORTED"));
        assert_eq!(code_of_http(412, Some("conditionNotMet")), Some("FAILED_PRECONDITION"));
        assert_eq!(code_of_http(404, Some("notFound")), Some("NOT_FOUND"));
        assert_eq!(code_of_http(429, None), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(code_of_http(403, Some("rateLimitExceeded")), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(code_of_http(403, Some("forbidden")), Some("PERMISSION_DENIED"));
        assert_eq!(code_of_http(503, None), Some("UNAVAILABLE"));

        let answer = |status: u16, body: &str| {
            google_cloud_gax::error::Error::http(status, http::HeaderMap::new(), bytes::Bytes::from(body.to_owned()))
        };
        let (retry, e) = sort(
            "compute networks.insert",
            &answer(
                503,
                r#"{"error":{"code":503,"message":"backend unavailable","status":"UNAVAILABLE","errors":[{"reason":"backendError"}]}}"#,
            ),
        );
        assert_eq!((retry, e.code.as_deref()), (Retry::Yes, Some("UNAVAILABLE")), "{e}");
        let (retry, e) = sort(
            "compute networks.insert",
            &answer(
                409,
                r#"{"error":{"code":409,"message":"The resource 'projects/p/global/networks/n' already exists","errors":[{"reason":"alreadyExists"}]}}"#,
            ),
        );
        assert_eq!((retry, e.code.as_deref()), (Retry::No, Some("ALREADY_EXISTS")), "{e}");
        let (retry, e) = sort(
            "resourcemanager setIamPolicy",
            &answer(
                409,
                r#"{"error":{"code":409,"message":"There were concurrent policy changes.","status":"ABORTED","errors":[{"reason":"aborted"}]}}"#,
            ),
        );
        assert_eq!((retry, e.code.as_deref()), (Retry::No, Some("ABORTED")), "a stale etag is read again, not resent: {e}");
        let (retry, e) = sort("x", &answer(429, r#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#));
        assert_eq!((retry, e.code.as_deref()), (Retry::Yes, Some("RESOURCE_EXHAUSTED")), "{e}");
    }

    #[test]
    fn the_service_attachment_is_left_to_the_kubernetes_half() {
        let dir = format!("{}/../examples/gcp", env!("CARGO_MANIFEST_DIR"));
        let files = rwproxy::specfiles::read_dir(std::path::Path::new(&dir)).expect("example readable");
        let specs = crate::spec::load::load(&dir, &files).unwrap_or_else(|e| panic!("{e:?}"));
        let all = crate::expand::expand(&specs);
        assert!(all.resources.values().any(|r| r.kind == Kind::GcpServiceAttachment), "expand makes the attachments");
        let cloud = super::super::cloud_part(&all);
        assert!(cloud.resources.values().all(|r| r.kind != Kind::GcpServiceAttachment), "the cloud half never sees them");
        assert!(cloud.resources.values().any(|r| r.kind == Kind::GcpNetwork));
    }
}
