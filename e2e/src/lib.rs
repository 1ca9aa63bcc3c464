//! The whole backend in one process, for cross-service tests and measurements: each
//! service is started in-process on its own port with its own fresh database, and
//! all of them share one private NATS server, as they would in production.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

use std::time::Duration;

use common::config::{BusConfig, HttpConfig, Secret};
use common::testing::{JWT_KEY, TestDatabase, TestNats, TestResponse, TestServer};
use payments::stripe::StripeConfig;
use serde_json::{Value, json};
use sqlx::PgPool;
use stripe_standin::StandIn;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Options {
    /// How long a buyer has to pay (orders' `EXPIRATION_WINDOW_SECONDS`).
    pub expiration_window: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            expiration_window: Duration::from_secs(900),
        }
    }
}

/// One running service with its database.
pub struct Running {
    pub server: TestServer,
    pub database: TestDatabase,
    pub pool: PgPool,
}

pub struct Stack {
    pub nats: TestNats,
    pub auth: Running,
    pub tickets: Running,
    pub orders: Running,
    pub expiration: Running,
    pub payments: Running,
    /// The Stripe stand-in payments talks to, and its server.
    pub stripe: StandIn,
    pub stripe_server: TestServer,
}

pub const STRIPE_KEY: &str = "sk_test_e2e";

fn bus(nats: &TestNats) -> BusConfig {
    BusConfig {
        ack_wait: Duration::from_secs(2),
        ..BusConfig::new(&nats.url)
    }
}

async fn start<F, Fut>(run: F) -> Running
where
    F: FnOnce(HttpConfig, tokio::net::TcpListener, tokio_util::sync::CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let database = TestDatabase::create().await;
    let http = HttpConfig::new(&database.url);
    let server = TestServer::start(|listener, shutdown| run(http, listener, shutdown)).await;
    server.ready().await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    Running {
        server,
        database,
        pool,
    }
}

impl Stack {
    pub async fn start(options: Options) -> Self {
        let nats = TestNats::start().await;
        let jwt_key = Secret::new(JWT_KEY);
        let auth = start(|http, l, s| {
            let session_ttl = Duration::from_secs(3600);
            auth::run(
                auth::Config {
                    http,
                    jwt_key: jwt_key.clone(),
                    session_ttl,
                    cookie_secure: false,
                },
                l,
                s,
            )
        })
        .await;
        let tickets = start(|http, l, s| {
            tickets::run(
                tickets::Config {
                    http,
                    bus: bus(&nats),
                    jwt_key: jwt_key.clone(),
                },
                l,
                s,
            )
        })
        .await;
        let orders = start(|http, l, s| {
            let expiration_window = options.expiration_window;
            orders::run(
                orders::Config {
                    http,
                    bus: bus(&nats),
                    jwt_key: jwt_key.clone(),
                    expiration_window,
                },
                l,
                s,
            )
        })
        .await;
        let expiration = start(|http, l, s| {
            expiration::run(
                expiration::Config {
                    http,
                    bus: bus(&nats),
                },
                l,
                s,
            )
        })
        .await;
        let stripe = StandIn::new(Some(STRIPE_KEY.into()));
        let router = stripe.router();
        let stripe_server = TestServer::start(|listener, shutdown| async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await?;
            Ok(())
        })
        .await;
        let stripe_config = StripeConfig {
            key: Secret::new(STRIPE_KEY),
            api_base: stripe_server.url(""),
            timeout: Duration::from_secs(10),
            currency: "usd".into(),
        };
        let payments = start(|http, l, s| {
            let config = payments::Config {
                http,
                bus: bus(&nats),
                jwt_key: jwt_key.clone(),
                stripe: stripe_config,
                reconcile_after: Duration::from_secs(60),
            };
            payments::run(config, l, s)
        })
        .await;
        Self {
            nats,
            auth,
            tickets,
            orders,
            expiration,
            payments,
            stripe,
            stripe_server,
        }
    }

    /// Signs up a new user; returns the session cookie.
    pub async fn sign_up(&self, email: &str) -> String {
        let response = self
            .auth
            .server
            .client
            .post(self.auth.server.url("/api/users/signup"))
            .json(&json!({"email": email, "password": "password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let cookie = response.headers()["set-cookie"].to_str().unwrap();
        cookie.split(';').next().unwrap().to_owned()
    }

    pub async fn create_ticket(&self, cookie: &str, title: &str, price: Value) -> Value {
        let body = json!({"title": title, "price": price});
        self.tickets
            .server
            .post("/api/tickets", Some(cookie), body)
            .await
            .expect(201)
    }

    pub async fn ticket(&self, id: &Value) -> Value {
        let path = format!("/api/tickets/{}", id.as_str().unwrap());
        self.tickets.server.get(&path, None).await.expect(200)
    }

    pub async fn order(&self, cookie: &str, ticket_id: &Value) -> TestResponse {
        self.orders
            .server
            .post(
                "/api/orders",
                Some(cookie),
                json!({ "ticketId": ticket_id }),
            )
            .await
    }

    /// The orders service's replica of a ticket: (version, title, price in cents).
    pub async fn replica(&self, ticket_id: &Value) -> Option<(i64, String, i64)> {
        let id = uuid::Uuid::parse_str(ticket_id.as_str().unwrap()).unwrap();
        sqlx::query_as("SELECT version, title, price_cents FROM tickets WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.orders.pool)
            .await
            .unwrap()
    }

    pub async fn wait_for_replica_version(
        &self,
        ticket_id: &Value,
        version: i64,
    ) -> (i64, String, i64) {
        wait_until(
            || async { self.replica(ticket_id).await.filter(|r| r.0 == version) },
            "the replica version",
        )
        .await
    }

    pub async fn order_status(&self, cookie: &str, order_id: &Value) -> String {
        let path = format!("/api/orders/{}", order_id.as_str().unwrap());
        self.orders
            .server
            .get(&path, Some(cookie))
            .await
            .expect(200)["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn wait_for_order_status(&self, cookie: &str, order_id: &Value, status: &str) {
        wait_until(
            || async { (self.order_status(cookie, order_id).await == status).then_some(()) },
            status,
        )
        .await;
    }

    /// Pays for an order, waiting (as a client would, retrying) for the payments
    /// service to have heard of it.
    pub async fn pay(&self, cookie: &str, order_id: &Value, token: &str) -> TestResponse {
        let body = json!({"token": token, "orderId": order_id});
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let response = self
                .payments
                .server
                .post("/api/payments", Some(cookie), body.clone())
                .await;
            if response.status != 404 || tokio::time::Instant::now() > deadline {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_for_ticket(&self, id: &Value, check: impl Fn(&Value) -> bool) -> Value {
        wait_until(
            || async { Some(self.ticket(id).await).filter(|t| check(t)) },
            "the ticket state",
        )
        .await
    }
}

/// Polls `probe` until it returns `Some` (or panics after [`WAIT`]).
pub async fn wait_until<T, F, Fut>(mut probe: F, what: &str) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
