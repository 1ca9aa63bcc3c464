//! The stand-in behaves like the Stripe endpoints it replaces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::{Body, to_bytes};
use axum::http::Request;
use serde_json::Value;
use stripe_standin::{Fault, FaultMode, StandIn};
use tower::ServiceExt;

async fn post(
    standin: &StandIn,
    path: &str,
    key: &str,
    idempotency: Option<&str>,
    form: &str,
) -> (u16, Value) {
    let mut request = Request::post(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(idempotency) = idempotency {
        request = request.header("idempotency-key", idempotency);
    }
    let response = standin
        .router()
        .oneshot(request.body(Body::from(form.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn charges_need_the_key_and_follow_the_test_tokens() {
    let standin = StandIn::new(Some("sk_test_right".into()));
    let form = "amount=1250&currency=usd&source=tok_visa";
    let (status, body) = post(&standin, "/v1/charges", "sk_test_wrong", None, form).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (401, Some("invalid_request_error"))
    );

    let (status, charge) = post(&standin, "/v1/charges", "sk_test_right", None, form).await;
    assert_eq!(status, 200);
    assert!(charge["id"].as_str().unwrap().starts_with("ch_"));
    assert_eq!(
        (charge["amount"].as_i64(), charge["status"].as_str()),
        (Some(1250), Some("succeeded"))
    );

    let declined = "amount=1250&currency=usd&source=tok_chargeDeclined";
    let (status, body) = post(&standin, "/v1/charges", "sk_test_right", None, declined).await;
    assert_eq!(status, 402);
    assert_eq!(body["error"]["code"], "card_declined");
    assert_eq!(body["error"]["message"], "Your card was declined.");

    let (status, body) = post(
        &standin,
        "/v1/charges",
        "sk_test_right",
        None,
        "currency=usd&source=tok_visa",
    )
    .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("amount"))
    );
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_never_charges_twice() {
    let standin = StandIn::new(None);
    let form = "amount=500&currency=usd&source=tok_visa";
    let first = post(&standin, "/v1/charges", "sk_test_x", Some("k1"), form).await;
    let again = post(&standin, "/v1/charges", "sk_test_x", Some("k1"), form).await;
    assert_eq!(first, again);
    assert_eq!(standin.charges().len(), 1);
    let (status, body) = post(
        &standin,
        "/v1/charges",
        "sk_test_x",
        Some("k1"),
        "amount=600&currency=usd&source=tok_visa",
    )
    .await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (400, Some("idempotency_error"))
    );

    let concurrent = futures::future::join_all(
        (0..10).map(|_| post(&standin, "/v1/charges", "sk_test_x", Some("k2"), form)),
    )
    .await;
    assert!(
        concurrent.windows(2).all(|w| w[0] == w[1]),
        "one answer for one key"
    );
    assert_eq!(standin.charges().len(), 2);

    let charge_id = first.1["id"].as_str().unwrap().to_owned();
    let refund_form = format!("charge={charge_id}");
    let refund = post(
        &standin,
        "/v1/refunds",
        "sk_test_x",
        Some("r1"),
        &refund_form,
    )
    .await;
    assert_eq!(refund.0, 200);
    assert_eq!(
        post(
            &standin,
            "/v1/refunds",
            "sk_test_x",
            Some("r1"),
            &refund_form
        )
        .await,
        refund
    );
    let (status, body) = post(
        &standin,
        "/v1/refunds",
        "sk_test_x",
        Some("r2"),
        &refund_form,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("charge_already_refunded"))
    );
    assert_eq!(standin.refunds().len(), 1);
}

#[tokio::test]
async fn a_failure_fault_does_nothing_and_is_not_remembered() {
    let standin = StandIn::new(None);
    standin.set_fault(Fault {
        mode: FaultMode::Fail,
        times: 1,
    });
    let form = "amount=500&currency=usd&source=tok_visa";
    assert_eq!(
        post(&standin, "/v1/charges", "sk_test_x", Some("k"), form)
            .await
            .0,
        503
    );
    assert!(standin.charges().is_empty());
    assert_eq!(
        post(&standin, "/v1/charges", "sk_test_x", Some("k"), form)
            .await
            .0,
        200
    );
    assert_eq!(standin.charges().len(), 1);
}
