//! RWProxy: a PostgreSQL-wire proxy that routes SQL connections to RisingWave clusters.
//!
//! The [`routes`] module (route table types, parsing and validation) has no heavy
//! dependencies and is shared with the reconciler, which validates routes before it
//! publishes a revision. [`diagnostics`], [`specfiles`] and [`yaml`] are the error type,
//! the spec-file reader and the hardened YAML reader that both use. The proxy itself
//! (feature `server`) is [`protocol`] and [`routing`] (pure), then [`server`], [`tls`],
//! [`tls_stream`] (the client's TLS, buffered only while bytes are in flight), [`relay`]
//! (the spliced session), [`spares`] (backend connections opened ahead of clients),
//! [`cancel`], [`limits`], [`reload`] and [`metrics`].

pub mod diagnostics;
pub mod routes;
pub mod specfiles;
pub mod yaml;

#[cfg(feature = "server")]
pub mod cancel;
#[cfg(feature = "server")]
pub mod limits;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod protocol;
#[cfg(feature = "server")]
pub mod relay;
#[cfg(feature = "server")]
pub mod reload;
#[cfg(feature = "server")]
pub mod routing;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod spares;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
pub mod tls_stream;
