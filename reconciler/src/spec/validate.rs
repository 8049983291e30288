//! Semantic checks on parsed specs. Each check records a diagnostic and carries on, so one
//! run reports every problem; a domain value is returned only when its part had none.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use rwproxy::diagnostics::{Diagnostics, Position};
use rwproxy::routes::{check_header, is_dns_label};
use serde_saphyr::{Location, Spanned};

use crate::expand::names::{self, Rule};

use super::quantity::{format_cpu, format_memory, parse_cpu, parse_memory};
use super::wire::{ClusterDocument, ComponentSpec, EnvironmentDocument, MetaStoreSpec};
use super::{
    ApiAccess, Cloud, Cluster, Component, Environment, Kubernetes, MetaStore, NatGateways, Network, NodeGroup, Subnet, Taint, Tier,
};

/// Longest environment name: it is embedded in bucket and resource names with cloud limits.
pub const MAX_ENV_NAME: usize = 24;
/// Longest cluster name: its namespace is `rw-<name>` and its identities carry the name.
pub const MAX_CLUSTER_NAME: usize = 40;
/// Days a noncurrent version of a data-bucket object is kept when the spec does not say:
/// RisingWave rewrites its SST files constantly, so every old version is paid for.
pub const DEFAULT_NONCURRENT_VERSION_DAYS: u32 = 7;

/// Allowed replica counts per component.
const REPLICAS: [(&str, u32, u32); 4] = [("meta", 1, 5), ("frontend", 1, 64), ("compute", 1, 512), ("compactor", 1, 64)];

struct Ctx<'a> {
    file: &'a str,
    problems: &'a mut Diagnostics,
}

impl Ctx<'_> {
    fn at(&self, loc: &Location) -> Position {
        Position::at(self.file, loc)
    }

    fn error(&mut self, loc: &Location, message: impl Into<String>, hint: impl Into<String>) {
        let position = self.at(loc);
        self.problems.error(position, message, hint);
    }

    /// Refuses `value` where the cloud API that receives it as a name would: `message`
    /// says what it is, the hint gives the API's rule from [`names`]. Returns whether it
    /// passed.
    fn name_rule(&mut self, loc: &Location, rule: &Rule, value: &str, message: impl Into<String>) -> bool {
        match rule.check(value) {
            Ok(()) => true,
            Err(why) => {
                self.error(loc, message, why);
                false
            }
        }
    }
}

