//! GCP: VPC network with subnetworks, firewall rules and Cloud NAT; GKE with node pools;
//! GCS buckets; internal and external forwarding rules; a Private Service Connect
//! attachment; Google service accounts bound through GKE workload identity.

use super::permissions::{GCP_AGENT_ROLES, GCP_CLUSTER_ROLES};
use super::{AGENT_NAMESPACE, AGENT_PORT, AGENT_SERVICE_ACCOUNT, Foundation, WorkloadIdentity, cluster_namespace, names};
use crate::resource::{Graph, Key, Kind, Map, Resource, ResourceId, Value};
use crate::spec::{Cluster, Environment, Tier};

/// GCP labels allow only lower-case letters, digits, '_' and '-': the ownership tags are
/// rewritten to fit.
fn resource(env: &Environment, kind: Kind, name: &str) -> Resource {
    let r = Resource::new(kind, name);
    let mut labels: Map = env.tags.iter().map(|(k, v)| (Key::Owned(sanitize(k)), Value::from(sanitize(v)))).collect();
    labels.insert("byoc-environment", Value::from(&env.name));
    labels.insert("byoc-managed-by", Value::from("byoc"));
    labels.insert("byoc-resource", Value::from(names::gcp::label_value(r.id.as_str())));
    r.set("labels", Value::Map(labels))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else if c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

pub(super) fn environment(env: &Environment, g: &mut Graph) -> Foundation {
    let prefix = names::gcp::resource(&env.name, None);
    let network = g.add(resource(env, Kind::GcpNetwork, "main").set("name", prefix.clone()).set("autoCreateSubnetworks", false));
    let mut private = Vec::new();
    for s in &env.network.subnets {
        let id = g.add(
            resource(env, Kind::GcpSubnetwork, &s.name)
                .set("network", Value::reference(&network))
                .set("region", &env.region)
                .set("cidr", s.cidr.to_string())
                .set("purpose", if s.tier == Tier::Public { "PRIVATE_SERVICE_CONNECT" } else { "PRIVATE" })
                .set("privateIpGoogleAccess", true),
        );
        if s.tier == Tier::Private {
            private.push(id);
        }
    }
    // Validation guarantees a private subnet; the id is stable even if it did not.
    let nodes_subnet = private.first().cloned().unwrap_or_else(|| ResourceId::new(Kind::GcpSubnetwork, "private"));
    // Public-tier subnets carry the PSC NAT range; without one, the first private subnet does.
    let psc_subnet = env
        .network
        .subnets
        .iter()
        .find(|s| s.tier == Tier::Public)
        .map_or_else(|| nodes_subnet.clone(), |s| ResourceId::new(Kind::GcpSubnetwork, &s.name));
    let cidr = env.network.cidr.to_string();
    g.add(
        resource(env, Kind::GcpFirewall, "internal")
            .set("network", Value::reference(&network))
            .set("direction", "INGRESS")
            .set("sourceRanges", Value::strings([&cidr]))
            .set("allow", Value::strings(["tcp", "udp", "icmp"])),
    );
    if let Some(allowed) = &env.public_proxy {
        g.add(
            resource(env, Kind::GcpFirewall, "proxy-public")
                .set("network", Value::reference(&network))
                .set("direction", "INGRESS")
                .set("sourceRanges", Value::strings(allowed))
                .set("allow", Value::strings([format!("tcp:{}", env.proxy_port)])),
        );
    }
    g.add(
        resource(env, Kind::GcpRouterNat, "main")
            .set("network", Value::reference(&network))
            .set("region", &env.region)
            .set("natIpAllocation", "AUTO_ONLY"),
    );

    let k = &env.kubernetes;
    let gke = g.add(
        resource(env, Kind::GcpGkeCluster, "main")
            .set("name", prefix.clone())
            .set("location", &env.region)
            .set("version", &k.version)
            .set("network", Value::reference(&network))
            .set("subnetwork", Value::reference(&nodes_subnet))
            .set("privateNodes", true)
            .set("privateEndpoint", true)
            .set("workloadPool", format!("{}.svc.id.goog", env.account))
            .set("serviceCidr", k.service_cidr.map(|c| c.to_string()).unwrap_or_default()),
    );
    for ng in &k.node_groups {
        g.add(
            resource(env, Kind::GcpNodePool, &ng.name)
                .set("cluster", Value::reference(&gke))
                .set("machineType", &ng.machine_type)
                .set("zones", Value::strings(&env.network.zones))
                .set("minNodes", ng.min)
                .set("maxNodes", ng.max)
                .set("nodeLabels", super::node_labels(ng))
                .set("taints", super::taints(ng))
                .set("workloadMetadata", "GKE_METADATA"),
        );
    }
    let mut bucket = |role: &str, name: &str| {
        g.add(
            resource(env, Kind::GcpBucket, role)
                .set("name", name)
                .set("location", &env.region)
                .set("versioning", true)
                .set("uniformBucketLevelAccess", true)
                .set("publicAccessPrevention", "enforced")
                .protect(format!("the {role} bucket holds data; the reconciler never deletes or replaces buckets, empty and delete it by hand if you mean to")),
        )
    };
    let data = bucket("data", &env.data_bucket);
    bucket("state", &env.state_bucket);

    let lb = |g: &mut Graph, name: &str, scheme: &str, port: u16| {
        g.add(
            resource(env, Kind::GcpForwardingRule, name)
                .set("name", names::gcp::resource(&env.name, Some(name)))
                .set("scheme", scheme)
                .set("subnetwork", if scheme == "INTERNAL" { Value::reference(&nodes_subnet) } else { Value::from("") })
                .set("ports", Value::List(vec![port.into()]))
                .after(&gke),
        )
    };
    let lb_agent = lb(g, "agent", "INTERNAL", AGENT_PORT);
    let lb_proxy = lb(g, "proxy", "INTERNAL", env.proxy_port);
    if env.public_proxy.is_some() {
        lb(g, "proxy-public", "EXTERNAL", env.proxy_port);
    }
    for (name, target) in [("agent", &lb_agent), ("proxy", &lb_proxy)] {
        g.add(
            resource(env, Kind::GcpServiceAttachment, name)
                .set("targetService", Value::reference(target))
                .set("natSubnetwork", Value::reference(&psc_subnet))
                .set("connectionPreference", "ACCEPT_MANUAL")
                .set("consumerAcceptList", Value::strings(&env.control_plane_principals)),
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
    for role in GCP_AGENT_ROLES {
        g.add(
            resource(env, Kind::GcpIamBinding, &format!("agent-{}", role.trim_start_matches("roles/").replace('.', "-")))
                .set("resource", format!("projects/{}", env.account))
                .set("role", *role)
                .set("member", Value::reference(&agent)),
        );
    }
    Foundation { kube_cluster: gke.clone(), data_bucket: data, identity_issuer: gke }
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
    let sa = resource(env, Kind::GcpServiceAccount, name).set("accountId", account_id).set("project", &env.account);
    let wi = resource(env, Kind::GcpIamBinding, &format!("{name}-workload-identity"))
        .set("resource", Value::reference(&ResourceId::new(Kind::GcpServiceAccount, name)))
        .set("role", "roles/iam.workloadIdentityUser")
        .set("member", format!("serviceAccount:{}.svc.id.goog[{namespace}/{ksa}]", env.account))
        .after(gke);
    let id = g.add(sa.protect_if(protection));
    g.add(wi.protect_if(protection));
    id
}

/// Id of the Google service account a cluster's pods act as: `byoc-<env>-rw-<cluster>`,
/// shortened to the 30 characters ids may have (ids are unique per project, which two
/// environments may share; `rw-` keeps a cluster named `agent` apart from the agent's).
pub(crate) fn cluster_account_id(env: &Environment, c: &Cluster) -> String {
    names::gcp::service_account(&env.name, &cluster_namespace(c))
}

pub(super) fn cluster_identity(
    env: &Environment,
    f: &Foundation,
    c: &Cluster,
    protection: Option<&str>,
    g: &mut Graph,
) -> WorkloadIdentity {
    let ns = cluster_namespace(c);
    let sa = google_service_account(env, g, &ns, &cluster_account_id(env, c), &f.kube_cluster, &ns, &ns, protection);
    for role in GCP_CLUSTER_ROLES {
        let b = resource(env, Kind::GcpIamBinding, &format!("{ns}-data"))
            .set("resource", Value::reference(&f.data_bucket))
            .set("role", *role)
            .set("member", Value::reference(&sa))
            .set("condition", format!("resource.name.startsWith('projects/_/buckets/{}/objects/{}/')", env.data_bucket, c.state_prefix));
        g.add(b.protect_if(protection));
    }
    WorkloadIdentity {
        annotations: [("iam.gke.io/gcp-service-account", Value::reference(&sa))].into_iter().collect(),
        pod_labels: Map::new(),
        identity: sa,
    }
}
