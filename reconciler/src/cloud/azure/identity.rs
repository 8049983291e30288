//! Microsoft.ManagedIdentity ([`api::MANAGED_IDENTITY`]) and Microsoft.Authorization
//! ([`api::AUTHORIZATION`]): user-assigned identities (tagged), their federated
//! credentials (children of our identities, named `byoc-<env>-...`), and role
//! assignments at the narrowest scope the graph names (a subnet, the data container, the
//! resource group), named by a GUID derived from the environment and the resource id with
//! the owner in the description. A PUT answered 409 RoleAssignmentExists is done: the
//! assignment is there.

use serde_json::{Value as Json, json};

use super::{Azure, Found, Refs, api, at_str, found_json, resolve, strings, text};
use crate::cloud::CloudError;
use crate::expand::names;
use crate::resource::{Kind, Resource, ResourceId, Value};

/// Built-in role definition ids (the same GUID in every subscription), by role name.
pub const BUILT_IN_ROLES: &[(&str, &str)] = &[
    ("Network Contributor", "4d97b98b-1d4f-4787-a291-c67834d212e7"),
    ("Monitoring Reader", "43d0d8ad-25c7-4714-9337-8ba259a9fe05"),
    ("Storage Blob Data Contributor", "ba92f5b4-2d11-453d-a403-e96b0029c9fe"),
    ("Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c"),
    ("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"),
    ("User Access Administrator", "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"),
    ("Role Based Access Control Administrator", "f58310d9-a9f6-439a-9e8d-f62e7b41a168"),
    ("Managed Identity Contributor", "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59"),
];

/// The role definition id of a role name (or a GUID given as is).
pub fn role_definition(subscription: &str, role: &str) -> Result<String, String> {
    let guid = BUILT_IN_ROLES
        .iter()
        .find(|(n, _)| *n == role)
        .map(|(_, g)| *g)
        .or_else(|| names::AZURE_ROLE_ASSIGNMENT.check(role).ok().map(|()| role));
    guid.map(|g| format!("/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{g}"))
        .ok_or_else(|| format!("role {role:?} is not a built-in role byoc knows; give its definition GUID"))
}

fn identity_outputs(f: &mut Found, mi: &Json) {
    for (k, path) in [("principalId", "properties.principalId"), ("clientId", "properties.clientId"), ("tenantId", "properties.tenantId")] {
        let v = at_str(mi, path);
        if !v.is_empty() {
            f.outputs.insert(k.into(), v.to_owned());
        }
    }
}

impl Azure {
    pub(super) async fn observe_identity(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let ids = self
            .observe_type(Kind::AzureManagedIdentity, "Microsoft.ManagedIdentity/userAssignedIdentities", api::MANAGED_IDENTITY, out)
            .await?;
        let prefix = format!("byoc-{}-", self.environment);
        for (id, mi) in &ids {
            if let Some(f) = out.iter_mut().find(|f| &f.id == id) {
                identity_outputs(f, mi);
            }
            let mi_id = mi.get("id").and_then(Json::as_str).unwrap_or_default();
            let path = format!("{mi_id}/federatedIdentityCredentials");
            for fc in self.arm.list("list federatedIdentityCredentials", &path, api::MANAGED_IDENTITY).await? {
                let name = fc.get("name").and_then(Json::as_str).unwrap_or_default();
                let fid = self
                    .known(Kind::AzureFederatedCredential, &fc)
                    .or_else(|| name.strip_prefix(&prefix).map(|who| ResourceId::new(Kind::AzureFederatedCredential, who)));
                if let Some(fid) = fid {
                    out.push(found_json(fid, Kind::AzureFederatedCredential, &fc));
                }
            }
        }
        Ok(())
    }

    /// The role assignments of our identities: by principal, each matched by name (the
    /// derived GUID) or, when neither desired nor recorded, by the owner in its description.
    /// Listed at the resource group, which with a principal filter gives the assignments at,
    /// above and below it: every scope byoc assigns at is in the group, and the daemon's
    /// identity may read role assignments there but not in the whole subscription.
    pub(super) async fn observe_role_assignments(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        let principals: Vec<String> =
            out.iter().filter(|f| f.kind == Kind::AzureManagedIdentity).filter_map(|f| f.outputs.get("principalId").cloned()).collect();
        for principal in principals {
            let path =
                format!("{}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{principal}'", self.rg_path());
            for ra in self.arm.list("list roleAssignments", &path, api::AUTHORIZATION).await? {
                let by_owner = || {
                    let (env, id) = names::gcp::owner_of(at_str(&ra, "properties.description"))?;
                    (env == self.environment).then(|| ResourceId::parse(id)).flatten().map(|(_, id)| id)
                };
                if let Some(id) = self.known(Kind::AzureRoleAssignment, &ra).or_else(by_owner) {
                    out.push(found_json(id, Kind::AzureRoleAssignment, &ra));
                }
            }
        }
        Ok(())
    }

