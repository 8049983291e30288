//! Environment and cluster specs: the documents as written ([`wire`]) and the validated
//! domain types the rest of the reconciler works with.
//!
//! Reading goes bytes -> wire types (serde-saphyr, unknown fields refused) ->
//! [`validate`] (every semantic problem collected, each with file:line:col) -> [`Specs`].

pub mod load;
pub mod quantity;
pub mod validate;
pub mod wire;

use std::collections::BTreeMap;

use ipnet::IpNet;
use rwproxy::routes::RouteTable;
use serde::{Deserialize, Serialize};

/// Everything one environment directory describes, validated.
#[derive(Debug, Clone)]
pub struct Specs {
    /// The environment (network, Kubernetes, storage, exposure).
    pub environment: Environment,
    /// RisingWave clusters, sorted by name.
    pub clusters: Vec<Cluster>,
    /// SQL routes for RWProxy.
    pub routes: RouteTable,
}

/// The cloud an environment runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    /// Amazon Web Services.
    Aws,
    /// Google Cloud.
    Gcp,
    /// Microsoft Azure.
    Azure,
}

impl Cloud {
    /// Lower-case name, as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
        }
    }
}

/// A validated environment.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Environment name, a DNS label of at most 24 characters.
    pub name: String,
    /// Cloud provider.
    pub cloud: Cloud,
    /// Region.
    pub region: String,
    /// AWS account id, GCP project id or Azure subscription id.
    pub account: String,
    /// Azure resource group (Azure only; defaults to `byoc-<name>`).
    pub resource_group: Option<String>,
    /// Azure: whether the resource group was named in the spec, so exists already and is
    /// adopted (never created nor deleted by byoc); `false` for the default `byoc-<name>`.
    pub adopt_resource_group: bool,
    /// The network.
    pub network: Network,
    /// The managed Kubernetes cluster.
    pub kubernetes: Kubernetes,
    /// TCP port of the SQL proxy load balancers.
    pub proxy_port: u16,
    /// Client networks allowed to reach the public proxy load balancer; `None`: no public
    /// load balancer.
    pub public_proxy: Option<Vec<IpNet>>,
    /// Control-plane principals allowed through private connectivity.
    pub control_plane_principals: Vec<String>,
    /// Name of the bucket holding cluster data.
    pub data_bucket: String,
    /// Name of the bucket holding the reconciler's state.
    pub state_bucket: String,
    /// AWS: days a noncurrent version of a data-bucket object is kept before S3 expires it.
    pub noncurrent_version_days: u32,
    /// Tags added to every cloud resource.
    pub tags: BTreeMap<String, String>,
}

/// A validated network.
#[derive(Debug, Clone)]
pub struct Network {
    /// Address range of the VPC / VNet.
    pub cidr: IpNet,
    /// Availability zones used.
    pub zones: Vec<String>,
    /// Subnets, in the order written.
    pub subnets: Vec<Subnet>,
    /// GCP: the Private Service Connect NAT subnet's range (`None` elsewhere).
    pub private_service_connect: Option<IpNet>,
    /// Azure: the range of the subnet delegated to AKS for API-server VNet integration.
    pub api_server: Option<IpNet>,
    /// Azure: the range of the Private Link services' subnet.
    pub private_link: Option<IpNet>,
    /// AWS: how many NAT gateways the private subnets go out through.
    pub nat_gateways: NatGateways,
}

/// AWS: how many NAT gateways serve the private subnets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NatGateways {
    /// One, in the first public subnet: cheapest, but one zone's loss cuts every zone's
    /// egress.
    #[default]
    Single,
    /// One in each zone, each zone's private subnets routed to their own zone's.
    PerZone,
}

/// Whether a subnet routes to the internet directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// No direct internet route: nodes and internal load balancers.
    Private,
    /// Internet gateway route: NAT and public load balancers.
    Public,
}

impl Tier {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Private => "private",
            Tier::Public => "public",
        }
    }
}

/// A validated subnet.
#[derive(Debug, Clone)]
pub struct Subnet {
    /// Subnet name, unique in the environment.
    pub name: String,
    /// Private or public.
    pub tier: Tier,
    /// Address range, inside the network's.
    pub cidr: IpNet,
    /// Zone (AWS only: GCP and Azure subnets are regional).
    pub zone: Option<String>,
}