/// Validates an Environment document.
pub fn environment(file: &str, doc: &EnvironmentDocument, problems: &mut Diagnostics) -> Option<Environment> {
    let before = problems.len();
    let mut cx = Ctx { file, problems };
    check_header(file, &doc.api_version, &doc.kind, "Environment", cx.problems);
    let spec = &doc.spec;
    let name = &doc.metadata.name;
    // `--` is refused too: the name is part of load balancer and target group names,
    // which may not contain it.
    if !is_dns_label(&name.value) || name.value.len() > MAX_ENV_NAME || name.value.contains("--") {
        cx.error(
            &name.referenced,
            format!("invalid environment name {:?}", name.value),
            format!("use lower-case letters, digits and single hyphens, at most {MAX_ENV_NAME} characters"),
        );
    }
    let cloud = spec.cloud.value;
    let region_ok = check_region(&mut cx, cloud, &spec.region);
    check_account(&mut cx, cloud, &spec.account);
    match (&spec.resource_group, cloud) {
        (Some(rg), Cloud::Azure) if !valid_resource_group(&rg.value) => {
            cx.error(
                &rg.referenced,
                format!("invalid resource group {:?}", rg.value),
                "use 1 to 90 letters, digits, '-', '_', '.' or parentheses",
            );
        }
        // AKS names its own node resource group `MC_<group>_<cluster>_<region>`: adopting
        // one would hand byoc a group AKS deletes with the cluster.
        (Some(rg), Cloud::Azure) if rg.value.to_ascii_uppercase().starts_with("MC_") => {
            cx.error(
                &rg.referenced,
                format!("resource group {:?} looks like an AKS node resource group (MC_...)", rg.value),
                "name a resource group of your own; AKS creates and deletes the MC_ group with its cluster",
            );
        }
        (Some(rg), Cloud::Aws | Cloud::Gcp) => {
            cx.error(&rg.referenced, format!("resourceGroup is only used on Azure, not {}", cloud.as_str()), "remove resourceGroup");
        }
        _ => {}
    }

    let network = network(&mut cx, cloud, region_ok.then_some(spec.region.value.as_str()), spec);
    let kubernetes = kubernetes(&mut cx, cloud, spec);

    let proxy_port = spec.exposure.proxy.port.as_ref().map_or(rwproxy::routes::FRONTEND_PORT, |p| {
        if p.value < 1024 {
            cx.error(&p.referenced, format!("proxy port {} is privileged", p.value), "use a port from 1024 to 65535; the default is 4566");
        }
        p.value
    });
    let public_proxy = spec.exposure.proxy.public.as_ref().map(|public| {
        if public.allowed_cidrs.value.is_empty() {
            cx.error(
                &public.allowed_cidrs.referenced,
                "the public proxy allows no client network",
                "list the client networks, or remove `public` to keep the proxy internal",
            );
        }
        public.allowed_cidrs.value.iter().map(|n| cidr(&mut cx, n)).collect::<Vec<_>>()
    });
    if let (Some(_), Some(net)) = (&public_proxy, &network)
        && cloud == Cloud::Aws
        && !net.subnets.iter().any(|s| s.tier == Tier::Public)
    {
        cx.error(
            &spec.network.subnets.referenced,
            "a public proxy on AWS needs public subnets",
            "add a subnet with tier: public in each zone",
        );
    }

    let principals = &spec.control_plane.principals;
    if principals.value.is_empty() {
        cx.error(&principals.referenced, "no control-plane principal is allowed", "list the principals the control plane connects as");
    }
    let mut seen = BTreeSet::new();
    // ARNs name their partition, which the region decides (GovCloud and China are apart).
    let partition = names::aws::partition(&spec.region.value);
    for p in &principals.value {
        if !valid_principal(cloud, partition, &p.value) {
            let hint = match cloud {
                Cloud::Aws => format!("write an IAM ARN of the region's partition, such as arn:{partition}:iam::123456789012:root"),
                Cloud::Gcp => "write the consumer project id or number".to_owned(),
                Cloud::Azure => "write the consumer subscription id (a UUID)".to_owned(),
            };
            cx.error(&p.referenced, format!("invalid {} principal {:?}", cloud.as_str(), p.value), hint);
        } else if !seen.insert(p.value.as_str()) {
            cx.error(&p.referenced, format!("principal {:?} is listed twice", p.value), "remove the duplicate");
        }
    }

    let data_bucket = bucket_name(&mut cx, cloud, spec.storage.data_bucket.as_ref(), &name.value, &spec.account.value, "data");
    let state_bucket = bucket_name(&mut cx, cloud, spec.storage.state_bucket.as_ref(), &name.value, &spec.account.value, "state");
    if data_bucket == state_bucket
        && let Some(b) = &spec.storage.state_bucket
    {
        cx.error(&b.referenced, "the state bucket is the data bucket", "cluster data and reconciler state must live in different buckets");
    }

    // S3 lifecycle rules: NoncurrentDays "must be a non-zero positive integer" (Amazon S3
    // API Reference, NoncurrentVersionExpiration).
    let noncurrent_version_days = match &spec.storage.noncurrent_version_days {
        Some(d) if cloud != Cloud::Aws => {
            cx.error(&d.referenced, "noncurrentVersionDays is an AWS setting", "remove it");
            0
        }
        Some(d) if d.value == 0 => {
            cx.error(&d.referenced, "noncurrentVersionDays is 0", "write a number of days from 1; the default is 7");
            0
        }
        Some(d) => d.value,
        None => DEFAULT_NONCURRENT_VERSION_DAYS,
    };

    let mut tags = BTreeMap::new();
    // Each cloud resource carries the user's tags, byoc's three ownership tags, and on AWS
    // subnets the load balancer controller's role tag.
    let (key_rule, value_rule, max_tags) = match cloud {
        Cloud::Aws => (&names::AWS_TAG_KEY, &names::AWS_TAG_VALUE, names::AWS_MAX_TAGS - 4),
        Cloud::Gcp => (&names::GCP_LABEL_KEY, &names::GCP_LABEL_VALUE, names::GCP_MAX_LABELS - 3),
        Cloud::Azure => (&names::AZURE_TAG_NAME, &names::AZURE_TAG_VALUE, names::AZURE_MAX_TAGS - 3),
    };
    for (key, value) in &spec.tags {
        // Clouds count tag lengths in characters, not bytes; Azure tag names are
        // case-insensitive, so `BYOC-environment` would be byoc's own.
        let (key_len, value_len) = (key.chars().count(), value.value.chars().count());
        let reserved = ["byoc.risingwave.dev", "byoc-"]
            .iter()
            .any(|p| if cloud == Cloud::Azure { key.to_ascii_lowercase().starts_with(p) } else { key.starts_with(p) });
        if key_len == 0 || key_len > key_rule.max || reserved || value_len > value_rule.max {
            cx.error(
                &value.referenced,
                format!("invalid tag {key:?}"),
                format!(
                    "{} tag keys are 1 to {} characters and may not start with byoc.risingwave.dev or byoc- (reserved); values at most {}",
                    cloud.as_str(),
                    key_rule.max,
                    value_rule.max
                ),
            );
        } else if cx.name_rule(&value.referenced, key_rule, key, format!("tag {key:?} is not a valid {} tag key", cloud.as_str())) {
            cx.name_rule(
                &value.referenced,
                value_rule,
                &value.value,
                format!("the value of tag {key:?} is not a valid {} tag value", cloud.as_str()),
            );
        }
        tags.insert(key.clone(), value.value.clone());
    }
    if spec.tags.len() > max_tags
        && let Some((_, last)) = spec.tags.iter().last()
    {
        cx.error(
            &last.referenced,
            format!("{} tags; {} resources take at most {max_tags} besides byoc's own", spec.tags.len(), cloud.as_str()),
            "remove some tags",
        );
    }

    if problems.len() != before {
        return None;
    }
    Some(Environment {
        name: name.value.clone(),
        cloud,
        region: spec.region.value.clone(),
        account: spec.account.value.clone(),
        resource_group: match cloud {
            Cloud::Azure => Some(spec.resource_group.as_ref().map_or_else(|| format!("byoc-{}", name.value), |r| r.value.clone())),
            _ => None,
        },
        adopt_resource_group: cloud == Cloud::Azure && spec.resource_group.is_some(),
        network: network?,
        kubernetes: kubernetes?,
        proxy_port,
        public_proxy,
        control_plane_principals: principals.value.iter().map(|p| p.value.clone()).collect(),
        data_bucket,
        state_bucket,
        noncurrent_version_days,
        tags,
    })
}

/// Returns whether the region is well-formed (zones are only checked against a good one).
fn check_region(cx: &mut Ctx<'_>, cloud: Cloud, region: &Spanned<String>) -> bool {
    let r = region.value.as_str();
    let parts: Vec<&str> = r.split('-').collect();
    let ok = match cloud {
        // us-east-1, eu-central-2, us-gov-west-1
        Cloud::Aws => {
            parts.len() >= 3
                && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
                && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        }
        // us-central1, europe-west4
        Cloud::Gcp => {
            parts.len() == 2
                && parts[0].bytes().all(|b| b.is_ascii_lowercase())
                && !parts[0].is_empty()
                && parts[1].bytes().last().is_some_and(|b| b.is_ascii_digit())
                && parts[1].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }
        // eastus2, westeurope
        Cloud::Azure => !r.is_empty() && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
    };
    if !ok {
        let example = match cloud {
            Cloud::Aws => "us-east-1",
            Cloud::Gcp => "us-central1",
            Cloud::Azure => "eastus2",
        };
        cx.error(
            &region.referenced,
            format!("invalid {} region {:?}", cloud.as_str(), r),
            format!("write a region name such as {example}"),
        );
    }
    ok
}

