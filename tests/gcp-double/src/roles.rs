//! IAM admin v1 custom roles of the project (`/v1/projects/P/roles[/ID][:undelete]`).
//!
//! Reproduced from <https://cloud.google.com/iam/docs/reference/rest/v1/projects.roles> and
//! <https://cloud.google.com/iam/docs/creating-custom-roles>:
//! - `create` takes `roleId` and `role`; the id is 3 to 64 of `[a-zA-Z0-9_.]` (400
//!   INVALID_ARGUMENT otherwise, a hyphen included); `title` at most 100 characters,
//!   `description` at most 300, at most 3000 `includedPermissions`, each
//!   `service.resource.verb` (400 otherwise); an id that exists, deleted or not, is 409
//!   ALREADY_EXISTS (a deleted role keeps its id for about 37 days);
//! - `get` answers a deleted role too, with `deleted: true`; `list` leaves deleted roles
//!   out unless `showDeleted=true`;
//! - `patch` changes the fields `updateMask` names (`title`, `description`,
//!   `includedPermissions`, `stage`; others 400; no mask: all four); an `etag` that is not
//!   the role's current one is 409 ABORTED, and a deleted role cannot be changed (400
//!   FAILED_PRECONDITION);
//! - `delete` marks the role deleted (`deleted: true`, new etag) and answers it; `undelete`
//!   (body `etag`, optional, judged like patch's) brings a deleted one back;
//! - every change gives the role a new etag (base64, as IAM sends bytes).
//!
//! The fake's own choices where the reference is silent: deleting a role already deleted,
//! and undeleting one that is not, are 400 FAILED_PRECONDITION. A deleted role never
//! expires here (the tests run well inside the 7 days GCP allows for undelete). The stage
//! is kept as the client sent it (a name or, with `$alt=json;enum-encoding=int`, a number)
//! and answered as the name.
//!
//! Roles are kept in the collection `projects/P/roles`, keyed by role id.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::State;
use crate::{Reply, Req};

/// The fields a custom role has that a caller may set.
const FIELDS: [&str; 4] = ["title", "description", "includedPermissions", "stage"];

/// The collection of the project's custom roles.
pub fn collection(project: &str) -> String {
    format!("projects/{project}/roles")
}

