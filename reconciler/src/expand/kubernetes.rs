//! Per RisingWave cluster, the Kubernetes objects in its own namespace: the namespace, the
//! service account bound to the cluster's cloud identity, and the risingwave-operator's
//! `RisingWave` resource. The frontend Service RWProxy routes to is the operator's.

use super::{Foundation, WorkloadIdentity, cluster_namespace, cluster_service_account};
use crate::resource::{Graph, Kind, Map, Resource, Value};
use crate::spec::quantity::{format_cpu, format_memory};
use crate::spec::{Cloud, Cluster, Component, Environment, MetaStore};

/// Label on every object the reconciler owns in Kubernetes.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`] on everything the reconciler owns.
pub const MANAGED_BY: &str = "byoc";
/// Label naming the RisingWave cluster an object belongs to.
pub const LABEL_CLUSTER: &str = "byoc.risingwave.dev/cluster";

pub(super) fn cluster(
    env: &Environment,
    f: &Foundation,
    c: &Cluster,
    identity: &WorkloadIdentity,
    protection: Option<&str>,
    g: &mut Graph,
) {
    let ns_name = cluster_namespace(c);
    let labels = Value::map([(LABEL_MANAGED_BY, MANAGED_BY.into()), (LABEL_CLUSTER, c.name.as_str().into())]);
    let protect = |r: Resource| r.protect_if(protection);

    let ns = g.add(protect(
        Resource::new(Kind::K8sNamespace, &c.name)
            .set("name", ns_name.as_str())
            .set("labels", labels.clone())
            .set("deletionPolicy", c.deletion_policy.as_str())
            // A property, not just an ordering: replacing the Kubernetes cluster recreates
            // everything in it, and the plan must say so.
            .set("kubernetesCluster", Value::reference(&f.kube_cluster)),
    ));
    let sa = g.add(protect(
        Resource::new(Kind::K8sServiceAccount, &c.name)
            .set("namespace", Value::reference(&ns))
            .set("name", cluster_service_account(env, c))
            .set("labels", labels.clone())
            .set("annotations", Value::Map(identity.annotations.clone()))
            .after(&identity.identity),
    ));

    let component = |x: &Component| {
        Value::map([
            ("replicas", x.replicas.into()),
            ("cpu", format_cpu(x.cpu_millis).into()),
            ("memory", format_memory(x.memory_bytes).into()),
        ])
    };
    let state_store = match env.cloud {
        Cloud::Aws => Value::map([(
            "s3",
            Value::map([
                ("bucket", env.data_bucket.as_str().into()),
                ("region", env.region.as_str().into()),
                ("credentials", Value::map([("useServiceAccount", true.into())])),
            ]),
        )]),
        Cloud::Gcp => Value::map([(
            "gcs",
            Value::map([
                ("bucket", env.data_bucket.as_str().into()),
                ("root", "".into()),
                ("credentials", Value::map([("useWorkloadIdentity", true.into())])),
            ]),
        )]),
        Cloud::Azure => Value::map([(
            "azureBlob",
            Value::map([
                ("container", env.data_bucket.as_str().into()),
                ("endpoint", Value::reference(&super::ResourceId::new(Kind::AzureStorageAccount, "data"))),
                ("credentials", Value::map([("useServiceAccount", true.into())])),
            ]),
        )]),
    };
    let meta_store = match &c.meta_store {
        MetaStore::Sqlite => Value::map([("sqlite", Value::map([("path", "/risingwave/data/meta.db".into())]))]),
        MetaStore::Postgresql { host, port, database, credentials_secret } => Value::map([(
            "postgresql",
            Value::map([
                ("host", host.as_str().into()),
                ("port", (*port).into()),
                ("database", database.as_str().into()),
                ("credentialsSecret", credentials_secret.as_str().into()),
            ]),
        )]),
    };
    let mut pod_labels: Map = identity.pod_labels.clone();
    pod_labels.insert(LABEL_CLUSTER, c.name.as_str().into());
    g.add(protect(
        Resource::new(Kind::K8sRisingWave, &c.name)
            .set("namespace", Value::reference(&ns))
            .set("name", c.name.as_str())
            .set("image", c.image.as_str())
            .set(
                "components",
                Value::map([
                    ("meta", component(&c.meta)),
                    ("frontend", component(&c.frontend)),
                    ("compute", component(&c.compute)),
                    ("compactor", component(&c.compactor)),
                ]),
            )
            .set("stateStore", Value::map([("dataDirectory", c.state_prefix.as_str().into()), ("backend", state_store)]))
            .set("metaStore", meta_store)
            .set("serviceAccount", Value::reference(&sa))
            .set("podLabels", Value::Map(pod_labels))
            .set(
                "nodeSelector",
                match &c.node_group {
                    Some(group) => Value::map([(super::LABEL_NODE_GROUP, group.as_str().into())]),
                    None => Value::Map(Map::new()),
                },
            )
            // Pods must tolerate the taints of the node group they are pinned to.
            .set(
                "tolerations",
                env.kubernetes
                    .node_groups
                    .iter()
                    .find(|g| c.node_group.as_ref() == Some(&g.name))
                    .map_or(Value::List(Vec::new()), super::taints),
            )
            .set("labels", labels),
    ));
    // No Service: the operator creates and owns `<cluster>-frontend`, which routes reach.
}
