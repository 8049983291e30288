//! GKE: the regional, VPC-native, private cluster and its node pools. Both carry byoc's
//! labels (`resourceLabels`; a pool's on its node config), which is how observe finds
//! them. A pool's size is its autoscaling bounds (totals over the region's zones): a
//! resize is ONE `setAutoscaling` call.

use std::collections::HashMap;

use google_cloud_container_v1::model::{self as m, node_pool_autoscaling, node_taint, release_channel, workload_metadata_config};

use super::{Gcp, found, int, last_segment, resolve, short_name, string_map, strings, text, unless_gone};
use crate::cloud::{CloudError, Found, Refs};
use crate::resource::{Kind, Map, Resource, ResourceId, Value};

/// GKE's name for a default node pool, made with the cluster (GKE creates a cluster
/// with at least one pool) and removed once the cluster runs, as byoc's pools are
/// resources of their own.
const DEFAULT_POOL: &str = "default-pool";

/// A pool's `autoscaling` property as GKE's.
fn autoscaling(r: &Resource) -> m::NodePoolAutoscaling {
    let a = match r.properties.get("autoscaling") {
        Some(Value::Map(a)) => a.clone(),
        _ => Map::new(),
    };
    m::NodePoolAutoscaling::new()
        .set_enabled(true)
        .set_total_min_node_count(int(a.get("totalMinNodes")))
        .set_total_max_node_count(int(a.get("totalMaxNodes")))
        .set_location_policy(node_pool_autoscaling::LocationPolicy::from(
            a.get("locationPolicy").and_then(Value::as_str).unwrap_or("BALANCED"),
        ))
}

/// GKE's autoscaling back in the property's form (what drift is compared on).
fn autoscaling_property(a: &m::NodePoolAutoscaling) -> Value {
    Value::map([
        ("totalMinNodes", Value::Int(i64::from(a.total_min_node_count))),
        ("totalMaxNodes", Value::Int(i64::from(a.total_max_node_count))),
        ("locationPolicy", a.location_policy.name().unwrap_or("BALANCED").into()),
    ])
}

/// A taint's effect as GKE names it (`NoSchedule` -> `NO_SCHEDULE`).
fn effect(kubernetes: &str) -> node_taint::Effect {
    let mut out = String::new();
    for (i, c) in kubernetes.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    node_taint::Effect::from(out.as_str())
}

