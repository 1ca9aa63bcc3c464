use std::time::Duration;

use common::events::{ExpirationComplete, OrderCancelled, PaymentCreated, Subject};
use testkit::{EventProbe, new_user_cookie};
use uuid::Uuid;

use testkit::{WAIT, id_of};

use crate::{Orders, path};

#[tokio::test]
async fn expiration_cancels_a_pending_order_once() {
    let orders = Orders::start().await;
    let mut probe = EventProbe::subscribe(&orders.nats.url, Subject::OrderCancelled).await;
    let ticket = orders.ticket(100).await;
    let (cookie, _) = new_user_cookie();
    let order = orders.order(&cookie, ticket.id).await.expect(201);

    let expired = ExpirationComplete {
        order_id: id_of(&order),
    };
    orders.publish(&expired).await;
    orders.publish(&expired).await; // a second expiry (another event id) changes nothing
    let cancelled = orders.wait_for_status(&cookie, &order, "cancelled").await;
    assert_eq!(cancelled["version"], 1);
    let event = probe.next::<OrderCancelled>(WAIT).await.unwrap().event;
    assert_eq!((event.id, event.version), (id_of(&order), 1));
    probe
        .assert_quiet::<OrderCancelled>(Duration::from_millis(1500))
        .await;

    // The ticket can be ordered again.
    orders.order(&cookie, ticket.id).await.expect(201);
}

#[tokio::test]
async fn expiration_leaves_a_complete_order_alone() {
    let orders = Orders::start().await;
    let mut probe = EventProbe::subscribe(&orders.nats.url, Subject::OrderCancelled).await;
    let ticket = orders.ticket(100).await;
    let (cookie, _) = new_user_cookie();
    let order = orders.order(&cookie, ticket.id).await.expect(201);
    orders
        .publish(&PaymentCreated {
            id: Uuid::new_v4(),
            order_id: id_of(&order),
            stripe_id: "ch_1".into(),
        })
        .await;
    let complete = orders.wait_for_status(&cookie, &order, "complete").await;
    assert_eq!(complete["version"], 1);

    orders
        .publish(&ExpirationComplete {
            order_id: id_of(&order),
        })
        .await;
    probe
        .assert_quiet::<OrderCancelled>(Duration::from_millis(1500))
        .await;
    assert_eq!(orders.show(&cookie, &order).await, complete);
}

#[tokio::test]
async fn a_payment_for_a_cancelled_order_leaves_it_cancelled() {
    let orders = Orders::start().await;
    let ticket = orders.ticket(100).await;
    let (cookie, _) = new_user_cookie();
    let order = orders.order(&cookie, ticket.id).await.expect(201);
    orders
        .server
        .delete(&path(&order), Some(&cookie))
        .await
        .expect(204);

    orders
        .publish(&PaymentCreated {
            id: Uuid::new_v4(),
            order_id: id_of(&order),
            stripe_id: "ch_1".into(),
        })
        .await;
    // Wait for the payment to be handled, then check nothing changed.
    testkit::wait_until("the payment to be handled", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM processed_events WHERE subject = 'payment.created'",
        )
        .fetch_one(&orders.pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    let current = orders.show(&cookie, &order).await;
    assert_eq!(
        (current["status"].as_str(), current["version"].as_i64()),
        (Some("cancelled"), Some(1))
    );
}
