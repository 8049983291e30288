//! Identity on IAM: roles (service roles and IRSA roles with their trust, managed and
//! inline policies), the clusters' permissions boundary (a managed policy) and the EKS
//! cluster's OIDC provider that IRSA trusts.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{Aws, found, iam_tags, missing, ref_of, resolve, strings, text, unless_gone};
use crate::cloud::{CloudError, Found, Refs};
use crate::resource::{Kind, Map, Resource, ResourceId, Value};

/// Name of the inline policy byoc puts on a role.
const INLINE_POLICY: &str = "byoc";

impl Aws {
    pub(super) async fn observe_iam(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let prefix = format!("byoc-{}-", self.environment);
        let mut marker: Option<String> = None;
        loop {
            let page = self.retry.call("iam ListRoles", || self.iam.list_roles().set_marker(marker.clone()).send()).await?;
            // Role names are `byoc-<environment>-...` (the ARN the pods' annotation
            // names has no path); only those are asked for their tags.
            for role in page.roles().iter().filter(|r| r.role_name().starts_with(&prefix)) {
                let name = role.role_name();
                let t = self.retry.call(&format!("iam ListRoleTags {name}"), || self.iam.list_role_tags().role_name(name).send()).await?;
                if let Some(id) = self.ours(Kind::AwsIamRole, t.tags().iter().map(|t| (t.key(), t.value()))) {
                    out.push(Found {
                        live: Map::new(),
                        id,
                        kind: Kind::AwsIamRole,
                        cloud_id: name.to_owned(),
                        outputs: [("arn".to_owned(), role.arn().to_owned())].into(),
                    });
                }
            }
            marker = page.marker().map(str::to_owned);
            if !page.is_truncated() || marker.is_none() {
                break;
            }
        }
        // Managed policies byoc makes live under the environment's path.
        let path = crate::expand::aws::environment_path(&self.environment);
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .retry
                .call("iam ListPolicies", || {
                    self.iam
                        .list_policies()
                        .scope(aws_sdk_iam::types::PolicyScopeType::Local)
                        .path_prefix(&path)
                        .set_marker(marker.clone())
                        .send()
                })
                .await?;
            for p in page.policies() {
                let Some(arn) = p.arn() else { continue };
                let t =
                    self.retry.call(&format!("iam ListPolicyTags {arn}"), || self.iam.list_policy_tags().policy_arn(arn).send()).await?;
                if let Some(id) = self.ours(Kind::AwsIamPolicy, t.tags().iter().map(|t| (t.key(), t.value()))) {
                    out.push(Found { live: Map::new(), id, kind: Kind::AwsIamPolicy, cloud_id: arn.to_owned(), outputs: BTreeMap::new() });
                }
            }
            marker = page.marker().map(str::to_owned);
            if !page.is_truncated() || marker.is_none() {
                break;
            }
        }
        let providers = self.retry.call("iam ListOpenIDConnectProviders", || self.iam.list_open_id_connect_providers().send()).await?;
        for p in providers.open_id_connect_provider_list() {
            let Some(arn) = p.arn() else { continue };
            let got = self
                .retry
                .call(&format!("iam GetOpenIDConnectProvider {arn}"), || {
                    self.iam.get_open_id_connect_provider().open_id_connect_provider_arn(arn).send()
                })
                .await?;
            if let Some(id) = self.ours(Kind::AwsOidcProvider, got.tags().iter().map(|t| (t.key(), t.value()))) {
                let issuer = got.url().unwrap_or_default().to_owned();
                out.push(Found {
                    live: Map::new(),
                    id,
                    kind: Kind::AwsOidcProvider,
                    cloud_id: arn.to_owned(),
                    outputs: [("issuer".to_owned(), issuer)].into(),
                });
            }
        }
        Ok(())
    }
}

