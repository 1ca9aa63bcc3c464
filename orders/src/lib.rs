//! The orders service (contract §5): buyers reserve tickets by ordering them.
//!
//! It keeps a replica of the tickets (from `ticket.created` / `ticket.updated`, in
//! version order), makes reservation race-free with a unique index, and decides the
//! fate of each order: cancelled by its buyer or by `expiration.complete`, or
//! complete on `payment.created`, whichever transition comes first.

pub mod events;
pub mod order;
pub mod routes;

use std::time::Duration;

use axum::extract::FromRef;
use common::SessionKeys;
use common::config::{self, BusConfig, ConfigError, HttpConfig, Secret};
use common::server::Backend;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "orders";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub bus: BusConfig,
    /// `JWT_KEY`: verifies sessions.
    pub jwt_key: Secret,
    /// `EXPIRATION_WINDOW_SECONDS` (default 900): how long a buyer has to pay.
    pub expiration_window: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env()?,
            bus: BusConfig::from_env()?,
            jwt_key: common::config::jwt_key()?,
            expiration_window: config::seconds("EXPIRATION_WINDOW_SECONDS", 15 * 60)?,
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: SessionKeys,
    pub expiration_window: chrono::TimeDelta,
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
        expiration_window: chrono::TimeDelta::from_std(config.expiration_window)?,
    };
    let app = common::http::app(routes::router(state), backend.readiness());
    let consumers = backend
        .consumers(SERVICE, &config.bus)
        .listen(events::TicketCreatedListener)
        .listen(events::TicketUpdatedListener)
        .listen(events::ExpirationCompleteListener)
        .listen(events::PaymentCreatedListener);
    backend
        .service(SERVICE, app, consumers)
        .run(listener, shutdown)
        .await
}
