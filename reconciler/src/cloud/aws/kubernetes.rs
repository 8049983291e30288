//! Kubernetes on EKS: the cluster (waited for until ACTIVE; its version raised one minor
//! version per update, never lowered; its upgrade policy set explicitly) and its managed
//! node groups (size, labels and taints converged in place; their version raised after the
//! control plane's, which the graph orders: a node group refers to its cluster).

use std::collections::HashMap;

use aws_sdk_eks::types as ekst;

use super::{Aws, Wait, flag, found, int, missing, ref_of, resolve_list, resolve_prop, short_name, strings, tags, text};
use crate::cloud::{CloudError, Found, Refs};
use crate::resource::{Kind, Map, Resource, ResourceId, Value};

impl Aws {
    pub(super) async fn observe_eks(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        // Both lists come in pages (100 names by default); every page is read.
        let mut clusters = Vec::new();
        let mut token = None;
        loop {
            let page = self.retry.call("eks ListClusters", || self.eks.list_clusters().set_next_token(token.clone()).send()).await?;
            clusters.extend(page.clusters().iter().cloned());
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for name in &clusters {
            let c = self.retry.call(&format!("eks DescribeCluster {name}"), || self.eks.describe_cluster().name(name).send()).await?;
            let Some(cluster) = c.cluster() else { continue };
            if let Some(id) = self.ours(Kind::AwsEksCluster, cluster.tags().into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str())))
                && cluster.status() != Some(&ekst::ClusterStatus::Deleting)
            {
                out.push(cluster_found(id, cluster));
            }
            let mut groups = Vec::new();
            let mut token = None;
            loop {
                let page = self
                    .retry
                    .call(&format!("eks ListNodegroups {name}"), || {
                        self.eks.list_nodegroups().cluster_name(name).set_next_token(token.clone()).send()
                    })
                    .await?;
                groups.extend(page.nodegroups().iter().cloned());
                token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
            for group in &groups {
                let d = self
                    .retry
                    .call(&format!("eks DescribeNodegroup {name}/{group}"), || {
                        self.eks.describe_nodegroup().cluster_name(name).nodegroup_name(group).send()
                    })
                    .await?;
                let Some(ng) = d.nodegroup() else { continue };
                if ng.status() == Some(&ekst::NodegroupStatus::Deleting) {
                    continue;
                }
                if let Some(id) = self.ours(Kind::AwsEksNodeGroup, ng.tags().into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()))) {
                    out.push(Found {
                        live: live_node_group(ng),
                        id,
                        kind: Kind::AwsEksNodeGroup,
                        cloud_id: group.clone(),
                        outputs: [("cluster".to_owned(), name.clone())].into(),
                    });
                }
            }
            self.observe_addons(name, out).await?;
        }
        Ok(())
    }
}

/// The `upgradePolicy` request of an EKS cluster resource.
fn upgrade_policy(r: &Resource) -> ekst::UpgradePolicyRequest {
    ekst::UpgradePolicyRequest::builder().support_type(ekst::SupportType::from(text(r, "upgradePolicy"))).build()
}

/// A node group's size, labels, taints and version in property form.
fn live_node_group(ng: &ekst::Nodegroup) -> Map {
    let mut live = Map::new();
    // A group that failed to create is not repaired by EKS: it is replaced (see
    // `overlay_drift`), never kept as if it were there.
    if ng.status() == Some(&ekst::NodegroupStatus::CreateFailed) {
        live.insert("createFailed", Value::Bool(true));
    }
    if let Some(sc) = ng.scaling_config() {
        live.insert("minSize", Value::Int(sc.min_size().unwrap_or(0).into()));
        live.insert("maxSize", Value::Int(sc.max_size().unwrap_or(0).into()));
    }
    if let Some(labels) = ng.labels() {
        live.insert("labels", Value::Map(labels.iter().map(|(k, v)| (crate::resource::Key::Owned(k.clone()), Value::from(v))).collect()));
    }
    let effect = |e: Option<&ekst::TaintEffect>| match e {
        Some(ekst::TaintEffect::NoExecute) => "NoExecute",
        Some(ekst::TaintEffect::PreferNoSchedule) => "PreferNoSchedule",
        _ => "NoSchedule",
    };
    let taints = ng
        .taints()
        .iter()
        .map(|t| {
            Value::map([
                ("key", t.key().unwrap_or_default().into()),
                ("value", t.value().unwrap_or_default().into()),
                ("effect", effect(t.effect()).into()),
            ])
        })
        .collect();
    live.insert("taints", Value::List(taints));
    if let Some(v) = ng.version() {
        live.insert("version", Value::from(v));
    }
    live
}

