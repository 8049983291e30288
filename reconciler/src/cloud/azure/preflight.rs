//! Checks made before any change, every problem reported at once: the resource providers
//! the plan uses are registered in the subscription; the caller holds, at the resource
//! group or above, the roles to create the resources and to assign roles (Owner, or
//! Contributor with User Access Administrator or Role Based Access Control
//! Administrator); the API-server VNet integration feature flag's state is read and
//! reported.
//!
//! `Microsoft.ContainerService/EnableAPIServerVnetIntegrationPreview`: the preview pages
//! of "Create an AKS cluster with API Server VNet Integration (Preview)" (Microsoft Learn,
//! learn.microsoft.com/azure/aks/api-server-vnet-integration, and its docs.azure.cn copy)
//! required the flag, the aks-preview CLI extension and api-version 2022-04-02-preview or
//! later; the current page has dropped "(Preview)", applies to AKS Standard and AKS
//! Automatic, says AKS Automatic has the feature preconfigured and that in AKS Standard it
//! is "optional and must be enabled explicitly" (by `apiServerAccessProfile`), and the GA
//! SDK models carry `enableVnetIntegration` and `subnetId`. So at the GA api-version
//! [`super::api::CONTAINER_SERVICE`] the flag is not a prerequisite: an unregistered flag
//! is a note, not a problem.

use serde_json::Value as Json;

use super::identity::BUILT_IN_ROLES;
use super::{Azure, api, at_str};
use crate::plan::{Action, Plan};
use crate::resource::Kind;

/// The preview feature flag of API-server VNet integration.
pub const VNET_INTEGRATION_FEATURE: &str = "EnableAPIServerVnetIntegrationPreview";

/// What preflight found.
#[derive(Debug, Default)]
pub struct Preflight {
    /// Who the calls are made as (the token's object id), when known.
    pub caller: String,
    /// Every problem, each naming the provider, feature or role.
    pub problems: Vec<String>,
    /// What was read but is not a problem, and checks that could not be made.
    pub notes: Vec<String>,
}

/// The resource provider namespace a kind is created through. The private DNS zone, its
/// VNet link and the endpoints' zone groups are Microsoft.Network's: the caller's
/// Contributor covers writing them (the role check below), and the agent, which only
/// observes them, reads them with Monitoring Reader's `*/read`.
fn namespace(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::AzureVnet
        | Kind::AzureSubnet
        | Kind::AzureNsg
        | Kind::AzurePublicIp
        | Kind::AzureNatGateway
        | Kind::AzurePrivateEndpoint
        | Kind::AzurePrivateDnsZone
        | Kind::AzurePrivateDnsZoneLink
        | Kind::AzurePrivateDnsZoneGroup => "Microsoft.Network",
        Kind::AzureAksCluster | Kind::AzureNodePool => "Microsoft.ContainerService",
        Kind::AzureStorageAccount | Kind::AzureBlobContainer => "Microsoft.Storage",
        Kind::AzureManagedIdentity | Kind::AzureFederatedCredential => "Microsoft.ManagedIdentity",
        _ => return None,
    })
}

fn role_guid(name: &str) -> &'static str {
    BUILT_IN_ROLES.iter().find(|(n, _)| *n == name).map_or("", |(_, g)| *g)
}

/// Role Based Access Control Administrator (may assign roles, like User Access Administrator).
const RBAC_ADMIN: &str = "f58310d9-a9f6-439a-9e8d-f62e7b41a168";

/// Whether roles held (definition GUIDs) let the caller create and assign what byoc makes.
pub fn roles_suffice(held: &[String]) -> bool {
    let has = |g: &str| held.iter().any(|h| h.eq_ignore_ascii_case(g));
    has(role_guid("Owner")) || (has(role_guid("Contributor")) && (has(role_guid("User Access Administrator")) || has(RBAC_ADMIN)))
}

/// The `oid` claim of a JWT access token (the caller's object id), if it is one.
pub fn token_object_id(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Json = serde_json::from_slice(&bytes).ok()?;
    claims.get("oid").and_then(Json::as_str).map(str::to_owned)
}

