//! Durable pull consumers (contract §7, guarantees 2 and 3).
//!
//! Each service has one durable consumer per subject it listens to, named
//! `<service>-<subject>`; replicas of the service share it, so JetStream hands each
//! event to one of them. For every delivery the runner:
//!
//! 1. opens a transaction and records the event id in `processed_events`; if it is
//!    already there the event was handled before, so it is acknowledged and skipped;
//! 2. lets the [`Listener`] apply the event inside that transaction;
//! 3. commits, and only then acknowledges.
//!
//! A listener that answers [`Handled::NotYet`] (a replica is behind) or fails is
//! rolled back and the event is negatively acknowledged with a growing delay, so it
//! comes back later. After the allowed number of deliveries, or at once if it cannot
//! be read, the event is written to `parked_events`, logged as an error and
//! terminated: never silently dropped. If even parking fails (the database is down)
//! it is simply retried.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::stream::{Nats, STREAM};
use super::{Event, Subject};
use crate::config::BusConfig;
use crate::db::Tx;

/// What a listener made of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Applied (or rightly ignored, e.g. an old version): commit and acknowledge.
    Done,
    /// Cannot be applied yet, e.g. it is a newer version than the replica holds: roll
    /// back and have it redelivered later.
    NotYet(&'static str),
}

/// Applies one kind of event to the service's database.
pub trait Listener: Send + Sync + 'static {
    type Event: Event;

    /// Applies `event` within `tx`. Appending follow-up events to the outbox in the
    /// same transaction makes them part of the same all-or-nothing change.
    fn handle(
        &self,
        tx: &mut Tx,
        event: Self::Event,
    ) -> impl Future<Output = anyhow::Result<Handled>> + Send;
}

/// The outcome of one delivery, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Duplicate,
    NotYet(&'static str),
}

type Runner = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// The listeners of a service, run as durable consumers.
pub struct Consumers {
    context: Arc<Context>,
    runners: Vec<Runner>,
}

struct Context {
    service: String,
    pool: PgPool,
    nats: Nats,
    max_deliveries: i64,
    ack_wait: Duration,
    concurrency: usize,
}

impl Consumers {
    pub fn new(service: &str, pool: PgPool, nats: Nats, config: &BusConfig) -> Self {
        Self {
            context: Arc::new(Context {
                service: service.to_owned(),
                pool,
                nats,
                max_deliveries: config.max_deliveries.max(1),
                ack_wait: config.ack_wait,
                concurrency: config.concurrency.max(1),
            }),
            runners: Vec::new(),
        }
    }

    /// Adds a listener for its event's subject.
    pub fn listen<L: Listener>(mut self, listener: L) -> Self {
        let context = Arc::clone(&self.context);
        let listener = Arc::new(listener);
        self.runners
            .push(Box::new(move |stop| Box::pin(run(context, listener, stop))));
        self
    }

    /// Starts every listener on `tasks`; each stops after its current event once `stop`
    /// is cancelled.
    pub fn spawn(self, tasks: &TaskTracker, stop: &CancellationToken) {
        for runner in self.runners {
            tasks.spawn(runner(stop.clone()));
        }
    }
}

/// The durable consumer name of a service for a subject.
pub fn durable_name(service: &str, subject: Subject) -> String {
    format!("{service}-{}", subject.as_str().replace('.', "-"))
}

/// Creates (or updates) the durable consumer of a service for a subject.
pub async fn durable(
    nats: &Nats,
    service: &str,
    subject: Subject,
    ack_wait: Duration,
) -> anyhow::Result<PullConsumer> {
    let name = durable_name(service, subject);
    let config = pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: subject.as_str().to_owned(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait,
        max_deliver: -1, // the runner decides when to park; see the module docs
        max_ack_pending: 1000,
        ..Default::default()
    };
    nats.jetstream
        .create_consumer_on_stream(config, STREAM)
        .await
        .with_context(|| format!("creating consumer {name}"))
}

