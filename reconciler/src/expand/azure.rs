//! Azure: resource group, VNet with subnets, NSG and a NAT gateway with its public IP; AKS
//! (Azure CNI overlay, API-server VNet integration, a user-assigned control-plane identity,
//! a System pool) and its OIDC issuer; two storage accounts with one container each, each
//! reached through a private endpoint; user-assigned identities with federated credentials.
//!
//! Load balancers follow DESIGN ("Load balancers and private connectivity"): byoc makes
//! none. AKS's cloud provider makes the internal load balancers and their Private Link
//! services from the `byoc-agent` and `rwproxy` Services, told how by the annotations the
//! graph's `azure.private-link-service` resources carry (internal, in the nodes subnet, a
//! Private Link service on the [`names::azure::PRIVATE_LINK_SUBNET`], visible to and
//! auto-approved for the control plane's subscriptions only); the optional public proxy is
//! the `rwproxy-public` Service (`azure.load-balancer/proxy-public`). The graph keeps the
//! subnets and the control-plane identity's rights on them.
//!
//! API-server VNet integration: the cluster's API server sits in
//! [`names::azure::API_SERVER_SUBNET`], delegated to `Microsoft.ContainerService/managedClusters`.
//! Whether `Microsoft.ContainerService/EnableAPIServerVnetIntegrationPreview` must still be
//! registered, as found in the documentation searchable offline (not against Azure):
//! - the preview pages ("... API Server VNet Integration (Preview)") require the flag, the
//!   `aks-preview` CLI extension and api-version `2022-04-02-preview` or later;
//! - the current Microsoft Learn page has dropped "(Preview)" from its title, applies to AKS
//!   Standard and AKS Automatic, and says AKS Automatic has the feature preconfigured;
//! - the stable SDK models (`Azure.ResourceManager.ContainerService`,
//!   `@azure-rest/arm-containerservice`) carry `apiServerAccessProfile.enableVnetIntegration`
//!   and `subnetId` (the .NET property pages still show the generic prerelease notice).
//!
//! So the feature is GA and the flag is very likely not needed at a GA api-version such as
//! [`AKS_API_VERSION`]; the excerpts did not show the current page's prerequisites, so this
//! is not confirmed. The Azure client's preflight should read the flag's registration
//! state and report it rather than require it, until a create at the pinned api-version
//! shows the answer.

use ipnet::IpNet;

use super::permissions::{AZURE_AGENT_ASSIGNABLE_ROLES, AZURE_AGENT_ROLES, AZURE_AGENT_STATE_ROLES, AZURE_CLUSTER_ROLES};
use super::{
    AGENT_NAMESPACE, AGENT_PORT, AGENT_SERVICE, AGENT_SERVICE_ACCOUNT, Foundation, PROXY_SERVICE, PUBLIC_PROXY_SERVICE, WorkloadIdentity,
    cluster_namespace, names, tagged,
};
use crate::resource::{Graph, Kind, Resource, ResourceId, Value};
use crate::spec::{Cluster, Environment, Tier};

/// The AKS api-version the graph's managed-cluster properties are written for: a GA
/// version (assumed from Microsoft.ContainerService's monthly GA cadence; the client that
/// pins it confirms it).
pub const AKS_API_VERSION: &str = "2025-05-01";
/// Days a noncurrent blob version stays in the data account before the lifecycle rule
/// deletes it (as on the other clouds).
pub const NONCURRENT_VERSION_DAYS: u32 = 7;
/// The private DNS zone of blob private endpoints ("Azure Private Endpoint private DNS zone
/// values"): a storage account's public name is a CNAME into it.
pub const BLOB_PRIVATE_DNS_ZONE: &str = "privatelink.blob.core.windows.net";
/// The built-in role the AKS control-plane identity holds on the subnets it uses.
pub const CONTROL_PLANE_ROLE: &str = "Network Contributor";

/// Name of the environment's data storage account (globally unique, at most 24
/// characters); the RisingWave clusters' state store endpoint names it.
pub(crate) fn storage_account_name(env: &Environment) -> String {
    names::azure::storage_account(&env.account, &env.name, "data")
}

/// The cluster DNS service's address AKS is given (`dnsServiceIP`): the tenth address of
/// the service range, which validation keeps /28 or larger so it is inside.
pub(crate) fn dns_service_ip(service: IpNet) -> String {
    match service.trunc() {
        IpNet::V4(n) => std::net::Ipv4Addr::from(u32::from(n.network()).wrapping_add(10)).to_string(),
        IpNet::V6(n) => n.network().to_string(),
    }
}

/// A resource Azure cannot tag: no `tags` (ARM would refuse them); see
/// [`names::azure::UNTAGGED`] for how each is proven byoc's.
fn untagged(kind: Kind, name: &str) -> Resource {
    Resource::new(kind, name)
}

/// A role assignment of the graph: named by a GUID derived from the resource id, with the
/// owner in its description (role assignments take no tags).
fn role_assignment(env: &Environment, name: &str, principal: &ResourceId, role: &str, scope: &ResourceId) -> Resource {
    let id = ResourceId::new(Kind::AzureRoleAssignment, name);
    untagged(Kind::AzureRoleAssignment, name)
        .set("name", names::azure::role_assignment(&env.account, &env.name, id.as_str()))
        .set("description", names::azure::ownership_description(&env.name, id.as_str()))
        .set("principal", Value::reference(principal))
        .set("role", role)
        .set("scope", Value::reference(scope))
}

