//! Converging a cloud account: the [`Cloud`] trait (observe by ownership tags, ensure one
//! resource, delete one), the inventory and journal kept in the state store, and the
//! apply engine ([`apply`]) that runs a plan against them. [`aws`] implements the trait
//! with the AWS SDK.
//!
//! Observe is by tag: every resource carries the environment, managed-by and resource-id
//! tags from the moment it is created, so what an interrupted apply created but did not
//! record is found again and adopted instead of created twice, and what is tagged for the
//! environment but wanted by nothing is reported and deleted.

pub mod apply;
pub mod aws;
pub mod azure;
pub mod gcp;
pub mod retry;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::resource::{Graph, Kind, Map, Resource, ResourceId, Value};

/// Key in the state store of the inventory and the apply journal (one object, so each
/// finished action is recorded by one conditional write).
pub const INVENTORY_KEY: &str = "cloud-inventory.json";

/// A resource as it exists in the cloud: its id from the resource tag, the cloud's own id,
/// and what other resources need from it (an ARN, an issuer URL, a DNS name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Our id (from the resource tag).
    pub id: ResourceId,
    /// Its kind.
    pub kind: Kind,
    /// The cloud's id (a VPC id, a role name, a load balancer ARN).
    pub cloud_id: String,
    /// Values other resources refer to, by name (`arn`, `issuer`, `dnsName`, ...).
    pub outputs: BTreeMap<String, String>,
    /// Settings read from the cloud that someone else may change (a node group's size, a
    /// security group's rules), in the resource's property form: compared with what was
    /// applied to find drift.
    pub live: Map,
}

/// One inventory entry: what was applied, and where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Kind's machine name.
    pub kind: String,
    /// The cloud's id.
    pub cloud_id: String,
    /// See [`Found::outputs`].
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// The desired properties this resource was last applied with (references unresolved).
    pub applied: serde_json::Value,
    /// Its dependencies when applied.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Why it must never be deleted or replaced, if so (a bucket, a retained cluster's role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<String>,
}

/// One finished action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    /// Resource id.
    pub id: String,
    /// `create`, `update`, `replace`, `delete`.
    pub action: String,
    /// Seconds since the epoch.
    pub at: i64,
    /// Cloud id afterwards (empty after a delete).
    pub cloud_id: String,
}

/// The journal of the current or last apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    /// The revision being applied (or `destroy`).
    pub revision: String,
    /// Seconds since the epoch.
    pub started_at: i64,
    /// Actions planned.
    pub planned: usize,
    /// Actions finished, in the order they finished.
    pub done: Vec<JournalEntry>,
    /// Set when every planned action finished.
    #[serde(default)]
    pub finished_at: Option<i64>,
}

/// The state object: inventory by resource id, the journal, the last applied revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Records by resource id.
    pub resources: BTreeMap<String, Record>,
    /// The current or last apply.
    #[serde(default)]
    pub journal: Option<Journal>,
    /// The revision whose apply last finished.
    #[serde(default)]
    pub last_applied: Option<String>,
}

impl Inventory {
    /// The resource a record describes, as last applied: what `plan` compares with.
    pub fn applied_resource(id: &ResourceId, kind: Kind, record: &Record) -> Resource {
        let properties = match Value::from_json(&record.applied) {
            Some(Value::Map(props)) => props,
            _ => Map::new(),
        };
        let depends_on = record.depends_on.iter().filter_map(|d| ResourceId::parse(d)).map(|(_, id)| id).collect();
        Resource { id: id.clone(), kind, properties, depends_on, protection: record.protection.clone() }
    }
}

/// A failed cloud call, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudError {
    /// What was being done (`ec2 CreateVpc for aws.vpc/main`).
    pub what: String,
    /// The service's error code, when it gave one.
    pub code: Option<String>,
    /// The message.
    pub message: String,
}

impl CloudError {
    /// An error that is not a service's answer (a missing output, an unexpected state).
    pub fn new(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self { what: what.into(), code: None, message: message.into() }
    }

    /// Whether the service answered with one of `codes`.
    pub fn is(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{}: {code}: {}", self.what, self.message),
            None => write!(f, "{}: {}", self.what, self.message),
        }
    }
}

impl std::error::Error for CloudError {}

/// What `ensure` may read of the resources a resource refers to.
pub type Refs = BTreeMap<ResourceId, Found>;

