//! docs/api.md § Session cookie: signing out ends the session everywhere. From a
//! second after `POST /api/users/signout`, every service treats the token as no
//! current user (remembered as verified or not), including a replica that starts
//! after the sign-out; the user's other sessions go on.

use std::time::{Duration, Instant};

use e2e::{Options, Stack};
use serde_json::json;
use testkit::{TestServer, cookie_of};

/// What each service answers the cookie on a route that needs a session: 200/201
/// while it is valid, 401 once it is not.
async fn statuses(stack: &Stack, cookie: &str) -> [u16; 4] {
    let user = stack
        .auth
        .server
        .get("/api/users/currentuser", Some(cookie))
        .await
        .expect(200);
    let auth = if user["currentUser"].is_null() {
        401
    } else {
        200
    };
    let orders = stack
        .orders
        .server
        .get("/api/orders", Some(cookie))
        .await
        .status;
    let tickets = stack
        .tickets
        .server
        .put(
            "/api/tickets/00000000-0000-4000-8000-000000000000",
            Some(cookie),
            json!({"title": "x", "price": 1}),
        )
        .await
        .status;
    let payments = stack
        .payments
        .server
        .post("/api/payments", Some(cookie), json!({}))
        .await
        .status;
    [auth, orders, tickets, payments]
}

const SIGNED_IN: [u16; 4] = [200, 200, 404, 400];
const SIGNED_OUT: [u16; 4] = [401; 4];

#[tokio::test]
async fn a_signed_out_session_is_refused_by_every_service_within_a_second() {
    let stack = Stack::start(Options::default()).await;
    let email = "leaving@test.com";
    for round in 0..5 {
        let cookie = if round == 0 {
            stack.sign_up(email).await
        } else {
            let signed_in = stack
                .auth
                .server
                .post(
                    "/api/users/signin",
                    None,
                    json!({"email": email, "password": "password"}),
                )
                .await;
            cookie_of(&signed_in.headers)
        };
        let other = stack.sign_up(&format!("stays-{round}@test.com")).await;
        // Verified, and so remembered, by every service before the sign-out.
        assert_eq!(statuses(&stack, &cookie).await, SIGNED_IN, "round {round}");
        let signed_out = Instant::now();
        let answer = stack
            .auth
            .server
            .post("/api/users/signout", Some(&cookie), json!({}))
            .await;
        assert_eq!(answer.expect(200), json!({}));
        loop {
            let now = statuses(&stack, &cookie).await;
            if now == SIGNED_OUT {
                break;
            }
            assert!(
                signed_out.elapsed() < Duration::from_secs(1),
                "round {round}: still accepted a second after signing out: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "round {round}: refused everywhere {} ms after the sign-out",
            signed_out.elapsed().as_millis()
        );
        assert_eq!(
            statuses(&stack, &other).await,
            SIGNED_IN,
            "another session goes on"
        );
    }
}

#[tokio::test]
async fn a_replica_started_after_the_sign_out_refuses_the_session_at_once() {
    let stack = Stack::start(Options::default()).await;
    let cookie = stack.sign_up("early@test.com").await;
    stack
        .auth
        .server
        .post("/api/users/signout", Some(&cookie), json!({}))
        .await
        .expect(200);
    // A second orders replica, on the same database and NATS, started afterwards:
    // its first answer to the old cookie is already a refusal.
    let mut config = orders::Config::for_tests(&stack.orders.database.url, &stack.nats.url);
    config.bus.nats_password = Some(common::Secret::new(testkit::test_password("orders")));
    let late = TestServer::serve(config).await;
    late.ready().await;
    assert_eq!(late.get("/api/orders", Some(&cookie)).await.status, 401);
    let fresh = stack.sign_up("late@test.com").await;
    assert_eq!(late.get("/api/orders", Some(&fresh)).await.status, 200);
}