/// The NAT gateway's zones and its public IP's: a Standard NAT gateway is zonal, in one
/// zone or in none. With one zone both go there; with several the gateway takes none
/// (Azure places it) and its public IP is zone-redundant across them, which a no-zone
/// gateway accepts.
fn nat_zones(zones: &[String]) -> (Vec<String>, Vec<String>) {
    match zones {
        [one] => (vec![one.clone()], vec![one.clone()]),
        many => (Vec::new(), many.to_vec()),
    }
}

pub(super) fn environment(env: &Environment, g: &mut Graph) -> Foundation {
    let rg_name = env.resource_group.clone().unwrap_or_else(|| names::azure::resource(&env.name, None));
    // Deleting or replacing a resource group deletes everything in it, the storage
    // accounts included: the group is protected like the data, and one the user named is
    // adopted (it existed before byoc and outlives it).
    let rg_protection = if env.adopt_resource_group {
        format!(
            "resource group {rg_name} was named in the spec, so byoc adopted it: it neither creates nor deletes it, and deleting it would delete the storage accounts in it"
        )
    } else {
        format!(
            "resource group {rg_name} holds the data and state storage accounts, and deleting or replacing it deletes them; the reconciler never does, delete it by hand if you mean to"
        )
    };
    let rg = g.add(
        tagged(env, Kind::AzureResourceGroup, "main")
            .set("name", rg_name)
            .set("location", &env.region)
            .set("subscription", &env.account)
            .set("adopted", env.adopt_resource_group)
            .protect(rg_protection),
    );
    let in_rg = |kind: Kind, id: &str, name: String| {
        tagged(env, kind, id).set("name", name).set("resourceGroup", Value::reference(&rg)).set("location", &env.region)
    };
    let vnet = g.add(
        in_rg(Kind::AzureVnet, "main", names::azure::resource(&env.name, None))
            .set("addressSpace", Value::strings([env.network.cidr.to_string()])),
    );
    let (nat_zones, ip_zones) = nat_zones(&env.network.zones);
    let nat_ip = g.add(
        in_rg(Kind::AzurePublicIp, "nat", names::azure::resource(&env.name, Some("nat")))
            .set("sku", "Standard")
            .set("allocation", "Static")
            .set("zones", Value::strings(ip_zones)),
    );
    let nat = g.add(
        in_rg(Kind::AzureNatGateway, "main", names::azure::resource(&env.name, Some("nat")))
            .set("sku", "Standard")
            .set("zones", Value::strings(nat_zones))
            .set("publicIps", Value::List(vec![Value::reference(&nat_ip)])),
    );
    let mut rules = vec![
        Value::map([("port", AGENT_PORT.into()), ("from", "VirtualNetwork".into())]),
        Value::map([("port", env.proxy_port.into()), ("from", "VirtualNetwork".into())]),
    ];
    for c in env.public_proxy.iter().flatten() {
        rules.push(Value::map([("port", env.proxy_port.into()), ("from", c.to_string().into())]));
    }
    let nsg = g.add(in_rg(Kind::AzureNsg, "main", names::azure::resource(&env.name, Some("nodes"))).set("inbound", Value::List(rules)));
    let mut private = Vec::new();
    for s in &env.network.subnets {
        let mut r = untagged(Kind::AzureSubnet, &s.name)
            .set("name", s.name.as_str())
            .set("vnet", Value::reference(&vnet))
            .set("cidr", s.cidr.to_string())
            .set("nsg", Value::reference(&nsg));
        if s.tier == Tier::Private {
            r = r.set("natGateway", Value::reference(&nat));
        }
        let id = g.add(r);
        if s.tier == Tier::Private {
            private.push(id);
        }
    }
    let nodes_subnet = private.first().cloned().unwrap_or_else(|| ResourceId::new(Kind::AzureSubnet, "private"));
    let own_subnet = |name: &str, cidr: Option<IpNet>| {
        untagged(Kind::AzureSubnet, name)
            .set("name", name)
            .set("vnet", Value::reference(&vnet))
            .set("cidr", cidr.map(|c| c.to_string()).unwrap_or_default())
    };
    let api_subnet = g.add(
        own_subnet(names::azure::API_SERVER_SUBNET, env.network.api_server).set("delegation", "Microsoft.ContainerService/managedClusters"),
    );
    // A Private Link service takes its NAT addresses from a subnet whose Private Link
    // network policies are off.
    let pls_subnet =
        g.add(own_subnet(names::azure::PRIVATE_LINK_SUBNET, env.network.private_link).set("privateLinkServiceNetworkPolicies", "Disabled"));

    // AKS's control plane acts as this identity: it joins nodes to the nodes subnet, puts
    // the API server into its delegated subnet, and makes the internal load balancers and
    // Private Link services; it holds Network Contributor on exactly those subnets.
    let control_plane = g.add(in_rg(Kind::AzureManagedIdentity, "aks", names::azure::identity(&env.name, "aks")));
    let mut rights = Vec::new();
    for subnet in [&nodes_subnet, &api_subnet, &pls_subnet] {
        let short = subnet.as_str().split_once('/').map_or(subnet.as_str(), |(_, n)| n);
        rights.push(g.add(role_assignment(env, &format!("aks-network-{short}"), &control_plane, CONTROL_PLANE_ROLE, subnet)));
    }

    let k = &env.kubernetes;
    let service_cidr = k.service_cidr.map(|c| c.trunc());
    let network = Value::map([
        ("plugin", "azure".into()),
        ("pluginMode", "overlay".into()),
        // Cilium enforces the NetworkPolicies the manifests ship (manifests/base/networkpolicies.yaml).
        ("dataplane", "cilium".into()),
        ("policy", "cilium".into()),
        ("podCidr", k.pod_cidr.map(|c| c.to_string()).unwrap_or_default().into()),
        ("serviceCidr", service_cidr.map(|c| c.to_string()).unwrap_or_default().into()),
        ("dnsServiceIP", service_cidr.map(dns_service_ip).unwrap_or_default().into()),
        ("outboundType", "userAssignedNATGateway".into()),
        ("loadBalancerSku", "standard".into()),
    ]);
    let system_pool = k.node_groups.first().map(|n| n.name.clone()).unwrap_or_default();
    let mut aks = in_rg(Kind::AzureAksCluster, "main", names::azure::resource(&env.name, None))
        .set("apiVersion", AKS_API_VERSION)
        .set("version", &k.version)
        .set("identity", Value::map([("type", "UserAssigned".into()), ("id", Value::reference(&control_plane))]))
        .set("subnet", Value::reference(&nodes_subnet))
        .set("apiServerSubnet", Value::reference(&api_subnet))
        .set("apiServerVnetIntegration", true)
        .set("privateCluster", true)
        .set("oidcIssuer", true)
        .set("workloadIdentity", true)
        .set("network", network)
        .set("systemPool", system_pool.as_str());
    for r in &rights {
        aks = aks.after(r);
    }
    let aks = g.add(aks);
    for ng in &k.node_groups {
        g.add(
            tagged(env, Kind::AzureNodePool, &ng.name)
                .set("cluster", Value::reference(&aks))
                .set("mode", if ng.name == system_pool { "System" } else { "User" })
                .set("vmSize", &ng.machine_type)
                .set("subnet", Value::reference(&nodes_subnet))
                .set("zones", Value::strings(&env.network.zones))
                .set("minCount", ng.min)
                .set("maxCount", ng.max)
                .set("nodeLabels", super::node_labels(ng))
                .set("taints", Value::strings(ng.taints.iter().map(|t| format!("{}={}:{}", t.key, t.value, t.effect.as_str())))),
        );
    }

    // Two storage accounts with one container each. Shared keys and public network access
    // are off: pods reach each account through a private endpoint in the nodes subnet and
    // authenticate with their workload identity.
    let sku = if env.network.zones.len() > 1 { "Standard_ZRS" } else { "Standard_LRS" };
    // With public network access off, the accounts' public names must resolve to their
    // private endpoints inside the VNet: the private DNS zone of blob endpoints, linked to
    // the VNet (without auto-registration of the VMs' names). Private DNS zones and their
    // links are global resources.
    let blob_zone = g.add(
        tagged(env, Kind::AzurePrivateDnsZone, "blob")
            .set("name", BLOB_PRIVATE_DNS_ZONE)
            .set("resourceGroup", Value::reference(&rg))
            .set("location", "global"),
    );
    g.add(
        tagged(env, Kind::AzurePrivateDnsZoneLink, "blob")
            .set("name", names::azure::resource(&env.name, None))
            .set("zone", Value::reference(&blob_zone))
            .set("vnet", Value::reference(&vnet))
            .set("registrationEnabled", false)
            .set("location", "global"),
    );
    let mut containers = Vec::new();
    for (role, container) in [("data", &env.data_bucket), ("state", &env.state_bucket)] {
        let mut account = in_rg(Kind::AzureStorageAccount, role, names::azure::storage_account(&env.account, &env.name, role))
            .set("kind", "StorageV2")
            .set("sku", sku)
            .set("allowBlobPublicAccess", false)
            .set("allowSharedKeyAccess", false)
            .set("publicNetworkAccess", "Disabled")
            .set("minimumTlsVersion", "TLS1_2")
            .set("httpsOnly", true)
            .set("versioning", true)
            .protect(format!(
                "the {role} storage account holds the {role} container; the reconciler never deletes or replaces it, delete it by hand if you mean to"
            ));
        if role == "data" {
            account = account.set(
                "lifecycle",
                Value::List(vec![Value::map([
                    ("name", "delete-noncurrent-versions".into()),
                    ("action", "Delete".into()),
                    ("daysAfterNoncurrentVersionCreated", NONCURRENT_VERSION_DAYS.into()),
                ])]),
            );
        }
        let account = g.add(account);
        containers.push(
            g.add(
                untagged(Kind::AzureBlobContainer, role)
                    .set("account", Value::reference(&account))
                    .set("name", container.as_str())
                    .set("publicAccess", "None")
                    .protect(format!(
                        "the {role} container holds data; the reconciler never deletes or replaces it, delete it by hand if you mean to"
                    )),
            ),
        );
        let endpoint_name = names::azure::resource(&env.name, Some(&format!("{role}-blob")));
        let endpoint = g.add(
            in_rg(Kind::AzurePrivateEndpoint, &format!("{role}-blob"), endpoint_name.clone())
                .set("subnet", Value::reference(&nodes_subnet))
                .set("target", Value::reference(&account))
                .set("groupId", "blob"),
        );
        // The endpoint's address is written into the zone as the account's A record, so
        // `<account>.blob.core.windows.net` (a CNAME to `<account>.privatelink...`)
        // resolves to it inside the VNet. Named like its endpoint (zone groups take no tags).
        g.add(
            untagged(Kind::AzurePrivateDnsZoneGroup, &format!("{role}-blob"))
                .set("name", endpoint_name)
                .set("endpoint", Value::reference(&endpoint))
                .set("zone", Value::reference(&blob_zone)),
        );
    }
    let data = containers[0].clone();

    // What AKS makes from the Services: the annotations each Service carries.
    let subscriptions = env.control_plane_principals.join(" ");
    for (role, service) in [("agent", AGENT_SERVICE), ("proxy", PROXY_SERVICE)] {
        let pls_name = names::azure::resource(&env.name, Some(role));
        let nodes_name = nodes_subnet.as_str().split_once('/').map_or("", |(_, n)| n);
        let annotations = Value::map([
            ("service.beta.kubernetes.io/azure-load-balancer-internal", "true".into()),
            ("service.beta.kubernetes.io/azure-load-balancer-internal-subnet", nodes_name.into()),
            ("service.beta.kubernetes.io/azure-pls-create", "true".into()),
            ("service.beta.kubernetes.io/azure-pls-name", pls_name.as_str().into()),
            ("service.beta.kubernetes.io/azure-pls-ip-configuration-subnet", names::azure::PRIVATE_LINK_SUBNET.into()),
            ("service.beta.kubernetes.io/azure-pls-visibility", subscriptions.as_str().into()),
            ("service.beta.kubernetes.io/azure-pls-auto-approval", subscriptions.as_str().into()),
            ("service.beta.kubernetes.io/azure-pls-proxy-protocol", "false".into()),
        ]);
        g.add(
            untagged(Kind::AzurePrivateLinkService, role)
                .set("name", pls_name)
                .set("namespace", AGENT_NAMESPACE)
                .set("service", service)
                .set("kubernetesCluster", Value::reference(&aks))
                .set("subnet", Value::reference(&pls_subnet))
                .set("annotations", annotations),
        );
    }
    if let Some(allowed) = &env.public_proxy {
        g.add(
            untagged(Kind::AzureLoadBalancer, "proxy-public")
                .set("name", PUBLIC_PROXY_SERVICE)
                .set("namespace", AGENT_NAMESPACE)
                .set("service", PUBLIC_PROXY_SERVICE)
                .set("kubernetesCluster", Value::reference(&aks))
                .set("loadBalancerSourceRanges", Value::strings(allowed)),
        );
    }

    let agent = identity(env, g, &rg, "agent", &aks, AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, None);
    let slug = |role: &str| role.to_ascii_lowercase().replace(' ', "-");
    for role in AZURE_AGENT_ROLES {
        let mut ra = role_assignment(env, &format!("agent-{}", slug(role)), &agent, role, &rg);
        if *role == "Role Based Access Control Administrator" {
            ra = ra.set("condition", assignable_roles_condition(AZURE_AGENT_ASSIGNABLE_ROLES)).set("conditionVersion", "2.0");
        }
        g.add(ra);
    }
    let state = containers[1].clone();
    for role in AZURE_AGENT_STATE_ROLES {
        g.add(role_assignment(env, &format!("agent-state-{}", slug(role)), &agent, role, &state));
    }
    Foundation { kube_cluster: aks.clone(), data_bucket: data, identity_issuer: aks }
}

