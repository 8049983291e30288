//! Kubernetes: the reconcile against the API double, its wire requests, and the real
//! `byoc clusters` binary against the double served over HTTP.

mod binary;
mod converge;
mod operator_schema;
pub(crate) mod support;
mod wire;
