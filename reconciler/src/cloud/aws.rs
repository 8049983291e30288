//! [`Cloud`] on AWS with the AWS SDK: EC2 (VPC, subnets, gateways, route tables, security
//! groups, the VPC endpoint service), EKS (cluster, node groups), IAM (roles, the cluster's
//! OIDC provider), S3 and ELBv2 (network load balancers).
//!
//! Every create call carries the resource's tags in the same request (EC2 tag
//! specifications, EKS/IAM/ELBv2 tags), so nothing exists untagged even for a moment;
//! buckets, which S3 tags only after creation, have fixed names and are found by name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::types as ec2t;
use aws_sdk_eks::types as ekst;
use aws_sdk_elasticloadbalancingv2::types as elbt;
use serde_json::json;

use super::retry::Retrier;
use super::{Cloud, CloudError, Found, Refs};
use crate::expand::{TAG_ENVIRONMENT, TAG_RESOURCE};
use crate::plan::{Action, Plan};
use crate::resource::{Kind, Map, Resource, ResourceId, Value};

/// Name of the inline policy byoc puts on a role.
const INLINE_POLICY: &str = "byoc";
/// The service-linked role EKS managed node groups need.
pub const AUTOSCALING_ROLE: &str = "AWSServiceRoleForAutoScaling";
/// Service Quotas: EKS "Managed node groups per cluster".
pub const NODE_GROUP_QUOTA: (&str, &str) = ("eks", "L-6D54EA21");
/// The environment needs room for this many managed node groups.
pub const NODE_GROUP_QUOTA_MIN: f64 = 36.0;

/// An AWS account and region, through the SDK.
pub struct Aws {
    environment: String,
    ec2: aws_sdk_ec2::Client,
    eks: aws_sdk_eks::Client,
    iam: aws_sdk_iam::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    s3: aws_sdk_s3::Client,
    sts: aws_sdk_sts::Client,
    quotas: aws_sdk_servicequotas::Client,
    /// Retries of every call.
    pub retry: Retrier,
    /// Time between status reads while waiting for a resource.
    pub poll: Duration,
    /// Longest wait for one resource to become ready or go.
    pub wait_limit: Duration,
}

impl Aws {
    /// Clients for `region` with credentials from the default chain (environment, profile,
    /// web identity from `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, instance role).
    /// `endpoint_url` points every service at an emulator.
    pub async fn connect(environment: &str, region: &str, endpoint_url: Option<&str>) -> Aws {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_owned()))
            .retry_config(RetryConfig::disabled());
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let conf = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&conf).force_path_style(endpoint_url.is_some()).build();
        Aws {
            environment: environment.to_owned(),
            ec2: aws_sdk_ec2::Client::new(&conf),
            eks: aws_sdk_eks::Client::new(&conf),
            iam: aws_sdk_iam::Client::new(&conf),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&conf),
            s3: aws_sdk_s3::Client::from_conf(s3),
            sts: aws_sdk_sts::Client::new(&conf),
            quotas: aws_sdk_servicequotas::Client::new(&conf),
            retry: Retrier::default(),
            poll: Duration::from_secs(10),
            wait_limit: Duration::from_secs(40 * 60),
        }
    }

    /// Our id from a resource's tags, when they mark it as this environment's and the id
    /// names a resource of `kind`.
    fn ours<'a>(&self, kind: Kind, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<ResourceId> {
        let mut env = false;
        let mut id = None;
        for (k, v) in tags {
            if k == TAG_ENVIRONMENT {
                env = v == self.environment;
            } else if k == TAG_RESOURCE {
                id = ResourceId::parse(v).filter(|(k, _)| *k == kind).map(|(_, id)| id);
            }
        }
        id.filter(|_| env)
    }

    fn env_filter(&self) -> ec2t::Filter {
        ec2t::Filter::builder().name(format!("tag:{TAG_ENVIRONMENT}")).values(&self.environment).build()
    }
}

fn ec2_tags(tags: Option<&[ec2t::Tag]>) -> impl Iterator<Item = (&str, &str)> {
    tags.unwrap_or_default().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
}

/// The resource's tags (the `tags` property).
fn tags(r: &Resource) -> Vec<(String, String)> {
    match r.properties.get("tags") {
        Some(Value::Map(m)) => m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.to_owned(), v.to_owned()))).collect(),
        _ => Vec::new(),
    }
}

/// The resource's tags as IAM takes them.
fn iam_tags(r: &Resource) -> Vec<aws_sdk_iam::types::Tag> {
    tags(r).into_iter().filter_map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().ok()).collect()
}

fn tag_spec(kind: ec2t::ResourceType, r: &Resource) -> ec2t::TagSpecification {
    let mut b = ec2t::TagSpecification::builder().resource_type(kind);
    for (k, v) in tags(r) {
        b = b.tags(ec2t::Tag::builder().key(k).value(v).build());
    }
    b.build()
}

fn text<'a>(r: &'a Resource, name: &str) -> &'a str {
    r.properties.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn int(r: &Resource, name: &str) -> i32 {
    match r.properties.get(name) {
        Some(Value::Int(n)) => i32::try_from(*n).unwrap_or(i32::MAX),
        _ => 0,
    }
}

fn flag(r: &Resource, name: &str) -> bool {
    matches!(r.properties.get(name), Some(Value::Bool(true)))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::List(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// The name part of a resource id (`system` of `aws.eks-nodegroup/system`).
fn short_name(id: &ResourceId) -> &str {
    id.as_str().split_once('/').map_or(id.as_str(), |(_, n)| n)
}

/// What a reference resolves to: an IAM role's ARN, anything else's cloud id.
fn resolve<'a>(refs: &'a Refs, r: &Resource, id: &ResourceId) -> Result<&'a str, CloudError> {
    let f = refs.get(id).ok_or_else(|| CloudError::new(r.id.to_string(), format!("{id} does not exist yet")))?;
    Ok(match f.kind {
        Kind::AwsIamRole => f.outputs.get("arn").map_or(f.cloud_id.as_str(), String::as_str),
        _ => f.cloud_id.as_str(),
    })
}

fn ref_of(r: &Resource, name: &str) -> Option<ResourceId> {
    r.refs_in(name).into_iter().next()
}

fn resolve_prop<'a>(refs: &'a Refs, r: &Resource, name: &str) -> Result<&'a str, CloudError> {
    let id = ref_of(r, name).ok_or_else(|| CloudError::new(r.id.to_string(), format!("`{name}` names no resource")))?;
    resolve(refs, r, &id)
}

fn resolve_list(refs: &Refs, r: &Resource, name: &str) -> Result<Vec<String>, CloudError> {
    let mut out = Vec::new();
    if let Some(Value::List(items)) = r.properties.get(name) {
        for item in items {
            if let Value::Ref(reference) = item {
                out.push(resolve(refs, r, &reference.id)?.to_owned());
            }
        }
    }
    Ok(out)
}

