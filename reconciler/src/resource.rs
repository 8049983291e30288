//! The resource graph: what `expand` produces from specs and what `plan` compares.
//!
//! A [`Resource`] has a stable [`ResourceId`], a [`Kind`], typed property [`Value`]s and
//! the resources it depends on. A property may hold a [`Value::Ref`] to another resource
//! (its cloud id is not known until that resource exists); every reference is also a
//! dependency. Per kind, [`Kind::replace_on`] names the properties a cloud API cannot
//! change in place: a change there, or the replacement of a resource referenced there,
//! replaces the resource.

use std::collections::{BTreeMap, BTreeSet};

pub use crate::map::{Key, Map};
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// Stable identifier of a resource: `<kind>/<name>`, e.g. `aws.vpc/main`. Shared, not
/// copied: an id appears in every reference, dependency and plan step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ResourceId(Arc<str>);

impl ResourceId {
    /// The id of the resource of `kind` named `name`.
    pub fn new(kind: Kind, name: &str) -> Self {
        Self(Arc::from(format!("{}/{name}", kind.as_str())))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads an id written by [`ResourceId::as_str`] (a tag, a stored inventory): the
    /// kind and the id, or `None` when the text names no known kind.
    pub fn parse(text: &str) -> Option<(Kind, ResourceId)> {
        let (kind, name) = text.split_once('/')?;
        let kind = Kind::parse(kind)?;
        (!name.is_empty()).then(|| (kind, ResourceId::new(kind, name)))
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! kinds {
    ($( $variant:ident => $name:literal, $label:literal, [$($immutable:literal),*]; )*) => {
        /// Every kind of resource the reconciler manages.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        pub enum Kind {
            $(
                #[doc = $label]
                #[serde(rename = $name)]
                $variant,
            )*
        }

        impl Kind {
            /// Machine name, used in resource ids and JSON.
            pub fn as_str(self) -> &'static str {
                match self { $(Kind::$variant => $name,)* }
            }

            /// The kind whose machine name is `name`.
            pub fn parse(name: &str) -> Option<Kind> {
                match name { $($name => Some(Kind::$variant),)* _ => None }
            }

            /// Human name, used in plan tables.
            pub fn label(self) -> &'static str {
                match self { $(Kind::$variant => $label,)* }
            }

            /// Properties the cloud or Kubernetes API cannot change in place: changing one
            /// replaces the resource.
            pub fn replace_on(self) -> &'static [&'static str] {
                match self { $(Kind::$variant => &[$($immutable),*],)* }
            }
        }
    };
}

