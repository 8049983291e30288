//! Retries of cloud calls: throttling and server errors are retried with exponential
//! backoff and full jitter, up to a bounded number of attempts; every retry is printed
//! and counted. The SDK's own retries are switched off so that this is the only place
//! that retries, and what it did can be reported.
//!
//! Only what can succeed on a second try is retried: throttling, 5xx, timeouts, a
//! connection dropped mid-request. Missing or refused credentials, an endpoint that
//! refuses connections or a host name that does not resolve fail at once, with a one-line
//! error and a hint, instead of the same failure eight times over.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use rand::Rng;

use super::CloudError;

/// Error codes AWS services use for "slow down".
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "ProvisionedThroughputExceededException",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
];

/// How long [`Retrier::call_fresh`] waits for something just created to become visible.
/// AWS documents no bound; propagation takes seconds, rarely a minute or more.
pub const PROPAGATION_LIMIT: Duration = Duration::from_secs(180);

/// How to retry.
#[derive(Debug)]
pub struct Retrier {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Backoff before the second attempt; doubled for each further one.
    pub base: Duration,
    /// Longest backoff.
    pub cap: Duration,
    retries: AtomicU32,
}

impl Default for Retrier {
    fn default() -> Self {
        Retrier::new(8, Duration::from_millis(200), Duration::from_secs(20))
    }
}

impl Retrier {
    /// A retrier with these bounds.
    pub fn new(attempts: u32, base: Duration, cap: Duration) -> Self {
        Retrier { attempts: attempts.max(1), base, cap, retries: AtomicU32::new(0) }
    }

    /// [`Retrier::call`] for a call that uses what another call has just created (a new
    /// role passed to EKS, a new VPC id given to `CreateSubnet`): an answer that it does
    /// not exist yet ([`propagating`]) is retried too, with backoff, until it has been
    /// failing for [`PROPAGATION_LIMIT`]. Not for reads or deletes, where "not found" is
    /// an answer.
    pub async fn call_fresh<T, E, F, Fut>(&self, what: &str, mut op: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let started = tokio::time::Instant::now();
        let mut waits: u32 = 0;
        loop {
            match self.call(what, &mut op).await {
                Err(e) if propagating(&e) && started.elapsed() < PROPAGATION_LIMIT => {
                    let ceiling = self.base.saturating_mul(1 << waits.min(8)).min(Duration::from_secs(5));
                    let wait = ceiling.mul_f64(rand::rng().random_range(0.5..=1.0));
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    crate::logging::line(
                        crate::logging::Level::Warn,
                        &format!(
                            "retry: {what}: {} (not visible yet: AWS is eventually consistent; retried for up to {} s, now in {} ms)",
                            e.code.as_deref().unwrap_or(&e.message),
                            PROPAGATION_LIMIT.as_secs(),
                            wait.as_millis()
                        ),
                    );
                    tokio::time::sleep(wait).await;
                    waits += 1;
                }
                other => return other,
            }
        }
    }

    /// Counts one retry made by a caller that retries by itself (the ARM client, whose
    /// answers are not the AWS SDK's).
    pub fn count(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Retries made so far.
    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
    }

