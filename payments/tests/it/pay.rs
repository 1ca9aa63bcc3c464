use common::events::{PaymentCreated, Subject};
use futures::future::join_all;
use serde_json::json;
use stripe_standin::FaultMode;
use testkit::EventProbe;
use uuid::Uuid;

use testkit::WAIT;

use crate::{Buyer, Harness};

#[tokio::test]
async fn paying_requires_a_session_a_token_and_an_order_id() {
    let harness = Harness::start().await;
    let buyer = Buyer::random();
    let body = json!({"token": "tok_visa", "orderId": Uuid::new_v4()});
    harness
        .server
        .post("/api/payments", None, body)
        .await
        .assert_error(401, "Not authorized");
    let token_error = json!({"message": "Token is required", "field": "token"});
    let order_error = json!({"message": "Order ID is required", "field": "orderId"});
    let post = |body| {
        harness
            .server
            .post("/api/payments", Some(&buyer.cookie), body)
    };
    assert_eq!(
        post(json!({"orderId": Uuid::new_v4()})).await.errors(400),
        vec![token_error.clone()]
    );
    assert_eq!(
        post(json!({"token": "  ", "orderId": Uuid::new_v4()}))
            .await
            .errors(400),
        vec![token_error.clone()]
    );
    // A NUL byte (PostgreSQL refuses it: it was a 500), spaces or non-ASCII: not a
    // provider's token.
    for token in ["tok\u{0}visa", "tok visa", "tök_visa"] {
        assert_eq!(
            post(json!({"token": token, "orderId": Uuid::new_v4()}))
                .await
                .errors(400),
            vec![json!({"message": "Token is not a payment token", "field": "token"})],
            "{token:?}"
        );
    }
    assert_eq!(
        post(json!({"token": "tok_visa"})).await.errors(400),
        vec![order_error.clone()]
    );
    assert_eq!(
        post(json!({"token": "tok_visa", "orderId": "nope"}))
            .await
            .errors(400),
        vec![order_error.clone()]
    );
    assert_eq!(
        post(json!({})).await.errors(400),
        vec![token_error, order_error]
    );
}

#[tokio::test]
async fn paying_checks_the_order_exists_belongs_to_the_caller_and_is_not_cancelled() {
    let harness = Harness::start().await;
    let (buyer, stranger) = (Buyer::random(), Buyer::random());
    harness
        .pay(&buyer, "tok_visa", Uuid::new_v4())
        .await
        .assert_error(404, "Not Found");
    let order = harness.order(&buyer, 1000).await;
    harness
        .pay(&stranger, "tok_visa", order)
        .await
        .assert_error(401, "Not authorized");
    harness.cancel(order).await;
    harness.wait_for_order_status(order, "cancelled").await;
    harness
        .pay(&buyer, "tok_visa", order)
        .await
        .assert_error(400, "Cannot pay for an cancelled order");
    assert!(
        harness.stripe.standin.charges().is_empty(),
        "nothing was charged"
    );
}

#[tokio::test]
async fn a_payment_charges_the_price_in_cents_once_and_publishes_payment_created() {
    let harness = Harness::start().await;
    let mut probe = EventProbe::subscribe(&harness.nats.url, Subject::PaymentCreated).await;
    let buyer = Buyer::random();
    let order = harness.order(&buyer, 1250).await;

    let payment = harness.pay(&buyer, "tok_visa", order).await.expect(201);
    let payment_id = Uuid::parse_str(payment["id"].as_str().unwrap()).unwrap();
    assert_eq!(
        payment.as_object().unwrap().len(),
        1,
        "only the id: {payment}"
    );

    let charges = harness.stripe.succeeded();
    assert_eq!(charges.len(), 1);
    assert_eq!(
        (
            charges[0].amount,
            charges[0].currency.as_str(),
            charges[0].source.as_str()
        ),
        (1250, "usd", "tok_visa")
    );
    let recorded = harness.charges(order).await;
    assert_eq!(
        recorded,
        vec![("completed".into(), Some(charges[0].id.clone()), None, 1250)]
    );

    let event = probe
        .next::<PaymentCreated>(WAIT)
        .await
        .expect("payment.created")
        .event;
    assert_eq!(
        event,
        PaymentCreated {
            id: payment_id,
            order_id: order,
            stripe_id: charges[0].id.clone()
        }
    );

    harness
        .pay(&buyer, "tok_visa", order)
        .await
        .assert_error(400, "Order has already been paid");
    harness
        .pay(&buyer, "tok_mastercard", order)
        .await
        .assert_error(400, "Order has already been paid");
    assert_eq!(
        harness.stripe.standin.charges().len(),
        1,
        "never charged again"
    );
}

