//! Azure: resource group, VNet with subnets, NSG and NAT gateway; AKS with node pools and
//! its OIDC issuer; a storage account with two containers; internal and public load
//! balancers; a Private Link service; user-assigned identities with federated credentials.

use super::permissions::{AZURE_AGENT_ROLES, AZURE_CLUSTER_ROLES};
use super::{AGENT_NAMESPACE, AGENT_PORT, AGENT_SERVICE_ACCOUNT, Foundation, WorkloadIdentity, cluster_namespace, tagged as resource};
use crate::resource::{Graph, Kind, ResourceId, Value};
use crate::spec::{Cluster, Environment, Tier};

/// Storage account names are 3 to 24 lower-case letters and digits, globally unique: the
/// environment name squeezed, plus a short stable hash of subscription and name.
/// Name of the environment's storage account (globally unique, at most 24 characters).
pub(crate) fn storage_account_name(env: &Environment) -> String {
    let squeezed: String = env.name.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
    // FNV-1a: stable across releases and platforms, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in env.account.bytes().chain(env.name.bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("byoc{squeezed}{h:08x}")
}

pub(super) fn environment(env: &Environment, g: &mut Graph) -> Foundation {
    let prefix = format!("byoc-{}", env.name);
    let rg_name = env.resource_group.clone().unwrap_or_else(|| prefix.clone());
    let rg = g.add(
        resource(env, Kind::AzureResourceGroup, "main").set("name", rg_name).set("location", &env.region).set("subscription", &env.account),
    );
    let vnet = g.add(
        resource(env, Kind::AzureVnet, "main")
            .set("resourceGroup", Value::reference(&rg))
            .set("name", prefix.clone())
            .set("addressSpace", Value::strings([env.network.cidr.to_string()])),
    );
    let nat = g.add(
        resource(env, Kind::AzureNatGateway, "main")
            .set("resourceGroup", Value::reference(&rg))
            .set("zones", Value::strings(&env.network.zones)),
    );
    let mut rules = vec![
        Value::map([("port", AGENT_PORT.into()), ("from", "VirtualNetwork".into())]),
        Value::map([("port", env.proxy_port.into()), ("from", "VirtualNetwork".into())]),
    ];
    for c in env.public_proxy.iter().flatten() {
        rules.push(Value::map([("port", env.proxy_port.into()), ("from", c.to_string().into())]));
    }
    let nsg = g.add(resource(env, Kind::AzureNsg, "main").set("resourceGroup", Value::reference(&rg)).set("inbound", Value::List(rules)));
    let mut private = Vec::new();
    for s in &env.network.subnets {
        let mut r = resource(env, Kind::AzureSubnet, &s.name)
            .set("vnet", Value::reference(&vnet))
            .set("cidr", s.cidr.to_string())
            .set("nsg", Value::reference(&nsg));
        if s.tier == Tier::Private {
            r = r.set("natGateway", Value::reference(&nat)).set("privateLinkServiceNetworkPolicies", false);
        }
        let id = g.add(r);
        if s.tier == Tier::Private {
            private.push(id);
        }
    }
    let nodes_subnet = private.first().cloned().unwrap_or_else(|| ResourceId::new(Kind::AzureSubnet, "private"));

    let k = &env.kubernetes;
    let aks = g.add(
        resource(env, Kind::AzureAksCluster, "main")
            .set("name", prefix.clone())
            .set("resourceGroup", Value::reference(&rg))
            .set("version", &k.version)
            .set("subnet", Value::reference(&nodes_subnet))
            .set("privateCluster", true)
            .set("oidcIssuer", true)
            .set("workloadIdentity", true)
            .set("serviceCidr", k.service_cidr.map(|c| c.to_string()).unwrap_or_default()),
    );
    for ng in &k.node_groups {
        g.add(
            resource(env, Kind::AzureNodePool, &ng.name)
                .set("cluster", Value::reference(&aks))
                .set("vmSize", &ng.machine_type)
                .set("zones", Value::strings(&env.network.zones))
                .set("minCount", ng.min)
                .set("maxCount", ng.max)
                .set("nodeLabels", super::node_labels(ng))
                .set("taints", Value::strings(ng.taints.iter().map(|t| format!("{}={}:{}", t.key, t.value, t.effect.as_str())))),
        );
    }
    let account = g.add(
        resource(env, Kind::AzureStorageAccount, "main")
            .set("name", storage_account_name(env))
            .set("resourceGroup", Value::reference(&rg))
            .set("location", &env.region)
            .set("kind", "StorageV2")
            .set("allowBlobPublicAccess", false)
            .set("minimumTlsVersion", "TLS1_2")
            .set("versioning", true)
            .protect("the storage account holds the data and state containers; the reconciler never deletes or replaces it"),
    );
    let mut container = |role: &str, name: &str| {
        g.add(
            resource(env, Kind::AzureBlobContainer, role)
                .set("account", Value::reference(&account))
                .set("name", name)
                .set("publicAccess", "None")
                .protect(format!(
                    "the {role} container holds data; the reconciler never deletes or replaces it, delete it by hand if you mean to"
                )),
        )
    };
    let data = container("data", &env.data_bucket);
    container("state", &env.state_bucket);

    let lb = |g: &mut Graph, name: &str, public: bool, port: u16| {
        g.add(
            resource(env, Kind::AzureLoadBalancer, name)
                .set("name", format!("{prefix}-{name}"))
                .set("sku", "Standard")
                .set("public", public)
                .set("subnet", if public { Value::from("") } else { Value::reference(&nodes_subnet) })
                .set("ports", Value::List(vec![port.into()]))
                .after(&aks),
        )
    };
    let lb_agent = lb(g, "agent", false, AGENT_PORT);
    let lb_proxy = lb(g, "proxy", false, env.proxy_port);
    if env.public_proxy.is_some() {
        lb(g, "proxy-public", true, env.proxy_port);
    }
    for (name, target) in [("agent", &lb_agent), ("proxy", &lb_proxy)] {
        g.add(
            resource(env, Kind::AzurePrivateLinkService, name)
                .set("loadBalancer", Value::reference(target))
                .set("subnet", Value::reference(&nodes_subnet))
                .set("visibility", Value::strings(&env.control_plane_principals))
                .set("autoApproval", Value::strings(&env.control_plane_principals)),
        );
    }

    let agent = identity(env, g, "agent", &aks, AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, None);
    for role in AZURE_AGENT_ROLES {
        g.add(
            resource(env, Kind::AzureRoleAssignment, &format!("agent-{}", role.to_ascii_lowercase().replace(' ', "-")))
                .set("principal", Value::reference(&agent))
                .set("role", *role)
                .set("scope", Value::reference(&rg)),
        );
    }
    Foundation { kube_cluster: aks.clone(), data_bucket: data, identity_issuer: aks }
}

