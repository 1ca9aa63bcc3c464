use std::time::Duration;

use e2e::{Options, Stack};
use serde_json::json;
use testkit::wait_until;

/// docs/api.md § Payments and Events: A sells, B buys and pays; the order completes and the ticket
/// stays sold.
#[tokio::test]
async fn a_ticket_is_bought_and_paid_for() {
    let stack = Stack::start(Options::default()).await;
    let seller = stack.sign_up("a@test.com").await;
    let buyer = stack.sign_up("b@test.com").await;
    let ticket = stack.create_ticket(&seller, "Concert", json!(25.5)).await;
    stack.wait_for_replica_version(&ticket["id"], 0).await;
    let order = stack.order(&buyer, &ticket["id"]).await.expect(201);

    // A declined card first: recorded, and the order is still payable.
    stack
        .pay(&buyer, &order["id"], "tok_chargeDeclined")
        .await
        .assert_error(400, "Your card was declined.");
    let payment = stack
        .pay(&buyer, &order["id"], "tok_visa")
        .await
        .expect(201);
    assert!(payment["id"].is_string());
    stack
        .wait_for_order_status(&buyer, &order["id"], "complete")
        .await;

    // The ticket stays reserved by the order and is no longer listed.
    let sold = stack.ticket(&ticket["id"]).await;
    assert_eq!(sold["orderId"], order["id"]);
    let listed = stack
        .tickets
        .server
        .get("/api/tickets", None)
        .await
        .expect(200);
    assert!(
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == ticket["id"])
    );
    // A completed order cannot be cancelled, nor paid again.
    let path = format!("/api/orders/{}", order["id"].as_str().unwrap());
    stack
        .orders
        .server
        .delete(&path, Some(&buyer))
        .await
        .assert_error(400, "Cannot cancel a completed order");
    stack
        .pay(&buyer, &order["id"], "tok_visa")
        .await
        .assert_error(400, "Order has already been paid");

    let succeeded: Vec<_> = stack
        .stripe
        .charges()
        .into_iter()
        .filter(|c| c.status == "succeeded")
        .collect();
    assert_eq!(succeeded.len(), 1, "exactly one charge");
    assert_eq!(succeeded[0].amount, 2550, "the price in cents");
    assert!(!succeeded[0].refunded);
}

/// With a 2-second window an unpaid order expires: the ticket is free and editable
/// again, and the order can no longer be paid.
#[tokio::test]
async fn an_unpaid_order_expires_and_frees_its_ticket() {
    let stack = Stack::start(Options {
        expiration_window: Duration::from_secs(2),
    })
    .await;
    let seller = stack.sign_up("a@test.com").await;
    let buyer = stack.sign_up("b@test.com").await;
    let ticket = stack.create_ticket(&seller, "Concert", json!(10)).await;
    stack.wait_for_replica_version(&ticket["id"], 0).await;
    let order = stack.order(&buyer, &ticket["id"]).await.expect(201);
    stack
        .wait_for_ticket(&ticket["id"], |t| t["orderId"] == order["id"])
        .await;

    stack
        .wait_for_order_status(&buyer, &order["id"], "cancelled")
        .await;
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(order["expiresAt"].as_str().unwrap()).unwrap();
    assert!(chrono::Utc::now() >= expires_at, "not before its time");

    stack
        .wait_for_ticket(&ticket["id"], |t| t["orderId"].is_null())
        .await;
    let listed = stack
        .tickets
        .server
        .get("/api/tickets", None)
        .await
        .expect(200);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == ticket["id"]),
        "listed again"
    );
    let path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    stack
        .tickets
        .server
        .put(
            &path,
            Some(&seller),
            json!({"title": "Concert", "price": 12}),
        )
        .await
        .expect(200);

    // Payments learns of the cancellation too; then paying is refused.
    let refused = wait_until("payments to refuse the expired order", || async {
        let response = stack.pay(&buyer, &order["id"], "tok_visa").await;
        (response.status == 400).then_some(response)
    })
    .await;
    refused.assert_error(400, "Cannot pay for an cancelled order");
    assert!(
        stack
            .stripe
            .charges()
            .iter()
            .all(|c| c.refunded || c.status != "succeeded"),
        "no money kept"
    );
}
