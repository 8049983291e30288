//! GCS buckets through the JSON API over reqwest, as `state/gcs.rs` reaches GCS (the
//! official storage crate lists only over gRPC): uniform bucket-level access, public
//! access prevention, versioning, the lifecycle rule, and byoc's labels, which prove a
//! bucket ours. Bucket IAM policies (`/b/{bucket}/iam`) for the bindings on a bucket.

use google_cloud_auth::credentials::{CacheableResource, Credentials};
use serde_json::{Value as Json, json};

use super::{Gcp, found, text};
use crate::cloud::retry::{Retrier, Retry};
use crate::cloud::{CloudError, Found};
use crate::resource::{Kind, Map, Resource, Value};

/// The public JSON API endpoint.
const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// The JSON API client: endpoint, and credentials unless anonymous (an emulator).
pub(super) struct Client {
    http: reqwest::Client,
    endpoint: String,
    credentials: Option<Credentials>,
}

/// What a bucket resource asks for, in the JSON API's form.
pub(super) fn bucket_body(r: &Resource) -> Json {
    let mut body = json!({
        "name": text(r, "name"),
        "location": text(r, "location"),
        "versioning": {"enabled": matches!(r.properties.get("versioning"), Some(Value::Bool(true)))},
        "iamConfiguration": {
            "uniformBucketLevelAccess": {"enabled": matches!(r.properties.get("uniformBucketLevelAccess"), Some(Value::Bool(true)))},
            "publicAccessPrevention": text(r, "publicAccessPrevention"),
        },
        "labels": super::string_map(r.properties.get("labels")),
    });
    if let Some(Value::List(rules)) = r.properties.get("lifecycle") {
        let rules: Vec<Json> = rules
            .iter()
            .filter_map(|rule| match rule {
                Value::Map(m) => Some(json!({
                    "action": {"type": m.get("action").and_then(Value::as_str).unwrap_or("Delete")},
                    "condition": {"daysSinceNoncurrentTime": super::int(m.get("daysSinceNoncurrentTime"))},
                })),
                _ => None,
            })
            .collect();
        body["lifecycle"] = json!({ "rule": rules });
    }
    body
}

/// The settings byoc manages of a bucket as read, in the resource's property form (what
/// drift is compared on). A setting the answer does not carry at all is left out rather
/// than read as off: GCS always reports them, and an emulator that keeps fewer fields
/// (fake-gcs-server keeps no lifecycle or public access prevention) must not read as
/// drift on every run.
pub(super) fn live_settings(b: &Json) -> Map {
    let mut live = Map::new();
    // GCS leaves `versioning` out of a bucket whose versioning was never on: off.
    live.insert("versioning", Value::Bool(b.pointer("/versioning/enabled").and_then(Json::as_bool).unwrap_or(false)));
    if let Some(v) = b.pointer("/iamConfiguration/uniformBucketLevelAccess/enabled").and_then(Json::as_bool) {
        live.insert("uniformBucketLevelAccess", Value::Bool(v));
    }
    if let Some(v) = b.pointer("/iamConfiguration/publicAccessPrevention").and_then(Json::as_str) {
        live.insert("publicAccessPrevention", Value::from(v));
    }
    if let Some(rules) = b.pointer("/lifecycle/rule").and_then(Json::as_array) {
        let rules: Vec<Value> = rules
            .iter()
            .map(|r| {
                Value::map([
                    ("action", r.pointer("/action/type").and_then(Json::as_str).unwrap_or_default().into()),
                    (
                        "daysSinceNoncurrentTime",
                        Value::Int(r.pointer("/condition/daysSinceNoncurrentTime").and_then(Json::as_i64).unwrap_or(0)),
                    ),
                ])
            })
            .collect();
        live.insert("lifecycle", Value::List(rules));
    }
    live
}

/// An HTTP answer that is not a success, as ours, and whether a retry may help.
fn failure(what: &str, status: u16, body: &str) -> (Retry, CloudError) {
    let v: Option<Json> = serde_json::from_str(body).ok();
    let message = v
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Json::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.chars().take(200).collect());
    let reason = v.as_ref().and_then(|v| v.pointer("/error/errors/0/reason")).and_then(Json::as_str);
    let code = super::code_of_http(status, reason);
    let retry = if status == 429 || status >= 500 { Retry::Yes } else { Retry::No };
    (retry, CloudError { what: what.to_owned(), code: code.map(str::to_owned), message: format!("HTTP {status}: {message}") })
}

