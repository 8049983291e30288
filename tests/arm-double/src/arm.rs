//! The fake's state and how it judges each request, as ARM and the resource providers do.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::Options;
use crate::rules;

mod access;
mod types;

/// The api-versions each namespace accepts (`resourcegroups` and `providers` are
/// Microsoft.Resources); any other is refused 400 `InvalidApiVersionParameter`. The first is
/// the one the fake writes into its operation URLs. Microsoft.ContainerService takes the
/// shared contract's 2025-01-01 and the graph's `expand::azure::AKS_API_VERSION`, 2025-05-01
/// (both stable). Extend here when a newer stable version is needed.
pub const API_VERSIONS: &[(&str, &[&str])] = &[
    ("microsoft.resources", &["2021-04-01"]),
    ("microsoft.features", &["2021-07-01"]),
    ("microsoft.network", &["2024-05-01"]),
    ("microsoft.containerservice", &["2025-01-01", "2025-05-01"]),
    ("microsoft.storage", &["2023-05-01"]),
    ("microsoft.managedidentity", &["2023-01-31"]),
    ("microsoft.authorization", &["2022-04-01"]),
];

/// Private DNS zones and their virtual network links are versioned apart from the rest of
/// Microsoft.Network (the `privatedns` specification): only these are accepted for them, and
/// none of them for the other Microsoft.Network types.
pub const PRIVATE_DNS_API_VERSIONS: &[&str] = &["2024-06-01"];
/// The type keys [`PRIVATE_DNS_API_VERSIONS`] applies to; global, never regional.
const PRIVATE_DNS_ZONES: &str = "microsoft.network/privatednszones";

/// The principal (object id) the fake's service principal has.
pub const CALLER_PRINCIPAL_ID: &str = "33333333-3333-3333-3333-333333333333";

/// A resource type the fake knows.
struct Kind {
    /// Lower-case `namespace/type[/child]`.
    key: &'static str,
    /// As ARM spells it in `type`.
    canonical: &'static str,
    /// PUT and DELETE are long-running (201/202 and an operation to poll).
    lro: bool,
    /// Has an `etag`.
    etag: bool,
    /// Tracked (top-level): has `location` and `tags`.
    tracked: bool,
}

const KINDS: &[Kind] = &[
    Kind { key: "microsoft.network/virtualnetworks", canonical: "Microsoft.Network/virtualNetworks", lro: true, etag: true, tracked: true },
    Kind {
        key: "microsoft.network/virtualnetworks/subnets",
        canonical: "Microsoft.Network/virtualNetworks/subnets",
        lro: true,
        etag: true,
        tracked: false,
    },
    Kind {
        key: "microsoft.network/networksecuritygroups",
        canonical: "Microsoft.Network/networkSecurityGroups",
        lro: true,
        etag: true,
        tracked: true,
    },
    Kind { key: "microsoft.network/natgateways", canonical: "Microsoft.Network/natGateways", lro: true, etag: true, tracked: true },
    Kind {
        key: "microsoft.network/publicipaddresses",
        canonical: "Microsoft.Network/publicIPAddresses",
        lro: true,
        etag: true,
        tracked: true,
    },
    Kind {
        key: "microsoft.network/privateendpoints",
        canonical: "Microsoft.Network/privateEndpoints",
        lro: true,
        etag: true,
        tracked: true,
    },
    Kind {
        key: "microsoft.network/privateendpoints/privatednszonegroups",
        canonical: "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
        lro: true,
        etag: true,
        tracked: false,
    },
    Kind { key: PRIVATE_DNS_ZONES, canonical: "Microsoft.Network/privateDnsZones", lro: true, etag: true, tracked: true },
    Kind {
        key: "microsoft.network/privatednszones/virtualnetworklinks",
        canonical: "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
        lro: true,
        etag: true,
        tracked: true,
    },
    Kind {
        key: "microsoft.containerservice/managedclusters",
        canonical: "Microsoft.ContainerService/managedClusters",
        lro: true,
        etag: true,
        tracked: true,
    },
    Kind {
        key: "microsoft.containerservice/managedclusters/agentpools",
        canonical: "Microsoft.ContainerService/managedClusters/agentPools",
        lro: true,
        etag: true,
        tracked: false,
    },
    // Storage accounts: see STORAGE_ACCOUNTS.
    Kind { key: STORAGE_ACCOUNTS, canonical: "Microsoft.Storage/storageAccounts", lro: false, etag: false, tracked: true },
    Kind {
        key: "microsoft.storage/storageaccounts/blobservices",
        canonical: "Microsoft.Storage/storageAccounts/blobServices",
        lro: false,
        etag: false,
        tracked: false,
    },
    // An account's lifecycle rules: one policy, named `default`.
    Kind {
        key: "microsoft.storage/storageaccounts/managementpolicies",
        canonical: "Microsoft.Storage/storageAccounts/managementPolicies",
        lro: false,
        etag: false,
        tracked: false,
    },
    Kind {
        key: "microsoft.storage/storageaccounts/blobservices/containers",
        canonical: "Microsoft.Storage/storageAccounts/blobServices/containers",
        lro: false,
        etag: true,
        tracked: false,
    },
    Kind {
        key: "microsoft.managedidentity/userassignedidentities",
        canonical: "Microsoft.ManagedIdentity/userAssignedIdentities",
        lro: false,
        etag: false,
        tracked: true,
    },
    Kind {
        key: "microsoft.managedidentity/userassignedidentities/federatedidentitycredentials",
        canonical: "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        lro: false,
        etag: false,
        tracked: false,
    },
];

const RG_KIND: &str = "resourcegroups";
/// The storage provider answers a create 202 with an empty body, `Location` and
/// `Retry-After` (no `Azure-AsyncOperation`), a PUT of an account still being created 200
/// with its configuration, an update 200 at once, and a delete 200 at once ("Create a storage
/// account with the REST API", "Track asynchronous Azure operations").
const STORAGE_ACCOUNTS: &str = "microsoft.storage/storageaccounts";
const RA_KIND: &str = "microsoft.authorization/roleassignments";

/// Built-in role definitions the fake knows: (id, roleName).
pub const ROLE_DEFINITIONS: &[(&str, &str)] = &[
    ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner"),
    ("b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor"),
    ("acdd72a7-3385-48ef-bd42-f606fba81ae7", "Reader"),
    ("18d7d88d-d35e-4fb5-a5c3-7773c20a72d9", "User Access Administrator"),
    ("f58310d9-a9f6-439a-9e8d-f62e7b41a168", "Role Based Access Control Administrator"),
    ("4d97b98b-1d4f-4787-a291-c67834d212e7", "Network Contributor"),
    ("f1a07417-d97a-45cb-824c-7a7467783830", "Managed Identity Operator"),
    ("e40ec5ca-96e0-45a2-b4ff-59039f2c2b59", "Managed Identity Contributor"),
    ("ba92f5b4-2d11-453d-a403-e96b0029c9fe", "Storage Blob Data Contributor"),
    ("2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", "Storage Blob Data Reader"),
    ("b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b", "Azure Kubernetes Service RBAC Cluster Admin"),
    ("4abbcc35-e782-43d8-92c5-2d3f1bd2253f", "Azure Kubernetes Service Cluster User Role"),
    ("0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8", "Azure Kubernetes Service Cluster Admin Role"),
    // The agent's role on its resource group (policies/azure/agent.json).
    ("43d0d8ad-25c7-4714-9337-8ba259a9fe05", "Monitoring Reader"),
];

