//! Calling the Ticketing API on behalf of the browser: with its session cookie, and
//! handing back what auth sets.

use std::time::Duration;

use axum::http::HeaderValue;
use axum::http::header::{COOKIE, LINK, SET_COOKIE};
use kit::config::{ConfigError, Env};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Where each service's API is: `API_BASE_URL` for all (locally the ingress), or
/// `AUTH_API_URL`, `TICKETS_API_URL`, `ORDERS_API_URL`, `PAYMENTS_API_URL` each (in a
/// cluster, the services' own addresses, as the original's server-side calls).
#[derive(Debug, Clone)]
pub struct ApiUrls {
    pub auth: String,
    pub tickets: String,
    pub orders: String,
    pub payments: String,
}

impl ApiUrls {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let base: Option<String> = env.maybe("API_BASE_URL")?;
        let each = |name: &'static str| -> Result<String, ConfigError> {
            let url: Option<String> = env.maybe(name)?;
            url.or_else(|| base.clone())
                .map(|url| url.trim_end_matches('/').to_owned())
                .ok_or(ConfigError::Missing("API_BASE_URL"))
        };
        Ok(Self {
            auth: each("AUTH_API_URL")?,
            tickets: each("TICKETS_API_URL")?,
            orders: each("ORDERS_API_URL")?,
            payments: each("PAYMENTS_API_URL")?,
        })
    }

    /// One base URL for every service.
    pub fn all(base: &str) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        Self {
            auth: base.clone(),
            tickets: base.clone(),
            orders: base.clone(),
            payments: base,
        }
    }
}

/// Which service a call goes to.
#[derive(Debug, Clone, Copy)]
pub enum Area {
    Auth,
    Tickets,
    Orders,
    Payments,
}

/// The API, as the browser's agent; cheap to clone.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    urls: ApiUrls,
}

/// One message of the API's error body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Message {
    pub message: String,
    pub field: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    errors: Vec<Message>,
}

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API refused the request (4xx), saying why.
    #[error("the API refused the request ({status})")]
    Refused {
        status: StatusCode,
        messages: Vec<Message>,
    },
    /// The API could not be reached, or failed (5xx).
    #[error("the API is unavailable: {0}")]
    Unavailable(String),
}

/// A successful answer.
pub struct Answer<T> {
    pub body: T,
    /// `Set-Cookie` headers to hand on to the browser.
    pub cookies: Vec<HeaderValue>,
    /// The `Link` header's targets by relation (`next`, `prev`).
    pub links: Vec<(String, String)>,
}

/// `<target>; rel="next", <target>; rel="prev"` → `[("next", target), ("prev", target)]`.
fn links(header: &str) -> Vec<(String, String)> {
    header
        .split(',')
        .filter_map(|link| {
            let (target, params) = link.split_once(';')?;
            let rel = params.trim().strip_prefix("rel=")?.trim_matches('"');
            let target = target.trim().trim_start_matches('<').trim_end_matches('>');
            Some((rel.to_owned(), target.to_owned()))
        })
        .collect()
}

impl Api {
    pub fn new(urls: ApiUrls) -> anyhow::Result<Self> {
        kit::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, urls })
    }

    fn url(&self, area: Area, path: &str) -> String {
        let base = match area {
            Area::Auth => &self.urls.auth,
            Area::Tickets => &self.urls.tickets,
            Area::Orders => &self.urls.orders,
            Area::Payments => &self.urls.payments,
        };
        format!("{base}{path}")
    }

    /// Calls `method path` with the browser's `cookie` and an optional JSON body.
    pub async fn call<T: DeserializeOwned>(
        &self,
        area: Area,
        method: Method,
        path: &str,
        cookie: Option<&HeaderValue>,
        body: Option<Value>,
    ) -> Result<Answer<T>, ApiError> {
        self.call_for(area, method, path, cookie, body, None).await
    }

    /// As [`Self::call`], on behalf of the browser at `browser` (sent on as
    /// `X-Forwarded-For`, so that auth counts sign-in attempts per browser, not all
    /// of them as the client's own).
    pub async fn call_for<T: DeserializeOwned>(
        &self,
        area: Area,
        method: Method,
        path: &str,
        cookie: Option<&HeaderValue>,
        body: Option<Value>,
        browser: Option<std::net::IpAddr>,
    ) -> Result<Answer<T>, ApiError> {
        let mut request = self.http.request(method, self.url(area, path));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        if let Some(browser) = browser {
            request = request.header("x-forwarded-for", browser.to_string());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        // The page's trace goes on into the API (while traces are on).
        if let Some(traceparent) = kit::telemetry::trace::current_traceparent() {
            request = request.header(kit::telemetry::trace::TRACEPARENT, traceparent);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let cookies = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        let links = response
            .headers()
            .get(LINK)
            .and_then(|value| value.to_str().ok())
            .map(links)
            .unwrap_or_default();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Unavailable(e.without_url().to_string()))?;
        if status.is_server_error() {
            return Err(ApiError::Unavailable(format!("{path} answered {status}")));
        }
        if !status.is_success() {
            let messages = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|body| body.errors)
                .unwrap_or_else(|_| {
                    vec![Message {
                        message: format!("The request was refused ({status})"),
                        field: None,
                    }]
                });
            return Err(ApiError::Refused { status, messages });
        }
        // An empty body (204) reads as JSON null.
        let body = if bytes.is_empty() {
            serde_json::from_value(Value::Null)
        } else {
            serde_json::from_slice(&bytes)
        }
        .map_err(|e| ApiError::Unavailable(format!("{path} answered unexpectedly: {e}")))?;
        Ok(Answer {
            body,
            cookies,
            links,
        })
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        area: Area,
        path: &str,
        cookie: Option<&HeaderValue>,
    ) -> Result<T, ApiError> {
        Ok(self.call(area, Method::GET, path, cookie, None).await?.body)
    }

    pub async fn get_with_links<T: DeserializeOwned>(
        &self,
        area: Area,
        path: &str,
        cookie: Option<&HeaderValue>,
    ) -> Result<Answer<T>, ApiError> {
        self.call(area, Method::GET, path, cookie, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        area: Area,
        path: &str,
        cookie: Option<&HeaderValue>,
        body: Value,
    ) -> Result<Answer<T>, ApiError> {
        self.call(area, Method::POST, path, cookie, Some(body))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_name_their_pages() {
        let header = r#"</api/tickets?limit=20&before=a>; rel="next", </api/tickets?limit=20&after=b>; rel="prev""#;
        assert_eq!(
            links(header),
            [
                (
                    "next".to_owned(),
                    "/api/tickets?limit=20&before=a".to_owned()
                ),
                (
                    "prev".to_owned(),
                    "/api/tickets?limit=20&after=b".to_owned()
                ),
            ]
        );
    }
}
