//! Microsoft.ContainerService ([`api::CONTAINER_SERVICE`]): the managed cluster (a
//! user-assigned control-plane identity, the OIDC issuer and workload identity, API-server
//! VNet integration into its delegated subnet, a private API server, Azure CNI overlay with
//! Cilium, egress through the NAT gateway) and its agent pools. A pool's resize is one
//! PUT of the pool; a pool whose settings already match is not written.

use serde_json::{Value as Json, json};

use super::{Azure, Found, Refs, api, at, at_str, found_json, resolve, strings, tags_json, text};
use crate::cloud::CloudError;
use crate::resource::{Kind, Map, Resource, Value};

/// The pool's name: its id's name part (`system` of `azure.node-pool/system`).
fn pool_name(r: &Resource) -> &str {
    r.id.as_str().split_once('/').map_or(r.id.as_str(), |(_, n)| n)
}

fn int(r: &Resource, name: &str) -> i64 {
    match r.properties.get(name) {
        Some(Value::Int(n)) => *n,
        _ => 0,
    }
}

/// An agent pool's properties as ARM takes them; `count` is the current node count on an
/// update (the autoscaler owns it), `minCount` on a create.
fn pool_properties(r: &Resource, subnet: &str, count: i64) -> Json {
    let labels: serde_json::Map<String, Json> = match r.properties.get("nodeLabels") {
        Some(Value::Map(m)) => m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.to_owned(), json!(v)))).collect(),
        _ => serde_json::Map::new(),
    };
    json!({
        "mode": text(r, "mode"),
        "vmSize": text(r, "vmSize"),
        "type": "VirtualMachineScaleSets",
        "osType": "Linux",
        "enableAutoScaling": true,
        "count": count,
        "minCount": int(r, "minCount"),
        "maxCount": int(r, "maxCount"),
        "vnetSubnetID": subnet,
        "availabilityZones": strings(r.properties.get("zones")),
        "nodeLabels": labels,
        "nodeTaints": strings(r.properties.get("taints")),
        "tags": tags_json(r),
    })
}

/// What someone else may change on a pool, in the graph's form.
fn pool_live(pool: &Json) -> Map {
    let p = pool.get("properties").unwrap_or(pool);
    let mut m = Map::new();
    m.insert("vmSize", Value::from(at_str(p, "vmSize")));
    for k in ["minCount", "maxCount"] {
        if let Some(n) = p.get(k).and_then(Json::as_i64) {
            m.insert(k, Value::Int(n));
        }
    }
    m
}

impl Azure {
    fn cluster_path(&self, name: &str) -> String {
        format!("{}/providers/Microsoft.ContainerService/managedClusters/{name}", self.rg_path())
    }

    pub(super) async fn observe_kubernetes(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let clusters =
            self.observe_type(Kind::AzureAksCluster, "Microsoft.ContainerService/managedClusters", api::CONTAINER_SERVICE, out).await?;
        for (id, cluster) in &clusters {
            if let Some(f) = out.iter_mut().find(|f| &f.id == id) {
                cluster_outputs(f, cluster);
            }
            let cluster_id = cluster.get("id").and_then(Json::as_str).unwrap_or_default();
            for pool in self.arm.list("list agentPools", &format!("{cluster_id}/agentPools"), api::CONTAINER_SERVICE).await? {
                let tags = pool.get("properties").and_then(|p| p.get("tags")).cloned().unwrap_or(Json::Null);
                if let Some(pid) = self.ours(Kind::AzureNodePool, &json!({"tags": tags})) {
                    let mut f = found_json(pid, Kind::AzureNodePool, &pool);
                    f.live = pool_live(&pool);
                    out.push(f);
                }
            }
        }
        Ok(())
    }

