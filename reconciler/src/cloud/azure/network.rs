//! Microsoft.Network ([`api::NETWORK`]): the VNet, its subnets (with delegation, NSG,
//! NAT gateway), the NSG, the NAT gateway and its public IP, the storage accounts'
//! private endpoints with their DNS zone groups, and the private DNS zone the accounts'
//! names resolve in there, with its VNet link (zones and links at [`api::PRIVATE_DNS`]).
//! Subnets take no tags: they are ours because they are in our tagged VNet; a zone group
//! neither, and is ours because it is on our tagged endpoint.

use serde_json::{Value as Json, json};

use super::{Azure, Found, Refs, api, at, at_str, found_json, resolve, strings, text};
use crate::cloud::CloudError;
use crate::resource::{Kind, Map, Resource, Value};

/// Priority of the NSG's first rule; each next rule one more.
const FIRST_PRIORITY: i64 = 1000;
/// Prefix of the NSG rules byoc writes; the NSG is ours, and its rules are exactly the
/// desired ones (a rule someone else added is drift, removed by the next apply).
const RULE_PREFIX: &str = "byoc-inbound-";

impl Azure {
    fn network_path(&self, provider_type: &str, name: &str) -> String {
        format!("{}/providers/Microsoft.Network/{provider_type}/{name}", self.rg_path())
    }

    pub(super) async fn observe_network(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let vnets = self.observe_type(Kind::AzureVnet, "Microsoft.Network/virtualNetworks", api::NETWORK, out).await?;
        for (_, vnet) in &vnets {
            let vnet_id = vnet.get("id").and_then(Json::as_str).unwrap_or_default();
            for subnet in self.arm.list("list subnets", &format!("{vnet_id}/subnets"), api::NETWORK).await? {
                let name = subnet.get("name").and_then(Json::as_str).unwrap_or_default();
                // In our VNet, so ours: named in the graph, else leaked.
                let id =
                    self.known(Kind::AzureSubnet, &subnet).unwrap_or_else(|| crate::resource::ResourceId::new(Kind::AzureSubnet, name));
                out.push(found_json(id, Kind::AzureSubnet, &subnet));
            }
        }
        for (_, nsg) in self.observe_type(Kind::AzureNsg, "Microsoft.Network/networkSecurityGroups", api::NETWORK, out).await? {
            let live = nsg_live(&nsg);
            if let Some(f) = out.last_mut() {
                f.live = live;
            }
        }
        self.observe_type(Kind::AzurePublicIp, "Microsoft.Network/publicIPAddresses", api::NETWORK, out).await?;
        self.observe_type(Kind::AzureNatGateway, "Microsoft.Network/natGateways", api::NETWORK, out).await?;
        for (_, zone) in self.observe_type(Kind::AzurePrivateDnsZone, "Microsoft.Network/privateDnsZones", api::PRIVATE_DNS, out).await? {
            let zone_id = zone.get("id").and_then(Json::as_str).unwrap_or_default();
            for link in self.arm.list("list virtual network links", &format!("{zone_id}/virtualNetworkLinks"), api::PRIVATE_DNS).await? {
                if let Some(id) = self.ours(Kind::AzurePrivateDnsZoneLink, &link) {
                    out.push(found_json(id, Kind::AzurePrivateDnsZoneLink, &link));
                }
            }
        }
        for (_, pe) in self.observe_type(Kind::AzurePrivateEndpoint, "Microsoft.Network/privateEndpoints", api::NETWORK, out).await? {
            let pe_id = pe.get("id").and_then(Json::as_str).unwrap_or_default();
            for group in self.arm.list("list private DNS zone groups", &format!("{pe_id}/privateDnsZoneGroups"), api::NETWORK).await? {
                let name = group.get("name").and_then(Json::as_str).unwrap_or_default();
                // On our endpoint, so ours: named in the graph, else leaked.
                let id = self
                    .known(Kind::AzurePrivateDnsZoneGroup, &group)
                    .unwrap_or_else(|| crate::resource::ResourceId::new(Kind::AzurePrivateDnsZoneGroup, name));
                out.push(found_json(id, Kind::AzurePrivateDnsZoneGroup, &group));
            }
        }
        Ok(())
    }

    pub(super) async fn ensure_vnet(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let path = self.network_path("virtualNetworks", text(r, "name"));
        // A PUT of a VNet without its subnets would remove them: the ones it has are kept
        // (subnets are their own resources).
        let current = self.arm.get(&format!("GET vnet for {}", r.id), &path, api::NETWORK).await?;
        let subnets = current.as_ref().and_then(|c| at(c, "properties.subnets")).cloned().unwrap_or(json!([]));
        let body = json!({"properties": {
            "addressSpace": {"addressPrefixes": strings(r.properties.get("addressSpace"))},
            "subnets": subnets,
        }});
        let vnet = self.put_tagged(r, existing, &path, api::NETWORK, body).await?;
        Ok(found_json(r.id.clone(), r.kind, &vnet))
    }