    /// [`Retrier::call`] for clients other than the AWS SDK's (Google's): `op` sorts its own
    /// failure into whether a retry may help, and this backs off and counts the same way.
    pub async fn call_sorted<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, (Retry, CloudError)>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err((Retry::Yes, error)) if attempt < self.attempts => {
                    self.pause(what, attempt, &error).await;
                    attempt += 1;
                }
                Err((_, error)) => return Err(error),
            }
        }
    }

    /// Sleeps the backoff before attempt `attempt + 1`, saying so, and counts the retry.
    async fn pause(&self, what: &str, attempt: u32, error: &CloudError) {
        // Full jitter: uniformly in [0, min(cap, base * 2^(attempt-1))].
        let ceiling = self.base.saturating_mul(1 << (attempt - 1).min(16)).min(self.cap);
        let wait = ceiling.mul_f64(rand::rng().random_range(0.0..=1.0));
        self.retries.fetch_add(1, Ordering::Relaxed);
        crate::logging::line(
            crate::logging::Level::Warn,
            &format!(
                "retry: {what}: {} (attempt {} of {} in {} ms)",
                error.code.as_deref().unwrap_or(&error.message),
                attempt + 1,
                self.attempts,
                wait.as_millis()
            ),
        );
        tokio::time::sleep(wait).await;
    }

    /// Calls `op` until it succeeds, fails with an error that is not worth retrying, or
    /// runs out of attempts. `what` names the call in messages (`ec2 CreateVpc for
    /// aws.vpc/main`).
    pub async fn call<T, E, F, Fut>(&self, what: &str, mut op: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut attempt = 1;
        loop {
            let error = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let (retry, error) = classify(what, &error);
            let retryable = retry == Retry::Yes;
            if !retryable || attempt >= self.attempts {
                return Err(error);
            }
            self.pause(what, attempt, &error).await;
            attempt += 1;
        }
    }
}

/// Whether `error` says that something created moments ago is not visible yet: AWS's
/// control planes are eventually consistent ("Eventual consistency in the Amazon EC2
/// API", EC2 API Reference: `Invalid*.NotFound` for an id just returned by a create;
/// "Changes that I make are not always immediately visible", IAM User Guide: a new role
/// that EKS cannot assume yet). A later call succeeds once it has spread.
pub fn propagating(error: &CloudError) -> bool {
    match error.code.as_deref() {
        Some(code) if code.starts_with("Invalid") && code.ends_with(".NotFound") => true,
        Some("InvalidParameterException") => error.message.contains("could not be assumed"),
        // A trust policy naming an OIDC provider created moments ago.
        Some("MalformedPolicyDocument") => error.message.contains("Invalid principal"),
        _ => false,
    }
}

/// Whether a failed call may succeed if made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Throttling, a server error, a timeout, a dropped connection.
    Yes,
    /// The same request would fail the same way.
    No,
}

/// Code of the error made for missing or unusable credentials.
pub const NO_CREDENTIALS: &str = "NoCredentials";
/// Code of the error made for an endpoint that cannot be reached at all.
pub const UNREACHABLE: &str = "EndpointUnreachable";

const CREDENTIALS_HINT: &str = "hint: byoc reads credentials from the AWS default chain: set AWS_PROFILE (a profile in ~/.aws/config), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or for web identity AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN";

/// Whether an error is worth retrying, and the error as ours.
fn classify<E>(what: &str, error: &SdkError<E, HttpResponse>) -> (Retry, CloudError)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let server = status.is_some_and(|s| s >= 500 || s == 429);
    let verdict = |retry: bool| if retry { Retry::Yes } else { Retry::No };
    match error {
        SdkError::ServiceError(e) => {
            let inner = e.err();
            let code = inner.code().map(str::to_owned);
            let message = inner.message().map(str::to_owned).unwrap_or_else(|| format!("{inner}"));
            let throttled = code.as_deref().is_some_and(|c| THROTTLING.contains(&c));
            let message = match status {
                Some(s) if code.is_none() => format!("HTTP {s}: {message}"),
                _ => message,
            };
            (verdict(throttled || server), CloudError { what: what.to_owned(), code, message })
        }
        SdkError::TimeoutError(_) => (Retry::Yes, CloudError::new(what, chain(error))),
        SdkError::DispatchFailure(failure) => {
            if let Some(c) = find::<CredentialsError>(error) {
                // A provider that timed out may answer next time; anything else about
                // credentials (none found, a bad profile, a refused web identity) will not.
                let retry = verdict(matches!(c, CredentialsError::ProviderTimedOut(_)));
                let message = match c {
                    CredentialsError::CredentialsNotLoaded(_) => "no AWS credentials were found".to_owned(),
                    other => format!("the AWS credentials could not be loaded: {}", chain(other)),
                };
                return (
                    retry,
                    CloudError {
                        what: what.to_owned(),
                        code: Some(NO_CREDENTIALS.to_owned()),
                        message: format!("{message}\n  {CREDENTIALS_HINT}"),
                    },
                );
            }
            let refused = find::<std::io::Error>(error)
                .is_some_and(|e| matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable));
            let unresolved = !refused && chain(error).contains("dns error");
            if refused || unresolved {
                let why = if refused { "the endpoint refused the connection" } else { "the endpoint's host name does not resolve" };
                let message = format!(
                    "{why} ({})\n  hint: check the endpoint (--endpoint-url, AWS_ENDPOINT_URL, the region) and that it is up",
                    chain(error)
                );
                return (Retry::No, CloudError { what: what.to_owned(), code: Some(UNREACHABLE.to_owned()), message });
            }
            // A timeout or a connection dropped mid-request may go through next time.
            let retry = failure.is_timeout() || failure.is_io();
            (verdict(retry), CloudError::new(what, chain(error)))
        }
        SdkError::ResponseError(_) => (verdict(server), CloudError::new(what, chain(error))),
        _ => (Retry::No, CloudError::new(what, chain(error))),
    }
}