/// Whether `id` is a valid custom role id.
pub fn role_id_ok(id: &str) -> bool {
    (3..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// The permissions of the project's custom role `projects/P/roles/ID`, if it exists and
/// is not deleted.
pub(crate) fn permissions_of(state: &State, role: &str) -> Option<Vec<String>> {
    let (coll, id) = role.rsplit_once('/')?;
    let r = state.get(coll, id)?;
    if r.get("deleted").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    Some(
        r.get("includedPermissions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect(),
    )
}

/// Whether the project has a custom role `projects/P/roles/ID`, deleted or not.
pub(crate) fn exists(state: &State, role: &str) -> bool {
    role.rsplit_once('/').is_some_and(|(coll, id)| state.get(coll, id).is_some())
}

/// Stage names by the numbers of `google.iam.admin.v1.Role.RoleLaunchStage`.
fn stage_name(v: &Value) -> Result<&'static str, ApiError> {
    let name = match v {
        Value::Null => "ALPHA",
        Value::Number(n) => match n.as_i64() {
            Some(0) => "ALPHA",
            Some(1) => "BETA",
            Some(2) => "GA",
            Some(4) => "DEPRECATED",
            Some(5) => "DISABLED",
            Some(6) => "EAP",
            _ => return Err(ApiError::invalid(format!("Invalid value at 'role.stage' ({n})"))),
        },
        Value::String(s) => match s.as_str() {
            "ALPHA" => "ALPHA",
            "BETA" => "BETA",
            "GA" => "GA",
            "DEPRECATED" => "DEPRECATED",
            "DISABLED" => "DISABLED",
            "EAP" => "EAP",
            _ => return Err(ApiError::invalid(format!("Invalid value at 'role.stage' ({s})"))),
        },
        _ => return Err(ApiError::invalid("Invalid value at 'role.stage'")),
    };
    Ok(name)
}

/// The settable fields of `given`, judged.
fn judged(given: &Value) -> Result<serde_json::Map<String, Value>, ApiError> {
    let mut out = serde_json::Map::new();
    if let Some(t) = given.get("title").and_then(Value::as_str) {
        if t.chars().count() > 100 {
            return Err(ApiError::invalid("The title of a role must be at most 100 characters."));
        }
        out.insert("title".into(), json!(t));
    }
    if let Some(d) = given.get("description").and_then(Value::as_str) {
        if d.chars().count() > 300 {
            return Err(ApiError::invalid("The description of a role must be at most 300 characters."));
        }
        out.insert("description".into(), json!(d));
    }
    let permissions: Vec<String> = given
        .get("includedPermissions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| p.as_str().map(str::to_owned).ok_or_else(|| ApiError::invalid("includedPermissions must be strings.")))
        .collect::<Result<_, _>>()?;
    if permissions.len() > 3000 {
        return Err(ApiError::invalid("A custom role can have at most 3000 permissions."));
    }
    for p in &permissions {
        let parts: Vec<&str> = p.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric())) {
            return Err(ApiError::invalid(format!("Permission {p} is not valid.")));
        }
    }
    let mut permissions = permissions;
    permissions.sort();
    permissions.dedup();
    out.insert("includedPermissions".into(), json!(permissions));
    out.insert("stage".into(), json!(stage_name(given.get("stage").unwrap_or(&Value::Null))?));
    Ok(out)
}

/// Routes `/v1/projects/{project}/roles...` (`rest` starts at `roles`).
pub(crate) fn route(state: &mut State, req: &Req, project: &str, rest: &[&str]) -> Result<Reply, ApiError> {
    use http::Method as M;
    let coll = collection(project);
    match rest {
        ["roles"] if req.method == M::GET => {
            let deleted = req.param("showDeleted") == Some("true");
            let items: Vec<Value> =
                state.list(&coll).into_iter().filter(|r| deleted || r.get("deleted").and_then(Value::as_bool) != Some(true)).collect();
            let (items, next) = crate::page(items, req.param("pageSize"), req.param("pageToken"))?;
            let mut body = json!({"roles": items});
            if let Some(n) = next {
                body["nextPageToken"] = json!(n);
            }
            Reply::read(body)
        }
        ["roles"] if req.method == M::POST => create(state, req, project, &coll),
        ["roles", target] => {
            let (id, verb) = target.split_once(':').map_or((*target, None), |(a, b)| (a, Some(b)));
            let name = format!("{coll}/{id}");
            let role = state
                .get(&coll, id)
                .cloned()
                .ok_or_else(|| ApiError::new(404, "NOT_FOUND", "notFound", format!("The role named {name} was not found.")))?;
            let deleted = role.get("deleted").and_then(Value::as_bool) == Some(true);
            match (&req.method, verb) {
                (m, None) if m == M::GET => Reply::read(role),
                (m, None) if m == M::PATCH => {
                    if deleted {
                        return Err(precondition(format!("You can't update the role {name}: it is deleted; undelete it first.")));
                    }
                    check_etag(&role, req.body.get("etag"), &name)?;
                    let given = judged(&req.body)?;
                    let mask = req.param("updateMask").unwrap_or("");
                    let fields: Vec<&str> = if mask.is_empty() { FIELDS.to_vec() } else { mask.split(',').map(str::trim).collect() };
                    let mut changed = role.clone();
                    for f in fields {
                        let key = match f {
                            "title" | "description" | "stage" => f,
                            "includedPermissions" | "included_permissions" => "includedPermissions",
                            other => return Err(ApiError::invalid(format!("Invalid update mask path '{other}'."))),
                        };
                        match given.get(key) {
                            Some(v) => changed[key] = v.clone(),
                            None => {
                                if let Some(o) = changed.as_object_mut() {
                                    o.remove(key);
                                }
                            }
                        }
                    }
                    Reply::write(store(state, &coll, id, changed))
                }
                (m, None) if m == M::DELETE => {
                    if deleted {
                        return Err(precondition(format!("The role {name} is already deleted.")));
                    }
                    if let Some(etag) = req.param("etag").filter(|e| !e.is_empty()) {
                        check_etag(&role, Some(&json!(etag)), &name)?;
                    }
                    let mut gone = role;
                    gone["deleted"] = json!(true);
                    Reply::write(store(state, &coll, id, gone))
                }
                (m, Some("undelete")) if m == M::POST => {
                    if !deleted {
                        return Err(precondition(format!("The role {name} is not deleted.")));
                    }
                    check_etag(&role, req.body.get("etag"), &name)?;
                    let mut back = role;
                    if let Some(o) = back.as_object_mut() {
                        o.remove("deleted");
                    }
                    Reply::write(store(state, &coll, id, back))
                }
                _ => Err(ApiError::new(404, "NOT_FOUND", "notFound", format!("the fake does not serve {} {name}", req.method))),
            }
        }
        _ => {
            Err(ApiError::new(404, "NOT_FOUND", "notFound", format!("the fake does not serve {} /{}", req.method, req.segments.join("/"))))
        }
    }
}

fn precondition(message: String) -> ApiError {
    ApiError::new(400, "FAILED_PRECONDITION", "failedPrecondition", message)
}

/// 409 ABORTED when `given` is an etag other than the role's.
fn check_etag(role: &Value, given: Option<&Value>, name: &str) -> Result<(), ApiError> {
    match given.and_then(Value::as_str).filter(|e| !e.is_empty()) {
        Some(e) if Some(e) != role.get("etag").and_then(Value::as_str) => Err(ApiError::new(
            409,
            "ABORTED",
            "aborted",
            format!("There were concurrent changes to the role {name}. Please read it again and retry."),
        )),
        _ => Ok(()),
    }
}

/// Stores `role` under `id` with a new etag; the role as answered.
fn store(state: &mut State, coll: &str, id: &str, mut role: Value) -> Value {
    role["etag"] = json!(state.fingerprint());
    state.put(coll, id, role.clone());
    role
}

fn create(state: &mut State, req: &Req, project: &str, coll: &str) -> Result<Reply, ApiError> {
    let id = req.body.get("roleId").and_then(Value::as_str).unwrap_or_default();
    if !role_id_ok(id) {
        return Err(ApiError::invalid(format!(
            "The role_id ({id}) is not valid: it must be 3 to 64 characters of letters, digits, '_' and '.'."
        )));
    }
    if let Some(existing) = state.get(coll, id) {
        let deleted = existing.get("deleted").and_then(Value::as_bool) == Some(true);
        let message = if deleted {
            format!("A role named {id} in projects/{project} has been deleted; its id cannot be reused for 37 days. Undelete it instead.")
        } else {
            format!("A role named {id} in projects/{project} already exists.")
        };
        return Err(ApiError::new(409, "ALREADY_EXISTS", "alreadyExists", message));
    }
    let given = judged(req.body.get("role").unwrap_or(&Value::Null))?;
    let mut role = Value::Object(given);
    role["name"] = json!(format!("{coll}/{id}"));
    Reply::write(store(state, coll, id, role))
}
