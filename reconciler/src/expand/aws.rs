//! AWS: VPC with subnets, gateways and security groups; EKS with its roles, OIDC provider
//! and managed node groups; S3 buckets; a VPC endpoint service per internal NLB (the NLBs
//! are the sidecar's Services', made by the AWS Load Balancer Controller); IRSA
//! roles (the agent's, the AWS Load Balancer Controller's, the clusters').

use super::permissions::{
    AWS_CLUSTER_BUCKET_ACTIONS, AWS_CLUSTER_OBJECT_ACTIONS, aws_agent_statements, aws_load_balancer_controller_statements,
};
use super::{
    AGENT_NAMESPACE, AGENT_SERVICE, AGENT_SERVICE_ACCOUNT, Foundation, PROXY_SERVICE, WorkloadIdentity, cluster_namespace, names,
    tagged as resource,
};
use crate::expand::TAG_ENVIRONMENT;
use crate::resource::{Graph, Kind, Map, Resource, ResourceId, Value};
use crate::spec::{Cluster, Environment, NatGateways, Tier};

/// The internal NLBs the AWS Load Balancer Controller makes for the sidecar's Services, by
/// the id name of their `aws.service-nlb` resource: the control plane reaches each through
/// a VPC endpoint service of its own.
pub const SERVICE_LOAD_BALANCERS: [(&str, &str); 2] = [("agent", AGENT_SERVICE), ("proxy", PROXY_SERVICE)];

/// The controller's `service.k8s.aws/stack` tag value of the sidecar's Service `service`.
pub fn service_stack(service: &str) -> String {
    format!("{AGENT_NAMESPACE}/{service}")
}

