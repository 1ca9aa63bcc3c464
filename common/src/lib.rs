//! Shared mechanics of the Ticketing services.
//!
//! Every service is a small axum application that owns one PostgreSQL database and
//! talks to the others only through events on NATS JetStream. What they have in
//! common lives here, once:
//!
//! - [`error`]: the one error type and the JSON error body of
//!   [docs/api.md § Errors](../../docs/api.md#errors);
//! - [`extract`]: request extractors that turn bad input into that error body;
//! - [`session`]: the `session` cookie, its JWT and the current-user extractors;
//! - [`validate`]: per-field validation and the parsers for emails, ids and prices;
//! - [`money`] and [`time`]: exact prices in cents and millisecond timestamps;
//! - [`config`], [`telemetry`], [`http`], [`server`], [`db`]: configuration from
//!   the environment, logs and metrics, the router scaffolding (health, readiness,
//!   metrics, fallbacks, limits, timeouts), connection pools, and graceful start and
//!   stop;
//! - [`supervisor`] and [`prune`]: background work that is restarted when it fails,
//!   and the job that keeps bookkeeping tables from growing for ever;
//! - [`events`]: event subjects and payloads, the transactional outbox and its
//!   relay, the durable consumer runner and parked events;
//! - [`cli`]: the command line of every service binary (serve, `env`, `parked`).
//!
//! With the `test-support` feature, [`testing`] starts fresh databases, private NATS
//! servers and in-process services for integration tests.

pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod extract;
pub mod http;
pub mod money;
pub mod prune;
pub mod server;
pub mod session;
pub mod supervisor;
pub mod telemetry;
pub mod time;
pub mod validate;

#[cfg(feature = "test-support")]
pub mod testing;

pub use error::{Error, ErrorBody, FieldError, ResultExt};
pub use extract::{Id, Json, UncheckedId};
pub use session::{AuthUser, CurrentUser, SessionKeys, UserClaims};

/// Installs `ring` as the process's TLS crypto provider (the one NATS already uses).
/// HTTP clients are built without a default provider; call this before building one.
pub fn install_tls_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The result type of handlers and of everything they call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
