//! The sidecar in the customer's cluster: `byoc apply` installs it after the environment
//! converges, `byoc destroy` removes it before the cluster goes.
//!
//! The objects are `kubectl kustomize manifests/overlays/<cloud>`, rendered ahead of time
//! into `manifests/rendered/<cloud>.yaml` and embedded here, so the customer's CI needs no
//! kubectl or kustomize at run time (kustomize's configMapGenerator hashing, JSON patches
//! and labels are not worth re-implementing). tests/e2e/sidecar_install.rs fails when a file
//! differs from what its overlay renders, so the two cannot drift. byoc then fills in the
//! values each overlay leaves as placeholders (the workload identity, the state store, the
//! CIDRs, the image) from the environment's spec and the outputs of the apply.
//!
//! Besides the overlay, the environment's graph decides the load-balancer objects
//! (`../shared/DESIGN.md`, "Load balancers and private connectivity"): on GCP a GKE
//! `ServiceAttachment` per internal Service (the graph's `gcp.service-attachment/*`), on
//! Azure the Private Link annotations of each internal Service (the graph's
//! `azure.private-link-service/*`), and on every cloud the public proxy's Service when the
//! spec has `publicProxy`, deleted again when it no longer has.

use std::collections::BTreeMap;

use ipnet::IpNet;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::expand::{AGENT_NAMESPACE, PROXY_SERVICE, PUBLIC_PROXY_SERVICE};
use crate::resource::{Graph, Kind, ResourceId};
use crate::spec::{Cloud, Environment, Tier};

/// `kubectl kustomize manifests/overlays/<cloud>`, with the overlay's placeholders.
fn rendered(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Aws => include_str!("../../manifests/rendered/aws.yaml"),
        Cloud::Gcp => include_str!("../../manifests/rendered/gcp.yaml"),
        Cloud::Azure => include_str!("../../manifests/rendered/azure.yaml"),
    }
}

/// The optional public proxy Service (`manifests/components/public-proxy`), which no
/// overlay includes: byoc adds it when the spec has `publicProxy`.
const PUBLIC_PROXY: &str = include_str!("../../manifests/components/public-proxy/service.yaml");

/// The field manager of byoc's server-side applies.
pub const FIELD_MANAGER: &str = "byoc";

/// The resource id of the agent's IRSA role (see expand/aws.rs).
const AGENT_ROLE_ID: &str = "aws.iam-role/agent";

/// The resource id of the agent's managed identity (see expand/azure.rs).
const AGENT_IDENTITY_ID: &str = "azure.managed-identity/agent";

/// Annotation on the pod template carrying the configuration's digest: the ConfigMaps keep
/// the names kustomize gave them, so this is what rolls the pods when byoc's values change.
pub const CONFIG_DIGEST_ANNOTATION: &str = "byoc.risingwave.dev/config-sha256";

/// The order objects are applied in (and removed in reverse): what others refer to first.
const ORDER: &[&str] = &[
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "Role",
    "ClusterRoleBinding",
    "RoleBinding",
    "ConfigMap",
    "Service",
    "ServiceAttachment",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "Deployment",
];

/// Why the sidecar could not be rendered, installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// A value byoc needs is not in the state or the spec.
    #[error("{0}")]
    Missing(String),
    /// The embedded manifests do not have the shape byoc fills in.
    #[error("manifests/rendered/{cloud}.yaml: {message}; regenerate it with `kubectl kustomize manifests/overlays/{cloud}`")]
    Manifests {
        /// The overlay.
        cloud: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Objects deleted before a destroy are still there when the wait ends.
    #[error("{0}")]
    StillThere(String),
    /// The Kubernetes API refused or could not be reached.
    #[error("{action} {object}: {source}")]
    Kube {
        /// `applying`, `reading` or `deleting`.
        action: &'static str,
        /// `Kind namespace/name`.
        object: String,
        /// What the client said.
        #[source]
        source: kube::Error,
    },
    /// No client for the cluster could be built.
    #[error(transparent)]
    Client(#[from] crate::k8s::ClientError),
}

impl SidecarError {
    /// Whether trying again later can help: only a call the API server failed or refused
    /// (it may be starting, or a webhook may be down); the rest needs a person.
    pub fn retryable(&self) -> bool {
        matches!(self, SidecarError::Kube { .. } | SidecarError::StillThere(_))
    }
}

/// The ServiceAccount annotation binding the daemon's pods to their cloud identity.
pub fn identity_annotation(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Aws => "eks.amazonaws.com/role-arn",
        Cloud::Gcp => "iam.gke.io/gcp-service-account",
        Cloud::Azure => "azure.workload.identity/client-id",
    }
}

/// The Reconciler config's `stateStore` key for the cloud's object store.
fn state_store_key(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Aws => "s3",
        Cloud::Gcp => "gcs",
        Cloud::Azure => "azureBlob",
    }
}