fn check_account(cx: &mut Ctx<'_>, cloud: Cloud, account: &Spanned<String>) {
    let a = account.value.as_str();
    let (ok, hint) = match cloud {
        Cloud::Aws => {
            (a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()), "an AWS account id is 12 digits; quote it so YAML keeps leading zeros")
        }
        Cloud::Gcp => (valid_gcp_project(a), "a GCP project id is 6 to 30 lower-case letters, digits and '-', starting with a letter"),
        Cloud::Azure => (is_uuid(a), "an Azure subscription id is a UUID"),
    };
    if !ok {
        cx.error(&account.referenced, format!("invalid {} account {:?}", cloud.as_str(), a), hint);
    }
}

fn network(cx: &mut Ctx<'_>, cloud: Cloud, region: Option<&str>, spec: &super::wire::EnvironmentSpec) -> Option<Network> {
    let before = cx.problems.len();
    let n = &spec.network;
    let net = cidr(cx, &n.cidr);
    if !matches!(net, IpNet::V4(_)) || !(16..=24).contains(&net.prefix_len()) {
        cx.error(
            &n.cidr.referenced,
            format!("network CIDR {net} must be IPv4 with a prefix from /16 to /24"),
            "use a private range such as 10.0.0.0/16",
        );
    }

    let mut zones = Vec::new();
    if n.zones.value.is_empty() {
        cx.error(&n.zones.referenced, "no zones listed", "list the zones the environment spans");
    }
    if cloud == Cloud::Aws && n.zones.value.len() < 2 {
        cx.error(&n.zones.referenced, "EKS needs subnets in at least two zones", "list two or more zones");
    }
    for z in &n.zones.value {
        let ok = match (cloud, region) {
            // With a malformed region there is nothing to check zone names against.
            (Cloud::Aws | Cloud::Gcp, None) => true,
            (Cloud::Aws | Cloud::Gcp, Some(region)) => z
                .value
                .strip_prefix(region)
                .is_some_and(|rest| !rest.is_empty() && rest.trim_start_matches('-').bytes().all(|b| b.is_ascii_lowercase())),
            (Cloud::Azure, _) => matches!(z.value.as_str(), "1" | "2" | "3"),
        };
        if !ok {
            let hint = match cloud {
                Cloud::Azure => "Azure zones are \"1\", \"2\" and \"3\"".to_owned(),
                _ => format!("zones are named after the region, like {}a", region.unwrap_or_default()),
            };
            cx.error(&z.referenced, format!("invalid zone {:?} for region {}", z.value, region.unwrap_or_default()), hint);
        } else if zones.contains(&z.value) {
            cx.error(&z.referenced, format!("zone {:?} is listed twice", z.value), "remove the duplicate");
        } else {
            zones.push(z.value.clone());
        }
    }

    let mut subnets: Vec<Subnet> = Vec::new();
    let mut at: Vec<Position> = Vec::new();
    if n.subnets.value.is_empty() {
        cx.error(&n.subnets.referenced, "no subnets listed", "add at least one private subnet per zone");
    }
    for s in &n.subnets.value {
        let name = &s.name;
        // GCP and Azure name subnets after the spec; AWS subnets have ids only.
        let subnet_rule = match cloud {
            Cloud::Gcp => Some(&names::GCP_RESOURCE),
            Cloud::Azure => Some(&names::AZURE_NETWORK),
            Cloud::Aws => None,
        };
        let name_ok = if !is_dns_label(&name.value) {
            cx.error(&name.referenced, format!("invalid subnet name {:?}", name.value), "use lower-case letters, digits and '-'");
            false
        } else {
            subnet_rule.is_none_or(|rule| {
                cx.name_rule(&name.referenced, rule, &name.value, format!("invalid {} subnet name {:?}", cloud.as_str(), name.value))
            })
        };
        if name_ok && cloud == Cloud::Gcp && name.value == crate::expand::gcp::PSC_SUBNET {
            cx.error(
                &name.referenced,
                format!("subnet name {:?} is taken by the Private Service Connect subnet", name.value),
                "choose another name; the PSC range goes in network.privateServiceConnect.cidr",
            );
        }
        if name_ok && let Some(i) = subnets.iter().position(|o| o.name == name.value) {
            let first = at[i].clone();
            cx.error(&name.referenced, format!("duplicate subnet name {:?}", name.value), format!("first defined at {first}"));
        }
        let c = cidr(cx, &s.cidr);
        if !net.contains(&c) {
            cx.error(
                &s.cidr.referenced,
                format!("subnet {} ({c}) is outside the network {net}", name.value),
                "pick a range inside spec.network.cidr",
            );
        }
        for (other, other_at) in subnets.iter().zip(&at) {
            if overlaps(&c, &other.cidr) {
                cx.error(
                    &s.cidr.referenced,
                    format!("subnet {} ({c}) overlaps subnet {} ({})", name.value, other.name, other.cidr),
                    format!("subnet ranges must not overlap; the other is at {other_at}"),
                );
            }
        }
        let zone = match (&s.zone, cloud) {
            (None, Cloud::Aws) => {
                cx.error(&name.referenced, format!("subnet {} has no zone", name.value), "on AWS each subnet lives in one zone: add zone");
                None
            }
            (Some(z), Cloud::Aws) => {
                if !zones.contains(&z.value) {
                    cx.error(
                        &z.referenced,
                        format!("subnet {} is in zone {:?}, which is not in spec.network.zones", name.value, z.value),
                        "add the zone to spec.network.zones or fix the name",
                    );
                }
                Some(z.value.clone())
            }
            (Some(z), _) => {
                cx.error(&z.referenced, format!("{} subnets are regional and take no zone", cloud.as_str()), "remove zone");
                None
            }
            (None, _) => None,
        };
        at.push(cx.at(&name.referenced));
        subnets.push(Subnet { name: name.value.clone(), tier: s.tier, cidr: c, zone });
    }
    let private_service_connect = match (&n.private_service_connect, cloud) {
        (Some(psc), Cloud::Gcp) => {
            let c = cidr(cx, &psc.cidr);
            if !net.contains(&c) {
                cx.error(
                    &psc.cidr.referenced,
                    format!("the Private Service Connect range {c} is outside the network {net}"),
                    "pick a range inside spec.network.cidr",
                );
            }
            if let Some(other) = subnets.iter().find(|s| overlaps(&c, &s.cidr)) {
                cx.error(
                    &psc.cidr.referenced,
                    format!("the Private Service Connect range {c} overlaps subnet {} ({})", other.name, other.cidr),
                    "the PSC NAT subnet is a subnet of its own: pick a range no subnet uses",
                );
            }
            Some(c)
        }
        (Some(psc), _) => {
            cx.error(
                &psc.cidr.referenced,
                format!("network.privateServiceConnect is only used on GCP, not {}", cloud.as_str()),
                "remove privateServiceConnect",
            );
            None
        }
        (None, Cloud::Gcp) => {
            cx.error(
                &n.cidr.referenced,
                "a GCP network needs a Private Service Connect subnet",
                "add network.privateServiceConnect: {cidr: ...} with a range inside the network (a /24 is plenty); the control plane reaches the agent and the proxy through it",
            );
            None
        }
        (None, _) => None,
    };
    let own = |cx: &mut Ctx<'_>,
               given: &Option<super::wire::PrivateServiceConnectSpec>,
               field: &str,
               what: &str,
               max_prefix: u8,
               example: &str| {
        match (given, cloud) {
            (Some(g), Cloud::Azure) => {
                let c = cidr(cx, &g.cidr);
                if !net.contains(&c) {
                    cx.error(
                        &g.cidr.referenced,
                        format!("the {what} range {c} is outside the network {net}"),
                        "pick a range inside spec.network.cidr",
                    );
                } else if c.prefix_len() > max_prefix {
                    cx.error(
                        &g.cidr.referenced,
                        format!("the {what} range {c} is smaller than a /{max_prefix}"),
                        format!("Azure needs at least a /{max_prefix} here, such as {example}"),
                    );
                }
                if let Some(other) = subnets.iter().find(|s| overlaps(&c, &s.cidr)) {
                    cx.error(
                        &g.cidr.referenced,
                        format!("the {what} range {c} overlaps subnet {} ({})", other.name, other.cidr),
                        format!("network.{field} is a subnet of its own: pick a range no subnet uses"),
                    );
                }
                Some(c)
            }
            (Some(g), _) => {
                cx.error(
                    &g.cidr.referenced,
                    format!("network.{field} is only used on Azure, not {}", cloud.as_str()),
                    format!("remove {field}"),
                );
                None
            }
            (None, Cloud::Azure) => {
                cx.error(
                    &n.cidr.referenced,
                    format!("an Azure network needs its {what} subnet: network.{field} is missing"),
                    format!("add network.{field}: {{cidr: ...}} with a range inside the network, such as {example}"),
                );
                None
            }
            (None, _) => None,
        }
    };
    // AKS API-server VNet integration needs a delegated subnet of at least /28; the Private
    // Link services take their NAT addresses from a subnet with network policies off.
    let api_server = own(cx, &n.api_server, "apiServer", "API-server", 28, "10.40.255.0/28");
    let private_link = own(cx, &n.private_link, "privateLink", "Private Link", 29, "10.40.254.0/24");
    if let (Some(a), Some(p), Some(g)) = (api_server, private_link, &n.private_link)
        && overlaps(&a, &p)
    {
        cx.error(
            &g.cidr.referenced,
            format!("the Private Link range {p} overlaps the API-server range {a}"),
            "pick ranges that do not overlap",
        );
    }
    if cloud == Cloud::Azure {
        for s in &n.subnets.value {
            if [crate::expand::names::azure::API_SERVER_SUBNET, crate::expand::names::azure::PRIVATE_LINK_SUBNET]
                .contains(&s.name.value.as_str())
            {
                cx.error(
                    &s.name.referenced,
                    format!("subnet name {:?} is taken by byoc's own subnet of that name", s.name.value),
                    "choose another name; those ranges go in network.apiServer and network.privateLink",
                );
            }
        }
    }
    if cloud == Cloud::Gcp {
        // GCP has no public subnets (Cloud NAT serves the private ones); the PSC NAT range
        // has its own field rather than hiding behind `tier: public`.
        for s in n.subnets.value.iter().filter(|s| s.tier == Tier::Public) {
            cx.error(
                &s.name.referenced,
                format!("subnet {} is public; GCP subnets are private", s.name.value),
                "use tier: private; the Private Service Connect range goes in network.privateServiceConnect.cidr",
            );
        }
    }
    if cloud == Cloud::Aws {
        for z in &zones {
            if !subnets.iter().any(|s| s.tier == Tier::Private && s.zone.as_deref() == Some(z)) {
                cx.error(
                    &n.subnets.referenced,
                    format!("zone {z} has no private subnet"),
                    "add a private subnet in every zone: nodes and internal load balancers span them all",
                );
            }
        }
        if !subnets.iter().any(|s| s.tier == Tier::Public) {
            cx.error(
                &n.subnets.referenced,
                "no public subnet for the NAT gateway",
                "add a subnet with tier: public; private nodes reach the internet through it",
            );
        }
    } else if !subnets.iter().any(|s| s.tier == Tier::Private) {
        cx.error(&n.subnets.referenced, "no private subnet", "add a subnet with tier: private for the Kubernetes nodes");
    }
    let nat_gateways = n.nat_gateways.as_ref().map_or(NatGateways::Single, |v| v.value);
    if let Some(v) = &n.nat_gateways {
        if cloud != Cloud::Aws {
            cx.error(
                &v.referenced,
                "natGateways is an AWS setting",
                "remove it; GCP's Cloud NAT and Azure's NAT gateway are regional or zone-redundant",
            );
        } else if v.value == NatGateways::PerZone {
            // A NAT gateway lives in a public subnet of its zone.
            for z in &zones {
                if !subnets.iter().any(|s| s.tier == Tier::Public && s.zone.as_deref() == Some(z)) {
                    cx.error(
                        &v.referenced,
                        format!("natGateways: perZone, but zone {z} has no public subnet for its NAT gateway"),
                        "add a public subnet in every zone, or use natGateways: single",
                    );
                }
            }
        }
    }
    (cx.problems.len() == before).then_some(Network {
        cidr: net,
        zones,
        subnets,
        private_service_connect,
        api_server,
        private_link,
        nat_gateways,
    })
}

