//! `expand(specs) -> Graph`: every resource the environment's cloud needs, and per
//! RisingWave cluster its workload identity and Kubernetes objects. Pure: no I/O.

pub(crate) mod aws;
pub(crate) mod azure;
pub mod eks;
pub(crate) mod gcp;
pub(crate) mod kubernetes;
pub mod names;
pub mod permissions;

use crate::resource::{Graph, Key, Kind, Map, Resource, ResourceId, Value};
use crate::spec::{Cloud, Cluster, DeletionPolicy, Environment, Specs};

/// Tag/label keys the reconciler owns on every cloud resource; observe finds resources by them.
pub const TAG_ENVIRONMENT: &str = "byoc.risingwave.dev/environment";
/// See [`TAG_ENVIRONMENT`].
pub const TAG_MANAGED_BY: &str = "byoc.risingwave.dev/managed-by";
/// See [`TAG_ENVIRONMENT`].
pub const TAG_RESOURCE: &str = "byoc.risingwave.dev/resource";

/// Namespace and service account the reconciler and proxy run as.
pub const AGENT_NAMESPACE: &str = "byoc-system";
/// See [`AGENT_NAMESPACE`].
pub const AGENT_SERVICE_ACCOUNT: &str = "byoc";
/// TCP port of the agent's private endpoint.
pub const AGENT_PORT: u16 = 8443;
/// The agent's and the proxy's `LoadBalancer` Services (`manifests/base/services.yaml`),
/// from which each cloud's controller makes the internal load balancers.
pub const AGENT_SERVICE: &str = "byoc-agent";
/// See [`AGENT_SERVICE`].
pub const PROXY_SERVICE: &str = "rwproxy";
/// The public proxy's Service (`manifests/components/public-proxy/service.yaml`), there
/// only when the spec has `publicProxy`.
pub const PUBLIC_PROXY_SERVICE: &str = "rwproxy-public";

/// What the environment's expansion hands to the per-cluster expansion.
pub(crate) struct Foundation {
    /// The managed Kubernetes cluster.
    pub kube_cluster: ResourceId,
    /// The cluster-data bucket (or container).
    pub data_bucket: ResourceId,
    /// Cloud-specific anchor for workload identity (OIDC provider, GKE cluster, AKS issuer).
    pub identity_issuer: ResourceId,
}

/// How a cluster's Kubernetes service account maps to its cloud identity.
pub(crate) struct WorkloadIdentity {
    /// Annotations on the service account.
    pub annotations: Map,
    /// Labels on the pods (Azure needs one).
    pub pod_labels: Map,
    /// The identity resource.
    pub identity: ResourceId,
}

/// Expands two revisions at once, on two cores: a pull request's base and head.
pub fn expand_pair(base: Option<&Specs>, head: &Specs) -> (Graph, Graph) {
    std::thread::scope(|scope| {
        let base_graph = scope.spawn(move || base.map(expand).unwrap_or_default());
        let head_graph = expand(head);
        // expand() does not panic on validated specs; should it, run it here to report it.
        let base_graph = base_graph.join().unwrap_or_else(|_| base.map(expand).unwrap_or_default());
        (base_graph, head_graph)
    })
}

/// Expands validated specs into the desired resource graph.
pub fn expand(specs: &Specs) -> Graph {
    let mut graph = Graph::default();
    let env = &specs.environment;
    let foundation = match env.cloud {
        Cloud::Aws => aws::environment(env, &mut graph),
        Cloud::Gcp => gcp::environment(env, &mut graph),
        Cloud::Azure => azure::environment(env, &mut graph),
    };
    for cluster in &specs.clusters {
        let protection = retain_reason(cluster);
        let identity = match env.cloud {
            Cloud::Aws => aws::cluster_identity(env, &foundation, cluster, protection.as_deref(), &mut graph),
            Cloud::Gcp => gcp::cluster_identity(env, &foundation, cluster, protection.as_deref(), &mut graph),
            Cloud::Azure => azure::cluster_identity(env, &foundation, cluster, protection.as_deref(), &mut graph),
        };
        kubernetes::cluster(env, &foundation, cluster, &identity, protection.as_deref(), &mut graph);
    }
    graph
}