pub(super) fn environment(env: &Environment, g: &mut Graph) -> Foundation {
    let prefix = format!("byoc-{}", env.name);
    let vpc = g.add(
        resource(env, Kind::AwsVpc, "main")
            .set("cidr", env.network.cidr.to_string())
            .set("region", &env.region)
            .set("enableDnsHostnames", true),
    );

    let mut private = Vec::new();
    let mut public = Vec::new();
    for s in &env.network.subnets {
        // The elb role tags let the AWS load balancer controller find the subnets.
        let elb_tag = match s.tier {
            Tier::Private => "kubernetes.io/role/internal-elb",
            Tier::Public => "kubernetes.io/role/elb",
        };
        let mut r = resource(env, Kind::AwsSubnet, &s.name);
        if let Some(Value::Map(t)) = r.properties.get_mut("tags") {
            t.insert(elb_tag, Value::from("1"));
        }
        let id = g.add(
            r.set("vpc", Value::reference(&vpc))
                .set("cidr", s.cidr.to_string())
                .set("zone", s.zone.clone().unwrap_or_default())
                .set("tier", s.tier.as_str())
                .set("mapPublicIpOnLaunch", false),
        );
        match s.tier {
            Tier::Private => private.push(id),
            Tier::Public => public.push(id),
        }
    }

    let igw = g.add(resource(env, Kind::AwsInternetGateway, "main").set("vpc", Value::reference(&vpc)));
    g.add(
        resource(env, Kind::AwsRouteTable, "public")
            .set("vpc", Value::reference(&vpc))
            .set("routes", Value::List(vec![Value::map([("destination", "0.0.0.0/0".into()), ("target", Value::reference(&igw))])]))
            .set("subnets", Value::references(&public)),
    );
    let private_tables = private_routes(env, g, &vpc, &igw);

    // S3 traffic from the private subnets goes through a gateway endpoint rather than the
    // NAT gateway, which bills every GB it carries; the endpoint itself costs nothing.
    g.add(
        resource(env, Kind::AwsVpcEndpoint, "s3")
            .set("vpc", Value::reference(&vpc))
            .set("service", names::aws::s3_gateway_service(&env.region))
            .set("type", "Gateway")
            .set("routeTables", Value::references(&private_tables)),
    );

    let vpc_cidr = env.network.cidr.to_string();
    let sg_cluster = g.add(
        resource(env, Kind::AwsSecurityGroup, "cluster")
            .set("vpc", Value::reference(&vpc))
            .set("name", format!("{prefix}-cluster"))
            .set("ingress", Value::List(vec![Value::map([("protocol", "all".into()), ("from", vpc_cidr.as_str().into())])])),
    );
    let cluster_role = g.add(
        resource(env, Kind::AwsIamRole, "eks-cluster")
            .set("name", names::aws::role(&env.name, "eks-cluster"))
            .set("trust", Value::map([("service", "eks.amazonaws.com".into())]))
            .set("managedPolicies", Value::strings([names::aws::arn(&env.region, "iam::aws:policy/AmazonEKSClusterPolicy")])),
    );
    let node_role = g.add(
        resource(env, Kind::AwsIamRole, "eks-node")
            .set("name", names::aws::role(&env.name, "eks-node"))
            .set("trust", Value::map([("service", "ec2.amazonaws.com".into())]))
            .set(
                "managedPolicies",
                Value::strings(
                    ["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"]
                        .map(|p| names::aws::arn(&env.region, &format!("iam::aws:policy/{p}"))),
                ),
            ),
    );
    let k = &env.kubernetes;
    let eks = g.add(
        resource(env, Kind::AwsEksCluster, "main")
            .set("name", names::aws::eks_cluster(&env.name))
            .set("version", &k.version)
            // Explicit, never EKS's default (EXTENDED): extended support costs six times
            // standard, and a STANDARD cluster is upgraded by EKS at the end of standard
            // support instead of billed for staying.
            .set("upgradePolicy", super::eks::support_type(k.extended_support))
            .set("role", Value::reference(&cluster_role))
            .set("subnets", Value::references(&private))
            .set("securityGroups", Value::references([&sg_cluster]))
            .set("endpointPrivateAccess", true)
            .set("endpointPublicAccess", !k.api_access.public_cidrs.is_empty())
            .set("publicAccessCidrs", Value::strings(&k.api_access.public_cidrs))
            .set("serviceCidr", k.service_cidr.map(|c| c.to_string()).unwrap_or_default())
            // Access entries, not the aws-auth ConfigMap: who administers the cluster is
            // in the graph (and the plan), not in a ConfigMap only the creator can edit.
            .set("authenticationMode", "API")
            // With administrators named, the creator (whoever ran the first apply) gets no
            // entry of its own beside theirs: name it among them to keep it admin.
            .set("bootstrapCreatorAdmin", k.api_access.administrators.is_empty()),
    );
    for principal in &k.api_access.administrators {
        g.add(
            resource(env, Kind::AwsEksAccessEntry, &access_entry_name(principal))
                .set("cluster", Value::reference(&eks))
                .set("principal", principal.as_str())
                .set("policy", names::aws::arn(&env.region, &format!("eks::aws:cluster-access-policy/{CLUSTER_ADMIN_POLICY}")))
                .set("scope", "cluster"),
        );
    }
    let oidc = g.add(
        resource(env, Kind::AwsOidcProvider, "main")
            .set("cluster", Value::reference(&eks))
            .set("clientIds", Value::strings(["sts.amazonaws.com"])),
    );
    let mut node_groups = Vec::new();
    for ng in &k.node_groups {
        // One launch template per node group: an encrypted gp3 root volume of the spec's
        // size, IMDSv2 only, and the user's tags on the instances and their volumes (EKS
        // copies a node group's tags to neither).
        let mut user_tags = env.tags.clone();
        user_tags.insert(TAG_ENVIRONMENT.to_owned(), env.name.clone());
        let template = g.add(
            resource(env, Kind::AwsLaunchTemplate, &ng.name)
                .set("name", names::aws::role(&env.name, &ng.name))
                .set("rootVolumeGiB", ng.root_volume_gib)
                .set("volumeType", "gp3")
                .set("encrypted", true)
                .set("instanceTags", Value::string_map(&user_tags)),
        );
        // Nodes in a private subnet join the cluster by pulling images and reaching EKS's
        // endpoints: without the NAT route they fail, and the group ends CREATE_FAILED.
        let mut group = resource(env, Kind::AwsEksNodeGroup, &ng.name);
        for table in &private_tables {
            group = group.after(table);
        }
        node_groups.push(
            g.add(
                group
                    .set("cluster", Value::reference(&eks))
                    .set("nodeRole", Value::reference(&node_role))
                    .set("instanceType", &ng.machine_type)
                    .set("amiType", super::eks::ami_type(&ng.machine_type))
                    .set("launchTemplate", Value::reference(&template))
                    .set("version", &k.version)
                    .set("subnets", Value::references(&private))
                    .set("minSize", ng.min)
                    .set("maxSize", ng.max)
                    .set("labels", super::node_labels(ng))
                    .set("taints", super::taints(ng)),
            ),
        );
    }

    // The EBS CSI driver as an EKS add-on, with its own IRSA role: RisingWave's meta store
    // needs a volume, and EKS 1.30+ has no default StorageClass (byoc renders one).
    let csi_role = g.add(
        irsa_role(env, "ebs-csi", &names::aws::role(&env.name, "ebs-csi"), &oidc, "kube-system", EBS_CSI_SERVICE_ACCOUNT, Vec::new())
            .set("managedPolicies", Value::strings([names::aws::arn(&env.region, EBS_CSI_POLICY)])),
    );
    let mut addon = resource(env, Kind::AwsEksAddon, EBS_CSI_ADDON)
        .set("cluster", Value::reference(&eks))
        .set("name", EBS_CSI_ADDON)
        .set("serviceAccountRole", Value::reference(&csi_role));
    // Its controller runs on nodes: made before any, the add-on reads DEGRADED.
    for n in &node_groups {
        addon = addon.after(n);
    }
    let addon = g.add(addon);
    // The default StorageClass, applied into the cluster with the sidecar; its volumes are
    // the add-on's.
    g.add(
        Resource::new(Kind::K8sStorageClass, super::eks::STORAGE_CLASS)
            .set("name", super::eks::STORAGE_CLASS)
            .set("provisioner", super::eks::STORAGE_CLASS_PROVISIONER)
            .set("parameters", Value::map(super::eks::STORAGE_CLASS_PARAMETERS.map(|(k, v)| (k, Value::from(v)))))
            .set("volumeBindingMode", super::eks::STORAGE_CLASS_BINDING)
            .set("reclaimPolicy", super::eks::STORAGE_CLASS_RECLAIM)
            .set("allowVolumeExpansion", true)
            .set("default", true)
            .set("kubernetesCluster", Value::reference(&eks))
            .after(&addon),
    );

    let mut bucket = |role: &str, name: &str| {
        g.add(
            resource(env, Kind::AwsS3Bucket, role)
                .set("name", name)
                .set("region", &env.region)
                .set("versioning", true)
                .set("encryption", "aws:kms")
                .set("publicAccessBlock", true)
                .protect(format!("the {role} bucket holds data; the reconciler never deletes or replaces buckets, empty and delete it by hand if you mean to")),
        )
    };
    let data = bucket("data", &env.data_bucket);
    bucket("state", &env.state_bucket);
    // RisingWave rewrites and deletes its SST files all the time; in a versioned bucket each
    // leaves a noncurrent version that is billed until it expires.
    if let Some(r) = g.resources.get_mut(&data) {
        r.properties.insert("noncurrentVersionDays", Value::from(env.noncurrent_version_days));
    }

    // The agent's and the proxy's internal NLBs are their Services' (byoc-system/byoc-agent,
    // byoc-system/rwproxy), made by the AWS Load Balancer Controller once the sidecar is
    // installed; the graph names them so that each gets a VPC endpoint service of its own,
    // made after the Kubernetes half (`crate::pipeline::apply::after_kubernetes`). An
    // interface endpoint reaches one NLB per zone, so two NLBs behind one service would give
    // the control plane one of the two. Each connection waits for acceptance, and only the
    // control plane's principals may ask. The public proxy's NLB, if any, is its Service's
    // alone: nothing in the cloud stands on it.
    for (role, service) in SERVICE_LOAD_BALANCERS {
        let lb = g.add(
            // No tags: the controller tags it (`elbv2.k8s.aws/cluster`, `service.k8s.aws/stack`).
            Resource::new(Kind::AwsServiceNlb, role)
                .set("service", service_stack(service))
                .set("cluster", Value::reference(&eks))
                .set("scheme", "internal"),
        );
        g.add(
            resource(env, Kind::AwsVpcEndpointService, role)
                .set("loadBalancers", Value::references([&lb]))
                .set("allowedPrincipals", Value::strings(&env.control_plane_principals))
                .set("acceptanceRequired", true),
        );
    }

    let agent_statements = aws_agent_statements(&env.region, &env.account, &env.name, &env.state_bucket);
    g.add(irsa_role(env, "agent", &names::aws::role(&env.name, "agent"), &oidc, AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, agent_statements));
    // The AWS Load Balancer Controller's identity: it makes the NLBs of the agent's and the
    // proxy's Services (`../shared/DESIGN.md`, "Load balancers and private connectivity").
    let lbc_statements = aws_load_balancer_controller_statements(&env.region, &env.account, &env.name);
    g.add(irsa_role(
        env,
        LOAD_BALANCER_CONTROLLER,
        &names::aws::role(&env.name, LOAD_BALANCER_CONTROLLER),
        &oidc,
        LOAD_BALANCER_CONTROLLER_NAMESPACE,
        LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT,
        lbc_statements,
    ));

    // The ceiling of every cluster role: the daemon may create roles under the clusters'
    // path only with this boundary attached (policies/aws/agent.json), so a role it makes
    // can never do more than this, whatever inline policy it is given.
    let bucket_arn = names::aws::arn(&env.region, &format!("s3:::{}", env.data_bucket));
    g.add(
        resource(env, Kind::AwsIamPolicy, CLUSTER_BOUNDARY)
            .set("name", boundary_name(&env.name))
            .set("path", environment_path(&env.name))
            .set(
                "document",
                Value::List(vec![
                    statement(AWS_CLUSTER_OBJECT_ACTIONS, vec![format!("{bucket_arn}/*")], None),
                    statement(AWS_CLUSTER_BUCKET_ACTIONS, vec![bucket_arn], None),
                ]),
            ),
    );

    Foundation { kube_cluster: eks, data_bucket: data, identity_issuer: oidc }
}

