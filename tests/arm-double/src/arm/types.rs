//! Per-type rules: what each resource provider checks on PUT and DELETE, and the read-only
//! fields it fills in.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{Answer, Entry, Kind, RA_KIND, ROLE_DEFINITIONS, Reply, Req, State, error, str_at};
use crate::rules;

fn bad(code: &str, message: impl Into<String>) -> Reply {
    error(400, code, message)
}

/// The ids in `body` at `path` (an array of `{"id": ...}` objects), lower-case.
fn ref_ids(body: &Value, path: &[&str]) -> Vec<String> {
    let mut cur = body;
    for p in path {
        match cur.get(*p) {
            Some(v) => cur = v,
            None => return Vec::new(),
        }
    }
    cur.as_array()
        .map(|a| a.iter().filter_map(|r| r.get("id").and_then(Value::as_str)).map(str::to_ascii_lowercase).collect())
        .unwrap_or_default()
}

impl State {
    fn exists(&self, id: &str) -> bool {
        self.resources.contains_key(&id.to_ascii_lowercase())
    }

    fn reference(&self, id: Option<&str>, what: &str, resource: &str) -> Result<(), Reply> {
        let Some(id) = id else { return Ok(()) };
        if self.exists(id) {
            return Ok(());
        }
        Err(bad(
            "InvalidResourceReference",
            format!(
                "Resource {id} referenced by resource {resource} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region. ({what})"
            ),
        ))
    }

    /// Checks a PUT body for `kind` and fills in read-only properties.
    pub(super) fn validate(
        &mut self,
        kind: &Kind,
        id: &str,
        key: &str,
        name: &str,
        body: &mut Value,
        existing: Option<&Value>,
    ) -> Result<(), Reply> {
        match kind.key {
            "microsoft.network/virtualnetworks" => self.vnet(id, key, body, existing),
            "microsoft.network/virtualnetworks/subnets" => self.subnet(id, key, body),
            "microsoft.network/networksecuritygroups" => nsg(body),
            "microsoft.network/natgateways" => self.nat_gateway(id, body),
            "microsoft.network/publicipaddresses" => self.public_ip(body, existing),
            "microsoft.network/privateendpoints" => self.private_endpoint(id, body),
            "microsoft.network/privatednszones" => Ok(()),
            "microsoft.network/privatednszones/virtualnetworklinks" => self.virtual_network_link(id, body),
            "microsoft.network/privateendpoints/privatednszonegroups" => self.zone_group(id, body),
            "microsoft.containerservice/managedclusters" => self.managed_cluster(id, key, name, body, existing),
            "microsoft.containerservice/managedclusters/agentpools" => {
                self.agent_pool(id, name, body.get_mut("properties"), existing.is_none())
            }
            "microsoft.storage/storageaccounts" => self.storage_account(key, name, body, existing),
            "microsoft.storage/storageaccounts/blobservices/containers" => container(body),
            "microsoft.storage/storageaccounts/blobservices" => blob_service(body),
            "microsoft.storage/storageaccounts/managementpolicies" => management_policy(body),
            "microsoft.managedidentity/userassignedidentities" => {
                self.identity(body, existing);
                Ok(())
            }
            "microsoft.managedidentity/userassignedidentities/federatedidentitycredentials" => self.federated_credential(key, body),
            _ => Ok(()),
        }
    }

    fn vnet(&mut self, id: &str, key: &str, body: &mut Value, existing: Option<&Value>) -> Result<(), Reply> {
        let prefixes: Vec<String> = body["properties"]["addressSpace"]["addressPrefixes"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if prefixes.is_empty() {
            return Err(bad(
                "InvalidRequestFormat",
                format!("Cannot parse the request: virtual network {id} needs properties.addressSpace.addressPrefixes."),
            ));
        }
        let mut nets = Vec::new();
        for p in &prefixes {
            nets.push(rules::cidr(p).ok_or_else(|| bad("InvalidAddressPrefixFormat", format!("Address prefix {p} of resource {id} is not formatted correctly. It should follow CIDR notation, for example 10.0.0.0/24.")))?);
        }
        // ARM replaces the subnets with the ones in the body: those left out are deleted,
        // which fails when one is in use.
        let given: Vec<(String, Value)> = body["properties"]["subnets"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| Some((s.get("name")?.as_str()?.to_owned(), s.clone()))).collect())
            .unwrap_or_default();
        if existing.is_some() {
            let prefix = format!("{key}/subnets/");
            let current: Vec<String> =
                self.resources.keys().filter(|k| k.starts_with(&prefix) && !k[prefix.len()..].contains('/')).cloned().collect();
            for sk in current {
                let sname = &sk[prefix.len()..];
                if !given.iter().any(|(n, _)| n.eq_ignore_ascii_case(sname)) {
                    self.check_subnet_unused(&sk)?;
                }
            }
        }
        // Inline subnets are judged as separate PUTs would be.
        for (i, (sname, s)) in given.iter().enumerate() {
            rules::name("microsoft.network/virtualnetworks/subnets", sname).map_err(|(c, m)| bad(c, m))?;
            let p = subnet_prefix(s.get("properties").unwrap_or(&Value::Null))
                .ok_or_else(|| bad("InvalidRequestFormat", format!("Subnet {sname} of {id} needs properties.addressPrefix.")))?;
            let net = rules::cidr(&p).ok_or_else(|| {
                bad("InvalidAddressPrefixFormat", format!("Address prefix {p} of subnet {sname} is not formatted correctly."))
            })?;
            if !nets.iter().any(|n| rules::within(net, *n)) {
                return Err(bad(
                    "NetcfgSubnetRangeOutsideVnet",
                    format!(
                        "Subnet '{sname}' is not valid because its IP address range is outside the IP address range of virtual network '{id}'."
                    ),
                ));
            }
            for (other, os) in given.iter().skip(i + 1) {
                if let Some(onet) = subnet_prefix(os.get("properties").unwrap_or(&Value::Null)).and_then(|p| rules::cidr(&p))
                    && rules::overlap(net, onet)
                {
                    return Err(bad(
                        "NetcfgSubnetRangesOverlap",
                        format!(
                            "Subnet '{sname}' is not valid because its IP address range overlaps with that of an existing subnet '{other}' in virtual network '{id}'."
                        ),
                    ));
                }
            }
            self.reference(str_at(s, &["properties", "natGateway", "id"]), "natGateway", id)?;
            self.reference(str_at(s, &["properties", "networkSecurityGroup", "id"]), "networkSecurityGroup", id)?;
        }
        Ok(())
    }

    /// Writes the inline subnets of a VNet PUT as child resources, deleting those left out.
    fn sync_subnets(&mut self, id: &str, key: &str, body: &Value) {
        let prefix = format!("{key}/subnets/");
        let given: Vec<Value> = body["properties"]["subnets"].as_array().cloned().unwrap_or_default();
        let names: Vec<String> = given.iter().filter_map(|s| s.get("name")?.as_str().map(str::to_ascii_lowercase)).collect();
        self.resources
            .retain(|k, _| !(k.starts_with(&prefix) && !k[prefix.len()..].contains('/') && !names.contains(&k[prefix.len()..].to_owned())));
        for s in given {
            let Some(sname) = s.get("name").and_then(Value::as_str).map(str::to_owned) else { continue };
            let sid = format!("{id}/subnets/{sname}");
            let etag = self.new_etag("microsoft.network/virtualnetworks/subnets");
            let mut props = s.get("properties").cloned().unwrap_or(json!({}));
            props["provisioningState"] = json!("Succeeded");
            let json =
                json!({"id": sid, "name": sname, "type": "Microsoft.Network/virtualNetworks/subnets", "etag": etag, "properties": props});
            self.resources.insert(sid.to_ascii_lowercase(), Entry { json, kind: "microsoft.network/virtualnetworks/subnets", op: None });
        }
        if let Some(e) = self.resources.get_mut(key)
            && let Some(p) = e.json.get_mut("properties").and_then(Value::as_object_mut)
        {
            // Kept as children; rendered back into the VNet on GET.
            p.remove("subnets");
        }
    }