fn kubernetes(cx: &mut Ctx<'_>, cloud: Cloud, spec: &super::wire::EnvironmentSpec) -> Option<Kubernetes> {
    let before = cx.problems.len();
    let k = &spec.kubernetes;
    // The form only: which versions the cloud offers today (and in which support window)
    // is asked of the cloud at preflight (AWS: eks:DescribeClusterVersions), as a table
    // here would go stale.
    if crate::expand::eks::minor(&k.version.value).is_none() {
        cx.error(
            &k.version.referenced,
            format!("invalid Kubernetes version {:?}", k.version.value),
            "write a quoted minor version such as \"1.35\"; which versions the cloud offers is checked before any change",
        );
    }
    let extended_support = match &k.support_type {
        None => false,
        Some(t) if t.value == "standard" => false,
        Some(t) if t.value == "extended" && cloud == Cloud::Aws => true,
        Some(t) if cloud != Cloud::Aws => {
            cx.error(&t.referenced, "kubernetes.supportType is EKS's upgrade policy, used on AWS only", "remove supportType");
            false
        }
        Some(t) => {
            cx.error(
                &t.referenced,
                format!("unknown supportType {:?}", t.value),
                format!(
                    "write standard (the default) or extended; extended support costs {} times standard per cluster hour",
                    crate::expand::eks::EXTENDED_COST_FACTOR
                ),
            );
            false
        }
    };
    let service_cidr = k.service_cidr.as_ref().map(|s| {
        let c = cidr(cx, s);
        let net = spec.network.cidr.value;
        // EKS CreateCluster, kubernetesNetworkConfig.serviceIpv4Cidr: "within one of the
        // following private IP address blocks: 10.0.0.0/8, 172.16.0.0/12, or
        // 192.168.0.0/16", "between /24 and /12" (EKS API Reference,
        // KubernetesNetworkConfigRequest).
        let private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"].map(|p| p.parse::<IpNet>().ok());
        if cloud == Cloud::Aws && (!private.iter().flatten().any(|p| p.contains(&c)) || !(12..=24).contains(&c.prefix_len())) {
            cx.error(
                &s.referenced,
                format!("service CIDR {c} is not one EKS accepts"),
                "EKS takes a service range from /12 to /24 inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16, such as 172.20.0.0/16",
            );
        } else if overlaps(&c, &net.trunc()) {
            cx.error(
                &s.referenced,
                format!("service CIDR {c} overlaps the network {}", net.trunc()),
                "pick a service range outside the VPC, such as 172.20.0.0/16",
            );
        }
        c
    });
    // VPC-native GKE takes its pod and service ranges from the nodes subnet's secondary
    // ranges; without them GKE adds ranges of its own, which would show as drift.
    let pod_cidr = match (&k.pod_cidr, cloud) {
        (Some(p), Cloud::Gcp | Cloud::Azure) => {
            let c = cidr(cx, p);
            let net = spec.network.cidr.value.trunc();
            if !matches!(c, IpNet::V4(_)) {
                cx.error(&p.referenced, format!("pod CIDR {c} must be IPv4"), "use a private range such as 10.100.0.0/16");
            } else if overlaps(&c, &net) {
                cx.error(
                    &p.referenced,
                    format!("pod CIDR {c} overlaps the network {net}"),
                    "pick a pod range outside the network, such as 10.100.0.0/16",
                );
            } else if let Some(s) = service_cidr.filter(|s| overlaps(&c, s)) {
                cx.error(&p.referenced, format!("pod CIDR {c} overlaps the service CIDR {s}"), "pick ranges that do not overlap");
            }
            Some(c)
        }
        (Some(p), _) => {
            cx.error(&p.referenced, format!("kubernetes.podCidr is only used on GCP and Azure, not {}", cloud.as_str()), "remove podCidr");
            None
        }
        (None, _) => None,
    };
    if cloud == Cloud::Gcp {
        let ranges = [
            ("pods", "podCidr", "10.100.0.0/16", k.pod_cidr.is_some()),
            ("services", "serviceCidr", "172.30.0.0/20", k.service_cidr.is_some()),
        ];
        for (what, field, example, given) in ranges {
            if !given {
                cx.error(
                    &k.version.referenced,
                    format!("GKE needs a secondary range for {what}: kubernetes.{field} is missing"),
                    format!("add kubernetes.{field}, a range outside the network such as {example}"),
                );
            }
        }
    }
    if cloud == Cloud::Azure {
        azure_ranges(cx, k);
    }
    let mut groups: Vec<NodeGroup> = Vec::new();
    if k.node_groups.value.is_empty() {
        cx.error(&k.node_groups.referenced, "no node groups", "add at least one node group for the RisingWave pods");
    }
    // AKS needs a System-mode pool, which cannot scale to zero: the first node group is it.
    if cloud == Cloud::Azure
        && let Some(first) = k.node_groups.value.first()
        && first.min.value == 0
    {
        cx.error(
            &first.min.referenced,
            format!("node group {:?} is AKS's System pool and needs min >= 1", first.name.value),
            "the first node group is the System-mode pool AKS runs its add-ons on; give it min: 1 or more, or list another group first",
        );
    }
    for g in &k.node_groups.value {
        // The node group's name is its node pool's name in the cloud.
        let pool_rule = match cloud {
            Cloud::Aws => &names::AWS_EKS_NODEGROUP,
            Cloud::Gcp => &names::GCP_GKE,
            Cloud::Azure => &names::AZURE_AKS_NODE_POOL,
        };
        let name_ok = if !is_dns_label(&g.name.value) || g.name.value.len() > 32 {
            cx.error(
                &g.name.referenced,
                format!("invalid node group name {:?}", g.name.value),
                "use lower-case letters, digits and '-', at most 32 characters",
            );
            false
        } else {
            let what = format!("invalid {} node group name {:?}", cloud.as_str(), g.name.value);
            cx.name_rule(&g.name.referenced, pool_rule, &g.name.value, what)
        };
        if name_ok && groups.iter().any(|o| o.name == g.name.value) {
            cx.error(&g.name.referenced, format!("duplicate node group name {:?}", g.name.value), "node group names must be unique");
        }
        if g.machine_type.value.trim().is_empty() {
            cx.error(&g.machine_type.referenced, "empty machine type", "name an instance type such as m6i.2xlarge");
        }
        if g.max.value == 0 || g.max.value > 100 {
            cx.error(&g.max.referenced, format!("max {} is out of range 1..=100", g.max.value), "a node group holds 1 to 100 nodes");
        }
        if g.min.value > g.max.value {
            cx.error(&g.min.referenced, format!("min {} is greater than max {}", g.min.value, g.max.value), "set min <= max");
        }
        let range = crate::expand::eks::ROOT_VOLUME_GIB;
        if let Some(v) = &g.root_volume_gib
            && !range.contains(&v.value)
        {
            cx.error(
                &v.referenced,
                format!("rootVolumeGiB {} is out of range {}..={}", v.value, range.start(), range.end()),
                "the node image needs 20 GiB, and a gp3 volume holds at most 16384 GiB",
            );
        }
        for (key, value) in &g.labels {
            if !valid_label_key(key) || names::K8S_LABEL_VALUE.check(&value.value).is_err() {
                cx.error(
                    &value.referenced,
                    format!("invalid node label {key:?}"),
                    "label keys are [prefix/]name with a name of at most 63 characters; values at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
                );
            }
        }
        let mut taints = Vec::new();
        for t in &g.taints {
            if !valid_label_key(&t.key.value) {
                cx.error(&t.key.referenced, format!("invalid taint key {:?}", t.key.value), "taint keys follow the label key rules");
            }
            if let Err(why) = names::K8S_LABEL_VALUE.check(&t.value) {
                cx.error(&t.key.referenced, format!("invalid value of taint {:?}", t.key.value), why);
            }
            taints.push(Taint { key: t.key.value.clone(), value: t.value.clone(), effect: t.effect });
        }
        groups.push(NodeGroup {
            name: g.name.value.clone(),
            machine_type: g.machine_type.value.clone(),
            min: g.min.value,
            max: g.max.value,
            root_volume_gib: g.root_volume_gib.as_ref().map_or(crate::expand::eks::ROOT_VOLUME_DEFAULT_GIB, |v| v.value),
            labels: g.labels.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect(),
            taints,
        });
    }
    let api_access = api_access(cx, cloud, &spec.region.value, &spec.account.value, k);
    let version_at = cx.at(&k.version.referenced).to_string();
    (cx.problems.len() == before).then(|| Kubernetes {
        version: k.version.value.clone(),
        version_at,
        extended_support,
        service_cidr,
        pod_cidr,
        node_groups: groups,
        api_access,
    })
}

