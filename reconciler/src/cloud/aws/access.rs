//! Who administers the EKS cluster: access entries (authentication mode `API`), each with
//! an access policy associated on the whole cluster. EKS tags access entries, so they are
//! found by the ownership tags like everything else; their cloud id is
//! `<cluster> <principal ARN>`, the two names every call on them takes.

use std::collections::HashMap;

use aws_sdk_eks::types as ekst;

use super::{Aws, resolve_prop, tags, text};
use crate::cloud::{CloudError, Found, Refs};
use crate::resource::{Kind, Map, Resource};

/// The cloud id of the access entry of `principal` on `cluster`.
fn entry_id(cluster: &str, principal: &str) -> String {
    format!("{cluster} {principal}")
}

impl Aws {
    /// The access entries of EKS cluster `cluster` tagged as this environment's.
    pub(super) async fn observe_access_entries(&self, cluster: &str, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let mut principals = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .retry
                .call(&format!("eks ListAccessEntries {cluster}"), || {
                    self.eks.list_access_entries().cluster_name(cluster).set_next_token(token.clone()).send()
                })
                .await?;
            principals.extend(page.access_entries().iter().cloned());
            token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for principal in &principals {
            let d = self
                .retry
                .call(&format!("eks DescribeAccessEntry {cluster} {principal}"), || {
                    self.eks.describe_access_entry().cluster_name(cluster).principal_arn(principal).send()
                })
                .await;
            // Deleted between the list and the read.
            let d = match d {
                Err(e) if e.is(&["ResourceNotFoundException"]) => continue,
                other => other?,
            };
            let Some(entry) = d.access_entry() else { continue };
            if let Some(id) = self.ours(Kind::AwsEksAccessEntry, entry.tags().into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str())))
            {
                out.push(Found {
                    live: Map::new(),
                    id,
                    kind: Kind::AwsEksAccessEntry,
                    cloud_id: entry_id(cluster, principal),
                    outputs: [("arn".to_owned(), entry.access_entry_arn().unwrap_or_default().to_owned())].into(),
                });
            }
        }
        Ok(())
    }

    pub(super) async fn ensure_access_entry(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("eks {op} for {}", r.id);
        let cluster = resolve_prop(refs, r, "cluster")?.to_owned();
        let principal = text(r, "principal");
        let mut arn = existing.and_then(|f| f.outputs.get("arn").cloned()).unwrap_or_default();
        if existing.is_none() {
            let eks_tags: HashMap<String, String> = tags(r).into_iter().collect();
            let created = self
                .retry
                .call_fresh(&what("CreateAccessEntry"), || {
                    self.eks
                        .create_access_entry()
                        .cluster_name(&cluster)
                        .principal_arn(principal)
                        .r#type("STANDARD")
                        .set_tags(Some(eks_tags.clone()))
                        .send()
                })
                .await;
            match created {
                Ok(out) => arn = out.access_entry().and_then(|e| e.access_entry_arn()).unwrap_or_default().to_owned(),
                // One made by a run that stopped before recording it is ours by its tags;
                // any other (EKS's own for the creator, someone's by hand) is not taken over.
                Err(e) if e.is(&["ResourceInUseException"]) => {
                    let d = self
                        .retry
                        .call(&what("DescribeAccessEntry"), || {
                            self.eks.describe_access_entry().cluster_name(&cluster).principal_arn(principal).send()
                        })
                        .await?;
                    let entry = d.access_entry();
                    if !self.owns(r, entry.and_then(|e| e.tags()).into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()))) {
                        return Err(self.not_ours(r, what("CreateAccessEntry"), "EKS access entry for", principal));
                    }
                    arn = entry.and_then(|e| e.access_entry_arn()).unwrap_or_default().to_owned();
                }
                Err(e) => return Err(e),
            }
        }
        // Associating a policy already associated answers 200 with the association: the
        // call converges the entry whether it is new or not.
        let scope = ekst::AccessScope::builder().r#type(if text(r, "scope") == "cluster" {
            ekst::AccessScopeType::Cluster
        } else {
            ekst::AccessScopeType::Namespace
        });
        let scope = scope.build();
        self.retry
            .call(&what("AssociateAccessPolicy"), || {
                self.eks
                    .associate_access_policy()
                    .cluster_name(&cluster)
                    .principal_arn(principal)
                    .policy_arn(text(r, "policy"))
                    .access_scope(scope.clone())
                    .send()
            })
            .await?;
        Ok(Found {
            live: Map::new(),
            id: r.id.clone(),
            kind: r.kind,
            cloud_id: entry_id(&cluster, principal),
            outputs: [("arn".to_owned(), arn)].into(),
        })
    }

    pub(super) async fn delete_access_entry(&self, f: &crate::cloud::Found) -> Result<(), CloudError> {
        let Some((cluster, principal)) = f.cloud_id.split_once(' ') else {
            return Err(CloudError::new(f.id.to_string(), format!("{:?} is not `<cluster> <principal ARN>`", f.cloud_id)));
        };
        let r = self
            .retry
            .call(&format!("eks DeleteAccessEntry for {} {}", f.id, f.cloud_id), || {
                self.eks.delete_access_entry().cluster_name(cluster).principal_arn(principal).send()
            })
            .await;
        match r {
            Err(e) if e.is(&["ResourceNotFoundException"]) => Ok(()),
            other => other.map(drop),
        }
    }
}