/// The `publicAccessCidrs` of `r`, `None` when it has none (EKS then keeps its default,
/// which is moot with the public endpoint off).
fn public_cidrs(r: &Resource) -> Option<Vec<String>> {
    Some(strings(r.properties.get("publicAccessCidrs"))).filter(|c| !c.is_empty())
}

/// Whether the live endpoint access differs from `r`'s: public on or off, and with it on,
/// the set of networks allowed (EKS reports 0.0.0.0/0 for a private-only endpoint).
fn endpoint_differs(r: &Resource, c: &ekst::Cluster) -> bool {
    let Some(vpc) = c.resources_vpc_config() else { return false };
    let public = flag(r, "endpointPublicAccess");
    if vpc.endpoint_public_access() != public {
        return true;
    }
    let mut want = strings(r.properties.get("publicAccessCidrs"));
    let mut have: Vec<String> = vpc.public_access_cidrs().to_vec();
    want.sort();
    have.sort();
    public && want != have
}

fn cluster_found(id: ResourceId, c: &ekst::Cluster) -> Found {
    let issuer = c.identity().and_then(|i| i.oidc()).and_then(|o| o.issuer()).unwrap_or_default().to_owned();
    // The version and upgrade policy are read back: EKS changes both on its own (an
    // automatic upgrade at the end of support, a console edit).
    let mut live = Map::new();
    if let Some(v) = c.version() {
        live.insert("version", Value::from(v));
    }
    if let Some(t) = c.upgrade_policy().and_then(|p| p.support_type()) {
        live.insert("upgradePolicy", Value::from(t.as_str()));
    }
    // Who can reach the API server is drift worth setting back.
    if let Some(vpc) = c.resources_vpc_config() {
        let public = vpc.endpoint_public_access();
        live.insert("endpointPublicAccess", Value::Bool(public));
        let cidrs: Vec<String> = if public { vpc.public_access_cidrs().to_vec() } else { Vec::new() };
        live.insert("publicAccessCidrs", Value::strings(cidrs));
    }
    Found {
        live,
        id,
        kind: Kind::AwsEksCluster,
        cloud_id: c.name().unwrap_or_default().to_owned(),
        outputs: [
            ("arn".to_owned(), c.arn().unwrap_or_default().to_owned()),
            ("issuer".to_owned(), issuer),
            // Whether access entries can exist (observe reads them only then).
            (
                "authenticationMode".to_owned(),
                c.access_config().and_then(|a| a.authentication_mode()).map(|m| m.as_str().to_owned()).unwrap_or_default(),
            ),
        ]
        .into(),
    }
}

impl Aws {
    pub(super) async fn wait_cluster(&self, id: &ResourceId, name: &str, gone: bool) -> Result<Option<ekst::Cluster>, CloudError> {
        let what = format!("eks DescribeCluster {name}");
        let describe = || self.retry.call(&what, || self.eks.describe_cluster().name(name).send());
        self.wait(id, || async {
            Ok(match describe().await {
                Err(e) if gone && e.is(&["ResourceNotFoundException"]) => Wait::Done,
                Err(e) => return Err(e),
                Ok(d) => match d.cluster().and_then(|c| c.status().cloned()) {
                    Some(ekst::ClusterStatus::Active) if !gone => Wait::Done,
                    Some(ekst::ClusterStatus::Failed) => Wait::Failed(format!("EKS cluster {name} is FAILED")),
                    other => Wait::Pending(other.map_or("unknown".to_owned(), |s| s.as_str().to_owned())),
                },
            })
        })
        .await?;
        if gone {
            return Ok(None);
        }
        Ok(describe().await?.cluster().cloned())
    }

