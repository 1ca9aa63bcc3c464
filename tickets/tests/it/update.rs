use common::events::{Subject, TicketUpdated};
use futures::future::join_all;
use serde_json::json;
use testkit::{EventProbe, new_user_cookie};
use uuid::Uuid;

use testkit::{WAIT, id_of};

use crate::Tickets;

#[tokio::test]
async fn updating_checks_session_validation_existence_owner_then_reservation() {
    let tickets = Tickets::start().await;
    let (ticket, owner) = tickets.new_ticket().await;
    let (stranger, _) = new_user_cookie();
    let path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    let good = json!({"title": "new", "price": 30});
    let bad = json!({"title": "", "price": -1});
    let server = &tickets.server;

    server
        .put(&path, None, good.clone())
        .await
        .assert_error(401, "Not authorized");
    server
        .put(&path, None, bad.clone())
        .await
        .assert_error(401, "Not authorized");
    // Validation comes before existence: even for an unknown or malformed id.
    for path in [
        path.clone(),
        format!("/api/tickets/{}", Uuid::new_v4()),
        "/api/tickets/not-an-id".into(),
    ] {
        assert_eq!(
            server
                .put(&path, Some(&owner), bad.clone())
                .await
                .errors(400)
                .len(),
            2
        );
    }
    server
        .put(
            &format!("/api/tickets/{}", Uuid::new_v4()),
            Some(&owner),
            good.clone(),
        )
        .await
        .assert_error(404, "Not Found");
    server
        .put("/api/tickets/not-an-id", Some(&owner), good.clone())
        .await
        .assert_error(404, "Not Found");
    server
        .put(&path, Some(&stranger), good.clone())
        .await
        .assert_error(401, "Not authorized");

    crate::listeners::reserve(&tickets, &ticket, Uuid::new_v4()).await;
    server
        .put(&path, Some(&stranger), good.clone())
        .await
        .assert_error(401, "Not authorized");
    server
        .put(&path, Some(&owner), good)
        .await
        .assert_error(400, "Cannot edit a reserved ticket");
}

#[tokio::test]
async fn updating_changes_the_ticket_bumps_the_version_and_publishes() {
    let tickets = Tickets::start().await;
    let mut probe = EventProbe::subscribe(&tickets.nats.url, Subject::TicketUpdated).await;
    let (ticket, owner) = tickets.new_ticket().await;
    let path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());

    let updated = tickets
        .server
        .put(
            &path,
            Some(&owner),
            json!({"title": "new title", "price": "99.99"}),
        )
        .await
        .expect(200);
    assert_eq!(updated["title"], "new title");
    assert_eq!(updated["price"], json!(99.99));
    assert_eq!(updated["version"], 1);
    assert_eq!(tickets.ticket(&ticket["id"]).await, updated);

    let event = probe
        .next::<TicketUpdated>(WAIT)
        .await
        .expect("ticket.updated")
        .event;
    assert_eq!(
        (
            event.id,
            event.version,
            event.title.as_str(),
            event.order_id
        ),
        (id_of(&ticket), 1, "new title", None)
    );
    assert_eq!(event.price.cents(), 9999);
}

#[tokio::test]
async fn concurrent_edits_each_bump_the_version_once() {
    let tickets = Tickets::start().await;
    let mut probe = EventProbe::subscribe(&tickets.nats.url, Subject::TicketUpdated).await;
    let (ticket, owner) = tickets.new_ticket().await;
    let path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());

    let edits = (1..=30).map(|n| {
        let (path, owner, server) = (&path, &owner, &tickets.server);
        async move {
            server
                .put(
                    path,
                    Some(owner),
                    json!({"title": format!("edit {n}"), "price": n}),
                )
                .await
        }
    });
    let mut versions: Vec<i64> = join_all(edits)
        .await
        .into_iter()
        .map(|r| r.expect(200)["version"].as_i64().unwrap())
        .collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=30).collect::<Vec<_>>(),
        "no lost or doubled update"
    );
    assert_eq!(tickets.ticket(&ticket["id"]).await["version"], 30);

    let mut published = Vec::new();
    for _ in 0..30 {
        published.push(
            probe
                .next::<TicketUpdated>(WAIT)
                .await
                .expect("an event per edit")
                .event
                .version,
        );
    }
    assert_eq!(
        published,
        (1..=30).collect::<Vec<_>>(),
        "events in version order"
    );
}
