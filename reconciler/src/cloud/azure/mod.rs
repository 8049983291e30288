//! [`Cloud`] on Azure: an ARM client over azure_core's pipeline, one typed module per
//! resource provider, each pinned to one api-version: [`network`] (Microsoft.Network:
//! VNet, subnets, NSG, NAT gateway, public IP, private endpoints, the private DNS zone of
//! blob endpoints with its VNet link and the endpoints' zone groups), [`kubernetes`]
//! (Microsoft.ContainerService: the managed cluster and its agent pools), [`storage`]
//! (Microsoft.Storage: accounts and blob containers), [`identity`]
//! (Microsoft.ManagedIdentity and Microsoft.Authorization: user-assigned identities,
//! federated credentials, role assignments) and [`preflight`] (checks made before any
//! change). This file holds the client ([`Arm`]: bearer token, long-running operations,
//! ARM errors, retries), the provider type and the [`Cloud`] impl that dispatches each
//! `azure.*` kind to its module.
//!
//! Ownership. What Azure can tag carries the environment and resource tags
//! (`byoc-environment`, `byoc-resource`) in the PUT that creates it, and is found by them.
//! What Azure cannot tag is proven byoc's by where it is and by name: subnets are children
//! of the environment's tagged VNet; blob containers of its tagged storage accounts;
//! federated credentials of its tagged identities (and are named `byoc-<env>-...`); role
//! assignments are named by a GUID derived from the environment and the resource id, carry
//! the owner in their description, and are read for the environment's identities only.
//! Each is matched to its resource id through the inventory (by its ARM id) or the desired
//! graph (by name): see [`Azure::know`].
//!
//! The load balancers and Private Link services of the graph (`azure.load-balancer`,
//! `azure.private-link-service`) are made by AKS from the Services' annotations (the
//! Kubernetes half); this provider never creates or deletes them through ARM. It reports
//! them as found once their cluster exists, with what AKS made if it can be read.

pub(crate) mod identity;
mod kubernetes;
mod network;
pub mod preflight;
mod storage;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use azure_core::http::headers::{HeaderName, Headers};
use azure_core::http::policies::Policy;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{ClientOptions, Context, Method, Pipeline, PipelineSendOptions, Request, RetryOptions, Transport, Url};
use serde_json::{Value as Json, json};

use super::retry::Retrier;
use super::{Cloud, CloudError, Found, Inventory, Refs};
use crate::expand::names::azure::{TAG_ENVIRONMENT, TAG_RESOURCE};
use crate::resource::{Graph, Kind, Map, Resource, ResourceId, Value};

/// Code of the error for a resource that exists under our name but is not ours.
pub const OWNERSHIP_CONFLICT: &str = "OwnershipConflict";

/// api-versions, one per resource provider (pinned: a body is written for exactly one).
pub mod api {
    /// Microsoft.Resources (resource groups, provider registration).
    pub const RESOURCES: &str = "2021-04-01";
    /// Microsoft.Features (preview feature registration).
    pub const FEATURES: &str = "2021-07-01";
    /// Microsoft.Network.
    pub const NETWORK: &str = "2024-05-01";
    /// Microsoft.Network's private DNS zones and their virtual network links, versioned
    /// apart from the rest of Microsoft.Network (the privatedns specification).
    pub const PRIVATE_DNS: &str = "2024-06-01";
    /// Microsoft.ContainerService (managed clusters, agent pools).
    pub const CONTAINER_SERVICE: &str = "2025-01-01";
    /// Microsoft.Storage.
    pub const STORAGE: &str = "2023-05-01";
    /// Microsoft.ManagedIdentity.
    pub const MANAGED_IDENTITY: &str = "2023-01-31";
    /// Microsoft.Authorization.
    pub const AUTHORIZATION: &str = "2022-04-01";
}

/// The public cloud's ARM endpoint and Entra authority.
pub const ARM_ENDPOINT: &str = "https://management.azure.com";
/// The token scope of ARM.
const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// How the provider authenticates.
pub enum Credential {
    /// The pod's workload identity (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE`, set by AKS's webhook).
    WorkloadIdentity,
    /// A managed identity through a federated token, as the pod's workload identity is,
    /// named explicitly: the identity's client id, its tenant and the file holding the
    /// Kubernetes service-account token that its federated credential trusts.
    Federated {
        /// Tenant.
        tenant: String,
        /// The managed identity's client id.
        client_id: String,
        /// The projected service-account token.
        token_file: std::path::PathBuf,
    },
    /// A service principal's client secret (bootstrap from a laptop or CI, tests).
    ClientSecret {
        /// Tenant.
        tenant: String,
        /// Application (client) id.
        client_id: String,
        /// Its secret.
        secret: String,
    },
}