fn found(r: &Resource, cloud_id: impl Into<String>, outputs: impl IntoIterator<Item = (&'static str, String)>) -> Found {
    Found {
        live: Map::new(),
        id: r.id.clone(),
        kind: r.kind,
        cloud_id: cloud_id.into(),
        outputs: outputs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

fn missing(what: &str, field: &str) -> CloudError {
    CloudError::new(what, format!("the response has no {field}"))
}

/// `None` when the call failed with one of `codes` (what it acts on is already gone):
/// deletion is idempotent, and a half-created or half-deleted resource is deleted from
/// wherever it stands.
fn unless_gone<T>(result: Result<T, CloudError>, codes: &[&str]) -> Result<Option<T>, CloudError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is(codes) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Cloud for Aws {
    async fn observe(&self) -> Result<Vec<Found>, CloudError> {
        let mut out = Vec::new();
        self.observe_ec2(&mut out).await?;
        self.observe_iam(&mut out).await?;
        self.observe_eks(&mut out).await?;
        self.observe_s3(&mut out).await?;
        self.observe_elb(&mut out).await?;
        Ok(out)
    }

    async fn ensure(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        match r.kind {
            Kind::AwsVpc => self.ensure_vpc(r, existing).await,
            Kind::AwsSubnet => self.ensure_subnet(r, existing, refs).await,
            Kind::AwsInternetGateway => self.ensure_igw(r, existing, refs).await,
            Kind::AwsNatGateway => self.ensure_nat(r, existing, refs).await,
            Kind::AwsRouteTable => self.ensure_route_table(r, existing, refs).await,
            Kind::AwsSecurityGroup => self.ensure_security_group(r, existing, refs).await,
            Kind::AwsIamRole => self.ensure_role(r, refs).await,
            Kind::AwsIamPolicy => self.ensure_policy(r, existing).await,
            Kind::AwsEksCluster => self.ensure_cluster(r, existing, refs).await,
            Kind::AwsOidcProvider => self.ensure_oidc(r, existing, refs).await,
            Kind::AwsEksNodeGroup => self.ensure_node_group(r, existing, refs).await,
            Kind::AwsS3Bucket => self.ensure_bucket(r).await,
            Kind::AwsNlb => self.ensure_nlb(r, existing, refs).await,
            Kind::AwsVpcEndpointService => self.ensure_endpoint_service(r, existing, refs).await,
            other => Err(CloudError::new(r.id.to_string(), format!("{} is not an AWS resource", other.label()))),
        }
    }

    async fn delete(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("{op} for {} {}", f.id, f.cloud_id);
        let id = f.cloud_id.as_str();
        let gone = [
            "InvalidVpcID.NotFound",
            "InvalidSubnetID.NotFound",
            "InvalidInternetGatewayID.NotFound",
            "InvalidRouteTableID.NotFound",
            "InvalidGroup.NotFound",
            "NatGatewayNotFound",
            "InvalidVpcEndpointService.NotFound",
            "NoSuchEntity",
            "ResourceNotFoundException",
            "NoSuchBucket",
            "LoadBalancerNotFound",
            "InvalidVpcEndpointServiceId.NotFound",
        ];
        let result = match f.kind {
            Kind::AwsVpc => self.retry.call(&what("ec2 DeleteVpc"), || self.ec2.delete_vpc().vpc_id(id).send()).await.map(drop),
            Kind::AwsSubnet => self.retry.call(&what("ec2 DeleteSubnet"), || self.ec2.delete_subnet().subnet_id(id).send()).await.map(drop),
            Kind::AwsInternetGateway => self.delete_igw(f).await,
            Kind::AwsNatGateway => self.delete_nat(f).await,
            Kind::AwsRouteTable => self.delete_route_table(f).await,
            Kind::AwsSecurityGroup => {
                self.retry.call(&what("ec2 DeleteSecurityGroup"), || self.ec2.delete_security_group().group_id(id).send()).await.map(drop)
            }
            Kind::AwsIamRole => self.delete_role(f).await,
            Kind::AwsIamPolicy => self.delete_policy(f).await,
            Kind::AwsEksCluster => self.delete_cluster(f).await,
            Kind::AwsOidcProvider => self
                .retry
                .call(&what("iam DeleteOpenIDConnectProvider"), || {
                    self.iam.delete_open_id_connect_provider().open_id_connect_provider_arn(id).send()
                })
                .await
                .map(drop),
            Kind::AwsEksNodeGroup => self.delete_node_group(f).await,
            Kind::AwsS3Bucket => self.delete_bucket(f).await,
            Kind::AwsNlb => self.delete_nlb(f).await,
            Kind::AwsVpcEndpointService => {
                // This call answers 200 and lists the services it could not delete.
                let what = what("ec2 DeleteVpcEndpointServiceConfigurations");
                match self.retry.call(&what, || self.ec2.delete_vpc_endpoint_service_configurations().service_ids(id).send()).await {
                    Ok(out) => match out.unsuccessful().iter().filter_map(|u| u.error()).next() {
                        Some(err) if !err.code().is_some_and(|c| c.ends_with(".NotFound")) => Err(CloudError {
                            what,
                            code: err.code().map(str::to_owned),
                            message: err.message().unwrap_or_default().to_owned(),
                        }),
                        _ => Ok(()),
                    },
                    Err(e) => Err(e),
                }
            }
            other => Err(CloudError::new(f.id.to_string(), format!("{} is not an AWS resource", other.label()))),
        };
        match result {
            Err(e) if e.is(&gone) => Ok(()),
            other => other,
        }
    }
}

// ---- observe ----------------------------------------------------------------------

impl Aws {
    async fn observe_ec2(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let f = self.env_filter();
        let vpcs = self.retry.call("ec2 DescribeVpcs", || self.ec2.describe_vpcs().filters(f.clone()).send()).await?;
        for v in vpcs.vpcs() {
            if let (Some(id), Some(cloud_id)) = (self.ours(Kind::AwsVpc, ec2_tags(v.tags.as_deref())), v.vpc_id()) {
                out.push(Found { live: Map::new(), id, kind: Kind::AwsVpc, cloud_id: cloud_id.to_owned(), outputs: BTreeMap::new() });
            }
        }
        let subnets = self.retry.call("ec2 DescribeSubnets", || self.ec2.describe_subnets().filters(f.clone()).send()).await?;
        for s in subnets.subnets() {
            if let (Some(id), Some(cloud_id)) = (self.ours(Kind::AwsSubnet, ec2_tags(s.tags.as_deref())), s.subnet_id()) {
                let vpc = s.vpc_id().unwrap_or_default().to_owned();
                out.push(Found {
                    live: Map::new(),
                    id,
                    kind: Kind::AwsSubnet,
                    cloud_id: cloud_id.to_owned(),
                    outputs: [("vpcId".to_owned(), vpc)].into(),
                });
            }
        }
        let igws =
            self.retry.call("ec2 DescribeInternetGateways", || self.ec2.describe_internet_gateways().filters(f.clone()).send()).await?;
        for g in igws.internet_gateways() {
            if let (Some(id), Some(cloud_id)) = (self.ours(Kind::AwsInternetGateway, ec2_tags(g.tags.as_deref())), g.internet_gateway_id())
            {
                out.push(Found {
                    live: Map::new(),
                    id,
                    kind: Kind::AwsInternetGateway,
                    cloud_id: cloud_id.to_owned(),
                    outputs: BTreeMap::new(),
                });
            }
        }
        let nats = self.retry.call("ec2 DescribeNatGateways", || self.ec2.describe_nat_gateways().filter(f.clone()).send()).await?;
        for n in nats.nat_gateways() {
            let live = !matches!(
                n.state(),
                Some(ec2t::NatGatewayState::Deleted | ec2t::NatGatewayState::Deleting | ec2t::NatGatewayState::Failed)
            );
            if let (true, Some(id), Some(cloud_id)) =
                (live, self.ours(Kind::AwsNatGateway, ec2_tags(n.tags.as_deref())), n.nat_gateway_id())
            {
                out.push(Found {
                    live: Map::new(),
                    id,
                    kind: Kind::AwsNatGateway,
                    cloud_id: cloud_id.to_owned(),
                    outputs: BTreeMap::new(),
                });
            }
        }
        let tables = self.retry.call("ec2 DescribeRouteTables", || self.ec2.describe_route_tables().filters(f.clone()).send()).await?;
        for t in tables.route_tables() {
            if let (Some(id), Some(cloud_id)) = (self.ours(Kind::AwsRouteTable, ec2_tags(t.tags.as_deref())), t.route_table_id()) {
                out.push(Found {
                    live: Map::new(),
                    id,
                    kind: Kind::AwsRouteTable,
                    cloud_id: cloud_id.to_owned(),
                    outputs: BTreeMap::new(),
                });
            }
        }
        let groups =
            self.retry.call("ec2 DescribeSecurityGroups", || self.ec2.describe_security_groups().filters(f.clone()).send()).await?;
        for g in groups.security_groups() {
            if let (Some(id), Some(cloud_id)) = (self.ours(Kind::AwsSecurityGroup, ec2_tags(g.tags.as_deref())), g.group_id()) {
                let live = [("ingress", live_ingress(g))].into_iter().collect();
                out.push(Found { live, id, kind: Kind::AwsSecurityGroup, cloud_id: cloud_id.to_owned(), outputs: BTreeMap::new() });
            }
        }
        // Tags are checked here rather than filtered by the service: not every emulator
        // filters endpoint services by tag.
        let services = self
            .retry
            .call("ec2 DescribeVpcEndpointServiceConfigurations", || self.ec2.describe_vpc_endpoint_service_configurations().send())
            .await?;
        for s in services.service_configurations() {
            let live =
                !matches!(s.service_state(), Some(ec2t::ServiceState::Deleted | ec2t::ServiceState::Deleting | ec2t::ServiceState::Failed));
            if let (true, Some(id), Some(cloud_id)) =
                (live, self.ours(Kind::AwsVpcEndpointService, ec2_tags(s.tags.as_deref())), s.service_id())
            {
                let name = s.service_name().unwrap_or_default().to_owned();
                let perms = self
                    .retry
                    .call("ec2 DescribeVpcEndpointServicePermissions", || {
                        self.ec2.describe_vpc_endpoint_service_permissions().service_id(cloud_id).send()
                    })
                    .await?;
                let mut principals: Vec<String> =
                    perms.allowed_principals().iter().filter_map(|p| p.principal().map(str::to_owned)).collect();
                principals.sort();
                let live = [
                    ("allowedPrincipals", Value::strings(principals)),
                    ("acceptanceRequired", Value::Bool(s.acceptance_required().unwrap_or(false))),
                ]
                .into_iter()
                .collect();
                out.push(Found {
                    live,
                    id,
                    kind: Kind::AwsVpcEndpointService,
                    cloud_id: cloud_id.to_owned(),
                    outputs: [("serviceName".to_owned(), name)].into(),
                });
            }
        }
        Ok(())
    }

    async fn observe_iam(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let prefix = format!("byoc-{}-", self.environment);
        let mut marker: Option<String> = None;
        loop {
            let page = self.retry.call("iam ListRoles", || self.iam.list_roles().set_marker(marker.clone()).send()).await?;
            // Role names are `byoc-<environment>-...` (the ARN the pods' annotation
            // names has no path); only those are asked for their tags.
            for role in page.roles().iter().filter(|r| r.role_name().starts_with(&prefix)) {
                let name = role.role_name();
                let t = self.retry.call(&format!("iam ListRoleTags {name}"), || self.iam.list_role_tags().role_name(name).send()).await?;
                if let Some(id) = self.ours(Kind::AwsIamRole, t.tags().iter().map(|t| (t.key(), t.value()))) {
                    out.push(Found {
                        live: Map::new(),
                        id,
                        kind: Kind::AwsIamRole,
                        cloud_id: name.to_owned(),
                        outputs: [("arn".to_owned(), role.arn().to_owned())].into(),
                    });
                }
            }
            marker = page.marker().map(str::to_owned);
            if !page.is_truncated() || marker.is_none() {
                break;
            }
        }
        // Managed policies byoc makes live under the environment's path.
        let path = crate::expand::aws::environment_path(&self.environment);
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .retry
                .call("iam ListPolicies", || {
                    self.iam
                        .list_policies()
                        .scope(aws_sdk_iam::types::PolicyScopeType::Local)
                        .path_prefix(&path)
                        .set_marker(marker.clone())
                        .send()
                })
                .await?;
            for p in page.policies() {
                let Some(arn) = p.arn() else { continue };
                let t =
                    self.retry.call(&format!("iam ListPolicyTags {arn}"), || self.iam.list_policy_tags().policy_arn(arn).send()).await?;
                if let Some(id) = self.ours(Kind::AwsIamPolicy, t.tags().iter().map(|t| (t.key(), t.value()))) {
                    out.push(Found { live: Map::new(), id, kind: Kind::AwsIamPolicy, cloud_id: arn.to_owned(), outputs: BTreeMap::new() });
                }
            }
            marker = page.marker().map(str::to_owned);
            if !page.is_truncated() || marker.is_none() {
                break;
            }
        }
        let providers = self.retry.call("iam ListOpenIDConnectProviders", || self.iam.list_open_id_connect_providers().send()).await?;
        for p in providers.open_id_connect_provider_list() {
            let Some(arn) = p.arn() else { continue };
            let got = self
                .retry
                .call(&format!("iam GetOpenIDConnectProvider {arn}"), || {
                    self.iam.get_open_id_connect_provider().open_id_connect_provider_arn(arn).send()
                })
                .await?;
            if let Some(id) = self.ours(Kind::AwsOidcProvider, got.tags().iter().map(|t| (t.key(), t.value()))) {
                let issuer = got.url().unwrap_or_default().to_owned();
                out.push(Found {
                    live: Map::new(),
                    id,
                    kind: Kind::AwsOidcProvider,
                    cloud_id: arn.to_owned(),
                    outputs: [("issuer".to_owned(), issuer)].into(),
                });
            }
        }
        Ok(())
    }

    async fn observe_eks(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let clusters = self.retry.call("eks ListClusters", || self.eks.list_clusters().send()).await?;
        for name in clusters.clusters() {
            let c = self.retry.call(&format!("eks DescribeCluster {name}"), || self.eks.describe_cluster().name(name).send()).await?;
            let Some(cluster) = c.cluster() else { continue };
            if let Some(id) = self.ours(Kind::AwsEksCluster, cluster.tags().into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str())))
                && cluster.status() != Some(&ekst::ClusterStatus::Deleting)
            {
                out.push(cluster_found(id, cluster));
            }
            let groups =
                self.retry.call(&format!("eks ListNodegroups {name}"), || self.eks.list_nodegroups().cluster_name(name).send()).await?;
            for group in groups.nodegroups() {
                let d = self
                    .retry
                    .call(&format!("eks DescribeNodegroup {name}/{group}"), || {
                        self.eks.describe_nodegroup().cluster_name(name).nodegroup_name(group).send()
                    })
                    .await?;
                let Some(ng) = d.nodegroup() else { continue };
                if ng.status() == Some(&ekst::NodegroupStatus::Deleting) {
                    continue;
                }
                if let Some(id) = self.ours(Kind::AwsEksNodeGroup, ng.tags().into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()))) {
                    out.push(Found {
                        live: live_node_group(ng),
                        id,
                        kind: Kind::AwsEksNodeGroup,
                        cloud_id: group.clone(),
                        outputs: [("cluster".to_owned(), name.clone())].into(),
                    });
                }
            }
        }
        Ok(())
    }

    async fn observe_s3(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let buckets = self.retry.call("s3 ListBuckets", || self.s3.list_buckets().send()).await?;
        for b in buckets.buckets() {
            let Some(name) = b.name() else { continue };
            let t = match self.retry.call(&format!("s3 GetBucketTagging {name}"), || self.s3.get_bucket_tagging().bucket(name).send()).await
            {
                Ok(t) => t,
                Err(e) if e.is(&["NoSuchTagSet", "NoSuchBucket"]) => continue,
                Err(e) => return Err(e),
            };
            if let Some(id) = self.ours(Kind::AwsS3Bucket, t.tag_set().iter().map(|t| (t.key(), t.value()))) {
                let live = self.live_bucket(name).await?;
                out.push(Found { live, id, kind: Kind::AwsS3Bucket, cloud_id: name.to_owned(), outputs: BTreeMap::new() });
            }
        }
        Ok(())
    }

    async fn observe_elb(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let mut marker: Option<String> = None;
        let mut lbs = Vec::new();
        loop {
            let page = self
                .retry
                .call("elbv2 DescribeLoadBalancers", || self.elb.describe_load_balancers().set_marker(marker.clone()).send())
                .await?;
            lbs.extend(page.load_balancers().iter().cloned());
            marker = page.next_marker().map(str::to_owned);
            if marker.is_none() {
                break;
            }
        }
        for chunk in lbs.chunks(20) {
            let arns: Vec<String> = chunk.iter().filter_map(|l| l.load_balancer_arn().map(str::to_owned)).collect();
            let t = self.retry.call("elbv2 DescribeTags", || self.elb.describe_tags().set_resource_arns(Some(arns.clone())).send()).await?;
            for d in t.tag_descriptions() {
                let Some(arn) = d.resource_arn() else { continue };
                if let Some(id) =
                    self.ours(Kind::AwsNlb, d.tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())))
                {
                    let lb = chunk.iter().find(|l| l.load_balancer_arn() == Some(arn));
                    let dns = lb.and_then(|l| l.dns_name()).unwrap_or_default().to_owned();
                    out.push(Found {
                        live: Map::new(),
                        id,
                        kind: Kind::AwsNlb,
                        cloud_id: arn.to_owned(),
                        outputs: [("dnsName".to_owned(), dns)].into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A security group's ingress rules in property form (`{protocol, port, from}`).
fn live_ingress(g: &ec2t::SecurityGroup) -> Value {
    let mut rules = Vec::new();
    for p in g.ip_permissions() {
        let proto = p.ip_protocol().unwrap_or("-1");
        for range in p.ip_ranges() {
            let from = Value::from(range.cidr_ip().unwrap_or_default());
            rules.push(match proto {
                "-1" => Value::map([("protocol", "all".into()), ("from", from)]),
                _ => Value::map([("protocol", proto.into()), ("port", Value::Int(p.from_port().unwrap_or(0).into())), ("from", from)]),
            });
        }
    }
    Value::List(rules)
}

/// A node group's size, labels and taints in property form.
fn live_node_group(ng: &ekst::Nodegroup) -> Map {
    let mut live = Map::new();
    if let Some(sc) = ng.scaling_config() {
        live.insert("minSize", Value::Int(sc.min_size().unwrap_or(0).into()));
        live.insert("maxSize", Value::Int(sc.max_size().unwrap_or(0).into()));
    }
    if let Some(labels) = ng.labels() {
        live.insert("labels", Value::Map(labels.iter().map(|(k, v)| (crate::resource::Key::Owned(k.clone()), Value::from(v))).collect()));
    }
    let effect = |e: Option<&ekst::TaintEffect>| match e {
        Some(ekst::TaintEffect::NoExecute) => "NoExecute",
        Some(ekst::TaintEffect::PreferNoSchedule) => "PreferNoSchedule",
        _ => "NoSchedule",
    };
    let taints = ng
        .taints()
        .iter()
        .map(|t| {
            Value::map([
                ("key", t.key().unwrap_or_default().into()),
                ("value", t.value().unwrap_or_default().into()),
                ("effect", effect(t.effect()).into()),
            ])
        })
        .collect();
    live.insert("taints", Value::List(taints));
    live
}

fn cluster_found(id: ResourceId, c: &ekst::Cluster) -> Found {
    let issuer = c.identity().and_then(|i| i.oidc()).and_then(|o| o.issuer()).unwrap_or_default().to_owned();
    Found {
        live: Map::new(),
        id,
        kind: Kind::AwsEksCluster,
        cloud_id: c.name().unwrap_or_default().to_owned(),
        outputs: [("arn".to_owned(), c.arn().unwrap_or_default().to_owned()), ("issuer".to_owned(), issuer)].into(),
    }
}

// ---- EC2 --------------------------------------------------------------------------

impl Aws {
    async fn ensure_vpc(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let what = |op: &str| format!("ec2 {op} for {}", r.id);
        let vpc_id = match existing {
            Some(f) => f.cloud_id.clone(),
            None => {
                let out = self
                    .retry
                    .call(&what("CreateVpc"), || {
                        self.ec2.create_vpc().cidr_block(text(r, "cidr")).tag_specifications(tag_spec(ec2t::ResourceType::Vpc, r)).send()
                    })
                    .await?;
                out.vpc().and_then(|v| v.vpc_id()).ok_or_else(|| missing(&what("CreateVpc"), "VpcId"))?.to_owned()
            }
        };
        let on = || ec2t::AttributeBooleanValue::builder().value(true).build();
        self.retry
            .call(&what("ModifyVpcAttribute"), || self.ec2.modify_vpc_attribute().vpc_id(&vpc_id).enable_dns_support(on()).send())
            .await?;
        let hostnames = ec2t::AttributeBooleanValue::builder().value(flag(r, "enableDnsHostnames")).build();
        self.retry
            .call(&what("ModifyVpcAttribute"), || {
                self.ec2.modify_vpc_attribute().vpc_id(&vpc_id).enable_dns_hostnames(hostnames.clone()).send()
            })
            .await?;
        Ok(found(r, vpc_id, []))
    }

    async fn ensure_subnet(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("ec2 {op} for {}", r.id);
        let vpc = resolve_prop(refs, r, "vpc")?;
        let subnet_id = match existing {
            Some(f) => f.cloud_id.clone(),
            None => {
                let zone = Some(text(r, "zone")).filter(|z| !z.is_empty());
                let out = self
                    .retry
                    .call(&what("CreateSubnet"), || {
                        self.ec2
                            .create_subnet()
                            .vpc_id(vpc)
                            .cidr_block(text(r, "cidr"))
                            .set_availability_zone(zone.map(str::to_owned))
                            .tag_specifications(tag_spec(ec2t::ResourceType::Subnet, r))
                            .send()
                    })
                    .await?;
                out.subnet().and_then(|s| s.subnet_id()).ok_or_else(|| missing(&what("CreateSubnet"), "SubnetId"))?.to_owned()
            }
        };
        let public_ip = ec2t::AttributeBooleanValue::builder().value(flag(r, "mapPublicIpOnLaunch")).build();
        self.retry
            .call(&what("ModifySubnetAttribute"), || {
                self.ec2.modify_subnet_attribute().subnet_id(&subnet_id).map_public_ip_on_launch(public_ip.clone()).send()
            })
            .await?;
        Ok(found(r, subnet_id, [("vpcId", vpc.to_owned())]))
    }

    async fn ensure_igw(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("ec2 {op} for {}", r.id);
        let vpc = resolve_prop(refs, r, "vpc")?;
        let igw_id = match existing {
            Some(f) => f.cloud_id.clone(),
            None => {
                let out = self
                    .retry
                    .call(&what("CreateInternetGateway"), || {
                        self.ec2.create_internet_gateway().tag_specifications(tag_spec(ec2t::ResourceType::InternetGateway, r)).send()
                    })
                    .await?;
                out.internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .ok_or_else(|| missing(&what("CreateInternetGateway"), "InternetGatewayId"))?
                    .to_owned()
            }
        };
        let d = self
            .retry
            .call(&what("DescribeInternetGateways"), || self.ec2.describe_internet_gateways().internet_gateway_ids(&igw_id).send())
            .await?;
        let attached: Vec<String> =
            d.internet_gateways().iter().flat_map(|g| g.attachments()).filter_map(|a| a.vpc_id().map(str::to_owned)).collect();
        for other in attached.iter().filter(|v| v.as_str() != vpc) {
            self.retry
                .call(&what("DetachInternetGateway"), || {
                    self.ec2.detach_internet_gateway().internet_gateway_id(&igw_id).vpc_id(other).send()
                })
                .await?;
        }
        if !attached.iter().any(|v| v == vpc) {
            self.retry
                .call(&what("AttachInternetGateway"), || self.ec2.attach_internet_gateway().internet_gateway_id(&igw_id).vpc_id(vpc).send())
                .await?;
        }
        Ok(found(r, igw_id, []))
    }

    async fn delete_igw(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("ec2 {op} for {} {}", f.id, f.cloud_id);
        let d = self
            .retry
            .call(&what("DescribeInternetGateways"), || self.ec2.describe_internet_gateways().internet_gateway_ids(&f.cloud_id).send())
            .await?;
        for a in d.internet_gateways().iter().flat_map(|g| g.attachments()) {
            if let Some(vpc) = a.vpc_id() {
                let detached = self
                    .retry
                    .call(&what("DetachInternetGateway"), || {
                        self.ec2.detach_internet_gateway().internet_gateway_id(&f.cloud_id).vpc_id(vpc).send()
                    })
                    .await;
                unless_gone(detached, &["Gateway.NotAttached", "InvalidVpcID.NotFound"])?;
            }
        }
        self.retry
            .call(&what("DeleteInternetGateway"), || self.ec2.delete_internet_gateway().internet_gateway_id(&f.cloud_id).send())
            .await?;
        Ok(())
    }

    /// Elastic IPs tagged with `id` (a NAT gateway's address).
    async fn addresses_of(&self, id: &ResourceId) -> Result<Vec<ec2t::Address>, CloudError> {
        let filter = ec2t::Filter::builder().name(format!("tag:{TAG_RESOURCE}")).values(id.as_str()).build();
        let env = self.env_filter();
        let d = self
            .retry
            .call(&format!("ec2 DescribeAddresses for {id}"), || {
                self.ec2.describe_addresses().filters(filter.clone()).filters(env.clone()).send()
            })
            .await?;
        Ok(d.addresses().to_vec())
    }

    async fn ensure_nat(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("ec2 {op} for {}", r.id);
        if let Some(f) = existing {
            return Ok(found(r, f.cloud_id.clone(), []));
        }
        let subnet = resolve_prop(refs, r, "subnet")?;
        // An address an interrupted run allocated is reused, not allocated again.
        let spare = self
            .addresses_of(&r.id)
            .await?
            .into_iter()
            .find(|a| a.association_id().is_none())
            .and_then(|a| a.allocation_id().map(str::to_owned));
        let allocation = match spare {
            Some(a) => a,
            None => {
                let out = self
                    .retry
                    .call(&what("AllocateAddress"), || {
                        self.ec2
                            .allocate_address()
                            .domain(ec2t::DomainType::Vpc)
                            .tag_specifications(tag_spec(ec2t::ResourceType::ElasticIp, r))
                            .send()
                    })
                    .await?;
                out.allocation_id().ok_or_else(|| missing(&what("AllocateAddress"), "AllocationId"))?.to_owned()
            }
        };
        let out = self
            .retry
            .call(&what("CreateNatGateway"), || {
                self.ec2
                    .create_nat_gateway()
                    .subnet_id(subnet)
                    .allocation_id(&allocation)
                    .connectivity_type(ec2t::ConnectivityType::Public)
                    .tag_specifications(tag_spec(ec2t::ResourceType::Natgateway, r))
                    .send()
            })
            .await?;
        let nat = out
            .nat_gateway()
            .and_then(|n| n.nat_gateway_id())
            .ok_or_else(|| missing(&what("CreateNatGateway"), "NatGatewayId"))?
            .to_owned();
        self.wait(&r.id, || async {
            let d = self.retry.call(&what("DescribeNatGateways"), || self.ec2.describe_nat_gateways().nat_gateway_ids(&nat).send()).await?;
            let state = d.nat_gateways().first().and_then(|n| n.state().cloned());
            Ok(match state {
                Some(ec2t::NatGatewayState::Available) => Wait::Done,
                Some(ec2t::NatGatewayState::Failed) => Wait::Failed("the NAT gateway failed".to_owned()),
                other => Wait::Pending(other.map_or("unknown".to_owned(), |s| s.as_str().to_owned())),
            })
        })
        .await?;
        Ok(found(r, nat, []))
    }

    async fn delete_nat(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("ec2 {op} for {} {}", f.id, f.cloud_id);
        // A gateway already deleted may have left its address behind: release it anyway.
        let gone = &["NatGatewayNotFound", "InvalidNatGatewayID.NotFound"];
        let deleted = self.retry.call(&what("DeleteNatGateway"), || self.ec2.delete_nat_gateway().nat_gateway_id(&f.cloud_id).send()).await;
        if unless_gone(deleted, gone)?.is_some() {
            self.wait(&f.id, || async {
                let d = self
                    .retry
                    .call(&what("DescribeNatGateways"), || self.ec2.describe_nat_gateways().nat_gateway_ids(&f.cloud_id).send())
                    .await;
                let Some(d) = unless_gone(d, gone)? else { return Ok(Wait::Done) };
                Ok(match d.nat_gateways().first().and_then(|n| n.state().cloned()) {
                    None | Some(ec2t::NatGatewayState::Deleted) => Wait::Done,
                    Some(other) => Wait::Pending(other.as_str().to_owned()),
                })
            })
            .await?;
        }
        for a in self.addresses_of(&f.id).await? {
            if let Some(allocation) = a.allocation_id() {
                let released =
                    self.retry.call(&what("ReleaseAddress"), || self.ec2.release_address().allocation_id(allocation).send()).await;
                unless_gone(released, &["InvalidAllocationID.NotFound"])?;
            }
        }
        Ok(())
    }

    async fn ensure_route_table(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("ec2 {op} for {}", r.id);
        let vpc = resolve_prop(refs, r, "vpc")?;
        let table = match existing {
            Some(f) => f.cloud_id.clone(),
            None => {
                let out = self
                    .retry
                    .call(&what("CreateRouteTable"), || {
                        self.ec2.create_route_table().vpc_id(vpc).tag_specifications(tag_spec(ec2t::ResourceType::RouteTable, r)).send()
                    })
                    .await?;
                out.route_table()
                    .and_then(|t| t.route_table_id())
                    .ok_or_else(|| missing(&what("CreateRouteTable"), "RouteTableId"))?
                    .to_owned()
            }
        };
        let d = self.retry.call(&what("DescribeRouteTables"), || self.ec2.describe_route_tables().route_table_ids(&table).send()).await?;
        let current = d
            .route_tables()
            .first()
            .cloned()
            .ok_or_else(|| CloudError::new(what("DescribeRouteTables"), format!("{table} does not exist")))?;

        // Routes: destination -> (gateway id, NAT gateway id).
        let mut want: BTreeMap<String, (Kind, String)> = BTreeMap::new();
        if let Some(Value::List(routes)) = r.properties.get("routes") {
            for route in routes {
                let Value::Map(m) = route else { continue };
                let dest = m.get("destination").and_then(Value::as_str).unwrap_or_default().to_owned();
                let Some(Value::Ref(target)) = m.get("target") else { continue };
                let kind = refs.get(&target.id).map_or(Kind::AwsInternetGateway, |f| f.kind);
                want.insert(dest, (kind, resolve(refs, r, &target.id)?.to_owned()));
            }
        }
        let have: BTreeMap<String, String> = current
            .routes()
            .iter()
            .filter(|rt| rt.gateway_id() != Some("local"))
            .filter_map(|rt| {
                let dest = rt.destination_cidr_block()?.to_owned();
                Some((dest, rt.nat_gateway_id().or(rt.gateway_id()).unwrap_or_default().to_owned()))
            })
            .collect();
        for (dest, (kind, target)) in &want {
            let nat = (*kind == Kind::AwsNatGateway).then(|| target.clone());
            let gw = (*kind != Kind::AwsNatGateway).then(|| target.clone());
            match have.get(dest) {
                Some(t) if t == target => {}
                Some(_) => {
                    self.retry
                        .call(&what("ReplaceRoute"), || {
                            self.ec2
                                .replace_route()
                                .route_table_id(&table)
                                .destination_cidr_block(dest)
                                .set_gateway_id(gw.clone())
                                .set_nat_gateway_id(nat.clone())
                                .send()
                        })
                        .await?;
                }
                None => {
                    self.retry
                        .call(&what("CreateRoute"), || {
                            self.ec2
                                .create_route()
                                .route_table_id(&table)
                                .destination_cidr_block(dest)
                                .set_gateway_id(gw.clone())
                                .set_nat_gateway_id(nat.clone())
                                .send()
                        })
                        .await?;
                }
            }
        }
        for dest in have.keys().filter(|d| !want.contains_key(*d)) {
            self.retry
                .call(&what("DeleteRoute"), || self.ec2.delete_route().route_table_id(&table).destination_cidr_block(dest).send())
                .await?;
        }

        // Subnet associations.
        let want_subnets: BTreeSet<String> = resolve_list(refs, r, "subnets")?.into_iter().collect();
        let mut have_subnets = BTreeSet::new();
        for a in current.associations().iter().filter(|a| a.main() != Some(true)) {
            match (a.subnet_id(), a.route_table_association_id()) {
                (Some(s), Some(assoc)) if !want_subnets.contains(s) => {
                    self.retry
                        .call(&what("DisassociateRouteTable"), || self.ec2.disassociate_route_table().association_id(assoc).send())
                        .await?;
                }
                (Some(s), _) => {
                    have_subnets.insert(s.to_owned());
                }
                _ => {}
            }
        }
        for s in want_subnets.difference(&have_subnets) {
            self.retry
                .call(&what("AssociateRouteTable"), || self.ec2.associate_route_table().route_table_id(&table).subnet_id(s).send())
                .await?;
        }
        Ok(found(r, table, []))
    }

    async fn delete_route_table(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("ec2 {op} for {} {}", f.id, f.cloud_id);
        let d =
            self.retry.call(&what("DescribeRouteTables"), || self.ec2.describe_route_tables().route_table_ids(&f.cloud_id).send()).await?;
        for a in d.route_tables().iter().flat_map(|t| t.associations()).filter(|a| a.main() != Some(true)) {
            if let Some(assoc) = a.route_table_association_id() {
                let done = self
                    .retry
                    .call(&what("DisassociateRouteTable"), || self.ec2.disassociate_route_table().association_id(assoc).send())
                    .await;
                unless_gone(done, &["InvalidAssociationID.NotFound"])?;
            }
        }
        self.retry.call(&what("DeleteRouteTable"), || self.ec2.delete_route_table().route_table_id(&f.cloud_id).send()).await?;
        Ok(())
    }

    async fn ensure_security_group(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("ec2 {op} for {}", r.id);
        let vpc = resolve_prop(refs, r, "vpc")?;
        let group = match existing {
            Some(f) => f.cloud_id.clone(),
            None => {
                let out = self
                    .retry
                    .call(&what("CreateSecurityGroup"), || {
                        self.ec2
                            .create_security_group()
                            .group_name(text(r, "name"))
                            .description(format!("byoc {}", r.id))
                            .vpc_id(vpc)
                            .tag_specifications(tag_spec(ec2t::ResourceType::SecurityGroup, r))
                            .send()
                    })
                    .await?;
                out.group_id().ok_or_else(|| missing(&what("CreateSecurityGroup"), "GroupId"))?.to_owned()
            }
        };
        // Rules as (protocol, from port, to port, CIDR).
        type Rule = (String, i32, i32, String);
        let mut want: BTreeSet<Rule> = BTreeSet::new();
        if let Some(Value::List(rules)) = r.properties.get("ingress") {
            for rule in rules {
                let Value::Map(m) = rule else { continue };
                let proto = m.get("protocol").and_then(Value::as_str).unwrap_or("tcp");
                let from = m.get("from").and_then(Value::as_str).unwrap_or_default().to_owned();
                match (proto, m.get("port")) {
                    ("all", _) => want.insert(("-1".to_owned(), -1, -1, from)),
                    (p, Some(Value::Int(port))) => want.insert((p.to_owned(), *port as i32, *port as i32, from)),
                    (p, _) => want.insert((p.to_owned(), 0, 65535, from)),
                };
            }
        }
        let d = self.retry.call(&what("DescribeSecurityGroups"), || self.ec2.describe_security_groups().group_ids(&group).send()).await?;
        let mut have: BTreeSet<Rule> = BTreeSet::new();
        for p in d.security_groups().iter().flat_map(|g| g.ip_permissions()) {
            let proto = p.ip_protocol().unwrap_or("-1").to_owned();
            let (from, to) = if proto == "-1" { (-1, -1) } else { (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1)) };
            for range in p.ip_ranges() {
                have.insert((proto.clone(), from, to, range.cidr_ip().unwrap_or_default().to_owned()));
            }
        }
        let permission = |(proto, from, to, cidr): &Rule| {
            let b = ec2t::IpPermission::builder().ip_protocol(proto).ip_ranges(ec2t::IpRange::builder().cidr_ip(cidr).build());
            if proto == "-1" { b.build() } else { b.from_port(*from).to_port(*to).build() }
        };
        let add: Vec<_> = want.difference(&have).map(permission).collect();
        let remove: Vec<_> = have.difference(&want).map(permission).collect();
        if !add.is_empty() {
            self.retry
                .call(&what("AuthorizeSecurityGroupIngress"), || {
                    self.ec2.authorize_security_group_ingress().group_id(&group).set_ip_permissions(Some(add.clone())).send()
                })
                .await?;
        }
        if !remove.is_empty() {
            self.retry
                .call(&what("RevokeSecurityGroupIngress"), || {
                    self.ec2.revoke_security_group_ingress().group_id(&group).set_ip_permissions(Some(remove.clone())).send()
                })
                .await?;
        }
        Ok(found(r, group, []))
    }

    async fn ensure_endpoint_service(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("ec2 {op} for {}", r.id);
        let lbs: BTreeSet<String> = resolve_list(refs, r, "loadBalancers")?.into_iter().collect();
        let acceptance = flag(r, "acceptanceRequired");
        let (service, name) = match existing {
            Some(f) => {
                let d = self
                    .retry
                    .call(&what("DescribeVpcEndpointServiceConfigurations"), || {
                        self.ec2.describe_vpc_endpoint_service_configurations().service_ids(&f.cloud_id).send()
                    })
                    .await?;
                let c = d.service_configurations().first().cloned().unwrap_or_else(|| ec2t::ServiceConfiguration::builder().build());
                let have: BTreeSet<String> = c.network_load_balancer_arns().iter().cloned().collect();
                let add: Vec<String> = lbs.difference(&have).cloned().collect();
                let remove: Vec<String> = have.difference(&lbs).cloned().collect();
                if !add.is_empty() || !remove.is_empty() || c.acceptance_required() != Some(acceptance) {
                    self.retry
                        .call(&what("ModifyVpcEndpointServiceConfiguration"), || {
                            self.ec2
                                .modify_vpc_endpoint_service_configuration()
                                .service_id(&f.cloud_id)
                                .acceptance_required(acceptance)
                                .set_add_network_load_balancer_arns(Some(add.clone()).filter(|a| !a.is_empty()))
                                .set_remove_network_load_balancer_arns(Some(remove.clone()).filter(|a| !a.is_empty()))
                                .send()
                        })
                        .await?;
                }
                (f.cloud_id.clone(), c.service_name().unwrap_or_default().to_owned())
            }
            None => {
                let out = self
                    .retry
                    .call(&what("CreateVpcEndpointServiceConfiguration"), || {
                        self.ec2
                            .create_vpc_endpoint_service_configuration()
                            .set_network_load_balancer_arns(Some(lbs.iter().cloned().collect()))
                            .acceptance_required(acceptance)
                            .tag_specifications(tag_spec(ec2t::ResourceType::VpcEndpointService, r))
                            .send()
                    })
                    .await?;
                let c = out
                    .service_configuration()
                    .ok_or_else(|| missing(&what("CreateVpcEndpointServiceConfiguration"), "ServiceConfiguration"))?;
                (c.service_id().unwrap_or_default().to_owned(), c.service_name().unwrap_or_default().to_owned())
            }
        };
        let want: BTreeSet<String> = strings(r.properties.get("allowedPrincipals")).into_iter().collect();
        let d = self
            .retry
            .call(&what("DescribeVpcEndpointServicePermissions"), || {
                self.ec2.describe_vpc_endpoint_service_permissions().service_id(&service).send()
            })
            .await?;
        let have: BTreeSet<String> = d.allowed_principals().iter().filter_map(|p| p.principal().map(str::to_owned)).collect();
        let add: Vec<String> = want.difference(&have).cloned().collect();
        let remove: Vec<String> = have.difference(&want).cloned().collect();
        if !add.is_empty() || !remove.is_empty() {
            self.retry
                .call(&what("ModifyVpcEndpointServicePermissions"), || {
                    self.ec2
                        .modify_vpc_endpoint_service_permissions()
                        .service_id(&service)
                        .set_add_allowed_principals(Some(add.clone()).filter(|a| !a.is_empty()))
                        .set_remove_allowed_principals(Some(remove.clone()).filter(|a| !a.is_empty()))
                        .send()
                })
                .await?;
        }
        Ok(found(r, service, [("serviceName", name)]))
    }
}

// ---- IAM --------------------------------------------------------------------------

/// The trust policy of a role: a service, or a cluster's OIDC provider for one service
/// account (IRSA).
fn trust_policy(r: &Resource, refs: &Refs) -> Result<String, CloudError> {
    let Some(Value::Map(t)) = r.properties.get("trust") else {
        return Err(CloudError::new(r.id.to_string(), "no `trust`"));
    };
    if let Some(service) = t.get("service").and_then(Value::as_str) {
        return Ok(json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}).to_string());
    }
    let Some(Value::Ref(provider)) = t.get("federated") else {
        return Err(CloudError::new(r.id.to_string(), "`trust` names neither a service nor a federated provider"));
    };
    let p = refs.get(&provider.id).ok_or_else(|| CloudError::new(r.id.to_string(), format!("{} does not exist yet", provider.id)))?;
    let host = p.outputs.get("issuer").map(|i| i.trim_start_matches("https://").to_owned()).unwrap_or_default();
    let subject = t.get("subject").and_then(Value::as_str).unwrap_or_default();
    let audience = t.get("audience").and_then(Value::as_str).unwrap_or("sts.amazonaws.com");
    Ok(json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": p.cloud_id},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {format!("{host}:sub"): subject, format!("{host}:aud"): audience}}
    }]})
    .to_string())
}