    pub(super) async fn ensure_cluster(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let name = text(r, "name");
        let path = self.cluster_path(name);
        let identity_id = r.refs_in("identity").into_iter().next();
        let identity = match identity_id {
            Some(id) => {
                refs.get(&id).ok_or_else(|| CloudError::new(r.id.to_string(), format!("{id} does not exist yet")))?.cloud_id.clone()
            }
            None => return Err(CloudError::new(r.id.to_string(), "`identity` names no identity")),
        };
        let subnet = resolve(refs, r, "subnet")?.cloud_id.clone();
        let api_subnet = resolve(refs, r, "apiServerSubnet")?.cloud_id.clone();
        let net = match r.properties.get("network") {
            Some(Value::Map(m)) => m.clone(),
            _ => Map::new(),
        };
        let n = |k: &str| net.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        // A cluster is made with its System pool; afterwards the pools are their own
        // resources, so an update keeps the profiles ARM holds.
        let what = format!("GET managedCluster for {}", r.id);
        let current = self.arm.get(&what, &path, api::CONTAINER_SERVICE).await?;
        let pools = match current.as_ref().and_then(|c| at(c, "properties.agentPoolProfiles")) {
            Some(p) => p.clone(),
            None => {
                let system = self.pools.get(text(r, "systemPool")).ok_or_else(|| {
                    CloudError::new(r.id.to_string(), format!("no node pool {} to be the System pool", text(r, "systemPool")))
                })?;
                let mut p = pool_properties(system, &subnet, int(system, "minCount"));
                p["name"] = json!(pool_name(system));
                json!([p])
            }
        };
        let body = json!({
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {identity: {}}},
            "sku": {"name": "Base", "tier": "Standard"},
            "properties": {
                "kubernetesVersion": text(r, "version"),
                "dnsPrefix": name,
                "agentPoolProfiles": pools,
                "networkProfile": {
                    "networkPlugin": n("plugin"), "networkPluginMode": n("pluginMode"),
                    "networkDataplane": n("dataplane"), "networkPolicy": n("policy"),
                    "podCidr": n("podCidr"), "serviceCidr": n("serviceCidr"), "dnsServiceIP": n("dnsServiceIP"),
                    "outboundType": n("outboundType"), "loadBalancerSku": n("loadBalancerSku"),
                },
                "apiServerAccessProfile": {
                    "enablePrivateCluster": matches!(r.properties.get("privateCluster"), Some(Value::Bool(true))),
                    "enableVnetIntegration": matches!(r.properties.get("apiServerVnetIntegration"), Some(Value::Bool(true))),
                    "subnetId": api_subnet,
                },
                "oidcIssuerProfile": {"enabled": matches!(r.properties.get("oidcIssuer"), Some(Value::Bool(true)))},
                "securityProfile": {"workloadIdentity": {"enabled": matches!(r.properties.get("workloadIdentity"), Some(Value::Bool(true)))}},
            },
        });
        let cluster = self.put_tagged(r, existing, &path, api::CONTAINER_SERVICE, body).await?;
        let mut f = found_json(r.id.clone(), r.kind, &cluster);
        cluster_outputs(&mut f, &cluster);
        Ok(f)
    }

    pub(super) async fn ensure_pool(&self, r: &Resource, refs: &Refs) -> Result<Found, CloudError> {
        let cluster = resolve(refs, r, "cluster")?;
        let subnet = resolve(refs, r, "subnet")?.cloud_id.clone();
        let path = format!("{}/agentPools/{}", cluster.cloud_id, pool_name(r));
        let what = format!("agentPool for {}", r.id);
        let current = self.arm.get(&format!("GET {what}"), &path, api::CONTAINER_SERVICE).await?;
        let count = current.as_ref().and_then(|c| at(c, "properties.count")).and_then(Json::as_i64);
        // Within the new bounds: the autoscaler owns the count between them.
        let count = count.unwrap_or(int(r, "minCount")).clamp(int(r, "minCount"), int(r, "maxCount").max(int(r, "minCount")));
        let props = pool_properties(r, &subnet, count);
        if let Some(c) = &current
            && pool_matches(c, &props)
        {
            let mut f = found_json(r.id.clone(), r.kind, c);
            f.live = pool_live(c);
            return Ok(f);
        }
        let pool = self.arm.put(&format!("PUT {what}"), &path, api::CONTAINER_SERVICE, &json!({"properties": props})).await?;
        let mut f = found_json(r.id.clone(), r.kind, &pool);
        f.live = pool_live(&pool);
        Ok(f)
    }
}

/// Whether a pool ARM holds has every setting `want` gives (the System pool made with its
/// cluster is not written again).
fn pool_matches(current: &Json, want: &Json) -> bool {
    let Some(have) = current.get("properties") else { return false };
    let Some(want) = want.as_object() else { return false };
    want.iter().all(|(k, v)| match (have.get(k), v) {
        (Some(Json::Array(a)), Json::Array(b)) => {
            let mut a: Vec<String> = a.iter().map(ToString::to_string).collect();
            let mut b: Vec<String> = b.iter().map(ToString::to_string).collect();
            a.sort();
            b.sort();
            a == b
        }
        (Some(Json::String(a)), Json::String(b)) => a.eq_ignore_ascii_case(b),
        (Some(a), b) => a == b,
        (None, Json::Array(b)) => b.is_empty(),
        (None, Json::Object(b)) => b.is_empty(),
        (None, _) => false,
    })
}

fn cluster_outputs(f: &mut Found, cluster: &Json) {
    let issuer = at_str(cluster, "properties.oidcIssuerProfile.issuerURL");
    if !issuer.is_empty() {
        f.outputs.insert("issuer".into(), issuer.to_owned());
    }
    let nrg = at_str(cluster, "properties.nodeResourceGroup");
    if !nrg.is_empty() {
        f.outputs.insert("nodeResourceGroup".into(), nrg.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Resource;

    #[test]
    fn a_pool_with_the_same_settings_is_not_written_and_a_resize_is() {
        let r = Resource::new(Kind::AzureNodePool, "risingwave")
            .set("mode", "User")
            .set("vmSize", "Standard_E8s_v5")
            .set("minCount", 3u32)
            .set("maxCount", 9u32)
            .set("zones", Value::strings(["1", "2", "3"]))
            .set("taints", Value::strings(["dedicated=risingwave:NoSchedule"]));
        let props = pool_properties(&r, "/subnets/nodes", 3);
        let mut stored = props.clone();
        stored["provisioningState"] = json!("Succeeded");
        stored["availabilityZones"] = json!(["3", "2", "1"]);
        stored["vmSize"] = json!("standard_e8s_v5");
        assert!(pool_matches(&json!({"properties": stored}), &props));
        let resized = pool_properties(&r.clone().set("maxCount", 12u32), "/subnets/nodes", 3);
        assert!(!pool_matches(&json!({"properties": props}), &resized));
        assert_eq!(pool_live(&json!({"properties": resized})).get("maxCount"), Some(&Value::Int(12)));
    }
}