impl Credential {
    /// From the environment: `AZURE_CLIENT_SECRET` with `AZURE_TENANT_ID` and
    /// `AZURE_CLIENT_ID` is a client secret, else the workload identity.
    pub fn from_env() -> Credential {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (var("AZURE_TENANT_ID"), var("AZURE_CLIENT_ID"), var("AZURE_CLIENT_SECRET")) {
            (Some(tenant), Some(client_id), Some(secret)) => Credential::ClientSecret { tenant, client_id, secret },
            _ => Credential::WorkloadIdentity,
        }
    }
}

/// Where ARM is and whom to trust there.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// ARM's base URL; default [`ARM_ENDPOINT`]. The Entra authority is the same host
    /// when this is set (an emulator serves both), else the public cloud's.
    pub url: Option<String>,
    /// Extra CA certificates (PEM) trusted on top of the system's roots: an emulator's
    /// test CA. Never replaces the roots, never turns verification off.
    pub extra_ca_pem: Option<String>,
}

/// An ARM answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The headers ARM's protocol uses (`Azure-AsyncOperation`, `Location`, `Retry-After`).
    pub async_operation: Option<String>,
    /// See [`Reply::async_operation`].
    pub location: Option<String>,
    /// See [`Reply::async_operation`].
    pub retry_after: Option<Duration>,
    /// The JSON body (`null` when empty).
    pub body: Json,
}

/// The ARM client: one pipeline with the bearer-token policy, retries of our own.
pub struct Arm {
    pipeline: Pipeline,
    credential: Arc<dyn TokenCredential>,
    base: Url,
    /// Retries of every call (throttling, server errors, an operation in progress).
    pub retry: Retrier,
    /// Longest wait between two polls of a long-running operation, whatever Retry-After says.
    pub poll: Duration,
    /// Longest wait for one long-running operation.
    pub wait_limit: Duration,
}

fn header(headers: &Headers, name: &'static str) -> Option<String> {
    headers.get_optional_string(&HeaderName::from_static(name))
}

