//! The runner: one loop per subject that takes deliveries from the durable consumer,
//! applies each once in effect and hands the outcome to the retry policy.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use async_nats::jetstream::{AckKind, Message};
use common::events::{Event, Subject};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use kit::retry::Backoff;
use kit::supervisor::panic_message;
use kit::telemetry::trace;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::retry::{acknowledge, failed, park};
use super::waiting::Waiting;
use super::{
    Context, Delivery, Listener, Outcome, apply, apply_in, durable, forget_failures, handle_in,
    record_all,
};
use crate::stream::Nats;
use crate::tx::Tx;

/// How often a waiting pull hears from the server (see `consume`).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Pauses before subscribing again after a subscription broke: short at first (a
/// consumer's leader moved), longer while it keeps breaking (NATS is away).
const RESUBSCRIBE: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));

/// Runs `work` on `received`, telling JetStream every `every` (half the ack wait) that
/// they are still in progress, which restarts their ack wait: an attempt that takes
/// longer than the ack wait (a slow database, a batch falling back to one transaction
/// per event) is not redelivered while it runs. The ack wait can then be short, and a
/// delivery lost on its way (the connection it was sent on dropped with a NATS node)
/// is redelivered soon.
async fn in_progress(received: &[Received], every: Duration, work: impl Future<Output = ()>) {
    let mut work = std::pin::pin!(work);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            () = &mut work => return,
            _ = ticks.tick() => {
                // Those already settled are no longer pending: the server ignores them.
                // Bounded, so that a connection that does not take them (NATS out of
                // reach) holds up the work for no longer than a tick.
                let progress = async {
                    for delivery in received {
                        if let Err(error) = delivery.message.ack_with(AckKind::Progress).await {
                            tracing::debug!(%error, "a progress acknowledgement was not sent");
                        }
                    }
                };
                if tokio::time::timeout(every, progress).await.is_err() {
                    tracing::debug!("progress acknowledgements timed out");
                }
            }
        }
    }
}

/// Separates the deliveries of a chunk from the first error in it (the rest are kept).
fn split<E>(received: Vec<Result<Message, E>>) -> (Vec<Message>, Option<E>) {
    let mut messages = Vec::with_capacity(received.len());
    let mut broken = None;
    for item in received {
        match item {
            Ok(message) => messages.push(message),
            Err(error) => {
                broken.get_or_insert(error);
            }
        }
    }
    (messages, broken)
}

/// A listener, type-erased so that one service can hold listeners of every subject.
pub(crate) trait Subscription: Send + Sync + 'static {
    fn subject(&self) -> Subject;

    /// Consumes until `stop`, resubscribing whenever the subscription breaks.
    fn run(self: Arc<Self>, with: Running, stop: CancellationToken) -> BoxFuture<'static, ()>;

    /// Applies a stored payload within `tx` (re-driving a parked event).
    fn apply_stored<'a>(
        &'a self,
        tx: &'a mut Tx,
        event_id: &'a str,
        payload: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>>;
}

/// What a running consumer works with.
#[derive(Clone)]
pub(crate) struct Running {
    pub(crate) context: Arc<Context>,
    pub(crate) waiting: Arc<Waiting>,
    pub(crate) nats: Nats,
}

pub(crate) struct Subscribed<L> {
    listener: L,
}

impl<L> Subscribed<L> {
    pub(crate) fn new(listener: L) -> Self {
        Self { listener }
    }
}

impl<L: Listener> Subscription for Subscribed<L> {
    fn subject(&self) -> Subject {
        L::Event::SUBJECT
    }