    pub(super) async fn ensure_cluster(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("eks {op} for {}", r.id);
        let name = text(r, "name");
        let version = text(r, "version");
        if existing.is_none() {
            let role = resolve_prop(refs, r, "role")?;
            let vpc = ekst::VpcConfigRequest::builder()
                .set_subnet_ids(Some(resolve_list(refs, r, "subnets")?))
                .set_security_group_ids(Some(resolve_list(refs, r, "securityGroups")?))
                .endpoint_private_access(flag(r, "endpointPrivateAccess"))
                .endpoint_public_access(flag(r, "endpointPublicAccess"))
                .set_public_access_cidrs(public_cidrs(r))
                .build();
            let access = ekst::CreateAccessConfigRequest::builder()
                .authentication_mode(ekst::AuthenticationMode::Api)
                .bootstrap_cluster_creator_admin_permissions(flag(r, "bootstrapCreatorAdmin"))
                .build();
            let cidr = Some(text(r, "serviceCidr")).filter(|c| !c.is_empty());
            let network = cidr.map(|c| ekst::KubernetesNetworkConfigRequest::builder().service_ipv4_cidr(c).build());
            let eks_tags: HashMap<String, String> = tags(r).into_iter().collect();
            let created = self
                .retry
                .call_fresh(&what("CreateCluster"), || {
                    self.eks
                        .create_cluster()
                        .name(name)
                        .version(version)
                        .upgrade_policy(upgrade_policy(r))
                        .role_arn(role)
                        .resources_vpc_config(vpc.clone())
                        .set_kubernetes_network_config(network.clone())
                        .access_config(access.clone())
                        .set_tags(Some(eks_tags.clone()))
                        .send()
                })
                .await;
            match created {
                Ok(_) => {}
                // Created by a run that stopped before its tags were read back, or
                // someone else's cluster of that name, which is not taken over.
                Err(e) if e.is(&["ResourceInUseException"]) => {
                    let d = self.retry.call(&what("DescribeCluster"), || self.eks.describe_cluster().name(name).send()).await?;
                    let tags = d.cluster().and_then(|c| c.tags());
                    if !self.owns(r, tags.into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()))) {
                        return Err(self.not_ours(r, what("CreateCluster"), "EKS cluster", name));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mut cluster = self.wait_cluster(&r.id, name, false).await?.ok_or_else(|| missing(&what("DescribeCluster"), "cluster"))?;
        cluster = self.converge_api_access(r, name, cluster).await?;
        // One minor version per UpdateClusterVersion, as EKS allows, each waited for; a
        // downgrade is refused before any change (commands/apply.rs), and again here.
        let running = cluster.version().unwrap_or(version).to_owned();
        let steps = crate::expand::eks::upgrade_steps(&running, version).map_err(|why| CloudError::new(r.id.to_string(), why))?;
        for step in &steps {
            println!("upgrading {} from {} to {step}", r.id, cluster.version().unwrap_or("?"));
            self.retry.call(&what("UpdateClusterVersion"), || self.eks.update_cluster_version().name(name).version(step).send()).await?;
            cluster = self.wait_cluster(&r.id, name, false).await?.ok_or_else(|| missing(&what("DescribeCluster"), "cluster"))?;
        }
        let want_policy = text(r, "upgradePolicy");
        let have_policy = cluster.upgrade_policy().and_then(|p| p.support_type()).map(|t| t.as_str().to_owned());
        if !want_policy.is_empty() && have_policy.as_deref() != Some(want_policy) {
            self.retry
                .call(&what("UpdateClusterConfig"), || self.eks.update_cluster_config().name(name).upgrade_policy(upgrade_policy(r)).send())
                .await?;
            cluster = self.wait_cluster(&r.id, name, false).await?.ok_or_else(|| missing(&what("DescribeCluster"), "cluster"))?;
        }
        Ok(cluster_found(r.id.clone(), &cluster))
    }

    /// Sets the endpoint's public access and the authentication mode to what `r` says when
    /// the live cluster differs (one made by an older byoc, or changed by hand). EKS moves
    /// `CONFIG_MAP` to `API` only through `API_AND_CONFIG_MAP`, one update each.
    async fn converge_api_access(&self, r: &Resource, name: &str, mut cluster: ekst::Cluster) -> Result<ekst::Cluster, CloudError> {
        let what = |op: &str| format!("eks {op} for {}", r.id);
        if endpoint_differs(r, &cluster) {
            let vpc = ekst::VpcConfigRequest::builder()
                .endpoint_private_access(flag(r, "endpointPrivateAccess"))
                .endpoint_public_access(flag(r, "endpointPublicAccess"))
                .set_public_access_cidrs(public_cidrs(r))
                .build();
            self.retry
                .call(&what("UpdateClusterConfig"), || self.eks.update_cluster_config().name(name).resources_vpc_config(vpc.clone()).send())
                .await?;
            cluster = self.wait_cluster(&r.id, name, false).await?.ok_or_else(|| missing(&what("DescribeCluster"), "cluster"))?;
        }
        // An answer without accessConfig (an emulator) says nothing to converge from.
        while let Some(mode) = cluster.access_config().and_then(|a| a.authentication_mode()).cloned() {
            let next = match mode {
                ekst::AuthenticationMode::ConfigMap => ekst::AuthenticationMode::ApiAndConfigMap,
                ekst::AuthenticationMode::ApiAndConfigMap => ekst::AuthenticationMode::Api,
                _ => break,
            };
            let access = ekst::UpdateAccessConfigRequest::builder().authentication_mode(next).build();
            self.retry
                .call(&what("UpdateClusterConfig"), || self.eks.update_cluster_config().name(name).access_config(access.clone()).send())
                .await?;
            cluster = self.wait_cluster(&r.id, name, false).await?.ok_or_else(|| missing(&what("DescribeCluster"), "cluster"))?;
        }
        Ok(cluster)
    }

    /// Problems with running Kubernetes `version` in EKS today, asked of EKS
    /// (`DescribeClusterVersions`): a version EKS does not offer or no longer supports, or
    /// one past its standard support while the spec asks for standard support only (EKS
    /// would upgrade it on its own, or refuse the cluster). `at` is where the spec writes it.
    pub async fn version_problems(&self, version: &str, extended: bool, at: &str) -> Vec<String> {
        let what = format!("eks DescribeClusterVersions {version}");
        let answer =
            self.retry.call(&what, || self.eks.describe_cluster_versions().cluster_versions(version).include_all(true).send()).await;
        let offered = match answer {
            Ok(a) => a.cluster_versions().to_vec(),
            Err(e) => return vec![format!("cannot read which Kubernetes versions EKS offers, so {version} was not checked: {e}")],
        };
        let date = |d: Option<&aws_smithy_types::DateTime>| {
            d.and_then(|d| d.fmt(aws_smithy_types::date_time::Format::DateTime).ok()).map_or("?".to_owned(), |t| t[..10].to_owned())
        };
        let Some(info) = offered.iter().find(|v| v.cluster_version() == Some(version)) else {
            return vec![format!(
                "{at}: EKS does not offer Kubernetes {version} (eks:DescribeClusterVersions); write a version it offers in standard support"
            )];
        };
        let end_standard = date(info.end_of_standard_support_date());
        let end_extended = date(info.end_of_extended_support_date());
        match info.version_status() {
            Some(ekst::VersionStatus::StandardSupport) => Vec::new(),
            Some(ekst::VersionStatus::ExtendedSupport) if extended => Vec::new(),
            Some(ekst::VersionStatus::ExtendedSupport) => vec![format!(
                "{at}: Kubernetes {version} left EKS standard support on {end_standard} (extended support ends {end_extended}); write a version in standard support, or supportType: extended, which costs {} times standard per cluster hour",
                crate::expand::eks::EXTENDED_COST_FACTOR
            )],
            other => vec![format!(
                "{at}: Kubernetes {version} is {} on EKS (extended support ended {end_extended}); write a version in standard support",
                other.map_or("not supported", |s| s.as_str())
            )],
        }
    }

    pub(super) async fn delete_cluster(&self, f: &Found) -> Result<(), CloudError> {
        self.retry
            .call(&format!("eks DeleteCluster for {} {}", f.id, f.cloud_id), || self.eks.delete_cluster().name(&f.cloud_id).send())
            .await?;
        self.wait_cluster(&f.id, &f.cloud_id, true).await?;
        // The control plane's network interfaces in the cluster's subnets ("Amazon EKS
        // <name>") outlive it; the subnets and security groups go after them.
        self.wait_interfaces_gone(&f.id, &format!("Amazon EKS {}", f.cloud_id)).await
    }

    pub(super) async fn wait_node_group(&self, id: &ResourceId, cluster: &str, group: &str, gone: bool) -> Result<(), CloudError> {
        self.wait(id, || async {
            let d = self
                .retry
                .call(&format!("eks DescribeNodegroup {cluster}/{group}"), || {
                    self.eks.describe_nodegroup().cluster_name(cluster).nodegroup_name(group).send()
                })
                .await;
            Ok(match d {
                Err(e) if gone && e.is(&["ResourceNotFoundException"]) => Wait::Done,
                Err(e) => return Err(e),
                Ok(d) => match d.nodegroup().and_then(|n| n.status().cloned()) {
                    Some(ekst::NodegroupStatus::Active) if !gone => Wait::Done,
                    Some(
                        s @ (ekst::NodegroupStatus::CreateFailed | ekst::NodegroupStatus::DeleteFailed | ekst::NodegroupStatus::Degraded),
                    ) => {
                        let issues: Vec<String> = d
                            .nodegroup()
                            .and_then(|n| n.health())
                            .map(|h| h.issues().iter().filter_map(|i| i.message().map(str::to_owned)).collect())
                            .unwrap_or_default();
                        Wait::Failed(format!("node group {group} is {}: {}", s.as_str(), issues.join("; ")))
                    }
                    other => Wait::Pending(other.map_or("unknown".to_owned(), |s| s.as_str().to_owned())),
                },
            })
        })
        .await
    }

    pub(super) async fn ensure_node_group(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("eks {op} for {}", r.id);
        let cluster = resolve_prop(refs, r, "cluster")?.to_owned();
        // The group as it exists; a new one is named after its resource, and a replacement
        // made while the old group still runs (the engine shows it under `r.id` in `refs`)
        // takes the next name, since EKS names are unique per cluster.
        let group = match (existing, refs.get(&r.id)) {
            (Some(f), _) => f.cloud_id.clone(),
            (None, Some(old)) => successor_name(short_name(&r.id), &old.cloud_id),
            (None, None) => short_name(&r.id).to_owned(),
        };
        let scaling = ekst::NodegroupScalingConfig::builder()
            .min_size(int(r, "minSize"))
            .max_size(int(r, "maxSize"))
            .desired_size(int(r, "minSize"))
            .build();
        let labels: HashMap<String, String> = match r.properties.get("labels") {
            Some(Value::Map(m)) => m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.to_owned(), v.to_owned()))).collect(),
            _ => HashMap::new(),
        };
        let taints: Vec<ekst::Taint> = match r.properties.get("taints") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|t| match t {
                    Value::Map(m) => Some(
                        ekst::Taint::builder()
                            .key(m.get("key").and_then(Value::as_str).unwrap_or_default())
                            .value(m.get("value").and_then(Value::as_str).unwrap_or_default())
                            .effect(match m.get("effect").and_then(Value::as_str) {
                                Some("NoExecute") => ekst::TaintEffect::NoExecute,
                                Some("PreferNoSchedule") => ekst::TaintEffect::PreferNoSchedule,
                                _ => ekst::TaintEffect::NoSchedule,
                            })
                            .build(),
                    ),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        match existing {
            None => {
                let role = resolve_prop(refs, r, "nodeRole")?;
                let subnets = resolve_list(refs, r, "subnets")?;
                let template = match ref_of(r, "launchTemplate") {
                    Some(id) => {
                        let f = refs.get(&id).ok_or_else(|| CloudError::new(r.id.to_string(), format!("{id} does not exist yet")))?;
                        let v = f.outputs.get("version").cloned().unwrap_or_else(|| "1".to_owned());
                        Some(ekst::LaunchTemplateSpecification::builder().id(&f.cloud_id).version(v).build())
                    }
                    None => None,
                };
                let ami = Some(text(r, "amiType")).filter(|a| !a.is_empty()).map(ekst::AmiTypes::from);
                let ng_version = Some(text(r, "version")).filter(|v| !v.is_empty());
                let eks_tags: HashMap<String, String> = tags(r).into_iter().collect();
                let created = self
                    .retry
                    .call_fresh(&what("CreateNodegroup"), || {
                        self.eks
                            .create_nodegroup()
                            .cluster_name(&cluster)
                            .nodegroup_name(&group)
                            .scaling_config(scaling.clone())
                            .instance_types(text(r, "instanceType"))
                            .set_ami_type(ami.clone())
                            .set_launch_template(template.clone())
                            .set_version(ng_version.map(str::to_owned))
                            .set_subnets(Some(subnets.clone()))
                            .node_role(role)
                            .set_labels(Some(labels.clone()))
                            .set_taints(Some(taints.clone()).filter(|t| !t.is_empty()))
                            .set_tags(Some(eks_tags.clone()))
                            .send()
                    })
                    .await;
                match created {
                    Ok(_) => {}
                    Err(e) if e.is(&["ResourceInUseException"]) => {
                        let d = self
                            .retry
                            .call(&what("DescribeNodegroup"), || {
                                self.eks.describe_nodegroup().cluster_name(&cluster).nodegroup_name(&group).send()
                            })
                            .await?;
                        let tags = d.nodegroup().and_then(|n| n.tags());
                        if !self.owns(r, tags.into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()))) {
                            return Err(self.not_ours(r, what("CreateNodegroup"), "EKS node group", &group));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Some(_) => {
                let d = self
                    .retry
                    .call(&what("DescribeNodegroup"), || self.eks.describe_nodegroup().cluster_name(&cluster).nodegroup_name(&group).send())
                    .await?;
                let ng = d.nodegroup().cloned().ok_or_else(|| missing(&what("DescribeNodegroup"), "nodegroup"))?;
                let have_scaling = ng.scaling_config().map(|s| (s.min_size(), s.max_size()));
                let have_labels: HashMap<String, String> = ng.labels().cloned().unwrap_or_default();
                let label_update = (have_labels != labels).then(|| {
                    ekst::UpdateLabelsPayload::builder()
                        .set_add_or_update_labels(Some(labels.clone()))
                        .set_remove_labels(Some(have_labels.keys().filter(|k| !labels.contains_key(*k)).cloned().collect()))
                        .build()
                });
                let have_taints: Vec<ekst::Taint> = ng.taints().to_vec();
                let taint_update = (have_taints != taints).then(|| {
                    ekst::UpdateTaintsPayload::builder()
                        .set_add_or_update_taints(Some(taints.clone()))
                        .set_remove_taints(Some(
                            have_taints.iter().filter(|t| !taints.iter().any(|w| w.key() == t.key())).cloned().collect(),
                        ))
                        .build()
                });
                let scaling_update = (have_scaling != Some((scaling.min_size(), scaling.max_size()))).then(|| {
                    // Keep the current desired size within the new bounds; the autoscaler owns it.
                    let current = ng.scaling_config().and_then(|s| s.desired_size()).unwrap_or(int(r, "minSize"));
                    ekst::NodegroupScalingConfig::builder()
                        .min_size(int(r, "minSize"))
                        .max_size(int(r, "maxSize"))
                        .desired_size(current.clamp(int(r, "minSize"), int(r, "maxSize").max(int(r, "minSize"))))
                        .build()
                });
                // After the control plane's (the graph orders it so): a node group may not
                // run a newer version than its cluster.
                let want_version = text(r, "version");
                if !want_version.is_empty() && ng.version().is_some_and(|v| v != want_version) {
                    println!("upgrading {} from {} to {want_version}", r.id, ng.version().unwrap_or("?"));
                    self.retry
                        .call(&what("UpdateNodegroupVersion"), || {
                            self.eks.update_nodegroup_version().cluster_name(&cluster).nodegroup_name(&group).version(want_version).send()
                        })
                        .await?;
                    self.wait_node_group(&r.id, &cluster, &group, false).await?;
                }
                if scaling_update.is_some() || label_update.is_some() || taint_update.is_some() {
                    self.retry
                        .call(&what("UpdateNodegroupConfig"), || {
                            self.eks
                                .update_nodegroup_config()
                                .cluster_name(&cluster)
                                .nodegroup_name(&group)
                                .set_scaling_config(scaling_update.clone())
                                .set_labels(label_update.clone())
                                .set_taints(taint_update.clone())
                                .send()
                        })
                        .await?;
                }
            }
        }
        self.wait_node_group(&r.id, &cluster, &group, false).await?;
        Ok(found(r, group, [("cluster", cluster)]))
    }

    pub(super) async fn delete_node_group(&self, f: &Found) -> Result<(), CloudError> {
        let cluster = f.outputs.get("cluster").cloned().unwrap_or_default();
        self.retry
            .call(&format!("eks DeleteNodegroup for {} {}", f.id, f.cloud_id), || {
                self.eks.delete_nodegroup().cluster_name(&cluster).nodegroup_name(&f.cloud_id).send()
            })
            .await?;
        self.wait_node_group(&f.id, &cluster, &f.cloud_id, true).await
    }
}

/// The name of a node group that replaces `old` while it still runs: `<base>-2`, then
/// `<base>-3`... (the base shortened so the name stays within EKS's 63 characters).
pub(crate) fn successor_name(base: &str, old: &str) -> String {
    let generation = if old == base {
        1
    } else {
        old.rsplit_once('-').filter(|(stem, _)| base.starts_with(stem)).and_then(|(_, n)| n.parse::<u32>().ok()).unwrap_or(1)
    };
    let suffix = format!("-{}", generation + 1);
    let keep = base.len().min(63 - suffix.len());
    // Node group names are ASCII (validated), so any byte index is a character boundary.
    format!("{}{suffix}", base.get(..keep).unwrap_or(base))
}

#[cfg(test)]
mod successor_tests {
    use super::successor_name;

    #[test]
    fn a_replacement_takes_the_next_name_within_63_characters() {
        assert_eq!(successor_name("risingwave", "risingwave"), "risingwave-2");
        assert_eq!(successor_name("risingwave", "risingwave-2"), "risingwave-3");
        assert_eq!(successor_name("pool-3", "pool-3"), "pool-3-2");
        let long = "a".repeat(63);
        let next = successor_name(&long, &long);
        assert_eq!((next.len(), next.ends_with("-2")), (63, true));
        assert_eq!(successor_name(&long, &next), format!("{}-3", "a".repeat(61)));
    }
}