/// `Retry-After` in seconds (ARM sends seconds; an HTTP date is not used by ARM).
fn retry_after(headers: &Headers) -> Option<Duration> {
    header(headers, "retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs)
}

/// ARM's error body `{"error":{"code","message"}}` as ours.
pub fn arm_error(what: &str, status: u16, body: &Json) -> CloudError {
    let e = body.get("error").unwrap_or(body);
    let code = e.get("code").and_then(Json::as_str).map(str::to_owned);
    let message = e.get("message").and_then(Json::as_str).map(str::to_owned).unwrap_or_else(|| format!("HTTP {status}: {body}"));
    CloudError { what: what.to_owned(), code: code.or_else(|| Some(format!("HTTP{status}"))), message }
}

/// Whether an ARM answer may succeed if the request is made again, and after how long at
/// least: throttling (429, honouring Retry-After), a server error, a resource another
/// operation is changing (409 AnotherOperationInProgress, waited out), or an identity whose
/// federated credentials another write is changing (409, which Azure answers to concurrent
/// writes under one identity, e.g. a rerun right after a killed apply whose writes still run).
pub fn retryable(status: u16, error: &CloudError) -> bool {
    status == 429
        || status >= 500
        || (status == 409
            && error.is(&["AnotherOperationInProgress", "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"]))
}

impl Arm {
    /// A client for `endpoint` authenticating with `credential`.
    pub fn new(endpoint: &Endpoint, credential: &Credential) -> Result<Arm, CloudError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = Url::parse(endpoint.url.as_deref().unwrap_or(ARM_ENDPOINT))
            .map_err(|e| CloudError::new("azure endpoint", format!("{e}; give an https URL")))?;
        let transport = transport(endpoint.extra_ca_pem.as_deref())?;
        let options = || ClientOptions { retry: RetryOptions::none(), transport: Some(transport.clone()), ..Default::default() };
        // Entra is asked through the same transport (and so trusts the same extra CA); an
        // endpoint given is the authority too (an emulator serves both).
        let entra_options = || {
            let mut client_options = options();
            if endpoint.url.is_some() {
                let mut custom = azure_core::cloud::CustomConfiguration::default();
                custom.authority_host = base.as_str().trim_end_matches('/').to_owned();
                client_options.cloud = Some(Arc::new(custom.into()));
            }
            client_options
        };
        let token: Arc<dyn TokenCredential> = match credential {
            Credential::ClientSecret { tenant, client_id, secret } => {
                let client_options = entra_options();
                azure_identity::ClientSecretCredential::new(
                    tenant,
                    client_id.clone(),
                    secret.clone().into(),
                    Some(azure_identity::ClientSecretCredentialOptions { client_options }),
                )
                .map_err(|e| CloudError::new("azure credential", format!("{e}; check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET")))?
            }
            Credential::Federated { tenant, client_id, token_file } => {
                azure_identity::WorkloadIdentityCredential::new(Some(azure_identity::WorkloadIdentityCredentialOptions {
                    credential_options: azure_identity::ClientAssertionCredentialOptions { client_options: entra_options() },
                    client_id: Some(client_id.clone()),
                    tenant_id: Some(tenant.clone()),
                    token_file_path: Some(token_file.clone()),
                }))
                .map_err(|e| CloudError::new("azure credential", format!("{e}; check the identity's client id and {}", token_file.display())))?
            }
            Credential::WorkloadIdentity => azure_identity::WorkloadIdentityCredential::new(Some(
                azure_identity::WorkloadIdentityCredentialOptions {
                    credential_options: azure_identity::ClientAssertionCredentialOptions { client_options: entra_options() },
                    ..Default::default()
                },
            ))
            .map_err(|e| {
                CloudError::new(
                    "azure credential",
                    format!(
                        "no workload identity ({e}); in the pod, federate its service account with a managed identity; elsewhere set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET"
                    ),
                )
            })?,
        };
        let auth: Arc<dyn Policy> = Arc::new(BearerTokenAuthorizationPolicy::new(token.clone(), [ARM_SCOPE]));
        let pipeline =
            Pipeline::new(option_env!("CARGO_PKG_NAME"), option_env!("CARGO_PKG_VERSION"), options(), Vec::new(), vec![auth], None);
        Ok(Arm {
            pipeline,
            credential: token,
            base,
            retry: Retrier::new(8, Duration::from_millis(200), Duration::from_secs(30)),
            poll: Duration::from_secs(10),
            wait_limit: Duration::from_secs(40 * 60),
        })
    }

    /// The access token the calls carry (preflight reads who the caller is from it).
    pub async fn token(&self) -> Option<String> {
        self.credential.get_token(&[ARM_SCOPE], None).await.ok().map(|t| t.token.secret().to_owned())
    }

    fn url(&self, path: &str, api_version: &str) -> Result<Url, CloudError> {
        let mut url = if path.starts_with("https://") || path.starts_with("http://") { Url::parse(path) } else { self.base.join(path) }
            .map_err(|e| CloudError::new(path, e.to_string()))?;
        if !api_version.is_empty() && !url.query_pairs().any(|(k, _)| k == "api-version") {
            url.query_pairs_mut().append_pair("api-version", api_version);
        }
        Ok(url)
    }

    /// One request, no retries: the answer whatever its status.
    async fn send_once(&self, what: &str, method: Method, url: Url, body: Option<&Json>) -> Result<Reply, CloudError> {
        let mut request = Request::new(url, method);
        request.insert_header("accept", "application/json");
        if let Some(body) = body {
            request.insert_header("content-type", "application/json");
            request.set_body(body.to_string());
        }
        let options = PipelineSendOptions { skip_checks: true, ..Default::default() };
        let response = self.pipeline.send(&Context::new(), &mut request, Some(options)).await.map_err(|e| {
            let refused = matches!(e.kind(), azure_core::error::ErrorKind::Credential);
            CloudError {
                what: what.to_owned(),
                code: Some(if refused { "NoCredentials".to_owned() } else { "Transport".to_owned() }),
                message: format!("{e}"),
            }
        })?;
        let (status, headers, body) = response.deconstruct();
        let text = body.into_string().unwrap_or_default();
        let body = if text.trim().is_empty() { Json::Null } else { serde_json::from_str(&text).unwrap_or(Json::String(text)) };
        Ok(Reply {
            status: u16::from(status),
            async_operation: header(&headers, "azure-asyncoperation"),
            location: header(&headers, "location"),
            retry_after: retry_after(&headers),
            body,
        })
    }

    /// A request with retries: 2xx and 404 are answers, what [`retryable`] says is tried
    /// again after Retry-After (at most the retrier's cap) or a jittered backoff, anything
    /// else is an error with ARM's code.
    pub async fn call(&self, what: &str, method: Method, path: &str, api_version: &str, body: Option<&Json>) -> Result<Reply, CloudError> {
        let url = self.url(path, api_version)?;
        let mut attempt: u32 = 1;
        loop {
            let reply = match self.send_once(what, method, url.clone(), body).await {
                Ok(r) => r,
                Err(e) if e.is(&["Transport"]) && attempt < self.retry.attempts => {
                    self.backoff(what, &e, None, attempt).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if reply.status < 300 || reply.status == 404 {
                return Ok(reply);
            }
            let error = arm_error(what, reply.status, &reply.body);
            // An operation in progress is waited out for as long as any operation may take.
            let in_progress = reply.status == 409 && error.is(&["AnotherOperationInProgress"]);
            if retryable(reply.status, &error) && (attempt < self.retry.attempts || in_progress && attempt < 1000) {
                if in_progress {
                    // Reads the resource and what it is in, whose operation blocks this one,
                    // as ARM's own clients do while they wait (and which is how the test fake
                    // sees time pass); then waits at most one poll interval.
                    for u in in_progress_targets(&url) {
                        let _ = self.send_once(what, Method::Get, u, None).await;
                    }
                    let wait = reply.retry_after.unwrap_or(self.poll).min(self.poll);
                    self.backoff(what, &error, Some(wait), attempt).await;
                    attempt += 1;
                    continue;
                }
                self.backoff(what, &error, reply.retry_after, attempt).await;
                attempt += 1;
                continue;
            }
            return Err(error);
        }
    }

    async fn backoff(&self, what: &str, error: &CloudError, after: Option<Duration>, attempt: u32) {
        let wait = match after {
            Some(d) => d.min(self.retry.cap),
            None => {
                let ceiling = self.retry.base.saturating_mul(1 << (attempt - 1).min(16)).min(self.retry.cap);
                ceiling.mul_f64(rand::random_range(0.0..=1.0))
            }
        };
        self.retry.count();
        crate::logging::line(
            crate::logging::Level::Warn,
            &format!(
                "retry: {what}: {} (attempt {} in {} ms)",
                error.code.as_deref().unwrap_or(&error.message),
                attempt + 1,
                wait.as_millis()
            ),
        );
        tokio::time::sleep(wait).await;
    }

    /// GET: the resource, or `None` when ARM says it does not exist.
    pub async fn get(&self, what: &str, path: &str, api_version: &str) -> Result<Option<Json>, CloudError> {
        let r = self.call(what, Method::Get, path, api_version, None).await?;
        Ok(if r.status == 404 { None } else { Some(r.body) })
    }

    /// Every item of a list, following `nextLink`.
    pub async fn list(&self, what: &str, path: &str, api_version: &str) -> Result<Vec<Json>, CloudError> {
        let mut out = Vec::new();
        let mut next = Some(path.to_owned());
        let mut pages = 0;
        while let Some(p) = next.take() {
            let r = self.call(what, Method::Get, &p, api_version, None).await?;
            if r.status == 404 {
                break;
            }
            if let Some(items) = r.body.get("value").and_then(Json::as_array) {
                out.extend(items.iter().cloned());
            }
            pages += 1;
            next = r.body.get("nextLink").and_then(Json::as_str).filter(|_| pages < 1000).map(str::to_owned);
        }
        Ok(out)
    }

    /// PUT (create or update), then waits for the operation and reads the result.
    pub async fn put(&self, what: &str, path: &str, api_version: &str, body: &Json) -> Result<Json, CloudError> {
        let r = self.call(what, Method::Put, path, api_version, Some(body)).await?;
        if r.status == 404 {
            return Err(arm_error(what, 404, &r.body));
        }
        self.follow(what, &r).await?;
        if r.status == 201 || r.status == 202 || r.async_operation.is_some() {
            return self.get(what, path, api_version).await?.ok_or_else(|| CloudError::new(what, "gone right after it was made"));
        }
        Ok(r.body)
    }

    /// DELETE, waiting until it is gone; already gone is done.
    pub async fn delete(&self, what: &str, path: &str, api_version: &str) -> Result<(), CloudError> {
        let r = self.call(what, Method::Delete, path, api_version, None).await?;
        if r.status == 404 {
            return Ok(());
        }
        self.follow(what, &r).await
    }

    /// Follows a long-running operation: `Azure-AsyncOperation` (status in the body) when
    /// given, else `Location` (202 while running), sleeping Retry-After between polls,
    /// never longer than [`Arm::poll`], for at most [`Arm::wait_limit`].
    async fn follow(&self, what: &str, first: &Reply) -> Result<(), CloudError> {
        let (url, by_status) = match (&first.async_operation, &first.location) {
            (Some(u), _) => (u.clone(), true),
            (None, Some(u)) if first.status == 202 => (u.clone(), false),
            _ => return Ok(()),
        };
        let started = Instant::now();
        let mut wait = first.retry_after.unwrap_or(self.poll).min(self.poll);
        loop {
            tokio::time::sleep(wait).await;
            let r = self.call(what, Method::Get, &url, "", None).await?;
            let done = if by_status {
                match r.body.get("status").and_then(Json::as_str).unwrap_or("InProgress") {
                    "Succeeded" => true,
                    "Failed" | "Canceled" => {
                        let e = r.body.get("error").cloned().unwrap_or(Json::Null);
                        return Err(arm_error(what, 200, &json!({ "error": e })));
                    }
                    _ => false,
                }
            } else {
                r.status != 202
            };
            if done {
                return Ok(());
            }
            if started.elapsed() > self.wait_limit {
                return Err(CloudError::new(what, format!("still in progress after {}s", started.elapsed().as_secs())));
            }
            println!("waiting {what}: in progress ({}s)", started.elapsed().as_secs());
            wait = r.retry_after.unwrap_or(self.poll).min(self.poll);
        }
    }
}

/// The resource a request is about and each resource it is in (an agent pool's cluster, a
/// container's account), with the same query: what to read while another operation runs.
fn in_progress_targets(url: &Url) -> Vec<Url> {
    let mut out = vec![url.clone()];
    let path = url.path().to_owned();
    let Some(at) = path.to_ascii_lowercase().find("/providers/") else { return out };
    let (base, rest) = path.split_at(at + "/providers/".len());
    let segs: Vec<&str> = rest.split('/').collect();
    // namespace, type, name[, type, name]...: each shorter even prefix after the first pair.
    let mut n = segs.len();
    while n > 3 {
        n -= 2;
        let mut u = url.clone();
        u.set_path(&format!("{base}{}", segs[..n].join("/")));
        out.push(u);
    }
    out
}

/// The HTTP client: reqwest on rustls with the system's roots, plus `extra_ca_pem`.
fn transport(extra_ca_pem: Option<&str>) -> Result<Transport, CloudError> {
    let mut builder = reqwest::ClientBuilder::new()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| CloudError::new("azure endpoint CA", format!("not a PEM certificate bundle: {e}")))?;
        builder = builder.tls_certs_merge(certs);
    }
    let client = builder.build().map_err(|e| CloudError::new("azure http client", e.to_string()))?;
    Ok(Transport::new(Arc::new(client)))
}