/// The environment's values the sidecar's objects carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarOutputs {
    /// Whose overlay.
    pub cloud: Cloud,
    /// The daemon's cloud identity, as [`identity_annotation`] names it: the ARN of the
    /// agent's IRSA role, the agent's Google service account's email, or the client id of
    /// the agent's managed identity.
    pub identity: String,
    /// The URL of the daemon's state store (`s3://`, `gs://` or the blob container's
    /// `https://` URL, with the prefix).
    pub state_store: String,
    /// The environment directory inside the repository (the Reconciler's `environment`).
    pub environment: String,
    /// Where connections to the agent port come from: on AWS the private subnets (the
    /// internal NLB forwards from its addresses there), on GCP the Private Service Connect
    /// NAT subnet, on Azure the Private Link subnet.
    pub agent_cidrs: Vec<IpNet>,
    /// Who may reach the SQL port: the network, the private-connectivity NAT range and the
    /// spec's public allowed CIDRs.
    pub proxy_cidrs: Vec<IpNet>,
    /// Where PROXY protocol v2 headers RWProxy trusts come from: on AWS the VPC (the
    /// NLB), on GCP the Private Service Connect NAT subnet, on Azure the Private Link
    /// subnet (both rewrite the source address, so the header carries the client's).
    /// `None`: no such range, and RWProxy reads no header.
    pub proxy_protocol_from: Option<IpNet>,
    /// Annotations replacing the overlay's example ones, by Service name (Azure: the
    /// Private Link settings of each internal Service, from the graph).
    pub service_annotations: BTreeMap<String, BTreeMap<String, String>>,
    /// The public proxy Service's source ranges; `None`: no public proxy (and one left
    /// from an earlier apply is deleted).
    pub public_proxy: Option<Vec<IpNet>>,
    /// Further objects the graph adds (GCP: the GKE ServiceAttachments).
    pub attachments: Vec<Value>,
    /// The port the SQL Services (internal and public) listen on: the spec's
    /// `exposure.proxy.port`, which the cloud's firewall rules and security groups open.
    /// RWProxy's container port stays the overlay's (`targetPort: sql`).
    pub proxy_port: u16,
    /// The container image of both containers.
    pub image: String,
}

impl SidecarOutputs {
    /// The values for `env` after an apply of the graph `graph` whose cloud outputs
    /// (resource id to ARN, client id or cloud id: the `cloud-outputs.json` of the state)
    /// are `outputs`.
    pub fn new(
        env: &Environment,
        graph: &Graph,
        env_dir: &str,
        outputs: &BTreeMap<String, String>,
        image: String,
    ) -> Result<Self, SidecarError> {
        let (identity, state_store, agent_cidrs, nat_range, proxy_protocol_from) = match env.cloud {
            Cloud::Aws => {
                let arn = outputs.get(AGENT_ROLE_ID).filter(|a| a.starts_with("arn:")).cloned().ok_or_else(|| {
                    SidecarError::Missing(format!(
                        "the state has no ARN for {AGENT_ROLE_ID} (the agent's IRSA role); the environment's apply must finish first"
                    ))
                })?;
                let private: Vec<IpNet> = env.network.subnets.iter().filter(|s| s.tier == Tier::Private).map(|s| s.cidr).collect();
                (arn, format!("s3://{}/reconciler", env.state_bucket), private, None, Some(env.network.cidr))
            }
            Cloud::Gcp => {
                let email =
                    format!("{}@{}.iam.gserviceaccount.com", crate::expand::names::gcp::service_account(&env.name, "agent"), env.account);
                let psc: Vec<IpNet> = env.network.private_service_connect.into_iter().collect();
                (email, format!("gs://{}/reconciler", env.state_bucket), psc.clone(), psc.first().copied(), psc.first().copied())
            }
            Cloud::Azure => {
                let client_id = outputs.get(AGENT_IDENTITY_ID).filter(|c| !c.is_empty()).cloned().ok_or_else(|| {
                    SidecarError::Missing(format!(
                        "the state has no client id for {AGENT_IDENTITY_ID} (the agent's managed identity); the environment's apply must finish first"
                    ))
                })?;
                let account = crate::expand::names::azure::storage_account(&env.account, &env.name, "state");
                let url = format!("https://{account}.blob.core.windows.net/{}/reconciler", env.state_bucket);
                let pls: Vec<IpNet> = env.network.private_link.into_iter().collect();
                (client_id, url, pls.clone(), pls.first().copied(), pls.first().copied())
            }
        };
        let mut proxy_cidrs = vec![env.network.cidr];
        proxy_cidrs.extend(nat_range.filter(|r| !env.network.cidr.contains(r)));
        proxy_cidrs.extend(env.public_proxy.iter().flatten().copied());
        Ok(SidecarOutputs {
            cloud: env.cloud,
            identity,
            state_store,
            environment: env_dir.trim_end_matches('/').to_owned(),
            agent_cidrs: if agent_cidrs.is_empty() { vec![env.network.cidr] } else { agent_cidrs },
            proxy_cidrs,
            proxy_protocol_from,
            service_annotations: private_link_annotations(graph),
            public_proxy: env.public_proxy.clone(),
            attachments: service_attachments(graph)?,
            proxy_port: env.proxy_port,
            image,
        })
    }
}

/// Azure: the annotations AKS makes each internal Service's Private Link service from, as
/// the graph's `azure.private-link-service/*` resources carry them.
fn private_link_annotations(graph: &Graph) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for r in graph.resources.values().filter(|r| r.kind == Kind::AzurePrivateLinkService) {
        let service = r.properties.get("service").and_then(crate::resource::Value::as_str).unwrap_or_default();
        let annotations: BTreeMap<String, String> = match r.properties.get("annotations") {
            Some(crate::resource::Value::Map(m)) => m.iter().filter_map(|(k, v)| Some((k.to_string(), v.as_str()?.to_owned()))).collect(),
            _ => BTreeMap::new(),
        };
        out.insert(service.to_owned(), annotations);
    }
    out
}

