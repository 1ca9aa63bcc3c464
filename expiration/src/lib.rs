//! The expiration service ([docs/api.md § Events](../../docs/api.md#events)): for
//! every `order.created` it schedules `expiration.complete` at the order's
//! `expiresAt`, in its own database.
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

pub mod events;
pub mod schedule;
pub mod scheduler;

use common::cli::ServiceMain;
use common::config::{BusConfig, ConfigError, DatabaseConfig, Env, HttpConfig};
use common::events::Consumers;
use common::server::Backend;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "expiration";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            database: DatabaseConfig::from_env(env)?,
            bus: BusConfig::from_env(env)?,
        })
    }

    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            http: HttpConfig::for_tests(),
            database: DatabaseConfig::for_tests(database_url),
            bus: BusConfig::for_tests(nats_url),
        }
    }
}

/// The listener: orders enter the schedule.
pub fn consumers(config: &Config, pool: PgPool) -> Consumers {
    Consumers::new(SERVICE, pool, &config.bus).listen(events::OrderCreatedListener)
}

/// Connects, migrates, schedules and serves health until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let backend = Backend::connect(SERVICE, &config.database, &config.bus, &MIGRATOR).await?;
    let consumers = consumers(&config, backend.pools.events.clone());
    let pool = backend.pools.events.clone();
    backend
        .service(
            SERVICE,
            axum::Router::new(),
            &config.http,
            &config.bus,
            consumers,
        )
        .prune("schedules", "fired_at")
        .with_task("scheduler", move |stop| scheduler::run(pool.clone(), stop))
        .run(listener, shutdown)
        .await
}

impl ServiceMain for Config {
    const NAME: &'static str = SERVICE;

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Config::from_env(env)
    }

    fn http(&self) -> &HttpConfig {
        &self.http
    }

    fn database(&self) -> Option<&DatabaseConfig> {
        Some(&self.database)
    }

    async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        run(self, listener, shutdown).await
    }

    fn consumers(&self, pool: PgPool) -> anyhow::Result<Option<Consumers>> {
        Ok(Some(consumers(self, pool)))
    }
}
