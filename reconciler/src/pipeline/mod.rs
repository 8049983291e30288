//! The reconcile pipeline: the stages of the flow, each written once, called by the
//! one-shot commands (`crate::commands`) and by the daemon (`crate::run`) alike.
//!
//! ```text
//! source (fetch, verify) -> load -> plan (expand, observe, plan) -> apply (cloud, then
//! Kubernetes) -> publish
//! ```
//!
//! Nothing here prints a result or picks an exit code: that is the command layer's job.
//! Each stage returns a typed error that says whether trying again can help.

pub mod apply;
pub mod load;
pub mod plan;
pub mod publish;
pub mod source;
