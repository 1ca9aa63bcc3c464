use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::events::{ExpirationComplete, Subject};
use sqlx::PgPool;
use testkit::{EventProbe, ServiceProcess, TestDatabase, TestNats, wait_until};
use uuid::Uuid;

use crate::{in_ms, order_expiring_at};

/// The expiration binary as a real process.
fn spawn(database: &TestDatabase, nats: &TestNats) -> ServiceProcess {
    let env = [
        ("DATABASE_URL", database.url.as_str()),
        ("NATS_URL", nats.url.as_str()),
        ("EVENT_ACK_WAIT_SECONDS", "1"),
        ("RUST_LOG", "warn"),
    ];
    ServiceProcess::start(env!("CARGO_BIN_EXE_expiration"), &env)
}

async fn scheduled(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM schedules")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// docs/api.md § Guarantees, 5: SIGKILL while orders are pending; what came
/// due while it was down fires at once after the restart, the rest on time, and every
/// order expires exactly once.
#[tokio::test]
async fn a_killed_expiration_process_loses_nothing_and_fires_each_order_once() {
    let nats = TestNats::start().await;
    let database = TestDatabase::create().await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    let mut probe = EventProbe::subscribe(&nats.url, Subject::ExpirationComplete).await;
    let mut process = spawn(&database, &nats);

    let mut due = HashMap::new();
    for n in 0..40 {
        // Half come due while the process is down, half after it is back.
        let at = if n % 2 == 0 { in_ms(1500) } else { in_ms(5000) };
        due.insert(order_expiring_at(&nats, at).await, at);
    }
    wait_until("all 40 to be scheduled", || async {
        scheduled(&pool).await == 40
    })
    .await;
    // More orders arrive just before the kill: some may be delivered but not yet acknowledged.
    for _ in 0..10 {
        let at = in_ms(2500);
        due.insert(order_expiring_at(&nats, at).await, at);
    }
    process.kill(); // SIGKILL
    tokio::time::sleep(Duration::from_secs(3)).await; // the first batch comes due meanwhile

    process.restart();
    // Events are told apart by their id (Nats-Msg-Id): a relay that died between
    // publishing and recording it publishes the same event again, which JetStream
    // drops and this plain subscription still sees.
    let mut seen = HashMap::<Uuid, std::collections::HashSet<String>>::new();
    while seen.len() < due.len() {
        let fired = probe
            .next::<ExpirationComplete>(Duration::from_secs(20))
            .await
            .expect("every order expires");
        let expires_at = due[&fired.event.order_id];
        assert!(chrono::Utc::now() >= expires_at, "never before its time");
        seen.entry(fired.event.order_id)
            .or_default()
            .insert(fired.id);
    }
    // Nothing new afterwards (a late copy of an event already seen is allowed).
    while let Some(late) = probe
        .next::<ExpirationComplete>(Duration::from_secs(2))
        .await
    {
        let known = seen
            .get(&late.event.order_id)
            .is_some_and(|ids| ids.contains(&late.id));
        assert!(known, "a second expiry for {}", late.event.order_id);
    }
    process.kill();
    assert!(
        seen.values().all(|ids| ids.len() == 1),
        "an order fired twice: {seen:?}"
    );
    let fired: i64 =
        sqlx::query_scalar("SELECT count(*) FROM schedules WHERE fired_at IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(fired, 50);
}

#[test]
fn a_missing_nats_url_stops_the_service_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_expiration"))
        .env_clear()
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "configuration error: environment variable NATS_URL is required but not set"
    );
}
