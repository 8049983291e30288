//! IAM admin v1 service accounts, and IAM policies on projects (Resource Manager v3),
//! service accounts and buckets.
//!
//! Reproduced from the references:
//! - <https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/create>:
//!   `accountId` is 6-30 characters `[a-z]([-a-z0-9]*[a-z0-9])` (400 otherwise); the email is
//!   `{accountId}@{project}.iam.gserviceaccount.com`; a taken one is 409 `ALREADY_EXISTS`;
//!   `displayName` at most 100 characters, `description` at most 256;
//! - `projects.serviceAccounts.patch` changes only the fields its `updateMask` names
//!   (`displayName`, `description`; others 400);
//! - <https://cloud.google.com/iam/docs/policies#etag>: `setIamPolicy` with an `etag` that is
//!   not the current one fails with 409 `ABORTED` (the real Resource Manager words it "There
//!   were concurrent policy changes"), so callers redo the whole read-modify-write. The
//!   issue's "412 on a stale IAM policy etag" is not what the API does; this fake follows
//!   the API. A policy set without an etag overwrites;
//! - bindings need a role `roles/...` (a custom one of this project must exist, see
//!   [`crate::roles`]), `projects/P/roles/...` or `organizations/O/roles/...`
//!   and members with a known prefix (`user:`, `serviceAccount:`, `group:`, `domain:`,
//!   `principal://`, `principalSet://`, `allUsers`, `allAuthenticatedUsers`); a conditional
//!   binding needs policy version 3 (400);
//! - a `serviceAccount:` member of this project's domain that does not exist: 400; a
//!   Workload Identity member `serviceAccount:{project}.svc.id.goog[ns/ksa]` while no GKE
//!   cluster of the project has that workload pool: 400 "Identity Pool does not exist";
//! - `testIamPermissions` answers the permissions asked for except
//!   [`crate::Options::denied_permissions`] (at most 100 asked, else 400).
//!
//! Policies are kept in the collection `iamPolicies`, keyed by resource (`projects/P`,
//! `projects/P/serviceAccounts/EMAIL`, `b/BUCKET`).

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::{State, now};
use crate::{Reply, Req};

/// The collection holding every IAM policy.
pub const POLICIES: &str = "iamPolicies";
/// The project number the fake's project has.
pub const PROJECT_NUMBER: &str = "123456789012";

fn accounts(project: &str) -> String {
    format!("projects/{project}/serviceAccounts")
}