kinds! {
    AwsVpc => "aws.vpc", "AWS VPC", ["cidr", "region"];
    AwsSubnet => "aws.subnet", "AWS subnet", ["vpc", "cidr", "zone"];
    AwsInternetGateway => "aws.internet-gateway", "AWS internet gateway", [];
    AwsNatGateway => "aws.nat-gateway", "AWS NAT gateway", ["subnet"];
    AwsRouteTable => "aws.route-table", "AWS route table", ["vpc"];
    AwsSecurityGroup => "aws.security-group", "AWS security group", ["vpc", "name"];
    AwsIamRole => "aws.iam-role", "AWS IAM role", ["name", "path"];
    AwsIamPolicy => "aws.iam-policy", "AWS IAM managed policy", ["name", "path"];
    AwsEksCluster => "aws.eks-cluster", "AWS EKS cluster", ["name", "role", "subnets", "serviceCidr"];
    AwsOidcProvider => "aws.oidc-provider", "AWS IAM OIDC provider", ["cluster"];
    AwsEksNodeGroup => "aws.eks-nodegroup", "AWS EKS node group", ["cluster", "nodeRole", "instanceType", "subnets", "amiType", "launchTemplate", "createFailed"];
    AwsEksAccessEntry => "aws.eks-access-entry", "AWS EKS access entry", ["cluster", "principal"];
    AwsLaunchTemplate => "aws.launch-template", "AWS EC2 launch template", ["name", "rootVolumeGiB", "volumeType", "encrypted", "instanceTags"];
    AwsEksAddon => "aws.eks-addon", "AWS EKS add-on", ["cluster", "name"];
    AwsS3Bucket => "aws.s3-bucket", "AWS S3 bucket", ["name", "region"];
    AwsNlb => "aws.nlb", "AWS network load balancer (byoc's own, before the controller; deleted)", ["name", "scheme", "subnets"];
    AwsServiceNlb => "aws.service-nlb", "AWS NLB of a Service (the controller's)", [];
    AwsVpcEndpointService => "aws.vpc-endpoint-service", "AWS VPC endpoint service", [];
    AwsVpcEndpoint => "aws.vpc-endpoint", "AWS VPC endpoint", ["vpc", "service", "type"];
    GcpNetwork => "gcp.network", "GCP VPC network", ["name"];
    GcpSubnetwork => "gcp.subnetwork", "GCP subnetwork", ["name", "network", "region", "cidr", "purpose"];
    GcpFirewall => "gcp.firewall", "GCP firewall rule", ["name", "network", "direction"];
    GcpRouterNat => "gcp.router-nat", "GCP Cloud Router and NAT", ["name", "network", "region"];
    GcpGkeCluster => "gcp.gke-cluster", "GCP GKE cluster", ["name", "network", "subnetwork", "ipAllocation"];
    GcpNodePool => "gcp.node-pool", "GCP GKE node pool", ["cluster", "machineType", "taints", "serviceAccount"];
    GcpBucket => "gcp.bucket", "GCP storage bucket", ["name", "location"];
    GcpServiceAccount => "gcp.service-account", "GCP service account", ["accountId"];
    GcpIamBinding => "gcp.iam-binding", "GCP IAM binding", ["resource", "role", "member"];
    GcpCustomRole => "gcp.custom-role", "GCP custom IAM role", ["roleId", "project"];
    GcpServiceAttachment => "gcp.service-attachment", "GCP Private Service Connect attachment (GKE ServiceAttachment)", ["name", "namespace", "service"];
    AzureResourceGroup => "azure.resource-group", "Azure resource group", ["name", "location"];
    AzureVnet => "azure.vnet", "Azure virtual network", ["name", "resourceGroup"];
    AzureSubnet => "azure.subnet", "Azure subnet", ["name", "vnet", "delegation"];
    AzureNsg => "azure.nsg", "Azure network security group", ["name", "resourceGroup"];
    AzurePublicIp => "azure.public-ip", "Azure public IP address", ["name", "resourceGroup", "sku", "zones"];
    AzureNatGateway => "azure.nat-gateway", "Azure NAT gateway", ["name", "resourceGroup", "zones"];
    AzureAksCluster => "azure.aks-cluster", "Azure AKS cluster", ["name", "resourceGroup", "subnet", "network", "apiServerSubnet"];
    AzureNodePool => "azure.node-pool", "Azure AKS node pool", ["cluster", "vmSize", "taints", "mode", "subnet", "zones"];
    AzureStorageAccount => "azure.storage-account", "Azure storage account", ["name", "location", "resourceGroup", "sku"];
    AzureBlobContainer => "azure.blob-container", "Azure blob container", ["account", "name"];
    AzurePrivateEndpoint => "azure.private-endpoint", "Azure private endpoint", ["name", "resourceGroup", "subnet", "target", "groupId"];
    AzurePrivateDnsZone => "azure.private-dns-zone", "Azure private DNS zone", ["name", "resourceGroup"];
    AzurePrivateDnsZoneLink => "azure.private-dns-zone-link", "Azure private DNS zone virtual network link", ["name", "zone", "vnet"];
    AzurePrivateDnsZoneGroup => "azure.private-dns-zone-group", "Azure private endpoint DNS zone group", ["name", "endpoint", "zone"];
    AzureManagedIdentity => "azure.managed-identity", "Azure user-assigned identity", ["name", "resourceGroup"];
    AzureFederatedCredential => "azure.federated-credential", "Azure federated identity credential", ["name", "identity", "issuer", "subject"];
    AzureRoleAssignment => "azure.role-assignment", "Azure role assignment", ["name", "principal", "role", "scope"];
    AzureLoadBalancer => "azure.load-balancer", "Azure load balancer (from an AKS LoadBalancer Service)", ["namespace", "service"];
    AzurePrivateLinkService => "azure.private-link-service", "Azure Private Link service (from an AKS Service's annotations)", ["name", "namespace", "service"];
    K8sNamespace => "k8s.namespace", "Kubernetes namespace", ["name", "kubernetesCluster"];
    K8sServiceAccount => "k8s.service-account", "Kubernetes service account", ["namespace", "name"];
    K8sRisingWave => "k8s.risingwave", "RisingWave (operator resource)", ["namespace", "name", "stateStore", "metaStore"];
    K8sService => "k8s.service", "Kubernetes service", ["namespace", "name", "type"];
    K8sStorageClass => "k8s.storage-class", "Kubernetes storage class", ["name", "provisioner", "parameters", "volumeBindingMode", "reclaimPolicy", "kubernetesCluster"];
}

impl Kind {
    /// Whether a replacement is made before the old resource goes, instead of after: an
    /// EKS node group's nodes are where the pods run, so deleting it first would leave the
    /// cluster with no capacity until the new group is ACTIVE; its launch template is
    /// used by the old group until that group is gone. The cloud driver gives the new one
    /// a name apart from the old (both exist for a while).
    pub fn replaced_by_creating_first(self) -> bool {
        matches!(self, Kind::AwsEksNodeGroup | Kind::AwsLaunchTemplate)
    }
}

/// A typed property value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A flag.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// Text.
    Str(String),
    /// Another resource, whose cloud id is known only once it exists.
    Ref(Ref),
    /// An ordered list.
    List(Vec<Value>),
    /// A map with sorted keys.
    Map(Map),
}

/// A reference to another resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ref {
    /// The referenced resource.
    #[serde(rename = "ref")]
    pub id: ResourceId,
}

