//! RBAC for one user, judged as the API server's RBAC authorizer judges a resource request:
//! the request's verb (from the method, whether a name is given, and `watch`), API group,
//! resource (with `/subresource`) and namespace must be granted by a rule of a role bound to
//! the user; a Role's rules (a RoleBinding) hold only in its namespace. Refusals are `403
//! Forbidden` with the API server's message, which names the verb and the resource. Not
//! judged: resourceNames, non-resource URLs, aggregation, impersonation (the daemon uses
//! none of them).

use crate::store::ApiError;

/// One rule, with the namespace its binding limits it to (`None`: cluster-wide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `verbs`.
    pub verbs: Vec<String>,
    /// `apiGroups` (`""` is the core group).
    pub api_groups: Vec<String>,
    /// `resources` (`plural` or `plural/subresource`).
    pub resources: Vec<String>,
    /// The RoleBinding's namespace, for rules that hold only there.
    pub namespace: Option<String>,
}

/// The rules granted to the user of one bearer token (a service account's). Requests
/// without that token are the test's own (an administrator's) and are not judged.
#[derive(Debug, Clone)]
pub struct Rbac {
    /// The bearer token the user's requests carry (the kubeconfig's `token`).
    pub token: String,
    /// Who that is, for messages (`system:serviceaccount:NS:NAME`).
    pub user: String,
    /// The rules of every role bound to the user.
    pub rules: Vec<Rule>,
}

/// The authorizer's verb for a request.
pub fn verb(method: &http::Method, named: bool, watch: bool) -> &'static str {
    match (method.as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

fn matches(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

impl Rbac {
    /// Whether the request is the user's.
    pub(crate) fn judges(&self, headers: &http::HeaderMap) -> bool {
        headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
            == Some(self.token.as_str())
    }

    /// Allows the request or refuses it with the API server's 403.
    pub(crate) fn check(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<(), ApiError> {
        let allowed = self.rules.iter().any(|r| {
            matches(&r.verbs, verb)
                && matches(&r.api_groups, group)
                && matches(&r.resources, resource)
                && r.namespace.as_deref().is_none_or(|ns| Some(ns) == namespace)
        });
        if allowed {
            return Ok(());
        }
        let subject = match name {
            Some(n) => format!("{resource} \"{n}\" is forbidden"),
            None => format!("{resource} is forbidden"),
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        Err(ApiError::new(
            403,
            "Forbidden",
            format!("{subject}: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}", self.user),
        ))
    }
}