/// The inline policy from `inlinePolicy` statements, `None` when there are none.
fn inline_policy(r: &Resource) -> Option<String> {
    policy_document(r, "inlinePolicy")
}

/// A policy document from the statements in property `prop`, `None` when there are none.
fn policy_document(r: &Resource, prop: &str) -> Option<String> {
    let Some(Value::List(statements)) = r.properties.get(prop) else { return None };
    let statements: Vec<serde_json::Value> = statements
        .iter()
        .filter_map(|s| {
            let Value::Map(m) = s else { return None };
            let mut st = json!({
                "Effect": m.get("effect").and_then(Value::as_str).unwrap_or("Allow"),
                "Action": strings(m.get("actions")),
                "Resource": strings(m.get("resources")),
            });
            if let Some(c) = m.get("condition") {
                st["Condition"] = serde_json::to_value(c).unwrap_or_default();
            }
            Some(st)
        })
        .collect();
    (!statements.is_empty()).then(|| json!({"Version": "2012-10-17", "Statement": statements}).to_string())
}

impl Aws {
    async fn ensure_role(&self, r: &Resource, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("iam {op} for {}", r.id);
        let name = text(r, "name");
        let trust = trust_policy(r, refs)?;
        let tag_list = iam_tags(r);
        // A cluster's role lives under the clusters' path with the boundary attached in
        // the create call itself: the in-account daemon may create roles only so.
        let path = r.properties.get("path").and_then(Value::as_str);
        let boundary = match ref_of(r, "permissionsBoundary") {
            Some(id) => Some(resolve(refs, r, &id)?),
            None => None,
        };
        let created = self
            .retry
            .call(&what("CreateRole"), || {
                self.iam
                    .create_role()
                    .role_name(name)
                    .set_path(path.map(str::to_owned))
                    .set_permissions_boundary(boundary.map(str::to_owned))
                    .assume_role_policy_document(&trust)
                    .set_tags(Some(tag_list.clone()))
                    .send()
            })
            .await;
        let arn = match created {
            Ok(out) => out.role().map(|r| r.arn().to_owned()).ok_or_else(|| missing(&what("CreateRole"), "Role"))?,
            Err(e) if e.is(&["EntityAlreadyExists"]) => {
                self.retry
                    .call(&what("UpdateAssumeRolePolicy"), || {
                        self.iam.update_assume_role_policy().role_name(name).policy_document(&trust).send()
                    })
                    .await?;
                self.retry.call(&what("TagRole"), || self.iam.tag_role().role_name(name).set_tags(Some(tag_list.clone())).send()).await?;
                let got = self.retry.call(&what("GetRole"), || self.iam.get_role().role_name(name).send()).await?;
                let role = got.role().ok_or_else(|| missing(&what("GetRole"), "Role"))?;
                let live = role.permissions_boundary().and_then(|b| b.permissions_boundary_arn());
                if let Some(b) = boundary.filter(|b| live != Some(*b)) {
                    self.retry
                        .call(&what("PutRolePermissionsBoundary"), || {
                            self.iam.put_role_permissions_boundary().role_name(name).permissions_boundary(b).send()
                        })
                        .await?;
                }
                role.arn().to_owned()
            }
            Err(e) => return Err(e),
        };
        let want: BTreeSet<String> = strings(r.properties.get("managedPolicies")).into_iter().collect();
        let attached =
            self.retry.call(&what("ListAttachedRolePolicies"), || self.iam.list_attached_role_policies().role_name(name).send()).await?;
        let have: BTreeSet<String> = attached.attached_policies().iter().filter_map(|p| p.policy_arn().map(str::to_owned)).collect();
        for p in want.difference(&have) {
            self.retry.call(&what("AttachRolePolicy"), || self.iam.attach_role_policy().role_name(name).policy_arn(p).send()).await?;
        }
        for p in have.difference(&want) {
            self.retry.call(&what("DetachRolePolicy"), || self.iam.detach_role_policy().role_name(name).policy_arn(p).send()).await?;
        }
        if let Some(doc) = inline_policy(r) {
            self.retry
                .call(&what("PutRolePolicy"), || {
                    self.iam.put_role_policy().role_name(name).policy_name(INLINE_POLICY).policy_document(&doc).send()
                })
                .await?;
        }
        Ok(found(r, name, [("arn", arn)]))
    }