/// An Azure subscription, through ARM.
pub struct Azure {
    environment: String,
    subscription: String,
    location: String,
    /// The resource group everything is in.
    resource_group: String,
    arm: Arm,
    /// Names of untagged resources wanted, by kind and name; inventory records by ARM id.
    by_name: BTreeMap<(Kind, String), ResourceId>,
    by_cloud_id: BTreeMap<String, ResourceId>,
    /// The desired node pools by name (the System pool is made with its cluster).
    pools: BTreeMap<String, Resource>,
    /// The spec names the resource group: byoc adopts it (found by name, never tagged).
    adopted_group: bool,
    /// The Service-made resources wanted (found once their cluster exists).
    from_services: Vec<Resource>,
}

impl Azure {
    /// A client for the environment in `subscription`, its resources in `resource_group`.
    pub fn connect(
        environment: &str,
        subscription: &str,
        location: &str,
        resource_group: &str,
        endpoint: &Endpoint,
        credential: &Credential,
    ) -> Result<Azure, CloudError> {
        Ok(Azure {
            environment: environment.to_owned(),
            subscription: subscription.to_owned(),
            location: location.to_owned(),
            resource_group: resource_group.to_owned(),
            arm: Arm::new(endpoint, credential)?,
            by_name: BTreeMap::new(),
            by_cloud_id: BTreeMap::new(),
            pools: BTreeMap::new(),
            adopted_group: false,
            from_services: Vec::new(),
        })
    }

