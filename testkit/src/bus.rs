//! Looking inside a service's consumers, for tests of the bus itself.

use std::time::Duration;

use async_nats::jetstream::consumer::{Info, PullConsumer};
use sqlx::PgPool;

use bus::Listener;
use bus::consumer::{Delivery, Outcome, apply, durable};
use bus::stream::{Nats, STREAM};
use common::events::{Subject, durable_name};

/// The state of `service`'s durable consumer of `subject` (acknowledged floor,
/// pending acknowledgements...), if it exists yet.
pub async fn consumer_info(nats: &Nats, service: &str, subject: Subject) -> Option<Info> {
    let stream = nats.jetstream.get_stream(STREAM).await.unwrap();
    let mut consumer: PullConsumer = stream
        .get_consumer(&durable_name(service, subject))
        .await
        .ok()?;
    Some(consumer.info().await.unwrap().clone())
}

/// Whether every message of `service`'s consumer of `subject` up to stream sequence
/// `last` has been acknowledged.
pub async fn all_acknowledged(nats: &Nats, service: &str, subject: Subject, last: u64) -> bool {
    consumer_info(nats, service, subject)
        .await
        .is_some_and(|info| info.ack_floor.stream_sequence == last && info.num_ack_pending == 0)
}

/// Applies an event as a delivery would, committing its effect, but acknowledges
/// nothing: what a consumer that crashes right after committing leaves behind.
/// Returns whether the listener applied it (`false`: it was a duplicate or not yet
/// applicable).
pub async fn apply_without_acknowledging<L: Listener>(
    pool: &PgPool,
    listener: &L,
    event_id: &str,
    event: L::Event,
) -> bool {
    apply(pool, listener, event_id, event, Delivery::First)
        .await
        .unwrap()
        == Outcome::Done
}

/// Takes the next delivery of `service`'s consumer of `subject` (creating it with
/// `ack_wait`), as an instance would, without acknowledging it.
pub async fn take_delivery(
    nats: &Nats,
    service: &str,
    subject: Subject,
    ack_wait: Duration,
) -> async_nats::jetstream::Message {
    use futures::StreamExt as _;
    let consumer = durable(nats, service, subject, ack_wait).await.unwrap();
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    batch.next().await.unwrap().unwrap()
}

/// Whether `service`'s consumer of `subject` has handled everything in the stream
/// (nothing pending, nothing awaiting acknowledgement).
pub async fn caught_up(nats: &Nats, service: &str, subject: Subject) -> bool {
    consumer_info(nats, service, subject)
        .await
        .is_some_and(|info| info.num_pending == 0 && info.num_ack_pending == 0)
}

/// Waits until `service` has handled every event of `subjects` published so far: its
/// consumers have nothing pending and nothing awaiting acknowledgement. What a test
/// waits for before asserting that a duplicate or a stale event changed nothing.
pub async fn settled(nats_url: &str, service: &str, subjects: &[Subject]) {
    let nats = connect(nats_url).await;
    for subject in subjects {
        let what = format!("{service} to have handled every {subject} event");
        crate::wait_until(&what, || caught_up(&nats, service, *subject)).await;
    }
}

/// Waits until `service`'s consumer of `subject` has delivered an event again: it was
/// handled and answered "not yet" (or failed) at least once. What a test waits for
/// before asserting that a waiting event has not been applied.
pub async fn delivered_again(nats_url: &str, service: &str, subject: Subject) {
    let nats = connect(nats_url).await;
    let what = format!("{service} to have delivered a {subject} event again");
    crate::wait_until(&what, || async {
        consumer_info(&nats, service, subject)
            .await
            .is_some_and(|info| info.num_redelivered > 0)
    })
    .await;
}

async fn connect(nats_url: &str) -> Nats {
    let settings = bus::stream::StreamSettings::default();
    bus::stream::connect(nats_url, "testkit", &settings)
        .await
        .unwrap()
}
