//! GCP: a VPC network with the nodes subnetwork (secondary ranges for pods and services),
//! the Private Service Connect NAT subnetwork, firewall rules and Cloud NAT; a regional,
//! VPC-native GKE cluster on a release channel with node pools running as a least-privilege
//! node service account; GCS buckets; a GKE `ServiceAttachment` per internal load balancer;
//! Google service accounts bound through GKE workload identity.
//!
//! Ownership. Only GKE clusters, node pools and buckets carry labels in GCP; networks,
//! subnetworks, firewalls, routers, service attachments and service accounts do not, so
//! they cannot be found by label. Each of those is named from the environment
//! ([`names::gcp`]), looked up by that name, and proven ours by the ownership line in its
//! `description` ([`names::gcp::ownership_description`]) and by the inventory; IAM bindings
//! are ours when the inventory records them and their member is one of our accounts.
//!
//! Load balancers (`../shared/DESIGN.md`, "Load balancers and private connectivity"): GKE
//! makes the internal passthrough load balancers from the agent's and the proxy's
//! `LoadBalancer` Services (and the external one from the public proxy's), so the graph
//! has no forwarding rules, backend services or health checks of its own. It holds what
//! those need: the subnetworks, a firewall rule for Google's health-check ranges, and per
//! internal Service a `ServiceAttachment` publishing it through Private Service Connect on
//! the PSC subnetwork, accepting only the control plane's projects.

use super::permissions::{GCP_AGENT_STATE_ROLES, GCP_CLUSTER_ROLES, GCP_NODE_ROLES, gcp_agent_role, gcp_agent_roles};
use super::{
    AGENT_NAMESPACE, AGENT_PORT, AGENT_SERVICE, AGENT_SERVICE_ACCOUNT, Foundation, PROXY_SERVICE, WorkloadIdentity, cluster_namespace,
    cluster_service_account, names,
};
use crate::resource::{Graph, Key, Kind, Map, Resource, ResourceId, Value};
use crate::spec::{Cluster, Environment, Tier};

/// Source ranges of Google's health checks for passthrough network load balancers.
pub const HEALTH_CHECK_RANGES: [&str; 2] = ["35.191.0.0/16", "130.211.0.0/22"];
/// Names of the nodes subnetwork's secondary ranges, which the GKE cluster names.
pub const PODS_RANGE: &str = "pods";
/// See [`PODS_RANGE`].
pub const SERVICES_RANGE: &str = "services";
/// Id of the Private Service Connect NAT subnetwork; validation keeps subnets from taking it.
pub const PSC_SUBNET: &str = "psc";
/// GKE's dataplane: Dataplane V2 (eBPF), which enforces NetworkPolicy.
pub const DATAPATH_PROVIDER: &str = "ADVANCED_DATAPATH";
/// GKE release channel: patch versions of the spec's minor arrive with Google's fixes,
/// and the minor moves only when the spec says so.
pub const RELEASE_CHANNEL: &str = "REGULAR";
/// Connections one consumer project may hold to one service attachment.
pub const PSC_CONNECTION_LIMIT: u16 = 10;
/// Days a noncurrent version of a data-bucket object is kept: compaction rewrites objects
/// all the time, and without a limit the old versions grow storage without bound.
pub const NONCURRENT_VERSION_DAYS: u16 = 7;

/// A resource that carries labels (GKE cluster, node pool, bucket): the user's tags and
/// byoc's ownership labels, each written to GCP's label rules.
fn labelled(env: &Environment, kind: Kind, name: &str) -> Resource {
    let r = Resource::new(kind, name);
    let mut labels: Map =
        env.tags.iter().map(|(k, v)| (Key::Owned(names::gcp::label_key(k)), Value::from(names::gcp::label_value(v)))).collect();
    labels.insert("byoc-environment", Value::from(names::gcp::label_value(&env.name)));
    labels.insert("byoc-managed-by", Value::from("byoc"));
    labels.insert("byoc-resource", Value::from(names::gcp::label_value(r.id.as_str())));
    r.set("labels", Value::Map(labels))
}

