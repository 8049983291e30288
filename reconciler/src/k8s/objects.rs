//! The Kubernetes objects of each RisingWave cluster, as the reconciler applies them: the
//! namespace, the service account bound to the cluster's cloud identity, the
//! risingwave-operator's `RisingWave` resource (a typed subset: only the fields we set). No
//! Service: the operator creates and owns `<cluster>-frontend`, which RWProxy routes to
//! ([`rwproxy::routes::frontend_service`]). Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, ResourceRequirements, ServiceAccount, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::discovery::ApiResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::expand::{LABEL_NODE_GROUP, aws, azure, cluster_namespace, cluster_service_account, gcp};
use crate::resource::{Kind, ResourceId};
use crate::spec::quantity::{format_cpu, format_memory};
use crate::spec::{Cloud, Cluster, Component, DeletionPolicy, Environment, MetaStore, Specs};

pub use crate::expand::kubernetes::{LABEL_CLUSTER, LABEL_MANAGED_BY, MANAGED_BY};
/// Annotation on a cluster's namespace recording its deletion policy, so a cluster removed
/// from the specs is pruned by the policy it had, even with the inventory lost.
pub const ANNOTATION_DELETION_POLICY: &str = "byoc.risingwave.dev/deletion-policy";
/// Label put on the objects of a removed cluster that is retained.
pub const LABEL_ORPHANED: &str = "byoc.risingwave.dev/orphaned";

/// The kinds of object the reconciler writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    /// `v1` Namespace.
    Namespace,
    /// `v1` ServiceAccount.
    ServiceAccount,
    /// `risingwave.risingwavelabs.com/v1alpha1` RisingWave.
    RisingWave,
    /// `v1` Service: no longer written (the operator owns the frontend Service), but still
    /// deleted with a removed cluster, since earlier versions of byoc created one.
    Service,
}

impl ObjectKind {
    /// Group, version, kind and plural, for `kube::Api<DynamicObject>`.
    pub fn api_resource(self) -> ApiResource {
        let (group, version, kind, plural) = match self {
            ObjectKind::Namespace => ("", "v1", "Namespace", "namespaces"),
            ObjectKind::ServiceAccount => ("", "v1", "ServiceAccount", "serviceaccounts"),
            ObjectKind::Service => ("", "v1", "Service", "services"),
            ObjectKind::RisingWave => ("risingwave.risingwavelabs.com", "v1alpha1", "RisingWave", "risingwaves"),
        };
        ApiResource::from_gvk_with_plural(&kube::api::GroupVersionKind::gvk(group, version, kind), plural)
    }

    /// Name as in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Namespace => "Namespace",
            ObjectKind::ServiceAccount => "ServiceAccount",
            ObjectKind::RisingWave => "RisingWave",
            ObjectKind::Service => "Service",
        }
    }
}

/// One object to apply.
#[derive(Debug, Clone)]
pub struct Object {
    /// Its kind.
    pub kind: ObjectKind,
    /// Namespace; `None` for the namespace itself.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The whole body sent with server-side apply: only fields the reconciler owns.
    pub body: Value,
}

impl Object {
    /// `Kind namespace/name`, for reports and inventory keys.
    pub fn id(&self) -> String {
        object_id(self.kind, self.namespace.as_deref(), &self.name)
    }
}

/// `Kind namespace/name` (or `Kind name` for cluster-scoped objects).
pub fn object_id(kind: ObjectKind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{} {ns}/{name}", kind.as_str()),
        None => format!("{} {name}", kind.as_str()),
    }
}

/// One RisingWave cluster's objects, in the order they are applied.
#[derive(Debug, Clone)]
pub struct ClusterObjects {
    /// The cluster's name.
    pub cluster: String,
    /// Its namespace.
    pub namespace: String,
    /// What happens when it is removed from the specs.
    pub deletion_policy: DeletionPolicy,
    /// Report drift, do not correct it.
    pub ignore_drift: bool,
    /// Namespace, service account, RisingWave.
    pub objects: Vec<Object>,
}

