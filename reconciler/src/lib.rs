//! The BYOC reconciler: reads signed environment specs from git and converges a customer's
//! cloud account and Kubernetes to them.
//!
//! The flow of one reconcile is `fetch -> verify -> load -> expand -> observe -> plan ->
//! apply -> publish -> report` (see the project's DESIGN). [`pipeline`] strings the
//! stages together once, for both callers: the one-shot [`commands`] (which [`cli`] only
//! parses for) and the daemon [`run`]. The stages' own modules: [`fetch`] and [`verify`]
//! (the source), [`spec`] (load), [`expand`], [`plan`], [`cloud`] and [`k8s`] (observe
//! and apply), [`publish`] (the verified tree RWProxy reads), [`state`] (the state store),
//! and [`source`] for reading a revision's files straight from git objects.

pub mod cli;
pub mod cloud;
pub mod commands;
pub mod expand;
pub mod fetch;
pub mod k8s;
pub mod logging;
pub mod map;
pub mod pipeline;
pub mod plan;
pub mod publish;
pub mod resource;
pub mod run;
pub mod sidecar;
pub mod source;
pub mod spec;
pub mod state;
pub mod verify;
