use std::time::Duration;

use bus::stream::{self, StreamSettings};
use common::events::{
    OrderCancelled, OrderCreated, OrderCreatedTicket, OrderStatus, Subject, TicketRef,
    TicketUpdated,
};
use common::money::Price;
use kit::Service as _;
use serde_json::Value;
use testkit::bus::{
    apply_without_acknowledging, caught_up, delivered_again, settled, take_delivery,
};
use testkit::{EventProbe, WAIT, id_of, publish_raw, wait_until};
use uuid::Uuid;

use crate::{Tickets, start_server};

fn order_created(ticket: &Value, order_id: Uuid) -> OrderCreated {
    OrderCreated {
        id: order_id,
        version: 0,
        status: OrderStatus::Created,
        user_id: Uuid::new_v4(),
        expires_at: common::time::now(),
        ticket: OrderCreatedTicket {
            id: id_of(ticket),
            price: Price::from_cents(2000).unwrap(),
        },
    }
}

fn order_cancelled(ticket: &Value, order_id: Uuid) -> OrderCancelled {
    OrderCancelled {
        id: order_id,
        version: 1,
        ticket: TicketRef { id: id_of(ticket) },
    }
}

async fn wait_for_order_id(tickets: &Tickets, ticket: &Value, expected: Option<Uuid>) -> Value {
    let expected = expected.map_or(Value::Null, |id| Value::String(id.to_string()));
    let what = format!("the ticket's orderId to become {expected}");
    wait_until(&what, || async {
        Some(tickets.ticket(&ticket["id"]).await).filter(|current| current["orderId"] == expected)
    })
    .await
}

/// Reserves a ticket the way the orders service does: an `order.created` event.
pub async fn reserve(tickets: &Tickets, ticket: &Value, order_id: Uuid) -> Value {
    publish_raw(
        &tickets.nats.url,
        &Uuid::new_v4().to_string(),
        &order_created(ticket, order_id),
    )
    .await;
    wait_for_order_id(tickets, ticket, Some(order_id)).await
}

#[tokio::test]
async fn order_created_reserves_and_order_cancelled_frees_the_ticket() {
    let tickets = Tickets::start().await;
    let mut probe = EventProbe::subscribe(&tickets.nats.url, Subject::TicketUpdated).await;
    let (ticket, _) = tickets.new_ticket().await;
    let order_id = Uuid::new_v4();

    let reserved = reserve(&tickets, &ticket, order_id).await;
    assert_eq!(reserved["version"], 1);
    let event = probe.next::<TicketUpdated>(WAIT).await.unwrap().event;
    assert_eq!((event.version, event.order_id), (1, Some(order_id)));

    publish_raw(
        &tickets.nats.url,
        "cancel-1",
        &order_cancelled(&ticket, order_id),
    )
    .await;
    let freed = wait_for_order_id(&tickets, &ticket, None).await;
    assert_eq!(freed["version"], 2);
    let event = probe.next::<TicketUpdated>(WAIT).await.unwrap().event;
    assert_eq!((event.version, event.order_id), (2, None));
}

#[tokio::test]
async fn a_stale_cancellation_does_not_free_a_ticket_a_newer_order_holds() {
    let tickets = Tickets::start().await;
    let (ticket, _) = tickets.new_ticket().await;
    let (older, newer) = (Uuid::new_v4(), Uuid::new_v4());
    reserve(&tickets, &ticket, older).await;
    publish_raw(
        &tickets.nats.url,
        "cancel-older",
        &order_cancelled(&ticket, older),
    )
    .await;
    wait_for_order_id(&tickets, &ticket, None).await;
    reserve(&tickets, &ticket, newer).await;
    // The older order's cancellation again, late (republished under another id).
    publish_raw(
        &tickets.nats.url,
        "cancel-older-again",
        &order_cancelled(&ticket, older),
    )
    .await;
    settle(&tickets).await;

    let current = tickets.ticket(&ticket["id"]).await;
    assert_eq!(current["orderId"], Value::String(newer.to_string()));
    assert_eq!(current["version"], 3);
}

/// Waits until every event published so far has been handled by tickets.
async fn settle(tickets: &Tickets) {
    let subjects = [Subject::OrderCreated, Subject::OrderCancelled];
    settled(&tickets.nats.url, tickets::Config::NAME, &subjects).await;
}