    async fn delete_role(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("iam {op} for {} {}", f.id, f.cloud_id);
        let name = f.cloud_id.as_str();
        // NoSuchEntity from a list means the role is gone; from a detach or a policy
        // delete, only that policy is (the role is still deleted).
        let gone = &["NoSuchEntity"];
        let listed =
            self.retry.call(&what("ListAttachedRolePolicies"), || self.iam.list_attached_role_policies().role_name(name).send()).await;
        let Some(attached) = unless_gone(listed, gone)? else { return Ok(()) };
        for p in attached.attached_policies().iter().filter_map(|p| p.policy_arn()) {
            let r = self.retry.call(&what("DetachRolePolicy"), || self.iam.detach_role_policy().role_name(name).policy_arn(p).send()).await;
            unless_gone(r, gone)?;
        }
        let listed = self.retry.call(&what("ListRolePolicies"), || self.iam.list_role_policies().role_name(name).send()).await;
        let Some(inline) = unless_gone(listed, gone)? else { return Ok(()) };
        for p in inline.policy_names() {
            let r =
                self.retry.call(&what("DeleteRolePolicy"), || self.iam.delete_role_policy().role_name(name).policy_name(p).send()).await;
            unless_gone(r, gone)?;
        }
        let r = self.retry.call(&what("DeleteRole"), || self.iam.delete_role().role_name(name).send()).await;
        unless_gone(r, gone).map(drop)
    }

