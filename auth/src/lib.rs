//! The auth service ([docs/api.md § Auth](../../docs/api.md#auth)): sign up, sign in,
//! sign out and the current user.
//!
//! It owns the `users` table and is the only service that writes the session
//! cookie; every other service only reads it. It publishes no events.

pub mod password;
pub mod routes;
pub mod user;

use std::time::Duration;

use axum::extract::FromRef;
use common::SessionKeys;
use common::cli::ServiceMain;
use common::config::{self, ConfigError, DatabaseConfig, Env, HttpConfig, Secret};
use common::db::Pools;
use common::server::Service;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::password::Hasher;

pub const SERVICE: &str = "auth";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    /// `JWT_KEY`: signs the sessions this service issues.
    pub jwt_key: Secret,
    /// `SESSION_TTL_SECONDS` (default one day): how long a session stays valid.
    pub session_ttl: Duration,
    /// `COOKIE_SECURE` (default true): mark the session cookie `Secure`; turn it off
    /// only for plain-http local use.
    pub cookie_secure: bool,
    /// `PASSWORD_HASHING_THREADS` (default 2): threads hashing passwords; each holds
    /// 19 MiB while busy.
    pub hashing_threads: usize,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            database: DatabaseConfig::from_env(env)?,
            jwt_key: config::jwt_key(env)?,
            session_ttl: env.seconds("SESSION_TTL_SECONDS", 24 * 60 * 60)?,
            cookie_secure: env.optional("COOKIE_SECURE", true)?,
            hashing_threads: env.optional("PASSWORD_HASHING_THREADS", 2)?,
        })
    }

    /// Settings for tests: the test database, the test JWT key, plain-http cookies.
    pub fn for_tests(database_url: &str) -> Self {
        Self {
            http: HttpConfig::for_tests(),
            database: DatabaseConfig::for_tests(database_url),
            jwt_key: Secret::new(config::TEST_JWT_KEY),
            session_ttl: Duration::from_secs(3600),
            cookie_secure: false,
            hashing_threads: 2,
        }
    }
}

/// What every handler can reach.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: SessionKeys,
    pub hasher: Hasher,
}

/// Connects, migrates and serves until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pools = Pools::connect(&config.database).await?;
    pools.migrate(&MIGRATOR, false).await?;
    let state = AppState {
        pool: pools.http.clone(),
        keys: SessionKeys::new(&config.jwt_key, config.session_ttl, config.cookie_secure),
        hasher: Hasher::new(config.hashing_threads)?,
    };
    Service::new(SERVICE, routes::router(state), &config.http)
        .with_pools(pools)
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
}