    /// The client (its retries, poll interval and wait limit).
    pub fn arm(&mut self) -> &mut Arm {
        &mut self.arm
    }

    /// Retries made so far.
    pub fn retries(&self) -> u32 {
        self.arm.retry.retries()
    }

    /// Tells observe what the untagged resources are: the desired graph's by name, the
    /// inventory's by ARM id (so what is no longer desired is still found and deleted).
    pub fn know(&mut self, desired: &Graph, inventory: &Inventory) {
        for r in desired.resources.values() {
            if r.kind == Kind::AzureResourceGroup && matches!(r.properties.get("adopted"), Some(Value::Bool(true))) {
                self.adopted_group = true;
            }
            if r.kind == Kind::AzureNodePool {
                let name = r.id.as_str().split_once('/').map_or(r.id.as_str(), |(_, n)| n);
                self.pools.insert(name.to_owned(), r.clone());
            }
            if matches!(r.kind, Kind::AzureLoadBalancer | Kind::AzurePrivateLinkService) {
                self.from_services.push(r.clone());
            } else if crate::expand::names::azure::UNTAGGED.contains(&r.kind)
                && let Some(name) = r.properties.get("name").and_then(Value::as_str)
            {
                self.by_name.insert((r.kind, name.to_ascii_lowercase()), r.id.clone());
            }
        }
        for (id, record) in &inventory.resources {
            if let Some((_, rid)) = ResourceId::parse(id) {
                self.by_cloud_id.insert(record.cloud_id.to_ascii_lowercase(), rid);
            }
        }
    }

    fn rg_path(&self) -> String {
        format!("/subscriptions/{}/resourceGroups/{}", self.subscription, self.resource_group)
    }

    fn sub_path(&self) -> String {
        format!("/subscriptions/{}", self.subscription)
    }

    /// Our id from a resource's tags, when they mark it as this environment's `kind`.
    fn ours(&self, kind: Kind, item: &Json) -> Option<ResourceId> {
        let tags = item.get("tags")?;
        if tags.get(TAG_ENVIRONMENT).and_then(Json::as_str) != Some(self.environment.as_str()) {
            return None;
        }
        let id = tags.get(TAG_RESOURCE).and_then(Json::as_str)?;
        ResourceId::parse(id).filter(|(k, _)| *k == kind).map(|(_, id)| id)
    }

