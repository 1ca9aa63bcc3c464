use serde_json::Value;
use testkit::new_user_cookie;
use uuid::Uuid;

use crate::{Orders, path};

#[tokio::test]
async fn listing_shows_only_the_callers_orders_newest_first() {
    let orders = Orders::start().await;
    let (alice, _) = new_user_cookie();
    let (bob, _) = new_user_cookie();
    orders
        .server
        .get("/api/orders", None)
        .await
        .assert_error(401, "Not authorized");

    let mut mine = Vec::new();
    for _ in 0..3 {
        let ticket = orders.ticket(100).await;
        mine.push(orders.order(&alice, ticket.id).await.expect(201));
    }
    let ticket = orders.ticket(100).await;
    orders.order(&bob, ticket.id).await.expect(201);

    let listed = orders
        .server
        .get("/api/orders", Some(&alice))
        .await
        .expect(200);
    let ids: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert_eq!(ids, [&mine[2]["id"], &mine[1]["id"], &mine[0]["id"]]);
    assert_eq!(listed[0]["ticket"]["title"], "concert");
}

#[tokio::test]
async fn showing_an_order_checks_session_existence_and_owner() {
    let orders = Orders::start().await;
    let (alice, _) = new_user_cookie();
    let (bob, _) = new_user_cookie();
    let ticket = orders.ticket(100).await;
    let order = orders.order(&alice, ticket.id).await.expect(201);

    assert_eq!(orders.show(&alice, &order).await, order);
    orders
        .server
        .get(&path(&order), None)
        .await
        .assert_error(401, "Not authorized");
    orders
        .server
        .get(&path(&order), Some(&bob))
        .await
        .assert_error(401, "Not authorized");
    orders
        .server
        .get(&format!("/api/orders/{}", Uuid::new_v4()), Some(&alice))
        .await
        .assert_error(404, "Not Found");
    orders
        .server
        .get("/api/orders/not-an-id", Some(&alice))
        .await
        .assert_error(404, "Not Found");
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes() {
    let orders = Orders::start().await;
    let doc = orders
        .server
        .get("/api/orders/openapi.json", None)
        .await
        .expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/api/orders", "post"),
        ("/api/orders", "get"),
        ("/api/orders/{id}", "get"),
        ("/api/orders/{id}", "delete"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    assert!(doc["components"]["schemas"]["Order"].is_object());
}

/// docs/api.md § Orders: without paging the list holds at most `ORDERS_LIST_LIMIT`
/// orders, newest first, with a `Link` to the rest; following the links gives every
/// order once, in order; bad paging is a validation error.
#[tokio::test]
async fn the_list_is_bounded_and_pages_through_the_rest() {
    let orders = Orders::with(|config| orders::Config {
        list_limit: 10,
        max_active_orders: 100,
        orders_per_minute: 0,
        ..config
    })
    .await;
    let (cookie, _) = new_user_cookie();
    let mut placed = Vec::new();
    for _ in 0..25 {
        let ticket = orders.ticket(100).await;
        placed.push(orders.order(&cookie, ticket.id).await.expect(201)["id"].clone());
    }
    placed.reverse(); // newest first
    let first = orders.server.get("/api/orders", Some(&cookie)).await;
    let mut link = first.headers["link"].to_str().unwrap().to_owned();
    let mut seen: Vec<Value> = first
        .expect(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].clone())
        .collect();
    assert_eq!(seen.len(), 10, "the unpaged list is bounded");
    loop {
        let next = link
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .filter(|(_, rel)| rel.contains("rel=\"next\""))
            .map(|(url, _)| url.to_owned())
            .unwrap();
        let page = orders.server.get(&next, Some(&cookie)).await;
        let more = page
            .headers
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        seen.extend(
            page.expect(200)
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].clone()),
        );
        match more {
            Some(more) => link = more,
            None => break,
        }
    }
    assert_eq!(seen, placed, "every order once, newest first");
    let small = orders
        .server
        .get("/api/orders?limit=7", Some(&cookie))
        .await;
    assert!(
        small.headers["link"]
            .to_str()
            .unwrap()
            .contains("limit=7&before=")
    );
    assert_eq!(small.expect(200).as_array().unwrap().len(), 7);
    orders
        .server
        .get("/api/orders?limit=0", Some(&cookie))
        .await
        .errors(400);
    orders
        .server
        .get("/api/orders?before=nope", Some(&cookie))
        .await
        .errors(400);
    // Another user's order as the cursor gives nothing of theirs.
    let (other, _) = new_user_cookie();
    let before = placed[0].as_str().unwrap();
    let foreign = orders
        .server
        .get(&format!("/api/orders?before={before}"), Some(&other))
        .await
        .expect(200);
    assert_eq!(foreign, serde_json::json!([]));
}
