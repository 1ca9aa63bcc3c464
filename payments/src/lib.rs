//! The payments service (contract §6): charges an order through Stripe and records
//! every attempt as a charge.
//!
//! Paying races with expiring. The orders service decides (first transition wins);
//! this service makes sure money follows that decision: a charge that completes for
//! an order that is, or becomes, cancelled is refunded, whichever happens first. All
//! of it is serialised on the order's row in this service's replica; see [`settle`].

pub mod events;
pub mod model;
pub mod reconciler;
pub mod routes;
pub mod settle;
pub mod stripe;

use std::time::Duration;

use axum::extract::FromRef;
use common::SessionKeys;
use common::config::{self, BusConfig, ConfigError, HttpConfig, Secret};
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
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env()?,
            bus: BusConfig::from_env()?,
            jwt_key: config::jwt_key()?,
            stripe: StripeConfig::from_env()?,
            reconcile_after: config::seconds("CHARGE_RECONCILE_AFTER_SECONDS", 60)?,
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: SessionKeys,
    pub payments: Payments,
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
    let stripe = Stripe::new(&config.stripe)?;
    let backend = Backend::connect(SERVICE, &config.http, &config.bus, &MIGRATOR).await?;
    let payments = Payments::new(backend.pool.clone(), stripe);
    let state = AppState {
        pool: backend.pool.clone(),
        keys: SessionKeys::reader(&config.jwt_key),
        payments: payments.clone(),
    };
    let app = common::http::app(routes::router(state), backend.readiness());
    let consumers = backend
        .consumers(SERVICE, &config.bus)
        .listen(events::OrderCreatedListener)
        .listen(events::OrderCancelledListener {
            payments: payments.clone(),
        });
    let reconcile_after = config.reconcile_after;
    backend
        .service(SERVICE, app, consumers)
        .with_task(move |stop| reconciler::run(payments, reconcile_after, stop))
        .run(listener, shutdown)
        .await
}
