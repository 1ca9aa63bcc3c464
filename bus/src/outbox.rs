//! The transactional outbox and its relay
//! (`docs/api.md` § Guarantees, 1).
//!
//! A service never publishes directly. It [`append`]s the event to its `outbox`
//! table in the same transaction as the state change, so both commit or neither
//! does. The [`Relay`] then publishes committed rows to JetStream in order, each with
//! its event id as `Nats-Msg-Id`, and deletes them once JetStream has acknowledged
//! them. It is woken as soon as such a transaction commits (a [`Signal`] raised by the
//! commit), polls as a fallback, and retries with backoff while NATS is unreachable,
//! taking the lock the service's replicas share only once NATS answers it again. A row that was
//! published but whose deletion was lost is published again; JetStream's duplicate
//! window and the consumers' processed-event ids make that harmless.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use common::events::Event;
use kit::retry::Backoff;
use kit::telemetry::trace;
use sqlx::postgres::{PgArguments, PgQueryResult};
use sqlx::query::Query;
use sqlx::{PgPool, Postgres};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::tx::{Signal, Tx};

/// Raised when a transaction that appended events commits.
static APPENDED: Signal = Signal::new();
/// Key of the advisory lock that lets only one relay of a service publish at a time,
/// so that replicas never reorder each other's batches.
const RELAY_LOCK: i64 = 0x6f75_7462_6f78; // "outbox"
const BATCH: usize = 256;
/// Pauses after a failed attempt, before the relay looks at NATS again.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
/// How long the relay waits for JetStream to acknowledge a publish. It takes a few
/// milliseconds, even fsynced on three nodes; longer means the stream is electing a
/// leader or this replica cannot reach NATS, and the relay lets go of its lock (which
/// the service's other replicas wait on) and tries again shortly.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failure, NATS must answer a request within this before the relay takes the
/// lock again: a replica cut off from NATS must not hold up the one that is not.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);

/// The header that tells a consumer when its event was appended to the outbox
/// (microseconds since the Unix epoch), from which it measures the event's lag
/// (`event_lag_seconds`): the whole way from the commit to the handling, outbox
/// and relay included, which JetStream's own timestamp (the publish) leaves out.
pub const APPENDED_AT_HEADER: &str = "Ticketing-Appended-At";

/// Appends `event` to the outbox inside the caller's transaction and returns its id
/// (the `Nats-Msg-Id` it will be published with).
pub async fn append<E: Event>(tx: &mut Tx, event: &E) -> anyhow::Result<Uuid> {
    let staged = Staged::new(event)?;
    sqlx::query!(
        "INSERT INTO outbox (event_id, subject, payload, traceparent)
         VALUES ($1, $2, $3::text::json, $4)",
        staged.event_id,
        staged.subject,
        staged.payload,
        staged.traceparent,
    )
    .execute(&mut **tx)
    .await
    .with_context(|| format!("appending {} to the outbox", staged.subject))?;
    tx.wake_on_commit(&APPENDED);
    Ok(staged.event_id)
}

/// Appends every staged event to the outbox in one statement, inside the caller's
/// transaction, in the order given: one round trip for all of them where [`append`]
/// takes one each (the expiration service fires due orders a batch at a time).
pub async fn append_all(tx: &mut Tx, events: Vec<Staged>) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let count = events.len();
    let mut ids = Vec::with_capacity(count);
    let mut subjects = Vec::with_capacity(count);
    let mut payloads = Vec::with_capacity(count);
    let mut traceparents = Vec::with_capacity(count);
    for event in events {
        ids.push(event.event_id);
        subjects.push(event.subject);
        payloads.push(event.payload);
        traceparents.push(event.traceparent);
    }
    // The runtime-checked form: the macros do not take arrays with NULLs in them.
    // The columns are those of `append`'s statement, which is checked.
    sqlx::query(
        "INSERT INTO outbox (event_id, subject, payload, traceparent)
         SELECT id, subject, payload::json, traceparent
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
              WITH ORDINALITY AS e (id, subject, payload, traceparent, n)
         ORDER BY n",
    )
    .bind(&ids)
    .bind(&subjects)
    .bind(&payloads)
    .bind(&traceparents)
    .execute(&mut **tx)
    .await
    .with_context(|| format!("appending {count} events to the outbox"))?;
    tx.wake_on_commit(&APPENDED);
    Ok(())
}

