//! The auth service (contract §3): sign up, sign in, sign out and the current user.
//!
//! It owns the `users` table and is the only service that writes the session
//! cookie; every other service only reads it. It publishes no events.

pub mod password;
pub mod routes;

use std::time::Duration;

use axum::extract::FromRef;
use common::config::{self, ConfigError, HttpConfig, Secret};
use common::http::Readiness;
use common::server::Service;
use common::{SessionKeys, db};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    /// `JWT_KEY`: signs the sessions this service issues.
    pub jwt_key: Secret,
    /// `SESSION_TTL_SECONDS` (default one day): how long a session stays valid.
    pub session_ttl: Duration,
    /// `COOKIE_SECURE` (default true): mark the session cookie `Secure`; turn it off
    /// only for plain-http local use.
    pub cookie_secure: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env()?,
            jwt_key: config::jwt_key()?,
            session_ttl: config::seconds("SESSION_TTL_SECONDS", 24 * 60 * 60)?,
            cookie_secure: config::optional("COOKIE_SECURE", true)?,
        })
    }
}

/// What every handler can reach.
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
    let pool = db::connect(&config.http).await?;
    db::migrate(&pool, &MIGRATOR).await?;
    let keys = SessionKeys::new(&config.jwt_key, config.session_ttl, config.cookie_secure);
    let state = AppState {
        pool: pool.clone(),
        keys,
    };
    let readiness = Readiness {
        pool: pool.clone(),
        nats: None,
    };
    let app = common::http::app(routes::router(state), readiness);
    Service::new("auth", app, pool)
        .run(listener, shutdown)
        .await
}
