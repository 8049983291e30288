//! Managed identities as callers: Entra's workload-identity federation (a client-assertion
//! grant whose assertion a federated identity credential of the identity trusts), and ARM's
//! authorization of what such a caller asks for, by the actions of the roles assigned to its
//! principal at or above the request's scope.
//!
//! The bootstrap service principal is judged as before (`Options::caller_roles`); a managed
//! identity always by its role assignments in the fake, so the daemon's calls are checked
//! against exactly the roles byoc assigned to the agent's identity.

use serde_json::{Value, json};

use super::{RA_KIND, ROLE_DEFINITIONS, Reply, Req, State, covers, error, last_segment, str_at};

/// The assertion type of a federated client-credentials grant.
pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The built-in roles' `Actions` and `NotActions`, written from Microsoft's "Azure built-in
/// roles" reference (control-plane actions only: no data actions are judged here). A role
/// not listed grants nothing.
const ROLE_ACTIONS: &[(&str, &[&str], &[&str])] = &[
    ("Owner", &["*"], &[]),
    (
        "Contributor",
        &["*"],
        &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
            "Microsoft.Purview/consents/write",
            "Microsoft.Purview/consents/delete",
            "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
            "Microsoft.Subscription/cancel/action",
            "Microsoft.Subscription/enable/action",
        ],
    ),
    ("Reader", &["*/read"], &[]),
    ("User Access Administrator", &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"], &[]),
    (
        "Role Based Access Control Administrator",
        &[
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
            "*/read",
            "Microsoft.Support/*",
        ],
        &[],
    ),
    (
        "Network Contributor",
        &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Network/*",
            "Microsoft.ResourceHealth/availabilityStatuses/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Support/*",
        ],
        &[],
    ),
    (
        "Managed Identity Contributor",
        &[
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/revokeTokens/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Support/*",
        ],
        &[],
    ),
    (
        "Managed Identity Operator",
        &[
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Support/*",
        ],
        &[],
    ),
    ("Monitoring Reader", &["*/read", "Microsoft.OperationalInsights/workspaces/search/action", "Microsoft.Support/*"], &[]),
    (
        "Storage Blob Data Contributor",
        &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/write",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        &[],
    ),
    (
        "Storage Blob Data Reader",
        &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        &[],
    ),
];

/// Whether an action matches a role's action pattern (`*` stands for any text; ARM
/// compares case-insensitively).
fn matches(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match p.split_first() {
            None => a.is_empty(),
            Some((b'*', rest)) => (0..=a.len()).any(|i| go(rest, &a[i..])),
            Some((c, rest)) => a.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && go(rest, &a[1..]),
        }
    }
    go(pattern.as_bytes(), action.as_bytes())
}

/// Whether a role (by name) allows an action.
pub(crate) fn role_allows(role: &str, action: &str) -> bool {
    ROLE_ACTIONS
        .iter()
        .find(|(name, _, _)| *name == role)
        .is_some_and(|(_, actions, not)| actions.iter().any(|p| matches(p, action)) && !not.iter().any(|p| matches(p, action)))
}

/// The action and the scope (lower-case path) a request asks for, as ARM names them:
/// `{namespace}/{type}[/{child type}]/{read|write|delete}` at the resource (a list at its
/// parent), resource groups as `Microsoft.Resources/subscriptions/resourceGroups/...`,
/// role assignments as `Microsoft.Authorization/roleAssignments/...` at their scope.
pub(super) fn action_of(method: &str, segs: &[String], lower: &[String]) -> (String, String) {
    let verb = match method {
        "GET" | "HEAD" => "read",
        "DELETE" => "delete",
        _ => "write",
    };
    let scope = format!("/{}", lower.join("/"));
    // Under any scope: .../providers/Microsoft.Authorization/{type}[/{name}]
    if let Some(i) =
        (2..lower.len().saturating_sub(1)).rev().find(|&i| lower[i] == "providers" && lower[i + 1] == "microsoft.authorization")
    {
        let t = segs.get(i + 2).map_or("roleAssignments", String::as_str);
        return (format!("Microsoft.Authorization/{t}/{verb}"), format!("/{}", lower[..i].join("/")));
    }
    if lower.len() <= 4 && lower.get(2).is_some_and(|s| s == "resourcegroups") {
        return (format!("Microsoft.Resources/subscriptions/resourceGroups/{verb}"), scope);
    }
    // /subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}/...
    let start = if lower.get(2).is_some_and(|s| s == "resourcegroups") { 5 } else { 3 };
    if lower.len() > start && lower[start - 1] == "providers" {
        let mut action = segs[start].clone();
        for t in segs[start + 1..].iter().step_by(2) {
            action.push('/');
            action.push_str(t);
        }
        return (format!("{action}/{verb}"), scope);
    }
    (format!("Microsoft.Resources/subscriptions/{verb}"), scope)
}

/// The role definition GUIDs an ABAC condition names (`GuidEquals {a, b}`).
fn condition_guids(condition: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in condition.split("GuidEquals").skip(1) {
        if let Some(list) = part.split_once('{').and_then(|(_, r)| r.split_once('}')).map(|(l, _)| l) {
            out.extend(list.split(',').map(|g| g.trim().to_ascii_lowercase()).filter(|g| !g.is_empty()));
        }
    }
    out
}

impl State {
    /// A federated client-credentials grant for a user-assigned identity: the assertion's
    /// issuer, subject and audience must match one of the identity's federated identity
    /// credentials. The token names the identity's principal.
    pub(super) fn federated_token(&mut self, client_id: &str, assertion: &str, scope: &str) -> Reply {
        let entra = |status: u16, error: &str, code: i64, description: String| {
            Reply::json(status, json!({"error": error, "error_description": description, "error_codes": [code]}))
        };
        let identity = self.resources.iter().find(|(_, e)| {
            e.kind == "microsoft.managedidentity/userassignedidentities" && str_at(&e.json, &["properties", "clientId"]) == Some(client_id)
        });
        let Some((key, identity)) = identity else {
            return entra(
                400,
                "unauthorized_client",
                700016,
                format!("AADSTS700016: Application with identifier '{client_id}' was not found in the directory."),
            );
        };
        let principal = str_at(&identity.json, &["properties", "principalId"]).unwrap_or_default().to_owned();
        let claims = assertion_claims(assertion);
        let (iss, sub) = (str_at(&claims, &["iss"]).unwrap_or_default(), str_at(&claims, &["sub"]).unwrap_or_default());
        let auds: Vec<String> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let prefix = format!("{key}/federatedidentitycredentials/");
        let trusted = self.resources.iter().filter(|(k, _)| k.starts_with(&prefix)).any(|(_, fc)| {
            let p = &fc.json["properties"];
            str_at(p, &["issuer"]) == Some(iss)
                && str_at(p, &["subject"]) == Some(sub)
                && p["audiences"].as_array().is_some_and(|a| a.iter().filter_map(Value::as_str).any(|x| auds.iter().any(|y| y == x)))
        });
        if !trusted {
            return entra(
                400,
                "invalid_request",
                70021,
                format!(
                    "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{}'.",
                    auds.join(",")
                ),
            );
        }
        let token = self.jwt_for(scope.trim_end_matches("/.default"), client_id, &principal);
        self.tokens.insert(token.clone());
        self.identity_tokens.insert(token.clone(), (principal, client_id.to_owned()));
        Reply::json(200, json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))
    }

    /// The managed identity a request's token was issued to: (principal, client id).
    pub(super) fn identity_caller(&self, req: &Req) -> Option<(String, String)> {
        let token = req.authorization.as_deref()?.strip_prefix("Bearer ")?;
        self.identity_tokens.get(token).cloned()
    }

    /// ARM's authorization of a managed identity's request: some role assigned to its
    /// principal at or above the scope allows the action (and, for a role assignment write
    /// or delete granted under an ABAC condition, the condition names the role concerned).
    pub(super) fn judge_identity(
        &self,
        principal: &str,
        client_id: &str,
        req: &Req,
        segs: &[String],
        lower: &[String],
    ) -> Result<(), Reply> {
        let (action, scope) = action_of(&req.method, segs, lower);
        // The role an assignment write or delete concerns, for conditions.
        let concerned = if action.starts_with("Microsoft.Authorization/roleAssignments/") && req.method != "GET" {
            let from_body = serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|b| str_at(&b, &["properties", "roleDefinitionId"]).map(|r| last_segment(r).to_ascii_lowercase()));
            let key = format!("/{}", lower.join("/"));
            from_body.or_else(|| {
                self.resources
                    .get(&key)
                    .and_then(|e| str_at(&e.json, &["properties", "roleDefinitionId"]))
                    .map(|r| last_segment(r).to_ascii_lowercase())
            })
        } else {
            None
        };
        let allowed = self.resources.values().filter(|e| e.kind == RA_KIND).any(|ra| {
            let p = &ra.json["properties"];
            if !str_at(p, &["principalId"]).is_some_and(|x| x.eq_ignore_ascii_case(principal)) {
                return false;
            }
            if !str_at(p, &["scope"]).is_some_and(|s| covers(&s.to_ascii_lowercase(), &scope)) {
                return false;
            }
            let guid = str_at(p, &["roleDefinitionId"]).map(|r| last_segment(r).to_ascii_lowercase()).unwrap_or_default();
            let Some((_, role)) = ROLE_DEFINITIONS.iter().find(|(g, _)| *g == guid) else { return false };
            if !role_allows(role, &action) {
                return false;
            }
            match (str_at(p, &["condition"]), &concerned) {
                (Some(condition), Some(target)) if !condition.is_empty() => condition_guids(condition).contains(target),
                _ => true,
            }
        });
        if allowed {
            return Ok(());
        }
        Err(error(
            403,
            "AuthorizationFailed",
            format!(
                "The client '{client_id}' with object id '{principal}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        ))
    }
}

/// The claims of a JWT (its middle part), or null.
fn assertion_claims(jwt: &str) -> Value {
    use base64::Engine as _;
    jwt.split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_actions_follow_wildcards_and_not_actions() {
        assert!(role_allows("Monitoring Reader", "Microsoft.Network/virtualNetworks/read"));
        assert!(!role_allows("Monitoring Reader", "Microsoft.ManagedIdentity/userAssignedIdentities/write"));
        assert!(role_allows(
            "Managed Identity Contributor",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write"
        ));
        assert!(role_allows("Network Contributor", "Microsoft.Network/privateDnsZones/virtualNetworkLinks/write"));
        assert!(role_allows("Contributor", "Microsoft.Network/virtualNetworks/write"));
        assert!(!role_allows("Contributor", "Microsoft.Authorization/roleAssignments/write"), "NotActions subtract");
        assert!(!role_allows("Unknown Role", "Microsoft.Network/virtualNetworks/read"));
    }

    #[test]
    fn requests_name_their_action_and_scope() {
        let split = |p: &str| -> (Vec<String>, Vec<String>) {
            let segs: Vec<String> = p.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
            let lower = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
            (segs, lower)
        };
        let (s, l) = split(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a/federatedIdentityCredentials/b",
        );
        assert_eq!(action_of("PUT", &s, &l).0, "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write");
        let (s, l) = split(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/x/providers/Microsoft.Authorization/roleAssignments/g",
        );
        let (action, scope) = action_of("DELETE", &s, &l);
        assert_eq!(action, "Microsoft.Authorization/roleAssignments/delete");
        assert_eq!(scope, "/subscriptions/s/resourcegroups/rg/providers/microsoft.storage/storageaccounts/x");
        let (s, l) = split("/subscriptions/s/resourceGroups/rg");
        assert_eq!(action_of("GET", &s, &l).0, "Microsoft.Resources/subscriptions/resourceGroups/read");
        assert_eq!(condition_guids("a GuidEquals {X, y} b GuidEquals {z}"), vec!["x", "y", "z"]);
    }
}
