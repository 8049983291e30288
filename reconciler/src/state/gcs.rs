//! The state store in a GCS bucket: one object per key under a prefix, the object's
//! generation as its version, creates with `ifGenerationMatch=0` and updates with
//! `ifGenerationMatch=<generation read>`, so a write based on a stale read fails with 412
//! instead of overwriting.
//!
//! Calls go to GCS's JSON API over reqwest, with the bearer token from google-cloud-auth
//! (workload identity on GKE through the metadata server, a service-account key or
//! workload identity federation through `GOOGLE_APPLICATION_CREDENTIALS`). The official
//! `google-cloud-storage` crate was not used: it lists objects only over gRPC
//! (`StorageControl`) and always builds tonic, while the two calls here are plain HTTP.
//! Writes are `uploadType=multipart` (metadata and bytes in one request): the simplest
//! upload GCS offers that takes a generation precondition, and the one fake-gcs-server
//! judges preconditions on (it ignores `ifGenerationMatch` on `uploadType=media`).

use google_cloud_auth::credentials::{CacheableResource, Credentials};

use super::{StateError, StateStore, StoreFuture, Versioned, check_key};

/// The public JSON API endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// A GCS-backed state store.
#[derive(Clone)]
pub struct GcsStore {
    http: reqwest::Client,
    endpoint: String,
    bucket: String,
    prefix: String,
    /// `None`: anonymous (an emulator over plain http).
    credentials: Option<Credentials>,
}

impl std::fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsStore").field("endpoint", &self.endpoint).field("bucket", &self.bucket).field("prefix", &self.prefix).finish()
    }
}

impl GcsStore {
    /// A store in `bucket` under `prefix` (e.g. `byoc/prod/`). With `endpoint` `None`,
    /// GCS itself with application-default credentials. A plain-http endpoint (an emulator
    /// such as fake-gcs-server) is called anonymously: a bearer token is never sent in the
    /// clear. An https endpoint (e.g. Private Google Access) gets the credentials.
    pub fn new(bucket: &str, prefix: &str, endpoint: Option<&str>) -> Result<GcsStore, StateError> {
        // reqwest is built without a crypto provider of its own: use the process's, ring
        // (kube needs it too; installing twice is harmless).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoint = endpoint.unwrap_or(DEFAULT_ENDPOINT).trim_end_matches('/').to_owned();
        let credentials = if endpoint.starts_with("http://") {
            None
        } else {
            let built = google_cloud_auth::credentials::Builder::default()
                .with_scopes(["https://www.googleapis.com/auth/devstorage.read_write"])
                .build()
                .map_err(|e| StateError::Refused {
                    key: String::new(),
                    message: format!(
                        "gs://{bucket}/{prefix}: no Google credentials ({e}); on GKE bind the pod's service account with workload identity, elsewhere set GOOGLE_APPLICATION_CREDENTIALS"
                    ),
                })?;
            Some(built)
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| StateError::Refused { key: String::new(), message: format!("gs://{bucket}/{prefix}: HTTP client: {e}") })?;
        Ok(GcsStore { http, endpoint, bucket: bucket.to_owned(), prefix: prefix.to_owned(), credentials })
    }

    fn object(&self, key: &str) -> Result<String, StateError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn url(&self, key: &str) -> String {
        format!("gs://{}/{}{key}", self.bucket, self.prefix)
    }

    /// The request with the bearer token, if any.
    async fn authorized(&self, key: &str, request: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, StateError> {
        let Some(credentials) = &self.credentials else { return Ok(request) };
        match credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(request.headers(data)),
            // Asked without an entity tag, the library always answers `New`; this arm only
            // keeps the match whole.
            Ok(CacheableResource::NotModified) => Ok(request),
            Err(e) => {
                let message = format!("getting a Google token for {}: {e}", self.url(key));
                Err(if e.is_transient() {
                    StateError::Unavailable { key: key.into(), message }
                } else {
                    StateError::Refused { key: key.into(), message: format!("{message}; check the identity's credentials") }
                })
            }
        }
    }

    /// Sends, sorting a failure to get any answer as one a retry may fix.
    async fn send(&self, key: &str, what: &str, request: reqwest::RequestBuilder) -> Result<reqwest::Response, StateError> {
        let request = self.authorized(key, request).await?;
        request.send().await.map_err(|e| StateError::Unavailable { key: key.into(), message: format!("{what} {}: {e}", self.url(key)) })
    }