/// Values only the cloud knows (e.g. an Azure identity's client id), by resource id
/// (`azure.managed-identity/rw-analytics`); filled from the cloud inventory.
pub type CloudOutputs = BTreeMap<String, String>;

/// Why the specs cannot be turned into objects.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// A value only the cloud knows is not in its outputs yet (the environment has not been
    /// applied): applying the cloud first fixes it.
    #[error(
        "cluster {cluster:?}: the client id of Azure identity {id} is not in the cloud inventory; \
         Azure assigns it when the identity is created, so apply the environment first"
    )]
    MissingOutput {
        /// The cluster.
        cluster: String,
        /// The resource whose output is missing.
        id: String,
    },
    /// An object could not be encoded (a bug, not an input problem).
    #[error("cannot encode {kind} {name}: {source}")]
    Encode {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// serde's reason.
        source: serde_json::Error,
    },
}

/// The objects of every cluster in the specs.
pub fn desired(specs: &Specs, outputs: &CloudOutputs) -> Result<Vec<ClusterObjects>, ObjectsError> {
    specs.clusters.iter().map(|c| cluster_objects(&specs.environment, c, outputs)).collect()
}

fn cluster_objects(env: &Environment, c: &Cluster, outputs: &CloudOutputs) -> Result<ClusterObjects, ObjectsError> {
    let ns = cluster_namespace(c);
    let labels: BTreeMap<String, String> =
        [(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()), (LABEL_CLUSTER.to_owned(), c.name.clone())].into_iter().collect();
    let (identity_annotation, identity_value) = identity(env, c, outputs)?;
    let mut pod_labels = BTreeMap::from([(LABEL_CLUSTER.to_owned(), c.name.clone())]);
    if env.cloud == Cloud::Azure {
        pod_labels.insert("azure.workload.identity/use".into(), "true".into());
    }

    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(ANNOTATION_DELETION_POLICY.to_owned(), c.deletion_policy.as_str().to_owned())])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let ksa = cluster_service_account(env, c);
    let service_account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(ksa.clone()),
            namespace: Some(ns.clone()),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(identity_annotation.to_owned(), identity_value)])),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    let (node_selector, tolerations) = placement(env, c);
    let group = |x: &Component| ComponentSpec {
        node_groups: vec![NodeGroupSpec {
            name: "default".into(),
            replicas: x.replicas,
            template: PodTemplate {
                metadata: TemplateMeta { labels: pod_labels.clone() },
                spec: PodSpecSubset {
                    service_account_name: ksa.clone(),
                    resources: resources(x),
                    node_selector: node_selector.clone(),
                    tolerations: tolerations.clone(),
                },
            },
        }],
    };
    let risingwave = RisingWave {
        api_version: "risingwave.risingwavelabs.com/v1alpha1",
        kind: "RisingWave",
        metadata: ObjectMeta { name: Some(c.name.clone()), namespace: Some(ns.clone()), labels: Some(labels), ..ObjectMeta::default() },
        spec: RisingWaveSpec {
            image: c.image.clone(),
            components: Components {
                meta: group(&c.meta),
                frontend: group(&c.frontend),
                compute: group(&c.compute),
                compactor: group(&c.compactor),
            },
            state_store: state_store(env, c),
            meta_store: meta_store(&c.meta_store),
        },
    };
    let object = |kind, namespace: Option<&str>, name: String, body: Result<Value, serde_json::Error>| -> Result<Object, ObjectsError> {
        let body = body.map_err(|source| ObjectsError::Encode { kind: ObjectKind::as_str(kind), name: name.clone(), source })?;
        Ok(Object { kind, namespace: namespace.map(str::to_owned), name, body })
    };
    Ok(ClusterObjects {
        cluster: c.name.clone(),
        namespace: ns.clone(),
        deletion_policy: c.deletion_policy,
        ignore_drift: c.ignore_drift,
        objects: vec![
            object(ObjectKind::Namespace, None, ns.clone(), serde_json::to_value(&namespace))?,
            object(ObjectKind::ServiceAccount, Some(&ns), ksa, serde_json::to_value(&service_account))?,
            object(ObjectKind::RisingWave, Some(&ns), c.name.clone(), serde_json::to_value(&risingwave))?,
        ],
    })
}

