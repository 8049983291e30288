//! End-to-end tests of the real `rwproxy` binary in front of two real PostgreSQL servers
//! (standing in for two RisingWave clusters), with psql, pgbench and tokio-postgres as
//! clients.

mod backend_tls;
mod cancel;
mod check;
mod hostile;
mod lifecycle;
mod logging;
mod reload;
mod routing;
mod spares;
mod startup;
mod storm;
mod support;
