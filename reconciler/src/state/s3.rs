//! The state store in an S3 bucket: one object per key under a prefix, the object's ETag
//! as its version, creates with `If-None-Match: *` and updates with `If-Match: <etag>`, so
//! a write based on a stale read fails with 412 instead of overwriting.
//!
//! Each call awaits the SDK on the caller's runtime: no runtime or thread of its own, so a
//! slow bucket delays only the task that asked.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::{StateError, StateStore, StoreFuture, Versioned, check_key};

/// An S3-backed state store.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("bucket", &self.bucket).field("prefix", &self.prefix).finish()
    }
}

impl S3Store {
    /// A store in `bucket` under `prefix` (e.g. `byoc/prod/`), with credentials from the
    /// default chain (environment, profile, web identity from a projected token file,
    /// instance metadata); `endpoint_url` points it at an emulator.
    pub async fn new(bucket: &str, prefix: &str, endpoint_url: Option<&str>) -> S3Store {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        // Emulators serve buckets by path, not by host name.
        let s3 = aws_sdk_s3::config::Builder::from(&config).force_path_style(endpoint_url.is_some()).build();
        S3Store::from_conf(bucket, prefix, s3)
    }

    /// A store using an explicit client configuration.
    pub fn from_conf(bucket: &str, prefix: &str, conf: aws_sdk_s3::Config) -> S3Store {
        S3Store { client: Client::from_conf(conf), bucket: bucket.to_owned(), prefix: prefix.to_owned() }
    }

    fn object(&self, key: &str) -> Result<String, StateError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// A failed call, sorted by whether a retry can help: no answer (dispatch, timeout),
    /// throttling or a server error may pass; any other answer (access denied, no such
    /// bucket) will not.
    fn failure<E>(&self, key: &str, what: &str, e: &SdkError<E, HttpResponse>) -> StateError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let message = format!(
            "{what} s3://{}/{}{key}: {}",
            self.bucket,
            self.prefix,
            e.message().map_or_else(
                || format!("{}", aws_smithy_types::error::display::DisplayErrorContext(e)),
                |m| format!("{} ({m})", e.code().unwrap_or("error"))
            )
        );
        let transient = match e {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
            _ => {
                status.is_some_and(|s| s == 429 || s >= 500)
                    || matches!(e.code(), Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout" | "InternalError"))
            }
        };
        if transient {
            StateError::Unavailable { key: key.into(), message }
        } else {
            StateError::Refused { key: key.into(), message: format!("{message}; check the bucket name and the identity's S3 permissions") }
        }
    }
}

impl StateStore for S3Store {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>> {
        Box::pin(async move {
            let object = self.object(key)?;
            match self.client.get_object().bucket(&self.bucket).key(&object).send().await {
                Ok(out) => {
                    let version = out.e_tag().unwrap_or_default().to_owned();
                    let value = out.body.collect().await.map_err(|e| StateError::Unavailable {
                        key: key.into(),
                        message: format!("reading s3://{}/{object}: {e}", self.bucket),
                    })?;
                    Ok(Some(Versioned { value: value.into_bytes().to_vec(), version }))
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                Err(e) => Err(self.failure(key, "reading", &e)),
            }
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a [u8], expected: Option<&'a str>) -> StoreFuture<'a, String> {
        Box::pin(async move {
            let object = self.object(key)?;
            let request = self.client.put_object().bucket(&self.bucket).key(&object).body(ByteStream::from(value.to_vec()));
            let request = match expected {
                None => request.if_none_match("*"),
                Some(etag) => request.if_match(etag),
            };
            match request.send().await {
                Ok(out) => Ok(out.e_tag().unwrap_or_default().to_owned()),
                Err(e)
                    if matches!(e.code(), Some("PreconditionFailed" | "ConditionalRequestConflict"))
                        || e.raw_response().is_some_and(|r| r.status().as_u16() == 412) =>
                {
                    Err(StateError::Conflict { key: key.into(), expected: expected.map(str::to_owned), found: None })
                }
                Err(e) => Err(self.failure(key, "writing", &e)),
            }
        })
    }
}