fn identity(
    env: &Environment,
    g: &mut Graph,
    name: &str,
    aks: &ResourceId,
    namespace: &str,
    ksa: &str,
    protection: Option<&str>,
) -> ResourceId {
    let rg = ResourceId::new(Kind::AzureResourceGroup, "main");
    let mi = resource(env, Kind::AzureManagedIdentity, name)
        .set("name", format!("byoc-{}-{name}", env.name))
        .set("resourceGroup", Value::reference(&rg));
    let fc = resource(env, Kind::AzureFederatedCredential, name)
        .set("identity", Value::reference(&ResourceId::new(Kind::AzureManagedIdentity, name)))
        .set("issuer", Value::reference(aks))
        .set("subject", format!("system:serviceaccount:{namespace}:{ksa}"))
        .set("audiences", Value::strings(["api://AzureADTokenExchange"]));
    let id = g.add(mi.protect_if(protection));
    g.add(fc.protect_if(protection));
    id
}

pub(super) fn cluster_identity(
    env: &Environment,
    f: &Foundation,
    c: &Cluster,
    protection: Option<&str>,
    g: &mut Graph,
) -> WorkloadIdentity {
    let ns = cluster_namespace(c);
    let mi = identity(env, g, &ns, &f.identity_issuer, &ns, &ns, protection);
    for role in AZURE_CLUSTER_ROLES {
        let ra = resource(env, Kind::AzureRoleAssignment, &format!("{ns}-data"))
            .set("principal", Value::reference(&mi))
            .set("role", *role)
            .set("scope", Value::reference(&f.data_bucket))
            .set(
                "condition",
                format!(
                    "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path] StringStartsWith '{}/'",
                    c.state_prefix
                ),
            );
        g.add(ra.protect_if(protection));
    }
    WorkloadIdentity {
        annotations: [("azure.workload.identity/client-id", Value::reference(&mi))].into_iter().collect(),
        pod_labels: [("azure.workload.identity/use", Value::from("true"))].into_iter().collect(),
        identity: mi,
    }
}
