//! The orders service ([docs/api.md § Orders](../../docs/api.md#orders)): buyers
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
use common::SessionKeys;
use common::cli::ServiceMain;
use common::config::{self, BusConfig, ConfigError, DatabaseConfig, Env, HttpConfig, Secret};
use common::events::Consumers;
use common::server::Backend;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "orders";

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
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            database: DatabaseConfig::from_env(env)?,
            bus: BusConfig::from_env(env)?,
            jwt_key: config::jwt_key(env)?,
            expiration_window: env.seconds("EXPIRATION_WINDOW_SECONDS", 15 * 60)?,
        })
    }

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

/// The listeners: the ticket replica, expiry and payment.
pub fn consumers(config: &Config, pool: PgPool) -> Consumers {
    Consumers::new(SERVICE, pool, &config.bus)
        .listen(events::TicketCreatedListener)
        .listen(events::TicketUpdatedListener)
        .listen(events::ExpirationCompleteListener)
        .listen(events::PaymentCreatedListener)
}

/// Connects, migrates and serves until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let backend = Backend::connect(SERVICE, &config.database, &config.bus, &MIGRATOR).await?;
    let state = AppState {
        pool: backend.pools.http.clone(),
        keys: SessionKeys::reader(&config.jwt_key),
        expiration_window: chrono::TimeDelta::from_std(config.expiration_window)?,
    };
    let consumers = consumers(&config, backend.pools.events.clone());
    backend
        .service(
            SERVICE,
            routes::router(state),
            &config.http,
            &config.bus,
            consumers,
        )
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
