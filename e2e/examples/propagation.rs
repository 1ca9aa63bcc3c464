//! How long a new ticket takes to reach the orders service's replica.
//!
//! Starts tickets and orders in-process (sharing one private NATS server and the local
//! PostgreSQL cluster), creates tickets over HTTP, and for each compares the moment
//! tickets inserted it (`tickets.created_at`) with the moment orders stored it
//! (`tickets.replicated_at` in the orders database). Both timestamps come from the
//! same PostgreSQL server clock, so no clock skew enters the figures. The delay covers
//! the whole path: commit, outbox relay woken by the commit, JetStream publish with fsync,
//! pull consumer delivery and the replica's transaction.
//!
//! As a baseline, measured in the same run on the same NATS server: the bare JetStream
//! round trip (publish, wait for the stream's acknowledgement, receive it through a
//! durable pull consumer and acknowledge), one message at a time.
//!
//!     cargo run --release -p e2e --example propagation -- [tickets] [concurrency]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Instant;

use e2e::{Options, Stack};
use futures::StreamExt;
use serde_json::json;
use testkit::wait_until;
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
                let ticket = stack
                    .create_ticket(seller, &format!("t{n}"), json!(10))
                    .await;
                Uuid::parse_str(ticket["id"].as_str().unwrap()).unwrap()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let created_in = started.elapsed();
    let expected = i64::try_from(count).unwrap();
    wait_until("every ticket to be replicated", || async {
        let replicated: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets")
            .fetch_one(&stack.orders.pool)
            .await
            .unwrap();
        (replicated == expected).then_some(())
    })
    .await;

    let created: HashMap<Uuid, f64> = sqlx::query_as::<_, (Uuid, f64)>(
        "SELECT id, extract(epoch FROM created_at)::float8 FROM tickets",
    )
    .fetch_all(&stack.tickets.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let replicated: HashMap<Uuid, f64> = sqlx::query_as::<_, (Uuid, f64)>(
        "SELECT id, extract(epoch FROM replicated_at)::float8 FROM tickets",
    )
    .fetch_all(&stack.orders.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let delays_ms: Vec<f64> = ids
        .iter()
        .map(|id| (replicated[id] - created[id]) * 1e3)
        .collect();
    let propagation = Percentiles::of(delays_ms);
    let baseline = Percentiles::of(jetstream_round_trips(&stack.nats.url, count).await);
    println!(
        "tickets={count} concurrency={concurrency} created_in={:.2}s",
        created_in.as_secs_f64()
    );
    println!("propagation ms:               {propagation}");
    println!("baseline JetStream trip ms:   {baseline}");
    println!(
        "ratio (propagation/baseline): p50={:.1}x p99={:.1}x",
        propagation.p50 / baseline.p50,
        propagation.p99 / baseline.p99
    );
}

struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        Self {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50={:.2} p90={:.2} p99={:.2} max={:.2}",
            self.p50, self.p90, self.p99, self.max
        )
    }
}

/// Publish → stream acknowledgement → pull-consumer delivery → ack, one message at a time.
async fn jetstream_round_trips(url: &str, count: usize) -> Vec<f64> {
    use async_nats::jetstream::{consumer::pull, stream};
    let jetstream = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let stream = jetstream
        .create_stream(stream::Config {
            name: "BASELINE".into(),
            subjects: vec!["baseline".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("baseline".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut trips = Vec::with_capacity(count);
    for n in 0..count {
        let started = Instant::now();
        jetstream
            .publish("baseline", n.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let message = messages.next().await.unwrap().unwrap();
        message.ack().await.unwrap();
        trips.push(started.elapsed().as_secs_f64() * 1e3);
    }
    trips
}
