//! Durable pull consumers ([docs/api.md § Guarantees](../../../docs/api.md#guarantees),
//! 2 and 3).
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
//! What else can happen to a delivery:
//!
//! - the listener answers [`Handled::NotYet`] (a replica waits for an earlier
//!   version): rolled back and redelivered after a delay that grows to
//!   `EVENT_RETRY_MAX_DELAY_SECONDS`, for as long as it takes. Waiting is not failing:
//!   such an event is never parked. `events_waiting` and
//!   `events_waiting_oldest_age_seconds` show what waits, and a warning is logged once
//!   an event has waited `EVENT_WAIT_WARN_SECONDS`;
//! - the listener fails or panics: rolled back, the failure is counted in
//!   `event_failures`, and the event is redelivered after a growing delay; after
//!   `EVENT_MAX_FAILURES` failures (or at once if it cannot be read at all) it is
//!   written to `parked_events`, logged as an error and terminated: never silently
//!   dropped. An operator re-drives it with `<service> parked redrive` (see
//!   [`super::parked`]). If even parking fails (the database is down) it is retried.
//!
//! Event handlers of all subjects share the background connection pool: at most all
//! but one of its connections run handlers at once, so the relay and timers always
//! find one, and HTTP requests, on their own pool, never wait for events.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Message};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::stream::{Nats, STREAM};
use super::{Event, Subject};
use crate::config::BusConfig;
use crate::db::Tx;
use crate::supervisor::{Workers, panic_message};

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

/// The outcome of one attempt at applying an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    Duplicate,
    NotYet(&'static str),
}

/// The listeners of a service, run as durable consumers.
pub struct Consumers {
    context: Arc<Context>,
    pub(crate) listeners: Vec<Arc<dyn Subscription>>,
}

pub(crate) struct Context {
    pub(crate) service: &'static str,
    pub(crate) pool: PgPool,
    config: BusConfig,
    /// Handlers running at once, across every subject of the service.
    permits: Semaphore,
}

impl Consumers {
    /// `pool` is the service's pool for background work.
    pub fn new(service: &'static str, pool: PgPool, config: &BusConfig) -> Self {
        let handlers = usize::try_from(pool.options().get_max_connections())
            .unwrap_or(1)
            .saturating_sub(1)
            .max(1);
        Self {
            context: Arc::new(Context {
                service,
                pool,
                config: config.clone(),
                permits: Semaphore::new(handlers),
            }),
            listeners: Vec::new(),
        }
    }

    /// Adds a listener for its event's subject.
    pub fn listen<L: Listener>(mut self, listener: L) -> Self {
        self.listeners.push(Arc::new(Subscribed {
            listener,
            waiting: Waiting::new(L::Event::SUBJECT, self.context.config.wait_warn_after),
        }));
        self
    }

    pub fn subjects(&self) -> Vec<Subject> {
        self.listeners.iter().map(|l| l.subject()).collect()
    }

    pub(crate) fn context(&self) -> &Context {
        &self.context
    }

    /// Runs every listener under `workers`, until `stop` is cancelled.
    pub fn spawn(&self, workers: &Workers, nats: &Nats, stop: &CancellationToken) {
        for listener in &self.listeners {
            let (listener, context, nats) = (
                Arc::clone(listener),
                Arc::clone(&self.context),
                nats.clone(),
            );
            let name = format!("consumer {}", listener.subject());
            workers.supervise(name, stop.clone(), move |stop| {
                Arc::clone(&listener).run(Arc::clone(&context), nats.clone(), stop)
            });
        }
    }
}

/// A listener, type-erased so that one service can hold listeners of every subject.
pub(crate) trait Subscription: Send + Sync + 'static {
    fn subject(&self) -> Subject;

    /// Consumes until `stop`, resubscribing whenever the subscription breaks.
    fn run(
        self: Arc<Self>,
        context: Arc<Context>,
        nats: Nats,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()>;

    /// Applies a stored payload within `tx` (re-driving a parked event).
    fn apply_stored<'a>(
        &'a self,
        tx: &'a mut Tx,
        event_id: &'a str,
        payload: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>>;
}

struct Subscribed<L> {
    listener: L,
    waiting: Waiting,
}

