use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::events::{PaymentCreated, Subject};
use common::testing::{EventProbe, JWT_KEY, eventually};
use serde_json::json;
use stripe_standin::FaultMode;

use crate::{Buyer, Harness, STRIPE_KEY, WAIT};

/// The payments binary as a real process, on the harness's database, NATS and stand-in.
fn spawn(harness: &Harness, port: u16, reconcile_after: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_payments"))
        .env_clear()
        .env("PORT", port.to_string())
        .env("DATABASE_URL", &harness.database.url)
        .env("NATS_URL", &harness.nats.url)
        .env("JWT_KEY", JWT_KEY)
        .env("STRIPE_KEY", STRIPE_KEY)
        .env("STRIPE_API_BASE", harness.stripe.base())
        .env("STRIPE_TIMEOUT_SECONDS", "30")
        .env("CHARGE_RECONCILE_AFTER_SECONDS", reconcile_after)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_ready(port: u16) {
    let client = common::testing::http_client();
    let ready = eventually(WAIT, || async {
        client.get(format!("http://127.0.0.1:{port}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready, "payments process never became ready");
}

async fn pay(port: u16, buyer: &Buyer, order: uuid::Uuid) -> reqwest::Result<reqwest::Response> {
    common::testing::http_client()
        .post(format!("http://127.0.0.1:{port}/api/payments"))
        .header("cookie", &buyer.cookie)
        .json(&json!({"token": "tok_visa", "orderId": order}))
        .send()
        .await
}

/// A payments process charges at Stripe, then dies (SIGKILL) before recording it.
/// (The harness's in-process instance keeps running beside it, as another replica.)
async fn charge_then_kill(harness: &Harness, buyer: &Buyer, order: uuid::Uuid, port: u16) {
    let mut process = spawn(harness, port, "3600");
    wait_ready(port).await;
    harness.stripe.fault(FaultMode::HangAfterCharge, 1);
    let request = tokio::spawn({
        let (cookie, id) = (buyer.cookie.clone(), buyer.id);
        async move { pay(port, &Buyer { id, cookie }, order).await }
    });
    let charged = eventually(WAIT, || async { harness.stripe.standin.charges().len() == 1 }).await;
    assert!(charged, "the stand-in charged");
    process.kill().unwrap(); // SIGKILL between the Stripe call and the commit
    process.wait().unwrap();
    assert!(request.await.unwrap().is_err(), "the client saw the connection die");
    assert_eq!(harness.charges(order).await[0].0, "created", "nothing recorded after the charge");
}

#[tokio::test]
async fn a_retry_after_a_crash_between_stripe_and_commit_does_not_charge_twice() {
    let harness = Harness::start().await;
    let buyer = Buyer::random();
    let order = harness.order(&buyer, 4200).await;
    let mut probe = EventProbe::subscribe(&harness.nats.url, Subject::PaymentCreated).await;
    let port = free_port();
    charge_then_kill(&harness, &buyer, order, port).await;

    let mut restarted = spawn(&harness, port, "3600");
    wait_ready(port).await;
    let response = pay(port, &buyer, order).await.unwrap();
    assert_eq!(response.status(), 201);
    restarted.kill().unwrap();
    restarted.wait().unwrap();

    assert_eq!(harness.stripe.standin.charges().len(), 1, "charged exactly once");
    let charges = harness.charges(order).await;
    assert_eq!(
        (charges[0].0.as_str(), charges[0].1.as_ref()),
        ("completed", Some(&harness.stripe.standin.charges()[0].id))
    );
    let event = probe.next::<PaymentCreated>(WAIT).await.expect("payment.created").event;
    assert_eq!(event.order_id, order);
    probe.assert_quiet::<PaymentCreated>(Duration::from_millis(1000)).await;
}

#[tokio::test]
async fn the_reconciler_settles_a_charge_interrupted_by_a_crash() {
    let harness = Harness::start().await;
    let buyer = Buyer::random();
    let order = harness.order(&buyer, 4200).await;
    let mut probe = EventProbe::subscribe(&harness.nats.url, Subject::PaymentCreated).await;
    let port = free_port();
    charge_then_kill(&harness, &buyer, order, port).await;

    // Nobody retries; the restarted service settles the attempt on its own.
    let mut restarted = spawn(&harness, port, "1");
    let event = probe.next::<PaymentCreated>(WAIT).await.expect("payment.created from the reconciler").event;
    restarted.kill().unwrap();
    restarted.wait().unwrap();
    assert_eq!(event.order_id, order);
    assert_eq!(harness.stripe.standin.charges().len(), 1, "charged exactly once");
    assert_eq!(harness.charges(order).await[0].0, "completed");
}
