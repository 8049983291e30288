//! Spec documents exactly as users write them. Fields that validation checks carry their
//! source location (`Spanned`), so a problem found later still names file:line:col.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub use rwproxy::routes::Metadata;

use super::{Cloud, DeletionPolicy, NatGateways, TaintEffect, Tier};

/// A `kind: Environment` document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentDocument {
    /// API version.
    pub api_version: Spanned<String>,
    /// `Environment`.
    pub kind: Spanned<String>,
    /// Name.
    pub metadata: Metadata,
    /// The environment.
    pub spec: EnvironmentSpec,
}

/// `spec` of an Environment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// aws, gcp or azure.
    pub cloud: Spanned<Cloud>,
    /// Region.
    pub region: Spanned<String>,
    /// AWS account id, GCP project id or Azure subscription id.
    pub account: Spanned<String>,
    /// Azure resource group.
    pub resource_group: Option<Spanned<String>>,
    /// Network.
    pub network: NetworkSpec,
    /// Managed Kubernetes.
    pub kubernetes: KubernetesSpec,
    /// Load balancer exposure.
    #[serde(default)]
    pub exposure: ExposureSpec,
    /// Control-plane access through private connectivity.
    pub control_plane: ControlPlaneSpec,
    /// Bucket names, when the defaults do not suit.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Tags on every cloud resource.
    #[serde(default)]
    pub tags: BTreeMap<String, Spanned<String>>,
}

/// `spec.network`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkSpec {
    /// VPC / VNet address range.
    pub cidr: Spanned<IpNet>,
    /// Zones.
    pub zones: Spanned<Vec<Spanned<String>>>,
    /// Subnets.
    pub subnets: Spanned<Vec<SubnetSpec>>,
    /// GCP: the Private Service Connect NAT subnet the service attachments publish from.
    pub private_service_connect: Option<PrivateServiceConnectSpec>,
    /// Azure: the subnet delegated to AKS for API-server VNet integration.
    pub api_server: Option<PrivateServiceConnectSpec>,
    /// Azure: the subnet the Private Link services take their NAT addresses from.
    pub private_link: Option<PrivateServiceConnectSpec>,
    /// AWS: one NAT gateway (`single`, the default) or one per zone (`perZone`).
    pub nat_gateways: Option<Spanned<NatGateways>>,
}

/// `spec.network.privateServiceConnect` (GCP), `apiServer` and `privateLink` (Azure): a
/// subnet of its own, given by its range.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateServiceConnectSpec {
    /// Address range of the PSC NAT subnet, inside the network's.
    pub cidr: Spanned<IpNet>,
}

/// One subnet.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetSpec {
    /// Name.
    pub name: Spanned<String>,
    /// private or public.
    pub tier: Tier,
    /// Address range.
    pub cidr: Spanned<IpNet>,
    /// Zone (AWS only).
    pub zone: Option<Spanned<String>>,
}

/// `spec.kubernetes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesSpec {
    /// Minor version, like "1.31".
    pub version: Spanned<String>,
    /// Service address range.
    pub service_cidr: Option<Spanned<IpNet>>,
    /// Pod address range (GCP: the nodes subnet's secondary range for pods; Azure: the
    /// CNI overlay's pod range).
    pub pod_cidr: Option<Spanned<IpNet>>,
    /// Node groups.
    pub node_groups: Spanned<Vec<NodeGroupSpec>>,
    /// EKS: `standard` (the default) or `extended`, the cluster's `upgradePolicy`.
    pub support_type: Option<Spanned<String>>,
    /// Who reaches the Kubernetes API, and from where (AWS).
    pub api_access: Option<ApiAccessSpec>,
}

/// `spec.kubernetes.apiAccess` (AWS): the public endpoint's allowed networks and the IAM
/// principals that administer the cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiAccessSpec {
    /// Networks allowed to the public endpoint; none keeps the endpoint private.
    pub public_cidrs: Option<Spanned<Vec<Spanned<IpNet>>>>,
    /// IAM role or user ARNs given cluster-admin through EKS access entries.
    pub administrators: Option<Spanned<Vec<Spanned<String>>>>,
}

