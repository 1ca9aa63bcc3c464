use common::events::{Subject, TicketCreated};
use common::money::Price;
use serde_json::{Value, json};
use testkit::{EventProbe, new_user_cookie};

use testkit::{WAIT, id_of};

use crate::Tickets;

#[tokio::test]
async fn creating_requires_a_session() {
    let tickets = Tickets::start().await;
    let response = tickets
        .server
        .post("/api/tickets", None, json!({"title": "t", "price": 10}))
        .await;
    response.assert_error(401, "Not authorized");
    let forged = "session=eyJqd3QiOiJub3BlIn0=";
    tickets
        .create(forged, "t", json!(10))
        .await
        .assert_error(401, "Not authorized");
}

#[tokio::test]
async fn creating_validates_title_and_price() {
    let tickets = Tickets::start().await;
    let (cookie, _) = new_user_cookie();
    let title_error = json!({"message": "Title is required", "field": "title"});
    let price_error = json!({"message": "Price must be greater than 0", "field": "price"});
    let post = |body: Value| {
        let cookie = cookie.clone();
        let server = &tickets.server;
        async move { server.post("/api/tickets", Some(&cookie), body).await }
    };

    for title in [json!(""), json!("   "), json!(null), json!(5), json!(["a"])] {
        assert_eq!(
            post(json!({"title": title, "price": 10})).await.errors(400),
            vec![title_error.clone()],
            "{title}"
        );
    }
    assert_eq!(
        post(json!({"price": 10})).await.errors(400),
        vec![title_error.clone()]
    );
    for price in [
        json!(-10),
        json!(0),
        json!("0"),
        json!(12.345),
        json!("12.345"),
        json!("abc"),
        json!(""),
        json!(null),
        json!(true),
        json!(1_000_000.01),
        json!({"amount": 5}),
        json!("1e400"),
    ] {
        assert_eq!(
            post(json!({"title": "t", "price": price}))
                .await
                .errors(400),
            vec![price_error.clone()],
            "{price}"
        );
    }
    assert_eq!(
        post(json!({})).await.errors(400),
        vec![title_error, price_error]
    );
}

/// A title is what other users read in a list: no NUL (PostgreSQL refuses it: it was a
/// 500), no control characters, no text-direction overrides (U+202E made a title read
/// backwards), at most 200 characters, stored in NFC.
#[tokio::test]
async fn titles_refuse_control_and_direction_characters_and_are_bounded() {
    let tickets = Tickets::start().await;
    let (cookie, _) = new_user_cookie();
    let error = |message: &str| vec![json!({"message": message, "field": "title"})];
    let characters = "Title must not contain control or text-direction characters";
    for title in [
        "a\u{0}b",
        "line\nbreak",
        "tab\there",
        "evil\u{202E}txt.exe",
        "x\u{2067}y",
    ] {
        assert_eq!(
            tickets.create(&cookie, title, json!(10)).await.errors(400),
            error(characters),
            "{title:?}"
        );
    }
    let long = "x".repeat(15_000);
    assert_eq!(
        tickets.create(&cookie, &long, json!(10)).await.errors(400),
        error("Title must be at most 200 characters")
    );
    let longest = "é".repeat(200);
    tickets
        .create(&cookie, &longest, json!(10))
        .await
        .expect(201);
    // e + U+0301 (combining acute) is stored as the one character é.
    let ticket = tickets
        .create(&cookie, "Cafe\u{301}", json!(10))
        .await
        .expect(201);
    assert_eq!(ticket["title"], "Caf\u{e9}");
    // Editing is held to the same.
    let path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    assert_eq!(
        tickets
            .server
            .put(
                &path,
                Some(&cookie),
                json!({"title": "a\u{0}", "price": 10})
            )
            .await
            .errors(400),
        error(characters)
    );
}

#[tokio::test]
async fn creating_a_ticket_returns_it_and_publishes_ticket_created() {
    let tickets = Tickets::start().await;
    let mut probe = EventProbe::subscribe(&tickets.nats.url, Subject::TicketCreated).await;
    let (cookie, user_id) = new_user_cookie();

    let ticket = tickets
        .create(&cookie, "  Concert  ", json!("12.50"))
        .await
        .expect(201);
    assert_eq!(ticket["title"], "Concert");
    assert_eq!(ticket["price"], json!(12.5));
    assert_eq!(ticket["version"], 0);
    assert_eq!(ticket["userId"], json!(user_id));
    assert_eq!(ticket["orderId"], Value::Null);
    assert_eq!(tickets.ticket(&ticket["id"]).await, ticket);

    let published = probe
        .next::<TicketCreated>(WAIT)
        .await
        .expect("ticket.created");
    assert_eq!(
        published.event,
        TicketCreated {
            id: id_of(&ticket),
            version: 0,
            title: "Concert".into(),
            price: Price::from_cents(1250).unwrap(),
            user_id,
        }
    );

    // Exact money: whole numbers and cents come back as they went in.
    for (sent, shown) in [
        (json!(20), json!(20)),
        (json!(0.1), json!(0.1)),
        (json!("999999.99"), json!(999999.99)),
        (json!(1_000_000), json!(1_000_000)),
    ] {
        let ticket = tickets.create(&cookie, "t", sent.clone()).await.expect(201);
        assert_eq!(ticket["price"], shown, "{sent}");
    }
}

/// docs/api.md § Errors: past `TICKETS_PER_MINUTE_PER_USER`, 429 with `Retry-After`
/// and the error body, and nothing is listed; another user is unaffected.
#[tokio::test]
async fn listing_faster_than_the_rate_is_answered_429_with_retry_after() {
    let nats = testkit::TestNats::start().await;
    let database = testkit::TestDatabase::create().await;
    let config = tickets::Config {
        tickets_per_minute: 4,
        ..crate::config(&database, &nats)
    };
    let server = testkit::TestServer::serve(config).await;
    server.ready().await;
    let (cookie, user) = new_user_cookie();
    let post = |cookie: String, title: &'static str| {
        let server = &server;
        async move {
            server
                .post(
                    "/api/tickets",
                    Some(&cookie),
                    json!({"title": title, "price": 5}),
                )
                .await
        }
    };
    for _ in 0..4 {
        post(cookie.clone(), "within the rate").await.expect(201);
    }
    let refused = post(cookie.clone(), "too fast").await;
    let wait: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15).contains(&wait), "Retry-After {wait}");
    refused.assert_error(
        429,
        "Too many requests: you are listing tickets too fast; try again shortly",
    );
    let pool = database.pool().await;
    let listed: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE user_id = $1")
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(listed, 4);
    let (other, _) = new_user_cookie();
    post(other, "someone else").await.expect(201);
}