const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
const USER_ACCESS_ADMIN: &str = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9";
const RBAC_ADMIN: &str = "f58310d9-a9f6-439a-9e8d-f62e7b41a168";

/// Namespaces the providers endpoint lists.
const PROVIDERS: &[&str] = &[
    "Microsoft.Network",
    "Microsoft.ContainerService",
    "Microsoft.Storage",
    "Microsoft.ManagedIdentity",
    "Microsoft.Authorization",
    "Microsoft.Features",
    "Microsoft.Resources",
    "Microsoft.Compute",
];

/// Azure regions the fake accepts as `location`.
const LOCATIONS: &[&str] = &[
    "eastus",
    "eastus2",
    "westus",
    "westus2",
    "westus3",
    "centralus",
    "northeurope",
    "westeurope",
    "uksouth",
    "ukwest",
    "germanywestcentral",
    "francecentral",
    "swedencentral",
    "japaneast",
    "australiaeast",
    "southeastasia",
];

/// One HTTP request, as the fake sees it.
pub struct Req {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) authorization: Option<String>,
    pub(crate) if_match: Option<String>,
    pub(crate) if_none_match: Option<String>,
    pub(crate) body: Bytes,
}

/// The answer.
pub struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<Value>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply { status, headers: Vec::new(), body: Some(body) }
    }
    fn empty(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: None }
    }
    /// ARM's error body.
    pub(crate) fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
        Reply::json(status, json!({"error": {"code": code, "message": message.into()}}))
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.to_owned(), v.into()));
        self
    }
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
    Reply::error(status, code, message)
}

type Answer = Result<Reply, Reply>;

struct Entry {
    json: Value,
    kind: &'static str,
    /// The operation in progress on it, if any.
    op: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Action {
    Create,
    Update,
    Delete,
}

struct Op {
    target: String,
    action: Action,
    remaining: u32,
    done: bool,
    namespace: String,
    location: String,
    started: String,
    /// Ends `Failed` with this error (code, message) instead of succeeding.
    failure: Option<(String, String)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Reg {
    Registered,
    NotRegistered,
    /// Registering, registered after this many more reads.
    Registering(u32),
}

impl Reg {
    fn name(self) -> &'static str {
        match self {
            Reg::Registered => "Registered",
            Reg::NotRegistered => "NotRegistered",
            Reg::Registering(_) => "Registering",
        }
    }
}

/// Everything the fake keeps.
pub struct State {
    opts: Options,
    url: String,
    client_id: String,
    client_secret: String,
    resources: BTreeMap<String, Entry>,
    ops: HashMap<String, Op>,
    tokens: HashSet<String>,
    /// Tokens issued to managed identities (by federation): token -> (principal, client id).
    identity_tokens: HashMap<String, (String, String)>,
    rng: u64,
    throttle_rng: u64,
    pub(crate) throttle_rate: f64,
    pub(crate) throttled: u64,
    pub(crate) writes: Vec<String>,
    pub(crate) requests: u64,
    providers: HashMap<String, Reg>,
    features: HashMap<String, (String, Reg)>,
    /// Planned failures: (lower-case id fragment, code, message), each used once.
    failures: Vec<(String, String, String)>,
    /// Role-assignment attempts a new principal still fails (see `new_principal`).
    pub(crate) replication_delay: u32,
    replicating: HashMap<String, u32>,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_owned())
}

fn api_versions_of(namespace: &str) -> Option<&'static [&'static str]> {
    API_VERSIONS.iter().find(|(ns, _)| *ns == namespace).map(|(_, v)| *v)
}

fn api_version_of(namespace: &str) -> Option<&'static str> {
    api_versions_of(namespace).and_then(|v| v.first().copied())
}

fn kind(key: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.key == key)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

