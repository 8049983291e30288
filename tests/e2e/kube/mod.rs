//! Kubernetes: the reconcile against the API double, its wire requests, and the real
//! `byoc clusters` binary against the double served over HTTP.

mod binary;
mod converge;
mod operator_schema;
mod support;
mod wire;
