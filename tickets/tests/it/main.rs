//! Tickets against a real PostgreSQL and a private NATS server, in-process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

mod create;
mod listeners;
mod process;
mod read;
mod update;

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{TestDatabase, TestNats, TestResponse, TestServer, new_user_cookie};

pub struct Tickets {
    pub server: TestServer,
    pub nats: TestNats,
    pub database: TestDatabase,
}

impl Tickets {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Started with the test configuration as `adjust` leaves it.
    pub async fn start_with(adjust: impl FnOnce(&mut tickets::Config)) -> Self {
        let nats = TestNats::start().await;
        let database = TestDatabase::create().await;
        let mut config = config(&database, &nats);
        adjust(&mut config);
        let server = TestServer::serve(config).await;
        server.ready().await;
        Self {
            server,
            nats,
            database,
        }
    }

    pub async fn create(&self, cookie: &str, title: &str, price: Value) -> TestResponse {
        self.server
            .post(
                "/api/tickets",
                Some(cookie),
                json!({"title": title, "price": price}),
            )
            .await
    }

    /// Creates a ticket as a new user; returns the ticket and that user's cookie.
    pub async fn new_ticket(&self) -> (Value, String) {
        let (cookie, _) = new_user_cookie();
        let ticket = self.create(&cookie, "concert", json!(20)).await.expect(201);
        (ticket, cookie)
    }

    pub async fn ticket(&self, id: &Value) -> Value {
        self.server
            .get(&format!("/api/tickets/{}", id.as_str().unwrap()), None)
            .await
            .expect(200)
    }
}

/// The service's test configuration, with a short ack wait so redeliveries come soon.
pub fn config(database: &TestDatabase, nats: &TestNats) -> tickets::Config {
    let mut config = tickets::Config::for_tests(&database.url, &nats.url);
    config.bus.ack_wait = Duration::from_secs(1);
    config
}

pub async fn start_server(database: &TestDatabase, nats: &TestNats) -> TestServer {
    let config = config(database, nats);
    let server = TestServer::serve(config).await;
    server.ready().await;
    server
}