/// The last path segment of an id (the role definition GUID of a roleDefinitionId).
fn last_segment(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// Whether `scope` is `id` or one of its ancestors (both lower-case).
fn covers(scope: &str, id: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    id == scope || id.starts_with(&format!("{scope}/"))
}

impl State {
    pub(crate) fn new(opts: Options, url: String, client_id: String, client_secret: String) -> State {
        let mut providers = HashMap::new();
        for ns in PROVIDERS {
            providers.insert(ns.to_ascii_lowercase(), Reg::Registered);
        }
        for ns in &opts.unregistered_providers {
            providers.insert(ns.to_ascii_lowercase(), Reg::NotRegistered);
        }
        let mut features = HashMap::new();
        for f in &opts.unregistered_features {
            features.insert(f.to_ascii_lowercase(), (f.clone(), Reg::NotRegistered));
        }
        let seed = opts.seed;
        let throttle_rate = opts.throttle_rate;
        State {
            opts,
            url,
            client_id,
            client_secret,
            resources: BTreeMap::new(),
            ops: HashMap::new(),
            tokens: HashSet::new(),
            identity_tokens: HashMap::new(),
            rng: seed,
            throttle_rng: seed ^ 0x5555_5555_5555_5555,
            throttle_rate,
            throttled: 0,
            writes: Vec::new(),
            requests: 0,
            providers,
            features,
            failures: Vec::new(),
            replication_delay: 0,
            replicating: HashMap::new(),
        }
    }

    fn guid(&mut self) -> String {
        let a = splitmix(&mut self.rng);
        let b = splitmix(&mut self.rng);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    fn sub_id(&self) -> String {
        format!("/subscriptions/{}", self.opts.subscription)
    }

    pub(crate) fn handle(&mut self, req: &Req) -> Reply {
        self.requests += 1;
        let segs: Vec<String> = req.path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
        let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
        if req.method == "POST" && segs.len() == 4 && lower[1] == "oauth2" && lower[2] == "v2.0" && lower[3] == "token" {
            return self.token(&segs[0], &req.body);
        }
        if let Err(reply) = self.authenticate(req) {
            return reply;
        }
        // A managed identity is held to the roles assigned to it.
        if let Some((principal, client_id)) = self.identity_caller(req)
            && let Err(reply) = self.judge_identity(&principal, &client_id, req, &segs, &lower)
        {
            return reply;
        }
        if self.throttle_rate > 0.0 {
            let draw = (splitmix(&mut self.throttle_rng) >> 11) as f64 / (1u64 << 53) as f64;
            if draw < self.throttle_rate {
                self.throttled += 1;
                let kind = if req.method == "GET" { "read" } else { "write" };
                return error(
                    429,
                    "TooManyRequests",
                    format!(
                        "Number of '{kind}' requests for subscription '{}' exceeded the limit. Please try again after '1' seconds.",
                        self.opts.subscription
                    ),
                )
                .header("Retry-After", "1");
            }
        }
        let reply = match self.route(req, &segs, &lower) {
            Ok(r) | Err(r) => r,
        };
        if req.method != "GET" && req.method != "HEAD" && (200..300).contains(&reply.status) {
            self.writes.push(format!("{} {}", req.method, req.path));
        }
        reply
    }

    /// The Entra v2 token endpoint, client-credentials grant.
    fn token(&mut self, tenant: &str, body: &Bytes) -> Reply {
        let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        let entra = |status: u16, error: &str, code: i64, description: String| {
            Reply::json(status, json!({"error": error, "error_description": description, "error_codes": [code]}))
        };
        if !tenant.eq_ignore_ascii_case(&self.opts.tenant) {
            return entra(400, "invalid_request", 90002, format!("AADSTS90002: Tenant '{tenant}' not found."));
        }
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return entra(400, "unsupported_grant_type", 70003, "AADSTS70003: The app requested an unsupported grant type.".to_owned());
        }
        let scope = form.get("scope").cloned().unwrap_or_default();
        if form.get("client_assertion_type").map(String::as_str) == Some(access::JWT_BEARER) {
            let client_id = form.get("client_id").cloned().unwrap_or_default();
            let assertion = form.get("client_assertion").cloned().unwrap_or_default();
            return self.federated_token(&client_id, &assertion, &scope);
        }
        if form.get("client_id") != Some(&self.client_id) {
            return entra(
                400,
                "unauthorized_client",
                700016,
                format!(
                    "AADSTS700016: Application with identifier '{}' was not found in the directory.",
                    form.get("client_id").map(String::as_str).unwrap_or("")
                ),
            );
        }
        if form.get("client_secret") != Some(&self.client_secret) {
            return entra(401, "invalid_client", 7000215, "AADSTS7000215: Invalid client secret provided.".to_owned());
        }
        if !scope.ends_with("/.default") {
            return entra(
                400,
                "invalid_scope",
                1002012,
                format!(
                    "AADSTS1002012: The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier."
                ),
            );
        }
        let token = self.jwt(scope.trim_end_matches("/.default"));
        self.tokens.insert(token.clone());
        Reply::json(200, json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))
    }

    /// An access token shaped as Entra's are (header.payload.signature, base64url without
    /// padding), whose payload names the caller (`oid`, the service principal's object id),
    /// its tenant (`tid`), the audience and the expiry, so that a client may read who it is
    /// as it would from a real token. The signature is random bytes, not a signature: the
    /// fake accepts exactly the tokens it issued (kept in `tokens`), so nothing verifies it.
    fn jwt(&mut self, audience: &str) -> String {
        let app = self.client_id.clone();
        self.jwt_for(audience, &app, CALLER_PRINCIPAL_ID)
    }

    /// [`State::jwt`] for the application `app` whose principal is `oid`.
    fn jwt_for(&mut self, audience: &str, app: &str, oid: &str) -> String {
        use base64::Engine as _;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let now = jiff::Timestamp::now().as_second();
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": "arm-double"});
        let payload = json!({
            "aud": audience,
            "iss": format!("https://sts.windows.net/{}/", self.opts.tenant),
            "iat": now, "nbf": now, "exp": now + 3599,
            "appid": app,
            "idtyp": "app",
            "oid": oid,
            "sub": oid,
            "tid": self.opts.tenant,
            "uti": self.guid(),
        });
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.guid());
        format!("{}.{}.{signature}", b64(&header), b64(&payload))
    }

    pub(crate) fn authenticated(&self, req: &Req) -> bool {
        self.authenticate(req).is_ok()
    }

    fn authenticate(&self, req: &Req) -> Result<(), Reply> {
        let challenge = format!(
            "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\"",
            self.url, self.opts.tenant
        );
        let Some(auth) = &req.authorization else {
            return Err(error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
                .header("WWW-Authenticate", challenge));
        };
        let token = auth.strip_prefix("Bearer ").unwrap_or("");
        if !self.tokens.contains(token) {
            return Err(error(401, "InvalidAuthenticationToken", "The access token is invalid.").header("WWW-Authenticate", challenge));
        }
        Ok(())
    }

    fn check_api_version(&self, req: &Req, namespace: &str) -> Result<(), Reply> {
        let Some(wanted) = api_versions_of(namespace) else {
            return Err(error(400, "InvalidResourceNamespace", format!("The resource namespace '{namespace}' is invalid.")));
        };
        match query_param(&req.query, "api-version") {
            None => Err(error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )),
            Some(v) if wanted.contains(&v.as_str()) => Ok(()),
            Some(v) => Err(error(
                400,
                "InvalidApiVersionParameter",
                format!("The api-version '{v}' is invalid. The supported versions for namespace '{namespace}' are '{}'.", wanted.join(",")),
            )),
        }
    }

    fn route(&mut self, req: &Req, segs: &[String], lower: &[String]) -> Answer {
        if lower.first().map(String::as_str) != Some("subscriptions") || segs.len() < 2 {
            return Err(error(404, "NotFound", format!("No HTTP resource was found that matches the request URI '{}'.", req.path)));
        }
        if !segs[1].eq_ignore_ascii_case(&self.opts.subscription) {
            return Err(error(404, "SubscriptionNotFound", format!("The subscription '{}' could not be found.", segs[1])));
        }
        // Role assignments and definitions hang under any scope.
        if let Some(i) =
            (2..lower.len().saturating_sub(1)).rev().find(|&i| lower[i] == "providers" && lower[i + 1] == "microsoft.authorization")
        {
            self.check_api_version(req, "microsoft.authorization")?;
            return self.authorization(req, &segs[..i], &segs[i + 2..], &lower[i + 2..]);
        }
        if segs.len() == 2 {
            self.check_api_version(req, "microsoft.resources")?;
            return Ok(Reply::json(
                200,
                json!({"id": self.sub_id(), "subscriptionId": self.opts.subscription, "tenantId": self.opts.tenant, "displayName": "arm-double", "state": "Enabled"}),
            ));
        }
        match lower[2].as_str() {
            "providers" => self.providers(req, segs, lower),
            "resourcegroups" => {
                if segs.len() <= 4 {
                    self.check_api_version(req, "microsoft.resources")?;
                    return self.resource_group(req, segs.get(3).map(String::as_str));
                }
                if segs.len() >= 7 && lower[4] == "providers" {
                    return self.resource(req, segs, lower);
                }
                Err(error(404, "NotFound", format!("No HTTP resource was found that matches the request URI '{}'.", req.path)))
            }
            _ => Err(error(404, "NotFound", format!("No HTTP resource was found that matches the request URI '{}'.", req.path))),
        }
    }

    // ---------------------------------------------------------------- providers, features, operations

    fn provider_json(&self, ns: &str) -> Value {
        let lower = ns.to_ascii_lowercase();
        let canonical = PROVIDERS.iter().find(|p| p.eq_ignore_ascii_case(ns)).copied().unwrap_or(ns);
        let state = self.providers.get(&lower).copied().unwrap_or(Reg::Registered);
        let types: Vec<Value> = KINDS
            .iter()
            .filter(|k| k.key.split('/').next() == Some(lower.as_str()))
            .map(|k| {
                let rt = k.canonical.split_once('/').map(|(_, t)| t).unwrap_or(k.canonical);
                json!({"resourceType": rt, "locations": LOCATIONS, "apiVersions": api_versions_of(&lower).unwrap_or(&[])})
            })
            .collect();
        json!({"id": format!("{}/providers/{canonical}", self.sub_id()), "namespace": canonical, "registrationState": state.name(), "registrationPolicy": "RegistrationRequired", "resourceTypes": types})
    }

    fn providers(&mut self, req: &Req, segs: &[String], lower: &[String]) -> Answer {
        // Operation status: /subscriptions/{s}/providers/{ns}/locations/{loc}/operations[results]/{id}
        if segs.len() == 8 && lower[4] == "locations" && (lower[6] == "operations" || lower[6] == "operationresults") {
            self.check_api_version(req, &lower[3])?;
            return self.poll(&segs[7], lower[6] == "operationresults");
        }
        if lower.get(3).map(String::as_str) == Some("microsoft.features") && lower.get(4).map(String::as_str) == Some("providers") {
            self.check_api_version(req, "microsoft.features")?;
            return self.feature(req, segs, lower);
        }
        // Storage account name availability, as a preflight asks it.
        if segs.len() == 5 && lower[3] == "microsoft.storage" && lower[4] == "checknameavailability" {
            self.check_api_version(req, "microsoft.storage")?;
            return self.check_storage_name(req);
        }
        // A top-level type listed across the subscription.
        if segs.len() == 5 && req.method == "GET" && lower[3] != "microsoft.resources" {
            let key = format!("{}/{}", lower[3], lower[4]);
            let Some(kind) = kind(&key).filter(|k| k.tracked) else {
                self.check_api_version(req, &lower[3])?;
                return Err(error(
                    400,
                    "InvalidResourceType",
                    format!("The resource type '{}' could not be found in the namespace '{}'.", segs[4], segs[3]),
                ));
            };
            self.check_api_version(req, &lower[3])?;
            let keys: Vec<String> = self.resources.iter().filter(|(_, e)| e.kind == kind.key).map(|(k, _)| k.clone()).collect();
            let all: Vec<Value> = keys.iter().filter_map(|k| self.render(k)).collect();
            return Ok(Reply::json(200, json!({"value": all})));
        }
        self.check_api_version(req, "microsoft.resources")?;
        match (req.method.as_str(), segs.len()) {
            ("GET", 3) => {
                let all: Vec<Value> = PROVIDERS.iter().map(|p| self.read_provider(p)).collect();
                Ok(Reply::json(200, json!({"value": all})))
            }
            ("GET", 4) => {
                if !PROVIDERS.iter().any(|p| p.eq_ignore_ascii_case(&segs[3])) {
                    return Err(error(404, "InvalidResourceNamespace", format!("The resource namespace '{}' is invalid.", segs[3])));
                }
                Ok(Reply::json(200, self.read_provider(&segs[3])))
            }
            ("POST", 5) if lower[4] == "register" => {
                let ns = lower[3].clone();
                if !PROVIDERS.iter().any(|p| p.eq_ignore_ascii_case(&ns)) {
                    return Err(error(404, "InvalidResourceNamespace", format!("The resource namespace '{}' is invalid.", segs[3])));
                }
                let polls = self.opts.provisioning_polls;
                let entry = self.providers.entry(ns).or_insert(Reg::Registered);
                if *entry == Reg::NotRegistered {
                    *entry = if polls == 0 { Reg::Registered } else { Reg::Registering(polls) };
                }
                Ok(Reply::json(200, self.provider_json(&segs[3])))
            }
            _ => Err(error(405, "MethodNotAllowed", format!("{} is not allowed on {}.", req.method, req.path))),
        }
    }

    /// `POST .../providers/Microsoft.Storage/checkNameAvailability`: the name rule, then
    /// whether any account has the name.
    fn check_storage_name(&self, req: &Req) -> Answer {
        if req.method != "POST" {
            return Err(error(405, "MethodNotAllowed", format!("{} is not allowed on {}.", req.method, req.path)));
        }
        let body = parse_body(&req.body)?;
        let name = body.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
        if !body.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("Microsoft.Storage/storageAccounts")) {
            return Err(error(400, "InvalidRequestContent", "The type must be 'Microsoft.Storage/storageAccounts'."));
        }
        if let Err((_, message)) = rules::name(STORAGE_ACCOUNTS, &name) {
            return Ok(Reply::json(200, json!({"nameAvailable": false, "reason": "AccountNameInvalid", "message": message})));
        }
        let taken = self
            .resources
            .values()
            .any(|e| e.kind == STORAGE_ACCOUNTS && str_at(&e.json, &["name"]).is_some_and(|n| n.eq_ignore_ascii_case(&name)));
        if taken {
            return Ok(Reply::json(
                200,
                json!({"nameAvailable": false, "reason": "AlreadyExists", "message": format!("The storage account named {name} is already taken.")}),
            ));
        }
        Ok(Reply::json(200, json!({"nameAvailable": true})))
    }

    /// Reads a provider; a read advances a registration in progress.
    fn read_provider(&mut self, ns: &str) -> Value {
        let lower = ns.to_ascii_lowercase();
        let body = self.provider_json(ns);
        if let Some(Reg::Registering(n)) = self.providers.get(&lower).copied() {
            self.providers.insert(lower, if n <= 1 { Reg::Registered } else { Reg::Registering(n - 1) });
        }
        body
    }

    fn feature(&mut self, req: &Req, segs: &[String], lower: &[String]) -> Answer {
        // /subscriptions/{s}/providers/Microsoft.Features/providers/{ns}/features[/{name}[/register]]
        if segs.len() < 7 || lower[6] != "features" {
            return Err(error(404, "NotFound", format!("No HTTP resource was found that matches the request URI '{}'.", req.path)));
        }
        let ns = &segs[5];
        let feature_json = |state: &State, name: &str| {
            let key = format!("{}/{}", ns, name).to_ascii_lowercase();
            let reg = state.features.get(&key).map(|(_, r)| *r).unwrap_or(Reg::Registered);
            json!({"id": format!("{}/providers/Microsoft.Features/providers/{ns}/features/{name}", state.sub_id()), "name": format!("{ns}/{name}"), "type": "Microsoft.Features/providers/features", "properties": {"state": reg.name()}})
        };
        match (req.method.as_str(), segs.len()) {
            ("GET", 7) => {
                let names: Vec<String> = self
                    .features
                    .values()
                    .filter_map(|(full, _)| full.split_once('/').filter(|(n, _)| n.eq_ignore_ascii_case(ns)).map(|(_, f)| f.to_owned()))
                    .collect();
                let all: Vec<Value> = names.iter().map(|n| feature_json(self, n)).collect();
                Ok(Reply::json(200, json!({"value": all})))
            }
            ("GET", 8) => {
                let body = feature_json(self, &segs[7]);
                let key = format!("{}/{}", ns, segs[7]).to_ascii_lowercase();
                if let Some((_, Reg::Registering(n))) = self.features.get(&key).cloned() {
                    let full = format!("{}/{}", ns, segs[7]);
                    self.features.insert(key, (full, if n <= 1 { Reg::Registered } else { Reg::Registering(n - 1) }));
                }
                Ok(Reply::json(200, body))
            }
            ("POST", 9) if lower[8] == "register" => {
                let key = format!("{}/{}", ns, segs[7]).to_ascii_lowercase();
                let polls = self.opts.provisioning_polls;
                if let Some((_, reg)) = self.features.get_mut(&key)
                    && *reg == Reg::NotRegistered
                {
                    *reg = if polls == 0 { Reg::Registered } else { Reg::Registering(polls) };
                }
                Ok(Reply::json(200, feature_json(self, &segs[7])))
            }
            _ => Err(error(405, "MethodNotAllowed", format!("{} is not allowed on {}.", req.method, req.path))),
        }
    }

    fn new_op(&mut self, target: &str, action: Action, namespace: &str, location: &str) -> String {
        let id = self.guid();
        let remaining = self.opts.provisioning_polls;
        let failure = self.failures.iter().position(|(f, _, _)| target.contains(f.as_str())).map(|i| {
            let (_, code, message) = self.failures.remove(i);
            (code, message)
        });
        self.ops.insert(
            id.clone(),
            Op {
                target: target.to_owned(),
                action,
                remaining,
                done: false,
                namespace: namespace.to_owned(),
                location: location.to_owned(),
                started: now(),
                failure,
            },
        );
        if remaining == 0 {
            self.finish(&id);
        }
        id
    }

    fn op_urls(&self, id: &str) -> (String, String) {
        let Some(op) = self.ops.get(id) else { return (String::new(), String::new()) };
        let canonical = api_version_of(&op.namespace.to_ascii_lowercase()).unwrap_or("");
        let base = format!("{}{}/providers/{}/locations/{}", self.url, self.sub_id(), op.namespace, op.location);
        (format!("{base}/operations/{id}?api-version={canonical}"), format!("{base}/operationresults/{id}?api-version={canonical}"))
    }

    /// One poll of an operation: it completes after `provisioning_polls` of them.
    fn advance(&mut self, id: &str) {
        let Some(op) = self.ops.get_mut(id) else { return };
        if op.done {
            return;
        }
        op.remaining = op.remaining.saturating_sub(1);
        if op.remaining == 0 {
            self.finish(id);
        }
    }

    fn finish(&mut self, id: &str) {
        let Some(op) = self.ops.get_mut(id) else { return };
        op.done = true;
        let target = op.target.clone();
        if op.failure.is_some() {
            // A failed operation leaves the resource Failed (a failed delete leaves it too).
            if let Some(e) = self.resources.get_mut(&target) {
                e.op = None;
                if let Some(p) = e.json.get_mut("properties").and_then(Value::as_object_mut) {
                    p.insert("provisioningState".into(), json!("Failed"));
                }
            }
            return;
        }
        match op.action {
            Action::Delete => self.remove_tree(&target),
            Action::Create | Action::Update => {
                if let Some(e) = self.resources.get_mut(&target) {
                    e.op = None;
                    if let Some(p) = e.json.get_mut("properties").and_then(Value::as_object_mut) {
                        p.insert("provisioningState".into(), json!("Succeeded"));
                    }
                }
            }
        }
    }

    fn remove_tree(&mut self, key: &str) {
        let prefix = format!("{key}/");
        // Role assignments scoped at or below a deleted resource go with it, as in ARM, and
        // so does a resource group the resource manages (an AKS node resource group).
        let managed: Vec<String> = self
            .resources
            .iter()
            .filter(|(_, e)| e.kind == RG_KIND && str_at(&e.json, &["managedBy"]).is_some_and(|m| m.eq_ignore_ascii_case(key)))
            .map(|(k, _)| k.clone())
            .collect();
        self.resources.retain(|k, _| k != key && !k.starts_with(&prefix));
        for m in managed {
            self.remove_tree(&m);
        }
    }

    fn poll(&mut self, id: &str, results: bool) -> Answer {
        if !self.ops.contains_key(id) {
            return Err(error(404, "OperationNotFound", format!("The operation '{id}' could not be found.")));
        }
        self.advance(id);
        let (status_url, result_url) = self.op_urls(id);
        let Some(op) = self.ops.get(id) else {
            return Err(error(404, "OperationNotFound", format!("The operation '{id}' could not be found.")));
        };
        if results {
            if !op.done {
                return Ok(Reply::empty(202).header("Location", result_url).header("Retry-After", "1"));
            }
            if let Some((code, message)) = &op.failure {
                // The Location URL answers as the operation would have synchronously.
                return Ok(error(400, code, message.clone()));
            }
            if op.action == Action::Delete {
                return Ok(Reply::empty(200));
            }
            let target = op.target.clone();
            return Ok(match self.render(&target) {
                Some(v) => Reply::json(200, v),
                None => Reply::empty(200),
            });
        }
        let status = match (op.done, &op.failure) {
            (false, _) => "InProgress",
            (true, None) => "Succeeded",
            (true, Some(_)) => "Failed",
        };
        let mut body = json!({"id": status_url.trim_start_matches(&self.url).split('?').next().unwrap_or(""), "name": id, "status": status, "startTime": op.started});
        if op.done {
            body["endTime"] = json!(now());
        }
        if let (true, Some((code, message))) = (op.done, &op.failure) {
            body["error"] = json!({"code": code, "message": message});
        }
        let mut reply = Reply::json(200, body);
        if !op.done {
            reply = reply.header("Retry-After", "1");
        }
        Ok(reply)
    }

    // ---------------------------------------------------------------- resource groups

    fn rg_key(&self, rg: &str) -> String {
        format!("{}/resourcegroups/{}", self.sub_id(), rg).to_ascii_lowercase()
    }

    fn resource_group(&mut self, req: &Req, name: Option<&str>) -> Answer {
        let Some(name) = name else {
            if req.method != "GET" {
                return Err(error(405, "MethodNotAllowed", format!("{} is not allowed on {}.", req.method, req.path)));
            }
            let all: Vec<Value> = self.resources.values().filter(|e| e.kind == RG_KIND).map(|e| e.json.clone()).collect();
            return Ok(Reply::json(200, json!({"value": all})));
        };
        let key = self.rg_key(name);
        let not_found = || error(404, "ResourceGroupNotFound", format!("Resource group '{name}' could not be found."));
        match req.method.as_str() {
            "GET" => match self.resources.get(&key) {
                Some(e) => Ok(Reply::json(200, e.json.clone())),
                None => Err(not_found()),
            },
            "HEAD" => Ok(Reply::empty(if self.resources.contains_key(&key) { 204 } else { 404 })),
            "PUT" | "PATCH" => {
                rules::name(RG_KIND, name).map_err(|(c, m)| error(400, c, m))?;
                self.authorize(&key, false)?;
                let body = parse_body(&req.body)?;
                let existing = self.resources.get(&key);
                if let Some(e) = existing
                    && e.op.is_some()
                {
                    return Err(error(
                        409,
                        "ResourceGroupBeingDeleted",
                        format!("The resource group '{name}' is in deprovisioning state and cannot perform this operation."),
                    ));
                }
                if req.method == "PATCH" && existing.is_none() {
                    return Err(not_found());
                }
                let location = match (body.get("location").and_then(Value::as_str), existing) {
                    (Some(l), Some(e)) if !l.eq_ignore_ascii_case(str_at(&e.json, &["location"]).unwrap_or("")) => {
                        return Err(error(
                            400,
                            "InvalidResourceGroupLocation",
                            format!(
                                "Invalid resource group location '{l}'. The Resource group already exists in location '{}'.",
                                str_at(&e.json, &["location"]).unwrap_or("")
                            ),
                        ));
                    }
                    (_, Some(e)) => str_at(&e.json, &["location"]).unwrap_or("").to_owned(),
                    (Some(l), None) => l.to_owned(),
                    (None, None) => return Err(error(400, "LocationRequired", "The location property is required for this definition.")),
                };
                check_location(&location)?;
                rules::tags(body.get("tags")).map_err(|(c, m)| error(400, c, m))?;
                let display = existing.and_then(|e| str_at(&e.json, &["name"]).map(str::to_owned)).unwrap_or_else(|| name.to_owned());
                let mut tags = existing.and_then(|e| e.json.get("tags").cloned()).unwrap_or(json!({}));
                if let Some(t) = body.get("tags") {
                    tags = t.clone();
                }
                let status = if existing.is_some() { 200 } else { 201 };
                let mut json = json!({"id": format!("{}/resourceGroups/{display}", self.sub_id()), "name": display, "type": "Microsoft.Resources/resourceGroups", "location": location, "tags": tags, "properties": {"provisioningState": "Succeeded"}});
                if let Some(m) = existing.and_then(|e| e.json.get("managedBy").cloned()) {
                    json["managedBy"] = m;
                }
                self.resources.insert(key, Entry { json: json.clone(), kind: RG_KIND, op: None });
                Ok(Reply::json(status, json))
            }
            "DELETE" => {
                let Some(e) = self.resources.get(&key) else { return Ok(Reply::empty(204)) };
                if e.op.is_some() {
                    return Ok(self.accepted_reply(e.op.clone().unwrap_or_default()));
                }
                self.authorize(&key, false)?;
                let location = str_at(&e.json, &["location"]).unwrap_or("").to_owned();
                if let Some(p) = self.resources.get_mut(&key).and_then(|e| e.json.get_mut("properties")).and_then(Value::as_object_mut) {
                    p.insert("provisioningState".into(), json!("Deleting"));
                }
                let op = self.new_op(&key, Action::Delete, "Microsoft.Resources", &location);
                if let Some(e) = self.resources.get_mut(&key) {
                    e.op = Some(op.clone());
                }
                Ok(self.accepted_reply(op))
            }
            _ => Err(error(405, "MethodNotAllowed", format!("{} is not allowed on {}.", req.method, req.path))),
        }
    }

    fn accepted_reply(&self, op: String) -> Reply {
        let (status_url, result_url) = self.op_urls(&op);
        Reply::empty(202).header("Location", result_url).header("Azure-AsyncOperation", status_url).header("Retry-After", "1")
    }

    // ---------------------------------------------------------------- authorization of the caller

    fn authorize(&self, key: &str, role_assignment: bool) -> Result<(), Reply> {
        let Some(roles) = &self.opts.caller_roles else { return Ok(()) };
        let allowed: &[&str] = if role_assignment { &[OWNER, USER_ACCESS_ADMIN, RBAC_ADMIN] } else { &[OWNER, CONTRIBUTOR] };
        let ok = roles.iter().any(|(scope, role)| {
            covers(&scope.to_ascii_lowercase(), key) && allowed.contains(&last_segment(role).to_ascii_lowercase().as_str())
        });
        if ok {
            return Ok(());
        }
        let action = if role_assignment { "Microsoft.Authorization/roleAssignments/write" } else { "write" };
        Err(error(
            403,
            "AuthorizationFailed",
            format!(
                "The client '{}' with object id '{CALLER_PRINCIPAL_ID}' does not have authorization to perform action '{action}' over scope '{key}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                self.client_id
            ),
        ))
    }

    // ---------------------------------------------------------------- resources

    fn resource(&mut self, req: &Req, segs: &[String], lower: &[String]) -> Answer {
        let rg_name = &segs[3];
        let ns = &lower[5];
        let rest = &segs[6..];
        let type_key = {
            let mut k = ns.clone();
            for t in rest.iter().step_by(2) {
                k.push('/');
                k.push_str(&t.to_ascii_lowercase());
            }
            k
        };
        let Some(kind) = kind(&type_key) else {
            self.check_api_version(req, ns)?;
            return Err(error(
                400,
                "InvalidResourceType",
                format!(
                    "The resource type '{}' could not be found in the namespace '{}' for api version '{}'.",
                    type_key.split_once('/').map(|(_, t)| t).unwrap_or(""),
                    segs[5],
                    query_param(&req.query, "api-version").unwrap_or_default()
                ),
            ));
        };
        if kind.key.starts_with(PRIVATE_DNS_ZONES) {
            check_private_dns_api_version(req)?;
        } else {
            self.check_api_version(req, ns)?;
        }
        let rg_key = self.rg_key(rg_name);
        let Some(rg) = self.resources.get(&rg_key) else {
            return Err(error(404, "ResourceGroupNotFound", format!("Resource group '{rg_name}' could not be found.")));
        };
        if rg.op.is_some() && req.method != "GET" {
            return Err(error(
                409,
                "ResourceGroupBeingDeleted",
                format!("The resource group '{rg_name}' is in deprovisioning state and cannot perform this operation."),
            ));
        }
        let rg_display = str_at(&rg.json, &["name"]).unwrap_or(rg_name).to_owned();
        let rg_location = str_at(&rg.json, &["location"]).unwrap_or("").to_owned();
        // The id with ARM's spelling of the types and the caller's of the names.
        let mut id = format!("{}/resourceGroups/{rg_display}/providers/{}", self.sub_id(), kind.canonical.split('/').next().unwrap_or(""));
        let type_names: Vec<&str> = kind.canonical.split('/').skip(1).collect();
        for (i, t) in type_names.iter().enumerate() {
            id.push('/');
            id.push_str(t);
            if let Some(name) = rest.get(i * 2 + 1) {
                id.push('/');
                id.push_str(name);
            }
        }
        let key = id.to_ascii_lowercase();
        let is_list = rest.len() % 2 == 1;
        // The parent of a child type (or of a listed collection) must exist.
        let parent_depth = if is_list { rest.len() - 1 } else { rest.len() - 2 };
        if parent_depth > 0 {
            let parent_key = key_prefix(&key, if is_list { 1 } else { 2 });
            if !self.resources.contains_key(&parent_key) {
                let parent_id = id_prefix(&id, if is_list { 1 } else { 2 });
                return Err(error(
                    404,
                    "ParentResourceNotFound",
                    format!(
                        "Can not perform requested operation on nested resource. Parent resource '{}' not found.",
                        parent_id.split("/providers/").nth(1).unwrap_or(&parent_id)
                    ),
                ));
            }
        }
        if is_list {
            if req.method != "GET" {
                return Err(error(405, "MethodNotAllowed", format!("{} is not allowed on {}.", req.method, req.path)));
            }
            let prefix = format!("{key}/");
            let keys: Vec<String> = self
                .resources
                .iter()
                .filter(|(k, e)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/') && e.kind == kind.key)
                .map(|(k, _)| k.clone())
                .collect();
            let all: Vec<Value> = keys.iter().filter_map(|k| self.render(k)).collect();
            return Ok(Reply::json(200, json!({"value": all})));
        }
        let name = &segs[segs.len() - 1];
        match req.method.as_str() {
            "GET" => {
                let op = self.resources.get(&key).map(|e| e.op.clone());
                match op {
                    None => Err(error(
                        404,
                        "ResourceNotFound",
                        format!(
                            "The Resource '{}/{}' under resource group '{rg_display}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                            kind.canonical,
                            rest.iter().skip(1).step_by(2).cloned().collect::<Vec<_>>().join("/")
                        ),
                    )),
                    Some(op) => {
                        if let Some(op) = op {
                            self.advance(&op);
                        }
                        match self.render(&key) {
                            Some(v) => Ok(etag_header(Reply::json(200, v))),
                            None => Err(error(
                                404,
                                "ResourceNotFound",
                                format!("The Resource '{}/{name}' under resource group '{rg_display}' was not found.", kind.canonical),
                            )),
                        }
                    }
                }
            }
            "PUT" => self.put(req, kind, &id, &key, name, &rg_location),
            "PATCH" => {
                // Tags-only update, as the providers offer.
                let Some(existing) = self.resources.get(&key) else {
                    return Err(error(
                        404,
                        "ResourceNotFound",
                        format!("The Resource '{}/{name}' under resource group '{rg_display}' was not found.", kind.canonical),
                    ));
                };
                self.authorize(&key, false)?;
                check_etag(req, Some(&existing.json))?;
                let body = parse_body(&req.body)?;
                rules::tags(body.get("tags")).map_err(|(c, m)| error(400, c, m))?;
                let etag = if kind.etag { Some(self.new_etag(kind.key)) } else { None };
                let Some(e) = self.resources.get_mut(&key) else { return Err(error(404, "ResourceNotFound", "gone")) };
                if let Some(t) = body.get("tags") {
                    e.json["tags"] = t.clone();
                }
                if let Some(etag) = etag {
                    e.json["etag"] = json!(etag);
                }
                Ok(etag_header(Reply::json(200, self.render(&key).unwrap_or(Value::Null))))
            }
            "DELETE" => self.delete(req, kind, &key),
            _ => Err(error(405, "MethodNotAllowed", format!("{} is not allowed on {}.", req.method, req.path))),
        }
    }

    fn new_etag(&mut self, kind: &str) -> String {
        if kind.starts_with("microsoft.storage/") {
            format!("\"0x8DC{:012X}\"", splitmix(&mut self.rng) & 0xffff_ffff_ffff)
        } else {
            format!("W/\"{}\"", self.guid())
        }
    }

    fn put(&mut self, req: &Req, kind: &'static Kind, id: &str, key: &str, name: &str, rg_location: &str) -> Answer {
        let ns = kind.canonical.split('/').next().unwrap_or("");
        if self.providers.get(&ns.to_ascii_lowercase()).copied().unwrap_or(Reg::Registered) != Reg::Registered {
            return Err(error(
                409,
                "MissingSubscriptionRegistration",
                format!(
                    "The subscription is not registered to use namespace '{ns}'. See https://aka.ms/rps-not-found for how to register subscriptions."
                ),
            ));
        }
        self.authorize(key, false)?;
        rules::name(kind.key, name).map_err(|(c, m)| error(400, c, m))?;
        let mut body = parse_body(&req.body)?;
        let existing = self.resources.get(key);
        if let Some(e) = existing
            && e.op.is_some()
        {
            let state = str_at(&e.json, &["properties", "provisioningState"]).unwrap_or("Updating");
            if kind.key == STORAGE_ACCOUNTS && state == "Creating" {
                return Ok(Reply::json(200, self.render(key).unwrap_or(Value::Null)));
            }
            return Err(error(
                409,
                "AnotherOperationInProgress",
                format!(
                    "Another operation on this or dependent resource is in progress. To retry later, please check the status of the operation. The resource '{}' is in provisioning state '{state}'.",
                    id
                ),
            ));
        }
        check_etag(req, existing.map(|e| &e.json))?;
        self.check_dependents_idle(key)?;
        let existing_json = existing.map(|e| e.json.clone());
        if kind.tracked {
            let location = match body.get("location").and_then(Value::as_str) {
                Some(l) => l.to_ascii_lowercase().replace(' ', ""),
                None => return Err(error(400, "LocationRequired", "The location property is required for this definition.")),
            };
            if kind.key.starts_with(PRIVATE_DNS_ZONES) {
                if location != "global" {
                    return Err(error(
                        400,
                        "LocationNotAvailableForResourceType",
                        format!(
                            "The provided location '{location}' is not available for resource type '{}'. List of available regions is 'global'.",
                            kind.canonical
                        ),
                    ));
                }
            } else {
                check_location(&location)?;
            }
            if let Some(old) = existing_json.as_ref().and_then(|e| str_at(e, &["location"]))
                && old != location
            {
                return Err(error(
                    400,
                    "InvalidResourceLocation",
                    format!(
                        "The resource '{name}' already exists in location '{old}' in resource group. A resource with the same name cannot be created in location '{location}'. Please select a new resource name."
                    ),
                ));
            }
            body["location"] = json!(location);
            rules::tags(body.get("tags")).map_err(|(c, m)| error(400, c, m))?;
        } else if let Some(obj) = body.as_object_mut() {
            obj.remove("location");
            obj.remove("tags");
        }
        let _ = rg_location;
        if !body.get("properties").is_some_and(Value::is_object) {
            body["properties"] = json!({});
        }
        self.validate(kind, id, key, name, &mut body, existing_json.as_ref())?;

        let mut json = Map::new();
        json.insert("id".into(), json!(id));
        json.insert("name".into(), json!(name));
        json.insert("type".into(), json!(kind.canonical));
        if let Some(obj) = body.as_object() {
            for (k, v) in obj {
                if !["id", "name", "type", "etag"].contains(&k.as_str()) {
                    json.insert(k.clone(), v.clone());
                }
            }
        }
        if kind.tracked && !json.contains_key("tags") {
            json.insert("tags".into(), json!({}));
        }
        if kind.etag {
            let etag = self.new_etag(kind.key);
            json.insert("etag".into(), json!(etag));
        }
        let creating = existing_json.is_none();
        let mut json = Value::Object(json);
        json["properties"]["provisioningState"] = json!(if !kind.lro {
            "Succeeded"
        } else if creating {
            "Creating"
        } else {
            "Updating"
        });
        if kind.key.starts_with("microsoft.network/") && kind.lro {
            // The network provider says Updating for creates too.
            json["properties"]["provisioningState"] = json!("Updating");
        }
        let storage_create = kind.key == STORAGE_ACCOUNTS && creating;
        if storage_create {
            json["properties"]["provisioningState"] = json!("Creating");
        }
        self.resources.insert(key.to_owned(), Entry { json, kind: kind.key, op: None });
        self.after_put(kind, id, key, name)?;
        if storage_create {
            let location = self.location_of(key);
            let op = self.new_op(key, Action::Create, ns, &location);
            if let Some(e) = self.resources.get_mut(key)
                && !self.ops.get(&op).is_some_and(|o| o.done)
            {
                e.op = Some(op.clone());
            }
            let (_, result_url) = self.op_urls(&op);
            return Ok(Reply::empty(202).header("Location", result_url).header("Retry-After", "1"));
        }
        let status = if creating { 201 } else { 200 };
        if kind.lro {
            let location = self.location_of(key);
            let op = self.new_op(key, if creating { Action::Create } else { Action::Update }, ns, &location);
            if let Some(e) = self.resources.get_mut(key)
                && !self.ops.get(&op).is_some_and(|o| o.done)
            {
                e.op = Some(op.clone());
            }
            let (status_url, _) = self.op_urls(&op);
            let body = self.render(key).unwrap_or(Value::Null);
            return Ok(etag_header(Reply::json(status, body).header("Azure-AsyncOperation", status_url).header("Retry-After", "1")));
        }
        Ok(etag_header(Reply::json(status, self.render(key).unwrap_or(Value::Null))))
    }

    /// ARM refuses a write while an operation runs on the resource's parent or children
    /// ("this or dependent resource"): a subnet while its VNet updates, a cluster while a
    /// node pool is created.
    fn check_dependents_idle(&self, key: &str) -> Result<(), Reply> {
        let busy = self
            .resources
            .iter()
            .find(|(k, e)| e.op.is_some() && k.as_str() != key && e.kind != RG_KIND && (covers(k, key) || covers(key, k)));
        match busy {
            Some((_, e)) => Err(error(
                409,
                "AnotherOperationInProgress",
                format!(
                    "Another operation on this or dependent resource is in progress: {} is in provisioning state '{}'. To retry later, please check the status of the operation.",
                    str_at(&e.json, &["id"]).unwrap_or(""),
                    str_at(&e.json, &["properties", "provisioningState"]).unwrap_or("Updating")
                ),
            )),
            None => Ok(()),
        }
    }

    /// The location of a resource, or of its top-level ancestor.
    fn location_of(&self, key: &str) -> String {
        let mut k = key.to_owned();
        loop {
            if let Some(l) = self.resources.get(&k).and_then(|e| str_at(&e.json, &["location"])) {
                return l.to_owned();
            }
            match k.rfind("/providers/") {
                Some(p) if k[p..].matches('/').count() > 4 => k = key_prefix(&k, 2),
                _ => return self.opts.location.clone(),
            }
        }
    }

    fn delete(&mut self, req: &Req, kind: &'static Kind, key: &str) -> Answer {
        let Some(existing) = self.resources.get(key) else { return Ok(Reply::empty(204)) };
        self.authorize(key, false)?;
        if existing.op.is_some() {
            let state = str_at(&existing.json, &["properties", "provisioningState"]).unwrap_or("Updating");
            if state == "Deleting" {
                return Ok(self.accepted_reply(existing.op.clone().unwrap_or_default()));
            }
            return Err(error(
                409,
                "AnotherOperationInProgress",
                format!("Another operation on this or dependent resource is in progress. The resource is in provisioning state '{state}'."),
            ));
        }
        check_etag(req, Some(&existing.json))?;
        self.check_dependents_idle(key)?;
        self.check_delete(kind, key)?;
        if !kind.lro {
            self.remove_tree(key);
            return Ok(Reply::empty(200));
        }
        let ns = kind.canonical.split('/').next().unwrap_or("").to_owned();
        let location = self.location_of(key);
        if let Some(p) = self.resources.get_mut(key).and_then(|e| e.json.get_mut("properties")).and_then(Value::as_object_mut) {
            p.insert("provisioningState".into(), json!("Deleting"));
        }
        let op = self.new_op(key, Action::Delete, &ns, &location);
        if let Some(e) = self.resources.get_mut(key) {
            e.op = Some(op.clone());
        }
        Ok(self.accepted_reply(op))
    }

    /// A resource as GET shows it: stored JSON plus views of its children.
    fn render(&self, key: &str) -> Option<Value> {
        let e = self.resources.get(key)?;
        let mut v = e.json.clone();
        let children = |child_kind: &str| -> Vec<Value> {
            let prefix = format!("{key}/");
            self.resources
                .iter()
                .filter(|(k, c)| k.starts_with(&prefix) && c.kind == child_kind && k[prefix.len()..].matches('/').count() == 1)
                .map(|(_, c)| c.json.clone())
                .collect()
        };
        match e.kind {
            "microsoft.network/virtualnetworks" => {
                v["properties"]["subnets"] = Value::Array(children("microsoft.network/virtualnetworks/subnets"));
            }
            "microsoft.containerservice/managedclusters" => {
                let pools: Vec<Value> = children("microsoft.containerservice/managedclusters/agentpools")
                    .into_iter()
                    .map(|p| {
                        let mut profile = p.get("properties").cloned().unwrap_or(json!({}));
                        profile["name"] = p.get("name").cloned().unwrap_or(Value::Null);
                        profile
                    })
                    .collect();
                v["properties"]["agentPoolProfiles"] = Value::Array(pools);
            }
            _ => {}
        }
        Some(v)
    }

    pub(crate) fn snapshot(&self) -> Value {
        let mut out = Map::new();
        for k in self.resources.keys() {
            if let Some(v) = self.render(k) {
                out.insert(k.clone(), v);
            }
        }
        Value::Object(out)
    }

    pub(crate) fn tamper(&mut self, id: &str, patch: Value) -> anyhow::Result<()> {
        let key = id.to_ascii_lowercase();
        let kind = match self.resources.get(&key) {
            Some(e) => e.kind,
            None => anyhow::bail!("the fake has no resource {id} to tamper with"),
        };
        let etag = kind_etag(kind).then(|| self.new_etag(kind));
        let Some(e) = self.resources.get_mut(&key) else { anyhow::bail!("the fake has no resource {id}") };
        merge(&mut e.json, &patch);
        if let Some(etag) = etag {
            e.json["etag"] = json!(etag);
        }
        Ok(())
    }

    pub(crate) fn fail_next(&mut self, id_fragment: &str, code: &str, message: &str) {
        self.failures.push((id_fragment.to_ascii_lowercase(), code.to_owned(), message.to_owned()));
    }

    pub(crate) fn set_provider(&mut self, ns: &str, registered: bool) {
        self.providers.insert(ns.to_ascii_lowercase(), if registered { Reg::Registered } else { Reg::NotRegistered });
    }

    pub(crate) fn set_feature(&mut self, feature: &str, registered: bool) {
        self.features
            .insert(feature.to_ascii_lowercase(), (feature.to_owned(), if registered { Reg::Registered } else { Reg::NotRegistered }));
    }
}

