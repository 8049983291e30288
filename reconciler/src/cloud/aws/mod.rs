//! [`Cloud`] on AWS with the AWS SDK, one file per service: [`network`] (VPC, subnets,
//! gateways, route tables, security groups), [`private_connectivity`] (the VPC endpoint
//! service), [`identity`] (IAM roles, the clusters' permissions boundary, the cluster's OIDC
//! provider), [`kubernetes`] (EKS cluster, node groups), [`access`] (who administers it), [`launch_template`] (the node groups'
//! launch templates), [`addons`] (EKS add-ons), [`storage`] (S3 buckets),
//! [`load_balancing`] (the NLBs the AWS Load Balancer Controller makes for the sidecar's
//! Services, and byoc's own NLBs of before, which it deletes),
//! [`lb_controller`] (the AWS Load Balancer Controller installed in the cluster) and
//! [`preflight`] (checks made before any change). This file holds the provider type, its
//! clients, what every service shares (ownership tags, property readers, reference
//! resolution, waiting) and the [`Cloud`] impl that dispatches each resource kind to its
//! service.
//!
//! Every create call carries the resource's tags in the same request (EC2 tag
//! specifications, EKS/IAM/ELBv2 tags), so nothing exists untagged even for a moment;
//! buckets, which S3 tags only after creation, have fixed names and are found by name.

mod access;
mod addons;
mod gateway_endpoints;
mod identity;
mod kubernetes;
mod launch_template;
pub mod lb_controller;
mod load_balancing;
mod network;
pub mod preflight;
mod private_connectivity;
mod storage;
mod teardown;

use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::types as ec2t;

use super::retry::Retrier;
use super::{Cloud, CloudError, Found, Refs};
use crate::expand::{TAG_ENVIRONMENT, TAG_RESOURCE};
use crate::resource::{Kind, Map, Resource, ResourceId, Value};

/// Code of the error for a resource that exists under our name but is not ours.
pub const OWNERSHIP_CONFLICT: &str = "OwnershipConflict";

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
    /// The names of the environment's buckets: observe looks up these only (see
    /// `observe_s3`). Set by the caller from the environment spec.
    pub buckets: Vec<String>,
    /// The bucket that holds the state store (`--state-s3`), made by the administrator
    /// before the first apply, untagged: the one bucket byoc may take over.
    pub state_store_bucket: Option<String>,
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
            buckets: Vec::new(),
            state_store_bucket: None,
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

    /// Whether tags mark a resource as `r` of this environment.
    fn owns<'a>(&self, r: &Resource, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        self.ours(r.kind, tags).as_ref() == Some(&r.id)
    }

    /// The error for a resource that exists under `r`'s name without this environment's
    /// ownership tags for `r`: byoc never takes over what it did not make.
    fn not_ours(&self, r: &Resource, what: String, noun: &str, name: &str) -> CloudError {
        CloudError {
            what,
            code: Some(OWNERSHIP_CONFLICT.to_owned()),
            message: format!(
                "{noun} {name:?} already exists and is not tagged as this environment's ({TAG_ENVIRONMENT}={}, {TAG_RESOURCE}={}); byoc does not take over what it did not make. Delete or rename it, choose other names in the environment spec, or, if it is this environment's, add those tags",
                self.environment, r.id
            ),
        }
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

/// A map property of strings (`instanceTags`).
fn strings_map(v: Option<&Value>) -> Vec<(String, String)> {
    match v {
        Some(Value::Map(m)) => m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.to_owned(), v.to_owned()))).collect(),
        _ => Vec::new(),
    }
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

/// A status read while waiting.
enum Wait {
    Done,
    Pending(String),
    Failed(String),
}

impl Aws {
    /// Polls `check` until done, printing the state and the time waited at each poll.
    async fn wait<F, Fut>(&self, id: &ResourceId, check: F) -> Result<(), CloudError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Wait, CloudError>>,
    {
        self.wait_up_to(id, self.wait_limit, check).await
    }