#[allow(clippy::too_many_arguments)]
fn identity(
    env: &Environment,
    g: &mut Graph,
    rg: &ResourceId,
    name: &str,
    aks: &ResourceId,
    namespace: &str,
    ksa: &str,
    protection: Option<&str>,
) -> ResourceId {
    let mi = tagged(env, Kind::AzureManagedIdentity, name)
        .set("name", names::azure::identity(&env.name, name))
        .set("resourceGroup", Value::reference(rg))
        .set("location", &env.region);
    let fc = untagged(Kind::AzureFederatedCredential, name)
        .set("name", names::azure::federated_credential(&env.name, name))
        .set("identity", Value::reference(&ResourceId::new(Kind::AzureManagedIdentity, name)))
        .set("issuer", Value::reference(aks))
        .set("subject", format!("system:serviceaccount:{namespace}:{ksa}"))
        .set("audiences", Value::strings(["api://AzureADTokenExchange"]));
    let id = g.add(mi.protect_if(protection));
    g.add(fc.protect_if(protection));
    id
}

/// The ABAC condition that lets a Role Based Access Control Administrator assignment write
/// and delete only assignments of `roles` ("Delegate Azure role assignment management to
/// others with conditions"): the requested role on a write, the existing one on a delete.
pub(crate) fn assignable_roles_condition(roles: &[&str]) -> String {
    const RA: &str = "Microsoft.Authorization/roleAssignments";
    let guids: Vec<&str> =
        roles.iter().filter_map(|r| crate::cloud::azure::identity::BUILT_IN_ROLES.iter().find(|(n, _)| n == r).map(|(_, g)| *g)).collect();
    let guids = guids.join(", ");
    format!(
        "((!(ActionMatches{{'{RA}/write'}})) OR (@Request[{RA}:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{guids}}})) AND ((!(ActionMatches{{'{RA}/delete'}})) OR (@Resource[{RA}:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{guids}}}))"
    )
}