/// Whether `id` is a valid service account id.
pub fn account_id_ok(id: &str) -> bool {
    let b = id.as_bytes();
    (6..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// Routes `/v1/projects/{project}/serviceAccounts...` (`rest` starts after the project).
pub(crate) fn route_accounts(state: &mut State, req: &Req, project: &str, rest: &[&str]) -> Result<Reply, ApiError> {
    use http::Method as M;
    let m = &req.method;
    let coll = accounts(project);
    match rest {
        ["serviceAccounts"] if m == M::GET => {
            let items = state.list(&coll);
            let (items, next) = page_by_size(items, req)?;
            let mut body = json!({"accounts": items});
            if let Some(n) = next {
                body["nextPageToken"] = json!(n);
            }
            Reply::read(body)
        }
        ["serviceAccounts"] if m == M::POST => create(state, req, project, &coll),
        ["serviceAccounts", target] => {
            let (target, verb) = target.split_once(':').map_or((*target, None), |(a, b)| (a, Some(b)));
            let email = find(state, &coll, target)?;
            let resource = format!("{coll}/{email}");
            match (m, verb) {
                (m, None) if m == M::GET => Reply::read(state.get(&coll, &email).cloned().unwrap_or_default()),
                (m, None) if m == M::PATCH || m == M::PUT => change(state, req, &coll, &email, m == M::PATCH),
                (m, None) if m == M::DELETE => {
                    state.remove(&coll, &email);
                    state.remove(POLICIES, &resource);
                    Reply::write(json!({}))
                }
                (m, Some("getIamPolicy")) if m == M::POST => Reply::read(get_policy(state, &resource)),
                (m, Some("setIamPolicy")) if m == M::POST => set_policy(state, req, project, &resource),
                (m, Some("testIamPermissions")) if m == M::POST => test_permissions(state, req),
                _ => Err(unserved(req)),
            }
        }
        _ => Err(unserved(req)),
    }
}

fn unserved(req: &Req) -> ApiError {
    ApiError::new(404, "NOT_FOUND", "notFound", format!("the fake does not serve {} /{}", req.method, req.segments.join("/")))
}

/// A service account by email or unique id; 404 if there is none.
fn find(state: &State, coll: &str, target: &str) -> Result<String, ApiError> {
    if state.get(coll, target).is_some() {
        return Ok(target.to_owned());
    }
    state
        .list(coll)
        .into_iter()
        .find(|a| a.get("uniqueId").and_then(Value::as_str) == Some(target))
        .and_then(|a| a.get("email").and_then(Value::as_str).map(str::to_owned))
        .ok_or_else(|| ApiError::new(404, "NOT_FOUND", "notFound", format!("Unknown service account: {coll}/{target}")))
}

fn page_by_size(items: Vec<Value>, req: &Req) -> Result<(Vec<Value>, Option<String>), ApiError> {
    crate::page(items, req.param("pageSize"), req.param("pageToken"))
}

fn check_texts(sa: &Value) -> Result<(), ApiError> {
    for (field, max) in [("displayName", 100), ("description", 256)] {
        if sa.get(field).and_then(Value::as_str).is_some_and(|s| s.chars().count() > max) {
            return Err(ApiError::invalid(format!("ServiceAccount.{field} must be at most {max} characters.")));
        }
    }
    Ok(())
}

fn create(state: &mut State, req: &Req, project: &str, coll: &str) -> Result<Reply, ApiError> {
    let id = req.body.get("accountId").and_then(Value::as_str).unwrap_or_default();
    if !account_id_ok(id) {
        return Err(ApiError::invalid(format!(
            "Invalid account ID '{id}': it must be 6 to 30 characters, match [a-z]([-a-z0-9]*[a-z0-9]) (a lowercase letter first, no trailing hyphen)."
        )));
    }
    let email = format!("{id}@{project}.iam.gserviceaccount.com");
    if state.get(coll, &email).is_some() {
        return Err(ApiError::new(
            409,
            "ALREADY_EXISTS",
            "alreadyExists",
            format!("Service account {id} already exists within project projects/{project}."),
        ));
    }
    let given = req.body.get("serviceAccount").cloned().unwrap_or(json!({}));
    check_texts(&given)?;
    let unique = format!("1{:020}", state.random() % 10u64.pow(19));
    let mut sa = json!({
        "name": format!("{coll}/{email}"),
        "projectId": project,
        "uniqueId": unique,
        "email": email,
        "etag": "MDEwMjE5MjA=",
        "oauth2ClientId": unique,
    });
    for field in ["displayName", "description"] {
        if let Some(v) = given.get(field) {
            sa[field] = v.clone();
        }
    }
    state.put(coll, &email, sa.clone());
    Reply::write(sa)
}

fn change(state: &mut State, req: &Req, coll: &str, email: &str, patch: bool) -> Result<Reply, ApiError> {
    let (given, fields): (Value, Vec<String>) = if patch {
        let given = req.body.get("serviceAccount").cloned().unwrap_or(json!({}));
        let mask = req.body.get("updateMask").and_then(Value::as_str).unwrap_or_default();
        let fields: Vec<String> = mask.split(',').map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()).collect();
        if fields.is_empty() {
            return Err(ApiError::invalid("Required field 'update_mask' not specified."));
        }
        (given, fields)
    } else {
        (req.body.clone(), vec!["displayName".to_owned(), "description".to_owned()])
    };
    check_texts(&given)?;
    let mut sa = state.get(coll, email).cloned().unwrap_or_default();
    for f in &fields {
        let key = match f.as_str() {
            "displayName" | "display_name" => "displayName",
            "description" => "description",
            other => {
                return Err(ApiError::invalid(format!(
                    "Invalid update mask path '{other}': only displayName and description can be changed."
                )));
            }
        };
        match given.get(key) {
            Some(v) => sa[key] = v.clone(),
            None => {
                if let Some(o) = sa.as_object_mut() {
                    o.remove(key);
                }
            }
        }
    }
    state.put(coll, email, sa.clone());
    Reply::write(sa)
}

/// The policy of `resource` (an empty one, etag `ACAB`, if none was set).
pub(crate) fn get_policy(state: &State, resource: &str) -> Value {
    state.get(POLICIES, resource).cloned().unwrap_or_else(|| json!({"version": 1, "etag": "ACAB"}))
}

fn known_member(m: &str) -> bool {
    [
        "user:",
        "serviceAccount:",
        "group:",
        "domain:",
        "principal://",
        "principalSet://",
        "deleted:",
        "projectOwner:",
        "projectEditor:",
        "projectViewer:",
    ]
    .iter()
    .any(|p| m.starts_with(p))
        || m == "allUsers"
        || m == "allAuthenticatedUsers"
}

/// Sets the policy of `resource` from `req.body.policy`, judging etag and bindings.
pub(crate) fn set_policy(state: &mut State, req: &Req, project: &str, resource: &str) -> Result<Reply, ApiError> {
    let policy = req.body.get("policy").cloned().ok_or_else(|| ApiError::invalid("Required field 'policy' not specified."))?;
    let current = get_policy(state, resource);
    if let Some(etag) = policy.get("etag").and_then(Value::as_str)
        && Some(etag) != current.get("etag").and_then(Value::as_str)
    {
        return Err(ApiError::new(
            409,
            "ABORTED",
            "aborted",
            format!(
                "There were concurrent policy changes to {resource}. Please retry the whole read-modify-write with exponential backoff."
            ),
        ));
    }
    let version = policy.get("version").and_then(Value::as_i64).unwrap_or(1);
    if ![0, 1, 3].contains(&version) {
        return Err(ApiError::invalid(format!("Invalid policy version {version}: must be 1 or 3.")));
    }
    let bindings = policy.get("bindings").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, b) in bindings.iter().enumerate() {
        let role = b.get("role").and_then(Value::as_str).unwrap_or_default();
        if !(role.starts_with("roles/") || role.starts_with("projects/") || role.starts_with("organizations/")) || role.ends_with('/') {
            return Err(ApiError::invalid(format!("Role ({role}) does not exist in the resource's hierarchy (bindings[{i}]).")));
        }
        // A custom role of this project must exist (a deleted one stays bindable: GCP
        // keeps its bindings, inactive, until it is undeleted or purged).
        if role.starts_with(&format!("projects/{project}/roles/")) && !crate::roles::exists(state, role) {
            return Err(ApiError::invalid(format!("Role ({role}) does not exist in the resource's hierarchy (bindings[{i}]).")));
        }
        if b.get("condition").is_some() && version < 3 {
            return Err(ApiError::invalid(format!("bindings[{i}] has a condition, which needs policy version 3, not {version}.")));
        }
        let members = b.get("members").and_then(Value::as_array).cloned().unwrap_or_default();
        if members.is_empty() {
            return Err(ApiError::invalid(format!("bindings[{i}] ({role}) has no members.")));
        }
        for m in members.iter().filter_map(Value::as_str) {
            check_member(state, project, m)?;
        }
    }
    let mut stored = json!({"version": version.max(1), "etag": state.fingerprint()});
    if !bindings.is_empty() {
        stored["bindings"] = Value::Array(bindings);
    }
    if let Some(a) = policy.get("auditConfigs") {
        stored["auditConfigs"] = a.clone();
    }
    state.put(POLICIES, resource, stored.clone());
    Reply::write(stored)
}

