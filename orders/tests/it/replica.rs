use common::events::Subject;
use kit::Service as _;
use serde_json::json;
use testkit::bus::{delivered_again, settled};
use testkit::new_user_cookie;

use crate::{Orders, path, updated};

#[tokio::test]
async fn versions_apply_in_order_even_when_delivered_out_of_order() {
    let orders = Orders::start().await;
    let ticket = orders.ticket(1000).await;
    // Version 2 arrives before version 1.
    orders
        .publish(&updated(&ticket, 2, "second edit", 3000))
        .await;
    delivered_again(
        &orders.nats.url,
        orders::Config::NAME,
        Subject::TicketUpdated,
    )
    .await;
    assert_eq!(
        orders.replica(ticket.id).await,
        Some((0, "concert".into(), 1000)),
        "v2 waits for v1"
    );
    orders
        .publish(&updated(&ticket, 1, "first edit", 2000))
        .await;
    orders.wait_for_replica(ticket.id, 2).await;
    assert_eq!(
        orders.replica(ticket.id).await,
        Some((2, "second edit".into(), 3000))
    );

    // Old and duplicate versions change nothing.
    orders
        .publish(&updated(&ticket, 1, "first edit", 2000))
        .await;
    orders.publish(&updated(&ticket, 2, "replayed", 9999)).await;
    settled(
        &orders.nats.url,
        orders::Config::NAME,
        &[Subject::TicketUpdated],
    )
    .await;
    assert_eq!(
        orders.replica(ticket.id).await,
        Some((2, "second edit".into(), 3000))
    );
}

#[tokio::test]
async fn an_update_before_the_creation_waits_for_it() {
    let orders = Orders::start().await;
    let ticket = common::events::TicketCreated {
        id: uuid::Uuid::new_v4(),
        version: 0,
        title: "late".into(),
        price: common::money::Price::from_cents(100).unwrap(),
        user_id: uuid::Uuid::new_v4(),
    };
    orders.publish(&updated(&ticket, 1, "edited", 200)).await;
    delivered_again(
        &orders.nats.url,
        orders::Config::NAME,
        Subject::TicketUpdated,
    )
    .await;
    assert_eq!(orders.replica(ticket.id).await, None);
    orders.publish(&ticket).await;
    orders.wait_for_replica(ticket.id, 1).await;
    assert_eq!(
        orders.replica(ticket.id).await,
        Some((1, "edited".into(), 200))
    );
}

#[tokio::test]
async fn an_order_keeps_the_price_it_was_created_with() {
    let orders = Orders::start().await;
    let ticket = orders.ticket(1000).await;
    let (cookie, _) = new_user_cookie();
    let order = orders.order(&cookie, ticket.id).await.expect(201);
    orders
        .server
        .delete(&path(&order), Some(&cookie))
        .await
        .expect(204);
    orders.publish(&updated(&ticket, 1, "repriced", 4550)).await;
    orders.wait_for_replica(ticket.id, 1).await;

    assert_eq!(
        orders.show(&cookie, &order).await["ticket"],
        json!({"id": ticket.id, "title": "concert", "price": 10, "version": 0})
    );
    let again = orders.order(&cookie, ticket.id).await.expect(201);
    assert_eq!(
        again["ticket"],
        json!({"id": ticket.id, "title": "repriced", "price": 45.5, "version": 1})
    );
}

/// The one-statement update of the replica (`replace_if_next`) racing itself: six
/// versions of each of 20 tickets published back to back, so that the deliveries of
/// one ticket's versions are handled at the same time (`EVENT_CONCURRENCY`) and either
/// wait on each other's row lock or find the version not yet there; then every version
/// again (duplicates, newest first). Each replica ends at the last version with that
/// version's values, which only versions applied one after another in order can give.
#[tokio::test]
async fn versions_of_one_ticket_handled_at_once_apply_in_order() {
    const TICKETS: usize = 20;
    const VERSIONS: i64 = 6;
    let orders = Orders::start().await;
    let mut tickets = Vec::new();
    for _ in 0..TICKETS {
        tickets.push(orders.ticket(100).await);
    }
    for version in 1..=VERSIONS {
        for ticket in &tickets {
            let event = updated(ticket, version, &format!("v{version}"), 100 + version);
            orders.publish(&event).await;
        }
    }
    for version in (1..=VERSIONS).rev() {
        for ticket in &tickets {
            let event = updated(ticket, version, "replayed", 9999);
            orders.publish(&event).await;
        }
    }
    for ticket in &tickets {
        orders.wait_for_replica(ticket.id, VERSIONS).await;
    }
    settled(
        &orders.nats.url,
        orders::Config::NAME,
        &[Subject::TicketUpdated],
    )
    .await;
    for ticket in &tickets {
        assert_eq!(
            orders.replica(ticket.id).await,
            Some((VERSIONS, format!("v{VERSIONS}"), 100 + VERSIONS)),
            "ticket {}",
            ticket.id
        );
    }
}