/// A cloud account as the apply engine sees it. Each method is idempotent: `ensure` with
/// an existing resource converges its settings, `delete` of a resource already gone
/// succeeds.
#[allow(async_fn_in_trait)]
pub trait Cloud {
    /// Every resource tagged for the environment.
    async fn observe(&self) -> Result<Vec<Found>, CloudError>;
    /// Creates `desired` (when `existing` is `None`) or converges `existing` to it;
    /// references in its properties are resolved through `refs`.
    async fn ensure(&self, desired: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError>;
    /// Deletes a resource and what it owns (a NAT gateway's address, a load balancer's
    /// listeners and target groups), waiting until it is gone.
    async fn delete(&self, found: &Found) -> Result<(), CloudError>;
}

/// Kinds that are Kubernetes objects though named for a cloud: a GKE `ServiceAttachment`
/// is a custom resource applied in the cluster (GKE's controller makes the PSC attachment
/// from it), never a Compute call.
pub const IN_CLUSTER: &[Kind] = &[Kind::GcpServiceAttachment];

/// The part of a desired graph a cloud converges: everything but Kubernetes objects
/// (`k8s.*` and [`IN_CLUSTER`]), which the Kubernetes half applies.
pub fn cloud_part(graph: &Graph) -> Graph {
    Graph {
        resources: graph
            .resources
            .iter()
            .filter(|(_, r)| !r.kind.as_str().starts_with("k8s.") && !IN_CLUSTER.contains(&r.kind))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Order in which kinds are deleted, first to last: dependents before what they depend on.
/// Used for every deletion, including those of leaked resources, whose dependencies are
/// not recorded.
pub const DELETE_ORDER: &[Kind] = &[
    Kind::AwsVpcEndpointService,
    Kind::AwsVpcEndpoint,
    Kind::AwsServiceNlb,
    Kind::AwsNlb,
    // An add-on runs on the nodes and belongs to the cluster: it goes first.
    Kind::AwsEksAddon,
    Kind::AwsEksNodeGroup,
    // A launch template is in use until its node group is gone.
    Kind::AwsLaunchTemplate,
    Kind::AwsEksAccessEntry,
    Kind::AwsOidcProvider,
    Kind::AwsEksCluster,
    Kind::AwsIamRole,
    Kind::AwsIamPolicy,
    Kind::AwsRouteTable,
    Kind::AwsNatGateway,
    Kind::AwsInternetGateway,
    Kind::AwsSecurityGroup,
    Kind::AwsSubnet,
    Kind::AwsS3Bucket,
    Kind::AwsVpc,
    // GCP: bindings name accounts, buckets and custom roles; pools belong to the cluster; the cluster
    // uses the subnetwork and the nodes' account; firewalls, the router and subnetworks
    // keep the network in use (400 resourceInUseByAnotherResource) until they are gone.
    Kind::GcpIamBinding,
    Kind::GcpCustomRole,
    Kind::GcpNodePool,
    Kind::GcpGkeCluster,
    Kind::GcpServiceAccount,
    Kind::GcpRouterNat,
    Kind::GcpFirewall,
    Kind::GcpSubnetwork,
    Kind::GcpBucket,
    Kind::GcpNetwork,
    // Azure: what AKS made from the Services (nothing to call), role assignments and
    // federated credentials before their identities, pools before their cluster, private
    // endpoints and containers before their accounts, the cluster before the subnets it
    // uses, subnets before the NSG, NAT gateway and VNet, the group last. A private
    // endpoint's DNS zone group goes before the endpoint; the zone's VNet link before the
    // zone and the VNet it names.
    Kind::AzurePrivateLinkService,
    Kind::AzureLoadBalancer,
    Kind::AzureRoleAssignment,
    Kind::AzureFederatedCredential,
    Kind::AzureNodePool,
    Kind::AzureAksCluster,
    Kind::AzureManagedIdentity,
    Kind::AzurePrivateDnsZoneGroup,
    Kind::AzurePrivateEndpoint,
    Kind::AzurePrivateDnsZoneLink,
    Kind::AzurePrivateDnsZone,
    Kind::AzureBlobContainer,
    Kind::AzureStorageAccount,
    Kind::AzureSubnet,
    Kind::AzureNatGateway,
    Kind::AzurePublicIp,
    Kind::AzureNsg,
    Kind::AzureVnet,
    Kind::AzureResourceGroup,
];

/// Position of `kind` in [`DELETE_ORDER`] (kinds not listed go last).
pub fn delete_rank(kind: Kind) -> usize {
    DELETE_ORDER.iter().position(|k| *k == kind).unwrap_or(DELETE_ORDER.len())
}