/// EKS's limit on `publicAccessCidrs` ("Amazon EKS service quotas": public endpoint access
/// CIDR ranges per cluster).
pub const EKS_PUBLIC_ACCESS_CIDRS: usize = 40;

/// `kubernetes.apiAccess`: public networks that EKS takes (IPv4, not everyone, not a
/// private range, which the public endpoint never sees), and administrators that are IAM
/// roles or users of the environment's partition.
fn api_access(cx: &mut Ctx<'_>, cloud: Cloud, region: &str, account: &str, k: &super::wire::KubernetesSpec) -> ApiAccess {
    let Some(a) = &k.api_access else { return ApiAccess::default() };
    if cloud != Cloud::Aws {
        cx.error(
            &k.version.referenced,
            format!("kubernetes.apiAccess is used on AWS only so far, not {}", cloud.as_str()),
            "remove apiAccess",
        );
        return ApiAccess::default();
    }
    let mut out = ApiAccess::default();
    if let Some(list) = a.public_cidrs.as_ref().filter(|l| l.value.len() > EKS_PUBLIC_ACCESS_CIDRS) {
        cx.error(
            &list.referenced,
            format!("{} public CIDRs; EKS takes at most {EKS_PUBLIC_ACCESS_CIDRS}", list.value.len()),
            "merge them into wider ranges",
        );
    }
    let private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16"]
        .map(|p| p.parse::<IpNet>().ok());
    for n in a.public_cidrs.iter().flat_map(|l| &l.value) {
        let c = cidr(cx, n);
        if !matches!(c, IpNet::V4(_)) {
            cx.error(&n.referenced, format!("public CIDR {c} is not IPv4"), "EKS's publicAccessCidrs take IPv4 ranges");
        } else if c.prefix_len() == 0 {
            cx.error(
                &n.referenced,
                "public CIDR 0.0.0.0/0 opens the Kubernetes API to everyone",
                "list the networks that run byoc apply (an office, a CI runner's egress), or none to keep the endpoint private",
            );
        } else if private.iter().flatten().any(|p| overlaps(p, &c)) {
            cx.error(
                &n.referenced,
                format!("public CIDR {c} is a private range, which the public endpoint never sees"),
                "list the public address your NAT or CI egress uses; from inside the VPC the private endpoint is reached without this",
            );
        } else if out.public_cidrs.contains(&c) {
            cx.error(&n.referenced, format!("public CIDR {c} is listed twice"), "list each network once");
        } else {
            out.public_cidrs.push(c);
        }
    }
    let partition = names::aws::partition(region);
    for p in a.administrators.iter().flat_map(|l| &l.value) {
        let arn = p.value.as_str();
        // arn:<partition>:iam::<account>:role/<path/name> or :user/...; EKS refuses other
        // principals (a root, an assumed-role session) for an access entry.
        let rest = arn.strip_prefix(&format!("arn:{partition}:iam::"));
        let ok = rest.and_then(|r| r.split_once(':')).is_some_and(|(acct, res)| {
            acct.len() == 12
                && acct.bytes().all(|b| b.is_ascii_digit())
                && (res.starts_with("role/") || res.starts_with("user/"))
                && res.len() > 5
                && res.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
        });
        if !ok {
            cx.error(
                &p.referenced,
                format!("administrator {arn:?} is not an IAM role or user ARN of partition {partition}"),
                format!("write arn:{partition}:iam::{account}:role/NAME (the role your CI or people assume; not a session ARN)"),
            );
        } else if out.administrators.iter().any(|a| a == arn) {
            cx.error(&p.referenced, format!("administrator {arn:?} is listed twice"), "list each principal once");
        } else {
            out.administrators.push(arn.to_owned());
        }
    }
    out
}

