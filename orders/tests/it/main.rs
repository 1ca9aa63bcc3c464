//! Orders against a real PostgreSQL and a private NATS server, in-process. The ticket
//! replica is fed the way the tickets service feeds it: with events on the bus.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

mod cancel;
mod create;
mod lifecycle;
mod limits;
mod read;
mod replica;

use std::time::Duration;

use common::events::{TicketCreated, TicketUpdated};
use common::money::Price;
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::{TestDatabase, TestNats, TestServer, publish_raw, wait_until};
use uuid::Uuid;

pub struct Orders {
    pub server: TestServer,
    pub nats: TestNats,
    pub pool: PgPool,
    _database: TestDatabase,
}

impl Orders {
    pub async fn start() -> Self {
        Self::with_window(Duration::from_secs(900)).await
    }

    pub async fn with_window(expiration_window: Duration) -> Self {
        Self::with(|config| orders::Config {
            expiration_window,
            ..config
        })
        .await
    }

    /// Orders with the test configuration as `adjust` changes it.
    pub async fn with(adjust: impl FnOnce(orders::Config) -> orders::Config) -> Self {
        let nats = TestNats::start().await;
        let database = TestDatabase::create().await;
        let config = adjust(orders::Config::for_tests(&database.url, &nats.url));
        let server = TestServer::serve(config).await;
        server.ready().await;
        let pool = database.pool().await;
        Self {
            server,
            nats,
            pool,
            _database: database,
        }
    }

    /// Publishes any event as its publisher would (fresh event id).
    pub async fn publish<E: common::events::Event>(&self, event: &E) {
        publish_raw(&self.nats.url, &Uuid::new_v4().to_string(), event).await;
    }

    /// A ticket in the replica, as the tickets service would announce it.
    pub async fn ticket(&self, cents: i64) -> TicketCreated {
        let ticket = TicketCreated {
            id: Uuid::new_v4(),
            version: 0,
            title: "concert".into(),
            price: Price::from_cents(cents).unwrap(),
            user_id: Uuid::new_v4(),
        };
        self.publish(&ticket).await;
        self.wait_for_replica(ticket.id, 0).await;
        ticket
    }

    pub async fn replica(&self, id: Uuid) -> Option<(i64, String, i64)> {
        sqlx::query_as("SELECT version, title, price_cents FROM tickets WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }

    pub async fn wait_for_replica(&self, id: Uuid, version: i64) {
        let what = format!("the replica of {id} to reach version {version}");
        wait_until(&what, || async {
            self.replica(id).await.is_some_and(|(v, _, _)| v == version)
        })
        .await;
    }

    pub async fn order(&self, cookie: &str, ticket_id: Uuid) -> testkit::TestResponse {
        self.server
            .post(
                "/api/orders",
                Some(cookie),
                json!({ "ticketId": ticket_id }),
            )
            .await
    }

    pub async fn show(&self, cookie: &str, order: &Value) -> Value {
        self.server
            .get(&path(order), Some(cookie))
            .await
            .expect(200)
    }

    pub async fn wait_for_status(&self, cookie: &str, order: &Value, status: &str) -> Value {
        let what = format!("the order to become {status}");
        wait_until(&what, || async {
            Some(self.show(cookie, order).await).filter(|current| current["status"] == status)
        })
        .await
    }
}

pub fn path(order: &Value) -> String {
    format!("/api/orders/{}", order["id"].as_str().unwrap())
}

pub fn updated(ticket: &TicketCreated, version: i64, title: &str, cents: i64) -> TicketUpdated {
    TicketUpdated {
        id: ticket.id,
        version,
        title: title.into(),
        price: Price::from_cents(cents).unwrap(),
        user_id: ticket.user_id,
        order_id: None,
    }
}
