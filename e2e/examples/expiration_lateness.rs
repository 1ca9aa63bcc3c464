//! How late orders expire, end to end.
//!
//! Starts every service in-process with a short payment window, places orders, and
//! records when each `expiration.complete` event is seen on the bus (a core NATS
//! subscription in this process) against the order's `expiresAt`. Both clocks are
//! this machine's. The lateness covers the scheduler's wake-up, its transaction, the
//! outbox relay and JetStream's fsync.
//!
//!     cargo run --release -p e2e --example expiration_lateness -- [orders] [window seconds]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use common::events::{ExpirationComplete, Subject};
use e2e::{Options, Stack};
use futures::StreamExt;
use serde_json::json;
use testkit::EventProbe;
use uuid::Uuid;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(500, |a| a.parse().unwrap());
    let window: u64 = args.next().map_or(5, |a| a.parse().unwrap());
    let stack = Stack::start(Options {
        expiration_window: Duration::from_secs(window),
    })
    .await;
    let seller = stack.sign_up("seller@bench.io").await;
    let buyer = stack.sign_up("buyer@bench.io").await;
    let mut probe = EventProbe::subscribe(&stack.nats.url, Subject::ExpirationComplete).await;

    let tickets: Vec<_> = futures::stream::iter(0..count)
        .map(|n| {
            let (stack, seller) = (&stack, &seller);
            async move {
                stack
                    .create_ticket(seller, &format!("t{n}"), json!(10))
                    .await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for ticket in &tickets {
        stack.wait_for_replica_version(&ticket["id"], 0).await;
    }
    // Orders spread over about two seconds, several often due in the same millisecond.
    let mut expires_at = HashMap::new();
    for ticket in &tickets {
        let order = stack.order(&buyer, &ticket["id"]).await.expect(201);
        let at = chrono::DateTime::parse_from_rfc3339(order["expiresAt"].as_str().unwrap())
            .unwrap()
            .to_utc();
        expires_at.insert(Uuid::parse_str(order["id"].as_str().unwrap()).unwrap(), at);
    }

    let mut lateness_ms = Vec::new();
    let mut early = 0;
    while lateness_ms.len() < count {
        let fired = probe
            .next::<ExpirationComplete>(Duration::from_secs(window + 30))
            .await
            .expect("every order expires");
        let late = chrono::Utc::now() - expires_at[&fired.event.order_id];
        if late < chrono::TimeDelta::zero() {
            early += 1;
        }
        lateness_ms.push(late.num_microseconds().unwrap() as f64 / 1e3);
    }
    lateness_ms.sort_by(f64::total_cmp);
    let at = |q: f64| lateness_ms[((q * count as f64).ceil() as usize).clamp(1, count) - 1];
    println!(
        "orders={count} window={window}s  expiration lateness ms: p50={:.2} p90={:.2} p99={:.2} max={:.2}  early={early}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}