/// One node group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeGroupSpec {
    /// Name.
    pub name: Spanned<String>,
    /// Instance type / machine type / VM size.
    pub machine_type: Spanned<String>,
    /// Minimum nodes.
    pub min: Spanned<u32>,
    /// Maximum nodes.
    pub max: Spanned<u32>,
    /// Size of each node's root volume in GiB (AWS: the launch template's gp3 volume).
    #[serde(rename = "rootVolumeGiB")]
    pub root_volume_gib: Option<Spanned<u32>>,
    /// Node labels.
    #[serde(default)]
    pub labels: BTreeMap<String, Spanned<String>>,
    /// Node taints.
    #[serde(default)]
    pub taints: Vec<TaintSpec>,
}

/// One taint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaintSpec {
    /// Key.
    pub key: Spanned<String>,
    /// Value.
    #[serde(default)]
    pub value: String,
    /// Effect.
    pub effect: TaintEffect,
}

/// `spec.exposure`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposureSpec {
    /// The SQL proxy's load balancers. The agent is always private and has no settings.
    #[serde(default)]
    pub proxy: ProxyExposureSpec,
}

/// `spec.exposure.proxy`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyExposureSpec {
    /// Listener port (default 4566).
    pub port: Option<Spanned<u16>>,
    /// A public load balancer, when present.
    pub public: Option<PublicExposureSpec>,
}

/// `spec.exposure.proxy.public`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublicExposureSpec {
    /// Client networks allowed.
    pub allowed_cidrs: Spanned<Vec<Spanned<IpNet>>>,
}

/// `spec.controlPlane`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneSpec {
    /// Principals allowed to connect through private connectivity.
    pub principals: Spanned<Vec<Spanned<String>>>,
}

/// `spec.storage`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StorageSpec {
    /// Data bucket name.
    pub data_bucket: Option<Spanned<String>>,
    /// State bucket name.
    pub state_bucket: Option<Spanned<String>>,
    /// AWS: days a noncurrent object version of the data bucket is kept (default 7).
    pub noncurrent_version_days: Option<Spanned<u32>>,
}

/// A `kind: RisingWaveCluster` document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterDocument {
    /// API version.
    pub api_version: Spanned<String>,
    /// `RisingWaveCluster`.
    pub kind: Spanned<String>,
    /// Name.
    pub metadata: Metadata,
    /// The cluster.
    pub spec: ClusterSpec,
}

/// `spec` of a RisingWaveCluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Image with a tag or digest.
    pub image: Spanned<String>,
    /// Components.
    pub components: ComponentsSpec,
    /// State store.
    pub state_store: StateStoreSpec,
    /// Meta store (default sqlite).
    pub meta_store: Option<Spanned<MetaStoreSpec>>,
    /// Node group to run on.
    pub node_group: Option<Spanned<String>>,
    /// Retain (default) or Delete.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Report drift in Kubernetes without correcting it (default false).
    #[serde(default)]
    pub ignore_drift: bool,
}

/// `spec.components`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentsSpec {
    /// Meta.
    pub meta: ComponentSpec,
    /// Frontend.
    pub frontend: ComponentSpec,
    /// Compute.
    pub compute: ComponentSpec,
    /// Compactor.
    pub compactor: ComponentSpec,
}

/// One component.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// Pod count.
    pub replicas: Spanned<u32>,
    /// CPU quantity.
    pub cpu: Spanned<String>,
    /// Memory quantity.
    pub memory: Spanned<String>,
}

/// `spec.stateStore`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateStoreSpec {
    /// Key prefix in the data bucket.
    pub prefix: Spanned<String>,
}

/// `spec.metaStore`: exactly one field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaStoreSpec {
    /// SQLite on the meta node.
    pub sqlite: Option<EmptySpec>,
    /// External PostgreSQL.
    pub postgresql: Option<PostgresqlSpec>,
}

/// A field that takes no settings (`sqlite: {}`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptySpec {}

/// `spec.metaStore.postgresql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PostgresqlSpec {
    /// Host.
    pub host: Spanned<String>,
    /// Port.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Database.
    pub database: Spanned<String>,
    /// Secret with username and password.
    pub credentials_secret: Spanned<String>,
}

fn default_pg_port() -> u16 {
    5432
}
