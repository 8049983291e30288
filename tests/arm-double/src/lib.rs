//! A small, state-keeping fake of Azure Resource Manager (and of the Entra token endpoint),
//! for tests: no ARM emulator exists for VNets, AKS, storage accounts, managed identities
//! or role assignments (see /work/shared/TESTING.md), so the Azure provider is tested
//! against this fake through the real `azure_core` pipeline.
//!
//! It serves HTTPS on 127.0.0.1 with a test CA made at start ([`Double::ca_pem`]), because
//! `azure_core`'s bearer-token policy and `azure_identity` refuse plain-http endpoints. It
//! judges requests as ARM does rather than accepting whatever a client sends:
//! - `POST /{tenant}/oauth2/v2.0/token` (client-credentials grant with
//!   [`Double::client_id`]/[`Double::client_secret`]) gives a bearer token shaped as
//!   Entra's (a JWT whose claims name the caller: `oid` [`Double::caller_principal_id`],
//!   `tid`, `aud`, `exp`; its signature is not checked by anyone, the fake accepts exactly
//!   the tokens it issued); every ARM call
//!   without a token it issued is answered 401 `AuthenticationFailed` /
//!   `InvalidAuthenticationToken`;
//! - each namespace accepts only the api-versions in [`API_VERSIONS`], others 400
//!   `InvalidApiVersionParameter`, a missing one 400 `MissingApiVersionParameter`; private
//!   DNS zones and their links only [`PRIVATE_DNS_API_VERSIONS`] (400
//!   `NoRegisteredProviderFound`), at location `global` only;
//! - a private DNS zone's virtual network link must name an existing VNet (400
//!   `BadRequest`), a private endpoint's zone group existing private DNS zones (400
//!   `InvalidPrivateDnsZoneIds`; both codes written from the error's meaning, not
//!   confirmed against Azure);
//! - resource groups; resources by id under
//!   `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/{child}/{name}]`:
//!   PUT (create or update), GET, DELETE, list; long-running kinds answer 201 with
//!   `Azure-AsyncOperation` and `Retry-After` and stay `Creating`/`Updating` for
//!   [`Options::provisioning_polls`] polls (a GET of the operation or of the resource is a
//!   poll); deletes of long-running kinds answer 202 with `Location` (and
//!   `Azure-AsyncOperation`); storage accounts as the storage provider does: a create
//!   answers 202 with an empty body and only `Location` to poll, updates and deletes at once;
//! - `etag` where the real type has one, `If-Match` (412 `PreconditionFailed`) and
//!   `If-None-Match: *`;
//! - per-type rules: names, references that must exist, `InUseSubnetCannotBeDeleted`,
//!   `StorageAccountAlreadyTaken`, NAT gateway zones, AKS `dnsServiceIP` in `serviceCidr`,
//!   tags, `AnotherOperationInProgress`, `RoleAssignmentExists`, a blob service's
//!   `isVersioningEnabled` a boolean, an account's lifecycle policy
//!   (`managementPolicies/default`: named, `Lifecycle` rules with actions and blob types and
//!   whole days; 400 `InvalidManagementPolicyRules`, a code not confirmed against Azure),
//!   ... (src/arm/types.rs);
//! - provider and preview-feature registration state, throttling (429 with `Retry-After`),
//!   and changes by another actor ([`Double::tamper`]);
//! - writes refused while the resource, its parent or a child is provisioning (409
//!   `AnotherOperationInProgress`), PUTs into a group being deleted (409
//!   `ResourceGroupBeingDeleted`), a VNet PUT that leaves out a subnet deletes it (and is
//!   refused while that subnet is in use), overlapping federated identity credential writes
//!   on one identity (409), role assignments for a principal still replicating
//!   ([`Double::set_principal_replication_delay`]), the caller's own roles
//!   ([`Options::caller_roles`], 403 `AuthorizationFailed`), and planned operation failures
//!   ([`Double::fail_next_operation`]).
//!
//! ARM's error body: `{"error":{"code":"...","message":"..."}}`.
//!
//! Where the error codes come from: the ARM and Entra ones (`AuthenticationFailed`,
//! `InvalidAuthenticationToken`, `ResourceGroupNotFound`, `ResourceNotFound`,
//! `ParentResourceNotFound`, `MissingSubscriptionRegistration`, `AuthorizationFailed`,
//! `InvalidApiVersionParameter`, `LocationRequired`, `InvalidTagNameCharacters`,
//! `PreconditionFailed`, `AADSTS7000215`), the storage ones (`AccountNameInvalid`,
//! `StorageAccountAlreadyTaken`), the network ones (`InUseSubnetCannotBeDeleted`,
//! `NetcfgSubnetRangeOutsideVnet`, `NetcfgSubnetRangesOverlap`, `InvalidResourceReference`,
//! `AnotherOperationInProgress`, `StandardSkuPublicIPAddressesMustBeStatic`,
//! `SecurityRuleInvalidPriority`), AKS (`InvalidParameter`, `MustDefineAtLeastOneSystemPool`,
//! `ServiceCidrOverlapExistingSubnetsCidr`), managed identities
//! (`ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity`) and RBAC
//! (`RoleAssignmentExists`, `PrincipalNotFound`, `RoleDefinitionDoesNotExist`) are ARM's
//! documented or commonly reported codes. Not confirmed against a document here, so match
//! on the status rather than the code: the NAT gateway zone code
//! (`NatGatewayCannotHaveMultipleZones`), `InvalidTagCount`, `InvalidRoleAssignmentId`,
//! `InvalidConditionVersion`, `PrivateEndpointBadRequest`, `InUseNatGatewayCannotBeDeleted`,
//! `PublicIPAddressInUse`, `OperationNotAllowed` (last system pool), and the federated
//! credential `BadRequest`s.
//!
//! What it does not do: paging (`nextLink`), PATCH beyond tags, deployments, locks, route
//! tables, private DNS zones, Private Link services, quota and SKU availability, AKS
//! Kubernetes-version checks, AKS's checks of its identity's permissions on the subnets
//! (the cluster identity's Network Contributor is not verified), role definitions beyond
//! the built-in ones in [`ROLE_DEFINITIONS`], Entra flows other than client credentials,
//! token expiry, blob data (azurite's job). Tokens are accepted for any scope ending in
//! `/.default`.

