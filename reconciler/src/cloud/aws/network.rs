//! The network on EC2: the VPC, its subnets, the internet gateway, NAT gateways (with their
//! elastic IPs), route tables and security groups.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types as ec2t;

use super::{Aws, Wait, ec2_tags, flag, found, missing, resolve, resolve_list, resolve_prop, tag_spec, text, unless_gone};
use crate::cloud::{CloudError, Found, Refs};
use crate::expand::TAG_RESOURCE;
use crate::resource::{Kind, Map, Resource, ResourceId, Value};

impl Aws {
    pub(super) async fn observe_network(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
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

impl Aws {
    pub(super) async fn ensure_vpc(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
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
            .call_fresh(&what("ModifyVpcAttribute"), || self.ec2.modify_vpc_attribute().vpc_id(&vpc_id).enable_dns_support(on()).send())
            .await?;
        let hostnames = ec2t::AttributeBooleanValue::builder().value(flag(r, "enableDnsHostnames")).build();
        self.retry
            .call_fresh(&what("ModifyVpcAttribute"), || {
                self.ec2.modify_vpc_attribute().vpc_id(&vpc_id).enable_dns_hostnames(hostnames.clone()).send()
            })
            .await?;
        Ok(found(r, vpc_id, []))
    }

    pub(super) async fn ensure_subnet(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("ec2 {op} for {}", r.id);
        let vpc = resolve_prop(refs, r, "vpc")?;
        let subnet_id = match existing {
            Some(f) => f.cloud_id.clone(),
            None => {
                let zone = Some(text(r, "zone")).filter(|z| !z.is_empty());
                let out = self
                    .retry
                    .call_fresh(&what("CreateSubnet"), || {
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
            .call_fresh(&what("ModifySubnetAttribute"), || {
                self.ec2.modify_subnet_attribute().subnet_id(&subnet_id).map_public_ip_on_launch(public_ip.clone()).send()
            })
            .await?;
        Ok(found(r, subnet_id, [("vpcId", vpc.to_owned())]))
    }

    pub(super) async fn ensure_igw(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
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
                .call_fresh(&what("AttachInternetGateway"), || {
                    self.ec2.attach_internet_gateway().internet_gateway_id(&igw_id).vpc_id(vpc).send()
                })
                .await?;
        }
        Ok(found(r, igw_id, []))
    }

    pub(super) async fn delete_igw(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("ec2 {op} for {} {}", f.id, f.cloud_id);
        let d = self
            .retry
            .call(&what("DescribeInternetGateways"), || self.ec2.describe_internet_gateways().internet_gateway_ids(&f.cloud_id).send())
            .await?;
        for a in d.internet_gateways().iter().flat_map(|g| g.attachments()) {
            if let Some(vpc) = a.vpc_id() {
                // Refused while public addresses (NAT gateways, load balancers) remain mapped.
                let detached = self
                    .until_released(&what("DetachInternetGateway"), Some(vpc), || {
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
    pub(super) async fn addresses_of(&self, id: &ResourceId) -> Result<Vec<ec2t::Address>, CloudError> {
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

    pub(super) async fn ensure_nat(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
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
            .call_fresh(&what("CreateNatGateway"), || {
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

    pub(super) async fn delete_nat(&self, f: &Found) -> Result<(), CloudError> {
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

    pub(super) async fn ensure_route_table(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("ec2 {op} for {}", r.id);
        let vpc = resolve_prop(refs, r, "vpc")?;
        let table = match existing {
            Some(f) => f.cloud_id.clone(),
            None => {
                let out = self
                    .retry
                    .call_fresh(&what("CreateRouteTable"), || {
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
                        .call_fresh(&what("ReplaceRoute"), || {
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
                        .call_fresh(&what("CreateRoute"), || {
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
                .call_fresh(&what("AssociateRouteTable"), || self.ec2.associate_route_table().route_table_id(&table).subnet_id(s).send())
                .await?;
        }
        Ok(found(r, table, []))
    }

    pub(super) async fn delete_route_table(&self, f: &Found) -> Result<(), CloudError> {
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

    pub(super) async fn ensure_security_group(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("ec2 {op} for {}", r.id);
        let vpc = resolve_prop(refs, r, "vpc")?;
        let group = match existing {
            Some(f) => f.cloud_id.clone(),
            None => {
                let out = self
                    .retry
                    .call_fresh(&what("CreateSecurityGroup"), || {
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
                .call_fresh(&what("AuthorizeSecurityGroupIngress"), || {
                    self.ec2.authorize_security_group_ingress().group_id(&group).set_ip_permissions(Some(add.clone())).send()
                })
                .await?;
        }
        if !remove.is_empty() {
            self.retry
                .call_fresh(&what("RevokeSecurityGroupIngress"), || {
                    self.ec2.revoke_security_group_ingress().group_id(&group).set_ip_permissions(Some(remove.clone())).send()
                })
                .await?;
        }
        Ok(found(r, group, []))
    }

    // Subnets, security groups and the VPC are released by the network interfaces of
    // deleted load balancers and EKS minutes after those are gone (see `teardown`).

    pub(super) async fn delete_vpc(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("{op} for {} {}", f.id, f.cloud_id);
        let id = f.cloud_id.as_str();
        self.until_released(&what("ec2 DeleteVpc"), Some(id), || self.ec2.delete_vpc().vpc_id(id).send()).await.map(drop)
    }

    pub(super) async fn delete_subnet(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("{op} for {} {}", f.id, f.cloud_id);
        let id = f.cloud_id.as_str();
        let vpc = f.outputs.get("vpcId").map(String::as_str);
        self.until_released(&what("ec2 DeleteSubnet"), vpc, || self.ec2.delete_subnet().subnet_id(id).send()).await.map(drop)
    }

    pub(super) async fn delete_security_group(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("{op} for {} {}", f.id, f.cloud_id);
        let id = f.cloud_id.as_str();
        self.until_released(&what("ec2 DeleteSecurityGroup"), None, || self.ec2.delete_security_group().group_id(id).send()).await.map(drop)
    }
}
