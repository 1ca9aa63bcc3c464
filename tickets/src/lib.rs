//! The tickets service (contract §4): sellers list and edit tickets; a ticket is
//! reserved while an order holds it, which this service learns from order events.
//!
//! Every change increments the ticket's `version` exactly once and appends
//! `ticket.created` / `ticket.updated` to the outbox in the same transaction, so the
//! orders service can keep an exact replica.

pub mod events;
pub mod routes;
pub mod ticket;

use axum::extract::FromRef;
use common::SessionKeys;
use common::config::{BusConfig, ConfigError, HttpConfig, Secret};
use common::server::Backend;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "tickets";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub bus: BusConfig,
    /// `JWT_KEY`: verifies sessions.
    pub jwt_key: Secret,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env()?,
            bus: BusConfig::from_env()?,
            jwt_key: common::config::jwt_key()?,
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: SessionKeys,
}

impl FromRef<AppState> for SessionKeys {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

/// Connects, migrates and serves until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let backend = Backend::connect(SERVICE, &config.http, &config.bus, &MIGRATOR).await?;
    let state = AppState {
        pool: backend.pool.clone(),
        keys: SessionKeys::reader(&config.jwt_key),
    };
    let app = common::http::app(routes::router(state), backend.readiness());
    let consumers = backend
        .consumers(SERVICE, &config.bus)
        .listen(events::OrderCreatedListener)
        .listen(events::OrderCancelledListener);
    backend
        .service(SERVICE, app, consumers)
        .run(listener, shutdown)
        .await
}