/// The newer order's reservation is delivered before the older order's cancellation:
/// it waits for it, then applies.
#[tokio::test]
async fn a_reservation_waits_for_the_previous_orders_cancellation() {
    let tickets = Tickets::start().await;
    let (ticket, _) = tickets.new_ticket().await;
    let (older, newer) = (Uuid::new_v4(), Uuid::new_v4());
    reserve(&tickets, &ticket, older).await;
    publish_raw(
        &tickets.nats.url,
        "create-newer",
        &order_created(&ticket, newer),
    )
    .await;
    // Handled, and answered "not yet", at least once.
    delivered_again(
        &tickets.nats.url,
        tickets::Config::NAME,
        Subject::OrderCreated,
    )
    .await;
    assert_eq!(
        tickets.ticket(&ticket["id"]).await["orderId"],
        Value::String(older.to_string()),
        "still the older"
    );

    publish_raw(
        &tickets.nats.url,
        "cancel-older",
        &order_cancelled(&ticket, older),
    )
    .await;
    let current = wait_for_order_id(&tickets, &ticket, Some(newer)).await;
    assert_eq!(current["version"], 3, "reserved, freed, reserved");
}

/// An order's cancellation handled before its creation (the two travel on different
/// subjects): the late creation must not reserve the ticket for good.
#[tokio::test]
async fn a_creation_handled_after_its_own_cancellation_reserves_nothing() {
    let tickets = Tickets::start().await;
    let (ticket, _) = tickets.new_ticket().await;
    let order = Uuid::new_v4();
    publish_raw(
        &tickets.nats.url,
        "cancel-first",
        &order_cancelled(&ticket, order),
    )
    .await;
    settle(&tickets).await;
    publish_raw(
        &tickets.nats.url,
        "create-late",
        &order_created(&ticket, order),
    )
    .await;
    settle(&tickets).await;
    let current = tickets.ticket(&ticket["id"]).await;
    assert_eq!(
        (current["orderId"].clone(), current["version"].as_i64()),
        (Value::Null, Some(0))
    );
}

#[tokio::test]
async fn a_duplicated_order_created_reserves_once() {
    let tickets = Tickets::start().await;
    let (ticket, _) = tickets.new_ticket().await;
    let order_id = Uuid::new_v4();
    let event = order_created(&ticket, order_id);
    let tickets_ref = &tickets;
    // The same event under the same id, twice: JetStream drops the copy within its window;
    // a copy under a new id (a republished event) is recognised by the listener.
    publish_raw(&tickets_ref.nats.url, "same", &event).await;
    publish_raw(&tickets_ref.nats.url, "same", &event).await;
    publish_raw(&tickets_ref.nats.url, "republished", &event).await;
    wait_for_order_id(&tickets, &ticket, Some(order_id)).await;
    settle(&tickets).await;
    assert_eq!(tickets.ticket(&ticket["id"]).await["version"], 1);
}

/// The listener commits, then the process dies before acknowledging: the event is
/// redelivered to the restarted service, which recognises it and changes nothing.
#[tokio::test]
async fn a_listener_that_dies_between_commit_and_ack_has_its_effect_once() {
    let mut tickets = Tickets::start().await;
    let (ticket, _) = tickets.new_ticket().await;
    tickets
        .server
        .stop()
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let order_id = Uuid::new_v4();
    publish_raw(
        &tickets.nats.url,
        "crash-1",
        &order_created(&ticket, order_id),
    )
    .await;
    let nats = stream::connect(
        &tickets.nats.url,
        "crashing-instance",
        &StreamSettings::default(),
    )
    .await
    .unwrap();
    let subject = Subject::OrderCreated;
    let ack_wait = Duration::from_secs(1);
    let message = take_delivery(&nats, tickets::Config::NAME, subject, ack_wait).await;
    let pool = tickets.database.pool().await;
    let event: OrderCreated = serde_json::from_slice(&message.payload).unwrap();
    let listener = tickets::events::OrderCreatedListener;
    assert!(apply_without_acknowledging(&pool, &listener, "crash-1", event).await);
    drop(message); // never acknowledged

    let mut probe = EventProbe::subscribe(&tickets.nats.url, Subject::TicketUpdated).await;
    tickets.server = start_server(&tickets.database, &tickets.nats).await;
    wait_until("the redelivery to be acknowledged", || {
        caught_up(&nats, tickets::Config::NAME, subject)
    })
    .await;
    let current = tickets.ticket(&ticket["id"]).await;
    assert_eq!(
        (current["version"].as_i64(), current["orderId"].as_str()),
        (Some(1), Some(order_id.to_string().as_str()))
    );
    // The one ticket.updated of the committed change, published by the restarted relay.
    let event = probe.next::<TicketUpdated>(WAIT).await.unwrap().event;
    assert_eq!(event.version, 1);
    probe
        .assert_quiet::<TicketUpdated>(Duration::from_millis(1500))
        .await;
}