    pub(super) async fn ensure_subnet(&self, r: &Resource, refs: &Refs) -> Result<Found, CloudError> {
        let vnet = resolve(refs, r, "vnet")?;
        let path = format!("{}/subnets/{}", vnet.cloud_id, text(r, "name"));
        let mut props = json!({"addressPrefix": text(r, "cidr")});
        if r.properties.get("nsg").is_some() {
            props["networkSecurityGroup"] = json!({"id": resolve(refs, r, "nsg")?.cloud_id});
        }
        if r.properties.get("natGateway").is_some() {
            props["natGateway"] = json!({"id": resolve(refs, r, "natGateway")?.cloud_id});
        }
        let delegation = text(r, "delegation");
        props["delegations"] =
            if delegation.is_empty() { json!([]) } else { json!([{"name": "aks", "properties": {"serviceName": delegation}}]) };
        if let Some(p) = r.properties.get("privateLinkServiceNetworkPolicies").and_then(Value::as_str) {
            props["privateLinkServiceNetworkPolicies"] = json!(p);
        }
        let what = format!("PUT subnet for {}", r.id);
        let subnet = self.arm.put(&what, &path, api::NETWORK, &json!({"properties": props})).await?;
        Ok(found_json(r.id.clone(), r.kind, &subnet))
    }

    pub(super) async fn ensure_nsg(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let path = self.network_path("networkSecurityGroups", text(r, "name"));
        let mut rules = Vec::new();
        if let Some(Value::List(items)) = r.properties.get("inbound") {
            for (i, item) in items.iter().enumerate() {
                let Value::Map(m) = item else { continue };
                let port = match m.get("port") {
                    Some(Value::Int(p)) => p.to_string(),
                    Some(other) => other.as_str().unwrap_or_default().to_owned(),
                    None => continue,
                };
                let from = m.get("from").and_then(Value::as_str).unwrap_or("VirtualNetwork");
                rules.push(json!({"name": format!("{RULE_PREFIX}{i}"), "properties": {
                    "priority": FIRST_PRIORITY + i64::try_from(i).unwrap_or(0),
                    "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
                    "sourceAddressPrefix": from, "sourcePortRange": "*",
                    "destinationAddressPrefix": "*", "destinationPortRange": port,
                }}));
            }
        }
        let nsg = self.put_tagged(r, existing, &path, api::NETWORK, json!({"properties": {"securityRules": rules}})).await?;
        let mut f = found_json(r.id.clone(), r.kind, &nsg);
        f.live = nsg_live(&nsg);
        Ok(f)
    }

    pub(super) async fn ensure_public_ip(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let path = self.network_path("publicIPAddresses", text(r, "name"));
        let body = json!({
            "sku": {"name": text(r, "sku")},
            "zones": strings(r.properties.get("zones")),
            "properties": {"publicIPAllocationMethod": text(r, "allocation"), "publicIPAddressVersion": "IPv4"},
        });
        let ip = self.put_tagged(r, existing, &path, api::NETWORK, body).await?;
        let mut f = found_json(r.id.clone(), r.kind, &ip);
        f.outputs.insert("address".into(), at_str(&ip, "properties.ipAddress").to_owned());
        Ok(f)
    }

    pub(super) async fn ensure_nat(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let path = self.network_path("natGateways", text(r, "name"));
        let mut ips = Vec::new();
        for id in r.refs_in("publicIps") {
            let f = refs.get(&id).ok_or_else(|| CloudError::new(r.id.to_string(), format!("{id} does not exist yet")))?;
            ips.push(json!({"id": f.cloud_id}));
        }
        let body = json!({
            "sku": {"name": text(r, "sku")},
            "zones": strings(r.properties.get("zones")),
            "properties": {"publicIpAddresses": ips, "idleTimeoutInMinutes": 4},
        });
        let nat = self.put_tagged(r, existing, &path, api::NETWORK, body).await?;
        Ok(found_json(r.id.clone(), r.kind, &nat))
    }