impl Client {
    /// A client for `endpoint` (anonymous, an emulator) or GCS with the default chain.
    pub(super) fn new(endpoint: Option<&str>) -> Result<Client, CloudError> {
        let credentials = match endpoint {
            Some(_) => None,
            None => Some(
                google_cloud_auth::credentials::Builder::default()
                    .with_scopes(["https://www.googleapis.com/auth/cloud-platform"])
                    .build()
                    .map_err(|e| {
                        CloudError::new(
                            "connecting to GCS",
                            format!(
                                "no Google credentials ({e}); set GOOGLE_APPLICATION_CREDENTIALS, or run where the metadata server answers"
                            ),
                        )
                    })?,
            ),
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| CloudError::new("connecting to GCS", format!("HTTP client: {e}")))?;
        Ok(Client { http, endpoint: endpoint.unwrap_or(DEFAULT_ENDPOINT).to_owned(), credentials })
    }

    /// Sends one request (`body` as JSON if given) and reads the JSON answer; `None` for
    /// an empty one.
    async fn send(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Json>,
    ) -> Result<Option<Json>, (Retry, CloudError)> {
        let mut request = self.http.request(method, format!("{}{path}", self.endpoint));
        if let Some(c) = &self.credentials {
            match c.headers(http::Extensions::new()).await {
                Ok(CacheableResource::New { data, .. }) => request = request.headers(data),
                Ok(CacheableResource::NotModified) => {}
                Err(e) => {
                    let retry = if e.is_transient() { Retry::Yes } else { Retry::No };
                    return Err((
                        retry,
                        CloudError {
                            what: what.to_owned(),
                            code: Some("NoCredentials".into()),
                            message: format!("getting a Google token: {e}"),
                        },
                    ));
                }
            }
        }
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = request.send().await.map_err(|e| {
            let retry = if e.is_connect() { Retry::No } else { Retry::Yes };
            let code = e.is_connect().then(|| super::UNREACHABLE.to_owned());
            (retry, CloudError { what: what.to_owned(), code, message: format!("{e}") })
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| (Retry::Yes, CloudError::new(what, format!("reading the answer: {e}"))))?;
        if !(200..300).contains(&status) {
            return Err(failure(what, status, &text));
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text).map(Some).map_err(|e| (Retry::No, CloudError::new(what, format!("the answer is not JSON: {e}"))))
    }

    /// [`Client::send`] through the retrier.
    async fn call(
        &self,
        retry: &Retrier,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Json>,
    ) -> Result<Option<Json>, CloudError> {
        retry.call_sorted(what, || self.send(what, method.clone(), path, body)).await
    }

    pub(super) async fn get_policy(&self, retry: &Retrier, bucket: &str, what: &str) -> Result<Json, CloudError> {
        let path = format!("/storage/v1/b/{bucket}/iam?optionsRequestedPolicyVersion=3");
        Ok(self.call(retry, what, reqwest::Method::GET, &path, None).await?.unwrap_or(Json::Null))
    }

    pub(super) async fn set_policy(&self, retry: &Retrier, bucket: &str, policy: &Json, what: &str) -> Result<(), CloudError> {
        self.call(retry, what, reqwest::Method::PUT, &format!("/storage/v1/b/{bucket}/iam"), Some(policy)).await?;
        Ok(())
    }
}

impl Gcp {
    pub(super) async fn observe_buckets(&self, out: &mut Vec<Found>) -> Result<(), CloudError> {
        for (id, name) in &self.buckets {
            let what = format!("storage buckets.get {name}");
            let read = self.storage.call(&self.retry, &what, reqwest::Method::GET, &format!("/storage/v1/b/{name}"), None).await;
            let Some(b) = super::unless_gone(read)?.flatten() else { continue };
            let labels: std::collections::HashMap<String, String> = b["labels"]
                .as_object()
                .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect())
                .unwrap_or_default();
            // Only a bucket labelled as this one is ours; another of the same name is
            // refused when ensure meets it.
            if self.labelled_as(&labels, id) || self.recorded_buckets.contains(name) {
                out.push(found(id, Kind::GcpBucket, name.clone(), [], live_settings(&b)));
            }
        }
        Ok(())
    }