    pub(super) async fn ensure_identity(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let path = format!("{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}", self.rg_path(), text(r, "name"));
        let mi = self.put_tagged(r, existing, &path, api::MANAGED_IDENTITY, json!({})).await?;
        let mut f = found_json(r.id.clone(), r.kind, &mi);
        identity_outputs(&mut f, &mi);
        Ok(f)
    }

    pub(super) async fn ensure_federated(&self, r: &Resource, refs: &Refs) -> Result<Found, CloudError> {
        let mi = resolve(refs, r, "identity")?;
        let cluster = resolve(refs, r, "issuer")?;
        let issuer = cluster
            .outputs
            .get("issuer")
            .ok_or_else(|| CloudError::new(r.id.to_string(), format!("{} has no OIDC issuer URL yet", cluster.id)))?;
        let path = format!("{}/federatedIdentityCredentials/{}", mi.cloud_id, text(r, "name"));
        let body = json!({"properties": {
            "issuer": issuer,
            "subject": text(r, "subject"),
            "audiences": strings(r.properties.get("audiences")),
        }});
        let fc = self.arm.put(&format!("PUT federatedIdentityCredential for {}", r.id), &path, api::MANAGED_IDENTITY, &body).await?;
        Ok(found_json(r.id.clone(), r.kind, &fc))
    }

    pub(super) async fn ensure_role_assignment(&self, r: &Resource, refs: &Refs) -> Result<Found, CloudError> {
        let scope = resolve(refs, r, "scope")?.cloud_id.clone();
        let principal = resolve(refs, r, "principal")?;
        let principal_id = principal
            .outputs
            .get("principalId")
            .ok_or_else(|| CloudError::new(r.id.to_string(), format!("{} has no principal id", principal.id)))?;
        let role = role_definition(&self.subscription, text(r, "role")).map_err(|m| CloudError::new(r.id.to_string(), m))?;
        let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{}", text(r, "name"));
        let mut props = json!({
            "roleDefinitionId": role,
            "principalId": principal_id,
            "principalType": "ServicePrincipal",
            "description": text(r, "description"),
        });
        if let Some(c) = r.properties.get("condition").and_then(Value::as_str) {
            props["condition"] = json!(c);
            props["conditionVersion"] = json!(text(r, "conditionVersion"));
        }
        let what = format!("PUT roleAssignment for {}", r.id);
        let ra = match self.arm.put(&what, &path, api::AUTHORIZATION, &json!({"properties": props})).await {
            Ok(ra) => ra,
            // The same assignment under another name (made by hand, or by an apply that
            // stopped before recording it): the right is there, which is what was wanted.
            Err(e) if e.is(&["RoleAssignmentExists"]) => {
                let mut ra = self.arm.get(&what, &path, api::AUTHORIZATION).await?.unwrap_or(Json::Null);
                if ra.get("id").is_none() {
                    ra = json!({"id": path});
                }
                ra
            }
            Err(e) => return Err(e),
        };
        Ok(found_json(r.id.clone(), r.kind, &ra))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_the_policies_have_definitions_and_an_unknown_name_is_refused() {
        let sub = "00000000-0000-0000-0000-000000000001";
        use crate::expand::permissions::{AZURE_AGENT_ROLES, AZURE_AGENT_STATE_ROLES, AZURE_CLUSTER_ROLES};
        for role in AZURE_AGENT_ROLES.iter().chain(AZURE_AGENT_STATE_ROLES).chain(AZURE_CLUSTER_ROLES) {
            let id = role_definition(sub, role).unwrap_or_else(|e| panic!("{e}"));
            assert!(id.starts_with(&format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/")), "{id}");
        }
        assert!(role_definition(sub, "Storage Blob Data Owner (typo)").is_err());
    }
}