/// GCP: a GKE `ServiceAttachment` (networking.gke.io/v1) for each of the graph's
/// `gcp.service-attachment/*`: GKE's controller publishes the Service's internal load
/// balancer through Private Service Connect on the NAT subnets named, to the projects
/// listed only.
fn service_attachments(graph: &Graph) -> Result<Vec<Value>, SidecarError> {
    use crate::resource::Value as V;
    let text = |r: &crate::resource::Resource, key: &str| r.properties.get(key).and_then(V::as_str).unwrap_or_default().to_owned();
    let mut out = Vec::new();
    for r in graph.resources.values().filter(|r| r.kind == Kind::GcpServiceAttachment) {
        let mut subnets = Vec::new();
        let mut missing = None;
        if let Some(v) = r.properties.get("natSubnets") {
            v.for_each_ref(
                &mut |id: &ResourceId| match graph.resources.get(id).and_then(|s| s.properties.get("name")).and_then(V::as_str) {
                    Some(name) => subnets.push(Value::String(name.to_owned())),
                    None => missing = Some(id.to_string()),
                },
            );
        }
        if let Some(id) = missing {
            return Err(SidecarError::Missing(format!("{}: its NAT subnet {id} is not in the environment's graph", r.id)));
        }
        let accept = match r.properties.get("consumerAllowList") {
            Some(v) => serde_json::to_value(v).unwrap_or(Value::Null),
            None => json!([]),
        };
        out.push(json!({
            "apiVersion": "networking.gke.io/v1",
            "kind": "ServiceAttachment",
            "metadata": {
                "name": text(r, "name"),
                "namespace": text(r, "namespace"),
                "labels": {"app.kubernetes.io/part-of": "byoc"},
            },
            "spec": {
                "connectionPreference": text(r, "connectionPreference"),
                "natSubnets": subnets,
                "proxyProtocol": matches!(r.properties.get("proxyProtocol"), Some(V::Bool(true))),
                "resourceRef": {"kind": "Service", "name": text(r, "service")},
                "consumerAllowList": accept,
            },
        }));
    }
    Ok(out)
}

/// The image byoc installs unless told otherwise: its own release.
pub fn default_image() -> String {
    format!("ghcr.io/risingwavelabs/byoc:{}", env!("CARGO_PKG_VERSION"))
}

/// `metadata.name` of a manifest object ("" when it has none).
pub(crate) fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