    pub(super) async fn ensure_private_endpoint(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let path = self.network_path("privateEndpoints", text(r, "name"));
        let subnet = resolve(refs, r, "subnet")?;
        let target = resolve(refs, r, "target")?;
        let body = json!({"properties": {
            "subnet": {"id": subnet.cloud_id},
            "privateLinkServiceConnections": [{"name": text(r, "name"), "properties": {
                "privateLinkServiceId": target.cloud_id,
                "groupIds": [text(r, "groupId")],
            }}],
        }});
        let pe = self.put_tagged(r, existing, &path, api::NETWORK, body).await?;
        Ok(found_json(r.id.clone(), r.kind, &pe))
    }

    pub(super) async fn ensure_private_dns_zone(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let path = self.network_path("privateDnsZones", text(r, "name"));
        let zone = self.put_tagged(r, existing, &path, api::PRIVATE_DNS, json!({"properties": {}})).await?;
        Ok(found_json(r.id.clone(), r.kind, &zone))
    }

    pub(super) async fn ensure_private_dns_link(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let zone = resolve(refs, r, "zone")?;
        let vnet = resolve(refs, r, "vnet")?;
        let path = format!("{}/virtualNetworkLinks/{}", zone.cloud_id, text(r, "name"));
        let registration = matches!(r.properties.get("registrationEnabled"), Some(Value::Bool(true)));
        let body = json!({"properties": {"virtualNetwork": {"id": vnet.cloud_id}, "registrationEnabled": registration}});
        let link = self.put_tagged(r, existing, &path, api::PRIVATE_DNS, body).await?;
        Ok(found_json(r.id.clone(), r.kind, &link))
    }

    /// The endpoint's zone group: Azure writes the endpoint's address into the zone as an A
    /// record and keeps it there while the group exists.
    pub(super) async fn ensure_private_dns_zone_group(&self, r: &Resource, refs: &Refs) -> Result<Found, CloudError> {
        let endpoint = resolve(refs, r, "endpoint")?;
        let zone = resolve(refs, r, "zone")?;
        let path = format!("{}/privateDnsZoneGroups/{}", endpoint.cloud_id, text(r, "name"));
        // A config's name is free text; the zone's name with dots turned into hyphens, as the portal does.
        let zone_name = zone.cloud_id.rsplit('/').next().unwrap_or_default().replace('.', "-");
        let body = json!({"properties": {"privateDnsZoneConfigs": [
            {"name": zone_name, "properties": {"privateDnsZoneId": zone.cloud_id}},
        ]}});
        let what = format!("PUT private DNS zone group for {}", r.id);
        let group = self.arm.put(&what, &path, api::NETWORK, &body).await?;
        Ok(found_json(r.id.clone(), r.kind, &group))
    }
}

/// The NSG's inbound allow rules in the graph's form (`inbound: [{port, from}]`), read
/// back to find drift (a rule someone added, removed or widened).
fn nsg_live(nsg: &Json) -> Map {
    let mut rules: Vec<(i64, Value)> = Vec::new();
    for rule in at(nsg, "properties.securityRules").and_then(Json::as_array).into_iter().flatten() {
        let p = rule.get("properties").cloned().unwrap_or(Json::Null);
        if at_str(&p, "direction") != "Inbound" || at_str(&p, "access") != "Allow" {
            continue;
        }
        let port = at_str(&p, "destinationPortRange");
        let port = port.parse::<i64>().map_or_else(|_| Value::from(port), Value::Int);
        let priority = p.get("priority").and_then(Json::as_i64).unwrap_or(i64::MAX);
        rules.push((priority, Value::map([("port", port), ("from", at_str(&p, "sourceAddressPrefix").into())])));
    }
    rules.sort_by_key(|(p, _)| *p);
    let mut m = Map::new();
    m.insert("inbound", Value::List(rules.into_iter().map(|(_, v)| v).collect()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsg_rules_read_back_in_the_graphs_form_in_priority_order() {
        let nsg = json!({"properties": {"securityRules": [
            {"name": "b", "properties": {"priority": 1001, "direction": "Inbound", "access": "Allow", "destinationPortRange": "4566", "sourceAddressPrefix": "VirtualNetwork"}},
            {"name": "a", "properties": {"priority": 1000, "direction": "Inbound", "access": "Allow", "destinationPortRange": "8443", "sourceAddressPrefix": "VirtualNetwork"}},
            {"name": "deny", "properties": {"priority": 4000, "direction": "Inbound", "access": "Deny", "destinationPortRange": "*", "sourceAddressPrefix": "*"}},
        ]}});
        let live = nsg_live(&nsg);
        let want = Value::List(vec![
            Value::map([("port", Value::Int(8443)), ("from", "VirtualNetwork".into())]),
            Value::map([("port", Value::Int(4566)), ("from", "VirtualNetwork".into())]),
        ]);
        assert_eq!(live.get("inbound"), Some(&want));
    }
}