/// An event ready for the outbox, for a write that inserts it in the *same statement*
/// as the change it announces, with a data-modifying `WITH`:
///
/// ```sql
/// WITH event AS (INSERT INTO outbox (event_id, subject, payload, traceparent)
///                VALUES ($1, $2, $3::text::json, $4))
/// INSERT INTO tickets ...
/// ```
///
/// A single statement commits on its own, atomically, so the change and its event
/// still commit together or not at all, in one round trip where [`append`] in a
/// transaction takes four (`BEGIN`, the change, the event, `COMMIT`). It suits a write
/// that is one statement anyway and whose event can be built before it runs (listing
/// a ticket: docs/benchmarks.md). Bind its fields into the statement, then give the
/// statement to [`Staged::execute`], which runs it on a pool (never inside a
/// transaction, whose commit would come later) and wakes the relay once it has.
#[must_use = "the event reaches the outbox only when its statement is run with `Staged::execute`, or by `append_all`"]
pub struct Staged {
    pub event_id: Uuid,
    pub subject: &'static str,
    /// The event as JSON text, for `$n::text::json`.
    pub payload: String,
    /// The context of the span appending it, while traces are on.
    pub traceparent: Option<String>,
}

impl Staged {
    pub fn new<E: Event>(event: &E) -> anyhow::Result<Self> {
        Ok(Self {
            event_id: Uuid::new_v4(),
            subject: E::SUBJECT.as_str(),
            payload: serde_json::to_string(event)
                .with_context(|| format!("serialising {}", E::SUBJECT))?,
            traceparent: trace::current_traceparent(),
        })
    }

    /// Runs `statement`, which writes this event with its change, on its own on
    /// `pool` (so it has committed when it returns), then wakes the relay.
    pub async fn execute(
        self,
        pool: &PgPool,
        statement: Query<'_, Postgres, PgArguments>,
    ) -> sqlx::Result<PgQueryResult> {
        let done = statement.execute(pool).await?;
        APPENDED.raise();
        Ok(done)
    }
}

/// The span of one event's publish, with OpenTelemetry's messaging conventions.
fn publish_span(row: &Row) -> tracing::Span {
    tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {}", row.subject),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %row.subject,
        messaging.message.id = %row.event_id,
    )
}

/// One event on its way to JetStream.
struct Outgoing {
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
}

/// Publishes what the outbox holds.
#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    jetstream: jetstream::Context,
    poll_interval: Duration,
}

struct Row {
    seq: i64,
    event_id: Uuid,
    subject: String,
    payload: String,
    /// When the event was appended, in microseconds since the Unix epoch.
    appended_at: i64,
    traceparent: Option<String>,
}

impl Relay {
    pub fn new(pool: PgPool, mut jetstream: jetstream::Context) -> Self {
        jetstream.set_timeout(ACK_TIMEOUT);
        Self {
            pool,
            jetstream,
            poll_interval: Duration::from_secs(1),
        }
    }

    /// Whether JetStream answers this relay's connection now (a request and its
    /// answer: a connection cut off mid-way still takes writes, but answers nothing).
    async fn nats_answers(&self) -> bool {
        tokio::time::timeout(ANSWER_TIMEOUT, self.jetstream.query_account())
            .await
            .is_ok_and(|answer| answer.is_ok())
    }

