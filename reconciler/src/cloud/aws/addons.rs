//! EKS managed add-ons (the EBS CSI driver), each with its IRSA role: created, waited for
//! until ACTIVE, their role converged in place, deleted.

use std::collections::HashMap;

use aws_sdk_eks::types as ekst;

use super::{Aws, Wait, found, resolve_prop, tags, text};
use crate::cloud::{CloudError, Found};
use crate::resource::{Kind, Map, Resource, ResourceId};

impl Aws {
    /// The add-ons of cluster `cluster` that are this environment's.
    pub(super) async fn observe_addons(&self, cluster: &str, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .retry
                .call(&format!("eks ListAddons {cluster}"), || {
                    self.eks.list_addons().cluster_name(cluster).set_next_token(token.clone()).send()
                })
                .await?;
            names.extend(page.addons().iter().cloned());
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for name in &names {
            let d = self
                .retry
                .call(&format!("eks DescribeAddon {cluster}/{name}"), || {
                    self.eks.describe_addon().cluster_name(cluster).addon_name(name).send()
                })
                .await?;
            let Some(a) = d.addon() else { continue };
            if a.status() == Some(&ekst::AddonStatus::Deleting) {
                continue;
            }
            if let Some(id) = self.ours(Kind::AwsEksAddon, a.tags().into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()))) {
                out.push(Found {
                    live: Map::new(),
                    id,
                    kind: Kind::AwsEksAddon,
                    cloud_id: name.clone(),
                    outputs: [("cluster".to_owned(), cluster.to_owned())].into(),
                });
            }
        }
        Ok(())
    }

    async fn wait_addon(&self, id: &ResourceId, cluster: &str, name: &str, gone: bool) -> Result<(), CloudError> {
        self.wait(id, || async {
            let d = self
                .retry
                .call(&format!("eks DescribeAddon {cluster}/{name}"), || {
                    self.eks.describe_addon().cluster_name(cluster).addon_name(name).send()
                })
                .await;
            Ok(match d {
                Err(e) if gone && e.is(&["ResourceNotFoundException"]) => Wait::Done,
                Err(e) => return Err(e),
                Ok(d) => match d.addon().and_then(|a| a.status().cloned()) {
                    Some(ekst::AddonStatus::Active) if !gone => Wait::Done,
                    Some(s @ (ekst::AddonStatus::CreateFailed | ekst::AddonStatus::DeleteFailed | ekst::AddonStatus::UpdateFailed)) => {
                        let issues: Vec<String> = d
                            .addon()
                            .and_then(|a| a.health())
                            .map(|h| h.issues().iter().filter_map(|i| i.message().map(str::to_owned)).collect())
                            .unwrap_or_default();
                        Wait::Failed(format!("EKS add-on {name} is {}: {}", s.as_str(), issues.join("; ")))
                    }
                    other => Wait::Pending(other.map_or("unknown".to_owned(), |s| s.as_str().to_owned())),
                },
            })
        })
        .await
    }

    pub(super) async fn ensure_addon(
        &self,
        r: &Resource,
        existing: Option<&Found>,
        refs: &crate::cloud::Refs,
    ) -> Result<Found, CloudError> {
        let what = |op: &str| format!("eks {op} for {}", r.id);
        let cluster = resolve_prop(refs, r, "cluster")?.to_owned();
        let name = text(r, "name").to_owned();
        let role = resolve_prop(refs, r, "serviceAccountRole")?.to_owned();
        if existing.is_none() {
            let eks_tags: HashMap<String, String> = tags(r).into_iter().collect();
            let created = self
                .retry
                .call_fresh(&what("CreateAddon"), || {
                    self.eks
                        .create_addon()
                        .cluster_name(&cluster)
                        .addon_name(&name)
                        .service_account_role_arn(&role)
                        // What another tool set in the add-on's objects is taken over.
                        .resolve_conflicts(ekst::ResolveConflicts::Overwrite)
                        .set_tags(Some(eks_tags.clone()))
                        .send()
                })
                .await;
            match created {
                Ok(_) => {}
                // Made by a run that stopped before recording it, or someone else's.
                Err(e) if e.is(&["ResourceInUseException"]) => {
                    let d = self
                        .retry
                        .call(&what("DescribeAddon"), || self.eks.describe_addon().cluster_name(&cluster).addon_name(&name).send())
                        .await?;
                    let tags = d.addon().and_then(|a| a.tags());
                    if !self.owns(r, tags.into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()))) {
                        return Err(self.not_ours(r, what("CreateAddon"), "EKS add-on", &name));
                    }
                }
                Err(e) => return Err(e),
            }
        } else {
            let d = self
                .retry
                .call(&what("DescribeAddon"), || self.eks.describe_addon().cluster_name(&cluster).addon_name(&name).send())
                .await?;
            if d.addon().and_then(|a| a.service_account_role_arn()) != Some(role.as_str()) {
                self.retry
                    .call(&what("UpdateAddon"), || {
                        self.eks
                            .update_addon()
                            .cluster_name(&cluster)
                            .addon_name(&name)
                            .service_account_role_arn(&role)
                            .resolve_conflicts(ekst::ResolveConflicts::Overwrite)
                            .send()
                    })
                    .await?;
            }
        }
        self.wait_addon(&r.id, &cluster, &name, false).await?;
        Ok(found(r, name, [("cluster", cluster)]))
    }

    pub(super) async fn delete_addon(&self, f: &Found) -> Result<(), CloudError> {
        let cluster = f.outputs.get("cluster").cloned().unwrap_or_default();
        self.retry
            .call(&format!("eks DeleteAddon for {} {}", f.id, f.cloud_id), || {
                self.eks.delete_addon().cluster_name(&cluster).addon_name(&f.cloud_id).send()
            })
            .await?;
        self.wait_addon(&f.id, &cluster, &f.cloud_id, true).await
    }
}