async fn run<L: Listener>(context: Arc<Context>, listener: Arc<L>, stop: CancellationToken) {
    let subject = L::Event::SUBJECT;
    while !stop.is_cancelled() {
        if let Err(error) = consume(&context, &*listener, &stop).await {
            tracing::warn!(%subject, error = format!("{error:#}"), "consumer interrupted; resubscribing");
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Consumes until `stop` (Ok) or until the subscription breaks (Err), handling up to
/// `concurrency` events at once. Events of one aggregate may then be handled out of
/// order; row locks, processed ids and the version rule keep that correct.
async fn consume<L: Listener>(
    context: &Context,
    listener: &L,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let subject = L::Event::SUBJECT;
    let consumer = durable(&context.nats, &context.service, subject, context.ack_wait).await?;
    // Small batches keep replicas of a service sharing the work evenly.
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(32)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .context("subscribing")?;
    let mut in_flight = FuturesUnordered::new();
    let result = loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break Ok(()),
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            next = messages.next(), if in_flight.len() < context.concurrency => match next {
                Some(Ok(message)) => in_flight.push(deliver(context, listener, message)),
                Some(Err(error)) => break Err(anyhow::Error::from(error).context("receiving")),
                None => break Err(anyhow::anyhow!("the message stream ended")),
            },
        }
    };
    // Finish what was started before returning (on stop or on a broken subscription).
    while in_flight.next().await.is_some() {}
    result
}

/// Handles one delivery end to end: apply, then acknowledge, retry later or park.
async fn deliver<L: Listener>(context: &Context, listener: &L, message: Message) {
    let subject = L::Event::SUBJECT;
    let delivered = message.info().map_or(1, |info| info.delivered);
    if delivered > 1 {
        metrics::counter!("events_redelivered_total", "subject" => subject.as_str()).increment(1);
    }
    let Some(event_id) = event_id(&message) else {
        return park(
            context,
            &message,
            None,
            delivered,
            "the event has no Nats-Msg-Id header",
        )
        .await;
    };
    let event = match serde_json::from_slice::<L::Event>(&message.payload) {
        Ok(event) => event,
        Err(error) => {
            let reason = format!("the payload is not a valid {subject} event: {error}");
            return park(context, &message, Some(&event_id), delivered, &reason).await;
        }
    };

    let outcome = apply(&context.pool, listener, &event_id, event).await;
    let label = match &outcome {
        Ok(Outcome::Done) => "done",
        Ok(Outcome::Duplicate) => "duplicate",
        Ok(Outcome::NotYet(_)) => "not_yet",
        Err(_) => "error",
    };
    metrics::counter!("events_consumed_total", "subject" => subject.as_str(), "outcome" => label)
        .increment(1);
    match outcome {
        Ok(Outcome::Done | Outcome::Duplicate) => acknowledge(&message, AckKind::Ack).await,
        Ok(Outcome::NotYet(reason)) => {
            tracing::debug!(%subject, %event_id, delivered, reason, "event not applicable yet");
            retry_later(context, &message, &event_id, delivered, reason).await;
        }
        Err(error) => {
            let reason = format!("{error:#}");
            tracing::warn!(%subject, %event_id, delivered, error = %reason, "handling an event failed");
            retry_later(context, &message, &event_id, delivered, &reason).await;
        }
    }
}

/// Applies an event exactly once in effect: records its id and runs the listener in
/// one transaction, committed only when the listener is done. Does not acknowledge.
pub async fn apply<L: Listener>(
    pool: &PgPool,
    listener: &L,
    event_id: &str,
    event: L::Event,
) -> anyhow::Result<Outcome> {
    let mut tx = pool.begin().await.context("starting a transaction")?;
    let first_time = sqlx::query(
        "INSERT INTO processed_events (event_id, subject) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(event_id)
    .bind(L::Event::SUBJECT.as_str())
    .execute(&mut *tx)
    .await
    .context("recording the event id")?
    .rows_affected()
        == 1;
    if !first_time {
        return Ok(Outcome::Duplicate);
    }
    match listener.handle(&mut tx, event).await? {
        Handled::Done => {
            tx.commit().await.context("committing")?;
            Ok(Outcome::Done)
        }
        // Dropping the transaction rolls back, the processed id included.
        Handled::NotYet(reason) => Ok(Outcome::NotYet(reason)),
    }
}

fn event_id(message: &Message) -> Option<String> {
    let headers = message.headers.as_ref()?;
    let id = headers
        .get(async_nats::header::NATS_MESSAGE_ID)?
        .as_str()
        .trim();
    (!id.is_empty()).then(|| id.to_owned())
}

async fn retry_later(
    context: &Context,
    message: &Message,
    event_id: &str,
    delivered: i64,
    reason: &str,
) {
    if delivered >= context.max_deliveries {
        park(context, message, Some(event_id), delivered, reason).await;
    } else {
        acknowledge(message, AckKind::Nak(Some(redelivery_delay(delivered)))).await;
    }
}

/// 50 ms after the first delivery, doubling up to 5 s.
pub fn redelivery_delay(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 8) - 1).unwrap_or(0);
    Duration::from_millis(50 * 2_u64.pow(exponent)).min(Duration::from_secs(5))
}

/// Stores an event that cannot be handled and stops its redelivery. If it cannot be
/// stored, it is left to be redelivered instead.
async fn park(
    context: &Context,
    message: &Message,
    event_id: Option<&str>,
    delivered: i64,
    reason: &str,
) {
    let subject = message.subject.as_str();
    let stored = sqlx::query(
        "INSERT INTO parked_events (event_id, subject, payload, deliveries, error) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event_id)
    .bind(subject)
    .bind(String::from_utf8_lossy(&message.payload).into_owned())
    .bind(delivered)
    .bind(reason)
    .execute(&context.pool)
    .await;
    match stored {
        Ok(_) => {
            tracing::error!(
                subject,
                event_id,
                delivered,
                reason,
                "event PARKED after failed deliveries; see table parked_events"
            );
            metrics::counter!("events_parked_total", "subject" => subject.to_owned()).increment(1);
            acknowledge(message, AckKind::Term).await;
        }
        Err(error) => {
            tracing::error!(subject, event_id, %error, "could not park an event; it will be redelivered");
            acknowledge(message, AckKind::Nak(Some(Duration::from_secs(5)))).await;
        }
    }
}

async fn acknowledge(message: &Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        // Harmless: the event comes back after the ack wait and is then a duplicate.
        tracing::warn!(subject = message.subject.as_str(), %error, "acknowledgement not sent");
    }
}
