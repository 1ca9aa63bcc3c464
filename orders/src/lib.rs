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
use kit::limits::UserRate;
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
    /// `MAX_ACTIVE_ORDERS_PER_USER` (default 10): unpaid orders one user may hold at
    /// once, so that no account can keep the catalogue reserved.
    pub max_active_orders: i64,
    /// `ORDERS_PER_MINUTE_PER_USER` (default 30; 0 for none): orders one user may
    /// place a minute, per replica; off with `RATE_LIMITS=off`.
    pub orders_per_minute: u32,
    /// `RATE_LIMITS` (on): see [`kit::limits`].
    pub rate_limits: bool,
    /// `ORDERS_LIST_LIMIT` (default 1,000): the most orders `GET /api/orders`
    /// answers without paging; a `Link` header names the rest.
    pub list_limit: i64,
}

impl Config {
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            http: HttpConfig::for_tests(),
            database: DatabaseConfig::for_tests(database_url),
            bus: BusConfig::for_tests(nats_url),
            jwt_key: Secret::new(config::TEST_JWT_KEY),
            expiration_window: Duration::from_secs(15 * 60),
            max_active_orders: 10,
            orders_per_minute: 30,
            rate_limits: true,
            list_limit: 1_000,
        }
    }
}

#[derive(Clone, FromRef)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: SessionKeys,
    pub expiration_window: chrono::TimeDelta,
    #[from_ref(skip)]
    pub max_active_orders: i64,
    pub order_rate: UserRate,
    /// The bound of an unpaged list.
    #[from_ref(skip)]
    pub list_limit: i64,
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
            max_active_orders: env.optional("MAX_ACTIVE_ORDERS_PER_USER", 10)?,
            orders_per_minute: env.optional("ORDERS_PER_MINUTE_PER_USER", 30)?,
            rate_limits: kit::limits::rate_limits_on(env)?,
            list_limit: env.optional("ORDERS_LIST_LIMIT", 1_000)?,
        })
        .and_then(|config: Self| {
            config::at_least(
                1,
                "ORDERS_LIST_LIMIT",
                u32::try_from(config.list_limit).unwrap_or(0),
            )?;
            Ok(config)
        })
    }

    fn http(&self) -> &HttpConfig {
        &self.http
    }

    async fn start(self) -> anyhow::Result<App> {
        let mut backend = bus::Backend::connect::<Self>(&self.database, &self.bus).await?;
        let keys = SessionKeys::reader(&self.jwt_key);
        backend.follow_sessions(&keys).await;
        let state = AppState {
            pool: backend.pools.http.clone(),
            keys,
            expiration_window: chrono::TimeDelta::from_std(self.expiration_window)?,
            max_active_orders: self.max_active_orders,
            order_rate: UserRate::new("placing orders", self.orders_per_minute, self.rate_limits),
            list_limit: self.list_limit,
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