    /// An untagged resource's id: by its ARM id in the inventory, else by name in the
    /// desired graph.
    fn known(&self, kind: Kind, item: &Json) -> Option<ResourceId> {
        let arm_id = item.get("id").and_then(Json::as_str).unwrap_or_default().to_ascii_lowercase();
        let name = item.get("name").and_then(Json::as_str).unwrap_or_default().to_ascii_lowercase();
        self.by_cloud_id
            .get(&arm_id)
            .filter(|id| ResourceId::parse(id.as_str()).is_some_and(|(k, _)| k == kind) || id.as_str().starts_with(kind.as_str()))
            .or_else(|| self.by_name.get(&(kind, name)))
            .cloned()
    }

    /// The error for something under our name that is not ours.
    fn not_ours(&self, r: &Resource, what: &str, arm_id: &str) -> CloudError {
        CloudError {
            what: what.to_owned(),
            code: Some(OWNERSHIP_CONFLICT.to_owned()),
            message: format!(
                "{arm_id} already exists and is not tagged as this environment's ({TAG_ENVIRONMENT}={}, {TAG_RESOURCE}={}); byoc does not take over what it did not make. Delete or rename it, or choose other names in the environment spec",
                self.environment, r.id
            ),
        }
    }

    /// Creates or converges a tagged resource at `path`: refuses one that exists and is
    /// not ours, PUTs `body` with the resource's tags, and returns what ARM holds after.
    async fn put_tagged(&self, r: &Resource, existing: Option<&Found>, path: &str, api: &str, mut body: Json) -> Result<Json, CloudError> {
        let what = format!("PUT {} for {}", short_type(path), r.id);
        if existing.is_none()
            && let Some(current) = self.arm.get(&what, path, api).await?
            && self.ours(r.kind, &current).as_ref() != Some(&r.id)
        {
            return Err(self.not_ours(r, &what, path));
        }
        body["tags"] = tags_json(r);
        // Private DNS zones and their links are global; everything else is regional.
        let location = match r.properties.get("location").and_then(Value::as_str) {
            Some("global") => "global",
            _ => self.location.as_str(),
        };
        body["location"] = json!(location);
        self.arm.put(&what, path, api, &body).await
    }

    /// Lists a resource type of the resource group and keeps what is tagged ours.
    async fn observe_type(
        &self,
        kind: Kind,
        provider_type: &str,
        api: &str,
        out: &mut Vec<Found>,
    ) -> Result<Vec<(ResourceId, Json)>, CloudError> {
        let path = format!("{}/providers/{provider_type}", self.rg_path());
        let mut mine = Vec::new();
        for item in self.arm.list(&format!("list {provider_type}"), &path, api).await? {
            if let Some(id) = self.ours(kind, &item) {
                let f = found_json(id.clone(), kind, &item);
                mine.push((id, item));
                out.push(f);
            }
        }
        Ok(mine)
    }
}

/// `Microsoft.Network/virtualNetworks` of an ARM path, for messages.
fn short_type(path: &str) -> String {
    let mut parts = path.split('/').rev().skip(1).step_by(2).take(1);
    parts.next().unwrap_or(path).to_owned()
}

/// The resource's tags as ARM takes them.
fn tags_json(r: &Resource) -> Json {
    let mut m = serde_json::Map::new();
    if let Some(Value::Map(tags)) = r.properties.get("tags") {
        for (k, v) in tags.iter() {
            if let Some(v) = v.as_str() {
                m.insert(k.to_owned(), json!(v));
            }
        }
    }
    Json::Object(m)
}

/// A found resource from its ARM JSON (the cloud id is ARM's `id`).
fn found_json(id: ResourceId, kind: Kind, item: &Json) -> Found {
    Found {
        id,
        kind,
        cloud_id: item.get("id").and_then(Json::as_str).unwrap_or_default().to_owned(),
        outputs: BTreeMap::new(),
        live: Map::new(),
    }
}

fn text<'a>(r: &'a Resource, name: &str) -> &'a str {
    r.properties.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::List(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// The ARM id a reference property resolves to.
fn resolve<'a>(refs: &'a Refs, r: &Resource, name: &str) -> Result<&'a Found, CloudError> {
    let id = r.refs_in(name).into_iter().next().ok_or_else(|| CloudError::new(r.id.to_string(), format!("`{name}` names no resource")))?;
    refs.get(&id).ok_or_else(|| CloudError::new(r.id.to_string(), format!("{id} does not exist yet")))
}

/// A string from a JSON path (`properties.provisioningState`).
fn at<'a>(item: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.').try_fold(item, |v, k| v.get(k))
}

fn at_str<'a>(item: &'a Json, path: &str) -> &'a str {
    at(item, path).and_then(Json::as_str).unwrap_or_default()
}

