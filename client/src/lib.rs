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
use kit::config::{ConfigError, Env, HttpConfig};
use kit::{App, Service};

use crate::api::{Api, ApiUrls};

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub api: ApiUrls,
    /// `STRIPE_PUBLISHABLE_KEY` (optional): pay with Stripe Elements; without it the
    /// order page offers the Stripe stand-in's test cards.
    pub stripe_publishable_key: Option<String>,
}

impl Config {
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

impl Service for Config {
    const NAME: &'static str = "client";

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            api: ApiUrls::from_env(env)?,
            stripe_publishable_key: env.maybe("STRIPE_PUBLISHABLE_KEY")?,
        })
    }

    fn http(&self) -> &HttpConfig {
        &self.http
    }

    async fn start(self) -> anyhow::Result<App> {
        let state = AppState {
            api: Api::new(self.api)?,
            stripe_publishable_key: self.stripe_publishable_key,
        };
        Ok(App::new(routes::router(state)))
    }
}