    fn run(self: Arc<Self>, with: Running, stop: CancellationToken) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let Running {
                context,
                waiting,
                nats,
            } = with;
            let mut failures: u32 = 0;
            while !stop.is_cancelled() {
                let started = std::time::Instant::now();
                if let Err(error) = self.consume(&context, &waiting, &nats, &stop).await {
                    // A subscription that ran a while before breaking starts afresh.
                    failures = if started.elapsed() > Duration::from_secs(10) {
                        1
                    } else {
                        failures.saturating_add(1)
                    };
                    tracing::warn!(
                        subject = %L::Event::SUBJECT,
                        error = format!("{error:#}"),
                        failures,
                        "consumer interrupted; resubscribing"
                    );
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(RESUBSCRIBE.after(failures)) => {}
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
    /// Consumes until `stop` (Ok) or until the subscription breaks (Err), running up
    /// to `EVENT_CONCURRENCY` transactions at once, each applying up to `EVENT_BATCH`
    /// of the deliveries already received (see `deliver_all`). Events of one aggregate
    /// may then be handled out of order; row locks, processed ids and the version rule
    /// keep that correct.
    async fn consume(
        &self,
        context: &Context,
        waiting: &Waiting,
        nats: &Nats,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let subject = L::Event::SUBJECT;
        let consumer = durable(nats, context.service, subject, context.config.ack_wait).await?;
        // Small batches keep replicas of a service sharing the work evenly. The server
        // sends a heartbeat every HEARTBEAT while a pull waits: two missed ones mean the
        // consumer's leader is gone (a NATS node lost) or NATS is out of reach, and the
        // runner subscribes again, to the consumer's new leader.
        let mut deliveries = consumer
            .stream()
            .max_messages_per_batch(32)
            .heartbeat(HEARTBEAT)
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .context("subscribing")?
            // What has arrived, up to a batch, without waiting for more.
            .ready_chunks(context.config.batch);
        // Counted from zero, so that the first event parked shows as an increase (a
        // counter that first appears at 1 does not) and the alert on it fires.
        metrics::counter!("events_parked_total", "subject" => subject.as_str()).increment(0);
        let mut in_flight = FuturesUnordered::new();
        let mut gauges = tokio::time::interval(Duration::from_secs(5));
        let result = loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break Ok(()),
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                _ = gauges.tick() => waiting.report(),
                next = deliveries.next(), if in_flight.len() < context.config.concurrency => {
                    let Some(received) = next else {
                        break Err(anyhow::anyhow!("the message stream ended"));
                    };
                    let (mut messages, broken) = split(received);
                    if broken.is_some() {
                        // The subscription is about to be dropped: keep every delivery
                        // already received (a chunk may hold some after the error, and
                        // more may be buffered) rather than leave them pending on the
                        // server until their ack wait expires.
                        while let Some(Some(more)) = deliveries.next().now_or_never() {
                            let (more, again) = split(more);
                            messages.extend(more);
                            if again.is_some() {
                                break; // a stream that keeps failing is not drained for ever
                            }
                        }
                    }
                    if !messages.is_empty() {
                        in_flight.push(self.deliver_all(context, waiting, messages));
                    }
                    if let Some(error) = broken {
                        break Err(anyhow::Error::from(error).context("receiving"));
                    }
                }
            }
        };
        // Finish what was started before returning (on stop or on a broken subscription).
        while in_flight.next().await.is_some() {}
        result
    }

    /// Handles deliveries received together. More than one are applied in one
    /// transaction (one commit, one WAL flush for all), acknowledged once it commits.
    /// If any of them is not applicable yet, fails or panics, the whole transaction
    /// rolls back and each is handled again on its own, in order, so that the retry
    /// policy sees exactly the deliveries that failed; the rolled-back attempt counts as
    /// no failure.
    async fn deliver_all(&self, context: &Context, waiting: &Waiting, messages: Vec<Message>) {
        let received: Vec<Received> = messages
            .into_iter()
            .map(|message| Received::new(context, L::Event::SUBJECT, message))
            .collect();
        let every = (context.config.ack_wait / 2).max(Duration::from_millis(100));
        in_progress(
            &received,
            every,
            self.handle_all(context, waiting, &received),
        )
        .await;
    }

