//! Retries of cloud calls: throttling and server errors are retried with exponential
//! backoff and full jitter, up to a bounded number of attempts; every retry is printed
//! and counted. The SDK's own retries are switched off so that this is the only place
//! that retries, and what it did can be reported.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

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

    /// Retries made so far.
    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
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
            let (retryable, error) = classify(what, &error);
            if !retryable || attempt >= self.attempts {
                return Err(error);
            }
            // Full jitter: uniformly in [0, min(cap, base * 2^(attempt-1))].
            let ceiling = self.base.saturating_mul(1 << (attempt - 1).min(16)).min(self.cap);
            let wait = ceiling.mul_f64(rand::rng().random_range(0.0..=1.0));
            self.retries.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "retry: {what}: {} (attempt {} of {} in {} ms)",
                error.code.as_deref().unwrap_or(&error.message),
                attempt + 1,
                self.attempts,
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// Whether an error is worth retrying, and the error as ours.
fn classify<E>(what: &str, error: &SdkError<E, HttpResponse>) -> (bool, CloudError)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    match error {
        SdkError::ServiceError(e) => {
            let inner = e.err();
            let code = inner.code().map(str::to_owned);
            let message = inner.message().map(str::to_owned).unwrap_or_else(|| format!("{inner}"));
            let throttled = code.as_deref().is_some_and(|c| THROTTLING.contains(&c));
            let server = status.is_some_and(|s| s >= 500 || s == 429);
            let message = match status {
                Some(s) if code.is_none() => format!("HTTP {s}: {message}"),
                _ => message,
            };
            (throttled || server, CloudError { what: what.to_owned(), code, message })
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            (true, CloudError::new(what, format!("{}", aws_smithy_types::error::display::DisplayErrorContext(error))))
        }
        SdkError::ResponseError(_) => (
            status.is_some_and(|s| s >= 500 || s == 429),
            CloudError::new(what, format!("{}", aws_smithy_types::error::display::DisplayErrorContext(error))),
        ),
        _ => (false, CloudError::new(what, format!("{}", aws_smithy_types::error::display::DisplayErrorContext(error)))),
    }
}
