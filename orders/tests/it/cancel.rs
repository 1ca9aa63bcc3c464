use std::time::Duration;

use common::events::{OrderCancelled, PaymentCreated, Subject};
use testkit::{EventProbe, new_user_cookie};
use uuid::Uuid;

use testkit::{WAIT, id_of};

use crate::{Orders, path};

#[tokio::test]
async fn cancelling_marks_the_order_cancelled_and_publishes_once() {
    let orders = Orders::start().await;
    let mut probe = EventProbe::subscribe(&orders.nats.url, Subject::OrderCancelled).await;
    let ticket = orders.ticket(100).await;
    let (cookie, _) = new_user_cookie();
    let order = orders.order(&cookie, ticket.id).await.expect(201);

    let response = orders.server.delete(&path(&order), Some(&cookie)).await;
    assert_eq!(response.expect(204), serde_json::Value::Null, "no body");
    let cancelled = orders.show(&cookie, &order).await;
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["version"].as_i64()),
        (Some("cancelled"), Some(1))
    );
    let event = probe
        .next::<OrderCancelled>(WAIT)
        .await
        .expect("order.cancelled")
        .event;
    assert_eq!(
        (event.id, event.version, event.ticket.id),
        (id_of(&order), 1, ticket.id)
    );

    // Again: still 204, nothing new.
    orders
        .server
        .delete(&path(&order), Some(&cookie))
        .await
        .expect(204);
    assert_eq!(orders.show(&cookie, &order).await["version"], 1);
    probe
        .assert_quiet::<OrderCancelled>(Duration::from_millis(1500))
        .await;
}

#[tokio::test]
async fn cancelling_checks_session_existence_owner_and_completion() {
    let orders = Orders::start().await;
    let ticket = orders.ticket(100).await;
    let (alice, _) = new_user_cookie();
    let (bob, _) = new_user_cookie();
    let order = orders.order(&alice, ticket.id).await.expect(201);

    orders
        .server
        .delete(&path(&order), None)
        .await
        .assert_error(401, "Not authorized");
    orders
        .server
        .delete(&format!("/api/orders/{}", Uuid::new_v4()), Some(&alice))
        .await
        .assert_error(404, "Not Found");
    orders
        .server
        .delete("/api/orders/nope", Some(&alice))
        .await
        .assert_error(404, "Not Found");
    orders
        .server
        .delete(&path(&order), Some(&bob))
        .await
        .assert_error(401, "Not authorized");

    orders
        .publish(&PaymentCreated {
            id: Uuid::new_v4(),
            order_id: id_of(&order),
            stripe_id: "ch_1".into(),
        })
        .await;
    orders.wait_for_status(&alice, &order, "complete").await;
    orders
        .server
        .delete(&path(&order), Some(&alice))
        .await
        .assert_error(400, "Cannot cancel a completed order");
    assert_eq!(orders.show(&alice, &order).await["status"], "complete");
}