    /// A managed policy (the clusters' permissions boundary). Its ARN is its cloud id. An
    /// update makes the desired document the default version and deletes the others
    /// (IAM keeps at most five).
    async fn ensure_policy(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let what = |op: &str| format!("iam {op} for {}", r.id);
        let doc = policy_document(r, "document").ok_or_else(|| CloudError::new(r.id.to_string(), "no `document` statements"))?;
        let arn = match existing {
            Some(f) => {
                let arn = f.cloud_id.as_str();
                self.retry
                    .call(&what("CreatePolicyVersion"), || {
                        self.iam.create_policy_version().policy_arn(arn).policy_document(&doc).set_as_default(true).send()
                    })
                    .await?;
                self.delete_old_versions(&f.id, arn).await?;
                arn.to_owned()
            }
            None => {
                let tag_list = iam_tags(r);
                let out = self
                    .retry
                    .call(&what("CreatePolicy"), || {
                        self.iam
                            .create_policy()
                            .policy_name(text(r, "name"))
                            .path(text(r, "path"))
                            .policy_document(&doc)
                            .set_tags(Some(tag_list.clone()))
                            .send()
                    })
                    .await?;
                out.policy().and_then(|p| p.arn()).ok_or_else(|| missing(&what("CreatePolicy"), "Policy.Arn"))?.to_owned()
            }
        };
        Ok(found(r, arn, []))
    }

    async fn delete_old_versions(&self, id: &ResourceId, arn: &str) -> Result<(), CloudError> {
        let what = |op: &str| format!("iam {op} for {id} {arn}");
        let versions = self.retry.call(&what("ListPolicyVersions"), || self.iam.list_policy_versions().policy_arn(arn).send()).await?;
        for v in versions.versions().iter().filter(|v| !v.is_default_version()) {
            let Some(version) = v.version_id() else { continue };
            let r = self
                .retry
                .call(&what("DeletePolicyVersion"), || self.iam.delete_policy_version().policy_arn(arn).version_id(version).send())
                .await;
            unless_gone(r, &["NoSuchEntity"])?;
        }
        Ok(())
    }

    async fn delete_policy(&self, f: &Found) -> Result<(), CloudError> {
        let arn = f.cloud_id.as_str();
        match self.delete_old_versions(&f.id, arn).await {
            Err(e) if e.is(&["NoSuchEntity"]) => return Ok(()),
            other => other?,
        }
        let r = self.retry.call(&format!("iam DeletePolicy for {} {arn}", f.id), || self.iam.delete_policy().policy_arn(arn).send()).await;
        unless_gone(r, &["NoSuchEntity"]).map(drop)
    }

    async fn ensure_oidc(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("iam {op} for {}", r.id);
        let cluster_id = ref_of(r, "cluster").ok_or_else(|| CloudError::new(r.id.to_string(), "`cluster` names no resource"))?;
        let cluster = refs.get(&cluster_id).ok_or_else(|| CloudError::new(r.id.to_string(), format!("{cluster_id} does not exist yet")))?;
        let issuer = cluster
            .outputs
            .get("issuer")
            .filter(|i| !i.is_empty())
            .ok_or_else(|| CloudError::new(r.id.to_string(), format!("{cluster_id} has no OIDC issuer")))?;
        let clients = strings(r.properties.get("clientIds"));
        let arn = match existing {
            Some(f) => {
                let got = self
                    .retry
                    .call(&what("GetOpenIDConnectProvider"), || {
                        self.iam.get_open_id_connect_provider().open_id_connect_provider_arn(&f.cloud_id).send()
                    })
                    .await?;
                for c in clients.iter().filter(|c| !got.client_id_list().contains(c)) {
                    self.retry
                        .call(&what("AddClientIDToOpenIDConnectProvider"), || {
                            self.iam
                                .add_client_id_to_open_id_connect_provider()
                                .open_id_connect_provider_arn(&f.cloud_id)
                                .client_id(c)
                                .send()
                        })
                        .await?;
                }
                f.cloud_id.clone()
            }
            None => {
                let tag_list = iam_tags(r);
                let out = self
                    .retry
                    .call(&what("CreateOpenIDConnectProvider"), || {
                        self.iam
                            .create_open_id_connect_provider()
                            .url(issuer)
                            .set_client_id_list(Some(clients.clone()))
                            .set_tags(Some(tag_list.clone()))
                            .send()
                    })
                    .await?;
                out.open_id_connect_provider_arn().ok_or_else(|| missing(&what("CreateOpenIDConnectProvider"), "arn"))?.to_owned()
            }
        };
        Ok(found(r, arn, [("issuer", issuer.clone())]))
    }
}

// ---- EKS --------------------------------------------------------------------------

/// A status read while waiting.
enum Wait {
    Done,
    Pending(String),
    Failed(String),
}

impl Aws {
    /// Polls `check` until done, printing the state and the time waited at each poll.
    async fn wait<F, Fut>(&self, id: &ResourceId, mut check: F) -> Result<(), CloudError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Wait, CloudError>>,
    {
        let started = Instant::now();
        loop {
            match check().await? {
                Wait::Done => return Ok(()),
                Wait::Failed(why) => return Err(CloudError::new(id.to_string(), why)),
                Wait::Pending(state) => {
                    if started.elapsed() > self.wait_limit {
                        return Err(CloudError::new(id.to_string(), format!("still {state} after {}s", started.elapsed().as_secs())));
                    }
                    println!("waiting {id}: {state} ({}s)", started.elapsed().as_secs());
                    tokio::time::sleep(self.poll).await;
                }
            }
        }
    }

    async fn wait_cluster(&self, id: &ResourceId, name: &str, gone: bool) -> Result<Option<ekst::Cluster>, CloudError> {
        let what = format!("eks DescribeCluster {name}");
        let describe = || self.retry.call(&what, || self.eks.describe_cluster().name(name).send());
        self.wait(id, || async {
            Ok(match describe().await {
                Err(e) if gone && e.is(&["ResourceNotFoundException"]) => Wait::Done,
                Err(e) => return Err(e),
                Ok(d) => match d.cluster().and_then(|c| c.status().cloned()) {
                    Some(ekst::ClusterStatus::Active) if !gone => Wait::Done,
                    Some(ekst::ClusterStatus::Failed) => Wait::Failed(format!("EKS cluster {name} is FAILED")),
                    other => Wait::Pending(other.map_or("unknown".to_owned(), |s| s.as_str().to_owned())),
                },
            })
        })
        .await?;
        if gone {
            return Ok(None);
        }
        Ok(describe().await?.cluster().cloned())
    }

