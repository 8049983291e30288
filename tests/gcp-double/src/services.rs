//! Service Usage v1 (<https://cloud.google.com/service-usage/docs/reference/rest/v1/services>):
//! `get`, `batchGet` (at most 30 names, 400 otherwise), `list` with `filter=state:ENABLED` or
//! `state:DISABLED`, `enable`/`disable` (a long-running operation answered DONE). Every
//! `*.googleapis.com` service exists and is ENABLED unless named in
//! [`crate::Options::disabled_services`] or disabled since; other names are 400.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::iam::PROJECT_NUMBER;
use crate::state::State;
use crate::{Reply, Req};

/// The services `list` reports, besides any disabled or enabled by name.
const KNOWN: &[&str] = &[
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "dns.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "serviceusage.googleapis.com",
    "storage.googleapis.com",
    "storage-api.googleapis.com",
];

fn service(state: &State, name: &str) -> Result<Value, ApiError> {
    if !name.ends_with(".googleapis.com") || name.len() <= ".googleapis.com".len() {
        return Err(ApiError::invalid(format!("Invalid service name '{name}': expected NAME.googleapis.com.")));
    }
    let enabled = !state.opts.disabled_services.iter().any(|s| s == name);
    Ok(json!({
        "name": format!("projects/{PROJECT_NUMBER}/services/{name}"),
        "parent": format!("projects/{PROJECT_NUMBER}"),
        "config": {"name": name, "title": name.trim_end_matches(".googleapis.com")},
        "state": if enabled { "ENABLED" } else { "DISABLED" },
    }))
}

/// Routes `/v1/projects/{project}/{rest}` for `services...`.
pub(crate) fn route(state: &mut State, req: &Req, rest: &[&str]) -> Result<Reply, ApiError> {
    use http::Method as M;
    let m = &req.method;
    match rest {
        ["services"] if m == M::GET => {
            let want = match req.param("filter").unwrap_or("") {
                "" => None,
                "state:ENABLED" => Some("ENABLED"),
                "state:DISABLED" => Some("DISABLED"),
                other => return Err(ApiError::invalid(format!("the fake filters only on state:ENABLED or state:DISABLED, not {other:?}"))),
            };
            let mut names: Vec<String> = KNOWN.iter().map(|s| (*s).to_owned()).collect();
            names.extend(state.opts.disabled_services.iter().cloned());
            names.sort();
            names.dedup();
            let items: Vec<Value> = names
                .iter()
                .filter_map(|n| service(state, n).ok())
                .filter(|s| want.is_none_or(|w| s.get("state").and_then(Value::as_str) == Some(w)))
                .collect();
            let (items, next) = crate::page(items, req.param("pageSize"), req.param("pageToken"))?;
            let mut body = json!({"services": items});
            if let Some(n) = next {
                body["nextPageToken"] = json!(n);
            }
            Reply::read(body)
        }
        ["services:batchGet"] if m == M::GET => {
            let names: Vec<&str> = req.query.iter().filter(|(k, _)| k == "names").map(|(_, v)| v.as_str()).collect();
            if names.is_empty() || names.len() > 30 {
                return Err(ApiError::invalid(format!("batchGet takes 1 to 30 names, not {}.", names.len())));
            }
            let services = names.iter().map(|n| service(state, n.rsplit('/').next().unwrap_or_default())).collect::<Result<Vec<_>, _>>()?;
            Reply::read(json!({"services": services}))
        }
        ["services", s] => {
            let (name, verb) = s.split_once(':').map_or((*s, None), |(a, b)| (a, Some(b)));
            match (m, verb) {
                (m, None) if m == M::GET => Reply::read(service(state, name)?),
                (m, Some(v @ ("enable" | "disable"))) if m == M::POST => {
                    service(state, name)?;
                    state.opts.disabled_services.retain(|d| d != name);
                    if v == "disable" {
                        state.opts.disabled_services.push(name.to_owned());
                    }
                    let svc = service(state, name)?;
                    let kind = if v == "enable" { "EnableServiceResponse" } else { "DisableServiceResponse" };
                    Reply::write(json!({
                        "name": "operations/noop.DONE_OPERATION",
                        "done": true,
                        "response": {"@type": format!("type.googleapis.com/google.api.serviceusage.v1.{kind}"), "service": svc},
                    }))
                }
                _ => Err(ApiError::new(
                    404,
                    "NOT_FOUND",
                    "notFound",
                    format!("the fake does not serve {} /{}", req.method, req.segments.join("/")),
                )),
            }
        }
        _ => {
            Err(ApiError::new(404, "NOT_FOUND", "notFound", format!("the fake does not serve {} /{}", req.method, req.segments.join("/"))))
        }
    }
}
