//! The local stack as `make up` runs it: nginx as the ingress, every service as a
//! process. These tests need a running stack and are run by `scripts/stack-test.sh`
//! (part of `make test`), which starts one on ports of its own and passes its
//! settings in the environment; `cargo test` alone skips them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::wait::wait_at_most;
use testkit::{cookie_of, http_client, wait_until};

fn ingress() -> String {
    std::env::var("STACK_URL").expect("STACK_URL (run through scripts/stack-test.sh)")
}

fn service_port(offset: u16) -> u16 {
    port_base("SERVICE_PORT_BASE", 3000) + offset
}

/// Where a service's `/healthz`, `/readyz` and `/metrics` answer.
fn ops_port(offset: u16) -> u16 {
    let default = port_base("SERVICE_PORT_BASE", 3000) + 1000;
    port_base("OPS_PORT_BASE", default) + offset
}

fn port_base(variable: &str, default: u16) -> u16 {
    std::env::var(variable)
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(default)
}

/// `scripts/stack.sh ARGS...` with the stack's settings (inherited).
fn stack(args: &[&str]) {
    let root = testkit::workspace_root();
    let status = Command::new(root.join("scripts/stack.sh"))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/stack.sh {args:?} failed");
}

async fn sign_up(client: &reqwest::Client) -> String {
    let email = format!("{}@stack.test", uuid::Uuid::new_v4().simple());
    let response = client
        .post(format!("{}/api/users/signup", ingress()))
        .json(&json!({"email": email, "password": "password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    cookie_of(response.headers())
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack-test.sh"]
async fn the_ingress_answers_its_own_errors_with_the_json_error_body() {
    let client = http_client();
    let huge = "x".repeat(2 * 1024 * 1024);
    let response = client
        .post(format!("{}/api/users/signup", ingress()))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"errors": [{"message": "Request body is too large"}]})
    );

    stack(&["stop", "payments"]);
    let response = client
        .post(format!("{}/api/payments", ingress()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    stack(&["start", "payments"]);
    assert_eq!(status, 502);
    assert_eq!(
        body,
        json!({"errors": [{"message": "The service is unavailable; please try again"}]})
    );
}

/// Listening sockets of /proc/net/tcp: (address, port) in hex.
/// The operational endpoints answer on each service's ops port, never through the
/// ingress, however the path is spelled.
#[tokio::test]
#[ignore = "needs the local stack: scripts/stack-test.sh"]
async fn the_operational_endpoints_are_not_reachable_through_the_ingress() {
    let client = http_client();
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/users/../../metrics",
        "/api/tickets/%2e%2e/%2e%2e/metrics",
    ] {
        let response = client
            .get(format!("{}{path}", ingress()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path} through the ingress");
        let body = response.text().await.unwrap();
        assert!(!body.contains("http_requests_total"), "{path}: {body}");
    }
    let metrics = client
        .get(format!("http://127.0.0.1:{}/metrics", ops_port(6)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        metrics.status(),
        200,
        "the client's own metrics, on its ops port"
    );
}

fn listening() -> Vec<(String, u16)> {
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, port) = fields.get(1)?.split_once(':')?;
            (fields.get(3) == Some(&"0A"))
                .then(|| (address.to_owned(), u16::from_str_radix(port, 16).unwrap()))
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack-test.sh"]
async fn the_services_listen_on_loopback_only() {
    let sockets = listening();
    for (offset, service) in [
        (1, "auth"),
        (2, "tickets"),
        (3, "orders"),
        (4, "payments"),
        (5, "expiration"),
        (6, "client"),
    ] {
        for port in [service_port(offset), ops_port(offset)] {
            let addresses: Vec<&str> = sockets
                .iter()
                .filter(|(_, p)| *p == port)
                .map(|(a, _)| a.as_str())
                .collect();
            // 0100007F is 127.0.0.1 as the kernel writes it.
            assert_eq!(addresses, ["0100007F"], "{service} on {port}");
        }
    }
}

/// A NATS outage does not make a service unready: writes go on (into the outbox) and
/// reach the other services once NATS is back.
#[tokio::test]
#[ignore = "needs the local stack: scripts/stack-test.sh"]
async fn readiness_survives_a_nats_outage_and_writes_arrive_afterwards() {
    let client = http_client();
    let seller = sign_up(&client).await;
    let buyer = sign_up(&client).await;
    stack(&["stop", "nats"]);

    let ticket: Value = client
        .post(format!("{}/api/tickets", ingress()))
        .header("cookie", &seller)
        .json(&json!({"title": "during the outage", "price": 15}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (offset, service) in [
        (1, "auth"),
        (2, "tickets"),
        (3, "orders"),
        (4, "payments"),
        (5, "expiration"),
        (6, "client"),
    ] {
        let url = format!("http://127.0.0.1:{}/readyz", ops_port(offset));
        let status = client.get(&url).send().await.unwrap().status();
        assert_eq!(status, 200, "{service} stays ready while NATS is down");
    }
    let metrics = client
        .get(format!("http://127.0.0.1:{}/metrics", ops_port(2)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("nats_connected 0"),
        "the bus connection is reported"
    );

    stack(&["start", "nats"]);
    // The ticket reaches the orders replica: the buyer can order it.
    wait_at_most(
        Duration::from_secs(60),
        "the ticket to reach orders",
        || async {
            let response = client
                .post(format!("{}/api/orders", ingress()))
                .header("cookie", &buyer)
                .json(&json!({"ticketId": ticket["id"]}))
                .send()
                .await
                .unwrap();
            (response.status() == 201).then_some(())
        },
    )
    .await;
    wait_until("the reservation to reach tickets", || async {
        let current: Value = client
            .get(format!(
                "{}/api/tickets/{}",
                ingress(),
                ticket["id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        current["orderId"].is_string()
    })
    .await;
}

/// A log that passes `LOG_MAX_MB` is moved to `<name>.log.1` and started again, and
/// its service goes on writing at the start of the emptied file (it appends, so no
/// hole is left where the old contents were).
#[tokio::test]
#[ignore = "needs the local stack: scripts/stack-test.sh"]
async fn a_log_past_its_limit_is_moved_aside_and_its_service_writes_on() {
    use std::io::Write as _;

    let limit_mb: u64 = std::env::var("LOG_MAX_MB").unwrap().parse().unwrap();
    let limit = limit_mb * 1024 * 1024;
    let logs = std::path::PathBuf::from(std::env::var("STACK_DIR").unwrap()).join("logs");
    let log = logs.join("auth.log");
    let filler = "a line written to fill the log past its limit\n";
    let lines = usize::try_from(limit).unwrap() / filler.len() + 1000;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(filler.repeat(lines).as_bytes())
        .unwrap();

    let size = || std::fs::metadata(&log).unwrap().len();
    wait_at_most(
        Duration::from_secs(30),
        "auth.log to be moved aside",
        || async { (size() < limit).then_some(()) },
    )
    .await;
    let kept = std::fs::read_to_string(logs.join("auth.log.1")).unwrap();
    assert!(kept.contains(filler), "the old contents are in auth.log.1");

    let client = http_client();
    sign_up(&client).await;
    wait_until("auth to log the sign-up", || async {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("/api/users/signup")
    })
    .await;
    assert!(
        size() < limit,
        "auth writes at the start of its emptied log"
    );
}

/// Prometheus of `make up MONITORING=on`: an instant query's result vector.
async fn prometheus_query(client: &reqwest::Client, query: &str) -> Vec<Value> {
    let base = std::env::var("PROMETHEUS_URL").expect("PROMETHEUS_URL (MONITORING=on)");
    let mut url = reqwest::Url::parse(&format!("{base}/api/v1/query")).unwrap();
    url.query_pairs_mut().append_pair("query", query);
    let answer: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["status"], "success", "{query}: {answer}");
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Each dashboard panel's queries, as Grafana sends them with every service chosen.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = testkit::workspace_root().join("infra/k8s/components/monitoring/dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$service", ".*");
            queries.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    queries
}

/// Signs up a seller and a buyer, lists a ticket, orders and pays for it; returns the
/// order.
async fn purchase(client: &reqwest::Client) -> Value {
    let seller = sign_up(client).await;
    let buyer = sign_up(client).await;
    let ticket: Value = client
        .post(format!("{}/api/tickets", ingress()))
        .header("cookie", &seller)
        .json(&json!({"title": "monitored", "price": 25}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order: Value = wait_until("the ticket to reach orders", || async {
        let response = client
            .post(format!("{}/api/orders", ingress()))
            .header("cookie", &buyer)
            .json(&json!({"ticketId": ticket["id"]}))
            .send()
            .await
            .unwrap();
        if response.status() == 201 {
            response.json::<Value>().await.ok()
        } else {
            None
        }
    })
    .await;
    wait_until("the order to reach payments", || async {
        let response = client
            .post(format!("{}/api/payments", ingress()))
            .header("cookie", &buyer)
            .json(&json!({"token": "tok_visa", "orderId": order["id"]}))
            .send()
            .await
            .unwrap();
        response.status() == 201
    })
    .await;
    order
}

#[tokio::test]
#[ignore = "needs the local stack with MONITORING=on: scripts/stack-test.sh"]
async fn every_dashboard_query_returns_data_after_a_purchase_and_a_parked_event_raises_its_alert() {
    let client = http_client();
    // A rate needs two samples of a series: one before the work and one after. So
    // Prometheus first sees every service, then a first purchase and its order's expiry
    // (EXPIRATION_WINDOW_SECONDS; every order's schedule fires, paid or not) create
    // the series, and a second purchase and expiry, once those were scraped, move them.
    wait_at_most(
        Duration::from_secs(60),
        "Prometheus to scrape every service",
        || async {
            let up = prometheus_query(&client, "up == 1").await;
            up.len() == 6
        },
    )
    .await;
    let fired = || async {
        let fired = prometheus_query(&client, "sum(expirations_fired_total)").await;
        fired
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    for round in ["first", "second"] {
        let before = fired().await;
        purchase(&client).await;
        let what = format!("the {round} purchase's expiry to be scraped");
        wait_at_most(Duration::from_secs(90), &what, || async {
            fired().await > before
        })
        .await;
        // One more scrape after the expiry, so the next round's samples are new ones.
        tokio::time::sleep(Duration::from_secs(6)).await;
    }

    // Every panel's query parses and returns a number over the last minute.
    let queries = dashboard_queries();
    assert!(queries.len() >= 18, "{queries:?}");
    let mut empty = queries.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !empty.is_empty() && std::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for (title, query) in empty {
            // Data: a number, not only NaN (a quantile of no requests).
            let result = prometheus_query(&client, &query).await;
            let finite = result.iter().any(|series| {
                series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            });
            if !finite {
                still.push((title, query));
            }
        }
        empty = still;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(empty.is_empty(), "panels without data: {empty:#?}");

    // An event no consumer can read is parked at once by orders, and the alert on
    // parked events goes pending (it fires after a minute).
    let stack_dir = std::env::var("STACK_DIR").expect("STACK_DIR");
    let password = std::fs::read_to_string(format!("{stack_dir}/nats/passwords/admin")).unwrap();
    let nats = async_nats::ConnectOptions::with_user_and_password("admin".into(), password)
        .connect(format!("127.0.0.1:{}", port_base("NATS_PORT", 4222)))
        .await
        .unwrap();
    let event_id = format!("unreadable-{}", uuid::Uuid::new_v4());
    let publish = async_nats::jetstream::message::PublishMessage::build()
        .payload("not an event".into())
        .message_id(&event_id);
    let jetstream = async_nats::jetstream::new(nats);
    let published = jetstream
        .send_publish("ticket.created", publish)
        .await
        .unwrap()
        .await
        .unwrap();
    let orders_db = format!(
        "postgres://postgres@127.0.0.1:{}/orders",
        port_base("PG_PORT", 55432)
    );
    let db = sqlx::PgPool::connect(&orders_db).await.unwrap();
    wait_until("orders to park the event", || async {
        let parked: i64 =
            sqlx::query_scalar("SELECT count(*) FROM parked_events WHERE event_id = $1")
                .bind(&event_id)
                .fetch_one(&db)
                .await
                .unwrap();
        parked == 1
    })
    .await;
    let alert = wait_at_most(
        Duration::from_secs(60),
        "EventParked to go pending",
        || async {
            let alerts = prometheus_query(&client, r#"ALERTS{alertname="EventParked"}"#).await;
            alerts
                .into_iter()
                .find(|a| a["metric"]["alertstate"] == "pending")
        },
    )
    .await;
    assert_eq!(alert["metric"]["service"], "orders", "{alert}");
    assert_eq!(alert["metric"]["subject"], "ticket.created", "{alert}");
    // The chaos run that follows checks that nothing is parked and that every event
    // of the stream was handled: the planted one goes from both.
    sqlx::query("DELETE FROM parked_events WHERE event_id = $1")
        .bind(&event_id)
        .execute(&db)
        .await
        .unwrap();
    let stream = jetstream.get_stream("TICKETING").await.unwrap();
    stream.delete_message(published.sequence).await.unwrap();
}

/// A service started on its own after `make up` (`scripts/stack.sh restart orders`, from
/// a shell without `up`'s settings) gets the settings `up` was given, not the defaults.
#[tokio::test]
#[ignore = "needs the local stack: scripts/stack-test.sh"]
async fn a_part_started_on_its_own_keeps_the_settings_up_was_given() {
    let root = testkit::workspace_root();
    let stack_dir = std::env::var("STACK_DIR").expect("STACK_DIR");
    let output = Command::new(root.join("scripts/stack.sh"))
        .args(["service-env", "orders"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("STACK_DIR", &stack_dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let env = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = env.lines().collect();
    let expected_port = format!("PORT={}", service_port(3));
    for expected in [
        expected_port.as_str(),
        "RATE_LIMITS=off",
        "MAX_ACTIVE_ORDERS_PER_USER=1000000",
        "EXPIRATION_WINDOW_SECONDS=20",
    ] {
        assert!(lines.contains(&expected), "{expected} missing from: {env}");
    }
}
