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
