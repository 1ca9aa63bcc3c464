use serde_json::{Value, json};
use testkit::new_user_cookie;
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

#[tokio::test]
async fn listing_a_page_at_a_time_with_links_both_ways() {
    let tickets = Tickets::start().await;
    let (cookie, _) = new_user_cookie();
    for n in 0..7 {
        tickets
            .create(&cookie, &format!("t{n}"), json!(10))
            .await
            .expect(201);
    }
    let titles = |page: &Value| -> Vec<String> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let link = |response: &testkit::TestResponse, rel: &str| -> Option<String> {
        let header = response.headers.get("link")?.to_str().unwrap().to_owned();
        header.split(", ").find_map(|part| {
            let (target, kind) = part.split_once("; ")?;
            (kind == format!("rel=\"{rel}\"")).then(|| target.trim_matches(['<', '>']).to_owned())
        })
    };

    let first = tickets.server.get("/api/tickets?limit=3", None).await;
    assert!(link(&first, "prev").is_none());
    let next = link(&first, "next").expect("a next page");
    assert_eq!(titles(&first.body), ["t6", "t5", "t4"]);
    let second = tickets.server.get(&next, None).await;
    assert_eq!(titles(&second.body), ["t3", "t2", "t1"]);
    let third = tickets
        .server
        .get(&link(&second, "next").unwrap(), None)
        .await;
    assert_eq!(titles(&third.body), ["t0"]);
    assert!(link(&third, "next").is_none());
    let back = tickets
        .server
        .get(&link(&third, "prev").unwrap(), None)
        .await;
    assert_eq!(titles(&back.body), ["t3", "t2", "t1"]);

    // Without parameters: every ticket, no header, as the original.
    let all = tickets.server.get("/api/tickets", None).await;
    assert!(all.headers.get("link").is_none());
    assert_eq!(all.body.as_array().unwrap().len(), 7);

    for bad in ["limit=0", "limit=101", "limit=x", "before=nope"] {
        let errors = tickets
            .server
            .get(&format!("/api/tickets?{bad}"), None)
            .await
            .errors(400);
        assert_eq!(errors.len(), 1, "{bad}");
    }
}

/// docs/api.md § Tickets: without paging the list is bounded (`TICKETS_LIST_LIMIT`),
/// newest first, with a `Link` to the rest.
#[tokio::test]
async fn an_unpaged_list_is_bounded_and_links_to_the_rest() {
    let nats = testkit::TestNats::start().await;
    let database = testkit::TestDatabase::create().await;
    let mut config = crate::config(&database, &nats);
    config.list_limit = 5;
    let server = testkit::TestServer::serve(config).await;
    server.ready().await;
    let (cookie, _) = new_user_cookie();
    for n in 0..12 {
        server
            .post(
                "/api/tickets",
                Some(&cookie),
                json!({"title": format!("t{n}"), "price": 10}),
            )
            .await
            .expect(201);
    }
    let titles = |page: &Value| -> Vec<String> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let listed = server.get("/api/tickets", None).await;
    assert_eq!(titles(&listed.body), ["t11", "t10", "t9", "t8", "t7"]);
    let link = listed.headers["link"].to_str().unwrap().to_owned();
    let (target, rel) = link.split_once("; ").unwrap();
    assert_eq!(rel, "rel=\"next\"");
    let rest = server.get(target.trim_matches(['<', '>']), None).await;
    assert_eq!(
        titles(&rest.body),
        ["t6", "t5", "t4", "t3", "t2", "t1", "t0"]
    );
    assert!(
        rest.headers
            .get("link")
            .is_none_or(|l| !l.to_str().unwrap().contains("next"))
    );
}

/// A database the service cannot reach answers 503 (try again: it is not the request
/// that is wrong, and another replica may serve it), not 500; once the database takes
/// connections again, so does the service.
#[tokio::test]
async fn an_unreachable_database_answers_503_until_it_is_back() {
    let tickets = Tickets::start_with(|config| {
        config.database.acquire_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let (ticket, _) = tickets.new_ticket().await;
    let path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    let name = tickets.database.url.rsplit('/').next().unwrap().to_owned();
    let admin = sqlx::PgPool::connect(&std::env::var("TEST_DATABASE_URL").unwrap())
        .await
        .unwrap();
    let allow = |on: bool| {
        let statement = format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {on}");
        let admin = &admin;
        // The name is the test database's own, made by testkit.
        async move {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(admin)
                .await
                .unwrap()
        }
    };
    // The database refuses new connections, and the service's are ended.
    allow(false).await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&admin)
        .await
        .unwrap();
    // The first request meets a connection the server ended (57P01), the second
    // a server that refuses new ones.
    for _ in 0..2 {
        tickets
            .server
            .get(&path, None)
            .await
            .assert_error(503, "The service is unavailable; please try again");
    }

    allow(true).await;
    assert_eq!(
        tickets.server.get(&path, None).await.expect(200)["id"],
        ticket["id"]
    );
}