impl Value {
    /// A reference to `id`.
    pub fn reference(id: &ResourceId) -> Self {
        Value::Ref(Ref { id: id.clone() })
    }

    /// A list of references.
    pub fn references<'a>(ids: impl IntoIterator<Item = &'a ResourceId>) -> Self {
        Value::List(ids.into_iter().map(Value::reference).collect())
    }

    /// A list of strings.
    pub fn strings<S: ToString>(items: impl IntoIterator<Item = S>) -> Self {
        Value::List(items.into_iter().map(|s| Value::Str(s.to_string())).collect())
    }

    /// A map of strings.
    pub fn string_map<'a>(items: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        Value::Map(items.into_iter().map(|(k, v)| (Key::Owned(k.clone()), Value::Str(v.clone()))).collect())
    }

    /// A map from `(key, value)` pairs.
    pub fn map<const N: usize>(pairs: [(&'static str, Value); N]) -> Self {
        Value::Map(pairs.into_iter().collect())
    }

    /// Reads back the JSON that serializing a value writes (a stored inventory): an object
    /// whose only key is `ref` is a reference; numbers must be whole.
    pub fn from_json(json: &serde_json::Value) -> Option<Value> {
        Some(match json {
            serde_json::Value::Null => return None,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Int(n.as_i64()?),
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(items) => Value::List(items.iter().map(Value::from_json).collect::<Option<_>>()?),
            serde_json::Value::Object(m) => match (m.len(), m.get("ref").and_then(|r| r.as_str())) {
                (1, Some(r)) => Value::reference(&ResourceId::parse(r)?.1),
                _ => Value::Map(m.iter().map(|(k, v)| Some((Key::Owned(k.clone()), Value::from_json(v)?))).collect::<Option<_>>()?),
            },
        })
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Calls `f` with every resource this value references.
    pub fn for_each_ref(&self, f: &mut impl FnMut(&ResourceId)) {
        match self {
            Value::Ref(r) => f(&r.id),
            Value::List(items) => items.iter().for_each(|v| v.for_each_ref(f)),
            Value::Map(map) => map.values().for_each(|v| v.for_each_ref(f)),
            Value::Bool(_) | Value::Int(_) | Value::Str(_) => {}
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::Str(s.clone())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Int(i64::from(n))
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Self {
        Value::Int(i64::from(n))
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Ref(r) => write!(f, "ref({})", r.id),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(map) => {
                f.write_str("{")?;
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// One managed resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// Stable id.
    pub id: ResourceId,
    /// Kind.
    pub kind: Kind,
    /// Typed properties by name.
    pub properties: Map,
    /// Resources that must exist before this one: every reference, plus ordering-only
    /// dependencies.
    #[serde(rename = "dependsOn")]
    pub depends_on: BTreeSet<ResourceId>,
    /// Why the reconciler must never delete or replace this resource, if it must not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection: Option<String>,
}

impl Resource {
    /// A resource of `kind` named `name`, with no properties yet.
    pub fn new(kind: Kind, name: &str) -> Self {
        Self { id: ResourceId::new(kind, name), kind, properties: Map::new(), depends_on: BTreeSet::new(), protection: None }
    }

    /// Sets a property; references in it become dependencies.
    #[must_use]
    pub fn set(mut self, name: &'static str, value: impl Into<Value>) -> Self {
        let value = value.into();
        value.for_each_ref(&mut |id| {
            self.depends_on.insert(id.clone());
        });
        self.properties.insert(name, value);
        self
    }

    /// Adds an ordering-only dependency.
    #[must_use]
    pub fn after(mut self, id: &ResourceId) -> Self {
        self.depends_on.insert(id.clone());
        self
    }

    /// Marks the resource as never to be deleted or replaced by the reconciler.
    #[must_use]
    pub fn protect(mut self, reason: impl Into<String>) -> Self {
        self.protection = Some(reason.into());
        self
    }

    /// [`Resource::protect`] when there is a reason, e.g. a cluster's `Retain` policy.
    #[must_use]
    pub fn protect_if(self, reason: Option<&str>) -> Self {
        match reason {
            Some(r) => self.protect(r),
            None => self,
        }
    }

    /// The resources referenced from property `name`.
    pub fn refs_in(&self, name: &str) -> BTreeSet<ResourceId> {
        let mut ids = BTreeSet::new();
        if let Some(v) = self.properties.get(name) {
            v.for_each_ref(&mut |id| {
                ids.insert(id.clone());
            });
        }
        ids
    }
}

/// A set of resources keyed by id: the desired state, or what is observed to exist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Graph {
    /// The resources.
    pub resources: BTreeMap<ResourceId, Resource>,
}

impl Graph {
    /// Adds a resource. Expansion never produces two resources with one id; if it did,
    /// that is a bug in expansion, reported by the caller's tests rather than hidden here.
    pub fn add(&mut self, resource: Resource) -> ResourceId {
        let id = resource.id.clone();
        let previous = self.resources.insert(id.clone(), resource);
        debug_assert!(previous.is_none(), "duplicate resource id {id}");
        id
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// True when there are no resources.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }
}