/// Ranges AKS refuses for pods and services (Azure CNI overlay): link-local, the ranges
/// AKS and Docker keep for themselves, and TEST-NET-1.
pub const AKS_RESERVED_RANGES: [&str; 4] = ["169.254.0.0/16", "172.30.0.0/16", "172.31.0.0/16", "192.0.2.0/24"];

/// AKS with Azure CNI overlay: pod and service ranges are required, IPv4, clear of
/// [`AKS_RESERVED_RANGES`]; the service range is /12 or smaller, with room for
/// `dnsServiceIP` (its tenth address, see `expand::azure::dns_service_ip`).
fn azure_ranges(cx: &mut Ctx<'_>, k: &super::wire::KubernetesSpec) {
    let given = [("pods", "podCidr", "10.244.0.0/16", &k.pod_cidr), ("services", "serviceCidr", "10.0.0.0/16", &k.service_cidr)];
    for (what, field, example, range) in given {
        let Some(r) = range else {
            cx.error(
                &k.version.referenced,
                format!("AKS needs a range for {what}: kubernetes.{field} is missing"),
                format!("add kubernetes.{field}, a range outside the network such as {example}"),
            );
            continue;
        };
        let c = r.value.trunc();
        if !matches!(c, IpNet::V4(_)) {
            cx.error(&r.referenced, format!("{field} {c} must be IPv4"), format!("use a private range such as {example}"));
            continue;
        }
        for reserved in AKS_RESERVED_RANGES {
            let reserved: IpNet = reserved.parse().unwrap_or(c);
            if overlaps(&c, &reserved) {
                cx.error(
                    &r.referenced,
                    format!("{field} {c} overlaps {reserved}, which AKS reserves"),
                    format!("pick a range clear of {}, such as {example}", AKS_RESERVED_RANGES.join(", ")),
                );
            }
        }
        if field == "serviceCidr" && !(12..=28).contains(&c.prefix_len()) {
            cx.error(
                &r.referenced,
                format!("serviceCidr {c} must be from /12 to /28"),
                "AKS takes a service range no larger than /12, and the DNS service address is its tenth",
            );
        }
    }
}