impl Azure {
    /// The checks for `plan`.
    pub async fn preflight(&self, plan: &Plan) -> Preflight {
        let mut out = Preflight::default();
        let creating: Vec<Kind> =
            plan.steps.iter().filter(|s| matches!(s.action, Action::Create | Action::Update | Action::Replace)).map(|s| s.kind).collect();
        let mut namespaces: Vec<&str> = creating.iter().filter_map(|k| namespace(*k)).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        for ns in namespaces {
            let path = format!("{}/providers/{ns}", self.sub_path());
            match self.arm.get(&format!("GET provider {ns}"), &path, api::RESOURCES).await {
                Ok(Some(p)) if at_str(&p, "registrationState").eq_ignore_ascii_case("Registered") => {}
                Ok(Some(p)) => out.problems.push(format!(
                    "resource provider {ns} is {} in subscription {}: register it (az provider register --namespace {ns})",
                    Some(at_str(&p, "registrationState")).filter(|s| !s.is_empty()).unwrap_or("not registered"),
                    self.subscription
                )),
                Ok(None) => out.problems.push(format!("resource provider {ns} is unknown in subscription {}", self.subscription)),
                Err(e) => out.problems.push(format!("cannot read the registration of {ns}: {e}")),
            }
        }
        if creating.contains(&Kind::AzureAksCluster) {
            let path = format!(
                "{}/providers/Microsoft.Features/providers/Microsoft.ContainerService/features/{VNET_INTEGRATION_FEATURE}",
                self.sub_path()
            );
            match self.arm.get("GET feature", &path, api::FEATURES).await {
                Ok(Some(f)) if at_str(&f, "properties.state").eq_ignore_ascii_case("Registered") => {}
                Ok(_) => out.notes.push(format!(
                    "feature Microsoft.ContainerService/{VNET_INTEGRATION_FEATURE} is not registered; API-server VNet integration is generally available at api-version {}, so it is not needed",
                    api::CONTAINER_SERVICE
                )),
                Err(e) => out.notes.push(format!("cannot read feature {VNET_INTEGRATION_FEATURE}: {e}")),
            }
        }
        self.caller_roles(&mut out).await;
        out
    }

    async fn caller_roles(&self, out: &mut Preflight) {
        let Some(oid) = self.arm.token().await.as_deref().and_then(token_object_id) else {
            out.notes.push("the caller's role assignments were not checked: its token names no object id".to_owned());
            return;
        };
        out.caller = oid.clone();
        let path = format!("{}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{oid}'", self.sub_path());
        let assignments = match self.arm.list("list the caller's roleAssignments", &path, api::AUTHORIZATION).await {
            Ok(a) => a,
            Err(e) => {
                out.problems.push(format!("cannot read the caller's role assignments: {e}"));
                return;
            }
        };
        // At the resource group or above (the subscription, a management group).
        let rg = self.rg_path().to_ascii_lowercase();
        let held: Vec<String> = assignments
            .iter()
            .filter(|a| {
                let scope = at_str(a, "properties.scope").to_ascii_lowercase();
                rg == scope || rg.starts_with(&format!("{}/", scope.trim_end_matches('/'))) || scope == "/"
            })
            .filter_map(|a| at_str(a, "properties.roleDefinitionId").rsplit('/').next().map(str::to_owned))
            .collect();
        if !roles_suffice(&held) {
            out.problems.push(format!(
                "the caller ({oid}) holds neither Owner nor Contributor with User Access Administrator on resource group {} or above: it could not create the resources or assign the identities' roles; assign them (az role assignment create --assignee {oid} --role Owner --scope {})",
                self.resource_group,
                self.rg_path()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn the_callers_object_id_comes_from_its_token_and_the_roles_are_judged() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"oid":"1111","tid":"t"}"#);
        assert_eq!(token_object_id(&format!("h.{claims}.s")).as_deref(), Some("1111"));
        assert_eq!(token_object_id("opaque"), None);
        let g = |n: &str| role_guid(n).to_owned();
        assert!(roles_suffice(&[g("Owner")]));
        assert!(roles_suffice(&[g("Contributor"), g("User Access Administrator")]));
        assert!(!roles_suffice(&[g("Contributor")]), "Contributor alone cannot assign roles");
        assert!(!roles_suffice(&[]));
    }
}
