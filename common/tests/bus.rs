//! The event bus against a real PostgreSQL and a real NATS server (contract §7).
//!
//! Each test gets a fresh database holding the bus tables plus a `handled` table that
//! the test listener writes to, and a private nats-server it can stop and restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use common::config::BusConfig;
use common::db::{Tx, migrate_bus};
use common::events::consumer::{Outcome, apply, durable};
use common::events::stream::{self, Nats, STREAM};
use common::events::{
    Consumers, Event, ExpirationComplete, Handled, Listener, Relay, Subject, append,
};
use common::testing::{EventProbe, TestDatabase, TestNats, eventually, publish_raw};
use futures::StreamExt;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

const SERVICE: &str = "bustest";
const WAIT: Duration = Duration::from_secs(20);

struct Bench {
    pool: PgPool,
    nats: TestNats,
    connection: Nats,
    stop: CancellationToken,
    tasks: TaskTracker,
    _database: TestDatabase,
}

impl Bench {
    async fn start() -> Self {
        let database = TestDatabase::create().await;
        let pool = PgPool::connect(&database.url).await.unwrap();
        migrate_bus(&pool).await.unwrap();
        sqlx::query("CREATE TABLE handled (order_id UUID NOT NULL, instance TEXT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        let nats = TestNats::start().await;
        let connection = stream::connect(&nats.url, "bus-test").await.unwrap();
        Self {
            pool,
            nats,
            connection,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            _database: database,
        }
    }

    fn start_relay(&self) {
        let relay = Relay::new(self.pool.clone(), self.connection.jetstream.clone());
        self.tasks
            .spawn(relay.run(self.stop.clone(), Duration::from_secs(5)));
    }

    fn start_consumer(&self, recorder: Recorder, config: &BusConfig) {
        Consumers::new(SERVICE, self.pool.clone(), self.connection.clone(), config)
            .listen(recorder)
            .spawn(&self.tasks, &self.stop);
    }

    /// Commits one `expiration.complete` event per id, each in its own transaction.
    async fn commit_events(&self, ids: &[Uuid]) {
        for &order_id in ids {
            let mut tx = self.pool.begin().await.unwrap();
            append(&mut tx, &ExpirationComplete { order_id })
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn wait_for_count(&self, sql: &str, expected: i64) {
        let reached = eventually(WAIT, || async { self.count(sql).await == expected }).await;
        assert!(
            reached,
            "`{sql}` is {} after {WAIT:?}, expected {expected}",
            self.count(sql).await
        );
    }

    async fn stream_messages(&self) -> u64 {
        let mut stream = self.connection.jetstream.get_stream(STREAM).await.unwrap();
        stream.info().await.unwrap().state.messages
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn ids(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::new_v4()).collect()
}

fn config(max_deliveries: i64, ack_wait: Duration) -> BusConfig {
    BusConfig {
        max_deliveries,
        ack_wait,
        ..BusConfig::new("unused")
    }
}

/// Records each `expiration.complete` in `handled`; can be told to fail (after doing
/// its database work, which must then be rolled back) or to answer "not yet".
#[derive(Clone)]
struct Recorder {
    instance: &'static str,
    calls: Arc<AtomicU32>,
    failures_left: Arc<AtomicI32>,
    not_yet_left: Arc<AtomicI32>,
}

impl Recorder {
    fn new(instance: &'static str) -> Self {
        Self {
            instance,
            calls: Arc::default(),
            failures_left: Arc::default(),
            not_yet_left: Arc::default(),
        }
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Listener for Recorder {
    type Event = ExpirationComplete;

    async fn handle(&self, tx: &mut Tx, event: ExpirationComplete) -> anyhow::Result<Handled> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        sqlx::query("INSERT INTO handled (order_id, instance) VALUES ($1, $2)")
            .bind(event.order_id)
            .bind(self.instance)
            .execute(&mut **tx)
            .await?;
        if self.failures_left.fetch_sub(1, Ordering::SeqCst) > 0 {
            anyhow::bail!("injected failure after the database work");
        }
        if self.not_yet_left.fetch_sub(1, Ordering::SeqCst) > 0 {
            return Ok(Handled::NotYet("injected: not yet"));
        }
        Ok(Handled::Done)
    }
}

#[tokio::test]
async fn an_event_appended_in_a_rolled_back_transaction_is_never_published() {
    let bench = Bench::start().await;
    let mut probe = EventProbe::subscribe(&bench.nats.url, Subject::ExpirationComplete).await;
    bench.start_relay();

    let (dropped, kept) = (Uuid::new_v4(), Uuid::new_v4());
    let mut tx = bench.pool.begin().await.unwrap();
    append(&mut tx, &ExpirationComplete { order_id: dropped })
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    bench.commit_events(&[kept]).await;

    let first = probe
        .next::<ExpirationComplete>(WAIT)
        .await
        .expect("the committed event");
    assert_eq!(first.event.order_id, kept);
    probe
        .assert_quiet::<ExpirationComplete>(Duration::from_millis(1500))
        .await;
    assert_eq!(bench.count("SELECT count(*) FROM outbox").await, 0);
    assert_eq!(bench.stream_messages().await, 1);
}

#[tokio::test]
async fn the_relay_publishes_in_commit_order_with_the_event_id_as_message_id() {
    let bench = Bench::start().await;
    let mut probe = EventProbe::subscribe(&bench.nats.url, Subject::ExpirationComplete).await;
    bench.start_relay();
    let order = ids(300);
    bench.commit_events(&order).await;

    let mut seen = Vec::new();
    let mut message_ids = std::collections::HashSet::new();
    while seen.len() < order.len() {
        let observed = probe
            .next::<ExpirationComplete>(WAIT)
            .await
            .expect("all events");
        assert!(
            Uuid::parse_str(&observed.id).is_ok(),
            "Nats-Msg-Id is the event id"
        );
        message_ids.insert(observed.id);
        seen.push(observed.event.order_id);
    }
    assert_eq!(seen, order);
    assert_eq!(message_ids.len(), order.len());
    bench.wait_for_count("SELECT count(*) FROM outbox", 0).await;
}

#[tokio::test]
async fn events_committed_while_nats_is_down_are_published_after_it_restarts() {
    let mut bench = Bench::start().await;
    let recorder = Recorder::new("a");
    bench.start_relay();
    bench.start_consumer(recorder.clone(), &config(10, Duration::from_secs(5)));
    bench.commit_events(&ids(5)).await;
    bench
        .wait_for_count("SELECT count(*) FROM handled", 5)
        .await;

    bench.nats.stop().await;
    bench.commit_events(&ids(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        bench.count("SELECT count(*) FROM outbox").await,
        20,
        "kept while NATS is down"
    );

    bench.nats.restart().await;
    bench.wait_for_count("SELECT count(*) FROM outbox", 0).await;
    bench
        .wait_for_count("SELECT count(*) FROM handled", 25)
        .await;
    bench
        .wait_for_count("SELECT count(DISTINCT order_id) FROM handled", 25)
        .await;
}

#[tokio::test]
async fn a_duplicated_delivery_changes_state_once() {
    let bench = Bench::start().await;
    // A tiny duplicate window, so that JetStream stores the same message id twice and
    // it is the consumer that must notice.
    let config_ = jetstream::stream::Config {
        name: STREAM.into(),
        subjects: Subject::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
        duplicate_window: Duration::from_millis(100),
        ..Default::default()
    };
    bench
        .connection
        .jetstream
        .delete_stream(STREAM)
        .await
        .unwrap();
    bench
        .connection
        .jetstream
        .create_stream(config_)
        .await
        .unwrap();

    let event = ExpirationComplete {
        order_id: Uuid::new_v4(),
    };
    let id = Uuid::new_v4().to_string();
    publish_raw(&bench.nats.url, &id, &event).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_raw(&bench.nats.url, &id, &event).await;
    assert_eq!(
        bench.stream_messages().await,
        2,
        "both copies are in the stream"
    );

    let recorder = Recorder::new("a");
    bench.start_consumer(recorder.clone(), &config(10, Duration::from_secs(5)));
    let consumer = durable(
        &bench.connection,
        SERVICE,
        Subject::ExpirationComplete,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let all_acknowledged = eventually(WAIT, || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.unwrap();
            info.ack_floor.stream_sequence == 2 && info.num_ack_pending == 0
        }
    })
    .await;
    assert!(
        all_acknowledged,
        "both deliveries were handled and acknowledged"
    );
    assert_eq!(bench.count("SELECT count(*) FROM handled").await, 1);
    assert_eq!(
        recorder.calls(),
        1,
        "the duplicate never reached the listener"
    );
}

#[tokio::test]
async fn a_failing_handler_is_redelivered_and_then_succeeds_once() {
    let bench = Bench::start().await;
    let recorder = Recorder::new("a");
    recorder.failures_left.store(2, Ordering::SeqCst);
    recorder.not_yet_left.store(2, Ordering::SeqCst);
    bench.start_relay();
    bench.start_consumer(recorder.clone(), &config(10, Duration::from_secs(5)));
    let id = Uuid::new_v4();
    bench.commit_events(&[id]).await;

    bench
        .wait_for_count("SELECT count(*) FROM processed_events", 1)
        .await;
    assert_eq!(
        recorder.calls(),
        5,
        "two failures, two not-yets, one success"
    );
    assert_eq!(
        bench.count("SELECT count(*) FROM handled").await,
        1,
        "failed attempts were rolled back"
    );
    assert_eq!(bench.count("SELECT count(*) FROM parked_events").await, 0);
}

#[tokio::test]
async fn two_instances_of_one_durable_split_the_events_without_double_handling() {
    let bench = Bench::start().await;
    let (a, b) = (Recorder::new("a"), Recorder::new("b"));
    let config = config(10, Duration::from_secs(5));
    bench.start_consumer(a.clone(), &config);
    bench.start_consumer(b.clone(), &config);
    bench.start_relay();
    bench.commit_events(&ids(400)).await;

    bench
        .wait_for_count("SELECT count(*) FROM handled", 400)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bench.count("SELECT count(*) FROM handled").await, 400);
    assert_eq!(
        bench
            .count("SELECT count(DISTINCT order_id) FROM handled")
            .await,
        400
    );
    let by_a = bench
        .count("SELECT count(*) FROM handled WHERE instance = 'a'")
        .await;
    let by_b = bench
        .count("SELECT count(*) FROM handled WHERE instance = 'b'")
        .await;
    assert!(
        by_a > 0 && by_b > 0,
        "both instances took part: a={by_a} b={by_b}"
    );
    assert_eq!(u64::from(a.calls() + b.calls()), 400);
}

#[tokio::test]
async fn an_event_that_keeps_failing_is_parked_not_dropped() {
    let bench = Bench::start().await;
    let recorder = Recorder::new("a");
    recorder.failures_left.store(i32::MAX, Ordering::SeqCst);
    bench.start_relay();
    bench.start_consumer(recorder.clone(), &config(3, Duration::from_secs(5)));
    let id = Uuid::new_v4();
    bench.commit_events(&[id]).await;

    bench
        .wait_for_count("SELECT count(*) FROM parked_events", 1)
        .await;
    let (payload, deliveries, error): (String, i64, String) =
        sqlx::query_as("SELECT payload, deliveries, error FROM parked_events")
            .fetch_one(&bench.pool)
            .await
            .unwrap();
    assert!(payload.contains(&id.to_string()));
    assert_eq!(deliveries, 3);
    assert!(error.contains("injected failure"), "{error}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(recorder.calls(), 3, "no delivery after parking");
    assert_eq!(bench.count("SELECT count(*) FROM handled").await, 0);
}

#[tokio::test]
async fn an_unreadable_event_is_parked_at_once() {
    let bench = Bench::start().await;
    let recorder = Recorder::new("a");
    bench.start_consumer(recorder.clone(), &config(10, Duration::from_secs(5)));
    let publish = jetstream::message::PublishMessage::build()
        .payload("{\"orderId\": \"not-a-uuid\"}".into())
        .message_id("bad-1");
    bench
        .connection
        .jetstream
        .send_publish(Subject::ExpirationComplete.as_str(), publish)
        .await
        .unwrap()
        .await
        .unwrap();

    bench
        .wait_for_count(
            "SELECT count(*) FROM parked_events WHERE event_id = 'bad-1' AND deliveries = 1",
            1,
        )
        .await;
    assert_eq!(recorder.calls(), 0);
}

#[tokio::test]
async fn a_handler_that_committed_but_never_acknowledged_is_redelivered_and_changes_nothing() {
    let bench = Bench::start().await;
    let ack_wait = Duration::from_secs(1);
    let consumer = durable(
        &bench.connection,
        SERVICE,
        Subject::ExpirationComplete,
        ack_wait,
    )
    .await
    .unwrap();
    let order_id = Uuid::new_v4();
    publish_raw(&bench.nats.url, "evt-1", &ExpirationComplete { order_id }).await;

    // The first instance applies and commits, then "crashes" before acknowledging.
    let recorder = Recorder::new("crashed");
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let message = batch.next().await.unwrap().unwrap();
    let event: ExpirationComplete = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        apply(&bench.pool, &recorder, "evt-1", event).await.unwrap(),
        Outcome::Done
    );
    drop(message);

    // A healthy instance gets the redelivery once the ack wait has passed.
    let healthy = Recorder::new("healthy");
    bench.start_consumer(healthy.clone(), &config(10, ack_wait));
    let settled = eventually(WAIT, || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.unwrap();
            info.ack_floor.stream_sequence == 1 && info.num_ack_pending == 0
        }
    })
    .await;
    assert!(settled, "the redelivery was acknowledged");
    assert_eq!(bench.count("SELECT count(*) FROM handled").await, 1);
    assert_eq!(
        healthy.calls(),
        0,
        "the redelivery was recognised as handled"
    );
}

#[tokio::test]
async fn stopping_the_relay_flushes_what_is_committed() {
    let bench = Bench::start().await;
    bench.commit_events(&ids(50)).await;
    let relay = Relay::new(bench.pool.clone(), bench.connection.jetstream.clone());
    let stop = CancellationToken::new();
    stop.cancel();
    relay.run(stop, Duration::from_secs(10)).await;
    assert_eq!(bench.count("SELECT count(*) FROM outbox").await, 0);
    assert_eq!(bench.stream_messages().await, 50);
}

#[test]
fn redelivery_backs_off() {
    use common::events::consumer::redelivery_delay;
    assert_eq!(redelivery_delay(1), Duration::from_millis(50));
    assert_eq!(redelivery_delay(2), Duration::from_millis(100));
    assert_eq!(redelivery_delay(50), Duration::from_secs(5));
    assert_eq!(ExpirationComplete::SUBJECT, Subject::ExpirationComplete);
}
