use e2e::{Options, Stack};
use serde_json::{Value, json};

/// docs/api.md § Tickets, Orders and Events: a ticket's life across tickets and orders.
#[tokio::test]
async fn a_ticket_is_listed_reserved_freed_and_repriced_across_services() {
    let stack = Stack::start(Options::default()).await;
    let seller = stack.sign_up("seller@test.com").await;
    let buyer = stack.sign_up("buyer@test.com").await;

    // Created in tickets, it reaches the orders replica.
    let ticket = stack
        .create_ticket(&seller, "Concert", json!("20.00"))
        .await;
    let id = &ticket["id"];
    assert_eq!(
        stack.wait_for_replica_version(id, 0).await,
        (0, "Concert".into(), 2000)
    );

    // Ordered: reserved in tickets, gone from the list, not editable.
    let order = stack.order(&buyer, id).await.expect(201);
    assert_eq!(order["ticket"]["price"], json!(20));
    let reserved = stack
        .wait_for_ticket(id, |t| t["orderId"] == order["id"])
        .await;
    assert_eq!(reserved["version"], 1);
    let listed = stack
        .tickets
        .server
        .get("/api/tickets", None)
        .await
        .expect(200);
    assert!(!listed.as_array().unwrap().iter().any(|t| &t["id"] == id));
    let path = format!("/api/tickets/{}", id.as_str().unwrap());
    stack
        .tickets
        .server
        .put(
            &path,
            Some(&seller),
            json!({"title": "Concert", "price": 30}),
        )
        .await
        .assert_error(400, "Cannot edit a reserved ticket");
    // The replica follows the reservation too (version 1).
    stack.wait_for_replica_version(id, 1).await;

    // Cancelled: free, listed and editable again.
    let order_path = format!("/api/orders/{}", order["id"].as_str().unwrap());
    stack
        .orders
        .server
        .delete(&order_path, Some(&buyer))
        .await
        .expect(204);
    let freed = stack.wait_for_ticket(id, |t| t["orderId"].is_null()).await;
    assert_eq!(freed["version"], 2);
    let listed = stack
        .tickets
        .server
        .get("/api/tickets", None)
        .await
        .expect(200);
    assert!(listed.as_array().unwrap().iter().any(|t| &t["id"] == id));

    // A price edit reaches the replica; the old order keeps its price, a new one gets the new price.
    let edited = stack
        .tickets
        .server
        .put(
            &path,
            Some(&seller),
            json!({"title": "Concert", "price": 30}),
        )
        .await
        .expect(200);
    assert_eq!(edited["version"], 3);
    assert_eq!(
        stack.wait_for_replica_version(id, 3).await,
        (3, "Concert".into(), 3000)
    );
    let old = stack
        .orders
        .server
        .get(&order_path, Some(&buyer))
        .await
        .expect(200);
    assert_eq!(
        (old["status"].as_str(), &old["ticket"]["price"]),
        (Some("cancelled"), &json!(20))
    );
    let again = stack.order(&buyer, id).await.expect(201);
    assert_eq!(again["ticket"]["price"], json!(30));
    let reserved_again = stack
        .wait_for_ticket(id, |t| t["orderId"] == again["id"])
        .await;
    assert_eq!(reserved_again["version"], 4);
}

/// Many tickets created at once all reach the replica, each exactly at its version.
#[tokio::test]
async fn a_burst_of_tickets_replicates_completely() {
    let stack = Stack::start(Options::default()).await;
    let seller = stack.sign_up("bulk@test.com").await;
    let creations = (0..100).map(|n| {
        let (stack, seller) = (&stack, &seller);
        async move {
            stack
                .create_ticket(seller, &format!("t{n}"), json!(n + 1))
                .await
        }
    });
    let tickets: Vec<Value> = futures::future::join_all(creations).await;
    for (n, ticket) in tickets.iter().enumerate() {
        let cents = i64::try_from((n + 1) * 100).unwrap();
        assert_eq!(
            stack.wait_for_replica_version(&ticket["id"], 0).await,
            (0, format!("t{n}"), cents)
        );
    }
}
