//! The event bus against a real PostgreSQL and a real NATS server (docs/api.md § Guarantees).
//!
//! Each test gets a fresh database holding the bus tables plus a `handled` table that
//! the test listener writes to, and a private nats-server it can stop and restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use bus::parked::Redriven;
use bus::prune::{BUS_TABLES, Pruner};
use bus::service::migrate as migrate_bus;
use bus::stream::{self, Nats, STREAM, StreamSettings};
use bus::{
    BusConfig, Consumers, Handled, Listener, Listeners, Relay, Staged, Tx, append, append_all,
    unless_next,
};
use common::events::{ExpirationComplete, Subject, TicketCreated, TicketUpdated};
use common::money::Price;
use kit::supervisor::{Health, Workers};
use sqlx::PgPool;
use testkit::bus::{all_acknowledged, apply_without_acknowledging, take_delivery};
use testkit::{EventProbe, TestDatabase, TestNats, TestNatsCluster, WAIT, publish_raw, wait_until};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SERVICE: &str = "bustest";

struct Bench {
    pool: PgPool,
    nats: TestNats,
    connection: Nats,
    stop: CancellationToken,
    workers: Workers,
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
        let connection = stream::connect(&nats.url, "bus-test", &StreamSettings::default())
            .await
            .unwrap();
        Self {
            pool,
            nats,
            connection,
            stop: CancellationToken::new(),
            workers: Workers::new(SERVICE, Health::default()),
            _database: database,
        }
    }

    fn start_relay(&self) {
        self.run_relay(Relay::new(
            self.pool.clone(),
            self.connection.jetstream.clone(),
        ));
    }

    /// A relay that polls only once an hour, so that only commits' own wake-ups get
    /// events out in time; returns once its first look at the outbox is over.
    async fn start_relay_woken_by_commits_only(&self) {
        self.run_relay(
            Relay::new(self.pool.clone(), self.connection.jetstream.clone())
                .poll_every(Duration::from_secs(3600)),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    fn run_relay(&self, relay: Relay) {
        self.workers
            .supervise("relay", self.stop.clone(), move |stop| {
                relay.clone().run(stop, Duration::from_secs(5))
            });
    }

    fn consumers<L: Listener>(&self, listener: L, config: &BusConfig) -> Consumers {
        Consumers::new(
            SERVICE,
            self.pool.clone(),
            config,
            Listeners::new().listen(listener),
        )
    }

    fn start_consumer<L: Listener>(&self, listener: L, config: &BusConfig) {
        self.consumers(listener, config)
            .spawn(&self.workers, &self.connection, &self.stop);
    }

    /// Commits one `expiration.complete` event per id, each in its own transaction.
    async fn commit_events(&self, ids: &[Uuid]) {
        for &order_id in ids {
            let mut tx = Tx::begin(&self.pool).await.unwrap();
            append(&mut tx, &ExpirationComplete { order_id })
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    async fn wait_for_count(&self, sql: &'static str, expected: i64) {
        let what = format!("`{sql}` to be {expected}");
        wait_until(&what, || async { self.count(sql).await == expected }).await;
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

/// Bus settings for tests: quick retries, `max_failures` failures before parking, and
/// batches (`EVENT_BATCH=32`), so that every test here runs through them.
fn config(max_failures: i64, ack_wait: Duration) -> BusConfig {
    BusConfig {
        max_failures,
        ack_wait,
        retry_max_delay: Duration::from_millis(200),
        batch: 32,
        ..BusConfig::for_tests("unused")
    }
}

/// Records each `expiration.complete` in `handled`; can be told to fail (after doing
/// its database work, which must then be rolled back), to answer "not yet", or to
/// panic on one order.
#[derive(Clone)]
struct Recorder {
    instance: &'static str,
    calls: Arc<AtomicU32>,
    failures_left: Arc<AtomicI32>,
    not_yet_left: Arc<AtomicI32>,
    panic_on: Option<Uuid>,
}

impl Recorder {
    fn new(instance: &'static str) -> Self {
        Self {
            instance,
            calls: Arc::default(),
            failures_left: Arc::default(),
            not_yet_left: Arc::default(),
            panic_on: None,
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
        assert_ne!(Some(event.order_id), self.panic_on, "injected panic");
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
    let mut tx = Tx::begin(&bench.pool).await.unwrap();
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

/// `append_all` writes many events in one statement: they are published in the order
/// given, with the commit's wake-up alone (the relay polls once an hour), and a
/// rollback takes all of them back.
#[tokio::test]
async fn events_appended_together_are_published_in_order_or_rolled_back_together() {
    let bench = Bench::start().await;
    let mut probe = EventProbe::subscribe(&bench.nats.url, Subject::ExpirationComplete).await;
    bench.start_relay_woken_by_commits_only().await;
    let staged = |ids: &[Uuid]| {
        ids.iter()
            .map(|&order_id| Staged::new(&ExpirationComplete { order_id }).unwrap())
            .collect::<Vec<_>>()
    };

    let (dropped, kept) = (ids(5), ids(50));
    let mut tx = Tx::begin(&bench.pool).await.unwrap();
    append_all(&mut tx, staged(&dropped)).await.unwrap();
    tx.rollback().await.unwrap();
    let mut tx = Tx::begin(&bench.pool).await.unwrap();
    append_all(&mut tx, Vec::new()).await.unwrap();
    append_all(&mut tx, staged(&kept)).await.unwrap();
    tx.commit().await.unwrap();

    let mut published = Vec::new();
    for _ in &kept {
        let delivery = probe
            .next::<ExpirationComplete>(WAIT)
            .await
            .expect("every committed event, woken by the commit");
        published.push(delivery.event.order_id);
    }
    assert_eq!(published, kept, "in the order appended");
    probe
        .assert_quiet::<ExpirationComplete>(Duration::from_millis(1000))
        .await;
    assert_eq!(bench.stream_messages().await, 50);
}

/// The relay polls once an hour here, so only the commits' own wake-ups can get the
/// events out in time: eight writers commit 200 events while the relay is busy
/// publishing the previous ones (the window where a wake-up could be lost).
#[tokio::test]
async fn every_commit_wakes_the_relay_even_while_it_is_publishing() {
    let bench = Bench::start().await;
    let mut probe = EventProbe::subscribe(&bench.nats.url, Subject::ExpirationComplete).await;
    bench.start_relay_woken_by_commits_only().await;

    let committed = ids(200);
    let writers = committed
        .chunks(25)
        .map(|chunk| bench.commit_events(chunk))
        .collect::<Vec<_>>();
    futures::future::join_all(writers).await;

    let mut published = HashSet::new();
    while published.len() < committed.len() {
        let event = probe
            .next::<ExpirationComplete>(WAIT)
            .await
            .unwrap_or_else(|| panic!("only {} of 200 events were published", published.len()));
        published.insert(event.event.order_id);
    }
    assert_eq!(published, committed.into_iter().collect());
}

/// An event written by a statement of the caller's own (not [`append`] in a
/// transaction) is published too, and `Staged::execute` wakes the relay (which polls
/// once an hour here) once the statement has run; one that failed with its statement
/// is never published.
#[tokio::test]
async fn an_event_written_with_its_change_in_one_statement_wakes_the_relay() {
    let bench = Bench::start().await;
    let mut probe = EventProbe::subscribe(&bench.nats.url, Subject::ExpirationComplete).await;
    bench.start_relay_woken_by_commits_only().await;

    let write = |order_id: Uuid, fail: bool| {
        let pool = bench.pool.clone();
        async move {
            let staged = Staged::new(&ExpirationComplete { order_id }).unwrap();
            // The same shape as a real write: the event rides in a `WITH` clause of
            // the change's statement (here a change that can be made to fail).
            let statement = sqlx::query(
                "WITH event AS (
                     INSERT INTO outbox (event_id, subject, payload) VALUES ($1, $2, $3::text::json)
                 )
                 SELECT 1 / $4::int",
            )
            .bind(staged.event_id)
            .bind(staged.subject)
            .bind(staged.payload.clone())
            .bind(if fail { 0 } else { 1 });
            if let Err(error) = staged.execute(&pool, statement).await {
                assert!(fail, "{error}");
            }
        }
    };
    let failed = Uuid::new_v4();
    write(failed, true).await;
    let order_id = Uuid::new_v4();
    write(order_id, false).await;

    let event = probe
        .next::<ExpirationComplete>(Duration::from_secs(10))
        .await
        .expect("the event is published without waiting for a poll");
    assert_eq!(
        event.event.order_id, order_id,
        "the failed statement's event is not"
    );
    bench.wait_for_count("SELECT count(*) FROM outbox", 0).await;
}

#[tokio::test]
async fn the_relay_publishes_in_commit_order_with_the_event_id_as_message_id() {
    let bench = Bench::start().await;
    let mut probe = EventProbe::subscribe(&bench.nats.url, Subject::ExpirationComplete).await;
    bench.start_relay();
    let order = ids(300);
    bench.commit_events(&order).await;

    let mut seen = Vec::new();
    let mut message_ids = HashSet::new();
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

/// Commits one `expiration.complete` event per id, all in one transaction.
async fn commit_together(pool: &PgPool, ids: &[Uuid]) {
    let mut tx = Tx::begin(pool).await.unwrap();
    for &order_id in ids {
        append(&mut tx, &ExpirationComplete { order_id })
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

/// The stream's messages from the first, with their headers, in stream order.
async fn stored(bench: &Bench) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let stream = bench.connection.jetstream.get_stream(STREAM).await.unwrap();
    let mut messages = Vec::new();
    for seq in 1..=bench.stream_messages().await {
        messages.push(stream.get_raw_message(seq).await.unwrap());
    }
    messages
}

fn order_id_of(message: &async_nats::jetstream::message::StreamMessage) -> Uuid {
    serde_json::from_slice::<ExpirationComplete>(&message.payload)
        .unwrap()
        .order_id
}

#[tokio::test]
async fn a_batch_of_committed_events_is_stored_as_one_atomic_batch() {
    let bench = Bench::start().await;
    let order = ids(100);
    commit_together(&bench.pool, &order).await;
    bench.start_relay();
    bench.wait_for_count("SELECT count(*) FROM outbox", 0).await;

    let messages = stored(&bench).await;
    assert_eq!(messages.iter().map(order_id_of).collect::<Vec<_>>(), order);
    let batches: HashSet<_> = messages
        .iter()
        .map(|message| {
            message
                .headers
                .get(async_nats::header::NATS_BATCH_ID)
                .map(|id| id.to_string())
        })
        .collect();
    assert_eq!(batches.len(), 1, "one batch id for the lot: {batches:?}");
    assert!(
        batches.iter().all(Option::is_some),
        "stored as an atomic batch"
    );
}

#[tokio::test]
async fn events_of_a_batch_already_in_the_stream_are_stored_once_and_in_order() {
    let bench = Bench::start().await;
    let order = ids(10);
    commit_together(&bench.pool, &order).await;
    // A relay that published the first three and died before deleting them: the
    // server refuses an atomic batch holding their ids again.
    let published: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT event_id, (payload->>'orderId')::uuid FROM outbox ORDER BY seq LIMIT 3",
    )
    .fetch_all(&bench.pool)
    .await
    .unwrap();
    for (event_id, order_id) in published {
        publish_raw(
            &bench.nats.url,
            &event_id.to_string(),
            &ExpirationComplete { order_id },
        )
        .await;
    }
    bench.start_relay();
    bench.wait_for_count("SELECT count(*) FROM outbox", 0).await;

    let messages = stored(&bench).await;
    assert_eq!(messages.iter().map(order_id_of).collect::<Vec<_>>(), order);
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
    wait_until("both deliveries to be handled and acknowledged", || {
        all_acknowledged(&bench.connection, SERVICE, Subject::ExpirationComplete, 2)
    })
    .await;
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
    let (payload, failures, error): (String, i64, String) =
        sqlx::query_as("SELECT payload, failures, error FROM parked_events")
            .fetch_one(&bench.pool)
            .await
            .unwrap();
    assert!(payload.contains(&id.to_string()));
    assert_eq!(failures, 3);
    assert!(error.contains("injected failure"), "{error}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(recorder.calls(), 3, "no delivery after parking");
    assert_eq!(bench.count("SELECT count(*) FROM handled").await, 0);
}

/// Sleeps in its transaction for `for_` before recording the event, as a handler
/// stalled on a slow database would.
#[derive(Clone)]
struct Slow {
    for_: Duration,
    inner: Recorder,
}

impl Listener for Slow {
    type Event = ExpirationComplete;

    async fn handle(&self, tx: &mut Tx, event: ExpirationComplete) -> anyhow::Result<Handled> {
        tokio::time::sleep(self.for_).await;
        self.inner.handle(tx, event).await
    }
}

/// A delivery whose handling outlasts the ack wait is reported in progress meanwhile
/// (every half ack wait), so JetStream does not redeliver it while it runs: each
/// event is delivered once (the consumer's delivery count equals the stream's).
#[tokio::test]
async fn a_delivery_handled_for_longer_than_the_ack_wait_is_not_redelivered_meanwhile() {
    let bench = Bench::start().await;
    let ack_wait = Duration::from_secs(1);
    let slow = Slow {
        for_: ack_wait * 2,
        inner: Recorder::new("slow"),
    };
    bench.commit_events(&ids(3)).await;
    bench.start_consumer(slow.clone(), &config(10, ack_wait));
    bench.start_relay();
    let subject = Subject::ExpirationComplete;
    wait_until("the three slow deliveries to be acknowledged", || {
        all_acknowledged(&bench.connection, SERVICE, subject, 3)
    })
    .await;
    assert_eq!(bench.count("SELECT count(*) FROM handled").await, 3);
    let info = testkit::bus::consumer_info(&bench.connection, SERVICE, subject)
        .await
        .unwrap();
    assert_eq!(
        info.delivered.consumer_sequence, 3,
        "deliveries, redeliveries included"
    );
    assert_eq!(slow.inner.calls(), 3);
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
            "SELECT count(*) FROM parked_events WHERE event_id = 'bad-1' AND failures = 1",
            1,
        )
        .await;
    assert_eq!(recorder.calls(), 0);
}

#[tokio::test]
async fn a_handler_that_committed_but_never_acknowledged_is_redelivered_and_changes_nothing() {
    let bench = Bench::start().await;
    let ack_wait = Duration::from_secs(1);
    let order_id = Uuid::new_v4();
    publish_raw(&bench.nats.url, "evt-1", &ExpirationComplete { order_id }).await;

    // The first instance applies and commits, then "crashes" before acknowledging.
    let recorder = Recorder::new("crashed");
    let subject = Subject::ExpirationComplete;
    let message = take_delivery(&bench.connection, SERVICE, subject, ack_wait).await;
    let event: ExpirationComplete = serde_json::from_slice(&message.payload).unwrap();
    assert!(apply_without_acknowledging(&bench.pool, &recorder, "evt-1", event).await);
    drop(message);

    // A healthy instance gets the redelivery once the ack wait has passed.
    let healthy = Recorder::new("healthy");
    bench.start_consumer(healthy.clone(), &config(10, ack_wait));
    wait_until("the redelivery to be acknowledged", || {
        all_acknowledged(&bench.connection, SERVICE, subject, 1)
    })
    .await;
    assert_eq!(bench.count("SELECT count(*) FROM handled").await, 1);
    assert_eq!(
        healthy.calls(),
        0,
        "the redelivery was recognised as handled"
    );
}

/// Two replicas' relays share the outbox's lock. One whose NATS stops answering (a
/// replica cut off from NATS: its connection stays open, nothing comes back) must
/// not hold up the other's: events committed meanwhile are published by the replica
/// that can reach NATS, within seconds.
#[tokio::test]
async fn a_relay_cut_off_from_nats_does_not_hold_up_the_other_replicas_relay() {
    let bench = Bench::start().await;
    let mut cut_off = TestNats::start().await;
    let unanswered = stream::connect(&cut_off.url, "bus-test-cut-off", &StreamSettings::default())
        .await
        .unwrap();
    cut_off.freeze().await;
    // The cut-off replica's relay takes the lock first, on the first event.
    bench.run_relay(Relay::new(bench.pool.clone(), unanswered.jetstream.clone()));
    let started = std::time::Instant::now();
    bench.commit_events(&ids(1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    bench.start_relay();
    for _ in 0..10 {
        bench.commit_events(&ids(4)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bench.wait_for_count("SELECT count(*) FROM outbox", 0).await;
    let took = started.elapsed();
    assert_eq!(bench.stream_messages().await, 41);
    assert!(
        took < bus::outbox::ACK_TIMEOUT + Duration::from_secs(2),
        "the events waited {took:?} for the relay that cannot reach NATS"
    );
    cut_off.thaw().await;
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

#[tokio::test]
async fn a_panicking_handler_is_a_failed_delivery_and_the_rest_is_handled() {
    let bench = Bench::start().await;
    let poison = Uuid::new_v4();
    let recorder = Recorder {
        panic_on: Some(poison),
        ..Recorder::new("a")
    };
    bench.start_relay();
    bench.start_consumer(recorder.clone(), &config(3, Duration::from_secs(5)));
    let mut events = ids(20);
    events.insert(7, poison);
    bench.commit_events(&events).await;

    bench
        .wait_for_count("SELECT count(*) FROM parked_events", 1)
        .await;
    bench
        .wait_for_count("SELECT count(*) FROM handled", 20)
        .await;
    let (payload, failures, error): (String, i64, String) =
        sqlx::query_as("SELECT payload, failures, error FROM parked_events")
            .fetch_one(&bench.pool)
            .await
            .unwrap();
    assert!(payload.contains(&poison.to_string()));
    assert_eq!(failures, 3);
    assert!(error.contains("the handler panicked: "), "{error}");
    let poisoned: i64 = sqlx::query_scalar("SELECT count(*) FROM handled WHERE order_id = $1")
        .bind(poison)
        .fetch_one(&bench.pool)
        .await
        .unwrap();
    assert_eq!(poisoned, 0, "the panicking attempts were rolled back");

    // The consumer carries on.
    bench.commit_events(&ids(5)).await;
    bench
        .wait_for_count("SELECT count(*) FROM handled", 25)
        .await;
    assert!(bench.workers.health().failing().is_empty());
}

/// A replica of "tickets" (`ticket.created` / `ticket.updated`) that applies versions
/// strictly in order, for the tests of waiting events.
#[derive(Clone, Default)]
struct Replica {
    updates_seen: Arc<AtomicU32>,
}

impl Listener for Replica {
    type Event = TicketUpdated;

    async fn handle(&self, tx: &mut Tx, event: TicketUpdated) -> anyhow::Result<Handled> {
        self.updates_seen.fetch_add(1, Ordering::SeqCst);
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM replica WHERE id = $1 FOR UPDATE")
                .bind(event.id)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some(answer) = unless_next(version, event.version) {
            return Ok(answer);
        }
        sqlx::query("UPDATE replica SET version = $2, title = $3 WHERE id = $1")
            .bind(event.id)
            .bind(event.version)
            .bind(&event.title)
            .execute(&mut **tx)
            .await?;
        Ok(Handled::Done)
    }
}

struct ReplicaCreated;

impl Listener for ReplicaCreated {
    type Event = TicketCreated;

    async fn handle(&self, tx: &mut Tx, event: TicketCreated) -> anyhow::Result<Handled> {
        sqlx::query("INSERT INTO replica (id, version, title) VALUES ($1, $2, $3)")
            .bind(event.id)
            .bind(event.version)
            .bind(&event.title)
            .execute(&mut **tx)
            .await?;
        Ok(Handled::Done)
    }
}

#[tokio::test]
async fn an_event_waiting_for_its_predecessor_is_never_parked() {
    let bench = Bench::start().await;
    sqlx::query(
        "CREATE TABLE replica (id UUID PRIMARY KEY, version BIGINT NOT NULL, title TEXT NOT NULL)",
    )
    .execute(&bench.pool)
    .await
    .unwrap();
    // Parking after 3 failures and retrying every 200 ms at most: the old rule parked
    // an event after 3 deliveries, waiting or not; a delivery limit on the consumer
    // (JetStream's max_deliver) would drop it silently after that many.
    let config = config(3, Duration::from_secs(5));
    let replica = Replica::default();
    let listeners = Listeners::new()
        .listen(replica.clone())
        .listen(ReplicaCreated);
    Consumers::new(SERVICE, bench.pool.clone(), &config, listeners).spawn(
        &bench.workers,
        &bench.connection,
        &bench.stop,
    );

    let (id, user_id) = (Uuid::new_v4(), Uuid::new_v4());
    let price = Price::from_cents(100).unwrap();
    let updated = |version: i64| TicketUpdated {
        id,
        version,
        title: format!("v{version}"),
        price,
        user_id,
        order_id: None,
    };
    publish_raw(&bench.nats.url, "update-2", &updated(2)).await;
    publish_raw(&bench.nats.url, "update-1", &updated(1)).await;
    // Thirty deliveries each: past any delivery limit a consumer might have been given
    // (and ten times the parking limit).
    wait_until("thirty deliveries of each waiting update", || async {
        replica.updates_seen.load(Ordering::SeqCst) >= 60
    })
    .await;
    assert_eq!(bench.count("SELECT count(*) FROM parked_events").await, 0);
    for subject in [Subject::TicketUpdated, Subject::TicketCreated] {
        let info = testkit::bus::consumer_info(&bench.connection, SERVICE, subject)
            .await
            .unwrap();
        assert_eq!(info.config.max_deliver, -1, "{subject}: no delivery limit");
    }

    let created = TicketCreated {
        id,
        version: 0,
        title: "v0".into(),
        price,
        user_id,
    };
    publish_raw(&bench.nats.url, "created", &created).await;
    bench
        .wait_for_count("SELECT coalesce(max(version), -1) FROM replica", 2)
        .await;
    let title: String = sqlx::query_scalar("SELECT title FROM replica")
        .fetch_one(&bench.pool)
        .await
        .unwrap();
    assert_eq!(title, "v2");
    assert_eq!(bench.count("SELECT count(*) FROM parked_events").await, 0);
    assert_eq!(bench.count("SELECT count(*) FROM event_failures").await, 0);
}

#[tokio::test]
async fn a_parked_event_can_be_re_driven_once_its_cause_is_fixed() {
    let bench = Bench::start().await;
    let recorder = Recorder::new("a");
    recorder.failures_left.store(3, Ordering::SeqCst);
    let config = config(3, Duration::from_secs(5));
    bench.start_relay();
    bench.start_consumer(recorder.clone(), &config);
    let order_id = Uuid::new_v4();
    bench.commit_events(&[order_id]).await;
    bench
        .wait_for_count("SELECT count(*) FROM parked_events", 1)
        .await;
    assert_eq!(bench.count("SELECT count(*) FROM event_failures").await, 0);

    // The operator's view, through the same listeners as the service.
    let operator = bench.consumers(recorder.clone(), &config);
    let parked = operator.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].subject, "expiration.complete");
    assert_eq!(parked[0].failures, 3);
    assert!(parked[0].error.contains("injected failure"));

    // The cause is gone (failures_left is spent): re-driving applies it once.
    assert_eq!(
        operator.redrive(parked[0].id).await.unwrap(),
        Redriven::Applied
    );
    assert_eq!(bench.count("SELECT count(*) FROM handled").await, 1);
    assert_eq!(bench.count("SELECT count(*) FROM parked_events").await, 0);
    assert!(operator.redrive(parked[0].id).await.is_err(), "it is gone");

    // A parked event that was handled meanwhile is recognised and only removed.
    sqlx::query(
        "INSERT INTO parked_events (event_id, subject, payload, failures, error)
         SELECT event_id, subject, $1, 1, 'copy' FROM processed_events",
    )
    .bind(serde_json::json!({ "orderId": order_id }).to_string())
    .execute(&bench.pool)
    .await
    .unwrap();
    let results = operator.redrive_all().await.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].1, Redriven::AlreadyHandled);
    assert_eq!(bench.count("SELECT count(*) FROM handled").await, 1);
}

#[tokio::test]
async fn pruning_removes_bookkeeping_past_the_horizon_and_keeps_the_rest() {
    let bench = Bench::start().await;
    let recent = Uuid::new_v4();
    // More old rows than one batch deletes (5,000): the pruner goes round again.
    sqlx::query(
        "INSERT INTO processed_events (event_id, subject, processed_at)
         SELECT 'bulk-' || n, 'expiration.complete', now() - interval '10 days'
         FROM generate_series(1, 5003) AS n",
    )
    .execute(&bench.pool)
    .await
    .unwrap();
    for (event_id, age) in [
        ("old-1", "8 days"),
        ("old-2", "30 days"),
        ("recent-1", "6 days"),
        (&*recent.to_string(), "1 hour"),
    ] {
        sqlx::query(
            "INSERT INTO processed_events (event_id, subject, processed_at)
             VALUES ($1, 'expiration.complete', now() - $2::interval)",
        )
        .bind(event_id)
        .bind(age)
        .execute(&bench.pool)
        .await
        .unwrap();
    }
    for (event_id, age) in [("parked-old", "9 days"), ("parked-new", "1 day")] {
        sqlx::query(
            "INSERT INTO parked_events (event_id, subject, payload, failures, error, parked_at)
             VALUES ($1, 'expiration.complete', '{}', 1, 'x', now() - $2::interval)",
        )
        .bind(event_id)
        .bind(age)
        .execute(&bench.pool)
        .await
        .unwrap();
    }
    for (event_id, age) in [("failing-old", "8 days"), ("failing-new", "2 hours")] {
        sqlx::query(
            "INSERT INTO event_failures (event_id, subject, failures, last_error, last_failed_at)
             VALUES ($1, 'expiration.complete', 2, 'x', now() - $2::interval)",
        )
        .bind(event_id)
        .bind(age)
        .execute(&bench.pool)
        .await
        .unwrap();
    }

    let week = Duration::from_secs(7 * 24 * 3600);
    let pruner = BUS_TABLES
        .iter()
        .fold(Pruner::new(bench.pool.clone(), week), |p, &(t, c)| {
            p.table(t, c)
        });
    let deleted = pruner.prune().await.unwrap();
    assert_eq!(
        deleted,
        [
            ("processed_events", 5003 + 2),
            ("event_failures", 1),
            ("parked_events", 1)
        ],
        "every bus table, the bulk in two batches"
    );
    let pool = &bench.pool;
    let kept = |sql: &'static str| async move {
        sqlx::query_scalar::<_, String>(sql)
            .fetch_all(pool)
            .await
            .unwrap()
    };
    assert_eq!(
        kept("SELECT event_id FROM processed_events ORDER BY processed_at").await,
        ["recent-1".to_owned(), recent.to_string()]
    );
    assert_eq!(
        kept("SELECT event_id FROM parked_events").await,
        ["parked-new"]
    );
    assert_eq!(
        kept("SELECT event_id FROM event_failures").await,
        ["failing-new"]
    );

    // A copy of an event handled within the horizon is still recognised.
    let recorder = Recorder::new("a");
    bench.start_consumer(recorder.clone(), &config(3, Duration::from_secs(5)));
    publish_raw(
        &bench.nats.url,
        &recent.to_string(),
        &ExpirationComplete { order_id: recent },
    )
    .await;
    wait_until("the copy to be acknowledged", || {
        all_acknowledged(&bench.connection, SERVICE, Subject::ExpirationComplete, 1)
    })
    .await;
    assert_eq!(recorder.calls(), 0, "the copy never reached the listener");
}

/// The bus of one replica on a three-node JetStream cluster holding the stream's
/// three replicas, connected to the node at `url`: a relay, a consumer, and the
/// tables that tell when each event was committed and handled.
struct OnCluster {
    pool: PgPool,
    connection: Nats,
    stop: CancellationToken,
    durable: String,
    _database: TestDatabase,
}

impl OnCluster {
    async fn start(url: &str) -> Self {
        let database = TestDatabase::create().await;
        let pool = PgPool::connect(&database.url).await.unwrap();
        migrate_bus(&pool).await.unwrap();
        for table in [
            "CREATE TABLE handled (order_id UUID NOT NULL, instance TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
            "CREATE TABLE committed (order_id UUID PRIMARY KEY, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
        ] {
            sqlx::query(table).execute(&pool).await.unwrap();
        }
        let settings = StreamSettings {
            replicas: 3,
            ..StreamSettings::default()
        };
        let connection = stream::connect(url, "bus-test", &settings).await.unwrap();
        let stop = CancellationToken::new();
        let workers = Workers::new(SERVICE, Health::default());
        let relay = Relay::new(pool.clone(), connection.jetstream.clone());
        workers.supervise("relay", stop.clone(), move |stop| {
            relay.clone().run(stop, Duration::from_secs(5))
        });
        Consumers::new(
            SERVICE,
            pool.clone(),
            // The default ack wait: a delivery lost with a node is redelivered after it.
            &config(10, bus::config::DEFAULT_ACK_WAIT),
            Listeners::new().listen(Recorder::new("a")),
        )
        .spawn(&workers, &connection, &stop);
        let durable = common::events::durable_name(SERVICE, Subject::ExpirationComplete);
        let on = Self {
            pool,
            connection,
            stop,
            durable,
            _database: database,
        };
        wait_until("the consumer exists", || async {
            on.leaders().await.is_some()
        })
        .await;
        on
    }

    /// The nodes leading the stream and the consumer.
    async fn leaders(&self) -> Option<(String, String)> {
        leaders(&self.connection.jetstream, &self.durable).await
    }

    async fn commit(&self, order_id: Uuid) {
        let mut tx = Tx::begin(&self.pool).await.unwrap();
        sqlx::query("INSERT INTO committed (order_id) VALUES ($1)")
            .bind(order_id)
            .execute(&mut *tx)
            .await
            .unwrap();
        append(&mut tx, &ExpirationComplete { order_id })
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// Once all `n` are handled, each once: the longest any waited, from its commit
    /// (or from `since`, if later) to its handling, in seconds.
    async fn worst_wait(&self, n: i64, since: chrono::DateTime<chrono::Utc>) -> f64 {
        wait_until("every event handled", || async {
            self.count("SELECT count(*) FROM handled").await == n
        })
        .await;
        assert_eq!(
            self.count("SELECT count(DISTINCT order_id) FROM handled")
                .await,
            n
        );
        sqlx::query_scalar(
            "SELECT max(extract(epoch FROM h.at - greatest(c.at, $1)))::float8
             FROM handled h JOIN committed c USING (order_id)",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
}

impl Drop for OnCluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn leaders(jetstream: &jetstream::Context, durable: &str) -> Option<(String, String)> {
    let mut stream = jetstream.get_stream(STREAM).await.ok()?;
    let stream_leader = stream.info().await.ok()?.cluster.clone()?.leader?;
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer(durable).await.ok()?;
    let consumer_leader = consumer.info().await.ok()?.cluster.clone()?.leader?;
    Some((stream_leader, consumer_leader))
}

/// A replica's NATS node is lost, one that leads neither the stream nor its consumer
/// (so nothing is elected): its connection moves to another node at once, and the
/// events committed meanwhile keep flowing, none waiting more than 5 s. The relay's
/// publishes give up after ACK_TIMEOUT; the consumer notices its pull is gone after
/// two missed heartbeats (a second each) and pulls again through the new node; a
/// delivery that was on its way through the lost node is redelivered after the
/// default ack wait (3 s).
#[tokio::test]
async fn events_keep_flowing_when_the_node_a_replica_is_connected_to_is_lost() {
    let mut cluster = TestNatsCluster::start().await;
    // Set up through node 0, so that the stream exists and its leaders are known.
    let setup = OnCluster::start(&cluster.urls[0]).await;
    let client = async_nats::connect(cluster.urls[0].as_str()).await.unwrap();
    // Until one node leads both: then a third leads nothing.
    let (mut stream_leader, mut consumer_leader) = setup.leaders().await.unwrap();
    for _ in 0..20 {
        if stream_leader == consumer_leader {
            break;
        }
        let stepdown = format!(
            "$JS.API.CONSUMER.LEADER.STEPDOWN.{STREAM}.{}",
            setup.durable
        );
        let _ = client.request(stepdown, "".into()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(now) = setup.leaders().await {
            (stream_leader, consumer_leader) = now;
        }
    }
    assert_eq!(stream_leader, consumer_leader, "one node leads both");
    let bystander = (0..3)
        .map(|i| format!("n{i}"))
        .find(|n| *n != stream_leader)
        .unwrap();
    let index: usize = bystander[1..].parse().unwrap();
    drop(setup);
    let on = OnCluster::start(&cluster.urls[index]).await;

    let started = chrono::Utc::now();
    for (n, order_id) in ids(200).into_iter().enumerate() {
        if n == 40 {
            cluster.kill(&bystander);
        }
        on.commit(order_id).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let worst = on.worst_wait(200, started).await;
    assert!(worst < 5.0, "an event waited {worst:.1} s");
}

/// When the leaders of the stream and of its consumer are elected again after their
/// node was lost (by NATS, 4 to 9 s after the loss: the followers' fixed election
/// timeout, server/raft.go), as read with requests that give up quickly.
async fn leaders_elected_without(nats_url: &str, lost: &str, durable: &str) -> std::time::Instant {
    let client = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_millis(300)))
        .connect(nats_url)
        .await
        .unwrap();
    let jetstream = jetstream::new(client);
    loop {
        if let Some((stream, consumer)) = leaders(&jetstream, durable).await
            && stream != lost
            && consumer != lost
        {
            return std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node that leads the stream (and its consumer) is lost while an event is
/// committed every 50 ms. No event is lost or handled twice, and within 5 s of NATS
/// electing the new leaders every event that waited is handled: the relay moves on to
/// the stream's new leader (its retries wait at most a second), the consumer
/// subscribes again to its consumer's new leader.
#[tokio::test]
async fn events_flow_again_within_seconds_of_the_leaders_elected_after_a_node_is_lost() {
    let mut cluster = TestNatsCluster::start().await;
    let on = OnCluster::start(&cluster.urls[0]).await;
    let mut elected = None;
    for (n, order_id) in ids(300).into_iter().enumerate() {
        if n == 40 {
            let (leader, _) = on.leaders().await.unwrap();
            cluster.kill(&leader);
            let survivor = (0..3)
                .find(|i| format!("n{i}") != leader)
                .map(|i| cluster.urls[i].clone())
                .unwrap();
            let durable = on.durable.clone();
            elected = Some(tokio::spawn(async move {
                leaders_elected_without(&survivor, &leader, &durable).await
            }));
        }
        on.commit(order_id).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elected = elected.unwrap().await.unwrap();
    let since = chrono::Utc::now() - chrono::Duration::from_std(elected.elapsed()).unwrap();
    let worst = on.worst_wait(300, since).await;
    println!("the longest wait after the election: {worst:.1} s");
    assert!(
        worst < 5.0,
        "an event waited {worst:.1} s after NATS had elected the new leaders"
    );
}

/// The `event_lag_seconds` bucket counts of `subject` as handled by this test's
/// consumer, by upper bound, from the metrics the process renders.
fn lag_buckets(subject: Subject) -> Vec<(String, u64)> {
    let subject = format!(r#"subject="{subject}""#);
    let consumer = format!(r#"consumer="{SERVICE}""#);
    kit::telemetry::render_metrics()
        .lines()
        .filter(|line| line.starts_with("event_lag_seconds_bucket{"))
        .filter(|line| line.contains(&subject) && line.contains(&consumer))
        .filter_map(|line| {
            let le = line.split(r#"le=""#).nth(1)?.split('"').next()?.to_owned();
            let count = line.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect()
}

#[tokio::test]
async fn an_events_lag_is_measured_from_its_append_to_its_handling_per_subject_and_consumer() {
    let before = kit::telemetry::render_metrics(); // installs the recorder
    assert!(!before.contains("event_lag_seconds"), "{before}");
    let bench = Bench::start().await;
    // Two events appended 20 s ago (waiting in the outbox, as while NATS is away),
    // three just now.
    bench.commit_events(&ids(2)).await;
    sqlx::query("UPDATE outbox SET created_at = now() - interval '20 seconds'")
        .execute(&bench.pool)
        .await
        .unwrap();
    bench.commit_events(&ids(3)).await;
    let recorder = Recorder::new("a");
    bench.start_consumer(recorder.clone(), &config(10, Duration::from_secs(5)));
    bench.start_relay();
    bench
        .wait_for_count("SELECT count(*) FROM handled", 5)
        .await;

    wait_until("the five lags in the histogram", || async {
        lag_buckets(Subject::ExpirationComplete)
            .iter()
            .any(|(le, count)| le == "+Inf" && *count == 5)
    })
    .await;
    let count = |bound: &str| {
        lag_buckets(Subject::ExpirationComplete)
            .into_iter()
            .find(|(le, _)| le == bound)
            .map(|(_, count)| count)
            .unwrap_or_else(|| panic!("no bucket le={bound}"))
    };
    // The fresh three within seconds; the two old ones at about 20 s, from their
    // append, not from their publish a moment ago.
    assert_eq!(count("10"), 3);
    assert_eq!(count("30"), 5);
    // Parked events are counted from zero, before any is parked.
    let metrics = kit::telemetry::render_metrics();
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("events_parked_total{")
                && line.contains(r#"subject="expiration.complete""#)
                && line.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_events_publish_and_handling_join_the_trace_that_appended_it_redelivery_included() {
    use testkit::otlp::SpanKind;
    use tracing::Instrument as _;

    let receiver = testkit::otlp::OtlpReceiver::start().await;
    kit::telemetry::install_exporting_traces_to(&receiver.url);
    assert!(kit::telemetry::trace::enabled());
    let bench = Bench::start().await;
    // The first delivery fails, so the event is delivered twice.
    let recorder = Recorder::new("a");
    recorder.failures_left.store(1, Ordering::SeqCst);
    bench.start_consumer(recorder.clone(), &config(10, Duration::from_secs(5)));
    bench.start_relay();
    let request = tracing::info_span!("request");
    let (trace_id, request_id) = kit::telemetry::trace::ids_of(&request).expect("recorded");
    bench.commit_events(&ids(1)).instrument(request).await;

    let spans = receiver
        .wait_for("the publish and both deliveries", |spans| {
            spans
                .iter()
                .filter(|s| s.kind == SpanKind::Consumer)
                .count()
                == 2
                && spans.iter().any(|s| s.kind == SpanKind::Producer)
        })
        .await;
    assert_eq!(recorder.calls(), 2);
    let publish = spans.iter().find(|s| s.kind == SpanKind::Producer).unwrap();
    assert_eq!(publish.name, "publish expiration.complete");
    assert_eq!(
        (publish.trace_id.as_str(), publish.parent_span_id.as_str()),
        (trace_id.as_str(), request_id.as_str()),
        "the publish is a child of the span that appended the event"
    );
    assert_eq!(publish.attribute("messaging.system"), Some("nats"));
    assert_eq!(
        publish.attribute("messaging.destination.name"),
        Some("expiration.complete")
    );
    let event_id = publish.attribute("messaging.message.id").unwrap();
    assert!(Uuid::parse_str(event_id).is_ok(), "{event_id}");
    let mut deliveries: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer)
        .collect();
    deliveries.sort_by_key(|s| s.attribute("delivered").map(str::to_owned));
    for (delivered, span) in ["1", "2"].into_iter().zip(&deliveries) {
        assert_eq!(span.name, "process expiration.complete");
        assert_eq!(
            span.trace_id, trace_id,
            "delivery {delivered} is in the trace"
        );
        assert_eq!(
            span.parent_span_id, publish.span_id,
            "a child of the publish"
        );
        assert_eq!(span.attribute("delivered"), Some(delivered));
        assert_eq!(span.attribute("messaging.message.id"), Some(event_id));
        assert_eq!(
            span.attribute("messaging.consumer.group.name"),
            Some("bustest-expiration-complete")
        );
    }
}

// --- batches: deliveries received together, applied in one transaction -----------

/// Queues one `expiration.complete` per id on the stream before any consumer runs,
/// so that the consumer receives them in full batches.
async fn queue(bench: &Bench, ids: &[Uuid]) {
    let events: Vec<(String, ExpirationComplete)> = ids
        .iter()
        .map(|&order_id| (Uuid::new_v4().to_string(), ExpirationComplete { order_id }))
        .collect();
    testkit::publish_all(&bench.nats.url, &events).await;
}

/// How many transactions wrote the handled event ids.
async fn transactions_of_processed_events(bench: &Bench) -> i64 {
    bench
        .count("SELECT count(DISTINCT xmin::text) FROM processed_events")
        .await
}

#[tokio::test]
async fn deliveries_received_together_are_committed_together_and_event_batch_1_turns_it_off() {
    for (batch, most_transactions) in [(32, 600 / 4), (1, 600)] {
        let bench = Bench::start().await;
        queue(&bench, &ids(600)).await;
        let recorder = Recorder::new("a");
        let config = BusConfig {
            batch,
            ..config(10, Duration::from_secs(5))
        };
        bench.start_consumer(recorder.clone(), &config);
        bench
            .wait_for_count("SELECT count(*) FROM processed_events", 600)
            .await;
        wait_until("all 600 acknowledged", || {
            all_acknowledged(&bench.connection, SERVICE, Subject::ExpirationComplete, 600)
        })
        .await;
        let transactions = transactions_of_processed_events(&bench).await;
        assert_eq!(bench.count("SELECT count(*) FROM handled").await, 600);
        assert_eq!(
            recorder.calls(),
            600,
            "EVENT_BATCH={batch}: each handled once"
        );
        if batch == 1 {
            assert_eq!(transactions, 600, "EVENT_BATCH=1: a transaction per event");
        } else {
            assert!(
                transactions <= most_transactions,
                "EVENT_BATCH={batch}: {transactions} transactions for 600 queued events"
            );
        }
    }
}

#[tokio::test]
async fn a_failure_a_wait_or_a_panic_in_a_batch_rolls_back_only_its_own_event() {
    let bench = Bench::start().await;
    let poison = Uuid::new_v4();
    let recorder = Recorder {
        panic_on: Some(poison),
        ..Recorder::new("a")
    };
    // The first attempt fails after its database work, the next answers "not yet":
    // each rolls back its batch, whose events are then handled one by one.
    recorder.failures_left.store(1, Ordering::SeqCst);
    recorder.not_yet_left.store(1, Ordering::SeqCst);
    let mut events = ids(150);
    events.insert(70, poison);
    queue(&bench, &events).await;
    bench.start_consumer(recorder.clone(), &config(3, Duration::from_secs(5)));

    bench
        .wait_for_count("SELECT count(*) FROM parked_events", 1)
        .await;
    bench
        .wait_for_count("SELECT count(*) FROM handled", 150)
        .await;
    wait_until("all 151 settled", || {
        all_acknowledged(&bench.connection, SERVICE, Subject::ExpirationComplete, 151)
    })
    .await;
    assert_eq!(
        bench
            .count("SELECT count(DISTINCT order_id) FROM handled")
            .await,
        150,
        "every other event applied exactly once"
    );
    let parked: String = sqlx::query_scalar("SELECT payload FROM parked_events")
        .fetch_one(&bench.pool)
        .await
        .unwrap();
    assert!(parked.contains(&poison.to_string()), "{parked}");
    assert_eq!(
        bench.count("SELECT count(*) FROM processed_events").await,
        150,
        "the poison's attempts left no processed id"
    );
    assert_eq!(
        bench.count("SELECT count(*) FROM event_failures").await,
        0,
        "a rolled-back batch counts no failure against its other events"
    );
}

/// A replica that also counts the updates it applied, to see any applied twice.
#[derive(Clone, Default)]
struct CountingReplica;

impl Listener for CountingReplica {
    type Event = TicketUpdated;

    async fn handle(&self, tx: &mut Tx, event: TicketUpdated) -> anyhow::Result<Handled> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM replica WHERE id = $1 FOR UPDATE")
                .bind(event.id)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some(answer) = unless_next(version, event.version) {
            return Ok(answer);
        }
        sqlx::query(
            "UPDATE replica SET version = $2, title = $3, applied = applied + 1 WHERE id = $1",
        )
        .bind(event.id)
        .bind(event.version)
        .bind(&event.title)
        .execute(&mut **tx)
        .await?;
        Ok(Handled::Done)
    }
}

#[tokio::test]
async fn batches_of_two_replicas_racing_over_the_same_records_apply_every_version_once_in_order() {
    const TICKETS: usize = 40;
    const VERSIONS: i64 = 5;
    const ROUNDS: usize = 5;
    let bench = Bench::start().await;
    sqlx::query(
        "CREATE TABLE replica (id UUID PRIMARY KEY, version BIGINT NOT NULL, title TEXT NOT NULL,
                               applied BIGINT NOT NULL DEFAULT 0)",
    )
    .execute(&bench.pool)
    .await
    .unwrap();
    let config = config(50, Duration::from_secs(5));
    // Two replicas of the service, each consuming both subjects.
    for _ in 0..2 {
        let listeners = Listeners::new()
            .listen(CountingReplica)
            .listen(ReplicaCreated);
        Consumers::new(SERVICE, bench.pool.clone(), &config, listeners).spawn(
            &bench.workers,
            &bench.connection,
            &bench.stop,
        );
    }
    let price = Price::from_cents(100).unwrap();
    for round in 0..ROUNDS {
        let tickets: Vec<(Uuid, Uuid)> = (0..TICKETS)
            .map(|_| (Uuid::new_v4(), Uuid::new_v4()))
            .collect();
        let created: Vec<(String, TicketCreated)> = tickets
            .iter()
            .map(|&(id, user_id)| {
                let event = TicketCreated {
                    id,
                    version: 0,
                    title: "v0".into(),
                    price,
                    user_id,
                };
                (format!("{id}-0"), event)
            })
            .collect();
        // Every ticket's versions in order, the tickets interleaved: each batch holds
        // many records, and the records of one batch are in the next one too.
        let updated: Vec<(String, TicketUpdated)> = (1..=VERSIONS)
            .flat_map(|version| {
                tickets.iter().map(move |&(id, user_id)| {
                    let event = TicketUpdated {
                        id,
                        version,
                        title: format!("v{version}"),
                        price,
                        user_id,
                        order_id: None,
                    };
                    (format!("{id}-{version}"), event)
                })
            })
            .collect();
        tokio::join!(
            testkit::publish_all(&bench.nats.url, &updated),
            testkit::publish_all(&bench.nats.url, &created),
        );
        let expected = i64::try_from((round + 1) * TICKETS).unwrap();
        let what = format!("round {round}: every ticket at version {VERSIONS}");
        wait_until(&what, || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM replica WHERE version = $1")
                .bind(VERSIONS)
                .fetch_one(&bench.pool)
                .await
                .unwrap()
                == expected
        })
        .await;
    }
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM replica WHERE applied <> $1 OR title <> 'v' || $1::text",
    )
    .bind(VERSIONS)
    .fetch_one(&bench.pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0, "a version applied twice, or out of order");
    let events = i64::try_from(ROUNDS * TICKETS).unwrap() * (VERSIONS + 1);
    assert_eq!(
        bench.count("SELECT count(*) FROM processed_events").await,
        events
    );
    assert_eq!(bench.count("SELECT count(*) FROM parked_events").await, 0);
}
