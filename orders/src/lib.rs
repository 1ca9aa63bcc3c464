//! The orders service (`docs/api.md` § Orders): buyers
//! reserve tickets by ordering them.
//!
//! It keeps a replica of the tickets (from `ticket.created` / `ticket.updated`, in
//! version order), makes reservation race-free with a unique index, and decides the
//! fate of each order: cancelled by its buyer or by `expiration.complete`, or
//! complete on `payment.created`, whichever transition comes first.

pub mod events;
pub mod order;
pub mod replica;
pub mod routes;

use std::time::Duration;

use axum::extract::FromRef;
use bus::{BusConfig, Listeners, OnBus};
use common::{Secret, SessionKeys};
use kit::config::{self, ConfigError, Env, HttpConfig};
use kit::db::DatabaseConfig;
use kit::{App, Service};
use sqlx::PgPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    /// `JWT_KEY`: verifies sessions.
    pub jwt_key: Secret,
    /// `EXPIRATION_WINDOW_SECONDS` (default 900): how long a buyer has to pay.
    pub expiration_window: Duration,
}

impl Config {
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            http: HttpConfig::for_tests(),
            database: DatabaseConfig::for_tests(database_url),
            bus: BusConfig::for_tests(nats_url),
            jwt_key: Secret::new(config::TEST_JWT_KEY),
            expiration_window: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Clone, FromRef)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: SessionKeys,
    pub expiration_window: chrono::TimeDelta,
}

impl Service for Config {
    const NAME: &'static str = "orders";

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            database: DatabaseConfig::from_env(env)?,
            bus: BusConfig::from_env(env)?,
            jwt_key: config::jwt_key(env)?,
            expiration_window: env.seconds("EXPIRATION_WINDOW_SECONDS", 15 * 60)?,
        })
    }

    fn http(&self) -> &HttpConfig {
        &self.http
    }

    async fn start(self) -> anyhow::Result<App> {
        let backend = bus::Backend::connect::<Self>(&self.database, &self.bus).await?;
        let state = AppState {
            pool: backend.pools.http.clone(),
            keys: SessionKeys::reader(&self.jwt_key),
            expiration_window: chrono::TimeDelta::from_std(self.expiration_window)?,
        };
        Ok(backend.app(routes::router(state)))
    }
}

impl OnBus for Config {
    const MIGRATOR: &'static sqlx::migrate::Migrator = &MIGRATOR;

    /// The ticket replica, expiry and payment.
    fn listeners() -> Listeners {
        Listeners::new()
            .listen(events::TicketCreatedListener)
            .listen(events::TicketUpdatedListener)
            .listen(events::ExpirationCompleteListener)
            .listen(events::PaymentCreatedListener)
    }
}