/// The environment-wide objects byoc applies into the cluster besides the sidecar: on EKS
/// the default StorageClass ([`crate::expand::eks::STORAGE_CLASS`]), which the plan shows as
/// `k8s.storage-class/gp3`. Labelled as byoc's, so the live plan finds it.
pub fn environment_objects(env: &Environment) -> Vec<Value> {
    use crate::expand::eks;
    if env.cloud != Cloud::Aws {
        return Vec::new();
    }
    let parameters: serde_json::Map<String, Value> =
        eks::STORAGE_CLASS_PARAMETERS.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect();
    vec![serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": eks::STORAGE_CLASS,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY},
            "annotations": {eks::DEFAULT_CLASS_ANNOTATION: "true"},
        },
        "provisioner": eks::STORAGE_CLASS_PROVISIONER,
        "parameters": parameters,
        "volumeBindingMode": eks::STORAGE_CLASS_BINDING,
        "reclaimPolicy": eks::STORAGE_CLASS_RECLAIM,
        "allowVolumeExpansion": true,
    })]
}

/// The service-account annotation binding the cluster's pods to its cloud identity.
fn identity(env: &Environment, c: &Cluster, outputs: &CloudOutputs) -> Result<(&'static str, String), ObjectsError> {
    Ok(match env.cloud {
        Cloud::Aws => (
            "eks.amazonaws.com/role-arn",
            crate::expand::names::aws::arn(
                &env.region,
                &format!("iam::{}:role{}{}", env.account, aws::cluster_role_path(&env.name), aws::cluster_role_name(env, c)),
            ),
        ),
        Cloud::Gcp => {
            ("iam.gke.io/gcp-service-account", format!("{}@{}.iam.gserviceaccount.com", gcp::cluster_account_id(env, c), env.account))
        }
        Cloud::Azure => {
            let id = ResourceId::new(Kind::AzureManagedIdentity, &cluster_namespace(c)).to_string();
            let client_id = outputs.get(&id).ok_or_else(|| ObjectsError::MissingOutput { cluster: c.name.clone(), id: id.clone() })?;
            ("azure.workload.identity/client-id", client_id.clone())
        }
    })
}

/// Node selector and tolerations for a cluster pinned to a node group: the group's label,
/// and a toleration for each of its taints (otherwise no pod could schedule there).
fn placement(env: &Environment, c: &Cluster) -> (BTreeMap<String, String>, Vec<Toleration>) {
    let Some(group) = c.node_group.as_ref().and_then(|g| env.kubernetes.node_groups.iter().find(|n| &n.name == g)) else {
        return (BTreeMap::new(), Vec::new());
    };
    let tolerations = group
        .taints
        .iter()
        .map(|t| Toleration {
            key: Some(t.key.clone()),
            operator: Some("Equal".into()),
            value: Some(t.value.clone()),
            effect: Some(t.effect.as_str().into()),
            ..Toleration::default()
        })
        .collect();
    (BTreeMap::from([(LABEL_NODE_GROUP.to_owned(), group.name.clone())]), tolerations)
}

fn resources(x: &Component) -> ResourceRequirements {
    // Requests equal limits: RisingWave sizes its memory from the limit, and equal values
    // give the pods the Guaranteed QoS class.
    let amounts = BTreeMap::from([
        ("cpu".to_owned(), Quantity(format_cpu(x.cpu_millis))),
        ("memory".to_owned(), Quantity(format_memory(x.memory_bytes))),
    ]);
    ResourceRequirements { limits: Some(amounts.clone()), requests: Some(amounts), ..ResourceRequirements::default() }
}