/// The managed Kubernetes cluster.
#[derive(Debug, Clone)]
pub struct Kubernetes {
    /// Kubernetes minor version, like `1.35`.
    pub version: String,
    /// Where the version is written (`file:line:col`), for errors about it found later
    /// (a downgrade, a version the cloud does not offer).
    pub version_at: String,
    /// EKS: whether the cluster may stay on a version in extended support (costs six times
    /// standard support); otherwise `upgradePolicy.supportType` is `STANDARD`.
    pub extended_support: bool,
    /// Service address range, if set (required on GCP).
    pub service_cidr: Option<IpNet>,
    /// Pod address range (GCP and Azure, where it is required).
    pub pod_cidr: Option<IpNet>,
    /// Node groups, in the order written.
    pub node_groups: Vec<NodeGroup>,
    /// Who reaches the API server, and from where.
    pub api_access: ApiAccess,
}

/// Access to the managed cluster's API server (AWS: the EKS endpoint and access entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiAccess {
    /// Networks allowed to the public endpoint; empty keeps the endpoint private, and then
    /// `byoc apply` must run inside the VPC to install anything in the cluster.
    pub public_cidrs: Vec<IpNet>,
    /// IAM role or user ARNs given cluster-admin (EKS access entries with
    /// AmazonEKSClusterAdminPolicy on the cluster). Empty: EKS makes the cluster's creator
    /// admin, as before access entries.
    pub administrators: Vec<String>,
}

/// A node group (EKS managed node group, GKE node pool, AKS agent pool).
#[derive(Debug, Clone)]
pub struct NodeGroup {
    /// Name, unique in the environment.
    pub name: String,
    /// Instance / machine / VM size.
    pub machine_type: String,
    /// Minimum node count.
    pub min: u32,
    /// Maximum node count.
    pub max: u32,
    /// Root volume of each node in GiB.
    pub root_volume_gib: u32,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    pub taints: Vec<Taint>,
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value (may be empty).
    pub value: String,
    /// Effect.
    pub effect: TaintEffect,
}

/// What a taint does to pods that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaintEffect {
    /// Pods are not scheduled.
    NoSchedule,
    /// Pods are avoided when possible.
    PreferNoSchedule,
    /// Running pods are evicted.
    NoExecute,
}

impl TaintEffect {
    /// Name as Kubernetes and the specs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

/// A validated RisingWave cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Cluster name, a DNS label of at most 40 characters; its namespace is `rw-<name>`.
    pub name: String,
    /// Container image, with a tag or a digest.
    pub image: String,
    /// Meta nodes.
    pub meta: Component,
    /// Frontend nodes (the SQL endpoints the proxy routes to).
    pub frontend: Component,
    /// Compute nodes.
    pub compute: Component,
    /// Compactor nodes.
    pub compactor: Component,
    /// Key prefix of the cluster's data in the environment's data bucket.
    pub state_prefix: String,
    /// Where the meta service keeps its metadata.
    pub meta_store: MetaStore,
    /// Node group the cluster's pods run on, if pinned.
    pub node_group: Option<String>,
    /// What happens when the cluster is removed from the specs.
    pub deletion_policy: DeletionPolicy,
    /// Report drift of the cluster's Kubernetes objects but leave it in place.
    pub ignore_drift: bool,
}

/// Replicas and resources of one RisingWave component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// Pod count.
    pub replicas: u32,
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// Where the meta service keeps its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaStore {
    /// SQLite on the meta node's volume.
    Sqlite,
    /// An external PostgreSQL database.
    Postgresql {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
        /// Database name.
        database: String,
        /// Kubernetes secret (in the cluster's namespace) holding `username` and `password`.
        credentials_secret: String,
    },
}

/// What happens to a cluster removed from the specs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeletionPolicy {
    /// Keep everything; the reconciler reports the cluster as orphaned.
    #[default]
    Retain,
    /// Delete the cluster's Kubernetes objects and workload identity.
    Delete,
}

impl DeletionPolicy {
    /// Name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionPolicy::Retain => "Retain",
            DeletionPolicy::Delete => "Delete",
        }
    }
}
