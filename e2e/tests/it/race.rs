use std::time::Duration;

use e2e::{Options, Stack};
use futures::future::join_all;
use serde_json::{Value, json};
use testkit::wait_until;
use uuid::Uuid;

/// How each race ended.
#[derive(Debug, Default)]
struct Tally {
    complete: usize,
    cancelled: usize,
    refunded_charges: usize,
    /// Races in which the second buyer got the ticket the first one's order let go.
    resold: usize,
}

/// docs/api.md § Payments: payment and expiry at the same instant, 50 times, while a second
/// buyer keeps trying to order the same ticket. Every run must end either complete with
/// one unrefunded charge and the ticket never ordered by anyone else, or cancelled with
/// every completed charge refunded (and the ticket free for the second buyer, who may
/// have got it); no ticket is ever held by two orders.
#[tokio::test]
async fn payment_and_expiration_racing_never_lose_money_or_double_sell() {
    const RUNS: usize = 50;
    let stack = Stack::start(Options {
        expiration_window: Duration::from_secs(2),
    })
    .await;
    let seller = stack.sign_up("seller@test.com").await;
    let buyer = stack.sign_up("buyer@test.com").await;
    let second = stack.sign_up("second@test.com").await;

    let mut tickets = Vec::new();
    for n in 0..RUNS {
        tickets.push(
            stack
                .create_ticket(&seller, &format!("race {n}"), json!(10 + n))
                .await,
        );
    }
    for ticket in &tickets {
        stack.wait_for_replica_version(&ticket["id"], 0).await;
    }
    let runs = tickets.iter().enumerate().map(|(n, ticket)| {
        let (stack, buyer, second) = (&stack, &buyer, &second);
        async move {
            let order = stack.order(buyer, &ticket["id"]).await.expect(201);
            let expires_at =
                chrono::DateTime::parse_from_rfc3339(order["expiresAt"].as_str().unwrap()).unwrap();
            // Pay right around the expiry: from 100 ms before to 50 ms after.
            let offset = chrono::TimeDelta::milliseconds(i64::try_from(n % 16).unwrap() * 10 - 100);
            let pay_at = expires_at.to_utc() + offset;
            let pay = async {
                if let Ok(wait) = (pay_at - chrono::Utc::now()).to_std() {
                    tokio::time::sleep(wait).await;
                }
                let payment = stack.pay(buyer, &order["id"], "tok_visa").await;
                assert!(
                    matches!(payment.status, 201 | 400),
                    "payment answered {} {}",
                    payment.status,
                    payment.body
                );
            };
            // The second buyer tries from the expiry on, every 20 ms for 1.5 s: the
            // ticket is theirs only if the first order let it go.
            let grab = async {
                let from = expires_at.to_utc() - chrono::TimeDelta::milliseconds(50);
                if let Ok(wait) = (from - chrono::Utc::now()).to_std() {
                    tokio::time::sleep(wait).await;
                }
                for _ in 0..75 {
                    let attempt = stack.order(second, &ticket["id"]).await;
                    match attempt.status {
                        201 => return Some(attempt.body),
                        400 => tokio::time::sleep(Duration::from_millis(20)).await,
                        other => panic!("the second order answered {other} {}", attempt.body),
                    }
                }
                None
            };
            let ((), resold) = tokio::join!(pay, grab);
            (order, resold)
        }
    });
    let outcomes: Vec<(Value, Option<Value>)> = join_all(runs).await;

    let mut tally = Tally::default();
    for ((order, resold), ticket) in outcomes.iter().zip(&tickets) {
        let status = wait_until("the order to settle", || async {
            let status = stack.order_status(&buyer, &order["id"]).await;
            matches!(status.as_str(), "complete" | "cancelled").then_some(status)
        })
        .await;
        let order_id = Uuid::parse_str(order["id"].as_str().unwrap()).unwrap();
        // Wait for payments to have acted on the outcome (refunds happen on order.cancelled).
        let charges = wait_until("charges to settle", || async {
            settled_charges(&stack, order_id, &status).await
        })
        .await;
        let kept = charges
            .iter()
            .filter(|(s, refund)| s == "completed" && refund.is_none())
            .count();
        let refunded = charges
            .iter()
            .filter(|(s, refund)| s == "completed" && refund.is_some())
            .count();
        match status.as_str() {
            "complete" => {
                assert_eq!(
                    kept, 1,
                    "a complete order keeps exactly one charge: {charges:?}"
                );
                tally.complete += 1;
                assert!(resold.is_none(), "a sold ticket was sold again: {resold:?}");
                let others: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM orders WHERE ticket_id = $1 AND id <> $2",
                )
                .bind(Uuid::parse_str(ticket["id"].as_str().unwrap()).unwrap())
                .bind(order_id)
                .fetch_one(&stack.orders.pool)
                .await
                .unwrap();
                assert_eq!(others, 0, "nobody else ever got an order for a sold ticket");
                let ticket = stack.ticket(&ticket["id"]).await;
                assert_eq!(
                    ticket["orderId"], order["id"],
                    "a sold ticket stays with its order"
                );
            }
            _ => {
                assert_eq!(kept, 0, "a cancelled order keeps no charge: {charges:?}");
                tally.cancelled += 1;
                if let Some(second_order) = resold {
                    tally.resold += 1;
                    // The freed ticket went to the second buyer, and tickets learns it.
                    stack
                        .wait_for_ticket(&ticket["id"], |t| {
                            t["orderId"] == second_order["id"] || t["orderId"].is_null()
                        })
                        .await;
                }
            }
        }
        tally.refunded_charges += refunded;
    }
    // No ticket is held by two orders, ever: at most one active order per ticket.
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT ticket_id FROM orders WHERE status <> 'cancelled' GROUP BY ticket_id HAVING count(*) > 1) d",
    )
    .fetch_one(&stack.orders.pool)
    .await
    .unwrap();
    assert_eq!(doubled, 0);
    // The provider agrees: kept charges are exactly the complete orders.
    let kept_at_provider = stack
        .stripe
        .charges()
        .iter()
        .filter(|c| c.status == "succeeded" && !c.refunded)
        .count();
    assert_eq!(kept_at_provider, tally.complete);
    println!("race outcomes over {RUNS} runs: {tally:?}");
    assert!(
        tally.complete > 0 && tally.cancelled > 0,
        "both outcomes were exercised: {tally:?}"
    );
}

/// The charges of an order once payments has caught up with its final status.
async fn settled_charges(
    stack: &Stack,
    order_id: Uuid,
    status: &str,
) -> Option<Vec<(String, Option<String>)>> {
    let replica: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(&stack.payments.pool)
        .await
        .unwrap();
    let charges: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, stripe_refund_id FROM charges WHERE order_id = $1")
            .bind(order_id)
            .fetch_all(&stack.payments.pool)
            .await
            .unwrap();
    let unsettled = charges.iter().any(|(s, _)| s == "created");
    let caught_up = status != "cancelled" || replica.as_deref() == Some("cancelled");
    let refunds_done =
        status != "cancelled" || charges.iter().all(|(s, r)| s != "completed" || r.is_some());
    (!unsettled && caught_up && refunds_done).then_some(charges)
}
