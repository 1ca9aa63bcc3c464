use std::time::{Duration, Instant};

use common::events::{Subject, TicketCreated};
use serde_json::json;
use testkit::{
    EventProbe, JWT_KEY, ServiceProcess, TestDatabase, TestNats, new_user_cookie, run_command,
};

/// docs/api.md § Operations: on SIGTERM the service finishes what it was doing, flushes its outbox
/// and exits 0 within the grace period. NATS is frozen while the tickets are listed, so
/// their events are still in the outbox at SIGTERM; it comes back a second later, while
/// the service stops, and they are published then.
#[tokio::test]
async fn sigterm_flushes_the_outbox_and_exits_zero() {
    let mut nats = TestNats::start().await;
    let database = TestDatabase::create().await;
    let env = [
        ("DATABASE_URL", database.url.as_str()),
        ("NATS_URL", nats.url.as_str()),
        ("JWT_KEY", JWT_KEY),
        ("SHUTDOWN_GRACE_SECONDS", "10"),
        ("LOG_FORMAT", "json"),
    ];
    let mut process = ServiceProcess::start(env!("CARGO_BIN_EXE_tickets"), &env);
    process.ready().await;
    let client = testkit::http_client();
    let mut probe = EventProbe::subscribe(&nats.url, Subject::TicketCreated).await;

    let (cookie, _) = new_user_cookie();
    nats.freeze().await;
    for n in 0..20 {
        let response = client
            .post(process.url("/api/tickets"))
            .header("cookie", &cookie)
            .json(&json!({"title": format!("t{n}"), "price": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        pending >= 10,
        "events wait in the outbox at SIGTERM ({pending})"
    );
    let stopping = Instant::now();
    let terminated = process.terminate();
    let thawed = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        nats.thaw().await;
    };
    let (status, ()) = tokio::join!(terminated, thawed);
    assert_eq!(status, Some(0), "exit status");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "within the grace period"
    );
    let logs = process.logs();

    for _ in 0..20 {
        probe
            .next::<TicketCreated>(Duration::from_secs(5))
            .await
            .expect("every committed event was published");
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the outbox was flushed");

    // Structured logs: one JSON object per line, one line per request with method,
    // route, status and latency, and never the key.
    let request_line = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "handled" && line["route"] == "/api/tickets")
        .unwrap_or_else(|| panic!("no request log line in:\n{logs}"));
    assert_eq!(
        (
            request_line["method"].as_str(),
            request_line["status"].as_u64()
        ),
        (Some("POST"), Some(201))
    );
    assert!(request_line["latency_ms"].is_number());
    assert!(!logs.contains(JWT_KEY), "the key never appears in the logs");
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes() {
    let tickets = crate::Tickets::start().await;
    let doc = tickets
        .server
        .get("/api/tickets/openapi.json", None)
        .await
        .expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/tickets"]["post"].is_object());
    assert!(doc["paths"]["/api/tickets/{id}"]["put"].is_object());
    assert!(doc["components"]["schemas"]["Ticket"].is_object());
}

/// The operator's tool, as it would be used through `kubectl exec`: list the parked
/// events, then re-drive them once their cause is fixed.
#[tokio::test]
async fn parked_events_are_listed_and_re_driven_from_the_command_line() {
    let tickets = crate::Tickets::start().await;
    let (ticket, _) = tickets.new_ticket().await;
    let order_id = uuid::Uuid::new_v4();
    let payload = json!({
        "id": order_id, "version": 0, "status": "created", "userId": order_id,
        "expiresAt": "2026-11-26T17:02:12.286Z",
        "ticket": {"id": ticket["id"], "price": 20},
    });
    let pool = tickets.database.pool().await;
    sqlx::query(
        "INSERT INTO parked_events (event_id, subject, payload, failures, error)
         VALUES ('evt-parked', 'order.created', $1, 50, 'the database was read-only')",
    )
    .bind(payload.to_string())
    .execute(&pool)
    .await
    .unwrap();
    let env = [
        ("DATABASE_URL", tickets.database.url.as_str()),
        ("NATS_URL", tickets.nats.url.as_str()),
        ("JWT_KEY", JWT_KEY),
    ];
    let binary = env!("CARGO_BIN_EXE_tickets");

    let listed = run_command(binary, &["parked", "list"], &env);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    assert!(stdout.contains("evt-parked"), "{stdout}");
    assert!(stdout.contains("the database was read-only"), "{stdout}");

    let redriven = run_command(binary, &["parked", "redrive", "--all"], &env);
    let stdout = String::from_utf8_lossy(&redriven.stdout);
    assert!(redriven.status.success(), "{redriven:?}");
    assert!(stdout.contains("applied"), "{stdout}");
    let current = tickets.ticket(&ticket["id"]).await;
    assert_eq!(
        current["orderId"],
        json!(order_id),
        "the reservation was applied"
    );
    let listed = run_command(binary, &["parked", "list"], &env);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("no parked events"));
}

/// The resident set's high-water mark of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// A table of 200,000 unreserved tickets, listed without paging by eight clients at
/// once: the answers are bounded (1,000 tickets each, `TICKETS_LIST_LIMIT`), and so is
/// the service's memory (unbounded, each answer was 33 MB and the peak past 300 MiB).
#[tokio::test]
async fn concurrent_unpaged_lists_of_a_large_table_keep_memory_bounded() {
    let nats = TestNats::start().await;
    let database = TestDatabase::create().await;
    let env = [
        ("DATABASE_URL", database.url.as_str()),
        ("NATS_URL", nats.url.as_str()),
        ("JWT_KEY", JWT_KEY),
    ];
    let mut process = ServiceProcess::start(env!("CARGO_BIN_EXE_tickets"), &env);
    process.ready().await;
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    sqlx::query(
        "INSERT INTO tickets (id, title, price_cents, user_id, version, created_at)
         SELECT gen_random_uuid(), 'ticket ' || n, 1000, gen_random_uuid(), 0,
                now() - n * interval '1 millisecond'
         FROM generate_series(1, 200000) AS n",
    )
    .execute(&pool)
    .await
    .unwrap();
    let pid = process.pid().unwrap();
    let before = peak_rss_mib(pid);
    let client = testkit::http_client();
    let lists = (0..8).map(|_| {
        let (client, url) = (client.clone(), process.url("/api/tickets"));
        async move {
            let answer = client.get(url).send().await.unwrap();
            assert_eq!(answer.status(), 200);
            let linked = answer.headers().contains_key("link");
            let body: Vec<serde_json::Value> = answer.json().await.unwrap();
            (body.len(), linked)
        }
    });
    let answers = futures::future::join_all(lists).await;
    let after = peak_rss_mib(pid);
    println!(
        "tickets peak RSS: {before:.1} MiB before, {after:.1} MiB after 8 concurrent lists \
         of a 200,000-ticket table; (tickets answered, linked): {answers:?}"
    );
    assert!(answers.iter().all(|&a| a == (1_000, true)), "{answers:?}");
    assert!(after < 64.0, "peak RSS {after:.1} MiB");
    process.kill();
}

/// With traces on (`OTEL_EXPORTER_OTLP_ENDPOINT`), a request continues the trace of its
/// `traceparent`; its JSON log lines, the request line and the error line included,
/// carry the trace and span ids, and the error names its method, route and request id;
/// the span reaches the collector under the service's name.
#[tokio::test]
async fn a_requests_log_lines_carry_its_trace_and_its_error_names_the_request() {
    use testkit::otlp::{OtlpReceiver, SpanKind};

    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.url.trim_end_matches("/v1/traces").to_owned();
    let nats = TestNats::start().await;
    let database = TestDatabase::create().await;
    let env = [
        ("DATABASE_URL", database.url.as_str()),
        ("NATS_URL", nats.url.as_str()),
        ("JWT_KEY", JWT_KEY),
        ("LOG_FORMAT", "json"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut process = ServiceProcess::start(env!("CARGO_BIN_EXE_tickets"), &env);
    process.ready().await;
    // The table gone, reading a ticket fails with a 500.
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    sqlx::query("DROP TABLE tickets CASCADE")
        .execute(&pool)
        .await
        .unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let path = format!("/api/tickets/{}", uuid::Uuid::new_v4());
    let response = testkit::http_client()
        .get(process.url(&path))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .header("x-request-id", "req-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);

    let spans = receiver
        .wait_for("the request's span", |spans| {
            spans.iter().any(|s| s.trace_id == trace_id)
        })
        .await;
    let span = spans.iter().find(|s| s.trace_id == trace_id).unwrap();
    assert_eq!(span.name, "GET /api/tickets/{id}");
    assert_eq!(span.kind, SpanKind::Server);
    assert_eq!(
        span.parent_span_id, caller_span,
        "the caller's span is its parent"
    );
    assert_eq!(
        span.service, "tickets",
        "service.name defaults to the service"
    );
    assert_eq!(span.attribute("http.route"), Some("/api/tickets/{id}"));
    assert_eq!(span.attribute("http.response.status_code"), Some("500"));

    process.terminate().await;
    let logs = process.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let find = |message: &str| {
        lines
            .iter()
            .find(|line| line["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in: {logs}"))
    };
    let failed = find("request failed");
    assert_eq!(failed["method"], "GET", "{failed}");
    assert_eq!(failed["route"], "/api/tickets/{id}", "{failed}");
    assert_eq!(failed["request_id"], "req-7f3a", "{failed}");
    assert_eq!(failed["status"], 500, "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("tickets"),
        "{failed}"
    );
    let handled = find("handled");
    assert_eq!(handled["request_id"], "req-7f3a", "{handled}");
    for line in [failed, handled] {
        assert_eq!(line["trace_id"], trace_id, "{line}");
        assert_eq!(line["span_id"], span.span_id.as_str(), "{line}");
    }
}
