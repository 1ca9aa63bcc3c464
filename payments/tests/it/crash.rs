use std::time::Duration;

use common::events::{PaymentCreated, Subject};
use serde_json::json;
use stripe_standin::FaultMode;
use testkit::{EventProbe, JWT_KEY, ServiceProcess, WAIT, wait_until};

use crate::{Buyer, Harness, STRIPE_KEY};

/// The payments binary as a real process, on the harness's database, NATS and stand-in.
fn spawn(harness: &Harness, reconcile_after: &str) -> ServiceProcess {
    let base = harness.stripe.base();
    let env = [
        ("DATABASE_URL", harness.database.url.as_str()),
        ("NATS_URL", harness.nats.url.as_str()),
        ("JWT_KEY", JWT_KEY),
        ("STRIPE_KEY", STRIPE_KEY),
        ("STRIPE_API_BASE", base.as_str()),
        ("STRIPE_TIMEOUT_SECONDS", "30"),
        ("CHARGE_RECONCILE_AFTER_SECONDS", reconcile_after),
        ("RUST_LOG", "warn"),
    ];
    ServiceProcess::start(env!("CARGO_BIN_EXE_payments"), &env)
}

async fn pay(
    process: &ServiceProcess,
    buyer_cookie: &str,
    order: uuid::Uuid,
) -> reqwest::Result<reqwest::Response> {
    testkit::http_client()
        .post(process.url("/api/payments"))
        .header("cookie", buyer_cookie)
        .json(&json!({"token": "tok_visa", "orderId": order}))
        .send()
        .await
}

/// A payments process charges at Stripe, then dies (SIGKILL) before recording it.
/// (The harness's in-process instance keeps running beside it, as another replica.)
async fn charge_then_kill(
    harness: &Harness,
    buyer: &Buyer,
    order: uuid::Uuid,
    reconcile_after: &str,
) -> ServiceProcess {
    let mut process = spawn(harness, reconcile_after);
    process.ready().await;
    harness.stripe.fault(FaultMode::HangAfterCharge, 1);
    let request = tokio::spawn({
        let (url, cookie) = (process.url("/api/payments"), buyer.cookie.clone());
        async move {
            testkit::http_client()
                .post(url)
                .header("cookie", cookie)
                .json(&json!({"token": "tok_visa", "orderId": order}))
                .send()
                .await
        }
    });
    wait_until("the stand-in charged", || async {
        harness.stripe.standin.charges().len() == 1
    })
    .await;
    process.kill(); // SIGKILL between the Stripe call and the commit
    assert!(
        request.await.unwrap().is_err(),
        "the client saw the connection die"
    );
    assert_eq!(
        harness.charges(order).await[0].0,
        "created",
        "nothing recorded after the charge"
    );
    process
}

#[tokio::test]
async fn a_retry_after_a_crash_between_stripe_and_commit_does_not_charge_twice() {
    let harness = Harness::start().await;
    let buyer = Buyer::random();
    let order = harness.order(&buyer, 4200).await;
    let mut probe = EventProbe::subscribe(&harness.nats.url, Subject::PaymentCreated).await;
    let mut process = charge_then_kill(&harness, &buyer, order, "3600").await;

    process.restart();
    process.ready().await;
    let response = pay(&process, &buyer.cookie, order).await.unwrap();
    assert_eq!(response.status(), 201);
    // Let the relay finish (a kill between its publish and its commit would make it
    // publish again: harmless, JetStream drops the copy, but the probe would see it).
    wait_until("the outbox to be flushed", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
            .fetch_one(&harness.pool)
            .await
            .unwrap()
            == 0
    })
    .await;
    process.kill();

    assert_eq!(
        harness.stripe.standin.charges().len(),
        1,
        "charged exactly once"
    );
    let charges = harness.charges(order).await;
    assert_eq!(
        (charges[0].0.as_str(), charges[0].1.as_ref()),
        ("completed", Some(&harness.stripe.standin.charges()[0].id))
    );
    let event = probe
        .next::<PaymentCreated>(WAIT)
        .await
        .expect("payment.created")
        .event;
    assert_eq!(event.order_id, order);
    probe
        .assert_quiet::<PaymentCreated>(Duration::from_millis(1000))
        .await;
}

#[tokio::test]
async fn the_reconciler_settles_a_charge_interrupted_by_a_crash() {
    let harness = Harness::start().await;
    let buyer = Buyer::random();
    let order = harness.order(&buyer, 4200).await;
    let mut probe = EventProbe::subscribe(&harness.nats.url, Subject::PaymentCreated).await;
    let mut process = charge_then_kill(&harness, &buyer, order, "1").await;

    // Nobody retries; the restarted service settles the attempt on its own.
    process.restart();
    let event = probe
        .next::<PaymentCreated>(WAIT)
        .await
        .expect("payment.created from the reconciler")
        .event;
    process.kill();
    assert_eq!(event.order_id, order);
    assert_eq!(
        harness.stripe.standin.charges().len(),
        1,
        "charged exactly once"
    );
    assert_eq!(harness.charges(order).await[0].0, "completed");
}
