//! The payments service ([docs/api.md § Payments](../../docs/api.md#payments)): charges
//! an order through Stripe and records every attempt as a charge.
//!
//! Paying races with expiring. The orders service decides (first transition wins);
//! this service makes sure money follows that decision: a charge that completes for
//! an order that is, or becomes, cancelled is refunded, whichever happens first. Every
//! decision is serialised on the order's row in this service's replica, and no lock is
//! ever held across a call to Stripe; see [`settle`].

pub mod charge;
pub mod events;
pub mod reconciler;
pub mod replica;
pub mod routes;
pub mod settle;
pub mod stripe;

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

use crate::settle::Payments;
use crate::stripe::{Stripe, StripeConfig};

pub const SERVICE: &str = "payments";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    /// `JWT_KEY`: verifies sessions.
    pub jwt_key: Secret,
    pub stripe: StripeConfig,
    /// `CHARGE_RECONCILE_AFTER_SECONDS` (default 60): an attempt still unsettled after
    /// this long was interrupted (a crash between Stripe and the database) and is
    /// settled by the reconciler.
    pub reconcile_after: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            database: DatabaseConfig::from_env(env)?,
            bus: BusConfig::from_env(env)?,
            jwt_key: config::jwt_key(env)?,
            stripe: StripeConfig::from_env(env)?,
            reconcile_after: env.seconds("CHARGE_RECONCILE_AFTER_SECONDS", 60)?,
        })
    }

    /// Settings for tests, against the Stripe stand-in at `stripe_api_base` (with the
    /// key `stripe_key`).
    pub fn for_tests(
        database_url: &str,
        nats_url: &str,
        stripe_api_base: &str,
        stripe_key: &str,
    ) -> Self {
        Self {
            http: HttpConfig::for_tests(),
            database: DatabaseConfig::for_tests(database_url),
            bus: BusConfig::for_tests(nats_url),
            jwt_key: Secret::new(config::TEST_JWT_KEY),
            stripe: StripeConfig {
                key: Secret::new(stripe_key),
                api_base: stripe_api_base.to_owned(),
                timeout: Duration::from_secs(10),
                currency: "usd".into(),
            },
            reconcile_after: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, FromRef)]
pub struct AppState {
    pub keys: SessionKeys,
    pub payments: Payments,
}

/// The listeners: the order replica, and refunds for cancelled orders.
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
    let stripe = Stripe::new(&config.stripe)?;
    let backend = Backend::connect(SERVICE, &config.database, &config.bus, &MIGRATOR).await?;
    let state = AppState {
        keys: SessionKeys::reader(&config.jwt_key),
        payments: Payments::new(backend.pools.http.clone(), stripe.clone()),
    };
    let consumers = consumers(&config, backend.pools.events.clone());
    let background = Payments::new(backend.pools.events.clone(), stripe);
    let reconcile_after = config.reconcile_after;
    backend
        .service(
            SERVICE,
            routes::router(state),
            &config.http,
            &config.bus,
            consumers,
        )
        .with_task("reconciler", move |stop| {
            reconciler::run(background.clone(), reconcile_after, stop)
        })
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