    fn subnet(&mut self, id: &str, key: &str, body: &mut Value) -> Result<(), Reply> {
        let props = &body["properties"];
        let p = subnet_prefix(props)
            .ok_or_else(|| bad("InvalidRequestFormat", format!("Cannot parse the request: subnet {id} needs properties.addressPrefix.")))?;
        let net = rules::cidr(&p).ok_or_else(|| bad("InvalidAddressPrefixFormat", format!("Address prefix {p} of resource {id} is not formatted correctly. It should follow CIDR notation, for example 10.0.0.0/24.")))?;
        let vnet_key = super::key_prefix(key, 2);
        let vnet_nets: Vec<(u32, u8)> = self
            .resources
            .get(&vnet_key)
            .and_then(|v| v.json["properties"]["addressSpace"]["addressPrefixes"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.as_str().and_then(rules::cidr))
            .collect();
        if !vnet_nets.iter().any(|n| rules::within(net, *n)) {
            return Err(bad(
                "NetcfgSubnetRangeOutsideVnet",
                format!(
                    "Subnet '{id}' is not valid because its IP address range {p} is outside the IP address range of its virtual network."
                ),
            ));
        }
        let prefix = format!("{vnet_key}/subnets/");
        for (k, e) in &self.resources {
            if k.starts_with(&prefix)
                && k != key
                && !k[prefix.len()..].contains('/')
                && let Some(other) = subnet_prefix(&e.json["properties"]).and_then(|p| rules::cidr(&p))
                && rules::overlap(net, other)
            {
                return Err(bad(
                    "NetcfgSubnetRangesOverlap",
                    format!(
                        "Subnet '{id}' is not valid because its IP address range overlaps with that of an existing subnet '{}' in the virtual network.",
                        str_at(&e.json, &["name"]).unwrap_or("")
                    ),
                ));
            }
        }
        self.reference(str_at(props, &["natGateway", "id"]), "natGateway", id)?;
        self.reference(str_at(props, &["networkSecurityGroup", "id"]), "networkSecurityGroup", id)?;
        if let Some(current) = self.resources.get(key)
            && subnet_prefix(&current.json["properties"]).as_deref() != Some(p.as_str())
            && let Some(user) = self.subnet_user(key)
        {
            return Err(bad(
                "InUseSubnetCannotBeUpdated",
                format!("Subnet {id} is in use by {user} and its address prefix cannot be updated."),
            ));
        }
        Ok(())
    }

    /// The resource using a subnet (lower-case subnet key), if any.
    fn subnet_user(&self, subnet_key: &str) -> Option<String> {
        for e in self.resources.values() {
            let uses = match e.kind {
                "microsoft.containerservice/managedclusters/agentpools" => {
                    str_at(&e.json, &["properties", "vnetSubnetID"]).is_some_and(|s| s.eq_ignore_ascii_case(subnet_key))
                        || str_at(&e.json, &["properties", "podSubnetID"]).is_some_and(|s| s.eq_ignore_ascii_case(subnet_key))
                }
                "microsoft.containerservice/managedclusters" => str_at(&e.json, &["properties", "apiServerAccessProfile", "subnetId"])
                    .is_some_and(|s| s.eq_ignore_ascii_case(subnet_key)),
                "microsoft.network/privateendpoints" => {
                    str_at(&e.json, &["properties", "subnet", "id"]).is_some_and(|s| s.eq_ignore_ascii_case(subnet_key))
                }
                _ => false,
            };
            if uses {
                return Some(str_at(&e.json, &["id"]).unwrap_or("").to_owned());
            }
        }
        None
    }

    fn check_subnet_unused(&self, subnet_key: &str) -> Result<(), Reply> {
        match self.subnet_user(subnet_key) {
            Some(user) => {
                let id = self
                    .resources
                    .get(subnet_key)
                    .and_then(|e| str_at(&e.json, &["id"]).map(str::to_owned))
                    .unwrap_or_else(|| subnet_key.to_owned());
                Err(bad(
                    "InUseSubnetCannotBeDeleted",
                    format!(
                        "Subnet {} is in use by {user} and cannot be deleted. In order to delete the subnet, delete all the resources within the subnet.",
                        id.rsplit('/').next().unwrap_or(&id)
                    ),
                ))
            }
            None => Ok(()),
        }
    }

    fn nat_gateway(&mut self, id: &str, body: &mut Value) -> Result<(), Reply> {
        let sku = str_at(body, &["sku", "name"]).unwrap_or("Standard");
        if sku != "Standard" && sku != "StandardV2" {
            return Err(bad("InvalidNatGatewaySku", format!("NAT gateway {id} has sku '{sku}'; only 'Standard' is supported.")));
        }
        if body.get("sku").is_none() {
            body["sku"] = json!({"name": "Standard"});
        }
        let zones = body.get("zones").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
        if zones > 1 {
            return Err(bad(
                "NatGatewayCannotHaveMultipleZones",
                format!(
                    "NAT gateway {id} specifies {zones} availability zones; a NAT gateway is a zonal resource and takes at most one zone."
                ),
            ));
        }
        if let Some(t) = body["properties"].get("idleTimeoutInMinutes").and_then(Value::as_i64)
            && !(4..=120).contains(&t)
        {
            return Err(bad(
                "InvalidIdleTimeoutInMinutes",
                format!("The idle timeout of NAT gateway {id} must be between 4 and 120 minutes, not {t}."),
            ));
        }
        for ip in ref_ids(body, &["properties", "publicIpAddresses"]) {
            self.reference(Some(&ip), "publicIpAddresses", id)?;
            let sku = self.resources.get(&ip).and_then(|e| str_at(&e.json, &["sku", "name"]).map(str::to_owned)).unwrap_or_default();
            if sku != "Standard" {
                return Err(bad(
                    "NatGatewayPublicIpSkuNotStandard",
                    format!("Public IP {ip} must have the Standard sku to be used by NAT gateway {id}."),
                ));
            }
        }
        Ok(())
    }

    fn public_ip(&mut self, body: &mut Value, existing: Option<&Value>) -> Result<(), Reply> {
        let sku = str_at(body, &["sku", "name"]).unwrap_or("Standard").to_owned();
        let method = str_at(body, &["properties", "publicIPAllocationMethod"])
            .unwrap_or(if sku == "Standard" { "Static" } else { "Dynamic" })
            .to_owned();
        if sku == "Standard" && method != "Static" {
            return Err(bad("StandardSkuPublicIPAddressesMustBeStatic", "Standard sku publicIp must have AllocationMethod set to Static."));
        }
        body["sku"] = json!({"name": sku, "tier": "Regional"});
        body["properties"]["publicIPAllocationMethod"] = json!(method);
        body["properties"]["publicIPAddressVersion"] = json!(str_at(body, &["properties", "publicIPAddressVersion"]).unwrap_or("IPv4"));
        let ip = match existing.and_then(|e| str_at(e, &["properties", "ipAddress"])) {
            Some(ip) => ip.to_owned(),
            None => {
                let n = super::splitmix(&mut self.rng);
                format!("20.{}.{}.{}", (n >> 8) & 0xff, (n >> 16) & 0xff, 1 + (n & 0xfd))
            }
        };
        body["properties"]["ipAddress"] = json!(ip);
        Ok(())
    }

    /// A zone's link names an existing VNet; `registrationEnabled` is a flag (false when
    /// left out).
    fn virtual_network_link(&mut self, id: &str, body: &mut Value) -> Result<(), Reply> {
        let Some(vnet) = str_at(body, &["properties", "virtualNetwork", "id"]).map(str::to_owned) else {
            return Err(bad("BadRequest", format!("Virtual network link {id} needs properties.virtualNetwork.id.")));
        };
        if !vnet.to_ascii_lowercase().contains("/providers/microsoft.network/virtualnetworks/") || !self.exists(&vnet) {
            return Err(bad(
                "BadRequest",
                format!("Virtual network link {id}: the virtual network {vnet} does not exist; link an existing virtual network."),
            ));
        }
        match body["properties"].get("registrationEnabled") {
            None => body["properties"]["registrationEnabled"] = json!(false),
            Some(Value::Bool(_)) => {}
            Some(other) => {
                return Err(bad("BadRequest", format!("Virtual network link {id}: registrationEnabled {other} is not a boolean.")));
            }
        }
        body["properties"]["virtualNetworkLinkState"] = json!("Completed");
        Ok(())
    }

    /// A private endpoint's zone group names one to five existing private DNS zones.
    fn zone_group(&mut self, id: &str, body: &mut Value) -> Result<(), Reply> {
        let configs = body["properties"]["privateDnsZoneConfigs"].as_array().cloned().unwrap_or_default();
        if configs.is_empty() || configs.len() > 5 {
            return Err(bad("InvalidRequestFormat", format!("Private DNS zone group {id} needs 1-5 privateDnsZoneConfigs.")));
        }
        for c in &configs {
            let zone = str_at(c, &["properties", "privateDnsZoneId"]).unwrap_or_default();
            if !zone.to_ascii_lowercase().contains("/providers/microsoft.network/privatednszones/") || !self.exists(zone) {
                return Err(bad(
                    "InvalidPrivateDnsZoneIds",
                    format!("Private DNS zone group {id}: private DNS zone '{zone}' does not exist or is not a private DNS zone."),
                ));
            }
        }
        Ok(())
    }

    fn private_endpoint(&mut self, id: &str, body: &mut Value) -> Result<(), Reply> {
        let Some(subnet) = str_at(body, &["properties", "subnet", "id"]).map(str::to_owned) else {
            return Err(bad("InvalidRequestFormat", format!("Private endpoint {id} needs properties.subnet.id.")));
        };
        self.reference(Some(&subnet), "subnet", id)?;
        let conns = body["properties"]["privateLinkServiceConnections"].as_array().cloned().unwrap_or_default();
        if conns.is_empty() {
            return Err(bad("InvalidRequestFormat", format!("Private endpoint {id} needs at least one privateLinkServiceConnection.")));
        }
        for c in &conns {
            let target = str_at(c, &["properties", "privateLinkServiceId"]);
            if target.is_none() {
                return Err(bad(
                    "InvalidRequestFormat",
                    format!("A privateLinkServiceConnection of private endpoint {id} needs properties.privateLinkServiceId."),
                ));
            }
            self.reference(target, "privateLinkServiceId", id)?;
            // A storage account offers the sub-resources blob, dfs, file, queue, table, web.
            let groups: Vec<String> = c["properties"]["groupIds"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            let storage = target.is_some_and(|t| t.to_ascii_lowercase().contains("/providers/microsoft.storage/storageaccounts/"));
            if storage && (groups.len() != 1 || !["blob", "dfs", "file", "queue", "table", "web"].contains(&groups[0].as_str())) {
                return Err(bad(
                    "PrivateEndpointBadRequest",
                    format!(
                        "Private endpoint {id}: groupIds {groups:?} is not a single valid sub-resource of the storage account (blob, dfs, file, queue, table, web)."
                    ),
                ));
            }
        }
        Ok(())
    }

    fn managed_cluster(&mut self, id: &str, key: &str, name: &str, body: &mut Value, existing: Option<&Value>) -> Result<(), Reply> {
        let invalid =
            |target: &str, message: String| bad("InvalidParameter", format!("The value of parameter {target} is invalid: {message}"));
        // Identity: system- or user-assigned; the user-assigned ones must exist.
        let id_type = str_at(body, &["identity", "type"]).unwrap_or("").to_owned();
        match id_type.as_str() {
            "SystemAssigned" => {
                let principal = match existing.and_then(|e| str_at(e, &["identity", "principalId"])) {
                    Some(p) => p.to_owned(),
                    None => self.new_principal(),
                };
                body["identity"]["principalId"] = json!(principal);
                body["identity"]["tenantId"] = json!(self.opts.tenant);
            }
            "UserAssigned" => {
                let keys: Vec<String> =
                    body["identity"]["userAssignedIdentities"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
                if keys.len() != 1 {
                    return Err(invalid(
                        "identity.userAssignedIdentities",
                        "exactly one user-assigned identity is supported for the control plane".into(),
                    ));
                }
                for k in keys {
                    let Some(uami) = self.resources.get(&k.to_ascii_lowercase()) else {
                        return Err(invalid("identity.userAssignedIdentities", format!("the user-assigned identity {k} was not found")));
                    };
                    let detail =
                        json!({"principalId": uami.json["properties"]["principalId"], "clientId": uami.json["properties"]["clientId"]});
                    body["identity"]["userAssignedIdentities"][&k] = detail;
                }
            }
            other => return Err(invalid("identity.type", format!("'{other}'; use SystemAssigned or UserAssigned"))),
        }
        let props = &body["properties"];
        let dns_prefix = str_at(props, &["dnsPrefix"]).unwrap_or("").to_owned();
        let dns_ok = (1..=54).contains(&dns_prefix.len())
            && dns_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && dns_prefix.starts_with(|c: char| c.is_ascii_alphanumeric())
            && dns_prefix.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !dns_ok {
            return Err(invalid(
                "properties.dnsPrefix",
                format!("'{dns_prefix}': it must be 1-54 letters, digits and hyphens, starting and ending with a letter or digit"),
            ));
        }
        if let Some(old) = existing.and_then(|e| str_at(e, &["properties", "dnsPrefix"]))
            && old != dns_prefix
        {
            return Err(bad(
                "PropertyChangeNotAllowed",
                format!("Changing property 'dnsPrefix' is not allowed (from '{old}' to '{dns_prefix}')."),
            ));
        }
        // Agent pools: on create at least one, and at least one System pool.
        let mut pools = props["agentPoolProfiles"].as_array().cloned().unwrap_or_default();
        if existing.is_none() {
            if pools.is_empty() {
                return Err(invalid("properties.agentPoolProfiles", "at least one agent pool is required".into()));
            }
            if !pools.iter().any(|p| str_at(p, &["mode"]) == Some("System")) {
                return Err(bad("MustDefineAtLeastOneSystemPool", "Must define at least one system pool."));
            }
        }
        for p in &mut pools {
            let pname = str_at(p, &["name"]).unwrap_or("").to_owned();
            rules::name("microsoft.containerservice/managedclusters/agentpools", &pname).map_err(|(c, m)| bad(c, m))?;
            let existing_pool = self.resources.contains_key(&format!("{key}/agentpools/{}", pname.to_ascii_lowercase()));
            self.agent_pool(&format!("{id}/agentPools/{pname}"), &pname, Some(p), !existing_pool)?;
        }
        body["properties"]["agentPoolProfiles"] = Value::Array(pools);
        // Network profile.
        let np = body["properties"]["networkProfile"].clone();
        let service_cidr = str_at(&np, &["serviceCidr"]).unwrap_or("10.0.0.0/16").to_owned();
        let dns_ip = str_at(&np, &["dnsServiceIP"]).unwrap_or("10.0.0.10").to_owned();
        let svc = rules::cidr(&service_cidr)
            .ok_or_else(|| invalid("networkProfile.serviceCidr", format!("'{service_cidr}' is not a valid CIDR")))?;
        if !rules::contains_ip(svc, &dns_ip) {
            return Err(invalid(
                "networkProfile.dnsServiceIP",
                format!("'{dns_ip}' must be within the service address range networkProfile.serviceCidr '{service_cidr}'"),
            ));
        }
        if dns_ip.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| u32::from(ip) == svc.0) {
            return Err(invalid(
                "networkProfile.dnsServiceIP",
                format!("'{dns_ip}' is the network address of {service_cidr}; it cannot be the DNS service IP"),
            ));
        }
        // The service range may not overlap the cluster's subnets.
        for p in body["properties"]["agentPoolProfiles"].as_array().cloned().unwrap_or_default() {
            if let Some(sid) = str_at(&p, &["vnetSubnetID"])
                && let Some(s) = self.resources.get(&sid.to_ascii_lowercase())
                && let Some(snet) = subnet_prefix(&s.json["properties"]).and_then(|x| rules::cidr(&x))
                && rules::overlap(svc, snet)
            {
                return Err(bad(
                    "ServiceCidrOverlapExistingSubnetsCidr",
                    format!(
                        "The specified service CIDR {service_cidr} is conflicted with an existing subnet CIDR {}.",
                        subnet_prefix(&s.json["properties"]).unwrap_or_default()
                    ),
                ));
            }
        }
        // userAssignedNATGateway: every pool's subnet must already have a NAT gateway.
        if str_at(&np, &["outboundType"]) == Some("userAssignedNATGateway") {
            for p in body["properties"]["agentPoolProfiles"].as_array().cloned().unwrap_or_default() {
                let pool = str_at(&p, &["name"]).unwrap_or("").to_owned();
                let Some(sid) = str_at(&p, &["vnetSubnetID"]) else {
                    return Err(invalid(
                        "networkProfile.outboundType",
                        format!("userAssignedNATGateway needs agent pool '{pool}' in a custom subnet (vnetSubnetID)"),
                    ));
                };
                let has_nat = self
                    .resources
                    .get(&sid.to_ascii_lowercase())
                    .is_some_and(|s| str_at(&s.json, &["properties", "natGateway", "id"]).is_some());
                if !has_nat {
                    return Err(invalid(
                        "networkProfile.outboundType",
                        format!("userAssignedNATGateway needs a NAT gateway associated with subnet {sid} of agent pool '{pool}'"),
                    ));
                }
            }
        }
        body["properties"]["networkProfile"]["serviceCidr"] = json!(service_cidr);
        body["properties"]["networkProfile"]["dnsServiceIP"] = json!(dns_ip);
        // API server VNet integration needs an existing subnet.
        if body["properties"]["apiServerAccessProfile"]["enableVnetIntegration"].as_bool() == Some(true) {
            let Some(sid) = str_at(&body["properties"], &["apiServerAccessProfile", "subnetId"]).map(str::to_owned) else {
                return Err(invalid("apiServerAccessProfile.subnetId", "a subnet is required when enableVnetIntegration is true".into()));
            };
            let Some(subnet) = self.resources.get(&sid.to_ascii_lowercase()) else {
                return Err(invalid("apiServerAccessProfile.subnetId", format!("subnet {sid} was not found")));
            };
            // The API server subnet is delegated to AKS and at least a /28.
            let delegated = subnet.json["properties"]["delegations"].as_array().is_some_and(|d| {
                d.iter().any(|x| {
                    str_at(x, &["properties", "serviceName"])
                        .is_some_and(|s| s.eq_ignore_ascii_case("Microsoft.ContainerService/managedClusters"))
                })
            });
            if !delegated {
                return Err(invalid(
                    "apiServerAccessProfile.subnetId",
                    format!("subnet {sid} must be delegated to Microsoft.ContainerService/managedClusters"),
                ));
            }
            if subnet_prefix(&subnet.json["properties"]).and_then(|p| rules::cidr(&p)).is_some_and(|(_, len)| len > 28) {
                return Err(invalid("apiServerAccessProfile.subnetId", format!("subnet {sid} must be at least a /28")));
            }
        }
        // Read-only fields the service fills in.
        let location = str_at(body, &["location"]).unwrap_or(&self.opts.location).to_owned();
        let rg = id.split('/').nth(4).unwrap_or("").to_owned();
        let node_rg = match existing.and_then(|e| str_at(e, &["properties", "nodeResourceGroup"])) {
            Some(n) => n.to_owned(),
            None => str_at(body, &["properties", "nodeResourceGroup"])
                .map(str::to_owned)
                .unwrap_or_else(|| format!("MC_{rg}_{name}_{location}")),
        };
        body["properties"]["nodeResourceGroup"] = json!(node_rg);
        let suffix = match existing.and_then(|e| str_at(e, &["properties", "fqdn"])) {
            Some(f) => f.split('.').next().and_then(|h| h.rsplit('-').next()).unwrap_or("00000000").to_owned(),
            None => format!("{:08x}", super::splitmix(&mut self.rng) & 0xffff_ffff),
        };
        body["properties"]["fqdn"] = json!(format!("{dns_prefix}-{suffix}.hcp.{location}.azmk8s.io"));
        if body["properties"].get("kubernetesVersion").is_none() {
            body["properties"]["kubernetesVersion"] = json!("1.31");
        }
        body["properties"]["currentKubernetesVersion"] = body["properties"]["kubernetesVersion"].clone();
        body["properties"]["powerState"] = json!({"code": "Running"});
        if body["properties"]["oidcIssuerProfile"]["enabled"].as_bool() == Some(true) {
            let issuer = match existing.and_then(|e| str_at(e, &["properties", "oidcIssuerProfile", "issuerURL"])) {
                Some(i) => i.to_owned(),
                None => {
                    let g = self.guid();
                    format!("https://{location}.oic.prod-aks.azure.com/{}/{g}/", self.opts.tenant)
                }
            };
            body["properties"]["oidcIssuerProfile"]["issuerURL"] = json!(issuer);
        } else if let Some(p) = body["properties"].get_mut("oidcIssuerProfile").and_then(Value::as_object_mut) {
            if existing.and_then(|e| e["properties"]["oidcIssuerProfile"]["enabled"].as_bool()) == Some(true) {
                return Err(bad("OIDCIssuerFeatureCannotBeDisabled", "OIDC issuer feature cannot be disabled once enabled."));
            }
            p.remove("issuerURL");
        }
        // The kubelet identity lives in the node resource group, made by the service.
        let kubelet = match existing.and_then(|e| e["properties"]["identityProfile"].get("kubeletidentity").cloned()) {
            Some(k) => k,
            None => {
                let kid = format!(
                    "/subscriptions/{}/resourcegroups/{node_rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}-agentpool",
                    self.opts.subscription
                );
                let client = self.guid();
                json!({"resourceId": kid, "clientId": client, "objectId": self.new_principal()})
            }
        };
        body["properties"]["identityProfile"] = json!({"kubeletidentity": kubelet});
        Ok(())
    }

    fn agent_pool(&mut self, id: &str, name: &str, props: Option<&mut Value>, creating: bool) -> Result<(), Reply> {
        let invalid = |target: &str, message: String| {
            bad("InvalidParameter", format!("The value of parameter agentPoolProfile.{target} is invalid: {message} (agent pool {name})."))
        };
        let Some(p) = props else { return Ok(()) };
        if creating && str_at(p, &["vmSize"]).is_none() {
            return Err(invalid("vmSize", "a VM size is required".into()));
        }
        let mode = str_at(p, &["mode"]).unwrap_or("User").to_owned();
        if mode != "System" && mode != "User" {
            return Err(invalid("mode", format!("'{mode}'; use System or User")));
        }
        p["mode"] = json!(mode);
        let auto = p["enableAutoScaling"].as_bool() == Some(true);
        let count = p["count"].as_i64().unwrap_or(if auto { p["minCount"].as_i64().unwrap_or(1) } else { 1 });
        let (min, max) = if mode == "System" { (1, 1000) } else { (0, 1000) };
        if count < min || count > max {
            return Err(invalid("count", format!("{count}; a {mode} pool takes {min} to {max} nodes")));
        }
        if auto {
            let (lo, hi) = (p["minCount"].as_i64(), p["maxCount"].as_i64());
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo <= hi && lo >= min && hi <= 1000 && (lo..=hi).contains(&count) => {}
                _ => return Err(invalid("minCount", "with enableAutoScaling, minCount <= count <= maxCount is required".into())),
            }
        }
        p["count"] = json!(count);
        if let Some(sid) = str_at(p, &["vnetSubnetID"]).map(str::to_owned)
            && !self.exists(&sid)
        {
            return Err(invalid("vnetSubnetID", format!("subnet {sid} was not found")));
        }
        for t in p["nodeTaints"].as_array().cloned().unwrap_or_default() {
            let t = t.as_str().unwrap_or("");
            let ok = t.split_once(':').is_some_and(|(kv, effect)| {
                ["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
                    && kv.split_once('=').map_or(!kv.is_empty(), |(k, _)| !k.is_empty())
            });
            if !ok {
                return Err(invalid(
                    "nodeTaints",
                    format!("'{t}': a taint is key=value:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute"),
                ));
            }
        }
        if let Some(z) = p.get("availabilityZones").and_then(Value::as_array)
            && z.iter().any(|z| !matches!(z.as_str(), Some("1" | "2" | "3")))
        {
            return Err(invalid("availabilityZones", "zones are '1', '2' or '3'".into()));
        }
        if let Some(o) = p.as_object_mut() {
            o.insert("osType".into(), json!(o.get("osType").and_then(Value::as_str).unwrap_or("Linux")));
        }
        let _ = id;
        Ok(())
    }

    fn storage_account(&mut self, key: &str, name: &str, body: &mut Value, existing: Option<&Value>) -> Result<(), Reply> {
        // Storage account names are global: another subscription's or group's account
        // with the name takes it.
        let taken = self.resources.iter().any(|(k, e)| {
            e.kind == "microsoft.storage/storageaccounts"
                && k != key
                && str_at(&e.json, &["name"]).is_some_and(|n| n.eq_ignore_ascii_case(name))
        });
        if taken {
            return Err(error(409, "StorageAccountAlreadyTaken", format!("The storage account named {name} is already taken.")));
        }
        let kind = str_at(body, &["kind"]).unwrap_or("").to_owned();
        if !["StorageV2", "BlobStorage", "BlockBlobStorage", "FileStorage", "Storage"].contains(&kind.as_str()) {
            return Err(bad("InvalidRequestPropertyValue", format!("The value '{kind}' is not allowed for property kind.")));
        }
        let sku = str_at(body, &["sku", "name"]).unwrap_or("").to_owned();
        let skus = [
            "Standard_LRS",
            "Standard_GRS",
            "Standard_RAGRS",
            "Standard_ZRS",
            "Premium_LRS",
            "Premium_ZRS",
            "Standard_GZRS",
            "Standard_RAGZRS",
        ];
        if !skus.contains(&sku.as_str()) {
            return Err(bad("InvalidRequestPropertyValue", format!("The value '{sku}' is not allowed for property sku.name.")));
        }
        if let Some(old) = existing.and_then(|e| str_at(e, &["kind"]))
            && old != kind
        {
            return Err(bad(
                "InvalidRequestPropertyValue",
                format!("Changing the kind of storage account {name} from {old} to {kind} is not supported."),
            ));
        }
        body["sku"]["tier"] = json!(if sku.starts_with("Premium") { "Premium" } else { "Standard" });
        let location = str_at(body, &["location"]).unwrap_or("").to_owned();
        let p = &mut body["properties"];
        p["primaryEndpoints"] = json!({
            "blob": format!("https://{name}.blob.core.windows.net/"),
            "dfs": format!("https://{name}.dfs.core.windows.net/"),
            "queue": format!("https://{name}.queue.core.windows.net/"),
            "table": format!("https://{name}.table.core.windows.net/"),
            "file": format!("https://{name}.file.core.windows.net/"),
            "web": format!("https://{name}.z13.web.core.windows.net/"),
        });
        p["primaryLocation"] = json!(location);
        p["statusOfPrimary"] = json!("available");
        p["creationTime"] =
            json!(existing.and_then(|e| str_at(e, &["properties", "creationTime"]).map(str::to_owned)).unwrap_or_else(super::now));
        if p.get("minimumTlsVersion").is_none() {
            p["minimumTlsVersion"] = json!("TLS1_0");
        }
        if p.get("allowBlobPublicAccess").is_none() {
            p["allowBlobPublicAccess"] = json!(false);
        }
        Ok(())
    }

    fn identity(&mut self, body: &mut Value, existing: Option<&Value>) {
        let keep = |field: &str| existing.and_then(|e| str_at(e, &["properties", field])).map(str::to_owned);
        let principal = keep("principalId").unwrap_or_else(|| self.new_principal());
        let client = keep("clientId").unwrap_or_else(|| self.guid());
        body["properties"] = json!({"tenantId": self.opts.tenant, "principalId": principal, "clientId": client});
    }

    fn federated_credential(&mut self, key: &str, body: &mut Value) -> Result<(), Reply> {
        let props = &body["properties"];
        let issuer = str_at(props, &["issuer"]).unwrap_or("");
        if !issuer.starts_with("https://") {
            return Err(bad("BadRequest", format!("The issuer '{issuer}' of a federated identity credential must be an https URL.")));
        }
        let subject = str_at(props, &["subject"]).unwrap_or("");
        if subject.is_empty() || subject.len() > 600 {
            return Err(bad("BadRequest", "The subject of a federated identity credential is required (at most 600 characters)."));
        }
        let audiences = props["audiences"].as_array().map(Vec::len).unwrap_or(0);
        if audiences != 1 {
            return Err(bad("BadRequest", format!("A federated identity credential takes exactly one audience, not {audiences}.")));
        }
        let parent = super::key_prefix(key, 2);
        let prefix = format!("{parent}/federatedidentitycredentials/");
        let siblings: Vec<&Entry> =
            self.resources.iter().filter(|(k, _)| k.starts_with(&prefix) && k.as_str() != key).map(|(_, e)| e).collect();
        if siblings.len() >= 20 && !self.resources.contains_key(key) {
            return Err(bad("BadRequest", "A user-assigned identity takes at most 20 federated identity credentials."));
        }
        for s in siblings {
            if str_at(&s.json, &["properties", "issuer"]) == Some(issuer) && str_at(&s.json, &["properties", "subject"]) == Some(subject) {
                return Err(error(
                    409,
                    "Conflict",
                    format!(
                        "A federated identity credential with issuer '{issuer}' and subject '{subject}' already exists on this identity ({}).",
                        str_at(&s.json, &["name"]).unwrap_or("")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Side effects of a stored PUT (children made with the parent).
    pub(super) fn after_put(&mut self, kind: &Kind, id: &str, key: &str, _name: &str) -> Result<(), Reply> {
        match kind.key {
            "microsoft.network/virtualnetworks" => {
                let body = self.resources.get(key).map(|e| e.json.clone()).unwrap_or(Value::Null);
                self.sync_subnets(id, key, &body);
            }
            "microsoft.containerservice/managedclusters" => {
                let body = self.resources.get(key).map(|e| e.json.clone()).unwrap_or(Value::Null);
                for p in body["properties"]["agentPoolProfiles"].as_array().cloned().unwrap_or_default() {
                    let Some(pname) = p.get("name").and_then(Value::as_str).map(str::to_owned) else { continue };
                    let pid = format!("{id}/agentPools/{pname}");
                    let etag = self.new_etag("microsoft.containerservice/managedclusters/agentpools");
                    let mut props = p.clone();
                    if let Some(o) = props.as_object_mut() {
                        o.remove("name");
                    }
                    props["provisioningState"] = json!("Succeeded");
                    let json = json!({"id": pid, "name": pname, "type": "Microsoft.ContainerService/managedClusters/agentPools", "etag": etag, "properties": props});
                    self.resources.insert(
                        pid.to_ascii_lowercase(),
                        Entry { json, kind: "microsoft.containerservice/managedclusters/agentpools", op: None },
                    );
                }
                if let Some(p) = self.resources.get_mut(key).and_then(|e| e.json.get_mut("properties")).and_then(Value::as_object_mut) {
                    p.remove("agentPoolProfiles");
                }
                // The node resource group, managed by the cluster.
                let node_rg = str_at(&body, &["properties", "nodeResourceGroup"]).unwrap_or("").to_owned();
                let rg_key = self.rg_key(&node_rg);
                if !node_rg.is_empty() && !self.resources.contains_key(&rg_key) {
                    let location = str_at(&body, &["location"]).unwrap_or("").to_owned();
                    let json = json!({"id": format!("/subscriptions/{}/resourceGroups/{node_rg}", self.opts.subscription), "name": node_rg, "type": "Microsoft.Resources/resourceGroups", "location": location, "managedBy": id, "tags": {}, "properties": {"provisioningState": "Succeeded"}});
                    self.resources.insert(rg_key, Entry { json, kind: super::RG_KIND, op: None });
                }
            }
            "microsoft.storage/storageaccounts" => {
                let bid = format!("{id}/blobServices/default");
                self.resources.entry(bid.to_ascii_lowercase()).or_insert_with(|| {
                    let json = json!({"id": bid, "name": "default", "type": "Microsoft.Storage/storageAccounts/blobServices", "properties": {"deleteRetentionPolicy": {"enabled": false}}});
                    Entry { json, kind: "microsoft.storage/storageaccounts/blobservices", op: None }
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether a resource may be deleted now.
    pub(super) fn check_delete(&self, kind: &Kind, key: &str) -> Result<(), Reply> {
        match kind.key {
            "microsoft.network/virtualnetworks/subnets" => self.check_subnet_unused(key),
            "microsoft.network/virtualnetworks" => {
                let prefix = format!("{key}/subnets/");
                for k in self.resources.keys().filter(|k| k.starts_with(&prefix)) {
                    if let Some(user) = self.subnet_user(k) {
                        return Err(bad(
                            "InUseSubnetCannotBeDeleted",
                            format!("Subnet {} is in use by {user} and cannot be deleted.", k.rsplit('/').next().unwrap_or(k)),
                        ));
                    }
                }
                Ok(())
            }
            "microsoft.network/natgateways" | "microsoft.network/networksecuritygroups" => {
                for e in self.resources.values().filter(|e| e.kind == "microsoft.network/virtualnetworks/subnets") {
                    let field = if kind.key.ends_with("natgateways") { "natGateway" } else { "networkSecurityGroup" };
                    if str_at(&e.json, &["properties", field, "id"]).is_some_and(|i| i.eq_ignore_ascii_case(key)) {
                        return Err(bad(
                            if field == "natGateway" {
                                "InUseNatGatewayCannotBeDeleted"
                            } else {
                                "InUseNetworkSecurityGroupCannotBeDeleted"
                            },
                            format!("{key} is in use by subnet {} and cannot be deleted.", str_at(&e.json, &["id"]).unwrap_or("")),
                        ));
                    }
                }
                Ok(())
            }
            "microsoft.network/publicipaddresses" => {
                for e in self.resources.values().filter(|e| e.kind == "microsoft.network/natgateways") {
                    if ref_ids(&e.json, &["properties", "publicIpAddresses"]).iter().any(|i| i == key) {
                        return Err(bad(
                            "PublicIPAddressInUse",
                            format!(
                                "Public IP address {key} is in use by {} and cannot be deleted.",
                                str_at(&e.json, &["id"]).unwrap_or("")
                            ),
                        ));
                    }
                }
                Ok(())
            }
            "microsoft.containerservice/managedclusters/agentpools" => {
                let Some(me) = self.resources.get(key) else { return Ok(()) };
                if str_at(&me.json, &["properties", "mode"]) != Some("System") {
                    return Ok(());
                }
                let prefix = format!("{}/agentpools/", super::key_prefix(key, 2));
                let others = self
                    .resources
                    .iter()
                    .filter(|(k, e)| {
                        k.starts_with(&prefix) && k.as_str() != key && str_at(&e.json, &["properties", "mode"]) == Some("System")
                    })
                    .count();
                if others == 0 {
                    return Err(bad(
                        "OperationNotAllowed",
                        "Cannot delete the last system agent pool of a cluster: a cluster needs at least one system pool.",
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // ------------------------------------------------------------------ role assignments

    /// A new principal (object) id; with a replication delay set, role assignments naming it
    /// without `principalType` fail that many times first.
    fn new_principal(&mut self) -> String {
        let id = self.guid();
        if self.replication_delay > 0 {
            self.replicating.insert(id.clone(), self.replication_delay);
        }
        id
    }

    /// Every principal the directory knows: the caller, identities, clusters and kubelets.
    fn principal_known(&self, principal: &str) -> bool {
        if principal.eq_ignore_ascii_case(super::CALLER_PRINCIPAL_ID) {
            return true;
        }
        self.resources.values().any(|e| {
            let j = &e.json;
            [
                str_at(j, &["properties", "principalId"]),
                str_at(j, &["identity", "principalId"]),
                str_at(j, &["properties", "identityProfile", "kubeletidentity", "objectId"]),
            ]
            .into_iter()
            .flatten()
            .any(|p| p.eq_ignore_ascii_case(principal))
        })
    }

    /// Role assignments and definitions at any scope.
    pub(super) fn authorization(&mut self, req: &Req, scope: &[String], rest: &[String], lower: &[String]) -> Answer {
        let scope_id = format!("/{}", scope.join("/"));
        let scope_key = scope_id.to_ascii_lowercase();
        // The scope must exist (the subscription always does).
        if scope.len() > 2 && !self.resources.contains_key(&scope_key) {
            if scope.len() == 4 {
                return Err(error(404, "ResourceGroupNotFound", format!("Resource group '{}' could not be found.", scope[3])));
            }
            return Err(error(404, "ResourceNotFound", format!("The Resource '{scope_id}' was not found.")));
        }
        match lower.first().map(String::as_str) {
            Some("roledefinitions") => self.role_definitions(req, &scope_id, rest),
            Some("roleassignments") => match (req.method.as_str(), rest.len()) {
                ("GET", 1) => self.list_assignments(req, &scope_key),
                ("GET", 2) => {
                    let key = format!("{scope_key}/providers/microsoft.authorization/roleassignments/{}", lower[1]);
                    match self.resources.get(&key) {
                        Some(e) => Ok(Reply::json(200, e.json.clone())),
                        None => Err(error(404, "RoleAssignmentNotFound", format!("The role assignment '{}' is not found.", rest[1]))),
                    }
                }
                ("PUT", 2) => self.put_assignment(req, &scope_id, &scope_key, &rest[1]),
                ("DELETE", 2) => {
                    let key = format!("{scope_key}/providers/microsoft.authorization/roleassignments/{}", lower[1]);
                    self.authorize(&key, true)?;
                    match self.resources.remove(&key) {
                        Some(e) => Ok(Reply::json(200, e.json)),
                        None => Ok(Reply::empty(204)),
                    }
                }
                _ => Err(error(405, "MethodNotAllowed", format!("{} is not allowed on {}.", req.method, req.path))),
            },
            _ => Err(error(
                400,
                "InvalidResourceType",
                format!(
                    "The resource type '{}' could not be found in the namespace 'Microsoft.Authorization'.",
                    rest.first().map(String::as_str).unwrap_or("")
                ),
            )),
        }
    }

    fn role_definitions(&self, req: &Req, scope_id: &str, rest: &[String]) -> Answer {
        let def = |(rid, name): &(&str, &str)| json!({"id": format!("{scope_id}/providers/Microsoft.Authorization/roleDefinitions/{rid}"), "name": rid, "type": "Microsoft.Authorization/roleDefinitions", "properties": {"roleName": name, "type": "BuiltInRole", "assignableScopes": ["/"]}});
        if req.method != "GET" {
            return Err(error(405, "MethodNotAllowed", "Only built-in role definitions exist in the fake; they cannot be written."));
        }
        if let Some(rid) = rest.get(1) {
            return match ROLE_DEFINITIONS.iter().find(|(r, _)| r.eq_ignore_ascii_case(rid)) {
                Some(d) => Ok(Reply::json(200, def(d))),
                None => {
                    Err(error(404, "RoleDefinitionDoesNotExist", format!("The specified role definition with ID '{rid}' does not exist.")))
                }
            };
        }
        let filter = super::query_param(&req.query, "$filter").unwrap_or_default();
        let wanted = filter.split_once("roleName eq '").and_then(|(_, r)| r.split_once('\'')).map(|(n, _)| n.to_owned());
        let all: Vec<Value> =
            ROLE_DEFINITIONS.iter().filter(|(_, n)| wanted.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(n))).map(def).collect();
        Ok(Reply::json(200, json!({"value": all})))
    }

    fn list_assignments(&self, req: &Req, scope_key: &str) -> Answer {
        let filter = super::query_param(&req.query, "$filter").unwrap_or_default();
        let at_scope = filter.contains("atScope()");
        let principal = filter.split_once("principalId eq '").and_then(|(_, r)| r.split_once('\'')).map(|(p, _)| p.to_ascii_lowercase());
        let callers = self.caller_assignments();
        let all: Vec<Value> = self
            .resources
            .values()
            .filter(|e| e.kind == RA_KIND)
            .map(|e| &e.json)
            .chain(callers.iter())
            .filter(|json| {
                let s = str_at(json, &["properties", "scope"]).unwrap_or("").to_ascii_lowercase();
                // atScope(): at or above the scope; otherwise also below it.
                let above = super::covers(&s, scope_key);
                let below = super::covers(scope_key, &s);
                (above || (!at_scope && below))
                    && principal
                        .as_deref()
                        .is_none_or(|p| str_at(json, &["properties", "principalId"]).is_some_and(|x| x.eq_ignore_ascii_case(p)))
            })
            .cloned()
            .collect();
        Ok(Reply::json(200, json!({"value": all})))
    }

    /// The caller's own role assignments, as the subscription's administrator made them
    /// before byoc ran: those of [`Options::caller_roles`], or Owner on the subscription when
    /// it is `None` (the fake then lets the caller do everything, as an Owner may). Listed,
    /// not stored, so snapshots show only what clients wrote.
    fn caller_assignments(&self) -> Vec<Value> {
        let sub = format!("/subscriptions/{}", self.opts.subscription);
        let roles: Vec<(String, String)> = match &self.opts.caller_roles {
            Some(r) => r.clone(),
            None => vec![(sub.clone(), super::OWNER.to_owned())],
        };
        roles
            .iter()
            .enumerate()
            .map(|(i, (scope, role))| {
                let name = format!("00000000-0000-4000-8000-{i:012}");
                json!({
                    "id": format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
                    "name": name,
                    "type": "Microsoft.Authorization/roleAssignments",
                    "properties": {
                        "roleDefinitionId": format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{}", super::last_segment(role)),
                        "principalId": super::CALLER_PRINCIPAL_ID,
                        "principalType": "ServicePrincipal",
                        "scope": scope,
                    }
                })
            })
            .collect()
    }

    fn put_assignment(&mut self, req: &Req, scope_id: &str, scope_key: &str, name: &str) -> Answer {
        rules::name(RA_KIND, name).map_err(|(c, m)| bad(c, m))?;
        let key = format!("{scope_key}/providers/microsoft.authorization/roleassignments/{}", name.to_ascii_lowercase());
        self.authorize(&key, true)?;
        let body = super::parse_body(&req.body)?;
        let props = &body["properties"];
        let role = str_at(props, &["roleDefinitionId"]).unwrap_or("").to_owned();
        let role_guid = super::last_segment(&role).to_ascii_lowercase();
        if !ROLE_DEFINITIONS.iter().any(|(r, _)| *r == role_guid) {
            return Err(bad("RoleDefinitionDoesNotExist", format!("The specified role definition with ID '{role_guid}' does not exist.")));
        }
        let principal = str_at(props, &["principalId"]).unwrap_or("").to_owned();
        if !rules::is_guid(&principal) {
            return Err(bad("InvalidPrincipalId", format!("The principal ID '{principal}' is not a valid GUID.")));
        }
        // A principal made moments ago is not yet replicated to where role assignments look
        // it up, unless principalType says what it is (then ARM does not look).
        let replicating = match self.replicating.get_mut(&principal.to_ascii_lowercase()) {
            Some(n) if *n > 0 && props.get("principalType").is_none() => {
                *n -= 1;
                true
            }
            _ => false,
        };
        if replicating || !self.principal_known(&principal) {
            return Err(bad(
                "PrincipalNotFound",
                format!(
                    "Principal {} does not exist in the directory {}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.",
                    principal.replace('-', ""),
                    self.opts.tenant
                ),
            ));
        }
        for (k, e) in &self.resources {
            if e.kind != RA_KIND {
                continue;
            }
            let same_scope = str_at(&e.json, &["properties", "scope"]).is_some_and(|s| s.eq_ignore_ascii_case(scope_id));
            let same_role = str_at(&e.json, &["properties", "roleDefinitionId"])
                .is_some_and(|r| super::last_segment(r).eq_ignore_ascii_case(&role_guid));
            let same_principal = str_at(&e.json, &["properties", "principalId"]).is_some_and(|p| p.eq_ignore_ascii_case(&principal));
            if *k == key {
                if !(same_role && same_principal) {
                    return Err(bad(
                        "RoleAssignmentUpdateNotPermitted",
                        "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
                    ));
                }
                return Ok(Reply::json(201, e.json.clone()));
            }
            if same_scope && same_role && same_principal {
                return Err(error(409, "RoleAssignmentExists", "The role assignment already exists."));
            }
        }
        let condition = str_at(props, &["condition"]).map(str::to_owned);
        let condition_version = str_at(props, &["conditionVersion"]).map(str::to_owned);
        match (&condition, condition_version.as_deref()) {
            (Some(_), Some("2.0")) | (None, None) => {}
            (Some(_), other) => {
                return Err(bad(
                    "InvalidConditionVersion",
                    format!("The condition version '{}' is not supported; conditions take conditionVersion '2.0'.", other.unwrap_or("")),
                ));
            }
            (None, Some(_)) => return Err(bad("InvalidCondition", "A conditionVersion was given without a condition.")),
        }
        let description = str_at(props, &["description"]).map(str::to_owned);
        let json = json!({
            "id": format!("{scope_id}/providers/Microsoft.Authorization/roleAssignments/{name}"),
            "name": name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}", self.opts.subscription),
                "principalId": principal,
                "principalType": str_at(props, &["principalType"]).unwrap_or("ServicePrincipal"),
                "scope": scope_id,
                "createdOn": super::now(),
                "createdBy": super::CALLER_PRINCIPAL_ID,
                "condition": condition,
                "conditionVersion": condition_version,
                "description": description,
            }
        });
        self.resources.insert(key, Entry { json: json.clone(), kind: RA_KIND, op: None });
        Ok(Reply::json(201, json))
    }
}

fn subnet_prefix(props: &Value) -> Option<String> {
    props.get("addressPrefix").and_then(Value::as_str).map(str::to_owned).or_else(|| {
        props.get("addressPrefixes").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str).map(str::to_owned)
    })
}

fn nsg(body: &Value) -> Result<(), Reply> {
    let rules = body["properties"]["securityRules"].as_array().cloned().unwrap_or_default();
    let mut seen: Vec<(String, i64)> = Vec::new();
    for r in &rules {
        let name = str_at(r, &["name"]).unwrap_or("");
        let p = &r["properties"];
        let priority = p["priority"].as_i64().unwrap_or(0);
        if !(100..=4096).contains(&priority) {
            return Err(bad(
                "SecurityRuleInvalidPriority",
                format!("Security rule {name} has invalid priority {priority}. Value provided: {priority}. Allowed range 100-4096."),
            ));
        }
        let direction = str_at(p, &["direction"]).unwrap_or("");
        if direction != "Inbound" && direction != "Outbound" {
            return Err(bad("SecurityRuleInvalidDirection", format!("Security rule {name} has invalid direction '{direction}'.")));
        }
        let access = str_at(p, &["access"]).unwrap_or("");
        if access != "Allow" && access != "Deny" {
            return Err(bad("SecurityRuleInvalidAccess", format!("Security rule {name} has invalid access '{access}'.")));
        }
        let protocol = str_at(p, &["protocol"]).unwrap_or("");
        if !["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"].contains(&protocol) {
            return Err(bad("SecurityRuleInvalidProtocol", format!("Security rule {name} has invalid protocol '{protocol}'.")));
        }
        if let Some((other, _)) = seen.iter().find(|(d, pr)| *d == direction && *pr == priority) {
            return Err(bad(
                "SecurityRuleConflict",
                format!("Security rule {name} conflicts with rule {other}. Rules cannot have the same Priority and Direction."),
            ));
        }
        seen.push((direction.to_owned(), priority));
        let _ = name;
    }
    Ok(())
}

fn container(body: &mut Value) -> Result<(), Reply> {
    let access = str_at(body, &["properties", "publicAccess"]).unwrap_or("None").to_owned();
    if !["None", "Blob", "Container"].contains(&access.as_str()) {
        return Err(bad("InvalidRequestPropertyValue", format!("The value '{access}' is not allowed for property publicAccess.")));
    }
    body["properties"]["publicAccess"] = json!(access);
    body["properties"]["hasImmutabilityPolicy"] = json!(false);
    body["properties"]["hasLegalHold"] = json!(false);
    Ok(())
}

/// `blobServices/default`: the settings the fake keeps must have their types.
fn blob_service(body: &mut Value) -> Result<(), Reply> {
    let props = body.get("properties").cloned().unwrap_or(Value::Null);
    for flag in ["isVersioningEnabled", "changeFeed", "deleteRetentionPolicy"] {
        if let Some(v) = props.get(flag) {
            let ok = if flag == "isVersioningEnabled" { v.is_boolean() } else { v.is_object() };
            if !ok {
                return Err(bad("InvalidRequestPropertyValue", format!("The value '{v}' is not valid for property {flag}.")));
            }
        }
    }
    Ok(())
}

/// `managementPolicies/default`: a lifecycle policy as the storage provider judges it (rules
/// named uniquely, of type `Lifecycle`, each with at least one action and the blob types it
/// applies to; day counts whole and not negative). The error codes are the storage
/// provider's generic ones; the exact code for each rule violation is unconfirmed.
fn management_policy(body: &mut Value) -> Result<(), Reply> {
    let invalid = |m: String| Err(bad("InvalidManagementPolicyRules", m));
    let Some(rules) = body.pointer("/properties/policy/rules").and_then(Value::as_array) else {
        return Err(bad("InvalidRequestFormat", "A management policy needs properties.policy.rules."));
    };
    if rules.is_empty() {
        return invalid("A management policy needs at least one rule.".to_owned());
    }
    let mut names = HashSet::new();
    for rule in rules {
        let name = rule.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() || name.len() > 256 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return invalid(format!("Rule name '{name}' is invalid: letters, digits, '-' and '_', at most 256."));
        }
        if !names.insert(name.to_ascii_lowercase()) {
            return invalid(format!("Rule name '{name}' is used more than once."));
        }
        if rule.get("type").and_then(Value::as_str) != Some("Lifecycle") {
            return invalid(format!("Rule '{name}' must have type 'Lifecycle'."));
        }
        if rule.get("enabled").is_some_and(|e| !e.is_boolean()) {
            return invalid(format!("Rule '{name}': enabled must be a boolean."));
        }
        let actions = rule.pointer("/definition/actions").and_then(Value::as_object);
        if actions.is_none_or(|a| a.is_empty() || a.keys().any(|k| !["baseBlob", "snapshot", "version"].contains(&k.as_str()))) {
            return invalid(format!("Rule '{name}' needs definition.actions with baseBlob, snapshot or version actions."));
        }
        let blob_types = rule.pointer("/definition/filters/blobTypes").and_then(Value::as_array);
        if blob_types.is_none_or(|t| t.is_empty() || t.iter().any(|b| !matches!(b.as_str(), Some("blockBlob" | "appendBlob")))) {
            return invalid(format!("Rule '{name}' needs definition.filters.blobTypes of blockBlob or appendBlob."));
        }
        for (target, a) in actions.into_iter().flatten() {
            for (verb, cond) in a.as_object().into_iter().flatten() {
                for (when, days) in cond.as_object().into_iter().flatten() {
                    if days.as_u64().is_none() {
                        return invalid(format!("Rule '{name}': {target}.{verb}.{when} must be a whole number of days, not {days}."));
                    }
                }
            }
        }
    }
    body["properties"]["lastModifiedTime"] = json!(super::now());
    Ok(())
}