mod arm;
mod rules;
mod tls;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

pub use arm::{API_VERSIONS, CALLER_PRINCIPAL_ID, PRIVATE_DNS_API_VERSIONS, ROLE_DEFINITIONS};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The one subscription that exists.
    pub subscription: String,
    /// The tenant whose token endpoint answers.
    pub tenant: String,
    /// The default location (used for the AKS OIDC issuer's host and the node resource group).
    pub location: String,
    /// Share of ARM requests answered 429 with `Retry-After: 1`, 0.0 to 1.0.
    pub throttle_rate: f64,
    /// Seed of the fake's random choices (throttling, generated ids).
    pub seed: u64,
    /// How many polls a long-running operation stays in progress (default 2).
    pub provisioning_polls: u32,
    /// Preview features reported `NotRegistered`, as `Namespace/FeatureName`.
    pub unregistered_features: Vec<String>,
    /// Resource providers reported `NotRegistered` (writes to them: 409
    /// `MissingSubscriptionRegistration`).
    pub unregistered_providers: Vec<String>,
    /// The caller's role assignments, `(scope, roleDefinitionId)`, listed by
    /// `roleAssignments` GETs (not in snapshots); `None` makes the caller Owner of the
    /// subscription, which lets it do everything. With `Some`, writes need Owner or Contributor at or above the resource,
    /// and role-assignment writes Owner, User Access Administrator or Role Based Access
    /// Control Administrator (403 `AuthorizationFailed` otherwise).
    pub caller_roles: Option<Vec<(String, String)>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            subscription: "00000000-0000-0000-0000-000000000001".to_owned(),
            tenant: "00000000-0000-0000-0000-000000000002".to_owned(),
            location: "eastus".to_owned(),
            throttle_rate: 0.0,
            seed: 1,
            provisioning_polls: 2,
            unregistered_features: Vec::new(),
            unregistered_providers: Vec::new(),
            caller_roles: None,
        }
    }
}

