//! The Ticketing API as a browser's code would call it, timing every call.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::stats::Recorder;

/// One signed-in user's view of the API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    pub stats: Recorder,
}

/// A call's answer.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub cookie: Option<String>,
}

impl Api {
    /// `base` must be a loopback address: this tool loads only this machine.
    pub fn new(base: &str, stats: Recorder) -> anyhow::Result<Self> {
        let host = base
            .strip_prefix("http://")
            .context("the base URL must be http://")?
            .split(['/', ':'])
            .next()
            .unwrap_or_default();
        if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
            bail!("refusing to load {base}: only loopback addresses");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            stats,
        })
    }

    /// Calls `method path` (recorded as `label`), with an optional cookie and body.
    pub async fn call(
        &self,
        label: &str,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let started = Instant::now();
        let sent = request.send().await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                self.stats.record(label, started.elapsed(), false);
                return Err(error.into());
            }
        };
        let status = response.status();
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        let bytes = response.bytes().await;
        let took = started.elapsed();
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(error) => {
                self.stats.record(label, took, false);
                return Err(error.into());
            }
        };
        self.stats.record(label, took, !status.is_server_error());
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            body,
            cookie,
        })
    }

    pub async fn sign_up(&self, email: &str) -> anyhow::Result<String> {
        let body = json!({"email": email, "password": "password"});
        let answer = self
            .call(
                "POST /api/users/signup",
                Method::POST,
                "/api/users/signup",
                None,
                Some(body),
            )
            .await?;
        if answer.status != StatusCode::CREATED {
            bail!("sign-up answered {}: {}", answer.status, answer.body);
        }
        answer.cookie.context("sign-up set no cookie")
    }

    pub async fn sell(&self, cookie: &str, title: &str, price: &str) -> anyhow::Result<Value> {
        let body = json!({"title": title, "price": price});
        let answer = self
            .call(
                "POST /api/tickets",
                Method::POST,
                "/api/tickets",
                Some(cookie),
                Some(body),
            )
            .await?;
        if answer.status != StatusCode::CREATED {
            bail!("selling answered {}: {}", answer.status, answer.body);
        }
        Ok(answer.body)
    }

    pub async fn browse(&self) -> anyhow::Result<Vec<Value>> {
        let answer = self
            .call(
                "GET /api/tickets?limit=20",
                Method::GET,
                "/api/tickets?limit=20",
                None,
                None,
            )
            .await?;
        Ok(answer.body.as_array().cloned().unwrap_or_default())
    }

    pub async fn ticket(&self, id: &str) -> anyhow::Result<Answer> {
        self.call(
            "GET /api/tickets/{id}",
            Method::GET,
            &format!("/api/tickets/{id}"),
            None,
            None,
        )
        .await
    }

    /// Orders a ticket; a 404 means the orders replica has not heard of it yet.
    pub async fn order(&self, cookie: &str, ticket_id: &str) -> anyhow::Result<Answer> {
        let body = json!({"ticketId": ticket_id});
        self.call(
            "POST /api/orders",
            Method::POST,
            "/api/orders",
            Some(cookie),
            Some(body),
        )
        .await
    }

    pub async fn order_status(&self, cookie: &str, order_id: &str) -> anyhow::Result<String> {
        let path = format!("/api/orders/{order_id}");
        let answer = self
            .call(
                "GET /api/orders/{id}",
                Method::GET,
                &path,
                Some(cookie),
                None,
            )
            .await?;
        Ok(answer.body["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    pub async fn pay(&self, cookie: &str, order_id: &str, token: &str) -> anyhow::Result<Answer> {
        let body = json!({"token": token, "orderId": order_id});
        self.call(
            "POST /api/payments",
            Method::POST,
            "/api/payments",
            Some(cookie),
            Some(body),
        )
        .await
    }

    pub async fn cancel(&self, cookie: &str, order_id: &str) -> anyhow::Result<Answer> {
        let path = format!("/api/orders/{order_id}");
        self.call(
            "DELETE /api/orders/{id}",
            Method::DELETE,
            &path,
            Some(cookie),
            None,
        )
        .await
    }
}

/// Retries `attempt` while it answers 404 (an event not consumed yet), for up to `within`.
pub async fn when_known<F, Fut>(within: Duration, mut attempt: F) -> anyhow::Result<Answer>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Answer>>,
{
    let deadline = Instant::now() + within;
    loop {
        let answer = attempt().await?;
        if answer.status != StatusCode::NOT_FOUND || Instant::now() >= deadline {
            return Ok(answer);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
