//! Google's error JSON, as every API the double fakes answers it.
//!
//! <https://cloud.google.com/apis/design/errors#http_mapping> gives the shape
//! `{"error":{"code","message","status","errors":[{"message","domain","reason"}]}}`; Compute
//! (<https://cloud.google.com/compute/docs/api/handling-api-errors>) puts its `reason` in
//! `errors[]`, which the Rust clients read into an `ErrorInfo` detail.

use serde_json::{Value, json};

/// One refused request.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub code: u16,
    /// The canonical code's name (`NOT_FOUND`, ...).
    pub status: &'static str,
    /// Compute's `errors[].reason` (`notFound`, `alreadyExists`, `conditionNotMet`, ...).
    pub reason: &'static str,
    /// What went wrong, worded as the real service words it.
    pub message: String,
}

/// The `reason` of an error Compute reports through the operation, not the request: a
/// subnetwork range conflicting with another subnetwork's (the insert answers an Operation
/// that ends DONE with the error, as Terraform's "Error waiting to create Subnetwork:
/// Invalid IPCidrRange ... conflicts with existing subnetwork" shows).
pub(crate) const IN_OPERATION: &str = "inOperation";

impl ApiError {
    pub(crate) fn new(code: u16, status: &'static str, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, status, reason, message: message.into() }
    }

    /// 404 for a resource that does not exist.
    pub(crate) fn not_found(resource: &str) -> ApiError {
        ApiError::new(404, "NOT_FOUND", "notFound", format!("The resource '{resource}' was not found"))
    }

    /// 409 for a name already taken.
    pub(crate) fn already_exists(resource: &str) -> ApiError {
        ApiError::new(409, "ALREADY_EXISTS", "alreadyExists", format!("The resource '{resource}' already exists"))
    }

    /// 400 for a request the service refuses as malformed or invalid.
    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "INVALID_ARGUMENT", "invalid", message)
    }

    /// 412 for a stale fingerprint.
    pub(crate) fn condition_not_met(message: impl Into<String>) -> ApiError {
        ApiError::new(412, "FAILED_PRECONDITION", "conditionNotMet", message)
    }

    /// 403 for a permission the caller lacks, or a service not enabled.
    pub(crate) fn denied(reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(403, "PERMISSION_DENIED", reason, message)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
        }})
    }
}
