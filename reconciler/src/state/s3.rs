//! The state store in an S3 bucket: one object per key under a prefix, the object's ETag
//! as its version, creates with `If-None-Match: *` and updates with `If-Match: <etag>`, so
//! a write based on a stale read fails with 412 instead of overwriting.
//!
//! [`StateStore`] is synchronous (verification and planning have no runtime); each call
//! runs the SDK future on the store's own single-threaded runtime from a scoped thread, so
//! it may be called from inside or outside an async context alike. State calls are a few
//! per run, so the thread costs nothing that matters.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;

use super::{StateError, StateStore, Versioned, check_key};

/// An S3-backed state store.
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    runtime: tokio::runtime::Runtime,
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
    pub fn new(bucket: &str, prefix: &str, endpoint_url: Option<&str>) -> Result<S3Store, StateError> {
        let runtime = runtime()?;
        let client = std::thread::scope(|s| {
            s.spawn(|| {
                runtime.block_on(async {
                    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                    if let Some(url) = endpoint_url {
                        loader = loader.endpoint_url(url);
                    }
                    let config = loader.load().await;
                    // Emulators serve buckets by path, not by host name.
                    let s3 = aws_sdk_s3::config::Builder::from(&config).force_path_style(endpoint_url.is_some()).build();
                    Client::from_conf(s3)
                })
            })
            .join()
        })
        .map_err(|_| StateError::Io { key: String::new(), message: "the S3 client panicked while starting".into() })?;
        Ok(S3Store { client, bucket: bucket.to_owned(), prefix: prefix.to_owned(), runtime })
    }

    /// A store using an explicit client configuration.
    pub fn from_conf(bucket: &str, prefix: &str, conf: aws_sdk_s3::Config) -> Result<S3Store, StateError> {
        Ok(S3Store { client: Client::from_conf(conf), bucket: bucket.to_owned(), prefix: prefix.to_owned(), runtime: runtime()? })
    }

    fn run<T: Send>(&self, key: &str, f: impl Future<Output = T> + Send) -> Result<T, StateError> {
        std::thread::scope(|s| s.spawn(|| self.runtime.block_on(f)).join())
            .map_err(|_| StateError::Io { key: key.into(), message: "the S3 client panicked".into() })
    }

    fn object(&self, key: &str) -> Result<String, StateError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn failure(&self, key: &str, what: &str, e: &(impl ProvideErrorMetadata + std::fmt::Display)) -> StateError {
        StateError::Io {
            key: key.into(),
            message: format!(
                "{what} s3://{}/{}{key}: {}",
                self.bucket,
                self.prefix,
                e.message().map_or_else(|| e.to_string(), |m| format!("{} ({m})", e.code().unwrap_or("error")))
            ),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, StateError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StateError::Io { key: String::new(), message: format!("starting the S3 client: {e}") })
}

impl StateStore for S3Store {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        let object = self.object(key)?;
        self.run(key, async {
            match self.client.get_object().bucket(&self.bucket).key(&object).send().await {
                Ok(out) => {
                    let version = out.e_tag().unwrap_or_default().to_owned();
                    let value = out
                        .body
                        .collect()
                        .await
                        .map_err(|e| StateError::Io { key: key.into(), message: format!("reading s3://{}/{object}: {e}", self.bucket) })?;
                    Ok(Some(Versioned { value: value.into_bytes().to_vec(), version }))
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                Err(e) => Err(self.failure(key, "reading", &e)),
            }
        })?
    }

    fn put(&self, key: &str, value: &[u8], expected: Option<&str>) -> Result<String, StateError> {
        let object = self.object(key)?;
        self.run(key, async {
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
        })?
    }
}