/// The ABAC condition of a cluster's role assignment on the data container: blob reads,
/// writes and deletes only under `<prefix>/`, and listing (a read with the `Blob.List`
/// sub-operation, whose blob path is not known) only with a `prefix` under it.
pub(crate) fn prefix_condition(prefix: &str) -> String {
    const BLOBS: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs";
    format!(
        "((!(ActionMatches{{'{BLOBS}/read'}} AND NOT SubOperationMatches{{'Blob.List'}}) AND !(ActionMatches{{'{BLOBS}/write'}}) AND !(ActionMatches{{'{BLOBS}/add/action'}}) AND !(ActionMatches{{'{BLOBS}/delete'}})) OR (@Resource[{BLOBS}:path] StringStartsWith '{prefix}/')) AND ((!(ActionMatches{{'{BLOBS}/read'}} AND SubOperationMatches{{'Blob.List'}})) OR (@Request[{BLOBS}:prefix] StringStartsWith '{prefix}/'))"
    )
}

/// Whether `r` is a RisingWave cluster's own identity on Azure, the one thing in the cloud
/// the daemon may change: the cluster's user-assigned identity, its federated credential and
/// its role assignment on the data container, all named from the cluster's namespace
/// `rw-<name>` (the agent's are `agent` and `agent-<role>`).
pub fn is_cluster_identity(r: &Resource) -> bool {
    matches!(r.kind, Kind::AzureManagedIdentity | Kind::AzureFederatedCredential | Kind::AzureRoleAssignment)
        && r.id.as_str().split_once('/').is_some_and(|(_, name)| name.starts_with("rw-"))
}