/// A resource GCP gives no labels: named by the caller from the environment, and marked
/// ours in its `description`.
fn described(env: &Environment, kind: Kind, name: &str) -> Resource {
    let r = Resource::new(kind, name);
    let description = names::gcp::ownership_description(&env.name, r.id.as_str());
    r.set("description", description)
}

fn firewall(env: &Environment, network: &ResourceId, role: &str, sources: Value, allow: Value) -> Resource {
    described(env, Kind::GcpFirewall, role)
        .set("name", names::gcp::compute(&env.name, role))
        .set("network", Value::reference(network))
        .set("direction", "INGRESS")
        .set("sourceRanges", sources)
        .set("allow", allow)
}

pub(super) fn environment(env: &Environment, g: &mut Graph) -> Foundation {
    let k = &env.kubernetes;
    let network = g.add(
        described(env, Kind::GcpNetwork, "main").set("name", names::gcp::resource(&env.name, None)).set("autoCreateSubnetworks", false),
    );
    let mut private = Vec::new();
    for s in env.network.subnets.iter().filter(|s| s.tier == Tier::Private) {
        let mut subnet = described(env, Kind::GcpSubnetwork, &s.name)
            .set("name", names::gcp::compute(&env.name, &s.name))
            .set("network", Value::reference(&network))
            .set("region", &env.region)
            .set("cidr", s.cidr.to_string())
            .set("purpose", "PRIVATE")
            .set("privateIpGoogleAccess", true);
        // The first private subnetwork holds the nodes, and the secondary ranges GKE
        // takes its pod and service addresses from.
        if private.is_empty() {
            let range = |name: &str, cidr: Option<ipnet::IpNet>| {
                Value::map([("name", name.into()), ("cidr", cidr.map(|c| c.to_string()).unwrap_or_default().into())])
            };
            subnet = subnet.set("secondaryRanges", Value::List(vec![range(PODS_RANGE, k.pod_cidr), range(SERVICES_RANGE, k.service_cidr)]));
        }
        private.push(g.add(subnet));
    }
    // Validation guarantees a private subnet; the id is stable even if it did not.
    let nodes_subnet = private.first().cloned().unwrap_or_else(|| ResourceId::new(Kind::GcpSubnetwork, "private"));
    let psc_subnet = g.add(
        described(env, Kind::GcpSubnetwork, PSC_SUBNET)
            .set("name", names::gcp::compute(&env.name, PSC_SUBNET))
            .set("network", Value::reference(&network))
            .set("region", &env.region)
            .set("cidr", env.network.private_service_connect.map(|c| c.to_string()).unwrap_or_default())
            .set("purpose", "PRIVATE_SERVICE_CONNECT"),
    );

    let mut internal = vec![env.network.cidr.to_string()];
    internal.extend(k.pod_cidr.map(|c| c.to_string()));
    g.add(firewall(env, &network, "internal", Value::strings(&internal), Value::strings(["tcp", "udp", "icmp"])));
    // Google's probes reach the nodes (kube-proxy's health port, a Local Service's health
    // node port) or, with container-native load balancing, the pods' own ports.
    g.add(firewall(
        env,
        &network,
        "health-checks",
        Value::strings(HEALTH_CHECK_RANGES),
        Value::strings([
            format!("tcp:{AGENT_PORT}"),
            format!("tcp:{}", env.proxy_port),
            "tcp:10256".to_owned(),
            "tcp:30000-32767".to_owned(),
        ]),
    ));
    if let Some(allowed) = &env.public_proxy {
        g.add(firewall(env, &network, "proxy-public", Value::strings(allowed), Value::strings([format!("tcp:{}", env.proxy_port)])));
    }
    g.add(
        described(env, Kind::GcpRouterNat, "main")
            .set("name", names::gcp::compute(&env.name, "nat"))
            .set("network", Value::reference(&network))
            .set("region", &env.region)
            .set("natIpAllocation", "AUTO_ONLY"),
    );

    let gke = g.add(
        labelled(env, Kind::GcpGkeCluster, "main")
            .set("name", names::gcp::resource(&env.name, None))
            .set("location", &env.region)
            .set("version", &k.version)
            .set("releaseChannel", RELEASE_CHANNEL)
            .set("network", Value::reference(&network))
            .set("subnetwork", Value::reference(&nodes_subnet))
            .set("ipAllocation", Value::map([("podsRange", PODS_RANGE.into()), ("servicesRange", SERVICES_RANGE.into())]))
            .set("privateNodes", true)
            .set("privateEndpoint", true)
            .set("workloadPool", format!("{}.svc.id.goog", env.account))
            // GKE Dataplane V2: without it (or the Calico add-on) GKE Standard enforces no
            // NetworkPolicy, and the sidecar's (agent port from the PSC NAT subnet only, the
            // SQL port from the allowed CIDRs) would be stored and ignored. GKE sets it at
            // creation only.
            .set("datapathProvider", DATAPATH_PROVIDER),
    );

    // Nodes run as an account of their own with the node roles only, not as the
    // project's Compute Engine default account (Editor on the whole project).
    let node_account = g.add(
        described(env, Kind::GcpServiceAccount, "nodes")
            .set("accountId", names::gcp::service_account(&env.name, "nodes"))
            .set("project", &env.account),
    );
    project_bindings(env, g, "nodes", &node_account, GCP_NODE_ROLES);
    let zones = env.network.zones.len().max(1) as u32;
    for ng in &k.node_groups {
        g.add(
            labelled(env, Kind::GcpNodePool, &ng.name)
                .set("cluster", Value::reference(&gke))
                .set("machineType", &ng.machine_type)
                .set("zones", Value::strings(&env.network.zones))
                // A regional pool's min and max count per zone; the spec counts nodes
                // in the whole pool, which the total limits say.
                .set(
                    "autoscaling",
                    Value::map([("totalMinNodes", ng.min.into()), ("totalMaxNodes", ng.max.into()), ("locationPolicy", "BALANCED".into())]),
                )
                .set("initialNodesPerZone", ng.min.div_ceil(zones))
                .set("serviceAccount", Value::reference(&node_account))
                .set("nodeLabels", super::node_labels(ng))
                .set("taints", super::taints(ng))
                .set("workloadMetadata", "GKE_METADATA"),
        );
    }
    let bucket = |role: &str, name: &str| {
        labelled(env, Kind::GcpBucket, role)
            .set("name", name)
            .set("location", &env.region)
            .set("versioning", true)
            .set("uniformBucketLevelAccess", true)
            .set("publicAccessPrevention", "enforced")
            .protect(format!(
                "the {role} bucket holds data; the reconciler never deletes or replaces buckets, empty and delete it by hand if you mean to"
            ))
    };
    let data = g.add(bucket("data", &env.data_bucket).set(
        "lifecycle",
        Value::List(vec![Value::map([("action", "Delete".into()), ("daysSinceNoncurrentTime", NONCURRENT_VERSION_DAYS.into())])]),
    ));
    let state = g.add(bucket("state", &env.state_bucket));

    let accept: Vec<Value> = env
        .control_plane_principals
        .iter()
        .map(|p| Value::map([("project", p.as_str().into()), ("connectionLimit", PSC_CONNECTION_LIMIT.into())]))
        .collect();
    for (role, service) in [("agent", AGENT_SERVICE), ("proxy", PROXY_SERVICE)] {
        g.add(
            described(env, Kind::GcpServiceAttachment, role)
                .set("name", names::gcp::compute(&env.name, role))
                .set("namespace", AGENT_NAMESPACE)
                .set("service", service)
                .set("natSubnets", Value::List(vec![Value::reference(&psc_subnet)]))
                .set("connectionPreference", "ACCEPT_MANUAL")
                .set("consumerAllowList", Value::List(accept.clone()))
                // The SQL path sends a PROXY v2 header with the consumer's address (PSC
                // rewrites the source to its NAT subnet), so RWProxy's CIDR allowlists see
                // the client; the agent authenticates by certificate and reads no header.
                .set("proxyProtocol", role == "proxy")
                .set("kubernetesCluster", Value::reference(&gke)),
        );
    }

    let agent = google_service_account(
        env,
        g,
        "agent",
        &names::gcp::service_account(&env.name, "agent"),
        &gke,
        AGENT_NAMESPACE,
        AGENT_SERVICE_ACCOUNT,
        None,
    );
    // The agent's one role on the project: its custom role (policies/gcp/agent-role.json),
    // made here, so the daemon holds exactly the permissions its pass uses.
    let (title, permissions) = gcp_agent_role();
    let role_id = names::gcp::custom_role(&env.name, "agent");
    let role = g.add(
        described(env, Kind::GcpCustomRole, "agent")
            .set("roleId", role_id.as_str())
            .set("project", &env.account)
            .set("title", title)
            .set("includedPermissions", Value::strings(&permissions))
            .set("stage", "GA"),
    );
    for role_name in gcp_agent_roles(&env.account, &role_id) {
        g.add(
            Resource::new(Kind::GcpIamBinding, "agent-custom-role")
                .set("resource", format!("projects/{}", env.account))
                .set("role", role_name)
                .set("member", Value::reference(&agent))
                .after(&role),
        );
    }
    // The daemon keeps its state in the state bucket (the sidecar's `stateStore: {gcs:}`):
    // object access there and nowhere else (policies/gcp/agent-state.json).
    for role_name in GCP_AGENT_STATE_ROLES {
        g.add(
            Resource::new(Kind::GcpIamBinding, "agent-state")
                .set("resource", Value::reference(&state))
                .set("role", *role_name)
                .set("member", Value::reference(&agent)),
        );
    }
    Foundation { kube_cluster: gke.clone(), data_bucket: data, identity_issuer: gke }
}