/// Why a cluster's resources are kept when it leaves the specs, if they are.
fn retain_reason(cluster: &Cluster) -> Option<String> {
    (cluster.deletion_policy == DeletionPolicy::Retain).then(|| {
        format!("cluster {} has deletionPolicy Retain; to delete it, first commit deletionPolicy: Delete, then remove it", cluster.name)
    })
}

/// A cloud resource with its `tags`: the user's, then the reconciler's ownership tags
/// (AWS and Azure, each under the tag names it allows; GCP labels have their own
/// character rules, see `gcp.rs`).
pub(crate) fn tagged(env: &Environment, kind: Kind, name: &str) -> Resource {
    let r = Resource::new(kind, name);
    let map = names::ownership_tags(env, &r);
    r.set("tags", Value::Map(map))
}

/// The namespace a cluster's pods run in (and, but on GCP, their service account's name).
pub(crate) fn cluster_namespace(cluster: &Cluster) -> String {
    rwproxy::routes::cluster_namespace(&cluster.name)
}

/// The Kubernetes service account a cluster's pods run as: `rw-<cluster>`, like its
/// namespace; on GCP `byoc-<env>`. Every GKE cluster of a project shares one
/// workload-identity pool, so `<project>.svc.id.goog[rw-<c>/rw-<c>]` would name the pods of
/// a cluster `c` in every environment of the project, and each could act as the others'
/// Google account; with the environment in the name the member is this environment's.
/// (IRSA and Azure federated credentials trust one cluster's issuer, so they need not.)
pub(crate) fn cluster_service_account(env: &Environment, cluster: &Cluster) -> String {
    match env.cloud {
        Cloud::Gcp => format!("byoc-{}", env.name),
        Cloud::Aws | Cloud::Azure => cluster_namespace(cluster),
    }
}

/// Label every node carries with its node group's name; a cluster pinned to a node group
/// selects its nodes by it.
pub const LABEL_NODE_GROUP: &str = "byoc.risingwave.dev/node-group";

/// A node group's taints as a list of `{key, value, effect}`.
pub(crate) fn taints(group: &crate::spec::NodeGroup) -> Value {
    Value::List(
        group
            .taints
            .iter()
            .map(|t| Value::map([("key", t.key.as_str().into()), ("value", t.value.as_str().into()), ("effect", t.effect.as_str().into())]))
            .collect(),
    )
}