    async fn ensure_cluster(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("eks {op} for {}", r.id);
        let name = text(r, "name");
        let version = text(r, "version");
        if existing.is_none() {
            let role = resolve_prop(refs, r, "role")?;
            let vpc = ekst::VpcConfigRequest::builder()
                .set_subnet_ids(Some(resolve_list(refs, r, "subnets")?))
                .set_security_group_ids(Some(resolve_list(refs, r, "securityGroups")?))
                .endpoint_private_access(flag(r, "endpointPrivateAccess"))
                .endpoint_public_access(flag(r, "endpointPublicAccess"))
                .build();
            let cidr = Some(text(r, "serviceCidr")).filter(|c| !c.is_empty());
            let network = cidr.map(|c| ekst::KubernetesNetworkConfigRequest::builder().service_ipv4_cidr(c).build());
            let eks_tags: HashMap<String, String> = tags(r).into_iter().collect();
            let created = self
                .retry
                .call(&what("CreateCluster"), || {
                    self.eks
                        .create_cluster()
                        .name(name)
                        .version(version)
                        .role_arn(role)
                        .resources_vpc_config(vpc.clone())
                        .set_kubernetes_network_config(network.clone())
                        .set_tags(Some(eks_tags.clone()))
                        .send()
                })
                .await;
            match created {
                Ok(_) => {}
                // Created by a run that stopped before its tags were read back.
                Err(e) if e.is(&["ResourceInUseException"]) => {}
                Err(e) => return Err(e),
            }
        }
        let mut cluster = self.wait_cluster(&r.id, name, false).await?.ok_or_else(|| missing(&what("DescribeCluster"), "cluster"))?;
        if cluster.version().is_some_and(|v| v != version) {
            self.retry.call(&what("UpdateClusterVersion"), || self.eks.update_cluster_version().name(name).version(version).send()).await?;
            cluster = self.wait_cluster(&r.id, name, false).await?.ok_or_else(|| missing(&what("DescribeCluster"), "cluster"))?;
        }
        Ok(cluster_found(r.id.clone(), &cluster))
    }

    async fn delete_cluster(&self, f: &Found) -> Result<(), CloudError> {
        self.retry
            .call(&format!("eks DeleteCluster for {} {}", f.id, f.cloud_id), || self.eks.delete_cluster().name(&f.cloud_id).send())
            .await?;
        self.wait_cluster(&f.id, &f.cloud_id, true).await.map(drop)
    }

    async fn wait_node_group(&self, id: &ResourceId, cluster: &str, group: &str, gone: bool) -> Result<(), CloudError> {
        self.wait(id, || async {
            let d = self
                .retry
                .call(&format!("eks DescribeNodegroup {cluster}/{group}"), || {
                    self.eks.describe_nodegroup().cluster_name(cluster).nodegroup_name(group).send()
                })
                .await;
            Ok(match d {
                Err(e) if gone && e.is(&["ResourceNotFoundException"]) => Wait::Done,
                Err(e) => return Err(e),
                Ok(d) => match d.nodegroup().and_then(|n| n.status().cloned()) {
                    Some(ekst::NodegroupStatus::Active) if !gone => Wait::Done,
                    Some(
                        s @ (ekst::NodegroupStatus::CreateFailed | ekst::NodegroupStatus::DeleteFailed | ekst::NodegroupStatus::Degraded),
                    ) => {
                        let issues: Vec<String> = d
                            .nodegroup()
                            .and_then(|n| n.health())
                            .map(|h| h.issues().iter().filter_map(|i| i.message().map(str::to_owned)).collect())
                            .unwrap_or_default();
                        Wait::Failed(format!("node group {group} is {}: {}", s.as_str(), issues.join("; ")))
                    }
                    other => Wait::Pending(other.map_or("unknown".to_owned(), |s| s.as_str().to_owned())),
                },
            })
        })
        .await
    }

    async fn ensure_node_group(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("eks {op} for {}", r.id);
        let cluster = resolve_prop(refs, r, "cluster")?.to_owned();
        let group = short_name(&r.id).to_owned();
        let scaling = ekst::NodegroupScalingConfig::builder()
            .min_size(int(r, "minSize"))
            .max_size(int(r, "maxSize"))
            .desired_size(int(r, "minSize"))
            .build();
        let labels: HashMap<String, String> = match r.properties.get("labels") {
            Some(Value::Map(m)) => m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.to_owned(), v.to_owned()))).collect(),
            _ => HashMap::new(),
        };
        let taints: Vec<ekst::Taint> = match r.properties.get("taints") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|t| match t {
                    Value::Map(m) => Some(
                        ekst::Taint::builder()
                            .key(m.get("key").and_then(Value::as_str).unwrap_or_default())
                            .value(m.get("value").and_then(Value::as_str).unwrap_or_default())
                            .effect(match m.get("effect").and_then(Value::as_str) {
                                Some("NoExecute") => ekst::TaintEffect::NoExecute,
                                Some("PreferNoSchedule") => ekst::TaintEffect::PreferNoSchedule,
                                _ => ekst::TaintEffect::NoSchedule,
                            })
                            .build(),
                    ),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        match existing {
            None => {
                let role = resolve_prop(refs, r, "nodeRole")?;
                let subnets = resolve_list(refs, r, "subnets")?;
                let eks_tags: HashMap<String, String> = tags(r).into_iter().collect();
                let created = self
                    .retry
                    .call(&what("CreateNodegroup"), || {
                        self.eks
                            .create_nodegroup()
                            .cluster_name(&cluster)
                            .nodegroup_name(&group)
                            .scaling_config(scaling.clone())
                            .instance_types(text(r, "instanceType"))
                            .set_subnets(Some(subnets.clone()))
                            .node_role(role)
                            .set_labels(Some(labels.clone()))
                            .set_taints(Some(taints.clone()).filter(|t| !t.is_empty()))
                            .set_tags(Some(eks_tags.clone()))
                            .send()
                    })
                    .await;
                match created {
                    Ok(_) => {}
                    Err(e) if e.is(&["ResourceInUseException"]) => {}
                    Err(e) => return Err(e),
                }
            }
            Some(_) => {
                let d = self
                    .retry
                    .call(&what("DescribeNodegroup"), || self.eks.describe_nodegroup().cluster_name(&cluster).nodegroup_name(&group).send())
                    .await?;
                let ng = d.nodegroup().cloned().ok_or_else(|| missing(&what("DescribeNodegroup"), "nodegroup"))?;
                let have_scaling = ng.scaling_config().map(|s| (s.min_size(), s.max_size()));
                let have_labels: HashMap<String, String> = ng.labels().cloned().unwrap_or_default();
                let label_update = (have_labels != labels).then(|| {
                    ekst::UpdateLabelsPayload::builder()
                        .set_add_or_update_labels(Some(labels.clone()))
                        .set_remove_labels(Some(have_labels.keys().filter(|k| !labels.contains_key(*k)).cloned().collect()))
                        .build()
                });
                let have_taints: Vec<ekst::Taint> = ng.taints().to_vec();
                let taint_update = (have_taints != taints).then(|| {
                    ekst::UpdateTaintsPayload::builder()
                        .set_add_or_update_taints(Some(taints.clone()))
                        .set_remove_taints(Some(
                            have_taints.iter().filter(|t| !taints.iter().any(|w| w.key() == t.key())).cloned().collect(),
                        ))
                        .build()
                });
                let scaling_update = (have_scaling != Some((scaling.min_size(), scaling.max_size()))).then(|| {
                    // Keep the current desired size within the new bounds; the autoscaler owns it.
                    let current = ng.scaling_config().and_then(|s| s.desired_size()).unwrap_or(int(r, "minSize"));
                    ekst::NodegroupScalingConfig::builder()
                        .min_size(int(r, "minSize"))
                        .max_size(int(r, "maxSize"))
                        .desired_size(current.clamp(int(r, "minSize"), int(r, "maxSize").max(int(r, "minSize"))))
                        .build()
                });
                if scaling_update.is_some() || label_update.is_some() || taint_update.is_some() {
                    self.retry
                        .call(&what("UpdateNodegroupConfig"), || {
                            self.eks
                                .update_nodegroup_config()
                                .cluster_name(&cluster)
                                .nodegroup_name(&group)
                                .set_scaling_config(scaling_update.clone())
                                .set_labels(label_update.clone())
                                .set_taints(taint_update.clone())
                                .send()
                        })
                        .await?;
                }
            }
        }
        self.wait_node_group(&r.id, &cluster, &group, false).await?;
        Ok(found(r, group, [("cluster", cluster)]))
    }

    async fn delete_node_group(&self, f: &Found) -> Result<(), CloudError> {
        let cluster = f.outputs.get("cluster").cloned().unwrap_or_default();
        self.retry
            .call(&format!("eks DeleteNodegroup for {} {}", f.id, f.cloud_id), || {
                self.eks.delete_nodegroup().cluster_name(&cluster).nodegroup_name(&f.cloud_id).send()
            })
            .await?;
        self.wait_node_group(&f.id, &cluster, &f.cloud_id, true).await
    }
}

// ---- S3 ---------------------------------------------------------------------------

impl Aws {
    /// A bucket's versioning, default encryption and public access block in property form.
    async fn live_bucket(&self, name: &str) -> Result<Map, CloudError> {
        let mut live = Map::new();
        match self.retry.call(&format!("s3 GetBucketVersioning {name}"), || self.s3.get_bucket_versioning().bucket(name).send()).await {
            Ok(v) => {
                live.insert("versioning", Value::Bool(v.status() == Some(&aws_sdk_s3::types::BucketVersioningStatus::Enabled)));
            }
            // A success the SDK cannot parse is no answer S3 gives; plain moto does (a wrong
            // root element). The setting is then not read, so its drift is not checked,
            // rather than nothing else being possible on such an endpoint.
            Err(e) if e.code.is_none() && e.message.starts_with("HTTP 200") => {
                crate::logging::line(
                    crate::logging::Level::Warn,
                    &format!("warning: {e}; versioning of bucket {name} is not read, so its drift is not checked"),
                );
            }
            Err(e) => return Err(e),
        }
        let blocked = match self
            .retry
            .call(&format!("s3 GetPublicAccessBlock {name}"), || self.s3.get_public_access_block().bucket(name).send())
            .await
        {
            Ok(b) => b.public_access_block_configuration().is_some_and(|c| {
                [c.block_public_acls(), c.ignore_public_acls(), c.block_public_policy(), c.restrict_public_buckets()]
                    .iter()
                    .all(|x| *x == Some(true))
            }),
            Err(e) if e.is(&["NoSuchPublicAccessBlockConfiguration"]) => false,
            Err(e) => return Err(e),
        };
        live.insert("publicAccessBlock", Value::Bool(blocked));
        let algorithm = match self
            .retry
            .call(&format!("s3 GetBucketEncryption {name}"), || self.s3.get_bucket_encryption().bucket(name).send())
            .await
        {
            Ok(e) => e
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .map(|d| d.sse_algorithm().as_str().to_owned())
                .unwrap_or_default(),
            Err(e) if e.is(&["ServerSideEncryptionConfigurationNotFoundError"]) => String::new(),
            Err(e) => return Err(e),
        };
        live.insert("encryption", Value::from(algorithm));
        Ok(live)
    }

