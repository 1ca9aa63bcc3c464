//! The whole backend in one process, for cross-service tests and measurements: each
//! service is started in-process on its own port with its own fresh database, and
//! all of them share one private NATS server, as they would in production.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

use std::time::Duration;

use common::config::{BusConfig, HttpConfig, Secret};
use common::testing::{JWT_KEY, TestDatabase, TestNats, TestResponse, TestServer};
use serde_json::{Value, json};
use sqlx::PgPool;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Options {
    /// How long a buyer has to pay (orders' `EXPIRATION_WINDOW_SECONDS`).
    pub expiration_window: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { expiration_window: Duration::from_secs(900) }
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
}

fn bus(nats: &TestNats) -> BusConfig {
    BusConfig { ack_wait: Duration::from_secs(2), ..BusConfig::new(&nats.url) }
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
    Running { server, database, pool }
}

impl Stack {
    pub async fn start(options: Options) -> Self {
        let nats = TestNats::start().await;
        let jwt_key = Secret::new(JWT_KEY);
        let auth = start(|http, l, s| {
            let session_ttl = Duration::from_secs(3600);
            auth::run(auth::Config { http, jwt_key: jwt_key.clone(), session_ttl, cookie_secure: false }, l, s)
        })
        .await;
        let tickets =
            start(|http, l, s| tickets::run(tickets::Config { http, bus: bus(&nats), jwt_key: jwt_key.clone() }, l, s))
                .await;
        let orders = start(|http, l, s| {
            let expiration_window = options.expiration_window;
            orders::run(orders::Config { http, bus: bus(&nats), jwt_key: jwt_key.clone(), expiration_window }, l, s)
        })
        .await;
        Self { nats, auth, tickets, orders }
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
        self.tickets.server.post("/api/tickets", Some(cookie), body).await.expect(201)
    }

    pub async fn ticket(&self, id: &Value) -> Value {
        let path = format!("/api/tickets/{}", id.as_str().unwrap());
        self.tickets.server.get(&path, None).await.expect(200)
    }

    pub async fn order(&self, cookie: &str, ticket_id: &Value) -> TestResponse {
        self.orders.server.post("/api/orders", Some(cookie), json!({ "ticketId": ticket_id })).await
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

    pub async fn wait_for_replica_version(&self, ticket_id: &Value, version: i64) -> (i64, String, i64) {
        wait_until(|| async { self.replica(ticket_id).await.filter(|r| r.0 == version) }, "the replica version").await
    }

    pub async fn wait_for_ticket(&self, id: &Value, check: impl Fn(&Value) -> bool) -> Value {
        wait_until(|| async { Some(self.ticket(id).await).filter(|t| check(t)) }, "the ticket state").await
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
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
