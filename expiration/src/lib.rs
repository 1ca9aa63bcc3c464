//! The expiration service (contract §7.5): for every `order.created` it schedules
//! `expiration.complete` at the order's `expiresAt`, in its own database.
//!
//! - accurate: the [`scheduler`] sleeps exactly until the next entry is due (woken
//!   early when a sooner one arrives), so an order expires within milliseconds;
//! - restart-safe: the schedule is in PostgreSQL; entries that came due while the
//!   service was down fire as soon as it is back;
//! - replica-safe: due entries are claimed with `FOR UPDATE SKIP LOCKED` and retired
//!   in the same transaction that appends the event, so two instances never fire one
//!   order twice.
//!
//! It has no public API; it serves `/healthz`, `/readyz` and `/metrics`.

pub mod order_created;
pub mod schedule;
pub mod scheduler;

use common::config::{BusConfig, ConfigError, HttpConfig};
use common::server::Backend;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "expiration";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub bus: BusConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env()?,
            bus: BusConfig::from_env()?,
        })
    }
}

/// Connects, migrates, schedules and serves health until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let backend = Backend::connect(SERVICE, &config.http, &config.bus, &MIGRATOR).await?;
    let app = common::http::app(axum::Router::new(), backend.readiness());
    let consumers = backend
        .consumers(SERVICE, &config.bus)
        .listen(order_created::OrderCreatedListener);
    let pool = backend.pool.clone();
    backend
        .service(SERVICE, app, consumers)
        .with_task(move |stop| scheduler::run(pool, stop))
        .run(listener, shutdown)
        .await
}