/// `kind` of a manifest object ("" when it has none).
pub(crate) fn kind_of(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// The objects of a multi-document YAML rendering (`kubectl kustomize` output), empty
/// documents left out.
pub(crate) fn documents(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// `Kind namespace/name`, for messages.
pub fn describe(obj: &Value) -> String {
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{} {ns}/{}", kind_of(obj), name_of(obj)),
        None => format!("{} {}", kind_of(obj), name_of(obj)),
    }
}

fn manifests_error(cloud: Cloud, message: impl Into<String>) -> SidecarError {
    SidecarError::Manifests { cloud: cloud.as_str(), message: message.into() }
}

/// The cloud's embedded overlay as objects, placeholders and all.
pub fn embedded(cloud: Cloud) -> Result<Vec<Value>, SidecarError> {
    documents(rendered(cloud)).map_err(|e| manifests_error(cloud, e))
}

/// The public proxy's Service for `cloud`, reachable from `allowed`: the component's
/// Service with the cloud's annotations for an internet-facing load balancer (AWS: the Load
/// Balancer Controller's NLB, which sends PROXY protocol v2 like the internal one; GCP and
/// Azure make an external passthrough load balancer from a plain `LoadBalancer` Service).
pub fn public_proxy_service(cloud: Cloud, allowed: &[IpNet]) -> Result<Value, SidecarError> {
    let mut service: Value =
        serde_saphyr::from_str(PUBLIC_PROXY).map_err(|e| SidecarError::Manifests { cloud: "public-proxy", message: e.to_string() })?;
    if name_of(&service) != PUBLIC_PROXY_SERVICE || service.pointer("/metadata/namespace").and_then(Value::as_str) != Some(AGENT_NAMESPACE)
    {
        return Err(SidecarError::Manifests {
            cloud: "public-proxy",
            message: format!("manifests/components/public-proxy/service.yaml must be the Service {AGENT_NAMESPACE}/{PUBLIC_PROXY_SERVICE}"),
        });
    }
    service["spec"]["loadBalancerSourceRanges"] = Value::Array(allowed.iter().map(|c| Value::String(c.to_string())).collect());
    service["metadata"]["labels"]["app.kubernetes.io/part-of"] = Value::String("byoc".into());
    if cloud == Cloud::Aws {
        service["metadata"]["annotations"] = json!({
            "service.beta.kubernetes.io/aws-load-balancer-type": "external",
            "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
            "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
            "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol": "*",
        });
        service["spec"]["loadBalancerClass"] = Value::String("service.k8s.aws/nlb".into());
    }
    Ok(service)
}

fn ip_blocks(cidrs: &[IpNet]) -> Value {
    Value::Array(cidrs.iter().map(|c| json!({"ipBlock": {"cidr": c.to_string()}})).collect())
}

/// Replaces the one line of the Reconciler config that starts (after indentation) with
/// `key:`, keeping its indentation.
fn replace_line(cloud: Cloud, text: &str, key: &str, value: &str) -> Result<String, SidecarError> {
    let prefix = format!("{key}:");
    let hits = text.lines().filter(|l| l.trim_start().starts_with(&prefix)).count();
    if hits != 1 {
        return Err(manifests_error(cloud, format!("the Reconciler config has {hits} `{key}:` line(s), byoc fills exactly one")));
    }
    let mut out: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(&prefix) {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}{key}: {value}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    Ok(out)
}

fn rank(o: &Value) -> usize {
    ORDER.iter().position(|k| *k == kind_of(o)).unwrap_or(ORDER.len())
}

/// The sidecar's objects with `outputs` filled in, in the order they are applied.
pub fn render(outputs: &SidecarOutputs) -> Result<Vec<Value>, SidecarError> {
    let cloud = outputs.cloud;
    let mut objects = embedded(cloud)?;
    let missing = |what: &str| manifests_error(cloud, format!("{what} is not where byoc fills it in"));
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let identity_pointer = format!("/metadata/annotations/{}", identity_annotation(cloud).replace('~', "~0").replace('/', "~1"));
    let mut digest = Sha256::new();
    for obj in &mut objects {
        match (kind_of(obj), name_of(obj)) {
            ("ServiceAccount", "byoc") => {
                *obj.pointer_mut(&identity_pointer).ok_or_else(|| missing("the workload-identity annotation"))? =
                    Value::String(outputs.identity.clone());
            }
            ("ConfigMap", n) if n.starts_with("byoc-config-") => {
                let text = obj.pointer("/data/reconciler.yaml").and_then(Value::as_str).ok_or_else(|| missing("reconciler.yaml"))?;
                let store = format!("{{{}: {}}}", state_store_key(cloud), quoted(&outputs.state_store));
                let text = replace_line(cloud, text, "stateStore", &store)?;
                let text = replace_line(cloud, &text, "environment", &quoted(&outputs.environment))?;
                obj["data"]["reconciler.yaml"] = Value::String(text);
            }
            ("NetworkPolicy", "byoc-agent") => {
                *obj.pointer_mut("/spec/ingress/0/from").ok_or_else(|| missing("the agent policy's sources"))? =
                    ip_blocks(&outputs.agent_cidrs);
            }
            ("NetworkPolicy", "rwproxy") => {
                *obj.pointer_mut("/spec/ingress/0/from").ok_or_else(|| missing("the proxy policy's sources"))? =
                    ip_blocks(&outputs.proxy_cidrs);
            }
            ("Service", name) if outputs.service_annotations.contains_key(name) => {
                let annotations = &outputs.service_annotations[name];
                obj["metadata"]["annotations"] = json!(annotations);
            }
            ("Deployment", "byoc") => {
                let containers =
                    obj.pointer_mut("/spec/template/spec/containers").and_then(Value::as_array_mut).ok_or_else(|| missing("containers"))?;
                let mut filled = false;
                let is_ppv2 = |a: &Value| a.as_str().is_some_and(|s| s.starts_with("--proxy-protocol-from="));
                for c in containers.iter_mut() {
                    c["image"] = Value::String(outputs.image.clone());
                    let Some(args) = c.get_mut("args").and_then(Value::as_array_mut) else { continue };
                    match outputs.proxy_protocol_from {
                        Some(from) => {
                            for a in args.iter_mut().filter(|a| is_ppv2(a)) {
                                *a = Value::String(format!("--proxy-protocol-from={from}"));
                                filled = true;
                            }
                        }
                        // No range sends headers: RWProxy must not expect one.
                        None => args.retain(|a| !is_ppv2(a)),
                    }
                }
                if !filled && outputs.proxy_protocol_from.is_some() {
                    return Err(missing("rwproxy's --proxy-protocol-from"));
                }
            }
            _ => {}
        }
    }
    for service in outputs.service_annotations.keys() {
        if !objects.iter().any(|o| kind_of(o) == "Service" && name_of(o) == service) {
            return Err(manifests_error(cloud, format!("the graph annotates the Service {service}, which the overlay does not have")));
        }
    }
    if let Some(allowed) = &outputs.public_proxy {
        objects.push(public_proxy_service(cloud, allowed)?);
    }
    objects.extend(outputs.attachments.iter().cloned());
    // The SQL Services listen on the spec's port, which the cloud's rules open.
    for obj in objects.iter_mut().filter(|o| kind_of(o) == "Service" && [PROXY_SERVICE, PUBLIC_PROXY_SERVICE].contains(&name_of(o))) {
        let ports = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut).ok_or_else(|| missing("the SQL Service's ports"))?;
        let sql = ports.iter_mut().find(|p| p["name"] == "sql").ok_or_else(|| missing("the SQL Service's `sql` port"))?;
        sql["port"] = json!(outputs.proxy_port);
    }
    // Digest after filling in: the ConfigMaps' data as applied.
    for obj in objects.iter().filter(|o| kind_of(o) == "ConfigMap") {
        digest.update(name_of(obj).as_bytes());
        digest.update(obj.get("data").map(Value::to_string).unwrap_or_default().as_bytes());
    }
    let digest: String = digest.finalize().iter().map(|b| format!("{b:02x}")).collect();
    for obj in objects.iter_mut().filter(|o| kind_of(o) == "Deployment") {
        let meta = obj.pointer_mut("/spec/template/metadata").ok_or_else(|| missing("the pod template's metadata"))?;
        meta["annotations"][CONFIG_DIGEST_ANNOTATION] = Value::String(digest.clone());
    }
    if let Some(o) = objects.iter().find(|o| rank(o) == ORDER.len()) {
        return Err(manifests_error(cloud, format!("{} is of a kind byoc does not install", describe(o))));
    }
    objects.sort_by_key(rank);
    Ok(objects)
}

