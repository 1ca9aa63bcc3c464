//! Seeing events on the bus, and publishing them as a relay would.

use std::time::Duration;

use common::events::{Event, Subject};

/// Sees the events published on one subject from the moment it subscribes.
///
/// It is a plain NATS subscription, so it sees every publish, including a copy that
/// JetStream discarded as a duplicate (a relay that published, then died before
/// recording it, publishes again).
pub struct EventProbe {
    subscriber: async_nats::Subscriber,
}

/// One observed event: its `Nats-Msg-Id` and payload.
#[derive(Debug, Clone)]
pub struct Observed<E> {
    pub id: String,
    pub event: E,
}

impl EventProbe {
    pub async fn subscribe(nats_url: &str, subject: Subject) -> Self {
        let client = async_nats::connect(nats_url).await.unwrap();
        let subscriber = client.subscribe(subject.as_str()).await.unwrap();
        client.flush().await.unwrap();
        Self { subscriber }
    }

    /// The next event, or `None` if none comes within `timeout`.
    pub async fn next<E: Event>(&mut self, timeout: Duration) -> Option<Observed<E>> {
        use futures::StreamExt;
        let message = tokio::time::timeout(timeout, self.subscriber.next())
            .await
            .ok()??;
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let event = serde_json::from_slice(&message.payload)
            .unwrap_or_else(|e| panic!("bad {} payload: {e}", E::SUBJECT));
        Some(Observed { id, event })
    }

    /// The first event matching `predicate` within `timeout`; panics if none does.
    pub async fn wait_for<E: Event>(
        &mut self,
        timeout: Duration,
        predicate: impl Fn(&E) -> bool,
    ) -> Observed<E> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next::<E>(left).await {
                Some(observed) if predicate(&observed.event) => return observed,
                Some(_) => {}
                None => panic!("no matching {} event within {timeout:?}", E::SUBJECT),
            }
        }
    }

    /// Asserts that no event arrives within `window`.
    pub async fn assert_quiet<E: Event + std::fmt::Debug>(&mut self, window: Duration) {
        if let Some(observed) = self.next::<E>(window).await {
            panic!("unexpected {} event: {:?}", E::SUBJECT, observed.event);
        }
    }
}

/// Publishes a raw event straight to JetStream with the given `Nats-Msg-Id`, as a
/// publisher's relay would (for tests that need exact control over delivery).
pub async fn publish_raw<E: Event>(nats_url: &str, id: &str, event: &E) {
    let client = async_nats::connect(nats_url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    // Only made if missing: a test may have given the stream settings of its own.
    jetstream
        .get_or_create_stream(bus::stream::stream_config(
            &bus::stream::StreamSettings::default(),
        ))
        .await
        .unwrap();
    let payload = serde_json::to_vec(event).unwrap();
    let publish = async_nats::jetstream::message::PublishMessage::build()
        .payload(payload.into())
        .message_id(id);
    jetstream
        .send_publish(E::SUBJECT.as_str(), publish)
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Publishes many events of one type straight to JetStream, each with its
/// `Nats-Msg-Id`, on one connection, waiting for every acknowledgement at the end.
pub async fn publish_all<E: Event>(nats_url: &str, events: &[(String, E)]) {
    let client = async_nats::connect(nats_url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut acks = Vec::with_capacity(events.len());
    for (id, event) in events {
        let payload = serde_json::to_vec(event).unwrap();
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(id);
        acks.push(
            jetstream
                .send_publish(E::SUBJECT.as_str(), publish)
                .await
                .unwrap(),
        );
    }
    for ack in acks {
        ack.await.unwrap();
    }
}