fn check_member(state: &State, project: &str, m: &str) -> Result<(), ApiError> {
    if !known_member(m) {
        return Err(ApiError::invalid(format!(
            "Invalid principal: {m}. A principal starts with user:, serviceAccount:, group:, domain:, principal:// or principalSet://."
        )));
    }
    let Some(sa) = m.strip_prefix("serviceAccount:") else { return Ok(()) };
    let pool = format!("{project}.svc.id.goog");
    if let Some(rest) = sa.strip_prefix(&pool) {
        if !(rest.starts_with('[') && rest.ends_with(']') && rest.contains('/')) {
            return Err(ApiError::invalid(format!("Invalid Workload Identity principal {m}: expected {pool}[NAMESPACE/KSA].")));
        }
        let has_pool = state
            .all_of("clusters")
            .iter()
            .any(|(_, _, c)| c.pointer("/workloadIdentityConfig/workloadPool").and_then(Value::as_str) == Some(pool.as_str()));
        if !has_pool {
            return Err(ApiError::invalid(format!(
                "Identity Pool does not exist ({pool}). Please check that you specified a valid resource name as returned in the `name` attribute in the configuration API."
            )));
        }
        return Ok(());
    }
    if sa.ends_with(&format!("@{project}.iam.gserviceaccount.com")) && state.get(&accounts(project), sa).is_none() {
        return Err(ApiError::invalid(format!("Service account {sa} does not exist.")));
    }
    Ok(())
}

/// `testIamPermissions`: the permissions asked for that are not denied.
pub(crate) fn test_permissions(state: &State, req: &Req) -> Result<Reply, ApiError> {
    let asked: Vec<String> =
        req.body.get("permissions").and_then(Value::as_array).into_iter().flatten().filter_map(|p| p.as_str().map(str::to_owned)).collect();
    if asked.len() > 100 {
        return Err(ApiError::invalid(format!("At most 100 permissions can be tested at once, not {}.", asked.len())));
    }
    let granted: Vec<String> = asked.into_iter().filter(|p| !state.opts.denied_permissions.contains(p)).collect();
    Reply::read(if granted.is_empty() { json!({}) } else { json!({"permissions": granted}) })
}

/// Routes `/v3/projects/{project}[:verb]` (Resource Manager).
pub(crate) fn route_project(state: &mut State, req: &Req, target: &str) -> Result<Reply, ApiError> {
    use http::Method as M;
    let (id, verb) = target.split_once(':').map_or((target, None), |(a, b)| (a, Some(b)));
    let project = state.opts.project.clone();
    if id != project && id != PROJECT_NUMBER {
        return Err(ApiError::denied("forbidden", format!("Permission denied on resource project {id} (or it may not exist).")));
    }
    let resource = format!("projects/{project}");
    match (&req.method, verb) {
        (m, None) if m == M::GET => Reply::read(json!({
            "name": format!("projects/{PROJECT_NUMBER}"),
            "parent": "organizations/100000000001",
            "projectId": project,
            "state": "ACTIVE",
            "displayName": project,
            "createTime": "2024-01-01T00:00:00.000Z",
            "updateTime": now(),
            "etag": "W/\"fake\"",
        })),
        (m, Some("getIamPolicy")) if m == M::POST => Reply::read(get_policy(state, &resource)),
        (m, Some("setIamPolicy")) if m == M::POST => set_policy(state, req, &project, &resource),
        (m, Some("testIamPermissions")) if m == M::POST => test_permissions(state, req),
        _ => Err(unserved(req)),
    }
}
