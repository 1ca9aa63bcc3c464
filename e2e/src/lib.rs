//! The whole backend in one process, for cross-service tests and measurements: each
//! service is started in-process on its own port with its own fresh database, and
//! all of them share one private NATS server, as they would in production.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

use std::time::Duration;

use bus::BusConfig;
use serde_json::{Value, json};
use sqlx::PgPool;
use stripe_standin::StandIn;
use testkit::{TestDatabase, TestNats, TestResponse, TestServer, cookie_of, wait_until};

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

/// The bus settings of `service`: short redelivery waits, and its own NATS user
/// (the server has the users of `make up`; only the tests' own tools connect
/// anonymously, as the admin user). `EVENT_BATCH` and `EVENT_CONCURRENCY`, when set,
/// are the consumers' settings, so that a test can be run with others than the
/// defaults (`EVENT_BATCH=32 EVENT_CONCURRENCY=2 cargo nextest run -p e2e burst`).
fn bus(mut bus: BusConfig, service: &str) -> BusConfig {
    bus.ack_wait = Duration::from_secs(2);
    bus.nats_password = Some(common::Secret::new(testkit::test_password(service)));
    let env = kit::config::Env::process();
    bus.batch = env.optional("EVENT_BATCH", bus.batch).unwrap().max(1);
    bus.concurrency = env.optional("EVENT_CONCURRENCY", bus.concurrency).unwrap();
    bus
}

/// Starts a service on a fresh database of its own: `configure` gets that database's
/// URL and gives the service's configuration.
async fn start<S: kit::Service>(configure: impl FnOnce(&str) -> S) -> Running {
    let database = TestDatabase::create().await;
    let server = TestServer::serve(configure(&database.url)).await;
    server.ready().await;
    let pool = database.pool().await;
    Running {
        server,
        database,
        pool,
    }
}

impl Stack {
    pub async fn start(options: Options) -> Self {
        let nats = TestNats::start_with(testkit::Users::AnonymousIsAdmin).await;
        let auth = start(|db| {
            let mut config = auth::Config::for_tests(db, &nats.url);
            config.bus = bus(config.bus, "auth");
            config
        })
        .await;
        let tickets = start(|db| {
            let mut config = tickets::Config::for_tests(db, &nats.url);
            config.bus = bus(config.bus, "tickets");
            // The scenarios are load from a few users, as scripts/load-settings.sh
            // sets for the stack; the limits themselves are tested in the services.
            config.rate_limits = false;
            config
        })
        .await;
        let orders = start(|db| {
            let mut config = orders::Config::for_tests(db, &nats.url);
            config.bus = bus(config.bus, "orders");
            config.expiration_window = options.expiration_window;
            config.rate_limits = false;
            config.max_active_orders = i64::MAX;
            config
        })
        .await;
        let expiration = start(|db| {
            let mut config = expiration::Config::for_tests(db, &nats.url);
            config.bus = bus(config.bus, "expiration");
            config
        })
        .await;
        let stripe = StandIn::new(Some(STRIPE_KEY.into()));
        let served = stripe.clone();
        let stripe_server = TestServer::start(|listener, shutdown| async move {
            Ok(served.serve(listener, shutdown.cancelled_owned()).await?)
        })
        .await;
        let payments = start(|db| {
            let mut config =
                payments::Config::for_tests(db, &nats.url, &stripe_server.url(""), STRIPE_KEY);
            config.bus = bus(config.bus, "payments");
            config
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
        cookie_of(response.headers())
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
        wait_until("the replica version", || async {
            self.replica(ticket_id).await.filter(|r| r.0 == version)
        })
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
        let what = format!("the order to become {status}");
        wait_until(&what, || async {
            self.order_status(cookie, order_id).await == status
        })
        .await;
    }

    /// Pays for an order, waiting (as a client would, retrying) for the payments
    /// service to have heard of it.
    pub async fn pay(&self, cookie: &str, order_id: &Value, token: &str) -> TestResponse {
        let body = json!({"token": token, "orderId": order_id});
        wait_until("payments to know of the order", || async {
            let response = self
                .payments
                .server
                .post("/api/payments", Some(cookie), body.clone())
                .await;
            (response.status != 404).then_some(response)
        })
        .await
    }

    pub async fn wait_for_ticket(&self, id: &Value, check: impl Fn(&Value) -> bool) -> Value {
        wait_until("the ticket state", || async {
            Some(self.ticket(id).await).filter(|t| check(t))
        })
        .await
    }
}