    pub(super) async fn ensure_bucket(&self, r: &Resource, existing: Option<&Found>) -> Result<Found, CloudError> {
        let name = text(r, "name");
        let body = bucket_body(r);
        let what = format!("storage buckets.insert for {}", r.id);
        let path = format!("/storage/v1/b?project={}", self.project);
        let mut created = false;
        if existing.is_none() {
            match self.storage.call(&self.retry, &what, reqwest::Method::POST, &path, Some(&body)).await {
                Ok(_) => created = true,
                Err(e) if e.is(&["ALREADY_EXISTS"]) => {
                    let live = self
                        .storage
                        .call(&self.retry, &what, reqwest::Method::GET, &format!("/storage/v1/b/{name}"), None)
                        .await?
                        .unwrap_or_default();
                    let labels: std::collections::HashMap<String, String> = live["labels"]
                        .as_object()
                        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect())
                        .unwrap_or_default();
                    if !self.labelled_as(&labels, &r.id) {
                        return Err(self.not_ours(r, what, "bucket", name));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if !created {
            // Converge the settings: one PATCH with every managed setting, only when one
            // differs (a no-op apply writes nothing).
            let what = format!("storage buckets.patch for {}", r.id);
            let live = self
                .storage
                .call(&self.retry, &what, reqwest::Method::GET, &format!("/storage/v1/b/{name}"), None)
                .await?
                .unwrap_or_default();
            let want = live_settings(&body);
            let now = live_settings(&live);
            let differs = now.iter().any(|(k, v)| want.get(k) != Some(v)) || live.get("labels").is_some_and(|l| *l != body["labels"]);
            if differs || now.is_empty() {
                let mut patch = body.clone();
                if let Some(o) = patch.as_object_mut() {
                    o.remove("name");
                    o.remove("location");
                }
                self.storage.call(&self.retry, &what, reqwest::Method::PATCH, &format!("/storage/v1/b/{name}"), Some(&patch)).await?;
            }
        }
        Ok(found(&r.id, Kind::GcpBucket, name.to_owned(), [], Map::new()))
    }

    /// Empties the bucket (every version of every object) and deletes it: reached only
    /// when destroy is given --delete-data (buckets are protected otherwise).
    pub(super) async fn delete_bucket(&self, f: &Found) -> Result<(), CloudError> {
        let name = &f.cloud_id;
        let what = format!("storage buckets.delete for {}", f.id);
        loop {
            let list =
                self.storage.call(&self.retry, &what, reqwest::Method::GET, &format!("/storage/v1/b/{name}/o?versions=true"), None).await;
            let Some(list) = super::unless_gone(list)?.flatten() else { return Ok(()) };
            let items = list["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                break;
            }
            for o in items {
                let object = o["name"].as_str().unwrap_or_default();
                let generation = o["generation"].as_str().unwrap_or_default();
                let path = format!("/storage/v1/b/{name}/o/{}?generation={generation}", encode(object));
                super::unless_gone(self.storage.call(&self.retry, &what, reqwest::Method::DELETE, &path, None).await)?;
            }
        }
        super::unless_gone(self.storage.call(&self.retry, &what, reqwest::Method::DELETE, &format!("/storage/v1/b/{name}"), None).await)?;
        Ok(())
    }
}

/// An object name as one path segment.
fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_reads_back_as_the_settings_it_was_made_with() {
        let r = Resource::new(Kind::GcpBucket, "data")
            .set("name", "b")
            .set("location", "us-central1")
            .set("versioning", true)
            .set("uniformBucketLevelAccess", true)
            .set("publicAccessPrevention", "enforced")
            .set("lifecycle", Value::List(vec![Value::map([("action", "Delete".into()), ("daysSinceNoncurrentTime", Value::Int(7))])]));
        let body = bucket_body(&r);
        assert_eq!(body["iamConfiguration"]["publicAccessPrevention"], "enforced");
        assert_eq!(body["lifecycle"]["rule"][0]["condition"]["daysSinceNoncurrentTime"], 7);
        let live = live_settings(&body);
        for prop in ["versioning", "uniformBucketLevelAccess", "publicAccessPrevention", "lifecycle"] {
            assert_eq!(live.get(prop), r.properties.get(prop), "{prop}");
        }
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
