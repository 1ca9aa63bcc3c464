use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::events::{
    OrderCancelled, OrderCreated, OrderCreatedTicket, OrderStatus, TicketCreated, TicketRef,
};
use common::money::Price;
use e2e::{Options, Stack};
use futures::future::join_all;
use serde_json::json;
use stripe_standin::{Fault, FaultMode};
use testkit::wait::{wait_at_most, wait_until};
use testkit::{TestServer, publish_all};
use uuid::Uuid;

/// Every service keeps answering HTTP promptly while a burst of events is consumed and
/// Stripe hangs: event work has its own connections, and no transaction waits on Stripe.
///
/// 2,000 events are queued at once (1,000 `ticket.created` for orders; 1,000
/// `order.created` that make tickets reserve 1,000 tickets, payments store 1,000
/// orders and expiration schedule 1,000 expiries, and 1,000 `ticket.updated` follow),
/// while 16 payments and the refunds of 10 cancelled paid orders hang at Stripe.
#[tokio::test]
async fn http_stays_fast_while_events_flood_in_and_stripe_hangs() {
    let stack = Stack::start(Options::default()).await;
    let buyer = stack.sign_up("buyer@test.com").await;
    let seller = stack.sign_up("seller@test.com").await;

    // Ten paid orders, then Stripe hangs.
    let mut paid = Vec::new();
    for n in 0..10 {
        let ticket = stack
            .create_ticket(&seller, &format!("paid {n}"), json!(10))
            .await;
        stack.wait_for_replica_version(&ticket["id"], 0).await;
        let order = stack.order(&buyer, &ticket["id"]).await.expect(201);
        stack
            .pay(&buyer, &order["id"], "tok_visa")
            .await
            .expect(201);
        paid.push(order);
    }
    stack.stripe.set_fault(Fault {
        mode: FaultMode::Hang,
        times: 10_000,
    });
    // Sixteen orders ready to pay (replicated everywhere before the burst queues ahead
    // of them); their payments will hang at Stripe while the burst is consumed.
    let mut unpaid = Vec::new();
    for n in 0..16 {
        let ticket = stack
            .create_ticket(&buyer, &format!("hang {n}"), json!(5))
            .await;
        stack.wait_for_replica_version(&ticket["id"], 0).await;
        let order = stack.order(&buyer, &ticket["id"]).await.expect(201);
        let id: Uuid = order["id"].as_str().unwrap().parse().unwrap();
        wait_until("payments to know of the order", || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM orders WHERE id = $1")
                .bind(id)
                .fetch_one(&stack.payments.pool)
                .await
                .unwrap()
                == 1
        })
        .await;
        unpaid.push(order);
    }
    let hanging_payments: Vec<_> = unpaid
        .iter()
        .map(|order| {
            let (stack, buyer) = (&stack, &buyer);
            async move { stack.pay(buyer, &order["id"], "tok_visa").await.status }
        })
        .collect();

    // The burst.
    let tickets_pool = &stack.tickets.pool;
    let ids: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
    let price = Price::from_cents(1500).unwrap();
    let user_id = Uuid::new_v4();
    for chunk in ids.chunks(250) {
        sqlx::query(
            "INSERT INTO tickets (id, title, price_cents, user_id)
             SELECT id, 'burst', 1500, $2 FROM unnest($1::uuid[]) AS id",
        )
        .bind(chunk)
        .bind(user_id)
        .execute(tickets_pool)
        .await
        .unwrap();
    }
    let created: Vec<_> = ids
        .iter()
        .map(|&id| {
            let event = TicketCreated {
                id,
                version: 0,
                title: "burst".into(),
                price,
                user_id,
            };
            (Uuid::new_v4().to_string(), event)
        })
        .collect();
    let ordered: Vec<_> = ids
        .iter()
        .map(|&id| {
            let event = OrderCreated {
                id: Uuid::new_v4(),
                version: 0,
                status: OrderStatus::Created,
                user_id: Uuid::new_v4(),
                expires_at: common::time::now() + chrono::TimeDelta::minutes(15),
                ticket: OrderCreatedTicket { id, price },
            };
            (Uuid::new_v4().to_string(), event)
        })
        .collect();
    let cancelled: Vec<_> = paid
        .iter()
        .map(|order| {
            let event = OrderCancelled {
                id: order["id"].as_str().unwrap().parse().unwrap(),
                version: 1,
                ticket: TicketRef {
                    id: order["ticket"]["id"].as_str().unwrap().parse().unwrap(),
                },
            };
            (Uuid::new_v4().to_string(), event)
        })
        .collect();
    let burst_orders: Vec<Uuid> = ordered.iter().map(|(_, event)| event.id).collect();
    publish_all(&stack.nats.url, &created).await;
    publish_all(&stack.nats.url, &ordered).await;
    publish_all(&stack.nats.url, &cancelled).await;

    // Meanwhile: the buyer's orders and every service's readiness, timed.
    let done = AtomicBool::new(false);
    let consumed = async {
        wait_at_most(
            Duration::from_secs(120),
            "the burst to be consumed",
            || async {
                // The burst's own rows only: not the 26 orders made before it.
                let reserved: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM tickets WHERE order_id IS NOT NULL AND id = ANY($1)",
                )
                .bind(&ids)
                .fetch_one(tickets_pool)
                .await
                .unwrap();
                let replicated: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM tickets WHERE version = 1 AND id = ANY($1)",
                )
                .bind(&ids)
                .fetch_one(&stack.orders.pool)
                .await
                .unwrap();
                let scheduled: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM schedules WHERE order_id = ANY($1)")
                        .bind(&burst_orders)
                        .fetch_one(&stack.expiration.pool)
                        .await
                        .unwrap();
                reserved == 1000 && replicated == 1000 && scheduled == 1000
            },
        )
        .await;
        done.store(true, Ordering::SeqCst);
    };
    let servers: [(&str, &TestServer); 5] = [
        ("auth", &stack.auth.server),
        ("tickets", &stack.tickets.server),
        ("orders", &stack.orders.server),
        ("payments", &stack.payments.server),
        ("expiration", &stack.expiration.server),
    ];
    let sample = async {
        let mut samples: Vec<(&str, u16, Duration)> = Vec::new();
        while !done.load(Ordering::SeqCst) {
            let started = Instant::now();
            let response = stack.orders.server.get("/api/orders", Some(&buyer)).await;
            samples.push(("GET /api/orders", response.status, started.elapsed()));
            for (name, server) in servers {
                let started = Instant::now();
                let status = server.ops("/readyz").await.status;
                samples.push((name, status, started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        samples
    };
    let burst_started = Instant::now();
    let ((), samples, payments) = tokio::join!(consumed, sample, join_all(hanging_payments));
    let burst = burst_started.elapsed();

    // The ten cancellations were handled: each charge's refund is due, and hangs at
    // Stripe (none made yet), while everything above stayed fast.
    let paid_orders: Vec<Uuid> = paid
        .iter()
        .map(|order| order["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let refunds_due = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM charges
             WHERE order_id = ANY($1) AND refund_due_at IS NOT NULL AND stripe_refund_id IS NULL",
        )
        .bind(&paid_orders)
        .fetch_one(&stack.payments.pool)
        .await
        .unwrap()
    };
    wait_until("the ten refunds to be due", || async {
        refunds_due().await == 10
    })
    .await;
    assert!(
        stack.stripe.refunds().is_empty(),
        "the refunds hang at Stripe"
    );
    // Once Stripe answers again, every one of them is made.
    stack.stripe.set_fault(Fault {
        mode: FaultMode::None,
        times: 0,
    });
    // (The reconciler retries every 30 s here, after a Stripe timeout of 10 s.)
    wait_at_most(
        Duration::from_secs(60),
        "the refunds to be made once Stripe answers",
        || async { refunds_due().await == 0 },
    )
    .await;
    assert_eq!(stack.stripe.refunds().len(), 10);

    assert!(
        payments.iter().all(|&status| status == 502),
        "the payments waited for Stripe and gave up: {payments:?}"
    );
    let endpoints = [
        "GET /api/orders",
        "auth",
        "tickets",
        "orders",
        "payments",
        "expiration",
    ];
    for endpoint in endpoints {
        let mut latencies: Vec<Duration> = samples
            .iter()
            .filter(|(name, _, _)| *name == endpoint)
            .map(|(_, _, latency)| *latency)
            .collect();
        latencies.sort();
        assert!(
            latencies.len() >= 20,
            "{endpoint}: only {} samples",
            latencies.len()
        );
        let p99 = latencies[latencies.len() * 99 / 100];
        println!(
            "{endpoint}: {} samples during {burst:?}, p99 {p99:?}",
            latencies.len()
        );
        assert!(p99 < Duration::from_millis(200), "{endpoint}: p99 {p99:?}");
    }
    let server_errors: Vec<_> = samples
        .iter()
        .filter(|(_, status, _)| *status >= 500)
        .collect();
    assert!(server_errors.is_empty(), "5xx answers: {server_errors:?}");
}
