//! RWProxy: a PostgreSQL-wire proxy that routes SQL connections to RisingWave clusters.
//!
//! The [`routes`] module (route table types, parsing and validation) has no heavy
//! dependencies and is shared with the reconciler, which validates routes before it
//! publishes a revision. [`diagnostics`] and [`yaml`] are the error type and the hardened
//! YAML reader that both use.

pub mod diagnostics;
pub mod routes;
pub mod specfiles;
pub mod yaml;