impl<L: Listener> Subscription for Subscribed<L> {
    fn subject(&self) -> Subject {
        L::Event::SUBJECT
    }

    fn run(
        self: Arc<Self>,
        context: Arc<Context>,
        nats: Nats,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            while !stop.is_cancelled() {
                if let Err(error) = self.consume(&context, &nats, &stop).await {
                    tracing::warn!(
                        subject = %L::Event::SUBJECT,
                        error = format!("{error:#}"),
                        "consumer interrupted; resubscribing"
                    );
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        })
    }

    fn apply_stored<'a>(
        &'a self,
        tx: &'a mut Tx,
        event_id: &'a str,
        payload: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            let event: L::Event = serde_json::from_str(payload).with_context(|| {
                format!("the payload is not a valid {} event", L::Event::SUBJECT)
            })?;
            catching_panics(apply_in(tx, &self.listener, event_id, event)).await
        })
    }
}

impl<L: Listener> Subscribed<L> {
    /// Consumes until `stop` (Ok) or until the subscription breaks (Err), handling up
    /// to `EVENT_CONCURRENCY` events at once. Events of one aggregate may then be
    /// handled out of order; row locks, processed ids and the version rule keep that
    /// correct.
    async fn consume(
        &self,
        context: &Context,
        nats: &Nats,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let subject = L::Event::SUBJECT;
        let consumer = durable(nats, context.service, subject, context.config.ack_wait).await?;
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
        let mut gauges = tokio::time::interval(Duration::from_secs(5));
        let result = loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break Ok(()),
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                _ = gauges.tick() => self.waiting.report(),
                next = messages.next(), if in_flight.len() < context.config.concurrency => match next {
                    Some(Ok(message)) => in_flight.push(self.deliver(context, message)),
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
    async fn deliver(&self, context: &Context, message: Message) {
        let subject = L::Event::SUBJECT;
        let (delivered, published) = message.info().map_or((1, SystemTime::now()), |info| {
            let nanos = u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0);
            (
                info.delivered,
                SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
            )
        });
        if delivered > 1 {
            metrics::counter!("events_redelivered_total", "subject" => subject.as_str())
                .increment(1);
        }
        let event_id = event_id(&message);
        let span = tracing::info_span!(
            "event",
            service = context.service,
            subject = subject.as_str(),
            event_id = event_id.as_deref().unwrap_or("none"),
            delivered,
        );
        async {
            let Some(event_id) = event_id.as_deref() else {
                let reason = "the event has no Nats-Msg-Id header";
                return park(context, &message, None, 1, reason).await;
            };
            let event = match serde_json::from_slice::<L::Event>(&message.payload) {
                Ok(event) => event,
                Err(error) => {
                    let reason = format!("the payload is not a valid {subject} event: {error}");
                    return park(context, &message, Some(event_id), 1, &reason).await;
                }
            };

            let started = std::time::Instant::now();
            let outcome = {
                // The semaphore is never closed.
                let _permit = context.permits.acquire().await;
                let may_have_failed = delivered > 1;
                let applied = apply(&context.pool, &self.listener, event_id, event, may_have_failed);
                catching_panics(applied).await
            };
            let label = match &outcome {
                Ok(Outcome::Done) => "done",
                Ok(Outcome::Duplicate) => "duplicate",
                Ok(Outcome::NotYet(_)) => "not_yet",
                Err(_) => "error",
            };
            metrics::counter!("events_consumed_total", "subject" => subject.as_str(), "outcome" => label)
                .increment(1);
            match outcome {
                Ok(Outcome::Done | Outcome::Duplicate) => {
                    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
                    tracing::info!(outcome = label, latency_ms, "event handled");
                    self.waiting.forget(event_id);
                    acknowledge(&message, AckKind::Ack).await;
                }
                Ok(Outcome::NotYet(reason)) => {
                    tracing::debug!(reason, "event not applicable yet");
                    self.waiting.note(event_id, published, reason);
                    let delay = retry_delay(delivered, context.config.retry_max_delay);
                    acknowledge(&message, AckKind::Nak(Some(delay))).await;
                }
                Err(error) => {
                    self.waiting.forget(event_id);
                    failed(context, &message, event_id, &error).await;
                }
            }
        }
        .instrument(span)
        .await;
    }
}

/// Runs `work`, turning a panic into an error: a panicking handler is a failed
/// delivery like any other (its transaction, dropped while unwinding, rolls back).
async fn catching_panics<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(anyhow::anyhow!(
                "the handler panicked: {}",
                panic_message(panic.as_ref())
            ))
        })
}