pub(super) fn cluster_identity(
    env: &Environment,
    f: &Foundation,
    c: &Cluster,
    protection: Option<&str>,
    g: &mut Graph,
) -> WorkloadIdentity {
    let ns = cluster_namespace(c);
    let bucket_arn = names::aws::arn(&env.region, &format!("s3:::{}", env.data_bucket));
    let statements = vec![
        statement(AWS_CLUSTER_OBJECT_ACTIONS, vec![format!("{bucket_arn}/{}/*", c.state_prefix)], None),
        statement(AWS_CLUSTER_BUCKET_ACTIONS, vec![bucket_arn], Some(format!("{}/*", c.state_prefix))),
    ];
    let boundary = ResourceId::new(Kind::AwsIamPolicy, CLUSTER_BOUNDARY);
    let id = g.add(
        irsa_role(env, &ns, &cluster_role_name(env, c), &f.identity_issuer, &ns, &ns, statements)
            .set("path", cluster_role_path(&env.name))
            .set("permissionsBoundary", Value::reference(&boundary))
            .after(&f.data_bucket)
            .protect_if(protection),
    );
    WorkloadIdentity {
        annotations: [("eks.amazonaws.com/role-arn", Value::reference(&id))].into_iter().collect(),
        pod_labels: Map::new(),
        identity: id,
    }
}