    /// After a failed attempt: a pause, then until NATS answers again, without the
    /// lock, so that a replica that can still publish does.
    async fn recover(&self, stop: &CancellationToken, failures: u32) {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(BACKOFF.after(failures)) => {}
        }
        while !stop.is_cancelled() && !self.nats_answers().await {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// How often the relay looks at the outbox when no commit woke it (default 1 s):
    /// only rows committed by another process wait that long.
    #[must_use]
    pub fn poll_every(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Publishes until `stop` is cancelled, then flushes what is left (for up to
    /// `flush_timeout`) before returning.
    pub async fn run(self, stop: CancellationToken, flush_timeout: Duration) {
        let mut failures: u32 = 0;
        while !stop.is_cancelled() {
            let appended = APPENDED.listen();
            match self.publish_pending().await {
                Ok(count) => {
                    failures = 0;
                    if count == BATCH {
                        continue; // more may be waiting
                    }
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = appended.wait(self.poll_interval) => {}
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        error = format!("{error:#}"),
                        failures,
                        "outbox relay: publishing failed; retrying"
                    );
                    self.recover(&stop, failures).await;
                }
            }
        }
        self.flush(flush_timeout).await;
    }

    /// Publishes everything committed so far, giving up after `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.publish_pending()).await {
                Ok(Ok(0)) => return,
                Ok(Ok(_)) => {}
                Ok(Err(error)) if Instant::now() < deadline => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "outbox flush: publishing failed; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(200).min(left)).await;
                }
                _ => {
                    tracing::warn!(
                        "outbox not flushed before shutdown; the rest is published at the next start"
                    );
                    return;
                }
            }
        }
    }

    /// Publishes `batch` in order. Returns how many of its events, from the first,
    /// JetStream acknowledged, and the error that stopped it there, if one did.
    ///
    /// A batch of more than one event goes as one atomic JetStream batch: stored whole
    /// or not at all, made durable with one fsync rather than one per event, and
    /// acknowledged once (docs/benchmarks.md § 8). The server refuses a whole atomic
    /// batch if any of its `Nats-Msg-Id`s is already in the stream, as after a relay
    /// that published but lost its deletions; such a batch, or one refused for any
    /// other reason, is published again event by event, where duplicates are simply
    /// dropped by the server.
    async fn publish(&self, batch: &[Outgoing]) -> (usize, Option<anyhow::Error>) {
        if batch.len() > 1 {
            match self.publish_atomically(batch).await {
                Ok(()) => return (batch.len(), None),
                Err(error) => {
                    tracing::debug!(
                        error = format!("{error:#}"),
                        events = batch.len(),
                        "outbox relay: the batch was not committed whole; publishing it event by event"
                    );
                    metrics::counter!("outbox_batches_split_total").increment(1);
                }
            }
        }
        self.publish_each(batch).await
    }

    /// `batch` as one atomic batch (ADR-50): every event but the last staged with the
    /// batch's id and its place in it, the last one committing the batch and answered
    /// by JetStream for all of them.
    async fn publish_atomically(&self, batch: &[Outgoing]) -> anyhow::Result<()> {
        let id = Uuid::new_v4().simple().to_string();
        let client = self.jetstream.client();
        let Some((last, staged)) = batch.split_last() else {
            return Ok(());
        };
        for (place, event) in (1..).zip(staged) {
            let mut headers = event.headers.clone();
            headers.insert(header::NATS_BATCH_ID, id.as_str());
            headers.insert(header::NATS_BATCH_SEQUENCE, place.to_string());
            client
                .publish_with_headers(event.subject.clone(), headers, event.payload.clone())
                .await
                .context("staging an event of an atomic batch")?;
        }
        let mut headers = last.headers.clone();
        headers.insert(header::NATS_BATCH_ID, id.as_str());
        headers.insert(header::NATS_BATCH_SEQUENCE, batch.len().to_string());
        headers.insert(header::NATS_BATCH_COMMIT, "1");
        let commit = PublishMessage::build()
            .payload(last.payload.clone())
            .headers(headers);
        let ack = self
            .jetstream
            .send_publish(last.subject.clone(), commit)
            .await
            .context("committing an atomic batch")?
            .await
            .context("committing an atomic batch")?;
        anyhow::ensure!(
            ack.batch_id.as_deref() == Some(id.as_str())
                && ack.batch_size.and_then(|n| usize::try_from(n).ok()) == Some(batch.len()),
            "JetStream acknowledged the atomic batch {id} of {} events as batch {:?} of {:?}",
            batch.len(),
            ack.batch_id,
            ack.batch_size
        );
        Ok(())
    }

    /// `batch` one event at a time: all sent, then the acknowledgements awaited in
    /// order, one round trip for the lot rather than one per event.
    async fn publish_each(&self, batch: &[Outgoing]) -> (usize, Option<anyhow::Error>) {
        let mut pending = Vec::with_capacity(batch.len());
        for event in batch {
            let publish = PublishMessage::build()
                .payload(event.payload.clone())
                .headers(event.headers.clone());
            pending.push(
                self.jetstream
                    .send_publish(event.subject.clone(), publish)
                    .await,
            );
        }
        for (acknowledged, ack) in pending.into_iter().enumerate() {
            let outcome = match ack {
                Ok(ack) => ack.await.map(drop).map_err(anyhow::Error::from),
                Err(error) => Err(error.into()),
            };
            if let Err(error) = outcome {
                return (acknowledged, Some(error));
            }
        }
        (batch.len(), None)
    }

    /// Publishes one batch of committed events in order and deletes those JetStream
    /// acknowledged. Returns how many were published.
    pub async fn publish_pending(&self) -> anyhow::Result<usize> {
        let mut tx = Tx::begin(&self.pool)
            .await
            .context("outbox: starting a transaction")?;
        sqlx::query!("SELECT pg_advisory_xact_lock($1)", RELAY_LOCK)
            .execute(&mut *tx)
            .await
            .context("outbox: taking the relay lock")?;
        let mut rows = sqlx::query_as!(
            Row,
            r#"SELECT seq, event_id, subject, payload::text AS "payload!",
                      (extract(epoch FROM created_at) * 1000000)::bigint AS "appended_at!",
                      traceparent
               FROM outbox ORDER BY seq LIMIT $1"#,
            BATCH as i64,
        )
        .fetch_all(&mut *tx)
        .await
        .context("outbox: reading pending events")?;
        if rows.is_empty() {
            metrics::gauge!("outbox_backlog").set(0.0);
            return Ok(0);
        }

        let mut batch = Vec::with_capacity(rows.len());
        let mut spans = Vec::with_capacity(rows.len());
        for row in &mut rows {
            let mut headers = HeaderMap::new();
            headers.insert(header::NATS_MESSAGE_ID, row.event_id.to_string());
            headers.insert(APPENDED_AT_HEADER, row.appended_at.to_string());
            // While traces are on, the publish is a span of the appending span's trace,
            // and the consumers' spans are its children.
            let span = row
                .traceparent
                .as_deref()
                .filter(|_| trace::enabled())
                .map(|parent| {
                    let span = publish_span(row);
                    trace::continue_from(&span, Some(parent));
                    span
                });
            if let Some(traceparent) = span.as_ref().and_then(trace::traceparent_of) {
                headers.insert(trace::TRACEPARENT, traceparent);
            }
            spans.push(span);
            batch.push(Outgoing {
                subject: row.subject.clone(),
                headers,
                payload: Bytes::from(std::mem::take(&mut row.payload)),
            });
        }
        let (acknowledged, failure) = self.publish(&batch).await;
        let failure = failure.map(|error| {
            let row = &rows[acknowledged];
            if let Some(span) = &spans[acknowledged] {
                span.record("otel.status_code", "error");
            }
            error.context(format!("publishing {} {}", row.subject, row.event_id))
        });
        let mut published = Vec::with_capacity(acknowledged);
        for row in &rows[..acknowledged] {
            tracing::debug!(event_id = %row.event_id, subject = %row.subject, "published");
            metrics::counter!("events_published_total", "subject" => row.subject.clone())
                .increment(1);
            published.push(row.seq);
        }

        if !published.is_empty() {
            sqlx::query!("DELETE FROM outbox WHERE seq = ANY($1)", &published)
                .execute(&mut *tx)
                .await
                .context("outbox: deleting published events")?;
            tx.commit().await.context("outbox: committing")?;
        }
        let backlog = if rows.len() == BATCH {
            sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox"#)
                .fetch_one(&self.pool)
                .await
                .unwrap_or(0)
        } else {
            i64::try_from(rows.len() - published.len()).unwrap_or(0)
        };
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("outbox_backlog").set(backlog as f64);
        match failure {
            Some(error) => Err(error),
            None => Ok(published.len()),
        }
    }
}
