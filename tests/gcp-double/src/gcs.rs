//! Cloud Storage: forwarded unchanged to a real fake-gcs-server, except bucket IAM, which
//! fake-gcs-server does not serve (`GET /storage/v1/b/B/iam` is 404 there), so the fake keeps
//! it.
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
use crate::state::State;
use crate::{Reply, Req};

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
