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