/// A node group's labels: the user's plus [`LABEL_NODE_GROUP`].
pub(crate) fn node_labels(group: &crate::spec::NodeGroup) -> Value {
    let mut map: Map = group.labels.iter().map(|(k, v)| (Key::Owned(k.clone()), Value::from(v))).collect();
    map.insert(LABEL_NODE_GROUP, Value::from(&group.name));
    Value::Map(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Kind;

    fn example(cloud: &str) -> Specs {
        let dir = format!("{}/../examples/{cloud}", env!("CARGO_MANIFEST_DIR"));
        let files = rwproxy::specfiles::read_dir(std::path::Path::new(&dir)).expect("example readable");
        crate::spec::load::load(&dir, &files).unwrap_or_else(|e| panic!("{cloud}: {e:?}"))
    }

    #[test]
    fn every_reference_resolves_and_the_graph_is_acyclic() {
        for cloud in ["aws", "gcp", "azure"] {
            let g = expand(&example(cloud));
            for r in g.resources.values() {
                for dep in &r.depends_on {
                    assert!(g.resources.contains_key(dep), "{cloud}: {} depends on missing {dep}", r.id);
                }
            }
            let order = crate::plan::topological(&g);
            let pos: std::collections::BTreeMap<&ResourceId, usize> = order.iter().enumerate().map(|(i, id)| (id, i)).collect();
            for r in g.resources.values() {
                for dep in &r.depends_on {
                    assert!(pos[dep] < pos[&r.id], "{cloud}: cycle through {} and {dep}", r.id);
                }
            }
        }
    }

    /// Nodes in a private subnet that has no route out yet never join (CREATE_FAILED):
    /// every AWS node group waits for every private route table, whichever NAT mode.
    #[test]
    fn aws_node_groups_wait_for_the_private_routes() {
        let mut specs = example("aws");
        for mode in [crate::spec::NatGateways::Single, crate::spec::NatGateways::PerZone] {
            specs.environment.network.nat_gateways = mode;
            let g = expand(&specs);
            let tables: Vec<&ResourceId> = g
                .resources
                .values()
                .filter(|r| r.kind == Kind::AwsRouteTable && r.id.as_str().contains("/private"))
                .map(|r| &r.id)
                .collect();
            assert_eq!(tables.len(), if mode == crate::spec::NatGateways::Single { 1 } else { 3 }, "{mode:?}");
            for ng in g.resources.values().filter(|r| r.kind == Kind::AwsEksNodeGroup) {
                for t in &tables {
                    assert!(ng.depends_on.contains(*t), "{mode:?}: {} does not wait for {t}", ng.id);
                }
            }
        }
    }

    fn g_env(cloud: &str) -> String {
        example(cloud).environment.name
    }

    #[test]
    fn the_services_named_here_are_the_manifests() {
        let services = include_str!("../../../manifests/base/services.yaml");
        for name in [AGENT_SERVICE, PROXY_SERVICE] {
            assert!(services.contains(&format!("  name: {name}\n")), "manifests/base/services.yaml has no Service {name}");
        }
    }

    #[test]
    fn cloud_resources_carry_ownership_tags_and_buckets_are_protected() {
        for cloud in ["aws", "gcp", "azure"] {
            let g = expand(&example(cloud));
            // GCP IAM bindings are entries in a policy, with nowhere to mark them: the
            // inventory records them.
            // What Azure cannot tag is proven byoc's by name and inventory (names::azure).
            // The AWS Load Balancer Controller tags the NLBs it makes with its own tags, by
            // which byoc finds them.
            let untagged =
                |r: &&Resource| matches!(r.kind, Kind::GcpIamBinding | Kind::AwsServiceNlb) || names::azure::UNTAGGED.contains(&r.kind);
            for r in g.resources.values().filter(|r| !r.kind.as_str().starts_with("k8s.") && !untagged(r)) {
                let owner = match r.properties.get("tags").or_else(|| r.properties.get("labels")) {
                    Some(Value::Map(m)) => m.get(TAG_MANAGED_BY).or_else(|| m.get("byoc-managed-by")).cloned(),
                    // What GCP gives no labels says its owner in its description.
                    _ => r
                        .properties
                        .get("description")
                        .and_then(Value::as_str)
                        .and_then(names::gcp::owner_of)
                        .filter(|(env, id)| *env == g_env(cloud) && *id == r.id.as_str())
                        .map(|_| Value::from("byoc")),
                };
                assert_eq!(owner, Some(Value::from("byoc")), "{cloud}: {} has no ownership tag", r.id);
            }
            for r in g.resources.values().filter(|r| cloud == "azure" && names::azure::UNTAGGED.contains(&r.kind)) {
                assert!(r.properties.get("tags").is_none(), "{cloud}: Azure refuses tags on {}", r.id);
            }
            let buckets = g.resources.values().filter(|r| matches!(r.kind, Kind::AwsS3Bucket | Kind::GcpBucket | Kind::AzureBlobContainer));
            assert_eq!(buckets.clone().count(), 2, "{cloud}: want a data and a state bucket");
            assert!(buckets.into_iter().all(|b| b.protection.is_some()), "{cloud}");
        }
    }

    #[test]
    fn service_accounts_carry_the_clouds_workload_identity_annotation() {
        for (cloud, key) in [
            ("aws", "eks.amazonaws.com/role-arn"),
            ("gcp", "iam.gke.io/gcp-service-account"),
            ("azure", "azure.workload.identity/client-id"),
        ] {
            let g = expand(&example(cloud));
            let sa = &g.resources[&ResourceId::new(Kind::K8sServiceAccount, "analytics")];
            match sa.properties.get("annotations") {
                Some(Value::Map(m)) => assert!(matches!(m.get(key), Some(Value::Ref(_))), "{cloud}: {m:?}"),
                other => panic!("{cloud}: {other:?}"),
            }
        }
    }

    #[test]
    fn retained_clusters_are_protected_and_deletable_ones_are_not() {
        let g = expand(&example("aws"));
        assert!(g.resources[&ResourceId::new(Kind::K8sRisingWave, "analytics")].protection.is_some());
        assert!(g.resources[&ResourceId::new(Kind::AwsIamRole, "rw-analytics")].protection.is_some());
        assert!(g.resources[&ResourceId::new(Kind::K8sRisingWave, "ingest")].protection.is_none());
    }
}