/// The durable consumer name of a service for a subject.
pub fn durable_name(service: &str, subject: Subject) -> String {
    format!("{service}-{}", subject.as_str().replace('.', "-"))
}

/// Creates (or updates) the durable consumer of a service for a subject.
pub(crate) async fn durable(
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

/// Applies an event exactly once in effect: records its id and runs the listener in
/// one transaction, committed only when the listener is done. Does not acknowledge.
pub(crate) async fn apply<L: Listener>(
    pool: &PgPool,
    listener: &L,
    event_id: &str,
    event: L::Event,
    may_have_failed: bool,
) -> anyhow::Result<Outcome> {
    let mut tx = Tx::begin(pool).await.context("starting a transaction")?;
    let outcome = apply_in(&mut tx, listener, event_id, event).await?;
    if outcome == Outcome::Done {
        if may_have_failed {
            sqlx::query!("DELETE FROM event_failures WHERE event_id = $1", event_id)
                .execute(&mut *tx)
                .await
                .context("forgetting earlier failures")?;
        }
        tx.commit().await.context("committing")?;
    }
    // Otherwise dropping the transaction rolls back, the processed id included.
    Ok(outcome)
}

/// Records the event id and runs the listener within `tx`; the caller commits.
pub(crate) async fn apply_in<L: Listener>(
    tx: &mut Tx,
    listener: &L,
    event_id: &str,
    event: L::Event,
) -> anyhow::Result<Outcome> {
    let first_time = sqlx::query!(
        "INSERT INTO processed_events (event_id, subject) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        event_id,
        L::Event::SUBJECT.as_str(),
    )
    .execute(&mut **tx)
    .await
    .context("recording the event id")?
    .rows_affected()
        == 1;
    if !first_time {
        return Ok(Outcome::Duplicate);
    }
    Ok(match listener.handle(tx, event).await? {
        Handled::Done => Outcome::Done,
        Handled::NotYet(reason) => Outcome::NotYet(reason),
    })
}

fn event_id(message: &Message) -> Option<String> {
    let headers = message.headers.as_ref()?;
    let id = headers
        .get(async_nats::header::NATS_MESSAGE_ID)?
        .as_str()
        .trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// A failed attempt: counted, then redelivered later, or parked after the limit.
async fn failed(context: &Context, message: &Message, event_id: &str, error: &anyhow::Error) {
    let reason = format!("{error:#}");
    let subject = message.subject.as_str();
    let counted = sqlx::query_scalar!(
        "INSERT INTO event_failures (event_id, subject, failures, last_error)
         VALUES ($1, $2, 1, $3)
         ON CONFLICT (event_id) DO UPDATE
         SET failures = event_failures.failures + 1, last_error = $3, last_failed_at = now()
         RETURNING failures",
        event_id,
        subject,
        &reason,
    )
    .fetch_one(&context.pool)
    .await;
    match counted {
        Ok(failures) if failures >= context.config.max_failures => {
            park(context, message, Some(event_id), failures, &reason).await;
        }
        Ok(failures) => {
            tracing::warn!(failures, error = %reason, "handling an event failed; it will be retried");
            let delay = retry_delay(failures, context.config.retry_max_delay);
            acknowledge(message, AckKind::Nak(Some(delay))).await;
        }
        Err(count_error) => {
            tracing::warn!(error = %reason, %count_error, "handling an event failed, and so did counting it; it will be retried");
            let delay = context.config.retry_max_delay;
            acknowledge(message, AckKind::Nak(Some(delay))).await;
        }
    }
}

/// 50 ms after the first attempt, doubling up to `max`.
pub(crate) fn retry_delay(attempt: i64, max: Duration) -> Duration {
    let exponent = u32::try_from(attempt.clamp(1, 16) - 1).unwrap_or(0);
    Duration::from_millis(50 * 2_u64.pow(exponent)).min(max)
}

/// Stores an event that cannot be handled and stops its redelivery. If it cannot be
/// stored, it is left to be redelivered instead.
async fn park(
    context: &Context,
    message: &Message,
    event_id: Option<&str>,
    failures: i64,
    reason: &str,
) {
    let subject = message.subject.as_str();
    let payload = String::from_utf8_lossy(&message.payload);
    let stored = async {
        let mut tx = Tx::begin(&context.pool).await?;
        sqlx::query!(
            "INSERT INTO parked_events (event_id, subject, payload, deliveries, error)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
            event_id,
            subject,
            &payload,
            failures,
            reason,
        )
        .execute(&mut *tx)
        .await?;
        if let Some(event_id) = event_id {
            sqlx::query!("DELETE FROM event_failures WHERE event_id = $1", event_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    };
    match stored.await {
        Ok(()) => {
            tracing::error!(
                failures,
                reason,
                "event PARKED; see `{} parked list`",
                context.service
            );
            metrics::counter!("events_parked_total", "subject" => subject.to_owned()).increment(1);
            acknowledge(message, AckKind::Term).await;
        }
        Err(error) => {
            tracing::error!(%error, "could not park an event; it will be redelivered");
            let delay = context.config.retry_max_delay;
            acknowledge(message, AckKind::Nak(Some(delay))).await;
        }
    }
}

async fn acknowledge(message: &Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        // Harmless: the event comes back after the ack wait and is then a duplicate.
        tracing::warn!(subject = message.subject.as_str(), %error, "acknowledgement not sent");
    }
}

/// The events of one subject that are waiting for a predecessor, as this process has
/// seen them, for the `events_waiting*` gauges and the warning.
struct Waiting {
    subject: Subject,
    warn_after: Duration,
    events: Mutex<HashMap<String, WaitingEvent>>,
}

struct WaitingEvent {
    published: SystemTime,
    last_seen: Instant,
    warned: bool,
}

/// An entry not seen again for this long went to another replica, or away.
const FORGET_AFTER: Duration = Duration::from_secs(300);

impl Waiting {
    fn new(subject: Subject, warn_after: Duration) -> Self {
        Self {
            subject,
            warn_after,
            events: Mutex::default(),
        }
    }

    fn note(&self, event_id: &str, published: SystemTime, reason: &str) {
        let mut events = self.lock();
        let event = events.entry(event_id.to_owned()).or_insert(WaitingEvent {
            published,
            last_seen: Instant::now(),
            warned: false,
        });
        event.last_seen = Instant::now();
        let age = event.published.elapsed().unwrap_or_default();
        if !event.warned && age >= self.warn_after {
            event.warned = true;
            tracing::warn!(
                waited_seconds = age.as_secs(),
                reason,
                "an event has been waiting for its predecessor for a long time"
            );
        }
        drop(events);
        self.report();
    }

    fn forget(&self, event_id: &str) {
        let removed = self.lock().remove(event_id).is_some();
        if removed {
            self.report();
        }
    }

    /// Sets the gauges.
    fn report(&self) {
        let mut events = self.lock();
        events.retain(|_, event| event.last_seen.elapsed() < FORGET_AFTER);
        let oldest = events
            .values()
            .map(|event| event.published.elapsed().unwrap_or_default())
            .max()
            .unwrap_or_default();
        #[allow(clippy::cast_precision_loss)]
        let count = events.len() as f64;
        drop(events);
        let subject = self.subject.as_str();
        metrics::gauge!("events_waiting", "subject" => subject).set(count);
        metrics::gauge!("events_waiting_oldest_age_seconds", "subject" => subject)
            .set(oldest.as_secs_f64());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WaitingEvent>> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_the_cap() {
        let cap = Duration::from_secs(5);
        assert_eq!(retry_delay(1, cap), Duration::from_millis(50));
        assert_eq!(retry_delay(2, cap), Duration::from_millis(100));
        assert_eq!(retry_delay(50, cap), cap);
        assert_eq!(
            retry_delay(3, Duration::from_millis(120)),
            Duration::from_millis(120)
        );
    }
}
