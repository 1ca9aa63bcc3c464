//! Payments against a real PostgreSQL, a private NATS server and the Stripe stand-in.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

mod crash;
mod pay;
mod refunds;

use std::time::Duration;

use common::events::{OrderCancelled, OrderCreated, OrderCreatedTicket, OrderStatus, TicketRef};
use common::money::Price;
use kit::config::Secret;
use payments::stripe::StripeConfig;
use serde_json::json;
use sqlx::PgPool;
use stripe_standin::{Charge, Fault, FaultMode, StandIn};
use testkit::{
    TestDatabase, TestNats, TestResponse, TestServer, publish_raw, session_cookie, wait_until,
};
use uuid::Uuid;

pub const STRIPE_KEY: &str = "sk_test_standin";

/// The stand-in, served in-process.
pub struct Stripe {
    pub standin: StandIn,
    pub server: TestServer,
}

impl Stripe {
    pub async fn start() -> Self {
        let standin = StandIn::new(Some(STRIPE_KEY.into()));
        let served = standin.clone();
        let server = TestServer::start(|listener, shutdown| async move {
            Ok(served.serve(listener, shutdown.cancelled_owned()).await?)
        })
        .await;
        Self { standin, server }
    }

    pub fn base(&self) -> String {
        self.server.url("")
    }

    pub fn succeeded(&self) -> Vec<Charge> {
        self.standin
            .charges()
            .into_iter()
            .filter(|c| c.status == "succeeded")
            .collect()
    }

    pub fn fault(&self, mode: FaultMode, times: u32) {
        self.standin.set_fault(Fault { mode, times });
    }
}

pub fn stripe_config(base: &str, timeout: Duration) -> StripeConfig {
    StripeConfig {
        key: Secret::new(STRIPE_KEY),
        api_base: base.to_owned(),
        timeout,
        currency: "usd".into(),
    }
}

pub struct Harness {
    pub server: TestServer,
    pub nats: TestNats,
    pub pool: PgPool,
    pub stripe: Stripe,
    pub database: TestDatabase,
}

/// A buyer: its id and session cookie.
pub struct Buyer {
    pub id: Uuid,
    pub cookie: String,
}

impl Buyer {
    pub fn random() -> Self {
        let id = Uuid::new_v4();
        Self {
            id,
            cookie: session_cookie(id, "buyer@test.io"),
        }
    }
}

impl Harness {
    pub async fn start() -> Self {
        Self::with_reconcile_after(Duration::from_secs(3600)).await
    }

    pub async fn with_reconcile_after(reconcile_after: Duration) -> Self {
        let stripe = Stripe::start().await;
        let nats = TestNats::start().await;
        let database = TestDatabase::create().await;
        let config = payments::Config {
            stripe: stripe_config(&stripe.base(), Duration::from_secs(1)),
            reconcile_after,
            ..payments::Config::for_tests(&database.url, &nats.url, &stripe.base(), STRIPE_KEY)
        };
        let server = TestServer::serve(config).await;
        server.ready().await;
        let pool = database.pool().await;
        Self {
            server,
            nats,
            pool,
            stripe,
            database,
        }
    }

    /// An order by `buyer` for `cents`, in the replica.
    pub async fn order(&self, buyer: &Buyer, cents: i64) -> Uuid {
        let order = OrderCreated {
            id: Uuid::new_v4(),
            version: 0,
            status: OrderStatus::Created,
            user_id: buyer.id,
            expires_at: common::time::now() + chrono_minutes(15),
            ticket: OrderCreatedTicket {
                id: Uuid::new_v4(),
                price: Price::from_cents(cents).unwrap(),
            },
        };
        publish_raw(&self.nats.url, &Uuid::new_v4().to_string(), &order).await;
        self.wait_for_order_status(order.id, "created").await;
        order.id
    }

    /// Cancels an order as the orders service would announce it (version 1).
    pub async fn cancel(&self, order_id: Uuid) {
        let cancelled = OrderCancelled {
            id: order_id,
            version: 1,
            ticket: TicketRef { id: Uuid::new_v4() },
        };
        publish_raw(&self.nats.url, &Uuid::new_v4().to_string(), &cancelled).await;
    }

    pub async fn order_status(&self, order_id: Uuid) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }

    pub async fn wait_for_order_status(&self, order_id: Uuid, status: &str) {
        let what = format!("order {order_id} to become {status}");
        wait_until(&what, || async {
            self.order_status(order_id).await.as_deref() == Some(status)
        })
        .await;
    }

    pub async fn pay(&self, buyer: &Buyer, token: &str, order_id: Uuid) -> TestResponse {
        self.server
            .post(
                "/api/payments",
                Some(&buyer.cookie),
                json!({"token": token, "orderId": order_id}),
            )
            .await
    }

    /// (status, stripe_id, stripe_refund_id, amount) of each charge of an order.
    pub async fn charges(
        &self,
        order_id: Uuid,
    ) -> Vec<(String, Option<String>, Option<String>, i64)> {
        sqlx::query_as("SELECT status, stripe_id, stripe_refund_id, amount_cents FROM charges WHERE order_id = $1 ORDER BY created_at")
            .bind(order_id)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

fn chrono_minutes(minutes: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::minutes(minutes)
}