fn kind_etag(kind: &str) -> bool {
    KINDS.iter().any(|k| k.key == kind && k.etag)
}

fn etag_header(reply: Reply) -> Reply {
    let etag = reply.body.as_ref().and_then(|b| b.get("etag")).and_then(Value::as_str).map(str::to_owned);
    match etag {
        Some(e) => reply.header("ETag", e),
        None => reply,
    }
}

/// `If-Match` (the etag, or `*` for "exists") and `If-None-Match: *` ("does not exist").
fn check_etag(req: &Req, existing: Option<&Value>) -> Result<(), Reply> {
    let current = existing.and_then(|e| e.get("etag")).and_then(Value::as_str);
    if let Some(want) = &req.if_match {
        let ok = match (want.as_str(), existing, current) {
            ("*", Some(_), _) => true,
            (w, _, Some(c)) => w == c,
            _ => false,
        };
        if !ok {
            return Err(error(
                412,
                "PreconditionFailed",
                format!(
                    "The condition specified using HTTP conditional header(s) is not met: If-Match '{want}' does not match the current etag '{}'.",
                    current.unwrap_or("(none)")
                ),
            ));
        }
    }
    if req.if_none_match.as_deref() == Some("*") && existing.is_some() {
        return Err(error(
            412,
            "PreconditionFailed",
            "The condition specified using HTTP conditional header(s) is not met: If-None-Match '*' but the resource exists.",
        ));
    }
    Ok(())
}