impl Cloud for Azure {
    async fn observe(&self) -> Result<Vec<Found>, CloudError> {
        let mut out = Vec::new();
        // The resource group: adopted ones carry no tags and are found by name.
        let rg_what = format!("GET resource group {}", self.resource_group);
        if let Some(rg) = self.arm.get(&rg_what, &self.rg_path(), api::RESOURCES).await? {
            let recorded = self.by_cloud_id.get(&self.rg_path().to_ascii_lowercase()).cloned();
            let adopted = self.adopted_group.then(|| ResourceId::new(Kind::AzureResourceGroup, "main"));
            let id = self.ours(Kind::AzureResourceGroup, &rg).or(recorded).or(adopted);
            if let Some(id) = id {
                out.push(found_json(id, Kind::AzureResourceGroup, &rg));
            }
        } else {
            return Ok(out);
        }
        self.observe_network(&mut out).await?;
        self.observe_identity(&mut out).await?;
        self.observe_kubernetes(&mut out).await?;
        self.observe_storage(&mut out).await?;
        self.observe_role_assignments(&mut out).await?;
        // What AKS makes from the Services exists once the cluster does.
        if out.iter().any(|f| f.kind == Kind::AzureAksCluster) {
            for r in &self.from_services {
                out.push(Found { id: r.id.clone(), kind: r.kind, cloud_id: service_made(r), outputs: BTreeMap::new(), live: Map::new() });
            }
        }
        Ok(out)
    }

    async fn ensure(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        match r.kind {
            Kind::AzureResourceGroup => self.ensure_resource_group(r, existing).await,
            Kind::AzureVnet => self.ensure_vnet(r, existing).await,
            Kind::AzureSubnet => self.ensure_subnet(r, refs).await,
            Kind::AzureNsg => self.ensure_nsg(r, existing).await,
            Kind::AzurePublicIp => self.ensure_public_ip(r, existing).await,
            Kind::AzureNatGateway => self.ensure_nat(r, existing, refs).await,
            Kind::AzurePrivateEndpoint => self.ensure_private_endpoint(r, existing, refs).await,
            Kind::AzurePrivateDnsZone => self.ensure_private_dns_zone(r, existing).await,
            Kind::AzurePrivateDnsZoneLink => self.ensure_private_dns_link(r, existing, refs).await,
            Kind::AzurePrivateDnsZoneGroup => self.ensure_private_dns_zone_group(r, refs).await,
            Kind::AzureAksCluster => self.ensure_cluster(r, existing, refs).await,
            Kind::AzureNodePool => self.ensure_pool(r, refs).await,
            Kind::AzureStorageAccount => self.ensure_account(r, existing).await,
            Kind::AzureBlobContainer => self.ensure_container(r, refs).await,
            Kind::AzureManagedIdentity => self.ensure_identity(r, existing).await,
            Kind::AzureFederatedCredential => self.ensure_federated(r, refs).await,
            Kind::AzureRoleAssignment => self.ensure_role_assignment(r, refs).await,
            // AKS makes these from the Services' annotations (the Kubernetes half): no ARM
            // call creates them here.
            Kind::AzureLoadBalancer | Kind::AzurePrivateLinkService => {
                Ok(Found { id: r.id.clone(), kind: r.kind, cloud_id: service_made(r), outputs: BTreeMap::new(), live: Map::new() })
            }
            other => Err(CloudError::new(r.id.to_string(), format!("{} is not an Azure resource", other.label()))),
        }
    }

    async fn delete(&self, f: &Found) -> Result<(), CloudError> {
        let what = format!("DELETE {}", f.id);
        let api = match f.kind {
            // Made and deleted by AKS with its Service.
            Kind::AzureLoadBalancer | Kind::AzurePrivateLinkService => return Ok(()),
            // Adopted groups are never ours to delete; the plan blocks them, and this
            // refuses too.
            Kind::AzureResourceGroup => api::RESOURCES,
            Kind::AzureVnet
            | Kind::AzureSubnet
            | Kind::AzureNsg
            | Kind::AzurePublicIp
            | Kind::AzureNatGateway
            | Kind::AzurePrivateEndpoint
            | Kind::AzurePrivateDnsZoneGroup => api::NETWORK,
            Kind::AzurePrivateDnsZone | Kind::AzurePrivateDnsZoneLink => api::PRIVATE_DNS,
            Kind::AzureAksCluster | Kind::AzureNodePool => api::CONTAINER_SERVICE,
            Kind::AzureStorageAccount | Kind::AzureBlobContainer => api::STORAGE,
            Kind::AzureManagedIdentity | Kind::AzureFederatedCredential => api::MANAGED_IDENTITY,
            Kind::AzureRoleAssignment => api::AUTHORIZATION,
            other => return Err(CloudError::new(f.id.to_string(), format!("{} is not an Azure resource", other.label()))),
        };
        if f.cloud_id.is_empty() {
            return Ok(());
        }
        match self.arm.delete(&what, &f.cloud_id, api).await {
            // AKS refuses to delete a cluster's last System pool; it goes with its cluster,
            // which is deleted after its pools.
            Err(e) if f.kind == Kind::AzureNodePool && e.is(&["OperationNotAllowed"]) && e.message.contains("system") => {
                println!("note: {} is the cluster's System pool; it is deleted with the cluster", f.id);
                Ok(())
            }
            other => other,
        }
    }
}