struct Shared {
    url: String,
    ca_pem: String,
    client_id: String,
    client_secret: String,
    state: Mutex<arm::State>,
    /// Identities (lower-case ids) with a federated identity credential write running.
    fic_writes: Mutex<std::collections::HashSet<String>>,
    fic_write_time: Mutex<std::time::Duration>,
}

/// How long a federated identity credential write holds its identity, by default.
const FIC_WRITE_TIME: std::time::Duration = std::time::Duration::from_millis(150);

/// The fake; clones share state. It runs on its own thread until the process ends.
#[derive(Clone)]
pub struct Double {
    shared: Arc<Shared>,
}

impl Double {
    /// Starts the fake on 127.0.0.1 (a free port) on its own thread and tokio runtime.
    pub fn spawn(opts: Options) -> anyhow::Result<Double> {
        Self::spawn_on("127.0.0.1:0", opts)
    }

    /// [`Double::spawn`] on a given loopback address (`127.0.0.1:PORT`).
    pub fn spawn_on(listen: &str, opts: Options) -> anyhow::Result<Double> {
        let (ca_pem, tls) = tls::make()?;
        let listener = std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            anyhow::bail!("the fake only listens on loopback addresses, not {addr}");
        }
        listener.set_nonblocking(true)?;
        let url = format!("https://{addr}");
        let client_id = "11111111-1111-1111-1111-111111111111".to_owned();
        let client_secret = format!("arm-double-secret-{:016x}", opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let state = arm::State::new(opts, url.clone(), client_id.clone(), client_secret.clone());
        let double = Double {
            shared: Arc::new(Shared {
                url,
                ca_pem,
                client_id,
                client_secret,
                state: Mutex::new(state),
                fic_writes: Mutex::default(),
                fic_write_time: Mutex::new(FIC_WRITE_TIME),
            }),
        };
        let served = double.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        std::thread::Builder::new().name("arm-double".to_owned()).spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(_) => return,
                };
                served.serve(listener, tokio_rustls::TlsAcceptor::from(tls)).await;
            });
        })?;
        Ok(double)
    }

    async fn serve(self, listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            let double = self.clone();
            tokio::spawn(async move {
                // A client that gives up on the handshake (or distrusts the CA) just goes away.
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let double = double.clone();
                    async move { Ok::<_, Infallible>(double.answer(req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let request = arm::Req {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            authorization: header("authorization"),
            if_match: header("if-match"),
            if_none_match: header("if-none-match"),
            body,
        };
        let reply = match self.fic_write_slot(&request).await {
            Ok(Some(identity)) => {
                // Hold the identity while the write "runs", so an overlapping one collides.
                // The write runs on its own task: as in Azure, a write accepted goes on (and
                // then frees the identity) when its client disconnects, e.g. a killed apply;
                // tied to the connection, the slot would stay taken for good.
                let hold = *self.shared.fic_write_time.lock().unwrap_or_else(|e| e.into_inner());
                let this = self.clone();
                let write = tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    let reply = this.state().handle(&request);
                    this.fic_writes().remove(&identity);
                    reply
                });
                match write.await {
                    Ok(reply) => reply,
                    Err(_) => arm::Reply::error(500, "InternalServerError", "The fake's write task failed."),
                }
            }
            Ok(None) => self.state().handle(&request),
            Err(reply) => reply,
        };
        let mut builder = Response::builder().status(reply.status);
        for (k, v) in &reply.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let bytes = match &reply.body {
            Some(v) => {
                builder = builder.header("content-type", "application/json; charset=utf-8");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        builder.body(Full::new(bytes)).unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }

    /// Federated identity credentials of one identity cannot be written concurrently: Azure
    /// refuses the overlapping write 409
    /// `ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity`. A FIC PUT or
    /// DELETE takes [`FIC_WRITE_TIME`] here ([`Double::set_fic_write_time`]); another one on the same identity meanwhile is
    /// refused. Sequential writes are fine. `Ok(Some(identity))`: this request holds it.
    async fn fic_write_slot(&self, req: &arm::Req) -> Result<Option<String>, arm::Reply> {
        let lower = req.path.to_ascii_lowercase();
        let Some((identity, _)) = lower.split_once("/federatedidentitycredentials/") else { return Ok(None) };
        if !(req.method == "PUT" || req.method == "DELETE") || !self.state().authenticated(req) {
            return Ok(None);
        }
        let identity = identity.to_owned();
        if !self.fic_writes().insert(identity.clone()) {
            return Err(arm::Reply::error(
                409,
                "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
                "Too many Federated Identity Credentials are written concurrently for the managed identity. Concurrent Federated Identity Credentials writes under the same managed identity are not supported.",
            ));
        }
        Ok(Some(identity))
    }

    fn fic_writes(&self) -> MutexGuard<'_, std::collections::HashSet<String>> {
        self.shared.fic_writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, arm::State> {
        // A panic while holding the lock leaves the state as it was at the panic; keep serving.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `https://127.0.0.1:PORT`: the ARM endpoint and the Entra authority host.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// The test CA certificate, PEM, that signed the server's certificate.
    pub fn ca_pem(&self) -> String {
        self.shared.ca_pem.clone()
    }

    /// The client id the token endpoint accepts.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// The client secret the token endpoint accepts.
    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }

    /// Every resource group, resource and role assignment, by lower-case id.
    pub fn snapshot(&self) -> Value {
        self.state().snapshot()
    }

    /// `METHOD PATH` of each mutating ARM request answered 2xx, in order.
    pub fn writes(&self) -> Vec<String> {
        self.state().writes.clone()
    }

    /// How many requests were answered 429.
    pub fn throttled(&self) -> u64 {
        self.state().throttled
    }

    /// Changes the share of requests answered 429.
    pub fn set_throttle_rate(&self, rate: f64) {
        self.state().throttle_rate = rate;
    }

    /// Another actor changes a resource: `patch` is merged into it (JSON merge patch; `null`
    /// removes a key) and its etag changes, as a change through the portal would.
    pub fn tamper(&self, id: &str, patch: Value) -> anyhow::Result<()> {
        self.state().tamper(id, patch)
    }

    /// The next long-running operation (PUT or DELETE) on a resource whose id contains
    /// `id_fragment` (case-insensitive) ends `Failed` with ARM's error `code` and `message`:
    /// the operation status says `{"status":"Failed","error":{...}}`, a `Location` poll answers
    /// 400 with the error, and the resource is left with `provisioningState` `Failed`.
    pub fn fail_next_operation(&self, id_fragment: &str, code: &str, message: &str) {
        self.state().fail_next(id_fragment, code, message);
    }

    /// Principals made from now on (identities, cluster and kubelet identities) are "not
    /// yet replicated" for `attempts` role-assignment PUTs that name them without
    /// `principalType`: those fail 400 `PrincipalNotFound`, as they can in Azure right after
    /// the principal is made ("Assign Azure roles using the REST API"). Default 0.
    pub fn set_principal_replication_delay(&self, attempts: u32) {
        self.state().replication_delay = attempts;
    }

    /// How long a federated identity credential write holds its identity (150 ms by
    /// default); an overlapping write to the same identity is refused 409.
    pub fn set_fic_write_time(&self, hold: std::time::Duration) {
        *self.shared.fic_write_time.lock().unwrap_or_else(|e| e.into_inner()) = hold;
    }

    /// The object id of the service principal the fake's credentials stand for (the
    /// principal of the caller's role assignments; a known principal for role assignments).
    pub fn caller_principal_id(&self) -> &'static str {
        arm::CALLER_PRINCIPAL_ID
    }

    /// Marks a provider `Registered` or `NotRegistered` (preflight tests).
    pub fn set_provider_registered(&self, namespace: &str, registered: bool) {
        self.state().set_provider(namespace, registered);
    }

    /// Marks a preview feature (`Namespace/Name`) `Registered` or `NotRegistered`.
    pub fn set_feature_registered(&self, feature: &str, registered: bool) {
        self.state().set_feature(feature, registered);
    }

    /// The number of requests answered so far (all kinds, including the token endpoint).
    pub fn requests(&self) -> u64 {
        self.state().requests
    }
}