fn parse_body(body: &Bytes) -> Result<Value, Reply> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(error(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: the body must be a JSON object.",
        )),
        Err(e) => {
            Err(error(400, "InvalidRequestContent", format!("The request content was invalid and could not be deserialized: '{e}'.")))
        }
    }
}

/// The api-version of a private DNS zone or link request ([`PRIVATE_DNS_API_VERSIONS`]).
fn check_private_dns_api_version(req: &Req) -> Result<(), Reply> {
    match query_param(&req.query, "api-version") {
        None => {
            Err(error(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests."))
        }
        Some(v) if PRIVATE_DNS_API_VERSIONS.contains(&v.as_str()) => Ok(()),
        Some(v) => Err(error(
            400,
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for location 'global' and API version '{v}' for type 'privateDnsZones'. The supported api-versions are '{}'.",
                PRIVATE_DNS_API_VERSIONS.join(", ")
            ),
        )),
    }
}

fn check_location(location: &str) -> Result<(), Reply> {
    if LOCATIONS.contains(&location.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    Err(error(
        400,
        "LocationNotAvailableForResourceType",
        format!(
            "The provided location '{location}' is not available for resource type. List of available regions is '{}'.",
            LOCATIONS.join(",")
        ),
    ))
}

/// The lower-case key `levels` name/type segments up (2 = the parent resource).
fn key_prefix(key: &str, levels: usize) -> String {
    id_prefix(key, levels)
}

fn id_prefix(id: &str, levels: usize) -> String {
    let mut parts: Vec<&str> = id.split('/').collect();
    for _ in 0..levels {
        parts.pop();
    }
    parts.join("/")
}
