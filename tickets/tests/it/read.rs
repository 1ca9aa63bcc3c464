use common::testing::new_user_cookie;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Tickets;

#[tokio::test]
async fn showing_a_ticket_or_404() {
    let tickets = Tickets::start().await;
    let (ticket, _) = tickets.new_ticket().await;
    assert_eq!(tickets.ticket(&ticket["id"]).await, ticket);
    let unknown = format!("/api/tickets/{}", Uuid::new_v4());
    tickets
        .server
        .get(&unknown, None)
        .await
        .assert_error(404, "Not Found");
    tickets
        .server
        .get("/api/tickets/not-an-id", None)
        .await
        .assert_error(404, "Not Found");
}

#[tokio::test]
async fn listing_shows_unreserved_tickets_newest_first() {
    let tickets = Tickets::start().await;
    assert_eq!(
        tickets.server.get("/api/tickets", None).await.expect(200),
        json!([])
    );
    let (cookie, _) = new_user_cookie();
    let mut created = Vec::new();
    for title in ["first", "second", "third"] {
        created.push(tickets.create(&cookie, title, json!(10)).await.expect(201));
    }
    let listed = tickets.server.get("/api/tickets", None).await.expect(200);
    let titles: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["third", "second", "first"]);

    // Reserve the middle one (as the orders service would, through its event).
    crate::listeners::reserve(&tickets, &created[1], Uuid::new_v4()).await;
    let listed = tickets.server.get("/api/tickets", None).await.expect(200);
    let ids: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert_eq!(ids, [&created[2]["id"], &created[0]["id"]]);
    // Still visible by id.
    assert!(tickets.ticket(&created[1]["id"]).await["orderId"].is_string());
}
