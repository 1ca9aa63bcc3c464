use common::events::{OrderCreated, OrderStatus, Subject};
use futures::future::join_all;
use serde_json::json;
use testkit::{EventProbe, new_user_cookie};
use uuid::Uuid;

use testkit::{WAIT, id_of};

use crate::Orders;

#[tokio::test]
async fn ordering_requires_a_session_and_a_ticket_id() {
    let orders = Orders::start().await;
    orders
        .server
        .post("/api/orders", None, json!({"ticketId": Uuid::new_v4()}))
        .await
        .assert_error(401, "Not authorized");
    let (cookie, _) = new_user_cookie();
    let error = vec![json!({"message": "TicketId must be provided", "field": "ticketId"})];
    for body in [
        json!({}),
        json!({"ticketId": ""}),
        json!({"ticketId": "not-an-id"}),
        json!({"ticketId": 42}),
    ] {
        assert_eq!(
            orders
                .server
                .post("/api/orders", Some(&cookie), body.clone())
                .await
                .errors(400),
            error,
            "{body}"
        );
    }
    orders
        .order(&cookie, Uuid::new_v4())
        .await
        .assert_error(404, "Not Found");
}

#[tokio::test]
async fn ordering_reserves_the_ticket_and_publishes_order_created() {
    let orders = Orders::start().await;
    let mut probe = EventProbe::subscribe(&orders.nats.url, Subject::OrderCreated).await;
    let ticket = orders.ticket(1250).await;
    let (cookie, user_id) = new_user_cookie();

    let before = chrono::Utc::now();
    let order = orders.order(&cookie, ticket.id).await.expect(201);
    assert_eq!(order["status"], "created");
    assert_eq!(order["userId"], json!(user_id));
    assert_eq!(order["version"], 0);
    assert_eq!(
        order["ticket"],
        json!({"id": ticket.id, "title": "concert", "price": 12.5, "version": 0})
    );
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(order["expiresAt"].as_str().unwrap()).unwrap();
    let window = expires_at.to_utc() - before;
    assert!(
        (899..=901).contains(&window.num_seconds()),
        "expires in 15 minutes: {window}"
    );
    assert!(order["expiresAt"].as_str().unwrap().ends_with('Z'));

    let event = probe
        .next::<OrderCreated>(WAIT)
        .await
        .expect("order.created")
        .event;
    assert_eq!(event.id, id_of(&order));
    assert_eq!(
        (event.version, event.status, event.user_id),
        (0, OrderStatus::Created, user_id)
    );
    assert_eq!(
        (event.ticket.id, event.ticket.price.cents()),
        (ticket.id, 1250)
    );
    assert_eq!(common::time::to_iso(&event.expires_at), order["expiresAt"]);

    let (other, _) = new_user_cookie();
    orders
        .order(&other, ticket.id)
        .await
        .assert_error(400, "Ticket is already reserved");
    orders
        .order(&cookie, ticket.id)
        .await
        .assert_error(400, "Ticket is already reserved");
}

#[tokio::test]
async fn a_cancelled_order_frees_the_ticket_for_a_new_order() {
    let orders = Orders::start().await;
    let ticket = orders.ticket(1000).await;
    let (cookie, _) = new_user_cookie();
    let first = orders.order(&cookie, ticket.id).await.expect(201);
    orders
        .server
        .delete(&crate::path(&first), Some(&cookie))
        .await
        .expect(204);
    let second = orders.order(&cookie, ticket.id).await.expect(201);
    assert_ne!(first["id"], second["id"]);
}

/// docs/api.md § Orders: of any number of concurrent orders for one ticket, exactly one wins.
#[tokio::test]
async fn concurrent_orders_for_one_ticket_reserve_it_exactly_once() {
    let orders = Orders::start().await;
    for round in 0..5 {
        let ticket = orders.ticket(500).await;
        let attempts = (0..50).map(|_| {
            let (cookie, _) = new_user_cookie();
            let orders = &orders;
            async move { orders.order(&cookie, ticket.id).await }
        });
        let mut created = 0;
        for response in join_all(attempts).await {
            match response.status {
                201 => created += 1,
                400 => response.assert_error(400, "Ticket is already reserved"),
                other => panic!(
                    "round {round}: unexpected status {other}: {}",
                    response.body
                ),
            }
        }
        assert_eq!(created, 1, "round {round}");
        let active: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE ticket_id = $1")
            .bind(ticket.id)
            .fetch_one(&orders.pool)
            .await
            .unwrap();
        assert_eq!(active, 1, "round {round}: no half-written orders");
    }
}
