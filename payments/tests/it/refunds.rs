use std::time::Duration;

use common::events::Subject;
use kit::Service as _;
use payments::settle::{Payments, Refusal, Settled};
use payments::stripe::Stripe;
use testkit::bus::settled;
use testkit::wait_until;

use crate::{Buyer, Harness, stripe_config};

/// `order.cancelled` after a kept charge (payments' replica lagged behind orders):
/// the charge is refunded.
#[tokio::test]
async fn a_cancelled_order_has_its_charge_refunded() {
    let harness = Harness::start().await;
    let buyer = Buyer::random();
    let order = harness.order(&buyer, 1500).await;
    harness.pay(&buyer, "tok_visa", order).await.expect(201);

    harness.cancel(order).await;
    wait_until("the charge got a refund id", || async {
        harness.charges(order).await[0].2.is_some()
    })
    .await;
    let refunds = harness.stripe.standin.refunds();
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        (refunds[0].amount, &refunds[0].charge),
        (1500, harness.charges(order).await[0].1.as_ref().unwrap())
    );
    assert_eq!(
        harness.order_status(order).await.as_deref(),
        Some("cancelled")
    );

    // A redelivered or repeated cancellation refunds nothing more, once handled.
    harness.cancel(order).await;
    settled(
        &harness.nats.url,
        payments::Config::NAME,
        &[Subject::OrderCancelled],
    )
    .await;
    wait_until("no refund to be due any more", || async {
        let due: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM charges WHERE refund_due_at IS NOT NULL AND stripe_refund_id IS NULL",
        )
        .fetch_one(&harness.pool)
        .await
        .unwrap();
        due == 0
    })
    .await;
    assert_eq!(harness.stripe.standin.refunds().len(), 1);
}

/// The order is cancelled while its charge is on its way to Stripe: when the charge
/// comes back it is refunded, not kept.
#[tokio::test]
async fn a_charge_that_completes_after_the_cancellation_is_refunded() {
    let harness = Harness::start().await;
    let buyer = Buyer::random();
    let order = harness.order(&buyer, 800).await;
    let stripe = Stripe::new(&stripe_config(
        &harness.stripe.base(),
        Duration::from_secs(5),
    ))
    .unwrap();
    let payments = Payments::new(harness.pool.clone(), stripe);

    let charge = payments.begin(buyer.id, order, "tok_visa").await.unwrap();
    harness.cancel(order).await;
    harness.wait_for_order_status(order, "cancelled").await;
    let settled = payments.settle(&charge).await.unwrap();
    assert_eq!(
        settled,
        Settled::Refunded {
            reason: Refusal::Cancelled
        }
    );

    let charges = harness.charges(order).await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].0, "completed");
    assert!(charges[0].2.is_some(), "refund recorded");
    assert_eq!(harness.stripe.standin.refunds().len(), 1);
    assert!(harness.stripe.standin.charges()[0].refunded);
}

/// Stripe is down when the cancellation arrives: the order is still cancelled at once,
/// and the refund follows as soon as Stripe answers again.
#[tokio::test]
async fn a_refund_that_fails_is_retried_by_the_reconciler() {
    let harness = Harness::with_reconcile_after(Duration::from_secs(1)).await;
    let buyer = Buyer::random();
    let order = harness.order(&buyer, 1200).await;
    harness.pay(&buyer, "tok_visa", order).await.expect(201);

    harness.stripe.fault(stripe_standin::FaultMode::Fail, 3);
    harness.cancel(order).await;
    harness.wait_for_order_status(order, "cancelled").await;
    wait_until("the reconciler refunded the charge", || async {
        harness.charges(order).await[0].2.is_some()
    })
    .await;
    assert_eq!(harness.stripe.standin.refunds().len(), 1);
    assert!(harness.stripe.standin.charges()[0].refunded);
}
