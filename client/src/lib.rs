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
    /// `STRIPE_PUBLISHABLE_KEY`: pay with Stripe Elements; without it the order page
    /// offers the Stripe stand-in's test cards. Required when payments talks to real
    /// Stripe (see [`publishable_key`]).
    pub stripe_publishable_key: Option<String>,
}

/// `STRIPE_PUBLISHABLE_KEY`, and `STRIPE_API_BASE` (default `https://api.stripe.com`,
/// the same setting payments reads): against real Stripe a card can only be taken by
/// Stripe Elements, with the publishable key, so without one the client refuses to
/// start rather than offer the stand-in's test tokens to a live account.
pub fn publishable_key(env: &Env) -> Result<Option<String>, ConfigError> {
    let key: Option<String> = env.maybe("STRIPE_PUBLISHABLE_KEY")?;
    let api_base: String = env.optional("STRIPE_API_BASE", "https://api.stripe.com".to_owned())?;
    let real_stripe = api_base
        .trim_end_matches('/')
        .strip_prefix("https://")
        .is_some_and(|host| host == "api.stripe.com");
    if key.is_none() && real_stripe {
        return Err(ConfigError::Invalid {
            name: "STRIPE_PUBLISHABLE_KEY",
            problem: "is required against real Stripe (STRIPE_API_BASE); \
                      the stand-in's test cards are only offered against the stand-in"
                .into(),
        });
    }
    Ok(key)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_stripe_needs_the_publishable_key_and_the_stand_in_does_not() {
        let against = |pairs: &[(&str, &str)]| publishable_key(&Env::from_pairs(pairs.to_vec()));
        let refused = against(&[]).unwrap_err();
        assert!(
            matches!(
                refused,
                ConfigError::Invalid {
                    name: "STRIPE_PUBLISHABLE_KEY",
                    ..
                }
            ),
            "{refused}"
        );
        assert!(against(&[("STRIPE_API_BASE", "https://api.stripe.com/")]).is_err());
        assert_eq!(
            against(&[("STRIPE_PUBLISHABLE_KEY", "pk_live_1")])
                .unwrap()
                .as_deref(),
            Some("pk_live_1")
        );
        assert_eq!(
            against(&[("STRIPE_API_BASE", "http://stripe-standin:3000")]).unwrap(),
            None,
            "the stand-in's test cards"
        );
    }
}