fn state_store(env: &Environment, c: &Cluster) -> StateStore {
    let mut s = StateStore { data_directory: c.state_prefix.clone(), s3: None, gcs: None, azure_blob: None };
    match env.cloud {
        Cloud::Aws => {
            s.s3 = Some(S3 {
                bucket: env.data_bucket.clone(),
                region: env.region.clone(),
                credentials: Credentials { use_service_account: true },
            });
        }
        Cloud::Gcp => {
            s.gcs = Some(Gcs {
                bucket: env.data_bucket.clone(),
                root: String::new(),
                credentials: GcsCredentials { use_workload_identity: true },
            });
        }
        Cloud::Azure => {
            s.azure_blob = Some(AzureBlob {
                container: env.data_bucket.clone(),
                root: String::new(),
                endpoint: format!("https://{}.blob.core.windows.net", azure::storage_account_name(env)),
                credentials: Credentials { use_service_account: true },
            });
        }
    }
    s
}

fn meta_store(m: &MetaStore) -> MetaStoreSpec {
    match m {
        MetaStore::Sqlite => MetaStoreSpec { sqlite: Some(Sqlite { path: "/risingwave/data/meta.db".into() }), postgresql: None },
        MetaStore::Postgresql { host, port, database, credentials_secret } => MetaStoreSpec {
            sqlite: None,
            postgresql: Some(Postgresql {
                host: host.clone(),
                port: *port,
                database: database.clone(),
                credentials: SecretRef { secret_name: credentials_secret.clone() },
            }),
        },
    }
}

// The typed subset of the risingwave-operator's `RisingWave` (v1alpha1): the fields we set.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RisingWave {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    spec: RisingWaveSpec,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RisingWaveSpec {
    image: String,
    components: Components,
    state_store: StateStore,
    meta_store: MetaStoreSpec,
}

#[derive(Serialize)]
struct Components {
    meta: ComponentSpec,
    frontend: ComponentSpec,
    compute: ComponentSpec,
    compactor: ComponentSpec,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ComponentSpec {
    node_groups: Vec<NodeGroupSpec>,
}

#[derive(Serialize)]
struct NodeGroupSpec {
    name: String,
    replicas: u32,
    template: PodTemplate,
}

#[derive(Serialize)]
struct PodTemplate {
    metadata: TemplateMeta,
    spec: PodSpecSubset,
}

#[derive(Serialize)]
struct TemplateMeta {
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecSubset {
    service_account_name: String,
    resources: ResourceRequirements,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    node_selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tolerations: Vec<Toleration>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StateStore {
    data_directory: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    s3: Option<S3>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gcs: Option<Gcs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    azure_blob: Option<AzureBlob>,
}

#[derive(Serialize)]
struct S3 {
    bucket: String,
    region: String,
    credentials: Credentials,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Credentials {
    use_service_account: bool,
}

#[derive(Serialize)]
struct Gcs {
    bucket: String,
    root: String,
    credentials: GcsCredentials,
}

/// `spec.stateStore.gcs.credentials`: the operator reads `useWorkloadIdentity` here only;
/// anywhere else a real API server prunes it and the pods get no identity.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GcsCredentials {
    use_workload_identity: bool,
}

#[derive(Serialize)]
struct AzureBlob {
    container: String,
    root: String,
    endpoint: String,
    credentials: Credentials,
}

#[derive(Serialize)]
struct MetaStoreSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    sqlite: Option<Sqlite>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postgresql: Option<Postgresql>,
}

#[derive(Serialize)]
struct Sqlite {
    path: String,
}

#[derive(Serialize)]
struct Postgresql {
    host: String,
    port: u16,
    database: String,
    credentials: SecretRef,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretRef {
    secret_name: String,
}
