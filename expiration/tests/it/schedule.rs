use std::collections::HashMap;
use std::time::Duration;

use common::events::{ExpirationComplete, Subject};
use testkit::{EventProbe, TestDatabase, TestNats};
use uuid::Uuid;

use crate::{in_ms, order_expiring_at, start};

#[tokio::test]
async fn an_order_expires_at_its_time_not_before_and_within_a_second_after() {
    let nats = TestNats::start().await;
    let database = TestDatabase::create().await;
    let _expiration = start(&database, &nats).await;
    let mut probe = EventProbe::subscribe(&nats.url, Subject::ExpirationComplete).await;

    let mut due = HashMap::new();
    for delay_ms in [1500, 700, 1100, 300] {
        let at = in_ms(delay_ms);
        due.insert(order_expiring_at(&nats, at).await, at);
    }
    for _ in 0..due.len() {
        let fired = probe
            .next::<ExpirationComplete>(Duration::from_secs(5))
            .await
            .expect("an expiry");
        let now = chrono::Utc::now();
        let expires_at = due
            .remove(&fired.event.order_id)
            .expect("a scheduled order, once");
        let lateness = now - expires_at;
        assert!(
            lateness >= chrono::TimeDelta::zero(),
            "fired {lateness} early"
        );
        assert!(
            lateness < chrono::TimeDelta::seconds(1),
            "fired {lateness} late"
        );
    }
    probe
        .assert_quiet::<ExpirationComplete>(Duration::from_millis(1000))
        .await;
}

#[tokio::test]
async fn an_order_already_overdue_expires_at_once() {
    let nats = TestNats::start().await;
    let database = TestDatabase::create().await;
    let _expiration = start(&database, &nats).await;
    let mut probe = EventProbe::subscribe(&nats.url, Subject::ExpirationComplete).await;
    let order = order_expiring_at(&nats, in_ms(-60_000)).await;
    let fired = probe
        .next::<ExpirationComplete>(Duration::from_secs(2))
        .await
        .expect("at once");
    assert_eq!(fired.event.order_id, order);
}

#[tokio::test]
async fn two_instances_never_fire_one_order_twice() {
    let nats = TestNats::start().await;
    let database = TestDatabase::create().await;
    let _a = start(&database, &nats).await;
    let _b = start(&database, &nats).await;
    let mut probe = EventProbe::subscribe(&nats.url, Subject::ExpirationComplete).await;

    let mut orders = std::collections::HashSet::new();
    for n in 0..300 {
        // Many due at the very same instant, the rest spread over a second.
        let at = if n % 2 == 0 {
            in_ms(1500)
        } else {
            in_ms(1000 + n)
        };
        orders.insert(order_expiring_at(&nats, at).await);
    }
    // Events are told apart by their id (Nats-Msg-Id): a relay that died between
    // publishing and recording it publishes the same event again, which JetStream
    // drops and this plain subscription still sees.
    let mut seen = HashMap::<Uuid, std::collections::HashSet<String>>::new();
    while seen.len() < orders.len() {
        let fired = probe
            .next::<ExpirationComplete>(Duration::from_secs(10))
            .await
            .expect("every order expires");
        seen.entry(fired.event.order_id)
            .or_default()
            .insert(fired.id);
    }
    probe
        .assert_quiet::<ExpirationComplete>(Duration::from_millis(1500))
        .await;
    assert!(
        seen.values().all(|ids| ids.len() == 1),
        "an order fired twice"
    );
    assert_eq!(
        seen.keys()
            .copied()
            .collect::<std::collections::HashSet<_>>(),
        orders
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let nats = TestNats::start().await;
    let database = TestDatabase::create().await;
    let expiration = start(&database, &nats).await;
    assert_eq!(expiration.ops("/healthz").await.status, 200);
    assert_eq!(expiration.ops("/readyz").await.status, 200);
    expiration
        .get("/api/anything", None)
        .await
        .assert_error(404, "Not Found");
    // The bus's own gauges: the relay publishes (and reports its backlog), the bus is
    // connected, and the scheduler and the relay run.
    let expected = [
        "outbox_backlog 0",
        "nats_connected 1",
        r#"worker_up{worker="scheduler"} 1"#,
        r#"worker_up{worker="relay"} 1"#,
    ];
    let metrics = testkit::wait_until("the bus's gauges in /metrics", || async {
        let metrics = expiration.metrics().await;
        expected
            .iter()
            .all(|line| metrics.contains(line))
            .then_some(metrics)
    })
    .await;
    assert!(metrics.contains("http_requests_total"), "{metrics}");
}