    async fn ensure_bucket(&self, r: &Resource) -> Result<Found, CloudError> {
        use aws_sdk_s3::types as s3t;
        let what = |op: &str| format!("s3 {op} for {}", r.id);
        let name = text(r, "name");
        let region = text(r, "region");
        let location = (region != "us-east-1" && !region.is_empty())
            .then(|| s3t::CreateBucketConfiguration::builder().location_constraint(s3t::BucketLocationConstraint::from(region)).build());
        match self
            .retry
            .call(&what("CreateBucket"), || self.s3.create_bucket().bucket(name).set_create_bucket_configuration(location.clone()).send())
            .await
        {
            Ok(_) => {}
            Err(e) if e.is(&["BucketAlreadyOwnedByYou"]) => {}
            Err(e) if e.is(&["BucketAlreadyExists"]) => {
                return Err(CloudError {
                    message: format!("bucket name {name:?} is taken by another account; choose another name in the environment spec"),
                    ..e
                });
            }
            Err(e) => return Err(e),
        }
        let status = if flag(r, "versioning") { s3t::BucketVersioningStatus::Enabled } else { s3t::BucketVersioningStatus::Suspended };
        let versioning = s3t::VersioningConfiguration::builder().status(status).build();
        self.retry
            .call(&what("PutBucketVersioning"), || {
                self.s3.put_bucket_versioning().bucket(name).versioning_configuration(versioning.clone()).send()
            })
            .await?;
        let algorithm =
            if text(r, "encryption") == "aws:kms" { s3t::ServerSideEncryption::AwsKms } else { s3t::ServerSideEncryption::Aes256 };
        let rule = s3t::ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                s3t::ServerSideEncryptionByDefault::builder()
                    .sse_algorithm(algorithm)
                    .build()
                    .map_err(|e| CloudError::new(what("encryption"), e.to_string()))?,
            )
            .bucket_key_enabled(true)
            .build();
        let encryption = s3t::ServerSideEncryptionConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(|e| CloudError::new(what("encryption"), e.to_string()))?;
        self.retry
            .call(&what("PutBucketEncryption"), || {
                self.s3.put_bucket_encryption().bucket(name).server_side_encryption_configuration(encryption.clone()).send()
            })
            .await?;
        if flag(r, "publicAccessBlock") {
            let block = s3t::PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build();
            self.retry
                .call(&what("PutPublicAccessBlock"), || {
                    self.s3.put_public_access_block().bucket(name).public_access_block_configuration(block.clone()).send()
                })
                .await?;
        }
        let tag_set: Vec<s3t::Tag> = tags(r).into_iter().filter_map(|(k, v)| s3t::Tag::builder().key(k).value(v).build().ok()).collect();
        let tagging =
            s3t::Tagging::builder().set_tag_set(Some(tag_set)).build().map_err(|e| CloudError::new(what("tags"), e.to_string()))?;
        self.retry.call(&what("PutBucketTagging"), || self.s3.put_bucket_tagging().bucket(name).tagging(tagging.clone()).send()).await?;
        Ok(found(r, name, []))
    }

    /// Empties a bucket (every version and delete marker) and deletes it. Only reached
    /// when `destroy --delete-data` lifted the protection.
    async fn delete_bucket(&self, f: &Found) -> Result<(), CloudError> {
        use aws_sdk_s3::types as s3t;
        let what = |op: &str| format!("s3 {op} for {} {}", f.id, f.cloud_id);
        loop {
            let page = self.retry.call(&what("ListObjectVersions"), || self.s3.list_object_versions().bucket(&f.cloud_id).send()).await?;
            let ids: Vec<s3t::ObjectIdentifier> = page
                .versions()
                .iter()
                .map(|v| (v.key(), v.version_id()))
                .chain(page.delete_markers().iter().map(|m| (m.key(), m.version_id())))
                .filter_map(|(k, v)| s3t::ObjectIdentifier::builder().key(k?).set_version_id(v.map(str::to_owned)).build().ok())
                .collect();
            if ids.is_empty() {
                break;
            }
            let delete = s3t::Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| CloudError::new(what("DeleteObjects"), e.to_string()))?;
            self.retry.call(&what("DeleteObjects"), || self.s3.delete_objects().bucket(&f.cloud_id).delete(delete.clone()).send()).await?;
        }
        self.retry.call(&what("DeleteBucket"), || self.s3.delete_bucket().bucket(&f.cloud_id).send()).await?;
        Ok(())
    }
}

// ---- ELBv2 ------------------------------------------------------------------------

impl Aws {
    async fn ensure_nlb(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("elbv2 {op} for {}", r.id);
        let name = text(r, "name");
        let subnets = resolve_list(refs, r, "subnets")?;
        let elb_tags: Vec<elbt::Tag> = tags(r).into_iter().map(|(k, v)| elbt::Tag::builder().key(k).value(v).build()).collect();
        let (arn, dns, vpc) = match existing {
            Some(f) => {
                let d = self
                    .retry
                    .call(&what("DescribeLoadBalancers"), || self.elb.describe_load_balancers().load_balancer_arns(&f.cloud_id).send())
                    .await?;
                let lb = d.load_balancers().first().cloned().ok_or_else(|| missing(&what("DescribeLoadBalancers"), "load balancer"))?;
                (f.cloud_id.clone(), lb.dns_name().unwrap_or_default().to_owned(), lb.vpc_id().unwrap_or_default().to_owned())
            }
            None => {
                let scheme = if text(r, "scheme") == "internet-facing" {
                    elbt::LoadBalancerSchemeEnum::InternetFacing
                } else {
                    elbt::LoadBalancerSchemeEnum::Internal
                };
                let groups = resolve_list(refs, r, "securityGroups")?;
                let out = self
                    .retry
                    .call(&what("CreateLoadBalancer"), || {
                        self.elb
                            .create_load_balancer()
                            .name(name)
                            .r#type(elbt::LoadBalancerTypeEnum::Network)
                            .scheme(scheme.clone())
                            .set_subnets(Some(subnets.clone()))
                            .set_security_groups(Some(groups.clone()))
                            .set_tags(Some(elb_tags.clone()))
                            .send()
                    })
                    .await?;
                let lb = out.load_balancers().first().cloned().ok_or_else(|| missing(&what("CreateLoadBalancer"), "LoadBalancers"))?;
                let arn = lb.load_balancer_arn().ok_or_else(|| missing(&what("CreateLoadBalancer"), "LoadBalancerArn"))?.to_owned();
                (arn, lb.dns_name().unwrap_or_default().to_owned(), lb.vpc_id().unwrap_or_default().to_owned())
            }
        };
        let cross_zone =
            elbt::LoadBalancerAttribute::builder().key("load_balancing.cross_zone.enabled").value(flag(r, "crossZone").to_string()).build();
        self.retry
            .call(&what("ModifyLoadBalancerAttributes"), || {
                self.elb.modify_load_balancer_attributes().load_balancer_arn(&arn).attributes(cross_zone.clone()).send()
            })
            .await?;

        // Listeners by port, each forwarding to its own target group (IP targets).
        let mut want: BTreeSet<i32> = BTreeSet::new();
        if let Some(Value::List(items)) = r.properties.get("listeners") {
            for l in items {
                if let Value::Map(m) = l
                    && let Some(Value::Int(p)) = m.get("port")
                {
                    want.insert(*p as i32);
                }
            }
        }
        let listeners =
            self.retry.call(&what("DescribeListeners"), || self.elb.describe_listeners().load_balancer_arn(&arn).send()).await?;
        let mut have = BTreeSet::new();
        for l in listeners.listeners() {
            let port = l.port().unwrap_or_default();
            if want.contains(&port) {
                have.insert(port);
            } else if let Some(listener) = l.listener_arn() {
                self.retry.call(&what("DeleteListener"), || self.elb.delete_listener().listener_arn(listener).send()).await?;
                for tg in l.default_actions().iter().filter_map(|a| a.target_group_arn()) {
                    self.retry.call(&what("DeleteTargetGroup"), || self.elb.delete_target_group().target_group_arn(tg).send()).await?;
                }
            }
        }
        for port in want.difference(&have) {
            let tg_name = crate::expand::names::aws::target_group(name, i64::from(*port));
            let created = self
                .retry
                .call(&what("CreateTargetGroup"), || {
                    self.elb
                        .create_target_group()
                        .name(&tg_name)
                        .protocol(elbt::ProtocolEnum::Tcp)
                        .port(*port)
                        .vpc_id(&vpc)
                        .target_type(elbt::TargetTypeEnum::Ip)
                        .set_tags(Some(elb_tags.clone()))
                        .send()
                })
                .await;
            let groups = match created {
                Ok(out) => out.target_groups().to_vec(),
                // An interrupted run created it but not its listener (AWS answers a repeated
                // create with the existing group; some emulators refuse it).
                Err(e) if e.is(&["DuplicateTargetGroupName"]) => self
                    .retry
                    .call(&what("DescribeTargetGroups"), || self.elb.describe_target_groups().names(&tg_name).send())
                    .await?
                    .target_groups()
                    .to_vec(),
                Err(e) => return Err(e),
            };
            let tg_arn = groups
                .first()
                .and_then(|t| t.target_group_arn())
                .ok_or_else(|| missing(&what("CreateTargetGroup"), "TargetGroupArn"))?
                .to_owned();
            let action = elbt::Action::builder().r#type(elbt::ActionTypeEnum::Forward).target_group_arn(&tg_arn).build();
            self.retry
                .call(&what("CreateListener"), || {
                    self.elb
                        .create_listener()
                        .load_balancer_arn(&arn)
                        .protocol(elbt::ProtocolEnum::Tcp)
                        .port(*port)
                        .default_actions(action.clone())
                        .set_tags(Some(elb_tags.clone()))
                        .send()
                })
                .await?;
        }
        Ok(found(r, arn, [("dnsName", dns)]))
    }

    async fn delete_nlb(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("elbv2 {op} for {} {}", f.id, f.cloud_id);
        // Target groups are found by the load balancer's resource tag, not through the load
        // balancer: one half created has none yet (DescribeTargetGroups by load balancer
        // then answers TargetGroupNotFound), and one half deleted may be gone while its
        // groups remain.
        let groups = self.target_groups_of(&f.id).await?;
        let listeners =
            self.retry.call(&what("DescribeListeners"), || self.elb.describe_listeners().load_balancer_arn(&f.cloud_id).send()).await;
        if let Some(listeners) = unless_gone(listeners, &["LoadBalancerNotFound", "ListenerNotFound"])? {
            for l in listeners.listeners().iter().filter_map(|l| l.listener_arn()) {
                let r = self.retry.call(&what("DeleteListener"), || self.elb.delete_listener().listener_arn(l).send()).await;
                unless_gone(r, &["ListenerNotFound"])?;
            }
        }
        let r =
            self.retry.call(&what("DeleteLoadBalancer"), || self.elb.delete_load_balancer().load_balancer_arn(&f.cloud_id).send()).await;
        unless_gone(r, &["LoadBalancerNotFound"])?;
        for tg in &groups {
            let r = self.retry.call(&what("DeleteTargetGroup"), || self.elb.delete_target_group().target_group_arn(tg).send()).await;
            unless_gone(r, &["TargetGroupNotFound"])?;
        }
        Ok(())
    }

    /// ARNs of the target groups tagged for this environment with the resource id `id`.
    async fn target_groups_of(&self, id: &ResourceId) -> Result<Vec<String>, CloudError> {
        let mut marker: Option<String> = None;
        let mut arns = Vec::new();
        loop {
            let page = self
                .retry
                .call(&format!("elbv2 DescribeTargetGroups for {id}"), || {
                    self.elb.describe_target_groups().set_marker(marker.clone()).send()
                })
                .await;
            // Some endpoints answer an empty region with TargetGroupNotFound.
            let Some(page) = unless_gone(page, &["TargetGroupNotFound"])? else { break };
            arns.extend(page.target_groups().iter().filter_map(|t| t.target_group_arn().map(str::to_owned)));
            marker = page.next_marker().map(str::to_owned);
            if marker.is_none() {
                break;
            }
        }
        let mut ours = Vec::new();
        for chunk in arns.chunks(20) {
            let t = self
                .retry
                .call(&format!("elbv2 DescribeTags for {id}"), || self.elb.describe_tags().set_resource_arns(Some(chunk.to_vec())).send())
                .await?;
            for d in t.tag_descriptions() {
                let tagged = |key: &str, value: &str| d.tags().iter().any(|t| t.key() == Some(key) && t.value() == Some(value));
                if tagged(TAG_ENVIRONMENT, &self.environment)
                    && tagged(TAG_RESOURCE, id.as_str())
                    && let Some(arn) = d.resource_arn()
                {
                    ours.push(arn.to_owned());
                }
            }
        }
        Ok(ours)
    }
}

// ---- preflight --------------------------------------------------------------------