/// The first error of type `T` in `error`'s chain of sources.
fn find<'e, T: std::error::Error + 'static>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// An error and its sources on one line (`dispatch failure: io error: ...: Connection
/// refused (os error 111)`), each said once: what a person needs, not the debug dump.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_types::error::ErrorMetadata;

    #[derive(Debug)]
    struct NoMeta(ErrorMetadata);

    impl std::fmt::Display for NoMeta {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("service error")
        }
    }

    impl std::error::Error for NoMeta {}

    impl ProvideErrorMetadata for NoMeta {
        fn meta(&self) -> &ErrorMetadata {
            &self.0
        }
    }

    fn dispatch(source: impl std::error::Error + Send + Sync + 'static) -> SdkError<NoMeta, HttpResponse> {
        SdkError::dispatch_failure(ConnectorError::other(Box::new(source), None))
    }

    #[test]
    fn only_what_can_succeed_on_a_second_try_is_retried() {
        let no_credentials = dispatch(CredentialsError::not_loaded("no providers in chain provided credentials"));
        let (retry, e) = classify("ec2 DescribeVpcs", &no_credentials);
        assert_eq!(retry, Retry::No);
        assert!(e.is(&[NO_CREDENTIALS]) && e.message.contains("AWS_PROFILE") && e.message.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{e}");

        let timed_out = dispatch(CredentialsError::provider_timed_out(std::time::Duration::from_secs(5)));
        assert_eq!(classify("sts GetCallerIdentity", &timed_out).0, Retry::Yes);

        let refused = SdkError::<NoMeta, HttpResponse>::dispatch_failure(ConnectorError::io(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))));
        let (retry, e) = classify("ec2 DescribeVpcs", &refused);
        assert_eq!(retry, Retry::No);
        assert!(e.is(&[UNREACHABLE]) && e.message.contains("refused the connection"), "{e}");

        let reset = SdkError::<NoMeta, HttpResponse>::dispatch_failure(ConnectorError::io(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        ))));
        assert_eq!(classify("ec2 DescribeVpcs", &reset).0, Retry::Yes, "a dropped connection may go through next time");
    }

    #[test]
    fn what_is_not_visible_yet_is_told_apart_from_what_is_wrong() {
        let e = |code: &str, message: &str| CloudError { what: "x".into(), code: Some(code.into()), message: message.into() };
        assert!(propagating(&e("InvalidVpcID.NotFound", "The vpc ID 'vpc-1' does not exist")));
        assert!(propagating(&e("InvalidGroup.NotFound", "")));
        assert!(propagating(&e(
            "InvalidParameterException",
            "Role with arn: arn:aws:iam::123456789012:role/r, could not be assumed because it does not exist or the trusted entity is not correct"
        )));
        assert!(!propagating(&e("InvalidParameterException", "Version 1.10 is not supported")));
        assert!(!propagating(&e("InvalidParameterValue", "bad cidr")));
        assert!(!propagating(&CloudError::new("x", "NotFound")));
    }
}