/// The trust policy of a role: a service, or a cluster's OIDC provider for one service
/// account (IRSA).
fn trust_policy(r: &Resource, refs: &Refs) -> Result<String, CloudError> {
    let Some(Value::Map(t)) = r.properties.get("trust") else {
        return Err(CloudError::new(r.id.to_string(), "no `trust`"));
    };
    if let Some(service) = t.get("service").and_then(Value::as_str) {
        return Ok(json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}).to_string());
    }
    let Some(Value::Ref(provider)) = t.get("federated") else {
        return Err(CloudError::new(r.id.to_string(), "`trust` names neither a service nor a federated provider"));
    };
    let p = refs.get(&provider.id).ok_or_else(|| CloudError::new(r.id.to_string(), format!("{} does not exist yet", provider.id)))?;
    let host = p.outputs.get("issuer").map(|i| i.trim_start_matches("https://").to_owned()).unwrap_or_default();
    let subject = t.get("subject").and_then(Value::as_str).unwrap_or_default();
    let audience = t.get("audience").and_then(Value::as_str).unwrap_or("sts.amazonaws.com");
    Ok(json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": p.cloud_id},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {format!("{host}:sub"): subject, format!("{host}:aud"): audience}}
    }]})
    .to_string())
}

/// The inline policy from `inlinePolicy` statements, `None` when there are none.
fn inline_policy(r: &Resource) -> Option<String> {
    policy_document(r, "inlinePolicy")
}

/// A policy document from the statements in property `prop`, `None` when there are none.
fn policy_document(r: &Resource, prop: &str) -> Option<String> {
    let Some(Value::List(statements)) = r.properties.get(prop) else { return None };
    let statements: Vec<serde_json::Value> = statements
        .iter()
        .filter_map(|s| {
            let Value::Map(m) = s else { return None };
            let mut st = json!({
                "Effect": m.get("effect").and_then(Value::as_str).unwrap_or("Allow"),
                "Action": strings(m.get("actions")),
                "Resource": strings(m.get("resources")),
            });
            if let Some(c) = m.get("condition") {
                st["Condition"] = serde_json::to_value(c).unwrap_or_default();
            }
            Some(st)
        })
        .collect();
    (!statements.is_empty()).then(|| json!({"Version": "2012-10-17", "Statement": statements}).to_string())
}

impl Aws {
    pub(super) async fn ensure_role(&self, r: &Resource, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("iam {op} for {}", r.id);
        let name = text(r, "name");
        let trust = trust_policy(r, refs)?;
        let tag_list = iam_tags(r);
        // A cluster's role lives under the clusters' path with the boundary attached in
        // the create call itself: the in-account daemon may create roles only so.
        let path = r.properties.get("path").and_then(Value::as_str);
        let boundary = match ref_of(r, "permissionsBoundary") {
            Some(id) => Some(resolve(refs, r, &id)?),
            None => None,
        };
        let created = self
            .retry
            .call_fresh(&what("CreateRole"), || {
                self.iam
                    .create_role()
                    .role_name(name)
                    .set_path(path.map(str::to_owned))
                    .set_permissions_boundary(boundary.map(str::to_owned))
                    .assume_role_policy_document(&trust)
                    .set_tags(Some(tag_list.clone()))
                    .send()
            })
            .await;
        let arn = match created {
            Ok(out) => out.role().map(|r| r.arn().to_owned()).ok_or_else(|| missing(&what("CreateRole"), "Role"))?,
            Err(e) if e.is(&["EntityAlreadyExists"]) => {
                // Ours (an update, or a create whose record was lost) only if tagged so:
                // a same-named role of someone else keeps its trust policy.
                let t = self.retry.call(&what("ListRoleTags"), || self.iam.list_role_tags().role_name(name).send()).await?;
                if !self.owns(r, t.tags().iter().map(|t| (t.key(), t.value()))) {
                    return Err(self.not_ours(r, what("CreateRole"), "IAM role", name));
                }
                self.retry
                    .call(&what("UpdateAssumeRolePolicy"), || {
                        self.iam.update_assume_role_policy().role_name(name).policy_document(&trust).send()
                    })
                    .await?;
                self.retry.call(&what("TagRole"), || self.iam.tag_role().role_name(name).set_tags(Some(tag_list.clone())).send()).await?;
                let got = self.retry.call(&what("GetRole"), || self.iam.get_role().role_name(name).send()).await?;
                let role = got.role().ok_or_else(|| missing(&what("GetRole"), "Role"))?;
                let live = role.permissions_boundary().and_then(|b| b.permissions_boundary_arn());
                if let Some(b) = boundary.filter(|b| live != Some(*b)) {
                    self.retry
                        .call(&what("PutRolePermissionsBoundary"), || {
                            self.iam.put_role_permissions_boundary().role_name(name).permissions_boundary(b).send()
                        })
                        .await?;
                }
                role.arn().to_owned()
            }
            Err(e) => return Err(e),
        };
        let want: BTreeSet<String> = strings(r.properties.get("managedPolicies")).into_iter().collect();
        let attached =
            self.retry.call(&what("ListAttachedRolePolicies"), || self.iam.list_attached_role_policies().role_name(name).send()).await?;
        let have: BTreeSet<String> = attached.attached_policies().iter().filter_map(|p| p.policy_arn().map(str::to_owned)).collect();
        for p in want.difference(&have) {
            self.retry.call(&what("AttachRolePolicy"), || self.iam.attach_role_policy().role_name(name).policy_arn(p).send()).await?;
        }
        for p in have.difference(&want) {
            self.retry.call(&what("DetachRolePolicy"), || self.iam.detach_role_policy().role_name(name).policy_arn(p).send()).await?;
        }
        if let Some(doc) = inline_policy(r) {
            self.retry
                .call(&what("PutRolePolicy"), || {
                    self.iam.put_role_policy().role_name(name).policy_name(INLINE_POLICY).policy_document(&doc).send()
                })
                .await?;
        }
        Ok(found(r, name, [("arn", arn)]))
    }