/// `roles` on the project for `account`, one binding each.
fn project_bindings(env: &Environment, g: &mut Graph, who: &str, account: &ResourceId, roles: &[&str]) {
    for role in roles {
        g.add(
            Resource::new(Kind::GcpIamBinding, &format!("{who}-{}", role.trim_start_matches("roles/").replace('.', "-")))
                .set("resource", format!("projects/{}", env.account))
                .set("role", *role)
                .set("member", Value::reference(account)),
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn google_service_account(
    env: &Environment,
    g: &mut Graph,
    name: &str,
    account_id: &str,
    gke: &ResourceId,
    namespace: &str,
    ksa: &str,
    protection: Option<&str>,
) -> ResourceId {
    let sa = described(env, Kind::GcpServiceAccount, name).set("accountId", account_id).set("project", &env.account);
    let wi = Resource::new(Kind::GcpIamBinding, &format!("{name}-workload-identity"))
        .set("resource", Value::reference(&ResourceId::new(Kind::GcpServiceAccount, name)))
        .set("role", "roles/iam.workloadIdentityUser")
        .set("member", format!("serviceAccount:{}.svc.id.goog[{namespace}/{ksa}]", env.account))
        .after(gke);
    let id = g.add(sa.protect_if(protection));
    g.add(wi.protect_if(protection));
    id
}

/// Id of the Google service account a cluster's pods act as: `byoc-<env>-rw-<cluster>`,
/// cut with a hash to the 30 characters ids may have (ids are unique per project, which
/// two environments may share; `rw-` keeps a cluster named `agent` apart from the agent's).
pub(crate) fn cluster_account_id(env: &Environment, c: &Cluster) -> String {
    names::gcp::service_account(&env.name, &cluster_namespace(c))
}

/// The IAM condition that keeps a cluster to its prefix of the data bucket. Object calls
/// are checked on the object's name; `storage.objects.list` is checked on the bucket, so
/// listing is allowed by the list call's prefix instead (RisingWave's GC lists its prefix).
pub(crate) fn prefix_condition(bucket: &str, prefix: &str) -> String {
    format!(
        "resource.name.startsWith('projects/_/buckets/{bucket}/objects/{prefix}/') || \
         api.getAttribute('storage.googleapis.com/objectListPrefix', '').startsWith('{prefix}/')"
    )
}

pub(super) fn cluster_identity(
    env: &Environment,
    f: &Foundation,
    c: &Cluster,
    protection: Option<&str>,
    g: &mut Graph,
) -> WorkloadIdentity {
    let ns = cluster_namespace(c);
    let ksa = cluster_service_account(env, c);
    let sa = google_service_account(env, g, &ns, &cluster_account_id(env, c), &f.kube_cluster, &ns, &ksa, protection);
    for role in GCP_CLUSTER_ROLES {
        let b = Resource::new(Kind::GcpIamBinding, &format!("{ns}-data"))
            .set("resource", Value::reference(&f.data_bucket))
            .set("role", *role)
            .set("member", Value::reference(&sa))
            .set(
                "condition",
                Value::map([
                    ("title", format!("{ns} data prefix").into()),
                    ("expression", prefix_condition(&env.data_bucket, &c.state_prefix).into()),
                ]),
            );
        g.add(b.protect_if(protection));
    }
    WorkloadIdentity {
        annotations: [("iam.gke.io/gcp-service-account", Value::reference(&sa))].into_iter().collect(),
        pod_labels: Map::new(),
        identity: sa,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Kind;

    fn example() -> crate::spec::Specs {
        let dir = format!("{}/../examples/gcp", env!("CARGO_MANIFEST_DIR"));
        let files = rwproxy::specfiles::read_dir(std::path::Path::new(&dir)).expect("example readable");
        crate::spec::load::load(&dir, &files).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// The example's graph, and the same specs as environment `staging` of the same project.
    fn two_environments() -> (Graph, Graph) {
        let mut specs = example();
        let first = super::super::expand(&specs);
        specs.environment.name = "staging".to_owned();
        (first, super::super::expand(&specs))
    }

    fn get<'a>(g: &'a Graph, kind: Kind, name: &str) -> &'a Resource {
        g.resources.get(&ResourceId::new(kind, name)).unwrap_or_else(|| panic!("no {kind:?}/{name}"))
    }

    fn text<'a>(r: &'a Resource, prop: &str) -> &'a str {
        r.properties.get(prop).and_then(Value::as_str).unwrap_or_else(|| panic!("{} has no text {prop}", r.id))
    }

    #[test]
    fn no_forwarding_rules_attachments_publish_the_services_on_the_psc_subnet_to_the_control_plane_only() {
        let specs = example();
        let g = super::super::expand(&specs);
        for (role, service) in [("agent", "byoc-agent"), ("proxy", "rwproxy")] {
            let a = get(&g, Kind::GcpServiceAttachment, role);
            assert_eq!(text(a, "service"), service);
            assert_eq!(text(a, "namespace"), "byoc-system");
            assert_eq!(text(a, "connectionPreference"), "ACCEPT_MANUAL");
            assert_eq!(
                a.properties.get("natSubnets"),
                Some(&Value::List(vec![Value::reference(&ResourceId::new(Kind::GcpSubnetwork, PSC_SUBNET))]))
            );
            let Some(Value::List(allowed)) = a.properties.get("consumerAllowList") else { panic!("{}", a.id) };
            let projects: Vec<&str> = allowed
                .iter()
                .map(|e| match e {
                    Value::Map(m) => m.get("project").and_then(Value::as_str).unwrap_or_default(),
                    _ => "",
                })
                .collect();
            assert_eq!(projects, specs.environment.control_plane_principals.iter().map(String::as_str).collect::<Vec<_>>());
        }
        let psc = get(&g, Kind::GcpSubnetwork, PSC_SUBNET);
        assert_eq!(text(psc, "purpose"), "PRIVATE_SERVICE_CONNECT");
        assert_eq!(text(psc, "cidr"), "10.30.64.0/24");
        assert_eq!(text(get(&g, Kind::GcpSubnetwork, "nodes"), "purpose"), "PRIVATE");
        let hc = get(&g, Kind::GcpFirewall, "health-checks");
        assert_eq!(hc.properties.get("sourceRanges"), Some(&Value::strings(HEALTH_CHECK_RANGES)));
        assert!(g.resources.keys().all(|id| !id.as_str().contains("forwarding")), "byoc makes no load balancer of its own");
    }

    #[test]
    fn names_without_labels_are_scoped_to_the_environment_and_marked_in_the_description() {
        let (first, second) = two_environments();
        for kind in [
            Kind::GcpNetwork,
            Kind::GcpSubnetwork,
            Kind::GcpFirewall,
            Kind::GcpRouterNat,
            Kind::GcpServiceAttachment,
            Kind::GcpServiceAccount,
        ] {
            let ours: Vec<&Resource> = first.resources.values().filter(|r| r.kind == kind).collect();
            assert!(!ours.is_empty(), "{kind:?}");
            for r in ours {
                assert!(r.properties.get("labels").is_none(), "{}: GCP takes no labels here", r.id);
                let description = text(r, "description");
                assert_eq!(names::gcp::owner_of(description), Some(("prod-usc1", r.id.as_str())), "{description}");
                let name_prop = if kind == Kind::GcpServiceAccount { "accountId" } else { "name" };
                let other = text(&second.resources[&r.id], name_prop);
                assert_ne!(text(r, name_prop), other, "{}: two environments in one project would share {other}", r.id);
            }
        }
        assert_eq!(text(get(&first, Kind::GcpSubnetwork, "nodes"), "name"), "byoc-prod-usc1-nodes");
        assert_eq!(text(get(&first, Kind::GcpFirewall, "internal"), "name"), "byoc-prod-usc1-internal");
    }

    #[test]
    fn gke_is_vpc_native_on_a_release_channel_and_pools_count_nodes_in_total_as_a_node_account() {
        let g = super::super::expand(&example());
        let nodes = get(&g, Kind::GcpSubnetwork, "nodes");
        let want = Value::List(vec![
            Value::map([("name", "pods".into()), ("cidr", "10.100.0.0/16".into())]),
            Value::map([("name", "services".into()), ("cidr", "172.30.0.0/20".into())]),
        ]);
        assert_eq!(nodes.properties.get("secondaryRanges"), Some(&want));
        let gke = get(&g, Kind::GcpGkeCluster, "main");
        assert_eq!(text(gke, "releaseChannel"), "REGULAR");
        let pool = get(&g, Kind::GcpNodePool, "risingwave");
        // min 3, max 9 over three zones: totals, and one node per zone to start.
        let Some(Value::Map(a)) = pool.properties.get("autoscaling") else { panic!("autoscaling") };
        assert_eq!((a.get("totalMinNodes"), a.get("totalMaxNodes")), (Some(&Value::Int(3)), Some(&Value::Int(9))));
        assert_eq!(pool.properties.get("initialNodesPerZone"), Some(&Value::Int(1)));
        assert_eq!(pool.properties.get("serviceAccount"), Some(&Value::reference(&ResourceId::new(Kind::GcpServiceAccount, "nodes"))));
        let node_roles: Vec<&str> = g
            .resources
            .values()
            .filter(|r| r.kind == Kind::GcpIamBinding && r.properties.get("member") == pool.properties.get("serviceAccount"))
            .map(|r| text(r, "role"))
            .collect();
        assert_eq!(node_roles, GCP_NODE_ROLES);
    }

    #[test]
    fn the_agent_is_bound_to_its_custom_role_only_which_holds_the_policy_files_permissions() {
        let (first, second) = two_environments();
        let role = get(&first, Kind::GcpCustomRole, "agent");
        assert_eq!(text(role, "roleId"), "byoc_prod_usc1_agent");
        assert_ne!(text(role, "roleId"), text(get(&second, Kind::GcpCustomRole, "agent"), "roleId"));
        let file: serde_json::Value = serde_json::from_str(include_str!("../../../policies/gcp/agent-role.json")).expect("agent-role.json");
        let want: Vec<&str> = file["includedPermissions"].as_array().expect("permissions").iter().filter_map(|p| p.as_str()).collect();
        assert_eq!(role.properties.get("includedPermissions"), Some(&Value::strings(&want)));
        let agent = Value::reference(&ResourceId::new(Kind::GcpServiceAccount, "agent"));
        let bound: Vec<&Resource> =
            first.resources.values().filter(|r| r.kind == Kind::GcpIamBinding && r.properties.get("member") == Some(&agent)).collect();
        assert_eq!(bound.len(), 2, "one binding on the project, one on the state bucket: {bound:?}");
        let project = bound.iter().find(|b| text(b, "resource") == "projects/acme-data-prod").expect("project binding");
        assert_eq!(text(project, "role"), "projects/acme-data-prod/roles/byoc_prod_usc1_agent");
        assert!(project.depends_on.contains(&role.id), "bound once the role exists");
        let state = bound.iter().find(|b| b.properties.get("resource") != project.properties.get("resource")).expect("state binding");
        assert_eq!(state.properties.get("resource"), Some(&Value::reference(&ResourceId::new(Kind::GcpBucket, "state"))));
        assert_eq!(text(state, "role"), "roles/storage.objectUser");
        assert!(state.properties.get("condition").is_none(), "the whole state bucket, which holds only the daemon's state");
    }

    #[test]
    fn a_clusters_workload_identity_member_names_its_environment() {
        let (first, second) = two_environments();
        let member = |g: &Graph| text(get(g, Kind::GcpIamBinding, "rw-analytics-workload-identity"), "member").to_owned();
        assert_eq!(member(&first), "serviceAccount:acme-data-prod.svc.id.goog[rw-analytics/byoc-prod-usc1]");
        assert_ne!(member(&first), member(&second), "two environments of one project would share the cluster's Google account");
        // The pods run as the service account the member names.
        assert_eq!(text(get(&first, Kind::K8sServiceAccount, "analytics"), "name"), "byoc-prod-usc1");
    }

    #[test]
    fn the_data_bucket_expires_noncurrent_versions_and_a_cluster_may_list_its_prefix() {
        let g = super::super::expand(&example());
        let data = get(&g, Kind::GcpBucket, "data");
        let Some(Value::List(rules)) = data.properties.get("lifecycle") else { panic!("no lifecycle on the data bucket") };
        assert_eq!(rules[0], Value::map([("action", "Delete".into()), ("daysSinceNoncurrentTime", Value::Int(7))]));
        let b = get(&g, Kind::GcpIamBinding, "rw-analytics-data");
        let Some(Value::Map(c)) = b.properties.get("condition") else { panic!("no condition") };
        let expr = c.get("expression").and_then(Value::as_str).expect("expression");
        assert!(expr.contains("startsWith('projects/_/buckets/byoc-prod-usc1-acme-data-prod-data/objects/analytics/')"), "{expr}");
        assert!(expr.contains("api.getAttribute('storage.googleapis.com/objectListPrefix', '').startsWith('analytics/')"), "{expr}");
    }
}
