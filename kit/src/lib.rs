//! The service kit: what turns a router into a Ticketing service.
//!
//! - [`service`]: the [`Service`] trait a service implements once (its name, its
//!   configuration, what it is made of) and [`serve`], which runs it and stops it
//!   gracefully;
//! - [`cli`]: its binary's command line ([`main`]);
//! - [`config`]: configuration from the environment;
//! - [`telemetry`] and [`http`]: logs and metrics, and the router scaffolding (health,
//!   readiness, metrics, fallbacks, limits, timeouts);
//! - [`supervisor`]: background work that is restarted when it fails;
//! - [`retry`]: the one backoff and the one connect loop;
//! - [`limits`]: per-user rate limits and the `RATE_LIMITS` switch;
//! - [`db`] (feature `postgres`): the database settings and connection pools.
//!
//! The event bus (`bus`) plugs into it as a [`service::Part`]; a service without a
//! bus links no NATS client, and one without a database no database driver.

pub mod cli;
pub mod config;
#[cfg(feature = "postgres")]
pub mod db;
pub mod http;
pub mod limits;
pub mod retry;
pub mod service;
pub mod supervisor;
pub mod telemetry;

pub use cli::main;
pub use service::{App, Part, Service, serve};

/// Installs `ring` as the process's TLS crypto provider (the one NATS already uses).
/// HTTP clients are built without a default provider; call this before building one.
pub fn install_tls_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