    async fn handle_all(&self, context: &Context, waiting: &Waiting, received: &[Received]) {
        if let [_, _, ..] = received {
            let started = std::time::Instant::now();
            match self.apply_together(context, received).await {
                Ok(outcomes) => {
                    for (delivery, outcome) in received.iter().zip(outcomes) {
                        self.settle(context, waiting, delivery, Ok(outcome), started)
                            .instrument(delivery.span.clone())
                            .await;
                    }
                    return;
                }
                Err(error) => tracing::debug!(
                    subject = %L::Event::SUBJECT,
                    events = received.len(),
                    error = format!("{error:#}"),
                    "a batch of events was rolled back; each is handled on its own"
                ),
            }
        }
        for delivery in received {
            self.deliver(context, waiting, delivery)
                .instrument(delivery.span.clone())
                .await;
        }
    }

    /// Applies every delivery in one transaction and commits it, or fails (rolling it
    /// all back) at the first one that is unreadable, not applicable yet or failing.
    /// Their ids are recorded first, in one statement.
    async fn apply_together(
        &self,
        context: &Context,
        received: &[Received],
    ) -> anyhow::Result<Vec<Outcome>> {
        let mut events = Vec::with_capacity(received.len());
        for delivery in received {
            events.push(delivery.read::<L::Event>().map_err(anyhow::Error::msg)?);
        }
        let ids: Vec<String> = events.iter().map(|(id, _)| (*id).to_owned()).collect();
        // The semaphore is never closed.
        let _permit = context.permits.acquire().await;
        catching_panics(async {
            let mut tx = Tx::begin(&context.pool)
                .await
                .context("starting a transaction")?;
            // Ids recorded now; an id delivered twice in the batch is recorded once, and
            // its second delivery is a duplicate.
            let mut new = record_all(&mut tx, L::Event::SUBJECT, &ids).await?;
            let mut outcomes = Vec::with_capacity(received.len());
            for (delivery, (event_id, event)) in received.iter().zip(events) {
                let Some(at) = new.iter().position(|id| id == event_id) else {
                    outcomes.push(Outcome::Duplicate);
                    continue;
                };
                new.swap_remove(at);
                let outcome = handle_in(&mut tx, &self.listener, event)
                    .instrument(delivery.span.clone())
                    .await?;
                match outcome {
                    Outcome::NotYet(reason) => {
                        anyhow::bail!("an event is not applicable yet: {reason}")
                    }
                    Outcome::Done if delivery.delivered > 1 => {
                        forget_failures(&mut tx, event_id).await?;
                    }
                    Outcome::Done | Outcome::Duplicate => {}
                }
                outcomes.push(outcome);
            }
            tx.commit().await.context("committing")?;
            Ok(outcomes)
        })
        .await
    }

    /// Handles one delivery end to end, in a transaction of its own: apply, then
    /// acknowledge, retry later or park.
    async fn deliver(&self, context: &Context, waiting: &Waiting, delivery: &Received) {
        let (event_id, event) = match delivery.read::<L::Event>() {
            Ok(read) => read,
            Err(reason) => {
                let event_id = delivery.event_id.as_deref();
                return park(context, &delivery.message, event_id, 1, &reason).await;
            }
        };
        let started = std::time::Instant::now();
        let outcome = {
            // The semaphore is never closed.
            let _permit = context.permits.acquire().await;
            let again = if delivery.delivered > 1 {
                Delivery::Again
            } else {
                Delivery::First
            };
            catching_panics(apply(&context.pool, &self.listener, event_id, event, again)).await
        };
        self.settle(context, waiting, delivery, outcome, started)
            .await;
    }

