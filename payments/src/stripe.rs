//! A small client for the two Stripe endpoints we use: `POST /v1/charges` and
//! `POST /v1/refunds`. Form-encoded, bearer-authenticated, every call with an
//! `Idempotency-Key`, against a configurable base URL (a local stand-in in tests and
//! local runs).

use std::time::Duration;

use kit::config::{ConfigError, Env, Secret};
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// `STRIPE_KEY` (required): the secret API key.
    pub key: Secret,
    /// `STRIPE_API_BASE` (default `https://api.stripe.com`).
    pub api_base: String,
    /// `STRIPE_TIMEOUT_SECONDS` (default 15): per call, connecting included.
    pub timeout: Duration,
    /// `STRIPE_CURRENCY` (default `usd`).
    pub currency: String,
}

impl StripeConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            key: env.required("STRIPE_KEY")?,
            api_base: env.optional("STRIPE_API_BASE", "https://api.stripe.com".to_owned())?,
            timeout: env.seconds("STRIPE_TIMEOUT_SECONDS", 15)?,
            currency: env.optional("STRIPE_CURRENCY", "usd".to_owned())?,
        })
    }
}

/// What became of a charge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded {
        stripe_id: String,
    },
    /// The card was declined, or the request refused (e.g. an unknown token): final.
    Declined {
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Network failure, timeout, or a 5xx/429: the outcome is unknown; retrying with
    /// the same idempotency key is safe.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// Stripe refused the request for a reason that retrying will not change: a
    /// declined card, an unknown token, a charge that cannot be refunded.
    #[error("Stripe refused the request: {0}")]
    Refused(String),
    /// Our side is wrong (bad API key, an idempotency key reused with other
    /// parameters): not the customer's fault, and not worth retrying.
    #[error("Stripe rejected our request: {0}")]
    Misconfigured(String),
}

#[derive(Clone)]
pub struct Stripe {
    http: reqwest::Client,
    base: String,
    key: Secret,
    currency: String,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

impl Stripe {
    pub fn new(config: &StripeConfig) -> anyhow::Result<Self> {
        kit::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Self {
            http,
            base: config.api_base.trim_end_matches('/').to_owned(),
            key: config.key.clone(),
            currency: config.currency.clone(),
        })
    }

    /// Charges `amount_cents` to the card `source`. `metadata` travels with the charge
    /// (`metadata[name]`), so that Stripe's records can be matched with ours.
    pub async fn charge(
        &self,
        amount_cents: i64,
        source: &str,
        idempotency_key: &str,
        metadata: &[(&str, String)],
    ) -> Result<ChargeOutcome, StripeError> {
        let mut form = vec![
            ("amount".to_owned(), amount_cents.to_string()),
            ("currency".to_owned(), self.currency.clone()),
            ("source".to_owned(), source.to_owned()),
        ];
        form.extend(
            metadata
                .iter()
                .map(|(name, value)| (format!("metadata[{name}]"), value.clone())),
        );
        match self.post("/v1/charges", &form, idempotency_key).await {
            Ok(created) => Ok(ChargeOutcome::Succeeded {
                stripe_id: created.id,
            }),
            Err(StripeError::Refused(message)) => Ok(ChargeOutcome::Declined { message }),
            Err(error) => Err(error),
        }
    }

    /// Refunds a whole charge; returns the refund's id.
    pub async fn refund(
        &self,
        stripe_charge_id: &str,
        idempotency_key: &str,
    ) -> Result<String, StripeError> {
        let form = [("charge".to_owned(), stripe_charge_id.to_owned())];
        self.post("/v1/refunds", &form, idempotency_key)
            .await
            .map(|created| created.id)
    }

    async fn post(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<Created, StripeError> {
        let started = std::time::Instant::now();
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.key.expose())
            .header("Idempotency-Key", idempotency_key)
            .form(form)
            .send()
            .await;
        let outcome = match response {
            Err(error) if error.is_timeout() => Err(StripeError::Unavailable(format!(
                "no answer within the timeout ({path})"
            ))),
            Err(error) => Err(StripeError::Unavailable(format!(
                "{path}: {}",
                error.without_url()
            ))),
            Ok(response) => read(response).await,
        };
        let label = match &outcome {
            Ok(_) => "ok",
            Err(StripeError::Refused(_)) => "refused",
            Err(StripeError::Unavailable(_)) => "unavailable",
            Err(StripeError::Misconfigured(_)) => "misconfigured",
        };
        metrics::histogram!("stripe_request_duration_seconds", "path" => path.to_owned(), "outcome" => label)
            .record(started.elapsed().as_secs_f64());
        outcome
    }
}

async fn read(response: reqwest::Response) -> Result<Created, StripeError> {
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| StripeError::Unavailable(format!("reading the answer: {e}")))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map_err(|e| StripeError::Unavailable(format!("unexpected answer from Stripe: {e}")));
    }
    let detail = serde_json::from_slice::<ErrorBody>(&bytes)
        .ok()
        .map(|body| body.error);
    let message = detail
        .as_ref()
        .and_then(|d| d.message.clone())
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 409 {
        return Err(StripeError::Unavailable(message));
    }
    if status.as_u16() == 401 || detail.and_then(|d| d.kind).as_deref() == Some("idempotency_error")
    {
        return Err(StripeError::Misconfigured(message));
    }
    Err(StripeError::Refused(message))
}
