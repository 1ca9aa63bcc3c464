//! The tickets service (`docs/api.md` § Tickets): sellers
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
    /// `TICKETS_LIST_LIMIT` (default 1,000): the most tickets `GET /api/tickets`
    /// answers without paging; a `Link` header names the rest.
    pub list_limit: i64,
    /// `TICKETS_PER_MINUTE_PER_USER` (default 60; 0 for none): tickets one user may
    /// list a minute, per replica; off with `RATE_LIMITS=off`.
    pub tickets_per_minute: u32,
    /// `RATE_LIMITS` (on): see [`kit::limits`].
    pub rate_limits: bool,
}

/// The default of `TICKETS_LIST_LIMIT`.
pub const LIST_LIMIT: i64 = 1_000;

impl Config {
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            http: HttpConfig::for_tests(),
            database: DatabaseConfig::for_tests(database_url),
            bus: BusConfig::for_tests(nats_url),
            jwt_key: Secret::new(config::TEST_JWT_KEY),
            list_limit: LIST_LIMIT,
            tickets_per_minute: 60,
            rate_limits: true,
        }
    }
}

#[derive(Clone, FromRef)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: SessionKeys,
    /// The bound of an unpaged list.
    pub list_limit: i64,
    pub listing_rate: UserRate,
}

impl Service for Config {
    const NAME: &'static str = "tickets";

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            database: DatabaseConfig::from_env(env)?,
            bus: BusConfig::from_env(env)?,
            jwt_key: config::jwt_key(env)?,
            list_limit: env.optional("TICKETS_LIST_LIMIT", LIST_LIMIT)?,
            tickets_per_minute: env.optional("TICKETS_PER_MINUTE_PER_USER", 60)?,
            rate_limits: kit::limits::rate_limits_on(env)?,
        })
        .and_then(|config: Self| {
            config::at_least(
                1,
                "TICKETS_LIST_LIMIT",
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
            list_limit: self.list_limit,
            listing_rate: UserRate::new(
                "listing tickets",
                self.tickets_per_minute,
                self.rate_limits,
            ),
        };
        Ok(backend.app(routes::router(state)))
    }
}

impl OnBus for Config {
    const MIGRATOR: &'static sqlx::migrate::Migrator = &MIGRATOR;
    /// Cancellations remembered so that a late `order.created` does not reserve again.
    const PRUNED: &'static [(&'static str, &'static str)] = &[("cancelled_orders", "cancelled_at")];

    /// Tickets learn of reservations from the orders service.
    fn listeners() -> Listeners {
        Listeners::new()
            .listen(events::OrderCreatedListener)
            .listen(events::OrderCancelledListener)
    }
}