    pub(super) async fn delete_role(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("iam {op} for {} {}", f.id, f.cloud_id);
        let name = f.cloud_id.as_str();
        // NoSuchEntity from a list means the role is gone; from a detach or a policy
        // delete, only that policy is (the role is still deleted).
        let gone = &["NoSuchEntity"];
        let listed =
            self.retry.call(&what("ListAttachedRolePolicies"), || self.iam.list_attached_role_policies().role_name(name).send()).await;
        let Some(attached) = unless_gone(listed, gone)? else { return Ok(()) };
        for p in attached.attached_policies().iter().filter_map(|p| p.policy_arn()) {
            let r = self.retry.call(&what("DetachRolePolicy"), || self.iam.detach_role_policy().role_name(name).policy_arn(p).send()).await;
            unless_gone(r, gone)?;
        }
        let listed = self.retry.call(&what("ListRolePolicies"), || self.iam.list_role_policies().role_name(name).send()).await;
        let Some(inline) = unless_gone(listed, gone)? else { return Ok(()) };
        for p in inline.policy_names() {
            let r =
                self.retry.call(&what("DeleteRolePolicy"), || self.iam.delete_role_policy().role_name(name).policy_name(p).send()).await;
            unless_gone(r, gone)?;
        }
        let r = self.retry.call(&what("DeleteRole"), || self.iam.delete_role().role_name(name).send()).await;
        unless_gone(r, gone).map(drop)
    }

    /// A managed policy (the clusters' permissions boundary). Its ARN is its cloud id. An
    /// update makes the desired document the default version and deletes the others
    /// (IAM keeps at most five).
    pub(super) async fn ensure_policy(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let what = |op: &str| format!("iam {op} for {}", r.id);
        let doc = policy_document(r, "document").ok_or_else(|| CloudError::new(r.id.to_string(), "no `document` statements"))?;
        let arn = match existing {
            Some(f) => {
                let arn = f.cloud_id.as_str();
                self.retry
                    .call(&what("CreatePolicyVersion"), || {
                        self.iam.create_policy_version().policy_arn(arn).policy_document(&doc).set_as_default(true).send()
                    })
                    .await?;
                self.delete_old_versions(&f.id, arn).await?;
                arn.to_owned()
            }
            None => {
                let tag_list = iam_tags(r);
                let out = self
                    .retry
                    .call(&what("CreatePolicy"), || {
                        self.iam
                            .create_policy()
                            .policy_name(text(r, "name"))
                            .path(text(r, "path"))
                            .policy_document(&doc)
                            .set_tags(Some(tag_list.clone()))
                            .send()
                    })
                    .await?;
                out.policy().and_then(|p| p.arn()).ok_or_else(|| missing(&what("CreatePolicy"), "Policy.Arn"))?.to_owned()
            }
        };
        Ok(found(r, arn, []))
    }

