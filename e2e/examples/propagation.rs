//! How long a new ticket takes to reach the orders service's replica.
//!
//! Starts tickets and orders in-process (sharing one private NATS server and the local
//! PostgreSQL cluster), creates tickets over HTTP, and for each compares the moment
//! tickets inserted it (`tickets.created_at`) with the moment orders stored it
//! (`tickets.replicated_at` in the orders database). Both timestamps come from the
//! same PostgreSQL server clock, so no clock skew enters the figures. The delay covers
//! the whole path: commit, outbox relay woken by NOTIFY, JetStream publish with fsync,
//! pull consumer delivery and the replica's transaction.
//!
//!     cargo run --release -p e2e --example propagation -- [tickets] [concurrency]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Instant;

use e2e::{Options, Stack, wait_until};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(1000, |a| a.parse().unwrap());
    let concurrency: usize = args.next().map_or(1, |a| a.parse().unwrap());
    let stack = Stack::start(Options::default()).await;
    let seller = stack.sign_up("seller@bench.io").await;

    let started = Instant::now();
    let ids: Vec<Uuid> = futures::stream::iter(0..count)
        .map(|n| {
            let (stack, seller) = (&stack, &seller);
            async move {
                let ticket = stack.create_ticket(seller, &format!("t{n}"), json!(10)).await;
                Uuid::parse_str(ticket["id"].as_str().unwrap()).unwrap()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let created_in = started.elapsed();
    let expected = i64::try_from(count).unwrap();
    wait_until(
        || async {
            let replicated: i64 =
                sqlx::query_scalar("SELECT count(*) FROM tickets").fetch_one(&stack.orders.pool).await.unwrap();
            (replicated == expected).then_some(())
        },
        "every ticket to be replicated",
    )
    .await;

    let created: HashMap<Uuid, f64> =
        sqlx::query_as::<_, (Uuid, f64)>("SELECT id, extract(epoch FROM created_at)::float8 FROM tickets")
            .fetch_all(&stack.tickets.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let replicated: HashMap<Uuid, f64> =
        sqlx::query_as::<_, (Uuid, f64)>("SELECT id, extract(epoch FROM replicated_at)::float8 FROM tickets")
            .fetch_all(&stack.orders.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let mut delays_ms: Vec<f64> = ids.iter().map(|id| (replicated[id] - created[id]) * 1e3).collect();
    delays_ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = (q * delays_ms.len() as f64).ceil() as usize;
        delays_ms[rank.clamp(1, delays_ms.len()) - 1]
    };
    println!(
        "tickets={count} concurrency={concurrency} created_in={:.2}s  propagation ms: p50={:.2} p90={:.2} p99={:.2} max={:.2}",
        created_in.as_secs_f64(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    );
}