/// Every object the sidecar of `cloud` can have in a cluster, for the environment's graph
/// (the public proxy's Service whether or not the spec has one, the graph's
/// ServiceAttachments), in the order [`install`] applies them: their names are all
/// [`remove`] needs.
pub fn ordered(cloud: Cloud, graph: &Graph) -> Result<Vec<Value>, SidecarError> {
    let mut objects = embedded(cloud)?;
    objects.push(public_proxy_service(cloud, &[])?);
    objects.extend(service_attachments(graph)?);
    objects.sort_by_key(rank);
    Ok(objects)
}

/// The cluster `byoc destroy` removes the sidecar from: only one named on the command line
/// (`--kubeconfig`, `--context`), never an inferred default, since the user's current
/// context need not be the environment's cluster.
#[derive(Debug, Clone, Copy)]
pub struct KubeTarget<'a> {
    /// `--kubeconfig`.
    pub kubeconfig: Option<&'a std::path::Path>,
    /// `--context`.
    pub context: Option<&'a str>,
}

impl KubeTarget<'_> {
    /// Whether a cluster was named.
    pub fn given(&self) -> bool {
        self.kubeconfig.is_some() || self.context.is_some()
    }
}

/// The step after `byoc apply` converged the cloud: install (or update) the sidecar with
/// the environment's outputs into the cluster `client` reaches, and delete the public
/// proxy's Service when the spec no longer has one. Without a client (`--cloud-only`, or no
/// Kubernetes configured) it says so and skips.
pub async fn after_apply(
    client: Option<&kube::Client>,
    env: &Environment,
    graph: &Graph,
    env_dir: &str,
    outputs: &BTreeMap<String, String>,
    image: Option<&str>,
) -> Result<(), SidecarError> {
    let Some(client) = client else {
        println!("sidecar: not installed: no Kubernetes cluster (--cloud-only, or none configured)");
        return Ok(());
    };
    let values = SidecarOutputs::new(env, graph, env_dir, outputs, image.map_or_else(default_image, str::to_owned))?;
    let objects = render(&values)?;
    // The environment's own objects first: the default StorageClass is cluster-wide and
    // needed by every RisingWave meta store, the sidecar's or not.
    for a in install(client, &crate::k8s::objects::environment_objects(env)).await? {
        println!("cluster: {a}");
    }
    let applied = install(client, &objects).await?;
    for a in &applied {
        println!("sidecar: {a}");
    }
    if values.public_proxy.is_none() {
        for r in remove(client, &[public_proxy_service(env.cloud, &[])?]).await? {
            println!("sidecar: deleted {r} (the spec has no publicProxy)");
        }
    }
    let changed = applied.iter().filter(|a| !a.starts_with("unchanged ")).count();
    println!(
        "sidecar: {} object(s), {changed} changed, with the identity {} and the state {}",
        applied.len(),
        values.identity,
        values.state_store
    );
    Ok(())
}

/// How long `byoc destroy` waits for the sidecar's objects to be gone from the API server
/// (their finalizers run: the cloud's controllers delete the load balancers and the GKE
/// ServiceAttachments' PSC attachments behind them) before it deletes the cluster.
pub const REMOVAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The step before `byoc destroy` deletes the cloud: remove the sidecar while its cluster
/// is still there, and wait until its objects are gone. The wait matters: a `LoadBalancer`
/// Service and a GKE ServiceAttachment carry finalizers under which the cloud's controller
/// deletes the load balancer and the attachment; deleting the cluster before they ran
/// leaves those behind, holding the subnets the cloud destroy then cannot delete. Without a
/// named cluster it says so and skips.
pub async fn before_destroy(
    client: Option<&kube::Client>,
    cloud: Cloud,
    graph: &Graph,
    poll: std::time::Duration,
) -> Result<(), SidecarError> {
    let Some(client) = client else {
        println!("sidecar: not removed: no --kubeconfig or --context names the environment's cluster");
        return Ok(());
    };
    let objects = ordered(cloud, graph)?;
    let removed = remove(client, &objects).await?;
    for r in &removed {
        println!("sidecar: deleted {r}");
    }
    wait_gone(client, &objects, REMOVAL_TIMEOUT, poll).await?;
    println!("sidecar: {} object(s) deleted and gone", removed.len());
    Ok(())
}

/// The client destroy removes the sidecar with, `None` when no cluster is named; the
/// cluster is asked for the sidecar's namespace first, so one that cannot be reached
/// stops destroy before anything is deleted.
pub async fn destroy_client(kube: KubeTarget<'_>, cloud: Cloud, graph: &Graph) -> Result<Option<kube::Client>, SidecarError> {
    if !kube.given() {
        return Ok(None);
    }
    let client = crate::k8s::client(kube.kubeconfig, kube.context).await?;
    let objects = ordered(cloud, graph)?;
    if let Some(first) = objects.first() {
        api_for(&client, first).get_opt(name_of(first)).await.map_err(|source| SidecarError::Kube {
            action: "reading",
            object: describe(first),
            source,
        })?;
    }
    Ok(Some(client))
}