fn bucket_name(cx: &mut Ctx<'_>, cloud: Cloud, given: Option<&Spanned<String>>, env: &str, account: &str, role: &str) -> String {
    match given {
        Some(b) => {
            let rule = match cloud {
                Cloud::Aws => &names::AWS_S3_BUCKET,
                Cloud::Gcp => &names::GCP_BUCKET,
                Cloud::Azure => &names::AZURE_CONTAINER,
            };
            cx.name_rule(&b.referenced, rule, &b.value, format!("invalid bucket name {:?}", b.value));
            b.value.clone()
        }
        // S3 and GCS bucket names are global: the account keeps them apart between customers.
        None => match cloud {
            Cloud::Aws => names::aws::bucket(env, account, role),
            Cloud::Gcp => names::gcp::bucket(env, account, role),
            // Azure containers live inside the environment's storage account.
            Cloud::Azure => format!("byoc-{role}"),
        },
    }
}

/// Validates a RisingWaveCluster document against its (already validated) environment.
pub fn cluster(file: &str, doc: &ClusterDocument, env: Option<&Environment>, problems: &mut Diagnostics) -> Option<Cluster> {
    let before = problems.len();
    let mut cx = Ctx { file, problems };
    check_header(file, &doc.api_version, &doc.kind, "RisingWaveCluster", cx.problems);
    let spec = &doc.spec;
    let name = &doc.metadata.name;
    if !is_dns_label(&name.value) || name.value.len() > MAX_CLUSTER_NAME {
        cx.error(
            &name.referenced,
            format!("invalid cluster name {:?}", name.value),
            format!("use lower-case letters, digits and '-', at most {MAX_CLUSTER_NAME} characters"),
        );
    } else if !name.value.starts_with(|c: char| c.is_ascii_lowercase()) {
        // The risingwave-operator names a Service `<cluster>-<component>` per component
        // (and byoc the frontend's); Service names are DNS-1035 labels.
        cx.error(
            &name.referenced,
            format!("invalid cluster name {:?}: it must start with a letter", name.value),
            format!(
                "Kubernetes Service names start with a letter, and the cluster's Services are named {}",
                rwproxy::routes::frontend_service(&name.value)
            ),
        );
    }
    check_image(&mut cx, &spec.image);
    let c = &spec.components;
    let components: Vec<Option<Component>> = [&c.meta, &c.frontend, &c.compute, &c.compactor]
        .into_iter()
        .zip(REPLICAS)
        .map(|(spec, (role, lo, hi))| component(&mut cx, role, spec, lo, hi))
        .collect();

    let prefix = &spec.state_store.prefix;
    let p = prefix.value.as_str();
    let prefix_ok = !p.is_empty()
        && p.len() <= 200
        && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'/'))
        && !p.starts_with('/')
        && !p.contains("//");
    if !prefix_ok {
        cx.error(
            &prefix.referenced,
            format!("invalid state-store prefix {p:?}"),
            "use lower-case letters, digits, '-', '_' and '/', not starting with '/', at most 200 characters",
        );
    }

    let meta_store = match &spec.meta_store {
        None => Some(MetaStore::Sqlite),
        Some(m) => meta_store(&mut cx, m),
    };

    if let (Some(g), Some(env)) = (&spec.node_group, env)
        && !env.kubernetes.node_groups.iter().any(|n| n.name == g.value)
    {
        let known: Vec<&str> = env.kubernetes.node_groups.iter().map(|n| n.name.as_str()).collect();
        cx.error(
            &g.referenced,
            format!("node group {:?} does not exist", g.value),
            format!("node groups of this environment: {}", known.join(", ")),
        );
    }

    if problems.len() != before {
        return None;
    }
    let [meta, frontend, compute, compactor]: [Option<Component>; 4] = components.try_into().ok()?;
    Some(Cluster {
        name: name.value.clone(),
        image: spec.image.value.clone(),
        meta: meta?,
        frontend: frontend?,
        compute: compute?,
        compactor: compactor?,
        state_prefix: p.trim_end_matches('/').to_owned(),
        meta_store: meta_store?,
        node_group: spec.node_group.as_ref().map(|g| g.value.clone()),
        deletion_policy: spec.deletion_policy,
        ignore_drift: spec.ignore_drift,
    })
}

