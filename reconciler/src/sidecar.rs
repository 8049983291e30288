//! The sidecar in the customer's cluster: `byoc apply` installs it after the environment
//! converges, `byoc destroy` removes it before the cluster goes.
//!
//! The objects are `kubectl kustomize manifests/overlays/aws`, rendered ahead of time into
//! `manifests/rendered/aws.yaml` and embedded here, so the customer's CI needs no kubectl
//! or kustomize at run time (kustomize's configMapGenerator hashing, JSON patches and
//! labels are not worth re-implementing). tests/e2e/sidecar_install.rs fails when that file
//! differs from what the overlay renders, so the two cannot drift. byoc then fills in the
//! values the overlay leaves as placeholders (the workload identity, the state store, the
//! CIDRs, the image) from the environment's spec and the outputs of the apply.

use std::collections::BTreeMap;

use ipnet::IpNet;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::spec::{Environment, Tier};

/// `kubectl kustomize manifests/overlays/aws`, with the overlay's placeholders.
const AWS_RENDERED: &str = include_str!("../../manifests/rendered/aws.yaml");

/// The field manager of byoc's server-side applies.
pub const FIELD_MANAGER: &str = "byoc";

/// The resource id of the agent's IRSA role (see expand/aws.rs).
const AGENT_ROLE_ID: &str = "aws.iam-role/agent";

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
    #[error("manifests/rendered/aws.yaml: {0}; regenerate it with `kubectl kustomize manifests/overlays/aws`")]
    Manifests(String),
    /// The Kubernetes API refused or could not be reached.
    #[error("{action} {object}: {source}")]
    Kube {
        /// `applying` or `deleting`.
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
        matches!(self, SidecarError::Kube { .. })
    }
}

/// The environment's values the sidecar's objects carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarOutputs {
    /// The ARN of the agent's IRSA role, as the apply created it.
    pub role_arn: String,
    /// `s3://BUCKET/PREFIX` of the daemon's state.
    pub state_store: String,
    /// The environment directory inside the repository (the Reconciler's `environment`).
    pub environment: String,
    /// Where connections to the agent port come from: the private subnets, which the
    /// internal NLB (IP targets, behind the private endpoint) forwards from.
    pub agent_cidrs: Vec<IpNet>,
    /// Who may reach the SQL port: the VPC (the internal NLB) and the spec's public
    /// allowed CIDRs.
    pub proxy_cidrs: Vec<IpNet>,
    /// The VPC, whose NLB sends PROXY protocol headers RWProxy trusts.
    pub vpc_cidr: IpNet,
    /// The container image of both containers.
    pub image: String,
}

impl SidecarOutputs {
    /// The values for `env` after an apply whose cloud outputs (resource id to ARN or cloud
    /// id, the `cloud-outputs.json` of the state) are `outputs`.
    pub fn aws(env: &Environment, env_dir: &str, outputs: &BTreeMap<String, String>, image: String) -> Result<Self, SidecarError> {
        let role_arn = outputs.get(AGENT_ROLE_ID).filter(|a| a.starts_with("arn:")).cloned().ok_or_else(|| {
            SidecarError::Missing(format!(
                "the state has no ARN for {AGENT_ROLE_ID} (the agent's IRSA role); the environment's apply must finish first"
            ))
        })?;
        let agent_cidrs: Vec<IpNet> = env.network.subnets.iter().filter(|s| s.tier == Tier::Private).map(|s| s.cidr).collect();
        let mut proxy_cidrs = vec![env.network.cidr];
        proxy_cidrs.extend(env.public_proxy.iter().flatten().copied());
        Ok(SidecarOutputs {
            role_arn,
            state_store: format!("s3://{}/reconciler", env.state_bucket),
            environment: env_dir.trim_end_matches('/').to_owned(),
            agent_cidrs: if agent_cidrs.is_empty() { vec![env.network.cidr] } else { agent_cidrs },
            proxy_cidrs,
            vpc_cidr: env.network.cidr,
            image,
        })
    }
}

