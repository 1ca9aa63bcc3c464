//! Expiration against a real PostgreSQL and NATS: in-process, and as a real process
//! that is killed and restarted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

mod crash;
mod schedule;

use std::time::Duration;

use common::events::{OrderCreated, OrderCreatedTicket, OrderStatus};
use common::money::Price;
use common::time::Timestamp;
use testkit::{TestDatabase, TestNats, TestServer, publish_raw};
use uuid::Uuid;

pub fn config(database: &TestDatabase, nats: &TestNats) -> expiration::Config {
    let mut config = expiration::Config::for_tests(&database.url, &nats.url);
    config.bus.ack_wait = Duration::from_secs(1);
    config
}

pub async fn start(database: &TestDatabase, nats: &TestNats) -> TestServer {
    let config = config(database, nats);
    let server = TestServer::serve(config).await;
    server.ready().await;
    server
}

/// Publishes `order.created` for a new order expiring at `expires_at`; returns its id.
pub async fn order_expiring_at(nats: &TestNats, expires_at: Timestamp) -> Uuid {
    let order = OrderCreated {
        id: Uuid::new_v4(),
        version: 0,
        status: OrderStatus::Created,
        user_id: Uuid::new_v4(),
        expires_at,
        ticket: OrderCreatedTicket {
            id: Uuid::new_v4(),
            price: Price::from_cents(100).unwrap(),
        },
    };
    publish_raw(&nats.url, &Uuid::new_v4().to_string(), &order).await;
    order.id
}

pub fn in_ms(ms: i64) -> Timestamp {
    common::time::now() + chrono::TimeDelta::milliseconds(ms)
}