/// The EKS access policy the administrators' access entries carry, on the whole cluster.
pub const CLUSTER_ADMIN_POLICY: &str = "AmazonEKSClusterAdminPolicy";

/// Resource name of the access entry of `principal`: `admin-` and a digest of the ARN, so
/// the id stays when the list is reordered and two ARNs ending alike stay apart.
pub fn access_entry_name(principal: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(principal.as_bytes());
    format!("admin-{}", d.iter().take(6).map(|b| format!("{b:02x}")).collect::<String>())
}

/// Name (resource id and role suffix) of the AWS Load Balancer Controller's IRSA role.
pub const LOAD_BALANCER_CONTROLLER: &str = "load-balancer-controller";
/// Namespace and service account the AWS Load Balancer Controller runs as, which its role
/// trusts (the controller's documented install puts it there).
pub const LOAD_BALANCER_CONTROLLER_NAMESPACE: &str = "kube-system";
/// See [`LOAD_BALANCER_CONTROLLER_NAMESPACE`].
pub const LOAD_BALANCER_CONTROLLER_SERVICE_ACCOUNT: &str = "aws-load-balancer-controller";

/// The NAT gateways and the private route tables, each routing to a NAT gateway: with
/// `natGateways: single` one gateway (`aws.nat-gateway/main`, in the first public subnet)
/// and one table (`aws.route-table/private`); with `perZone` one of each per zone
/// (`aws.nat-gateway/<zone>`, `aws.route-table/private-<zone>`), so a zone's loss cuts
/// only its own egress. Returns the route tables.
fn private_routes(env: &Environment, g: &mut Graph, vpc: &ResourceId, igw: &ResourceId) -> Vec<ResourceId> {
    let subnet_id = |s: &crate::spec::Subnet| ResourceId::new(Kind::AwsSubnet, &s.name);
    let public: Vec<&crate::spec::Subnet> = env.network.subnets.iter().filter(|s| s.tier == Tier::Public).collect();
    let private: Vec<&crate::spec::Subnet> = env.network.subnets.iter().filter(|s| s.tier == Tier::Private).collect();
    let table = |g: &mut Graph, name: &str, nat: Option<ResourceId>, subnets: Vec<ResourceId>| {
        g.add(
            resource(env, Kind::AwsRouteTable, name)
                .set("vpc", Value::reference(vpc))
                .set(
                    "routes",
                    Value::List(
                        nat.iter().map(|n| Value::map([("destination", "0.0.0.0/0".into()), ("target", Value::reference(n))])).collect(),
                    ),
                )
                .set("subnets", Value::references(&subnets)),
        )
    };
    let nat = |g: &mut Graph, name: &str, subnet: &crate::spec::Subnet| {
        g.add(
            resource(env, Kind::AwsNatGateway, name)
                .set("subnet", Value::reference(&subnet_id(subnet)))
                .set("connectivity", "public")
                .after(igw),
        )
    };
    match env.network.nat_gateways {
        NatGateways::Single => {
            // Validation guarantees a public subnet on AWS; without one there is no NAT.
            let n = public.first().map(|first| nat(g, "main", first));
            vec![table(g, "private", n, private.iter().map(|s| subnet_id(s)).collect())]
        }
        NatGateways::PerZone => env
            .network
            .zones
            .iter()
            .map(|zone| {
                let in_zone = |s: &&&crate::spec::Subnet| s.zone.as_deref() == Some(zone.as_str());
                let n = public.iter().find(in_zone).map(|first| nat(g, zone, first));
                table(g, &format!("private-{zone}"), n, private.iter().filter(in_zone).map(|s| subnet_id(s)).collect())
            })
            .collect(),
    }
}