#[tokio::test]
async fn a_declined_card_is_recorded_failed_and_the_order_stays_payable() {
    let harness = Harness::start().await;
    let buyer = Buyer::random();
    let order = harness.order(&buyer, 2000).await;
    harness
        .pay(&buyer, "tok_chargeDeclined", order)
        .await
        .assert_error(400, "Your card was declined.");
    assert_eq!(harness.charges(order).await[0].0, "failed");
    // The same declined request again gets the same answer without a new attempt.
    harness
        .pay(&buyer, "tok_chargeDeclined", order)
        .await
        .assert_error(400, "Your card was declined.");
    harness
        .pay(&buyer, "tok_unknown", order)
        .await
        .assert_error(400, "No such token: 'tok_unknown'");

    harness.pay(&buyer, "tok_visa", order).await.expect(201);
    let statuses: Vec<String> = harness
        .charges(order)
        .await
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(statuses, ["failed", "failed", "completed"]);
    assert_eq!(harness.stripe.succeeded().len(), 1);
}

#[tokio::test]
async fn an_unavailable_provider_is_a_clear_502_and_the_retry_charges_once() {
    let harness = Harness::start().await;
    let buyer = Buyer::random();
    let order = harness.order(&buyer, 500).await;
    let unavailable = "The payment provider is unavailable; please try again";

    harness.stripe.fault(FaultMode::Fail, 1);
    harness
        .pay(&buyer, "tok_visa", order)
        .await
        .assert_error(502, unavailable);
    harness.stripe.fault(FaultMode::Hang, 1);
    harness
        .pay(&buyer, "tok_visa", order)
        .await
        .assert_error(502, unavailable); // the client timeout (1 s)
    assert_eq!(
        harness.charges(order).await[0].0,
        "created",
        "outcome unknown, attempt kept"
    );
    assert!(harness.stripe.standin.charges().is_empty());

    harness.pay(&buyer, "tok_visa", order).await.expect(201);
    assert_eq!(harness.stripe.succeeded().len(), 1);
}

/// The same request sent many times at once charges once.
#[tokio::test]
async fn concurrent_identical_payments_charge_once() {
    let harness = Harness::start().await;
    let mut probe = EventProbe::subscribe(&harness.nats.url, Subject::PaymentCreated).await;
    for round in 0..5 {
        let buyer = Buyer::random();
        let order = harness.order(&buyer, 700).await;
        let responses = join_all((0..10).map(|_| harness.pay(&buyer, "tok_visa", order))).await;
        let mut ids = std::collections::HashSet::new();
        for response in responses {
            match response.status {
                201 => {
                    ids.insert(response.body["id"].clone());
                }
                400 => response.assert_error(400, "Order has already been paid"),
                other => panic!("round {round}: {other} {}", response.body),
            }
        }
        assert_eq!(ids.len(), 1, "round {round}: one payment id");
        probe
            .next::<PaymentCreated>(WAIT)
            .await
            .expect("one payment.created");
    }
    assert_eq!(harness.stripe.succeeded().len(), 5, "one charge per order");
    probe
        .assert_quiet::<PaymentCreated>(std::time::Duration::from_millis(1000))
        .await;
}

/// Two different cards at once for one order: one is kept, any other is refunded.
#[tokio::test]
async fn concurrent_payments_with_different_cards_keep_one_charge() {
    let harness = Harness::start().await;
    for _ in 0..5 {
        let buyer = Buyer::random();
        let order = harness.order(&buyer, 900).await;
        let (a, b) = tokio::join!(
            harness.pay(&buyer, "tok_visa", order),
            harness.pay(&buyer, "tok_mastercard", order)
        );
        let created = [a.status, b.status].iter().filter(|&&s| s == 201).count();
        assert_eq!(
            created, 1,
            "{} {} / {} {}",
            a.status, a.body, b.status, b.body
        );
        let charges = harness.charges(order).await;
        let kept = charges
            .iter()
            .filter(|c| c.0 == "completed" && c.2.is_none())
            .count();
        assert_eq!(kept, 1, "{charges:?}");
        assert!(charges.iter().all(|c| c.0 == "completed"), "{charges:?}");
    }
    let standin = &harness.stripe.standin;
    let refunded = standin.charges().iter().filter(|c| c.refunded).count();
    assert_eq!(
        standin.charges().len() - refunded,
        5,
        "exactly one kept charge per order at the provider"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_route() {
    let harness = Harness::start().await;
    let doc = harness
        .server
        .get("/api/payments/openapi.json", None)
        .await
        .expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/payments"]["post"].is_object());
}