    /// [`Aws::wait`] for at most `limit`.
    async fn wait_up_to<F, Fut>(&self, id: &ResourceId, limit: Duration, mut check: F) -> Result<(), CloudError>
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
                    if started.elapsed() > limit {
                        return Err(CloudError::new(id.to_string(), format!("still {state} after {}s", started.elapsed().as_secs())));
                    }
                    println!("waiting {id}: {state} ({}s)", started.elapsed().as_secs());
                    tokio::time::sleep(self.poll).await;
                }
            }
        }
    }
}

impl Cloud for Aws {
    async fn observe(&self) -> Result<Vec<Found>, CloudError> {
        let mut out = Vec::new();
        self.observe_network(&mut out).await?;
        self.observe_vpc_endpoints(&mut out).await?;
        self.observe_endpoint_services(&mut out).await?;
        self.observe_iam(&mut out).await?;
        self.observe_eks(&mut out).await?;
        // Access entries live under a cluster: only ours are read, and only where they can
        // exist (a CONFIG_MAP cluster answers ListAccessEntries with InvalidRequestException;
        // an answer without accessConfig, from an emulator, has none either).
        let clusters: Vec<String> = out
            .iter()
            .filter(|f| f.kind == Kind::AwsEksCluster)
            .filter(|f| f.outputs.get("authenticationMode").is_some_and(|m| m.starts_with("API")))
            .map(|f| f.cloud_id.clone())
            .collect();
        for cluster in &clusters {
            self.observe_access_entries(cluster, &mut out).await?;
        }
        self.observe_launch_templates(&mut out).await?;
        self.observe_s3(&mut out).await?;
        self.observe_elb(&mut out).await?;
        private_connectivity::link_endpoint_services(&mut out);
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
            Kind::AwsEksAccessEntry => self.ensure_access_entry(r, existing, refs).await,
            Kind::AwsLaunchTemplate => self.ensure_launch_template(r, existing, refs).await,
            Kind::AwsEksAddon => self.ensure_addon(r, existing, refs).await,
            Kind::AwsS3Bucket => self.ensure_bucket(r).await,
            Kind::AwsServiceNlb => self.ensure_service_nlb(r, refs).await,
            Kind::AwsVpcEndpointService => self.ensure_endpoint_service(r, existing, refs).await,
            Kind::AwsVpcEndpoint => self.ensure_vpc_endpoint(r, existing, refs).await,
            other => Err(CloudError::new(r.id.to_string(), format!("{} is not an AWS resource", other.label()))),
        }
    }

    async fn delete(&self, f: &Found) -> Result<(), CloudError> {
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
            "InvalidVpcEndpointId.NotFound",
            "InvalidLaunchTemplateId.NotFound",
            "InvalidLaunchTemplateName.NotFoundException",
        ];
        let result = match f.kind {
            Kind::AwsVpc => self.delete_vpc(f).await,
            Kind::AwsSubnet => self.delete_subnet(f).await,
            Kind::AwsInternetGateway => self.delete_igw(f).await,
            Kind::AwsNatGateway => self.delete_nat(f).await,
            Kind::AwsRouteTable => self.delete_route_table(f).await,
            Kind::AwsSecurityGroup => self.delete_security_group(f).await,
            Kind::AwsIamRole => self.delete_role(f).await,
            Kind::AwsIamPolicy => self.delete_policy(f).await,
            Kind::AwsEksCluster => self.delete_cluster(f).await,
            Kind::AwsOidcProvider => self.delete_oidc(f).await,
            Kind::AwsEksNodeGroup => self.delete_node_group(f).await,
            Kind::AwsEksAccessEntry => self.delete_access_entry(f).await,
            Kind::AwsLaunchTemplate => self.delete_launch_template(f).await,
            Kind::AwsEksAddon => self.delete_addon(f).await,
            Kind::AwsS3Bucket => self.delete_bucket(f).await,
            Kind::AwsNlb => self.delete_nlb(f).await,
            Kind::AwsServiceNlb => self.delete_service_nlb(f).await,
            Kind::AwsVpcEndpointService => self.delete_endpoint_service(f).await,
            Kind::AwsVpcEndpoint => self.delete_vpc_endpoint(f).await,
            other => Err(CloudError::new(f.id.to_string(), format!("{} is not an AWS resource", other.label()))),
        };
        match result {
            Err(e) if e.is(&gone) => Ok(()),
            other => other,
        }
    }
}
