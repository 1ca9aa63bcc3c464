//! docs/api.md § Orders: one user holds at most `MAX_ACTIVE_ORDERS_PER_USER` unpaid
//! orders, however many they place at once; and places at most
//! `ORDERS_PER_MINUTE_PER_USER` a minute.

use futures::future::join_all;
use testkit::new_user_cookie;

use crate::Orders;

const CAP_MESSAGE: &str = "You already have 10 unpaid orders; pay for or cancel one first";

/// Of 25 orders one user places at once for 25 free tickets, exactly 10 get through,
/// round after round (each round a new user), and nothing else is written.
#[tokio::test]
async fn concurrent_orders_of_one_user_stop_at_the_cap_of_unpaid_orders() {
    let orders = Orders::with(|config| orders::Config {
        orders_per_minute: 0,
        ..config
    })
    .await;
    let mut tickets = Vec::new();
    for _ in 0..25 {
        tickets.push(orders.ticket(700).await);
    }
    for round in 0..6 {
        let (cookie, user) = new_user_cookie();
        let attempts = tickets
            .iter()
            .map(|ticket| orders.order(&cookie, ticket.id));
        let mut created = 0;
        for response in join_all(attempts).await {
            match response.status {
                201 => created += 1,
                400 => response.assert_error(400, CAP_MESSAGE),
                other => panic!("round {round}: status {other}: {}", response.body),
            }
        }
        assert_eq!(created, 10, "round {round}: orders past the cap");
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE user_id = $1")
            .bind(user)
            .fetch_one(&orders.pool)
            .await
            .unwrap();
        assert_eq!(stored, 10, "round {round}: orders written");
        // Free this round's tickets for the next user.
        sqlx::query("UPDATE orders SET status = 'cancelled' WHERE user_id = $1")
            .bind(user)
            .execute(&orders.pool)
            .await
            .unwrap();
    }
}

/// A cancelled order no longer counts: cancelling one makes room for another.
#[tokio::test]
async fn cancelling_an_unpaid_order_makes_room_under_the_cap() {
    let orders = Orders::start().await;
    let (cookie, _) = new_user_cookie();
    let mut placed = Vec::new();
    for _ in 0..10 {
        let ticket = orders.ticket(300).await;
        placed.push(orders.order(&cookie, ticket.id).await.expect(201));
    }
    let eleventh = orders.ticket(300).await;
    orders
        .order(&cookie, eleventh.id)
        .await
        .assert_error(400, CAP_MESSAGE);
    orders
        .server
        .delete(&crate::path(&placed[0]), Some(&cookie))
        .await
        .expect(204);
    orders.order(&cookie, eleventh.id).await.expect(201);
    // Another user is not held back by this one's orders.
    let (other, _) = new_user_cookie();
    let ticket = orders.ticket(300).await;
    orders.order(&other, ticket.id).await.expect(201);
}

/// Past the per-minute rate, 429 with `Retry-After` and the error body, and nothing
/// written; another user is unaffected.
#[tokio::test]
async fn ordering_faster_than_the_rate_is_answered_429_with_retry_after() {
    let orders = Orders::with(|config| orders::Config {
        orders_per_minute: 3,
        ..config
    })
    .await;
    let (cookie, _) = new_user_cookie();
    for _ in 0..3 {
        let ticket = orders.ticket(300).await;
        orders.order(&cookie, ticket.id).await.expect(201);
    }
    let ticket = orders.ticket(300).await;
    let refused = orders.order(&cookie, ticket.id).await;
    let wait: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&wait), "Retry-After {wait}");
    refused.assert_error(
        429,
        "Too many requests: you are placing orders too fast; try again shortly",
    );
    let (other, _) = new_user_cookie();
    orders.order(&other, ticket.id).await.expect(201);
}

/// Only orders placed count against the rate: of 50 orders one user places at once
/// for one ticket, one is placed and every other is told the ticket is reserved.
#[tokio::test]
async fn losers_of_a_race_for_a_ticket_are_told_it_is_reserved_not_rate_limited() {
    let orders = Orders::start().await;
    for round in 0..3 {
        let ticket = orders.ticket(300).await;
        let (cookie, _) = new_user_cookie();
        let attempts = (0..50).map(|_| orders.order(&cookie, ticket.id));
        let mut created = 0;
        for response in join_all(attempts).await {
            match response.status {
                201 => created += 1,
                400 => response.assert_error(400, "Ticket is already reserved"),
                other => panic!("round {round}: status {other}: {}", response.body),
            }
        }
        assert_eq!(created, 1, "round {round}");
    }
}