/// Waits until none of `objects` is left in the API server, polling every `poll` for at
/// most `timeout`; then names what is still there and the finalizers holding it.
pub async fn wait_gone(
    client: &kube::Client,
    objects: &[Value],
    timeout: std::time::Duration,
    poll: std::time::Duration,
) -> Result<(), SidecarError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut left = Vec::new();
        for obj in objects {
            let found = api_for(client, obj).get_opt(name_of(obj)).await.map_err(|source| SidecarError::Kube {
                action: "reading",
                object: describe(obj),
                source,
            })?;
            if let Some(o) = found {
                let finalizers = o.metadata.finalizers.unwrap_or_default();
                left.push(if finalizers.is_empty() {
                    describe(obj)
                } else {
                    format!("{} (finalizers: {})", describe(obj), finalizers.join(", "))
                });
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SidecarError::StillThere(format!(
                "after {} s these are still in the cluster: {}; their controllers have not finished deleting what they made (load balancers, attachments); destroy again once they are gone",
                timeout.as_secs(),
                left.join("; ")
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

/// The API of `obj`'s kind (and namespace).
fn api_for(client: &kube::Client, obj: &Value) -> Api<DynamicObject> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = kind_of(obj);
    let lower = kind.to_ascii_lowercase();
    let plural = if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else if lower.ends_with("ss") {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    };
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Server-side applies `objects` (from [`render`]) in order, as field manager `byoc`,
/// taking over fields another manager set (byoc owns these objects). Returns what happened
/// to each, as `created|updated|unchanged Kind namespace/name`: the API server keeps an
/// object's resourceVersion when an apply changes nothing, so a rerun can say it wrote
/// nothing.
pub async fn install(client: &kube::Client, objects: &[Value]) -> Result<Vec<String>, SidecarError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut done = Vec::new();
    for obj in objects {
        let api = api_for(client, obj);
        let failed = |source| SidecarError::Kube { action: "applying", object: describe(obj), source };
        let before = api.get_opt(name_of(obj)).await.map_err(failed)?.and_then(|o| o.metadata.resource_version);
        let after = api.patch(name_of(obj), &params, &Patch::Apply(obj)).await.map_err(failed)?.metadata.resource_version;
        let what = match before {
            None => "created",
            Some(rv) if Some(&rv) == after.as_ref() => "unchanged",
            Some(_) => "updated",
        };
        done.push(format!("{what} {}", describe(obj)));
    }
    Ok(done)
}

/// Deletes `objects` in the reverse order of [`install`]; objects already gone are fine.
/// Returns what was deleted.
pub async fn remove(client: &kube::Client, objects: &[Value]) -> Result<Vec<String>, SidecarError> {
    let mut done = Vec::new();
    for obj in objects.iter().rev() {
        match api_for(client, obj).delete(name_of(obj), &DeleteParams::background()).await {
            Ok(_) => done.push(describe(obj)),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(SidecarError::Kube { action: "deleting", object: describe(obj), source }),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> SidecarOutputs {
        SidecarOutputs {
            cloud: Cloud::Aws,
            identity: "arn:aws:iam::123456789012:role/byoc-x-agent".into(),
            state_store: "s3://st/reconciler".into(),
            environment: "envs/x".into(),
            agent_cidrs: vec!["10.1.0.0/19".parse().unwrap(), "10.1.32.0/19".parse().unwrap()],
            proxy_cidrs: vec!["10.1.0.0/16".parse().unwrap(), "203.0.113.0/24".parse().unwrap()],
            proxy_protocol_from: Some("10.1.0.0/16".parse().unwrap()),
            service_annotations: BTreeMap::new(),
            public_proxy: None,
            attachments: Vec::new(),
            proxy_port: 4566,
            image: "registry.example/byoc:9".into(),
        }
    }

    /// The example environment of `cloud`, its graph and outputs as an apply writes them.
    fn example(cloud: &str) -> (crate::spec::Specs, Graph) {
        let dir = format!("{}/../examples/{cloud}", env!("CARGO_MANIFEST_DIR"));
        let files = rwproxy::specfiles::read_dir(std::path::Path::new(&dir)).expect("example readable");
        let specs = crate::spec::load::load(&dir, &files).unwrap_or_else(|e| panic!("{e:?}"));
        let graph = crate::expand::expand(&specs);
        (specs, graph)
    }

    #[test]
    fn render_fills_every_placeholder_and_orders_by_dependency() {
        let objects = render(&outputs()).expect("render");
        let text = serde_json::to_string(&objects).expect("json");
        for placeholder in ["111122223333", "byoc-prod-infra-state", "10.255.0.0/24", "10.0.0.0/8", "10.0.0.0/16", ":latest"] {
            assert!(!text.contains(placeholder), "{placeholder} left in the rendering");
        }
        let kinds: Vec<&str> = objects.iter().map(kind_of).collect();
        assert_eq!(kinds.first(), Some(&"Namespace"));
        assert_eq!(kinds.last(), Some(&"Deployment"));
        let sa = objects.iter().find(|o| kind_of(o) == "ServiceAccount").expect("sa");
        assert_eq!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], "arn:aws:iam::123456789012:role/byoc-x-agent");
        let cm = objects.iter().find(|o| name_of(o).starts_with("byoc-config-")).expect("config");
        let config = cm["data"]["reconciler.yaml"].as_str().expect("text");
        assert!(config.contains("  stateStore: {s3: \"s3://st/reconciler\"}\n"), "{config}");
        assert!(config.contains("  environment: \"envs/x\"\n"), "{config}");
        let agent = objects.iter().find(|o| kind_of(o) == "NetworkPolicy" && name_of(o) == "byoc-agent").expect("policy");
        assert_eq!(agent["spec"]["ingress"][0]["from"][1]["ipBlock"]["cidr"], "10.1.32.0/19");
        assert!(!objects.iter().any(|o| name_of(o) == PUBLIC_PROXY_SERVICE), "no publicProxy, no public Service");
    }

    #[test]
    fn a_changed_value_changes_the_pod_templates_config_digest() {
        let digest = |o: &SidecarOutputs| {
            let objects = render(o).expect("render");
            objects.last().expect("deployment")["spec"]["template"]["metadata"]["annotations"][CONFIG_DIGEST_ANNOTATION].clone()
        };
        let mut other = outputs();
        other.state_store = "s3://other/reconciler".into();
        assert_ne!(digest(&outputs()), digest(&other));
        assert_eq!(digest(&outputs()), digest(&outputs()));
    }

    #[test]
    fn every_clouds_overlay_renders_with_its_identity_state_store_and_no_placeholder_left() {
        let mut outputs_by_id = BTreeMap::new();
        outputs_by_id.insert(AGENT_ROLE_ID.to_owned(), "arn:aws:iam::123456789012:role/byoc-prod-use1-agent".to_owned());
        outputs_by_id.insert(AGENT_IDENTITY_ID.to_owned(), "5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b".to_owned());
        for cloud in ["aws", "gcp", "azure"] {
            let (specs, graph) = example(cloud);
            let env = &specs.environment;
            let values = SidecarOutputs::new(env, &graph, "examples/x", &outputs_by_id, "registry.example/byoc:9".into()).expect("values");
            let objects = render(&values).expect("render");
            let text = serde_json::to_string(&objects).expect("json");
            // The overlays' example values: none may reach a cluster.
            for placeholder in
                ["111122223333", "example-project", "00000000-0000-0000-0000-000000000000", "byoc-prod-infra-state", ":latest"]
            {
                assert!(!text.contains(placeholder), "{cloud}: {placeholder} left in the rendering");
            }
            let sa = objects.iter().find(|o| kind_of(o) == "ServiceAccount").expect("sa");
            assert_eq!(sa["metadata"]["annotations"][identity_annotation(env.cloud)], values.identity.as_str(), "{cloud}");
            let config = objects.iter().find(|o| name_of(o).starts_with("byoc-config-")).expect("config")["data"]["reconciler.yaml"]
                .as_str()
                .expect("text")
                .to_owned();
            let line = format!("  stateStore: {{{}: \"{}\"}}\n", state_store_key(env.cloud), values.state_store);
            assert!(config.contains(&line), "{cloud}: {config}");
            // The state store the daemon is told is one the config loader accepts (the
            // files the config names are the pod's, not here: those problems are expected).
            let problems =
                crate::run::config::parse("reconciler.yaml", &config, std::path::Path::new("/etc/byoc")).err().unwrap_or_default();
            let store: Vec<_> = problems.iter().filter(|d| d.message.contains("stateStore")).collect();
            assert!(store.is_empty(), "{cloud}: {store:?}");
            // PROXY headers come from AWS's NLB (the VPC), GCP's PSC NAT subnet, Azure's
            // Private Link subnet: RWProxy trusts exactly that range.
            let args = &objects.last().expect("deployment")["spec"]["template"]["spec"]["containers"][1]["args"];
            let ppv2: Vec<&str> = args
                .as_array()
                .expect("args")
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| s.starts_with("--proxy-protocol-from="))
                .collect();
            let range = match env.cloud {
                Cloud::Aws => env.network.cidr,
                Cloud::Gcp => env.network.private_service_connect.expect("psc"),
                Cloud::Azure => env.network.private_link.expect("private link"),
            };
            assert_eq!(ppv2, [format!("--proxy-protocol-from={range}")], "{cloud}");
        }
    }

    #[test]
    fn gcp_gets_a_service_attachment_per_internal_service_accepting_only_the_control_planes_projects() {
        let (specs, graph) = example("gcp");
        let env = &specs.environment;
        let values = SidecarOutputs::new(env, &graph, "examples/gcp", &BTreeMap::new(), "i:1".into()).expect("values");
        let objects = render(&values).expect("render");
        let attachments: Vec<&Value> = objects.iter().filter(|o| kind_of(o) == "ServiceAttachment").collect();
        assert_eq!(attachments.len(), 2);
        let psc = crate::expand::names::gcp::compute(&env.name, crate::expand::gcp::PSC_SUBNET);
        let mut services = Vec::new();
        for a in attachments {
            assert_eq!(a["spec"]["natSubnets"], json!([psc]));
            assert_eq!(a["spec"]["connectionPreference"], "ACCEPT_MANUAL");
            let projects: Vec<&str> =
                a["spec"]["consumerAllowList"].as_array().expect("list").iter().filter_map(|c| c["project"].as_str()).collect();
            assert_eq!(projects, env.control_plane_principals.iter().map(String::as_str).collect::<Vec<_>>());
            assert_eq!(a["apiVersion"], "networking.gke.io/v1");
            assert_eq!(a["metadata"]["namespace"], AGENT_NAMESPACE);
            assert_eq!(a["spec"]["resourceRef"]["kind"], "Service");
            assert!(a["spec"]["consumerAllowList"].as_array().expect("list").iter().all(|c| c["connectionLimit"].is_u64()));
            // Only the SQL path carries the client's address in a PROXY header.
            let service = a["spec"]["resourceRef"]["name"].as_str().expect("service").to_owned();
            assert_eq!(a["spec"]["proxyProtocol"], service == "rwproxy", "{service}");
            services.push(service);
        }
        services.sort();
        assert_eq!(services, ["byoc-agent", "rwproxy"]);
        // Applied after the Services they publish.
        let position = |k: &str| objects.iter().position(|o| kind_of(o) == k).expect("kind");
        assert!(position("Service") < position("ServiceAttachment"));
        // The agent port is reached through PSC: from its NAT subnet only.
        let agent = objects.iter().find(|o| kind_of(o) == "NetworkPolicy" && name_of(o) == "byoc-agent").expect("policy");
        assert_eq!(agent["spec"]["ingress"][0]["from"], ip_blocks(&[env.network.private_service_connect.expect("psc")]));
    }

    #[test]
    fn azure_services_carry_the_graphs_private_link_annotations() {
        let (specs, graph) = example("azure");
        let env = &specs.environment;
        let mut outputs = BTreeMap::new();
        outputs.insert(AGENT_IDENTITY_ID.to_owned(), "5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b".to_owned());
        let values = SidecarOutputs::new(env, &graph, "examples/azure", &outputs, "i:1".into()).expect("values");
        let objects = render(&values).expect("render");
        for service in ["byoc-agent", "rwproxy"] {
            let s = objects.iter().find(|o| kind_of(o) == "Service" && name_of(o) == service).expect("service");
            let a = &s["metadata"]["annotations"];
            assert_eq!(a["service.beta.kubernetes.io/azure-pls-create"], "true", "{service}");
            let ppv2 = if service == "rwproxy" { "true" } else { "false" };
            assert_eq!(a["service.beta.kubernetes.io/azure-pls-proxy-protocol"], ppv2, "{service}");
            assert_eq!(a["service.beta.kubernetes.io/azure-pls-visibility"], env.control_plane_principals.join(" ").as_str());
            assert_eq!(a["service.beta.kubernetes.io/azure-pls-auto-approval"], env.control_plane_principals.join(" ").as_str());
            assert!(a["service.beta.kubernetes.io/azure-pls-name"].as_str().expect("name").starts_with(&format!("byoc-{}", env.name)));
        }
        let mut without = outputs.clone();
        without.remove(AGENT_IDENTITY_ID);
        let e = SidecarOutputs::new(env, &graph, "examples/azure", &without, "i:1".into()).expect_err("no client id");
        assert!(e.to_string().contains(AGENT_IDENTITY_ID), "{e}");
    }

    #[test]
    fn the_sql_services_listen_on_the_specs_port_and_reach_rwproxys_container_port() {
        let mut values = outputs();
        values.proxy_port = 6543;
        values.public_proxy = Some(vec!["198.51.100.0/24".parse().unwrap()]);
        let objects = render(&values).expect("render");
        for service in [PROXY_SERVICE, PUBLIC_PROXY_SERVICE] {
            let s = objects.iter().find(|o| kind_of(o) == "Service" && name_of(o) == service).expect("service");
            assert_eq!(s["spec"]["ports"], json!([{"name": "sql", "port": 6543, "targetPort": "sql", "protocol": "TCP"}]), "{service}");
        }
        let agent = objects.iter().find(|o| kind_of(o) == "Service" && name_of(o) == "byoc-agent").expect("agent");
        assert_eq!(agent["spec"]["ports"][0]["port"], 8443, "the agent's port is not the SQL port");
    }

    #[test]
    fn the_public_proxy_service_comes_and_goes_with_the_spec() {
        for cloud in [Cloud::Aws, Cloud::Gcp, Cloud::Azure] {
            let mut values = outputs();
            values.cloud = cloud;
            values.public_proxy = Some(vec!["198.51.100.0/24".parse().unwrap()]);
            let objects = render(&values).expect("render");
            let public = objects.iter().find(|o| name_of(o) == PUBLIC_PROXY_SERVICE).expect("public service");
            assert_eq!(public["spec"]["loadBalancerSourceRanges"], json!(["198.51.100.0/24"]));
            assert_eq!(public["spec"]["type"], "LoadBalancer");
            let annotations = &public["metadata"]["annotations"];
            match cloud {
                Cloud::Aws => assert_eq!(annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"], "internet-facing"),
                Cloud::Gcp => assert!(annotations.get("networking.gke.io/load-balancer-type").is_none(), "{annotations}"),
                Cloud::Azure => {
                    assert!(annotations.get("service.beta.kubernetes.io/azure-load-balancer-internal").is_none(), "{annotations}")
                }
            }
            // destroy removes it whether or not the spec has one now.
            let (_, graph) = example("aws");
            assert!(ordered(cloud, &graph).expect("ordered").iter().any(|o| name_of(o) == PUBLIC_PROXY_SERVICE));
        }
    }
}
