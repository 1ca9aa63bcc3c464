//! The auth service (`docs/api.md` § Auth): sign up, sign in,
//! sign out and the current user.
//!
//! It owns the `users` table and is the only service that writes the session
//! cookie; every other service only reads it. Its one event is `session.revoked`,
//! which a sign-out appends to its outbox; like every service that reads sessions,
//! each of its replicas follows that subject and refuses revoked tokens.

pub mod limits;
pub mod password;
pub mod routes;
pub mod user;

use std::time::Duration;

use axum::extract::FromRef;
use bus::{BusConfig, Listeners, OnBus};
use common::{Secret, SessionKeys};
use kit::config::{self, ConfigError, Env, HttpConfig};
use kit::db::DatabaseConfig;
use kit::{App, Service};
use sqlx::PgPool;

use crate::password::Hasher;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
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
    /// Limits on guessing and floods (`RATE_LIMITS`, ...; see [`limits`]).
    pub limits: limits::LimitConfig,
}

impl Config {
    /// Settings for tests: the test database and NATS, the test JWT key, plain-http
    /// cookies.
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            http: HttpConfig::for_tests(),
            database: DatabaseConfig::for_tests(database_url),
            bus: BusConfig::for_tests(nats_url),
            jwt_key: Secret::new(config::TEST_JWT_KEY),
            session_ttl: Duration::from_secs(3600),
            cookie_secure: false,
            hashing_threads: 2,
            limits: limits::LimitConfig::for_tests(),
        }
    }
}

/// What every handler can reach.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: SessionKeys,
    pub hasher: Hasher,
    pub limits: limits::Limits,
}

impl Service for Config {
    const NAME: &'static str = "auth";

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let config = Self {
            http: HttpConfig::from_env(env)?,
            database: DatabaseConfig::from_env(env)?,
            jwt_key: config::jwt_key(env)?,
            session_ttl: env.seconds("SESSION_TTL_SECONDS", 24 * 60 * 60)?,
            cookie_secure: env.optional("COOKIE_SECURE", true)?,
            hashing_threads: env.optional("PASSWORD_HASHING_THREADS", 2)?,
            limits: limits::LimitConfig::from_env(env)?,
            bus: BusConfig::from_env(env)?,
        };
        config::refuse_dev_key_when_secure(&config.jwt_key, config.cookie_secure)?;
        Ok(config)
    }

    fn http(&self) -> &HttpConfig {
        &self.http
    }

    async fn start(self) -> anyhow::Result<App> {
        let mut backend = bus::Backend::connect::<Self>(&self.database, &self.bus).await?;
        let keys = SessionKeys::new(&self.jwt_key, self.session_ttl, self.cookie_secure);
        backend.follow_sessions(&keys).await;
        let pool = backend.pools.http.clone();
        let state = AppState {
            limits: limits::Limits::new(pool.clone(), self.limits),
            pool,
            keys,
            hasher: Hasher::new(self.hashing_threads)?,
        };
        let pruning = state.limits.clone();
        Ok(backend
            .app(routes::router(state))
            .with_task("prune-attempts", move |stop| {
                prune_attempts(pruning.clone(), stop)
            }))
    }
}

impl OnBus for Config {
    const MIGRATOR: &'static sqlx::migrate::Migrator = &MIGRATOR;

    /// None: auth only publishes (`session.revoked`), and follows that subject as
    /// every service reading sessions does, outside any durable consumer.
    fn listeners() -> Listeners {
        Listeners::new()
    }
}

/// Every hour, forgets the attempts no window or block needs any more.
async fn prune_attempts(limits: limits::Limits, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
        match limits.prune().await {
            Ok(removed) => tracing::debug!(removed, "pruned sign-in attempts"),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "pruning sign-in attempts failed"
            ),
        }
    }
}