fn taints(r: &Resource) -> Vec<m::NodeTaint> {
    match r.properties.get("taints") {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|t| match t {
                Value::Map(t) => Some(
                    m::NodeTaint::new()
                        .set_key(t.get("key").and_then(Value::as_str).unwrap_or_default())
                        .set_value(t.get("value").and_then(Value::as_str).unwrap_or_default())
                        .set_effect(effect(t.get("effect").and_then(Value::as_str).unwrap_or_default())),
                ),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether GKE refused a call because the cluster runs another operation.
fn busy(e: &CloudError) -> bool {
    e.is(&["FAILED_PRECONDITION"]) && e.message.contains("incompatible operation")
}

impl Gcp {
    fn location_path(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.region)
    }

    /// Waits for every operation still running on the cluster `cluster` (a path
    /// `projects/P/locations/L/clusters/C`), or on one of its pools: an apply killed while
    /// GKE created the cluster or a pool left it running, and the rerun must wait for it
    /// (GKE would refuse another change meanwhile) rather than create or change again.
    async fn wait_running(&self, cluster: &str) -> Result<(), CloudError> {
        let parent = self.location_path();
        let ops = self.call("container operations.list", || self.gke.list_operations().set_parent(&parent).send()).await?.operations;
        let target = format!("/{cluster}");
        for op in ops {
            let on_cluster = op.target_link.ends_with(&target) || op.target_link.contains(&format!("{target}/"));
            if on_cluster && op.status != m::operation::Status::Done {
                let what = format!("container {} (started before, still running)", op.operation_type.name().unwrap_or("operation"));
                self.gke_done(&what, op).await?;
            }
        }
        Ok(())
    }

    /// A mutating GKE call. GKE runs one operation at a time per cluster and refuses
    /// another meanwhile (400 FAILED_PRECONDITION "incompatible operation"): two pools of
    /// one cluster made at once take turns, waiting for the other's operation.
    async fn gke_call<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = google_cloud_gax::Result<T>>,
    {
        let started = std::time::Instant::now();
        loop {
            match self.call(what, &mut op).await {
                Err(e) if busy(&e) && started.elapsed() < self.wait_limit => {
                    println!("waiting {what}: the cluster is running another operation ({}s)", started.elapsed().as_secs());
                    tokio::time::sleep(self.poll).await;
                }
                other => return other,
            }
        }
    }

    /// Waits for a GKE operation to be DONE; its error, if any, is the call's.
    // `statusMessage` is deprecated in favour of `error`, which older answers lack.
    #[allow(deprecated)]
    async fn gke_done(&self, what: &str, op: m::Operation) -> Result<(), CloudError> {
        let name = format!("{}/operations/{}", self.location_path(), last_segment(&op.name));
        let mut op = op;
        let started = std::time::Instant::now();
        loop {
            if let Some(e) = &op.error
                && e.code != 0
            {
                return Err(CloudError::new(what, format!("operation {name} failed: {}", e.message)));
            }
            if op.status == m::operation::Status::Done {
                if !op.status_message.is_empty() && op.error.is_none() && op.status_message.to_lowercase().contains("error") {
                    return Err(CloudError::new(what, format!("operation {name} failed: {}", op.status_message)));
                }
                return Ok(());
            }
            if started.elapsed() > self.wait_limit {
                return Err(CloudError::new(
                    what,
                    format!("operation {name} not done after {}s; apply again later", started.elapsed().as_secs()),
                ));
            }
            println!("waiting {what}: {} ({}s)", op.status.name().unwrap_or("PENDING"), started.elapsed().as_secs());
            tokio::time::sleep(self.poll).await;
            op = self.call(&format!("container operations.get {name}"), || self.gke.get_operation().set_name(&name).send()).await?;
        }
    }

    pub(super) async fn observe_gke(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let parent = self.location_path();
        let clusters = super::none_in_unknown_region(
            self.call("container clusters.list", || self.gke.list_clusters().set_parent(&parent).send()).await.map(|l| l.clusters),
            &self.region,
        )?;
        for c in clusters.into_iter().filter(|c| self.labelled_ours(&c.resource_labels)) {
            // The resource label is the id in label form; the cluster is `main` in every
            // graph byoc makes, and any other is reported under its GKE name.
            let id = [ResourceId::new(Kind::GcpGkeCluster, "main")]
                .into_iter()
                .find(|id| self.labelled_as(&c.resource_labels, id))
                .unwrap_or_else(|| ResourceId::new(Kind::GcpGkeCluster, &c.name));
            let path = format!("{parent}/clusters/{}", c.name);
            let pools = self.call("container nodePools.list", || self.gke.list_node_pools().set_parent(&path).send()).await?.node_pools;
            for p in pools {
                let labels = p.config.as_ref().map(|c| c.resource_labels.clone()).unwrap_or_default();
                let pid = ResourceId::new(Kind::GcpNodePool, &p.name);
                if !self.labelled_as(&labels, &pid) {
                    continue;
                }
                let mut live = Map::new();
                if let Some(a) = &p.autoscaling {
                    live.insert("autoscaling", autoscaling_property(a));
                }
                out.push(found(&pid, Kind::GcpNodePool, format!("{path}/nodePools/{}", p.name), [("name", p.name.clone())], live));
            }
            let workload_pool = c.workload_identity_config.as_ref().map(|w| w.workload_pool.clone()).unwrap_or_default();
            out.push(found(
                &id,
                Kind::GcpGkeCluster,
                path,
                [("name", c.name.clone()), ("endpoint", c.endpoint.clone()), ("workloadPool", workload_pool)],
                Map::new(),
            ));
        }
        Ok(())
    }

    // `initialNodeCount` (for the default pool GKE requires) and the private cluster
    // settings are deprecated in favour of node pools and `networkConfig`, which the v1
    // API still takes both ways.
    #[allow(deprecated)]
    pub(super) async fn ensure_cluster(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let name = text(r, "name");
        let parent = self.location_path();
        let path = format!("{parent}/clusters/{name}");
        let labels: HashMap<String, String> = string_map(r.properties.get("labels"));
        let ip = match r.properties.get("ipAllocation") {
            Some(Value::Map(m)) => m.clone(),
            _ => Map::new(),
        };
        let what = format!("container clusters.create for {}", r.id);
        if existing.is_none() {
            let cluster = m::Cluster::new()
                .set_name(name)
                .set_initial_cluster_version(text(r, "version"))
                .set_network(last_segment(resolve(refs, r, "network")?))
                .set_subnetwork(last_segment(resolve(refs, r, "subnetwork")?))
                .set_initial_node_count(1)
                .set_resource_labels(labels.clone())
                .set_release_channel(m::ReleaseChannel::new().set_channel(release_channel::Channel::from(text(r, "releaseChannel"))))
                .set_ip_allocation_policy(
                    m::IPAllocationPolicy::new()
                        .set_use_ip_aliases(true)
                        .set_cluster_secondary_range_name(ip.get("podsRange").and_then(Value::as_str).unwrap_or_default())
                        .set_services_secondary_range_name(ip.get("servicesRange").and_then(Value::as_str).unwrap_or_default()),
                )
                .set_private_cluster_config(
                    m::PrivateClusterConfig::new()
                        .set_enable_private_nodes(super::flag(r, "privateNodes"))
                        .set_enable_private_endpoint(super::flag(r, "privateEndpoint")),
                )
                .set_workload_identity_config(m::WorkloadIdentityConfig::new().set_workload_pool(text(r, "workloadPool")))
                .set_network_config(m::NetworkConfig::new().set_datapath_provider(m::DatapathProvider::from(text(r, "datapathProvider"))));
            match self.call(&what, || self.gke.create_cluster().set_parent(&parent).set_cluster(cluster.clone()).send()).await {
                Ok(op) => self.gke_done(&what, op).await?,
                Err(e) if e.is(&["ALREADY_EXISTS"]) => {
                    let live = self.call(&what, || self.gke.get_cluster().set_name(&path).send()).await?;
                    if !self.labelled_as(&live.resource_labels, &r.id) {
                        return Err(self.not_ours(r, what, "GKE cluster", name));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if existing.is_some() {
            self.wait_running(&path).await?;
        }
        let what = format!("container clusters.get for {}", r.id);
        let live = self.call(&what, || self.gke.get_cluster().set_name(&path).send()).await?;
        // The default pool GKE made with the cluster: byoc's pools replace it.
        if live.node_pools.iter().any(|p| p.name == DEFAULT_POOL) {
            let pool = format!("{path}/nodePools/{DEFAULT_POOL}");
            let what = format!("container nodePools.delete {DEFAULT_POOL} for {}", r.id);
            if let Some(op) = unless_gone(self.gke_call(&what, || self.gke.delete_node_pool().set_name(&pool).send()).await)? {
                self.gke_done(&what, op).await?;
            }
        }
        if live.resource_labels != labels {
            let what = format!("container clusters.setResourceLabels for {}", r.id);
            let op = self
                .gke_call(&what, || {
                    self.gke
                        .set_labels()
                        .set_name(&path)
                        .set_resource_labels(labels.clone())
                        .set_label_fingerprint(&live.label_fingerprint)
                        .send()
                })
                .await?;
            self.gke_done(&what, op).await?;
        }
        let workload_pool = live.workload_identity_config.as_ref().map(|w| w.workload_pool.clone()).unwrap_or_default();
        Ok(found(
            &r.id,
            Kind::GcpGkeCluster,
            path,
            [("name", name.to_owned()), ("endpoint", live.endpoint.clone()), ("workloadPool", workload_pool)],
            Map::new(),
        ))
    }

    pub(super) async fn ensure_node_pool(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let name = short_name(&r.id);
        let cluster = resolve(refs, r, "cluster")?.to_owned();
        let path = format!("{cluster}/nodePools/{name}");
        let want = autoscaling(r);
        let what = format!("container nodePools.create for {}", r.id);
        let mut created = false;
        // An operation on the cluster or a pool an earlier apply started and did not see
        // through (killed) is waited for first: GKE refuses another meanwhile, and the
        // pool it creates may be this one.
        self.wait_running(&cluster).await?;
        if existing.is_none() {
            let config = m::NodeConfig::new()
                .set_machine_type(text(r, "machineType"))
                .set_service_account(resolve(refs, r, "serviceAccount")?)
                .set_oauth_scopes(["https://www.googleapis.com/auth/cloud-platform"])
                .set_labels(string_map(r.properties.get("nodeLabels")))
                .set_resource_labels(string_map(r.properties.get("labels")))
                .set_taints(taints(r))
                .set_workload_metadata_config(
                    m::WorkloadMetadataConfig::new().set_mode(workload_metadata_config::Mode::from(text(r, "workloadMetadata"))),
                );
            let pool = m::NodePool::new()
                .set_name(name)
                .set_config(config)
                .set_initial_node_count(int(r.properties.get("initialNodesPerZone")))
                .set_locations(strings(r.properties.get("zones")))
                .set_autoscaling(want.clone());
            match self.gke_call(&what, || self.gke.create_node_pool().set_parent(&cluster).set_node_pool(pool.clone()).send()).await {
                Ok(op) => {
                    self.gke_done(&what, op).await?;
                    created = true;
                }
                Err(e) if e.is(&["ALREADY_EXISTS"]) => {
                    let live = self.call(&what, || self.gke.get_node_pool().set_name(&path).send()).await?;
                    let labels = live.config.as_ref().map(|c| c.resource_labels.clone()).unwrap_or_default();
                    if !self.labelled_as(&labels, &r.id) {
                        return Err(self.not_ours(r, what, "GKE node pool", name));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if !created {
            // A resize (or drift on the bounds) is one call that sets the bounds whole.
            let what = format!("container nodePools.setAutoscaling for {}", r.id);
            let live = self.call(&what, || self.gke.get_node_pool().set_name(&path).send()).await?;
            let same = live.autoscaling.as_ref().is_some_and(|a| {
                a.enabled
                    && a.total_min_node_count == want.total_min_node_count
                    && a.total_max_node_count == want.total_max_node_count
                    && a.location_policy == want.location_policy
            });
            if !same {
                let op = self
                    .gke_call(&what, || self.gke.set_node_pool_autoscaling().set_name(&path).set_autoscaling(want.clone()).send())
                    .await?;
                self.gke_done(&what, op).await?;
            }
        }
        Ok(found(&r.id, Kind::GcpNodePool, path, [("name", name.to_owned())], Map::new()))
    }

    pub(super) async fn delete_cluster(&self, f: &Found) -> Result<(), CloudError> {
        let what = format!("container clusters.delete for {}", f.id);
        self.wait_running(&f.cloud_id).await?;
        if let Some(op) = unless_gone(self.gke_call(&what, || self.gke.delete_cluster().set_name(&f.cloud_id).send()).await)? {
            self.gke_done(&what, op).await?;
        }
        Ok(())
    }

    pub(super) async fn delete_node_pool(&self, f: &Found) -> Result<(), CloudError> {
        let what = format!("container nodePools.delete for {}", f.id);
        self.wait_running(f.cloud_id.split("/nodePools/").next().unwrap_or(&f.cloud_id)).await?;
        if let Some(op) = unless_gone(self.gke_call(&what, || self.gke.delete_node_pool().set_name(&f.cloud_id).send()).await)? {
            self.gke_done(&what, op).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taint_effects_are_named_as_gke_names_them() {
        assert_eq!(effect("NoSchedule"), node_taint::Effect::NoSchedule);
        assert_eq!(effect("PreferNoSchedule"), node_taint::Effect::PreferNoSchedule);
        assert_eq!(effect("NoExecute"), node_taint::Effect::NoExecute);
    }

    #[test]
    fn a_pools_bounds_read_back_as_the_property_expand_writes() {
        let r = Resource::new(Kind::GcpNodePool, "rw").set(
            "autoscaling",
            Value::map([("totalMinNodes", Value::Int(3)), ("totalMaxNodes", Value::Int(9)), ("locationPolicy", "BALANCED".into())]),
        );
        let a = autoscaling(&r);
        assert!(a.enabled);
        assert_eq!(Some(&autoscaling_property(&a)), r.properties.get("autoscaling"));
    }
}