pub(super) fn cluster_identity(
    env: &Environment,
    f: &Foundation,
    c: &Cluster,
    protection: Option<&str>,
    g: &mut Graph,
) -> WorkloadIdentity {
    let ns = cluster_namespace(c);
    let rg = ResourceId::new(Kind::AzureResourceGroup, "main");
    let mi = identity(env, g, &rg, &ns, &f.identity_issuer, &ns, &ns, protection);
    for role in AZURE_CLUSTER_ROLES {
        let ra = role_assignment(env, &format!("{ns}-data"), &mi, role, &f.data_bucket)
            .set("condition", prefix_condition(&c.state_prefix))
            .set("conditionVersion", "2.0");
        g.add(ra.protect_if(protection));
    }
    WorkloadIdentity {
        annotations: [("azure.workload.identity/client-id", Value::reference(&mi))].into_iter().collect(),
        pod_labels: [("azure.workload.identity/use", Value::from("true"))].into_iter().collect(),
        identity: mi,
    }
}

/// The name of the environment's resource group in a graph `expand` made (empty if the
/// graph has none): the scope every Azure call of `byoc apply` and the daemon is made in.
pub fn resource_group_name(graph: &Graph) -> String {
    graph
        .resources
        .get(&ResourceId::new(Kind::AzureResourceGroup, "main"))
        .and_then(|r| r.properties.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, plan};
    use crate::resource::Map;

    fn example() -> crate::spec::Specs {
        let dir = format!("{}/../examples/azure", env!("CARGO_MANIFEST_DIR"));
        let files = rwproxy::specfiles::read_dir(std::path::Path::new(&dir)).expect("example readable");
        crate::spec::load::load(&dir, &files).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn get<'a>(g: &'a Graph, kind: Kind, name: &str) -> &'a Resource {
        g.resources.get(&ResourceId::new(kind, name)).unwrap_or_else(|| panic!("no {kind:?}/{name}"))
    }

    fn text<'a>(r: &'a Resource, prop: &str) -> &'a str {
        r.properties.get(prop).and_then(Value::as_str).unwrap_or_else(|| panic!("{} has no text {prop}", r.id))
    }

    fn map<'a>(r: &'a Resource, prop: &str) -> &'a Map {
        match r.properties.get(prop) {
            Some(Value::Map(m)) => m,
            other => panic!("{} {prop}: {other:?}", r.id),
        }
    }

    fn strings(v: Option<&Value>) -> Vec<String> {
        match v {
            Some(Value::List(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            other => panic!("not a list: {other:?}"),
        }
    }

    #[test]
    fn tag_names_are_ones_azure_accepts_and_what_takes_no_tags_is_named_for_its_owner() {
        let specs = example();
        let g = super::super::expand(&specs);
        let env = &specs.environment.name;
        for r in g.resources.values().filter(|r| r.kind.as_str().starts_with("azure.")) {
            match r.properties.get("tags") {
                Some(Value::Map(tags)) => {
                    assert!(!names::azure::UNTAGGED.contains(&r.kind), "{} cannot be tagged", r.id);
                    for (k, _) in tags.iter() {
                        names::AZURE_TAG_NAME.check(k).unwrap_or_else(|e| panic!("{}: {e}", r.id));
                    }
                    assert_eq!(tags.get(names::azure::TAG_ENVIRONMENT), Some(&Value::from(env.as_str())), "{}", r.id);
                    assert_eq!(tags.get(names::azure::TAG_RESOURCE), Some(&Value::from(r.id.as_str())), "{}", r.id);
                }
                _ => assert!(names::azure::UNTAGGED.contains(&r.kind), "{} has no tags", r.id),
            }
        }
        // Role assignments: a GUID from the id, the owner in the description.
        let ra = get(&g, Kind::AzureRoleAssignment, "rw-analytics-data");
        names::AZURE_ROLE_ASSIGNMENT.check(text(ra, "name")).expect("a GUID");
        assert_eq!(text(ra, "name"), names::azure::role_assignment(&specs.environment.account, env, ra.id.as_str()));
        assert_eq!(names::gcp::owner_of(text(ra, "description")), Some((env.as_str(), ra.id.as_str())));
        // Another environment of the subscription never names the same assignment.
        assert_ne!(text(ra, "name"), names::azure::role_assignment(&specs.environment.account, "staging", ra.id.as_str()));
        // Federated credentials are named for the environment.
        let fc = get(&g, Kind::AzureFederatedCredential, "rw-analytics");
        assert!(text(fc, "name").starts_with(&format!("byoc-{env}-")), "{}", text(fc, "name"));
    }

    #[test]
    fn no_load_balancers_of_its_own_services_make_private_link_for_the_control_plane_only() {
        let mut specs = example();
        let principals = specs.environment.control_plane_principals.join(" ");
        let g = super::super::expand(&specs);
        let pls_subnet = get(&g, Kind::AzureSubnet, names::azure::PRIVATE_LINK_SUBNET);
        assert_eq!(text(pls_subnet, "privateLinkServiceNetworkPolicies"), "Disabled");
        for (role, service) in [("agent", AGENT_SERVICE), ("proxy", PROXY_SERVICE)] {
            let pls = get(&g, Kind::AzurePrivateLinkService, role);
            assert_eq!((text(pls, "namespace"), text(pls, "service")), (AGENT_NAMESPACE, service));
            let a = map(pls, "annotations");
            let at = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or_else(|| panic!("{role}: no {k}")).to_owned();
            assert_eq!(at("service.beta.kubernetes.io/azure-load-balancer-internal"), "true");
            assert_eq!(at("service.beta.kubernetes.io/azure-load-balancer-internal-subnet"), "nodes");
            assert_eq!(at("service.beta.kubernetes.io/azure-pls-create"), "true");
            assert_eq!(at("service.beta.kubernetes.io/azure-pls-ip-configuration-subnet"), names::azure::PRIVATE_LINK_SUBNET);
            assert_eq!(at("service.beta.kubernetes.io/azure-pls-visibility"), principals);
            assert_eq!(at("service.beta.kubernetes.io/azure-pls-auto-approval"), principals);
            assert!(pls.properties.get("loadBalancer").is_none(), "AKS makes the load balancer");
        }
        // The only load balancer left is the public proxy's Service, and only when asked.
        let lbs: Vec<&Resource> = g.resources.values().filter(|r| r.kind == Kind::AzureLoadBalancer).collect();
        assert_eq!(lbs.len(), 1);
        assert_eq!(text(lbs[0], "service"), PUBLIC_PROXY_SERVICE);
        assert_eq!(strings(lbs[0].properties.get("loadBalancerSourceRanges")), vec!["198.51.100.0/24"]);
        specs.environment.public_proxy = None;
        let g = super::super::expand(&specs);
        assert!(!g.resources.values().any(|r| r.kind == Kind::AzureLoadBalancer));
    }

    #[test]
    fn a_pool_resize_is_one_in_place_update_and_a_new_zone_list_replaces_the_pool() {
        let specs = example();
        let before = super::super::expand(&specs);
        let step = |after: &crate::spec::Specs| {
            let p = plan(&super::super::expand(after), &before);
            let changed: Vec<(String, Action)> =
                p.steps.iter().filter(|s| s.action != Action::NoOp).map(|s| (s.id.to_string(), s.action)).collect();
            changed
        };
        let mut resized = specs.clone();
        resized.environment.kubernetes.node_groups[1].max = 12;
        assert_eq!(step(&resized), vec![("azure.node-pool/risingwave".to_owned(), Action::Update)]);
        let mut rezoned = specs.clone();
        rezoned.environment.network.zones = vec!["1".to_owned(), "2".to_owned()];
        let changed = step(&rezoned);
        assert!(changed.contains(&("azure.node-pool/risingwave".to_owned(), Action::Replace)), "{changed:?}");
    }

    #[test]
    fn the_public_proxy_service_named_here_is_the_manifests() {
        let service = include_str!("../../../manifests/components/public-proxy/service.yaml");
        assert!(service.contains(&format!("  name: {PUBLIC_PROXY_SERVICE}\n")));
    }

    #[test]
    fn the_nat_gateway_is_in_one_zone_or_none_with_a_public_ip_and_aks_sends_egress_through_it() {
        let cases: [(&[&str], &[&str], &[&str]); 3] =
            [(&["1", "2", "3"], &[], &["1", "2", "3"]), (&["2"], &["2"], &["2"]), (&["1", "3"], &[], &["1", "3"])];
        for (zones, want_nat, want_ip) in cases {
            let mut specs = example();
            specs.environment.network.zones = zones.iter().map(|z| (*z).to_owned()).collect();
            let g = super::super::expand(&specs);
            let nat = get(&g, Kind::AzureNatGateway, "main");
            assert_eq!(strings(nat.properties.get("zones")), want_nat, "{zones:?}");
            assert_eq!(text(nat, "sku"), "Standard");
            let ip = get(&g, Kind::AzurePublicIp, "nat");
            assert_eq!(nat.properties.get("publicIps"), Some(&Value::List(vec![Value::reference(&ip.id)])));
            assert_eq!(
                (text(ip, "sku"), strings(ip.properties.get("zones"))),
                ("Standard", want_ip.iter().map(|z| (*z).to_owned()).collect())
            );
            let aks = get(&g, Kind::AzureAksCluster, "main");
            assert_eq!(map(aks, "network").get("outboundType"), Some(&Value::from("userAssignedNATGateway")));
            assert_eq!(get(&g, Kind::AzureSubnet, "nodes").properties.get("natGateway"), Some(&Value::reference(&nat.id)));
        }
    }

    #[test]
    fn aks_has_a_system_pool_an_overlay_network_vnet_integration_and_a_control_plane_identity_with_rights_on_its_subnets() {
        let specs = example();
        let g = super::super::expand(&specs);
        let aks = get(&g, Kind::AzureAksCluster, "main");
        let net = map(aks, "network");
        for (k, v) in [
            ("plugin", "azure"),
            ("pluginMode", "overlay"),
            ("podCidr", "10.244.0.0/16"),
            ("serviceCidr", "172.40.0.0/16"),
            ("dnsServiceIP", "172.40.0.10"),
        ] {
            assert_eq!(net.get(k).and_then(Value::as_str), Some(v), "{k}");
        }
        let service: IpNet = "172.40.0.0/16".parse().expect("cidr");
        assert!(service.contains(&"172.40.0.10".parse::<std::net::IpAddr>().expect("ip")));
        assert_eq!(get(&g, Kind::AzureNodePool, "system").properties.get("mode"), Some(&Value::from("System")));
        assert_eq!(get(&g, Kind::AzureNodePool, "risingwave").properties.get("mode"), Some(&Value::from("User")));
        assert_eq!(text(aks, "systemPool"), "system");
        let api = get(&g, Kind::AzureSubnet, names::azure::API_SERVER_SUBNET);
        assert_eq!(text(api, "delegation"), "Microsoft.ContainerService/managedClusters");
        assert_eq!(text(api, "cidr"), "10.40.65.0/28");
        assert_eq!(aks.properties.get("apiServerSubnet"), Some(&Value::reference(&api.id)));
        let identity = ResourceId::new(Kind::AzureManagedIdentity, "aks");
        assert_eq!(map(aks, "identity").get("id"), Some(&Value::reference(&identity)));
        for subnet in ["nodes", names::azure::API_SERVER_SUBNET, names::azure::PRIVATE_LINK_SUBNET] {
            let ra = get(&g, Kind::AzureRoleAssignment, &format!("aks-network-{subnet}"));
            assert_eq!(ra.properties.get("principal"), Some(&Value::reference(&identity)));
            assert_eq!(ra.properties.get("scope"), Some(&Value::reference(&ResourceId::new(Kind::AzureSubnet, subnet))));
            assert_eq!(text(ra, "role"), CONTROL_PLANE_ROLE);
            assert!(aks.depends_on.contains(&ra.id), "AKS is created after its identity may use {subnet}");
        }
        assert_eq!(dns_service_ip("10.0.0.0/16".parse().expect("cidr")), "10.0.0.10");
    }

    #[test]
    fn two_locked_down_storage_accounts_one_container_each_and_a_cluster_may_list_its_prefix() {
        let specs = example();
        let g = super::super::expand(&specs);
        for (role, container) in [("data", "risingwave-data"), ("state", "byoc-state")] {
            let account = get(&g, Kind::AzureStorageAccount, role);
            names::AZURE_STORAGE_ACCOUNT.check(text(account, "name")).expect("valid");
            for (k, v) in [("allowSharedKeyAccess", Value::from(false)), ("allowBlobPublicAccess", Value::from(false))] {
                assert_eq!(account.properties.get(k), Some(&v), "{role} {k}");
            }
            assert_eq!(text(account, "publicNetworkAccess"), "Disabled");
            assert_eq!(text(account, "sku"), "Standard_ZRS");
            assert!(account.protection.is_some());
            let c = get(&g, Kind::AzureBlobContainer, role);
            assert_eq!(text(c, "name"), container);
            assert_eq!(c.properties.get("account"), Some(&Value::reference(&account.id)));
            let pe = get(&g, Kind::AzurePrivateEndpoint, &format!("{role}-blob"));
            assert_eq!(pe.properties.get("target"), Some(&Value::reference(&account.id)));
            // Each endpoint's address goes into the blob private DNS zone.
            let group = get(&g, Kind::AzurePrivateDnsZoneGroup, &format!("{role}-blob"));
            assert_eq!(group.properties.get("endpoint"), Some(&Value::reference(&pe.id)));
            assert_eq!(group.properties.get("zone"), Some(&Value::reference(&ResourceId::new(Kind::AzurePrivateDnsZone, "blob"))));
            assert!(group.properties.get("tags").is_none(), "zone groups take no tags");
        }
        let zone = get(&g, Kind::AzurePrivateDnsZone, "blob");
        assert_eq!((text(zone, "name"), text(zone, "location")), ("privatelink.blob.core.windows.net", "global"));
        assert!(zone.properties.get("tags").is_some());
        let link = get(&g, Kind::AzurePrivateDnsZoneLink, "blob");
        assert_eq!(link.properties.get("vnet"), Some(&Value::reference(&ResourceId::new(Kind::AzureVnet, "main"))));
        assert_eq!(link.properties.get("registrationEnabled"), Some(&Value::from(false)));
        assert_eq!(text(link, "location"), "global");
        assert_ne!(text(get(&g, Kind::AzureStorageAccount, "data"), "name"), text(get(&g, Kind::AzureStorageAccount, "state"), "name"));
        assert_eq!(text(get(&g, Kind::AzureStorageAccount, "data"), "name"), storage_account_name(&specs.environment));
        match get(&g, Kind::AzureStorageAccount, "data").properties.get("lifecycle") {
            Some(Value::List(rules)) => assert!(rules.iter().any(|r| matches!(r, Value::Map(m)
                if m.get("daysAfterNoncurrentVersionCreated") == Some(&Value::from(NONCURRENT_VERSION_DAYS))))),
            other => panic!("{other:?}"),
        }
        assert!(get(&g, Kind::AzureStorageAccount, "state").properties.get("lifecycle").is_none());
        let ra = get(&g, Kind::AzureRoleAssignment, "rw-analytics-data");
        let condition = text(ra, "condition");
        let prefix = &specs.clusters.iter().find(|c| c.name == "analytics").expect("analytics").state_prefix;
        assert!(condition.contains(&format!("blobs:path] StringStartsWith '{prefix}/'")), "{condition}");
        assert!(condition.contains(&format!("blobs:prefix] StringStartsWith '{prefix}/'")), "{condition}");
        assert!(condition.contains("SubOperationMatches{'Blob.List'}"), "{condition}");
        assert_eq!(text(ra, "conditionVersion"), "2.0");
    }

    #[test]
    fn renaming_the_resource_group_is_refused_with_the_storage_accounts_and_an_adopted_one_is_never_deleted() {
        let specs = example();
        let before = super::super::expand(&specs);
        let mut renamed = specs.clone();
        renamed.environment.resource_group = Some("rg-risingwave-prod-2".to_owned());
        let after = super::super::expand(&renamed);
        let p = plan(&after, &before);
        let action = |kind: Kind, name: &str| {
            let id = ResourceId::new(kind, name);
            p.steps.iter().find(|s| s.id == id).map(|s| (s.action, s.reason.clone())).unwrap_or_else(|| panic!("no step {id}"))
        };
        let (rg, why) = action(Kind::AzureResourceGroup, "main");
        assert_eq!(rg, Action::Blocked, "{why}");
        assert!(why.contains("adopted"), "{why}");
        for role in ["data", "state"] {
            let (a, why) = action(Kind::AzureStorageAccount, role);
            assert_eq!(a, Action::Blocked, "{role}: the account goes with its group, never an in-place update: {why}");
        }
        // Destroy: the adopted group stays.
        let (rg, why) = {
            let p = plan(&Graph::default(), &before);
            let s = p.steps.iter().find(|s| s.id == ResourceId::new(Kind::AzureResourceGroup, "main")).expect("step");
            (s.action, s.reason.clone())
        };
        assert_eq!(rg, Action::Blocked, "{why}");
        // Also with the protections lifted (`destroy --delete-data`): adopted, not ours.
        let mut lifted = before.clone();
        for r in lifted.resources.values_mut() {
            r.protection = None;
        }
        let p = plan(&Graph::default(), &lifted);
        let s = p.steps.iter().find(|s| s.id == ResourceId::new(Kind::AzureResourceGroup, "main")).expect("step");
        assert_eq!(s.action, Action::Blocked, "{}", s.reason);
        assert!(p.steps.iter().any(|s| s.id == ResourceId::new(Kind::AzureStorageAccount, "data") && s.action == Action::Delete));
        let rg = get(&before, Kind::AzureResourceGroup, "main");
        assert_eq!(rg.properties.get("adopted"), Some(&Value::from(true)));
        // The default group is byoc's own, and protected because it holds the data.
        let mut default = specs.clone();
        default.environment.resource_group = None;
        default.environment.adopt_resource_group = false;
        let g = super::super::expand(&default);
        let rg = get(&g, Kind::AzureResourceGroup, "main");
        assert_eq!(rg.properties.get("adopted"), Some(&Value::from(false)));
        assert!(rg.protection.as_deref().is_some_and(|p| p.contains("storage accounts")), "{:?}", rg.protection);
    }
}
