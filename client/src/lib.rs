//! The web client: the pages of the original app (a Next.js client that rendered each
//! page on the server with the current user), rendered on the server in Rust.
//!
//! Every page works without JavaScript: forms post to the client, which calls the API
//! with the browser's session cookie and redirects. JavaScript (`assets/app.js`) only
//! adds the live countdown, the price formatting and Stripe Elements. The API is
//! reached at base URLs from configuration: the ingress locally, the services' own
//! addresses in a cluster.

pub mod api;
pub mod page;
pub mod routes;
pub mod security;

use axum::extract::FromRef;
use common::cli::ServiceMain;
use common::config::{ConfigError, Env, HttpConfig};
use common::server::Service;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiUrls};

pub const SERVICE: &str = "client";

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub api: ApiUrls,
    /// `STRIPE_PUBLISHABLE_KEY` (optional): pay with Stripe Elements; without it the
    /// order page offers the Stripe stand-in's test cards.
    pub stripe_publishable_key: Option<String>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            api: ApiUrls::from_env(env)?,
            stripe_publishable_key: env.maybe("STRIPE_PUBLISHABLE_KEY")?,
        })
    }

    /// Settings for tests, calling the API at `api`.
    pub fn for_tests(api: ApiUrls) -> Self {
        Self {
            http: HttpConfig::for_tests(),
            api,
            stripe_publishable_key: None,
        }
    }
}

/// What every page handler can reach.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub api: Api,
    pub stripe_publishable_key: Option<String>,
}

/// Serves until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = AppState {
        api: Api::new(config.api.clone())?,
        stripe_publishable_key: config.stripe_publishable_key.clone(),
    };
    Service::new(SERVICE, routes::router(state), &config.http)
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

    async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        run(self, listener, shutdown).await
    }
}
