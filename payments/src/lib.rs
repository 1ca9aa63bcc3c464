//! The payments service (`docs/api.md` § Payments): charges
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
use bus::{BusConfig, Listeners, OnBus};
use common::{Secret, SessionKeys};
use kit::config::{self, ConfigError, Env, HttpConfig};
use kit::db::DatabaseConfig;
use kit::{App, Service};

use crate::settle::Payments;
use crate::stripe::{Stripe, StripeConfig};

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

impl Service for Config {
    const NAME: &'static str = "payments";

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            database: DatabaseConfig::from_env(env)?,
            bus: BusConfig::from_env(env)?,
            jwt_key: config::jwt_key(env)?,
            stripe: StripeConfig::from_env(env)?,
            reconcile_after: env.seconds("CHARGE_RECONCILE_AFTER_SECONDS", 60)?,
        })
    }

    fn http(&self) -> &HttpConfig {
        &self.http
    }

    /// The API, and the reconciler that settles interrupted charges and makes refunds.
    async fn start(self) -> anyhow::Result<App> {
        let stripe = Stripe::new(&self.stripe)?;
        let mut backend = bus::Backend::connect::<Self>(&self.database, &self.bus).await?;
        let keys = SessionKeys::reader(&self.jwt_key);
        backend.follow_sessions(&keys).await;
        let state = AppState {
            keys,
            payments: Payments::new(backend.pools.http.clone(), stripe.clone()),
        };
        let background = Payments::new(backend.pools.events.clone(), stripe);
        let reconcile_after = self.reconcile_after;
        Ok(backend
            .app(routes::router(state))
            .with_task("reconciler", move |stop| {
                reconciler::run(background.clone(), reconcile_after, stop)
            }))
    }
}

impl OnBus for Config {
    const MIGRATOR: &'static sqlx::migrate::Migrator = &MIGRATOR;

    /// The order replica, and refunds for cancelled orders.
    fn listeners() -> Listeners {
        Listeners::new()
            .listen(events::OrderCreatedListener)
            .listen(events::OrderCancelledListener)
    }
}