/// The EKS add-on name of the EBS CSI driver.
pub const EBS_CSI_ADDON: &str = "aws-ebs-csi-driver";
/// The service account of the EBS CSI controller, in kube-system.
pub const EBS_CSI_SERVICE_ACCOUNT: &str = "ebs-csi-controller-sa";
/// The AWS managed policy of the EBS CSI driver's role (policies/aws/ebs-csi-driver.json).
pub const EBS_CSI_POLICY: &str = "iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy";

/// Id suffix of the permissions boundary of the cluster roles.
const CLUSTER_BOUNDARY: &str = "cluster-boundary";

/// IAM path of everything byoc makes for environment `env`: `/byoc/<env>/`.
pub fn environment_path(env: &str) -> String {
    format!("/byoc/{env}/")
}

/// IAM path of the clusters' roles, the only roles the in-account daemon may write:
/// `/byoc/<env>/clusters/` (policies/aws/agent.json grants IAM writes on it alone).
pub fn cluster_role_path(env: &str) -> String {
    format!("/byoc/{env}/clusters/")
}

/// Name of the managed policy that bounds every cluster role: `byoc-<env>-cluster-boundary`.
pub fn boundary_name(env: &str) -> String {
    names::aws::role(env, CLUSTER_BOUNDARY)
}

