//! The expiration service (`docs/api.md` § Events): for
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

use bus::{BusConfig, Listeners, OnBus};
use kit::config::{ConfigError, Env, HttpConfig};
use kit::db::DatabaseConfig;
use kit::{App, Service};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
}

impl Config {
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            http: HttpConfig::for_tests(),
            database: DatabaseConfig::for_tests(database_url),
            bus: BusConfig::for_tests(nats_url),
        }
    }
}

impl Service for Config {
    const NAME: &'static str = "expiration";

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            database: DatabaseConfig::from_env(env)?,
            bus: BusConfig::from_env(env)?,
        })
    }

    fn http(&self) -> &HttpConfig {
        &self.http
    }

    /// Health only, and the scheduler.
    async fn start(self) -> anyhow::Result<App> {
        let backend = bus::Backend::connect::<Self>(&self.database, &self.bus).await?;
        let pool = backend.pools.events.clone();
        Ok(backend
            .app(axum::Router::new())
            .with_task("scheduler", move |stop| scheduler::run(pool.clone(), stop)))
    }
}

impl OnBus for Config {
    const MIGRATOR: &'static sqlx::migrate::Migrator = &MIGRATOR;
    /// Fired entries, kept a while for the record.
    const PRUNED: &'static [(&'static str, &'static str)] = &[("schedules", "fired_at")];

    /// Orders enter the schedule.
    fn listeners() -> Listeners {
        Listeners::new().listen(events::OrderCreatedListener)
    }
}