    pub(super) async fn delete_old_versions(&self, id: &ResourceId, arn: &str) -> Result<(), CloudError> {
        let what = |op: &str| format!("iam {op} for {id} {arn}");
        let versions = self.retry.call(&what("ListPolicyVersions"), || self.iam.list_policy_versions().policy_arn(arn).send()).await?;
        for v in versions.versions().iter().filter(|v| !v.is_default_version()) {
            let Some(version) = v.version_id() else { continue };
            let r = self
                .retry
                .call(&what("DeletePolicyVersion"), || self.iam.delete_policy_version().policy_arn(arn).version_id(version).send())
                .await;
            unless_gone(r, &["NoSuchEntity"])?;
        }
        Ok(())
    }

    pub(super) async fn delete_policy(&self, f: &Found) -> Result<(), CloudError> {
        let arn = f.cloud_id.as_str();
        match self.delete_old_versions(&f.id, arn).await {
            Err(e) if e.is(&["NoSuchEntity"]) => return Ok(()),
            other => other?,
        }
        let r = self.retry.call(&format!("iam DeletePolicy for {} {arn}", f.id), || self.iam.delete_policy().policy_arn(arn).send()).await;
        unless_gone(r, &["NoSuchEntity"]).map(drop)
    }

    pub(super) async fn ensure_oidc(&self, r: &Resource, existing: Option<&Found>, refs: &Refs) -> Result<Found, CloudError> {
        let what = |op: &str| format!("iam {op} for {}", r.id);
        let cluster_id = ref_of(r, "cluster").ok_or_else(|| CloudError::new(r.id.to_string(), "`cluster` names no resource"))?;
        let cluster = refs.get(&cluster_id).ok_or_else(|| CloudError::new(r.id.to_string(), format!("{cluster_id} does not exist yet")))?;
        let issuer = cluster
            .outputs
            .get("issuer")
            .filter(|i| !i.is_empty())
            .ok_or_else(|| CloudError::new(r.id.to_string(), format!("{cluster_id} has no OIDC issuer")))?;
        let clients = strings(r.properties.get("clientIds"));
        let arn = match existing {
            Some(f) => {
                let got = self
                    .retry
                    .call(&what("GetOpenIDConnectProvider"), || {
                        self.iam.get_open_id_connect_provider().open_id_connect_provider_arn(&f.cloud_id).send()
                    })
                    .await?;
                for c in clients.iter().filter(|c| !got.client_id_list().contains(c)) {
                    self.retry
                        .call(&what("AddClientIDToOpenIDConnectProvider"), || {
                            self.iam
                                .add_client_id_to_open_id_connect_provider()
                                .open_id_connect_provider_arn(&f.cloud_id)
                                .client_id(c)
                                .send()
                        })
                        .await?;
                }
                f.cloud_id.clone()
            }
            None => {
                let tag_list = iam_tags(r);
                let out = self
                    .retry
                    .call(&what("CreateOpenIDConnectProvider"), || {
                        self.iam
                            .create_open_id_connect_provider()
                            .url(issuer)
                            .set_client_id_list(Some(clients.clone()))
                            .set_tags(Some(tag_list.clone()))
                            .send()
                    })
                    .await?;
                out.open_id_connect_provider_arn().ok_or_else(|| missing(&what("CreateOpenIDConnectProvider"), "arn"))?.to_owned()
            }
        };
        Ok(found(r, arn, [("issuer", issuer.clone())]))
    }

    pub(super) async fn delete_oidc(&self, f: &Found) -> Result<(), CloudError> {
        let what = |op: &str| format!("{op} for {} {}", f.id, f.cloud_id);
        let id = f.cloud_id.as_str();
        self.retry
            .call(&what("iam DeleteOpenIDConnectProvider"), || {
                self.iam.delete_open_id_connect_provider().open_id_connect_provider_arn(id).send()
            })
            .await
            .map(drop)
    }
}