/// What preflight found.
#[derive(Debug, Default)]
pub struct Preflight {
    /// Who the calls are made as (from STS).
    pub caller: String,
    /// Every problem, each naming the role, quota or action.
    pub problems: Vec<String>,
    /// Checks that could not be made meaningfully, and why.
    pub notes: Vec<String>,
}

/// Read actions observe makes on every run.
const OBSERVE_ACTIONS: &[&str] = &[
    "ec2:DescribeVpcs",
    "ec2:DescribeSubnets",
    "ec2:DescribeInternetGateways",
    "ec2:DescribeNatGateways",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeVpcEndpointServiceConfigurations",
    "iam:ListRoles",
    "iam:ListRoleTags",
    "iam:ListPolicies",
    "iam:ListPolicyTags",
    "iam:ListOpenIDConnectProviders",
    "iam:GetOpenIDConnectProvider",
    "eks:ListClusters",
    "eks:DescribeCluster",
    "eks:ListNodegroups",
    "eks:DescribeNodegroup",
    "s3:ListAllMyBuckets",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetEncryptionConfiguration",
    "ec2:DescribeVpcEndpointServicePermissions",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeTags",
];

/// The IAM actions one planned action calls (create and update share `ensure`).
pub fn actions_for(kind: Kind, action: Action) -> &'static [&'static str] {
    let delete = matches!(action, Action::Delete);
    match (kind, delete) {
        (Kind::AwsVpc, false) => &["ec2:CreateVpc", "ec2:CreateTags", "ec2:ModifyVpcAttribute"],
        (Kind::AwsVpc, true) => &["ec2:DeleteVpc"],
        (Kind::AwsSubnet, false) => &["ec2:CreateSubnet", "ec2:CreateTags", "ec2:ModifySubnetAttribute"],
        (Kind::AwsSubnet, true) => &["ec2:DeleteSubnet"],
        (Kind::AwsInternetGateway, false) => {
            &["ec2:CreateInternetGateway", "ec2:CreateTags", "ec2:AttachInternetGateway", "ec2:DetachInternetGateway"]
        }
        (Kind::AwsInternetGateway, true) => &["ec2:DetachInternetGateway", "ec2:DeleteInternetGateway"],
        (Kind::AwsNatGateway, false) => &["ec2:DescribeAddresses", "ec2:AllocateAddress", "ec2:CreateNatGateway", "ec2:CreateTags"],
        (Kind::AwsNatGateway, true) => &["ec2:DeleteNatGateway", "ec2:DescribeAddresses", "ec2:ReleaseAddress"],
        (Kind::AwsRouteTable, false) => &[
            "ec2:CreateRouteTable",
            "ec2:CreateTags",
            "ec2:CreateRoute",
            "ec2:ReplaceRoute",
            "ec2:DeleteRoute",
            "ec2:AssociateRouteTable",
            "ec2:DisassociateRouteTable",
        ],
        (Kind::AwsRouteTable, true) => &["ec2:DisassociateRouteTable", "ec2:DeleteRouteTable"],
        (Kind::AwsSecurityGroup, false) => {
            &["ec2:CreateSecurityGroup", "ec2:CreateTags", "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]
        }
        (Kind::AwsSecurityGroup, true) => &["ec2:DeleteSecurityGroup"],
        (Kind::AwsIamRole, false) => &[
            "iam:CreateRole",
            "iam:TagRole",
            "iam:GetRole",
            "iam:UpdateAssumeRolePolicy",
            "iam:ListAttachedRolePolicies",
            "iam:AttachRolePolicy",
            "iam:DetachRolePolicy",
            "iam:PutRolePolicy",
            "iam:PutRolePermissionsBoundary",
        ],
        (Kind::AwsIamPolicy, false) => {
            &["iam:CreatePolicy", "iam:TagPolicy", "iam:CreatePolicyVersion", "iam:ListPolicyVersions", "iam:DeletePolicyVersion"]
        }
        (Kind::AwsIamPolicy, true) => &["iam:ListPolicyVersions", "iam:DeletePolicyVersion", "iam:DeletePolicy"],
        (Kind::AwsIamRole, true) => {
            &["iam:ListAttachedRolePolicies", "iam:DetachRolePolicy", "iam:ListRolePolicies", "iam:DeleteRolePolicy", "iam:DeleteRole"]
        }
        (Kind::AwsEksCluster, false) => &["eks:CreateCluster", "eks:TagResource", "iam:PassRole", "eks:UpdateClusterVersion"],
        (Kind::AwsEksCluster, true) => &["eks:DeleteCluster"],
        (Kind::AwsOidcProvider, false) => {
            &["iam:CreateOpenIDConnectProvider", "iam:TagOpenIDConnectProvider", "iam:AddClientIDToOpenIDConnectProvider"]
        }
        (Kind::AwsOidcProvider, true) => &["iam:DeleteOpenIDConnectProvider"],
        (Kind::AwsEksNodeGroup, false) => &["eks:CreateNodegroup", "eks:TagResource", "iam:PassRole", "eks:UpdateNodegroupConfig"],
        (Kind::AwsEksNodeGroup, true) => &["eks:DeleteNodegroup"],
        (Kind::AwsS3Bucket, false) => &[
            "s3:CreateBucket",
            "s3:PutBucketVersioning",
            "s3:PutEncryptionConfiguration",
            "s3:PutBucketPublicAccessBlock",
            "s3:PutBucketTagging",
        ],
        (Kind::AwsS3Bucket, true) => &["s3:ListBucketVersions", "s3:DeleteObjectVersion", "s3:DeleteBucket"],
        (Kind::AwsNlb, false) => &[
            "elasticloadbalancing:CreateLoadBalancer",
            "elasticloadbalancing:AddTags",
            "elasticloadbalancing:ModifyLoadBalancerAttributes",
            "elasticloadbalancing:DescribeListeners",
            "elasticloadbalancing:CreateTargetGroup",
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:CreateListener",
            "elasticloadbalancing:DeleteListener",
            "elasticloadbalancing:DeleteTargetGroup",
        ],
        (Kind::AwsNlb, true) => &[
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeListeners",
            "elasticloadbalancing:DeleteListener",
            "elasticloadbalancing:DeleteLoadBalancer",
            "elasticloadbalancing:DeleteTargetGroup",
        ],
        (Kind::AwsVpcEndpointService, false) => &[
            "ec2:CreateVpcEndpointServiceConfiguration",
            "ec2:ModifyVpcEndpointServiceConfiguration",
            "ec2:DescribeVpcEndpointServicePermissions",
            "ec2:ModifyVpcEndpointServicePermissions",
        ],
        (Kind::AwsVpcEndpointService, true) => &["ec2:DeleteVpcEndpointServiceConfigurations"],
        _ => &[],
    }
}

/// Every IAM action `plan` needs, sorted.
pub fn plan_actions(plan: &Plan) -> Vec<&'static str> {
    let mut all: BTreeSet<&'static str> = OBSERVE_ACTIONS.iter().copied().collect();
    for s in plan.changed().filter(|s| s.action != Action::Blocked) {
        all.extend(actions_for(s.kind, s.action));
        if s.action == Action::Replace {
            all.extend(actions_for(s.kind, Action::Delete));
        }
    }
    all.into_iter().collect()
}

impl Aws {
    /// Checks made before any change; every problem is collected, none stops the others.
    /// The node-group checks (service-linked role, quota) are made only when the plan
    /// creates or changes node groups.
    pub async fn preflight(&self, plan: &Plan) -> Preflight {
        let node_groups = plan
            .changed()
            .any(|s| s.kind == Kind::AwsEksNodeGroup && matches!(s.action, Action::Create | Action::Update | Action::Replace));
        let mut p = Preflight::default();
        match self.retry.call("sts GetCallerIdentity", || self.sts.get_caller_identity().send()).await {
            Ok(id) => p.caller = id.arn().unwrap_or_default().to_owned(),
            Err(e) => {
                p.problems.push(format!("cannot tell who the credentials belong to: {e}"));
                return p;
            }
        }

        if node_groups {
            self.node_group_checks(&mut p).await;
        }
        self.permission_checks(plan, &mut p).await;
        p
    }

    async fn node_group_checks(&self, p: &mut Preflight) {
        match self.retry.call(&format!("iam GetRole {AUTOSCALING_ROLE}"), || self.iam.get_role().role_name(AUTOSCALING_ROLE).send()).await {
            Ok(_) => {}
            Err(e) if e.is(&["NoSuchEntity"]) => p.problems.push(format!(
                "the service-linked role {AUTOSCALING_ROLE} does not exist in this account; EKS managed node groups need it. Create it once with: aws iam create-service-linked-role --aws-service-name autoscaling.amazonaws.com"
            )),
            Err(e) => p.problems.push(format!("cannot check the service-linked role {AUTOSCALING_ROLE}: {e}")),
        }

        let (service, code) = NODE_GROUP_QUOTA;
        let quota = match self
            .retry
            .call("service-quotas GetServiceQuota", || self.quotas.get_service_quota().service_code(service).quota_code(code).send())
            .await
        {
            Err(e) if e.is(&["NoSuchResourceException"]) => self
                .retry
                .call("service-quotas GetAWSDefaultServiceQuota", || {
                    self.quotas.get_aws_default_service_quota().service_code(service).quota_code(code).send()
                })
                .await
                .map(|o| o.quota().and_then(|q| q.value())),
            other => other.map(|o| o.quota().and_then(|q| q.value())),
        };
        match quota {
            Ok(Some(v)) if v >= NODE_GROUP_QUOTA_MIN => {}
            Ok(Some(v)) => p.problems.push(format!(
                "the quota {service}/{code} (managed node groups per cluster) is {v}, below the {NODE_GROUP_QUOTA_MIN} this environment needs; request an increase in Service Quotas"
            )),
            Ok(None) => p.problems.push(format!("Service Quotas returned no value for {service}/{code}; the managed node group quota could not be checked")),
            Err(e) => p.problems.push(format!("cannot read the quota {service}/{code} (managed node groups per cluster), so it was not checked: {e}")),
        }
    }

    async fn permission_checks(&self, plan: &Plan, p: &mut Preflight) {
        let principal = match self.principal_arn(&p.caller).await {
            Ok(Some(arn)) => arn,
            Ok(None) => {
                p.notes.push(format!("{} is the account's root user, which IAM cannot simulate; permissions not checked", p.caller));
                return;
            }
            Err(e) => {
                p.problems.push(format!("cannot find the IAM principal behind {}: {e}", p.caller));
                return;
            }
        };
        let actions: Vec<String> = plan_actions(plan).into_iter().map(str::to_owned).collect();
        let mut denied = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .retry
                .call("iam SimulatePrincipalPolicy", || {
                    self.iam
                        .simulate_principal_policy()
                        .policy_source_arn(&principal)
                        .set_action_names(Some(actions.clone()))
                        .set_marker(marker.clone())
                        .send()
                })
                .await;
            match out {
                Ok(out) => {
                    for r in out.evaluation_results() {
                        if r.eval_decision() != &aws_sdk_iam::types::PolicyEvaluationDecisionType::Allowed {
                            denied.push(format!("{} ({})", r.eval_action_name(), r.eval_decision().as_str()));
                        }
                    }
                    marker = out.marker().map(str::to_owned);
                    if !out.is_truncated() || marker.is_none() {
                        break;
                    }
                }
                Err(e) => {
                    p.problems.push(format!("cannot check the permissions of {principal} (iam:SimulatePrincipalPolicy): {e}"));
                    return;
                }
            }
        }
        if !denied.is_empty() {
            p.problems.push(format!("{principal} is not allowed {} action(s) this plan needs: {}", denied.len(), denied.join(", ")));
        }
    }

    /// The IAM ARN to simulate for a caller: a user as is, an assumed role as its role
    /// (with its path); `None` for the root user.
    async fn principal_arn(&self, caller: &str) -> Result<Option<String>, CloudError> {
        if caller.ends_with(":root") {
            return Ok(None);
        }
        if let Some(rest) = caller.split_once(":assumed-role/").map(|(_, r)| r) {
            let role = rest.split('/').next().unwrap_or_default();
            let got = self.retry.call(&format!("iam GetRole {role}"), || self.iam.get_role().role_name(role).send()).await?;
            return Ok(got.role().map(|r| r.arn().to_owned()));
        }
        Ok(Some(caller.to_owned()))
    }
}