/// The cloud id recorded for what AKS makes from a Service: the Service it comes from.
fn service_made(r: &Resource) -> String {
    format!("service:{}/{}", text(r, "namespace"), text(r, "service"))
}

impl Azure {
    async fn ensure_resource_group(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let path = self.rg_path();
        let what = format!("resource group {} for {}", self.resource_group, r.id);
        if matches!(r.properties.get("adopted"), Some(Value::Bool(true))) {
            // Adopted: it must exist; byoc neither creates nor changes it.
            return match self.arm.get(&what, &path, api::RESOURCES).await? {
                Some(rg) => Ok(found_json(r.id.clone(), r.kind, &rg)),
                None => Err(CloudError {
                    what,
                    code: Some("ResourceGroupNotFound".to_owned()),
                    message: format!(
                        "the spec names resource group {} (resourceGroup), so byoc adopts it and does not create it: create it first (az group create -n {} -l {})",
                        self.resource_group, self.resource_group, self.location
                    ),
                }),
            };
        }
        let rg = self.put_tagged(r, existing, &path, api::RESOURCES, json!({})).await?;
        Ok(found_json(r.id.clone(), r.kind, &rg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_errors_keep_their_code_and_only_what_can_pass_is_retried() {
        let body = json!({"error": {"code": "AnotherOperationInProgress", "message": "Operation is in progress on the cluster"}});
        let e = arm_error("PUT managedClusters", 409, &body);
        assert!(e.is(&["AnotherOperationInProgress"]), "{e}");
        assert!(retryable(409, &e));
        let fic = arm_error(
            "PUT federatedIdentityCredential",
            409,
            &json!({"error": {"code": "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity", "message": "concurrent"}}),
        );
        assert!(retryable(409, &fic), "a concurrent credential write is waited out, as after a killed apply");
        let exists = arm_error("PUT roleAssignments", 409, &json!({"error": {"code": "RoleAssignmentExists", "message": "exists"}}));
        assert!(!retryable(409, &exists), "an existing assignment is an answer, not a reason to wait");
        let throttled = arm_error("GET", 429, &json!({"error": {"code": "TooManyRequests", "message": "slow down"}}));
        assert!(retryable(429, &throttled));
        let bad = arm_error("PUT", 400, &json!({"error": {"code": "InvalidApiVersionParameter", "message": "no"}}));
        assert!(!retryable(400, &bad));
        assert_eq!(bad.code.as_deref(), Some("InvalidApiVersionParameter"));
        // An answer without ARM's error body still says its status.
        let bare = arm_error("GET", 502, &Json::Null);
        assert!(bare.is(&["HTTP502"]) && retryable(502, &bare), "{bare}");
    }

    #[test]
    fn the_api_version_is_added_once_and_absolute_operation_urls_are_kept() {
        let arm = Arm::new(
            &Endpoint { url: Some("https://127.0.0.1:1".into()), extra_ca_pem: None },
            &Credential::ClientSecret { tenant: "00000000-0000-0000-0000-000000000002".into(), client_id: "c".into(), secret: "s".into() },
        )
        .expect("client");
        let u = arm.url("/subscriptions/s/resourceGroups/rg", api::RESOURCES).expect("url");
        assert_eq!(u.as_str(), "https://127.0.0.1:1/subscriptions/s/resourceGroups/rg?api-version=2021-04-01");
        let op = arm.url("https://127.0.0.1:1/ops/1?api-version=2024-05-01", "").expect("url");
        assert_eq!(op.query(), Some("api-version=2024-05-01"));
        let again = arm.url("/x?api-version=2024-05-01", api::NETWORK).expect("url");
        assert_eq!(again.query(), Some("api-version=2024-05-01"));
    }

    #[test]
    fn what_blocks_a_write_is_read_while_waiting() {
        let url = Url::parse(
            "https://h/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c/agentPools/p?api-version=1",
        )
        .expect("url");
        let paths: Vec<String> = in_progress_targets(&url).iter().map(|u| u.path().to_owned()).collect();
        assert_eq!(
            paths,
            vec![
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c/agentPools/p".to_owned(),
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c".to_owned(),
            ]
        );
        assert!(in_progress_targets(&url).iter().all(|u| u.query() == Some("api-version=1")));
    }

    #[test]
    fn an_endpoint_that_is_not_a_url_is_refused() {
        let e = Arm::new(
            &Endpoint { url: Some("not a url".into()), extra_ca_pem: None },
            &Credential::ClientSecret { tenant: "00000000-0000-0000-0000-000000000002".into(), client_id: "c".into(), secret: "s".into() },
        );
        assert!(e.is_err());
    }
}