/// The image byoc installs unless told otherwise: its own release.
pub fn default_image() -> String {
    format!("ghcr.io/risingwavelabs/byoc:{}", env!("CARGO_PKG_VERSION"))
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

fn kind_of(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// `Kind namespace/name`, for messages.
pub fn describe(obj: &Value) -> String {
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{} {ns}/{}", kind_of(obj), name_of(obj)),
        None => format!("{} {}", kind_of(obj), name_of(obj)),
    }
}

/// The embedded overlay as objects, placeholders and all.
pub fn embedded() -> Result<Vec<Value>, SidecarError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(AWS_RENDERED).map_err(|e| SidecarError::Manifests(e.to_string()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn ip_blocks(cidrs: &[IpNet]) -> Value {
    Value::Array(cidrs.iter().map(|c| json!({"ipBlock": {"cidr": c.to_string()}})).collect())
}

/// Replaces the one line of the Reconciler config that starts (after indentation) with
/// `key:`, keeping its indentation.
fn replace_line(text: &str, key: &str, value: &str) -> Result<String, SidecarError> {
    let prefix = format!("{key}:");
    let hits = text.lines().filter(|l| l.trim_start().starts_with(&prefix)).count();
    if hits != 1 {
        return Err(SidecarError::Manifests(format!("the Reconciler config has {hits} `{key}:` line(s), byoc fills exactly one")));
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

/// The sidecar's objects with `outputs` filled in, in the order they are applied.
pub fn render(outputs: &SidecarOutputs) -> Result<Vec<Value>, SidecarError> {
    let mut objects = embedded()?;
    let missing = |what: &str| SidecarError::Manifests(format!("{what} is not where byoc fills it in"));
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut digest = Sha256::new();
    for obj in &mut objects {
        match (kind_of(obj), name_of(obj)) {
            ("ServiceAccount", "byoc") => {
                let a =
                    obj.pointer_mut("/metadata/annotations/eks.amazonaws.com~1role-arn").ok_or_else(|| missing("the IRSA annotation"))?;
                *a = Value::String(outputs.role_arn.clone());
            }
            ("ConfigMap", n) if n.starts_with("byoc-config-") => {
                let text = obj.pointer("/data/reconciler.yaml").and_then(Value::as_str).ok_or_else(|| missing("reconciler.yaml"))?;
                let text = replace_line(text, "stateStore", &format!("{{s3: {}}}", quoted(&outputs.state_store)))?;
                let text = replace_line(&text, "environment", &quoted(&outputs.environment))?;
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
            ("Deployment", "byoc") => {
                let containers =
                    obj.pointer_mut("/spec/template/spec/containers").and_then(Value::as_array_mut).ok_or_else(|| missing("containers"))?;
                let mut filled = false;
                for c in containers.iter_mut() {
                    c["image"] = Value::String(outputs.image.clone());
                    for a in c.get_mut("args").and_then(Value::as_array_mut).into_iter().flatten() {
                        if a.as_str().is_some_and(|s| s.starts_with("--proxy-protocol-from=")) {
                            *a = Value::String(format!("--proxy-protocol-from={}", outputs.vpc_cidr));
                            filled = true;
                        }
                    }
                }
                if !filled {
                    return Err(missing("rwproxy's --proxy-protocol-from"));
                }
            }
            _ => {}
        }
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
    let rank = |o: &Value| ORDER.iter().position(|k| *k == kind_of(o)).unwrap_or(ORDER.len());
    if let Some(o) = objects.iter().find(|o| rank(o) == ORDER.len()) {
        return Err(SidecarError::Manifests(format!("{} is of a kind byoc does not install", describe(o))));
    }
    objects.sort_by_key(|o| rank(o));
    Ok(objects)
}

/// The embedded objects in the order [`install`] applies them (their names are all
/// [`remove`] needs).
pub fn ordered() -> Result<Vec<Value>, SidecarError> {
    let mut objects = embedded()?;
    objects.sort_by_key(|o| ORDER.iter().position(|k| *k == kind_of(o)).unwrap_or(ORDER.len()));
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
/// the environment's outputs into the cluster `client` reaches. Without one (`--cloud-only`,
/// or no Kubernetes configured) it says so and skips.
pub async fn after_apply(
    client: Option<&kube::Client>,
    env: &Environment,
    env_dir: &str,
    outputs: &BTreeMap<String, String>,
    image: Option<&str>,
) -> Result<(), SidecarError> {
    let Some(client) = client else {
        println!("sidecar: not installed: no Kubernetes cluster (--cloud-only, or none configured)");
        return Ok(());
    };
    let values = SidecarOutputs::aws(env, env_dir, outputs, image.map_or_else(default_image, str::to_owned))?;
    let objects = render(&values)?;
    // The environment's own objects first: the default StorageClass is cluster-wide and
    // needed by every RisingWave meta store, the sidecar's or not.
    for a in install(client, &crate::k8s::objects::environment_objects(env)).await? {
        println!("cluster: applied {a}");
    }
    let applied = install(client, &objects).await?;
    for a in &applied {
        println!("sidecar: applied {a}");
    }
    println!("sidecar: {} object(s) applied with the role {} and the state {}", applied.len(), values.role_arn, values.state_store);
    Ok(())
}

/// The step before `byoc destroy` deletes the cloud: remove the sidecar while its cluster
/// is still there. Without a named cluster it says so and skips.
pub async fn before_destroy(kube: KubeTarget<'_>) -> Result<(), SidecarError> {
    if !kube.given() {
        println!("sidecar: not removed: no --kubeconfig or --context names the environment's cluster");
        return Ok(());
    }
    let client = crate::k8s::client(kube.kubeconfig, kube.context).await?;
    let removed = remove(&client, &ordered()?).await?;
    for r in &removed {
        println!("sidecar: deleted {r}");
    }
    println!("sidecar: {} object(s) deleted", removed.len());
    Ok(())
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
/// taking over fields another manager set (byoc owns these objects). Returns what was
/// applied, as `Kind namespace/name`.
pub async fn install(client: &kube::Client, objects: &[Value]) -> Result<Vec<String>, SidecarError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut done = Vec::new();
    for obj in objects {
        api_for(client, obj).patch(name_of(obj), &params, &Patch::Apply(obj)).await.map_err(|source| SidecarError::Kube {
            action: "applying",
            object: describe(obj),
            source,
        })?;
        done.push(describe(obj));
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
            role_arn: "arn:aws:iam::123456789012:role/byoc-x-agent".into(),
            state_store: "s3://st/reconciler".into(),
            environment: "envs/x".into(),
            agent_cidrs: vec!["10.1.0.0/19".parse().unwrap(), "10.1.32.0/19".parse().unwrap()],
            proxy_cidrs: vec!["10.1.0.0/16".parse().unwrap(), "203.0.113.0/24".parse().unwrap()],
            vpc_cidr: "10.1.0.0/16".parse().unwrap(),
            image: "registry.example/byoc:9".into(),
        }
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
}