    /// What follows an attempt: acknowledged when done, redelivered later when not
    /// applicable yet, the retry policy's when it failed.
    async fn settle(
        &self,
        context: &Context,
        waiting: &Waiting,
        delivery: &Received,
        outcome: anyhow::Result<Outcome>,
        started: std::time::Instant,
    ) {
        let subject = L::Event::SUBJECT;
        let message = &delivery.message;
        let event_id = delivery.event_id.as_deref().unwrap_or("none");
        let label = match &outcome {
            Ok(Outcome::Done) => "done",
            Ok(Outcome::Duplicate) => "duplicate",
            Ok(Outcome::NotYet(_)) => "not_yet",
            Err(_) => "error",
        };
        metrics::counter!("events_consumed_total", "subject" => subject.as_str(), "outcome" => label)
            .increment(1);
        match outcome {
            Ok(done @ (Outcome::Done | Outcome::Duplicate)) => {
                if matches!(done, Outcome::Done) {
                    let lag = appended_at(message).unwrap_or(delivery.published);
                    let lag = SystemTime::now().duration_since(lag).unwrap_or_default();
                    metrics::histogram!(
                        "event_lag_seconds",
                        "subject" => subject.as_str(),
                        "consumer" => context.service,
                    )
                    .record(lag.as_secs_f64());
                }
                let latency_ms = started.elapsed().as_secs_f64() * 1e3;
                tracing::info!(outcome = label, latency_ms, "event handled");
                waiting.forget(event_id);
                acknowledge(message, AckKind::Ack).await;
            }
            Ok(Outcome::NotYet(reason)) => {
                tracing::debug!(reason, "event not applicable yet");
                waiting.note(event_id, delivery.published, reason);
                let attempts = u32::try_from(delivery.delivered).unwrap_or(u32::MAX);
                let delay = context.config.retry_backoff().after(attempts);
                acknowledge(message, AckKind::Nak(Some(delay))).await;
            }
            Err(error) => {
                tracing::Span::current().record("otel.status_code", "error");
                waiting.forget(event_id);
                failed(context, message, event_id, &error).await;
            }
        }
    }
}

/// A delivery as received, with its event span.
struct Received {
    message: Message,
    event_id: Option<String>,
    /// Which delivery of the event this is (1: the first).
    delivered: i64,
    published: SystemTime,
    span: tracing::Span,
}

impl Received {
    fn new(context: &Context, subject: Subject, message: Message) -> Self {
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
        let span = if trace::enabled() {
            // A CONSUMER span, child of the publish (every delivery of the event carries
            // the same traceparent, so a redelivery joins the same trace).
            let span = tracing::info_span!(
                "event",
                otel.name = %format_args!("process {subject}"),
                otel.kind = "consumer",
                otel.status_code = tracing::field::Empty,
                messaging.system = "nats",
                messaging.operation.type = "process",
                messaging.destination.name = subject.as_str(),
                messaging.message.id = event_id.as_deref().unwrap_or("none"),
                messaging.consumer.group.name = common::events::durable_name(context.service, subject),
                service = context.service,
                subject = subject.as_str(),
                event_id = event_id.as_deref().unwrap_or("none"),
                delivered,
            );
            let traceparent = message
                .headers
                .as_ref()
                .and_then(|h| h.get(trace::TRACEPARENT));
            trace::continue_from(&span, traceparent.map(|value| value.as_str()));
            span
        } else {
            tracing::info_span!(
                "event",
                service = context.service,
                subject = subject.as_str(),
                event_id = event_id.as_deref().unwrap_or("none"),
                delivered,
            )
        };
        Self {
            message,
            event_id,
            delivered,
            published,
            span,
        }
    }

    /// The event id and the event, or why the delivery cannot be read (it is parked).
    fn read<E: Event>(&self) -> Result<(&str, E), String> {
        let Some(event_id) = self.event_id.as_deref() else {
            return Err("the event has no Nats-Msg-Id header".to_owned());
        };
        serde_json::from_slice::<E>(&self.message.payload)
            .map(|event| (event_id, event))
            .map_err(|error| format!("the payload is not a valid {} event: {error}", E::SUBJECT))
    }
}

/// When the delivered event was appended to its publisher's outbox (the relay's
/// header), if it says.
fn appended_at(message: &Message) -> Option<SystemTime> {
    let header = message
        .headers
        .as_ref()?
        .get(crate::outbox::APPENDED_AT_HEADER)?;
    let micros: u64 = header.as_str().parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_micros(micros))
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

fn event_id(message: &Message) -> Option<String> {
    let headers = message.headers.as_ref()?;
    let id = headers
        .get(async_nats::header::NATS_MESSAGE_ID)?
        .as_str()
        .trim();
    (!id.is_empty()).then(|| id.to_owned())
}
