use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::events::{Subject, TicketCreated};
use common::testing::{EventProbe, JWT_KEY, TestDatabase, TestNats, eventually, new_user_cookie};
use serde_json::json;

/// Contract §8: on SIGTERM the service finishes what it was doing, flushes its outbox
/// and exits 0 within the grace period.
#[tokio::test]
async fn sigterm_flushes_the_outbox_and_exits_zero() {
    let nats = TestNats::start().await;
    let database = TestDatabase::create().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut process = Command::new(env!("CARGO_BIN_EXE_tickets"))
        .env_clear()
        .env("PORT", port.to_string())
        .env("DATABASE_URL", &database.url)
        .env("NATS_URL", &nats.url)
        .env("JWT_KEY", JWT_KEY)
        .env("SHUTDOWN_GRACE_SECONDS", "10")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = common::testing::http_client();
    let url = format!("http://127.0.0.1:{port}");
    let ready = eventually(Duration::from_secs(20), || async {
        client.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready);
    let mut probe = EventProbe::subscribe(&nats.url, Subject::TicketCreated).await;

    let (cookie, _) = new_user_cookie();
    for n in 0..20 {
        let response = client
            .post(format!("{url}/api/tickets"))
            .header("cookie", &cookie)
            .json(&json!({"title": format!("t{n}"), "price": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let stopping = Instant::now();
    Command::new("kill").args(["-TERM", &process.id().to_string()]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let status = process.wait().unwrap();
        let mut logs = String::new();
        std::io::Read::read_to_string(process.stdout.as_mut().unwrap(), &mut logs).unwrap();
        (status, logs)
    })
    .await
    .unwrap();
    let (status, logs) = status;
    assert_eq!(status.code(), Some(0), "exit status");
    assert!(stopping.elapsed() < Duration::from_secs(10), "within the grace period");

    for _ in 0..20 {
        probe.next::<TicketCreated>(Duration::from_secs(5)).await.expect("every committed event was published");
    }
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0, "the outbox was flushed");

    // Structured logs: one JSON object per line, one line per request with method,
    // route, status and latency, and never the key.
    let request_line = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "handled" && line["route"] == "/api/tickets")
        .unwrap_or_else(|| panic!("no request log line in:\n{logs}"));
    assert_eq!((request_line["method"].as_str(), request_line["status"].as_u64()), (Some("POST"), Some(201)));
    assert!(request_line["latency_ms"].is_number());
    assert!(!logs.contains(JWT_KEY), "the key never appears in the logs");
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes() {
    let tickets = crate::Tickets::start().await;
    let doc = tickets.server.get("/api/tickets/openapi.json", None).await.expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/tickets"]["post"].is_object());
    assert!(doc["paths"]["/api/tickets/{id}"]["put"].is_object());
    assert!(doc["components"]["schemas"]["Ticket"].is_object());
}
