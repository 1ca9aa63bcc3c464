//! The tickets service ([docs/api.md § Tickets](../../docs/api.md#tickets)): sellers
//! list and edit tickets; a ticket is reserved while an order holds it, which this
//! service learns from order events.
//!
//! Every change increments the ticket's `version` exactly once and appends
//! `ticket.created` / `ticket.updated` to the outbox in the same transaction, so the
//! orders service can keep an exact replica.

pub mod events;
pub mod routes;
pub mod ticket;

use axum::extract::FromRef;
use common::SessionKeys;
use common::cli::ServiceMain;
use common::config::{self, BusConfig, ConfigError, DatabaseConfig, Env, HttpConfig, Secret};
use common::events::Consumers;
use common::server::Backend;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "tickets";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    /// `JWT_KEY`: verifies sessions.
    pub jwt_key: Secret,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            database: DatabaseConfig::from_env(env)?,
            bus: BusConfig::from_env(env)?,
            jwt_key: config::jwt_key(env)?,
        })
    }

    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            http: HttpConfig::for_tests(),
            database: DatabaseConfig::for_tests(database_url),
            bus: BusConfig::for_tests(nats_url),
            jwt_key: Secret::new(config::TEST_JWT_KEY),
        }
    }
}

#[derive(Clone, FromRef)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: SessionKeys,
}

/// The listeners: tickets learn of reservations from the orders service.
pub fn consumers(config: &Config, pool: PgPool) -> Consumers {
    Consumers::new(SERVICE, pool, &config.bus)
        .listen(events::OrderCreatedListener)
        .listen(events::OrderCancelledListener)
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
        .prune("cancelled_orders", "cancelled_at")
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