/// Whether `r` is a RisingWave cluster's own cloud identity (a role under
/// [`cluster_role_path`]): what the in-account daemon converges. Everything else is the
/// environment's, changed only by `byoc apply`.
pub fn is_cluster_identity(env: &str, r: &Resource) -> bool {
    r.kind == Kind::AwsIamRole && r.properties.get("path").and_then(Value::as_str) == Some(cluster_role_path(env).as_str())
}

/// Name of the IAM role a cluster's pods assume (IRSA).
pub(crate) fn cluster_role_name(env: &Environment, c: &Cluster) -> String {
    names::aws::role(&env.name, &cluster_namespace(c))
}

fn irsa_role(
    env: &Environment,
    name: &str,
    role_name: &str,
    oidc: &ResourceId,
    namespace: &str,
    service_account: &str,
    statements: Vec<Value>,
) -> Resource {
    resource(env, Kind::AwsIamRole, name)
        .set("name", role_name)
        .set(
            "trust",
            Value::map([
                ("federated", Value::reference(oidc)),
                ("subject", format!("system:serviceaccount:{namespace}:{service_account}").into()),
                ("audience", "sts.amazonaws.com".into()),
            ]),
        )
        .set("inlinePolicy", Value::List(statements))
}

fn statement(actions: &[&str], resources: Vec<String>, s3_prefix: Option<String>) -> Value {
    let mut m: Map = [("effect", Value::from("Allow")), ("actions", Value::strings(actions)), ("resources", Value::strings(resources))]
        .into_iter()
        .collect();
    if let Some(p) = s3_prefix {
        m.insert("condition", Value::map([("StringLike", Value::map([("s3:prefix", p.into())]))]));
    }
    Value::Map(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Specs;

    fn example() -> Specs {
        let dir = format!("{}/../examples/aws", env!("CARGO_MANIFEST_DIR"));
        let files = rwproxy::specfiles::read_dir(std::path::Path::new(&dir)).expect("example readable");
        crate::spec::load::load(&dir, &files).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn each_internal_nlb_has_an_endpoint_service_of_its_own_that_waits_for_acceptance() {
        let specs = example();
        let g = crate::expand::expand(&specs);
        let services: Vec<&Resource> = g.resources.values().filter(|r| r.kind == Kind::AwsVpcEndpointService).collect();
        let mut fronted: Vec<String> = Vec::new();
        for s in &services {
            let lbs: Vec<ResourceId> = s.refs_in("loadBalancers").into_iter().collect();
            assert_eq!(lbs.len(), 1, "{}: an interface endpoint reaches one NLB per zone", s.id);
            let lb = &g.resources[&lbs[0]];
            assert_eq!(lb.properties.get("scheme").and_then(Value::as_str), Some("internal"), "{}", s.id);
            assert_eq!(s.properties.get("acceptanceRequired"), Some(&Value::Bool(true)), "{}", s.id);
            assert_eq!(s.properties.get("allowedPrincipals"), Some(&Value::strings(&specs.environment.control_plane_principals)));
            fronted.push(lbs[0].to_string());
        }
        fronted.sort();
        assert_eq!(fronted, ["aws.service-nlb/agent", "aws.service-nlb/proxy"], "every internal NLB, and only those");
    }

    #[test]
    fn the_api_endpoint_takes_the_specs_networks_and_each_administrator_gets_an_access_entry() {
        let mut specs = example();
        let eks_of = |g: &Graph| g.resources[&ResourceId::new(Kind::AwsEksCluster, "main")].clone();
        let entries = |g: &Graph| g.resources.values().filter(|r| r.kind == Kind::AwsEksAccessEntry).cloned().collect::<Vec<_>>();
        // The example: public to one network, no administrators (the creator stays admin).
        let g = crate::expand::expand(&specs);
        let eks = eks_of(&g);
        assert_eq!(eks.properties.get("endpointPublicAccess"), Some(&Value::Bool(true)));
        assert_eq!(eks.properties.get("publicAccessCidrs"), Some(&Value::strings(["198.51.100.0/24"])));
        assert_eq!(eks.properties.get("authenticationMode").and_then(Value::as_str), Some("API"));
        assert_eq!(eks.properties.get("bootstrapCreatorAdmin"), Some(&Value::Bool(true)));
        assert!(entries(&g).is_empty());

        let admins = ["arn:aws:iam::123456789012:role/platform-ci", "arn:aws:iam::123456789012:user/alice"];
        specs.environment.kubernetes.api_access.public_cidrs.clear();
        specs.environment.kubernetes.api_access.administrators = admins.map(str::to_owned).to_vec();
        let g = crate::expand::expand(&specs);
        let eks = eks_of(&g);
        assert_eq!(eks.properties.get("endpointPublicAccess"), Some(&Value::Bool(false)), "no networks: private only");
        assert_eq!(eks.properties.get("bootstrapCreatorAdmin"), Some(&Value::Bool(false)));
        let entries = entries(&g);
        assert_eq!(entries.len(), 2);
        for (e, principal) in entries.iter().zip({
            let mut a = admins;
            a.sort_by_key(|p| access_entry_name(p));
            a
        }) {
            assert_eq!(e.id, ResourceId::new(Kind::AwsEksAccessEntry, &access_entry_name(principal)));
            assert_eq!(e.properties.get("principal").and_then(Value::as_str), Some(principal));
            assert_eq!(e.refs_in("cluster").into_iter().collect::<Vec<_>>(), std::slice::from_ref(&eks.id));
            assert_eq!(
                e.properties.get("policy").and_then(Value::as_str),
                Some("arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy")
            );
            assert_eq!(e.properties.get("scope").and_then(Value::as_str), Some("cluster"));
        }
        // The id does not move when the list is reordered.
        specs.environment.kubernetes.api_access.administrators.reverse();
        let reordered: Vec<ResourceId> =
            crate::expand::expand(&specs).resources.values().filter(|r| r.kind == Kind::AwsEksAccessEntry).map(|r| r.id.clone()).collect();
        assert_eq!(reordered, entries.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn the_load_balancer_controller_role_trusts_its_service_account_and_carries_the_published_policy() {
        let specs = example();
        let env = &specs.environment;
        let g = crate::expand::expand(&specs);
        let role = &g.resources[&ResourceId::new(Kind::AwsIamRole, LOAD_BALANCER_CONTROLLER)];
        assert_eq!(
            role.properties.get("name").and_then(Value::as_str),
            Some(format!("byoc-{}-load-balancer-controller", env.name).as_str())
        );
        let Some(Value::Map(trust)) = role.properties.get("trust") else { panic!("{role:?}") };
        assert_eq!(trust.get("subject").and_then(Value::as_str), Some("system:serviceaccount:kube-system:aws-load-balancer-controller"));
        assert_eq!(trust.get("federated"), Some(&Value::reference(&ResourceId::new(Kind::AwsOidcProvider, "main"))));
        let want = aws_load_balancer_controller_statements(&env.region, &env.account, &env.name);
        assert_eq!(role.properties.get("inlinePolicy"), Some(&Value::List(want)));
        // The tag its writes are held to is the EKS cluster's name, which the controller
        // stamps on what it makes.
        let eks = &g.resources[&ResourceId::new(Kind::AwsEksCluster, "main")];
        let cluster = eks.properties.get("name").and_then(Value::as_str).expect("name");
        let policy = role.properties.get("inlinePolicy").map(Value::to_string).unwrap_or_default();
        assert!(policy.contains(&format!("elbv2.k8s.aws/cluster: \"{cluster}\"")), "{cluster}: {policy}");
    }
}