/// Reservations arrive together and are applied in batches (one transaction for many
/// tickets, each row locked until it commits) while every seller edits their ticket at
/// the same moment: per ticket, either the edit came first (200; the reservation then
/// makes version 2) or the reservation did (400, the ticket unchanged at version 1);
/// never both or neither, and each version is announced by exactly one event.
#[tokio::test]
async fn edits_racing_batched_reservations_either_win_or_are_refused_whole() {
    use std::collections::{BTreeMap, BTreeSet};
    const TICKETS: usize = 60;
    const ROUNDS: usize = 3;
    // Consumers that batch (EVENT_BATCH=32; the default is 1).
    let tickets = Tickets::start_with(|config| config.bus.batch = 32).await;
    let mut probe = EventProbe::subscribe(&tickets.nats.url, Subject::TicketUpdated).await;
    let mut expected: BTreeMap<(Uuid, i64), Option<Uuid>> = BTreeMap::new();
    let (mut won, mut refused) = (0, 0);
    for _ in 0..ROUNDS {
        let mut listed = Vec::new();
        for _ in 0..TICKETS {
            listed.push(tickets.new_ticket().await);
        }
        let reservations: Vec<(String, OrderCreated)> = listed
            .iter()
            .map(|(ticket, _)| {
                let event = order_created(ticket, Uuid::new_v4());
                (Uuid::new_v4().to_string(), event)
            })
            .collect();
        let server = &tickets.server;
        let edits = futures::future::join_all(listed.iter().map(|(ticket, cookie)| {
            let path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
            let body = serde_json::json!({"title": "edited", "price": 30});
            async move { server.put(&path, Some(cookie), body).await }
        }));
        let (edited, ()) = tokio::join!(
            edits,
            testkit::publish_all(&tickets.nats.url, &reservations)
        );
        for (((ticket, _), (_, reservation)), edit) in listed.iter().zip(&reservations).zip(edited)
        {
            let current = wait_for_order_id(&tickets, ticket, Some(reservation.id)).await;
            let id = id_of(ticket);
            match edit.status {
                200 => {
                    won += 1;
                    assert_eq!(
                        (current["version"].as_i64(), &current["title"]),
                        (Some(2), &Value::from("edited"))
                    );
                    expected.insert((id, 1), None);
                    expected.insert((id, 2), Some(reservation.id));
                }
                400 => {
                    refused += 1;
                    assert_eq!(
                        edit.body["errors"][0]["message"],
                        "Cannot edit a reserved ticket"
                    );
                    assert_eq!(
                        (current["version"].as_i64(), &current["title"]),
                        (Some(1), &Value::from("concert"))
                    );
                    expected.insert((id, 1), Some(reservation.id));
                }
                other => panic!("an edit answered {other}: {}", edit.body),
            }
        }
    }
    // Every version's event, and each once (a relay's retry republishes the same id).
    let mut seen: BTreeMap<(Uuid, i64), (Option<Uuid>, BTreeSet<String>)> = BTreeMap::new();
    while seen.len() < expected.len() {
        let Some(observed) = probe.next::<TicketUpdated>(WAIT).await else {
            panic!(
                "{} of {} ticket.updated events seen",
                seen.len(),
                expected.len()
            );
        };
        let entry = seen
            .entry((observed.event.id, observed.event.version))
            .or_insert((observed.event.order_id, BTreeSet::new()));
        entry.1.insert(observed.id);
    }
    probe
        .assert_quiet::<TicketUpdated>(Duration::from_millis(500))
        .await;
    for (key, order_id) in &expected {
        let (seen_order, ids) = &seen[key];
        assert_eq!(seen_order, order_id, "{key:?}");
        assert_eq!(ids.len(), 1, "{key:?} announced by {ids:?}");
    }
    assert_eq!(seen.len(), expected.len());
    eprintln!("{won} edits came first, {refused} were refused as reserved");
}