fn check_image(cx: &mut Ctx<'_>, image: &Spanned<String>) {
    let text = image.value.as_str();
    let (rest, digest) = match text.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (text, None),
    };
    if let Some(d) = digest {
        let ok =
            d.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        if !ok {
            cx.error(
                &image.referenced,
                format!("invalid image digest in {text:?}"),
                "a digest is @sha256: followed by 64 lower-case hex digits",
            );
            return;
        }
    }
    // The tag is after the last ':' that follows the last '/' (a registry may have a port).
    let last = rest.rsplit('/').next().unwrap_or(rest);
    let tag = last.split_once(':').map(|(_, t)| t);
    let repo_ok = !rest.is_empty() && !rest.contains(char::is_whitespace) && rest.bytes().all(|b| b.is_ascii_graphic());
    if !repo_ok {
        cx.error(&image.referenced, format!("invalid image {text:?}"), "write repository:tag or repository@sha256:digest");
    } else if digest.is_none() && tag.is_none_or(|t| t.is_empty() || t == "latest") {
        cx.error(
            &image.referenced,
            format!("image {text:?} is not pinned"),
            "name a version tag such as risingwavelabs/risingwave:v2.1.0, or a digest; `latest` changes under you",
        );
    }
}

fn component(cx: &mut Ctx<'_>, role: &str, spec: &ComponentSpec, lo: u32, hi: u32) -> Option<Component> {
    let before = cx.problems.len();
    if !(lo..=hi).contains(&spec.replicas.value) {
        cx.error(
            &spec.replicas.referenced,
            format!("{role} replicas {} out of range {lo}..={hi}", spec.replicas.value),
            format!("a cluster runs {lo} to {hi} {role} pods"),
        );
    }
    let cpu = parse_cpu(&spec.cpu.value);
    match cpu {
        None => cx.error(
            &spec.cpu.referenced,
            format!("invalid {role} cpu {:?}", spec.cpu.value),
            "write cores like \"2\" or \"0.5\", or millicores like \"500m\"",
        ),
        Some(m) if !(100..=64_000).contains(&m) => cx.error(
            &spec.cpu.referenced,
            format!("{role} cpu {} out of range 100m..=64", format_cpu(m)),
            "a pod gets from 0.1 to 64 cores",
        ),
        _ => {}
    }
    let memory = parse_memory(&spec.memory.value);
    let min = if role == "compute" { 2u64 << 30 } else { 512 << 20 };
    match memory {
        None => cx.error(
            &spec.memory.referenced,
            format!("invalid {role} memory {:?}", spec.memory.value),
            "write a quantity like \"4Gi\" or \"512Mi\"",
        ),
        Some(b) if b < min || b > 512 << 30 => cx.error(
            &spec.memory.referenced,
            format!("{role} memory {} out of range {}..=512Gi", format_memory(b), format_memory(min)),
            format!("{role} pods need at least {}", format_memory(min)),
        ),
        _ => {}
    }
    (cx.problems.len() == before).then(|| Component {
        replicas: spec.replicas.value,
        cpu_millis: cpu.unwrap_or_default(),
        memory_bytes: memory.unwrap_or_default(),
    })
}

fn meta_store(cx: &mut Ctx<'_>, m: &Spanned<MetaStoreSpec>) -> Option<MetaStore> {
    match (&m.value.sqlite, &m.value.postgresql) {
        (Some(_), None) => Some(MetaStore::Sqlite),
        (None, Some(pg)) => {
            let before = cx.problems.len();
            if pg.host.value.is_empty() || !pg.host.value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':')) {
                cx.error(&pg.host.referenced, format!("invalid meta store host {:?}", pg.host.value), "write a host name or IP address");
            }
            if pg.database.value.is_empty() || pg.database.value.len() > 63 {
                cx.error(&pg.database.referenced, "invalid meta store database name", "database names are 1 to 63 bytes");
            }
            if !is_dns_label(&pg.credentials_secret.value) {
                cx.error(
                    &pg.credentials_secret.referenced,
                    format!("invalid secret name {:?}", pg.credentials_secret.value),
                    "name a Kubernetes secret in the cluster's namespace",
                );
            }
            (cx.problems.len() == before).then(|| MetaStore::Postgresql {
                host: pg.host.value.clone(),
                port: pg.port,
                database: pg.database.value.clone(),
                credentials_secret: pg.credentials_secret.value.clone(),
            })
        }
        _ => {
            cx.error(
                &m.referenced,
                "metaStore must name exactly one of sqlite, postgresql",
                "write `metaStore: {sqlite: {}}` or a postgresql block",
            );
            None
        }
    }
}

fn cidr(cx: &mut Ctx<'_>, net: &Spanned<IpNet>) -> IpNet {
    if net.value.trunc() != net.value {
        cx.error(&net.referenced, format!("CIDR {} has host bits set", net.value), format!("did you mean {}?", net.value.trunc()));
    }
    net.value.trunc()
}

/// Whether two networks share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').map_or((None, key), |(p, n)| (Some(p), n));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(rwproxy::routes::is_hostname)
}

fn valid_gcp_project(a: &str) -> bool {
    (6..=30).contains(&a.len())
        && a.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !a.ends_with('-')
}

fn is_uuid(a: &str) -> bool {
    let groups: Vec<&str> = a.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]) && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn valid_resource_group(a: &str) -> bool {
    (1..=90).contains(&a.len())
        && a.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'(' | b')'))
        && !a.ends_with('.')
}

fn valid_principal(cloud: Cloud, partition: &str, p: &str) -> bool {
    match cloud {
        Cloud::Aws => {
            p.strip_prefix("arn:").and_then(|p| p.strip_prefix(partition)).and_then(|p| p.strip_prefix(":iam::")).is_some_and(|rest| {
                rest.split_once(':').is_some_and(|(acct, res)| {
                    acct.len() == 12
                        && acct.bytes().all(|b| b.is_ascii_digit())
                        && (res == "root" || res.starts_with("role/") || res.starts_with("user/"))
                })
            })
        }
        Cloud::Gcp => valid_gcp_project(p) || (!p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit())),
        Cloud::Azure => is_uuid(p),
    }
}