    /// A refusing answer, sorted by whether a retry can help: throttling (429), a server
    /// error or a timeout (408) may pass; anything else (403, a missing bucket) will not.
    async fn failure(&self, key: &str, what: &str, response: reqwest::Response) -> StateError {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| body.trim().chars().take(200).collect());
        let message = format!("{what} {}: HTTP {} ({detail})", self.url(key), status.as_u16());
        if status.as_u16() == 429 || status.as_u16() == 408 || status.is_server_error() {
            StateError::Unavailable { key: key.into(), message }
        } else {
            StateError::Refused {
                key: key.into(),
                message: format!("{message}; check the bucket name and the identity's storage permissions"),
            }
        }
    }
}

/// Object names go into the URL path as one segment: '/' and every other reserved byte
/// escaped.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl StateStore for GcsStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>> {
        Box::pin(async move {
            let object = self.object(key)?;
            let url = format!("{}/storage/v1/b/{}/o/{}?alt=media", self.endpoint, escape(&self.bucket), escape(&object));
            let response = self.send(key, "reading", self.http.get(url)).await?;
            match response.status().as_u16() {
                200 => {
                    // The media answer names the generation it served in a header, so
                    // bytes and version come from one read.
                    let version = response
                        .headers()
                        .get("x-goog-generation")
                        .and_then(|v| v.to_str().ok())
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .map(str::to_owned)
                        .ok_or_else(|| StateError::Io {
                            key: key.into(),
                            message: format!("reading {}: the answer names no generation (x-goog-generation)", self.url(key)),
                        })?;
                    let value = response
                        .bytes()
                        .await
                        .map_err(|e| StateError::Unavailable { key: key.into(), message: format!("reading {}: {e}", self.url(key)) })?;
                    Ok(Some(Versioned { value: value.to_vec(), version }))
                }
                // GCS answers a missing bucket with 404 too; the first write then says so.
                404 => Ok(None),
                _ => Err(self.failure(key, "reading", response).await),
            }
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a [u8], expected: Option<&'a str>) -> StoreFuture<'a, String> {
        Box::pin(async move {
            let object = self.object(key)?;
            // 0 is "only if no live object": a create; a generation is "only if this one".
            let generation = match expected {
                None => "0",
                Some(g) if !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()) => g,
                Some(g) => {
                    return Err(StateError::Conflict { key: key.into(), expected: Some(g.to_owned()), found: None });
                }
            };
            let url = format!(
                "{}/upload/storage/v1/b/{}/o?uploadType=multipart&ifGenerationMatch={generation}",
                self.endpoint,
                escape(&self.bucket)
            );
            // The boundary must not occur in the parts: a random one of 32 hex digits.
            let boundary = format!("byoc-{:032x}", rand::random::<u128>());
            let metadata = serde_json::json!({ "name": object, "contentType": "application/octet-stream" });
            let mut body = Vec::with_capacity(value.len() + 256);
            body.extend_from_slice(
                format!("--{boundary}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n").as_bytes(),
            );
            body.extend_from_slice(format!("--{boundary}\r\ncontent-type: application/octet-stream\r\n\r\n").as_bytes());
            body.extend_from_slice(value);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            let request = self.http.post(url).header("content-type", format!("multipart/related; boundary={boundary}")).body(body);
            let response = self.send(key, "writing", request).await?;
            match response.status().as_u16() {
                200 => {
                    let text = response.text().await.map_err(|e| StateError::Unavailable {
                        key: key.into(),
                        message: format!("writing {}: reading the answer: {e}", self.url(key)),
                    })?;
                    let written: serde_json::Value = serde_json::from_str(&text).map_err(|e| StateError::Io {
                        key: key.into(),
                        message: format!("writing {}: the answer is not JSON: {e}", self.url(key)),
                    })?;
                    written.get("generation").and_then(|g| g.as_str()).map(str::to_owned).ok_or_else(|| StateError::Io {
                        key: key.into(),
                        message: format!("writing {}: the answer names no generation", self.url(key)),
                    })
                }
                412 => Err(StateError::Conflict { key: key.into(), expected: expected.map(str::to_owned), found: None }),
                _ => Err(self.failure(key, "writing", response).await),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn object_names_are_one_escaped_path_segment() {
        assert_eq!(super::escape("envs/prod/lease"), "envs%2Fprod%2Flease");
        assert_eq!(super::escape("a b?c#"), "a%20b%3Fc%23");
    }
}
