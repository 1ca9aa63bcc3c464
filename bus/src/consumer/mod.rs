//! Durable pull consumers (`docs/api.md` § Guarantees, 2 and 3).
//!
//! Each service has one durable consumer per subject it listens to, named
//! `<service>-<subject>`; replicas of the service share it, so JetStream hands each
//! event to one of them. For every delivery the runner (`runner.rs`):
//!
//! 1. opens a transaction and records the event id in `processed_events`; if it is
//!    already there the event was handled before, so it is acknowledged and skipped;
//! 2. lets the [`Listener`] apply the event inside that transaction;
//! 3. commits, and only then acknowledges.
//!
//! With `EVENT_BATCH` above 1, deliveries that arrive together share one transaction: one
//! commit instead of one per event, which is what a consumer's throughput under load
//! is made of. The batch commits only if every event in it is done (or a duplicate);
//! otherwise it rolls back whole and each event goes through the steps above on its
//! own, so a failure, a panic or a "not yet" affects only the event that caused it.
//!
//! What else can happen to a delivery is the retry policy's (`retry.rs`):
//!
//! - the listener answers [`Handled::NotYet`] (a replica waits for an earlier
//!   version): rolled back and redelivered after a delay that grows to
//!   `EVENT_RETRY_MAX_DELAY_SECONDS`, for as long as it takes. Waiting is not failing:
//!   such an event is never parked. The waiting tracker (`waiting.rs`) feeds `events_waiting` and
//!   `events_waiting_oldest_age_seconds`, and a warning is logged once an event has
//!   waited `EVENT_WAIT_WARN_SECONDS`;
//! - the listener fails or panics: rolled back, the failure is counted in
//!   `event_failures`, and the event is redelivered after a growing delay; after
//!   `EVENT_MAX_FAILURES` failures (or at once if it cannot be read at all) it is
//!   written to `parked_events`, logged as an error and terminated: never silently
//!   dropped. An operator re-drives it with `<service> parked redrive` (see
//!   [`crate::parked`]). If even parking fails (the database is down) it is retried.
//!
//! Event handlers of all subjects share the background connection pool: at most all
//! but one of its connections run handlers at once, so the relay and timers always
//! find one, and HTTP requests, on their own pool, never wait for events.

mod retry;
pub(crate) mod runner;
mod waiting;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use common::events::{Event, Sequence, Subject, durable_name};
use kit::supervisor::Workers;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use self::runner::{Running, Subscription};
use self::waiting::Waiting;
use crate::config::BusConfig;
use crate::stream::{Nats, STREAM};
use crate::tx::Tx;

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

/// The replica version rule, in one place: `None` when `incoming` is the next version
/// of the replica's record (apply it), otherwise what the listener answers: done for
/// an old version, not yet for a gap or for a record the replica has not seen yet.
///
/// ```
/// # use bus::{Handled, unless_next};
/// assert_eq!(unless_next(Some(3), 4), None);
/// assert_eq!(unless_next(Some(3), 3), Some(Handled::Done));
/// assert!(matches!(unless_next(Some(3), 5), Some(Handled::NotYet(_))));
/// assert!(matches!(unless_next(None, 1), Some(Handled::NotYet(_))));
/// ```
pub fn unless_next(replica: Option<i64>, incoming: i64) -> Option<Handled> {
    let Some(replica) = replica else {
        return Some(Handled::NotYet("the record has not been replicated yet"));
    };
    match Sequence::of(replica, incoming) {
        Sequence::Next => None,
        Sequence::Stale => Some(Handled::Done),
        Sequence::Gap => Some(Handled::NotYet("an earlier version has not arrived yet")),
    }
}

/// The listeners of a service, one per subject it consumes.
#[derive(Default)]
pub struct Listeners(Vec<Arc<dyn Subscription>>);

impl Listeners {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a listener for its event's subject.
    #[must_use]
    pub fn listen<L: Listener>(mut self, listener: L) -> Self {
        self.0.push(Arc::new(runner::Subscribed::new(listener)));
        self
    }

    pub fn subjects(&self) -> Vec<Subject> {
        self.0.iter().map(|listener| listener.subject()).collect()
    }
}

/// The outcome of one attempt at applying an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied and committed.
    Done,
    /// Its id was recorded already: handled before, nothing changed.
    Duplicate,
    /// Not applicable yet (see [`Handled::NotYet`]); rolled back.
    NotYet(&'static str),
}

/// A service's listeners on its database, ready to run as durable consumers.
pub struct Consumers {
    context: Arc<Context>,
    pub(crate) listeners: Vec<(Arc<dyn Subscription>, Arc<Waiting>)>,
}

/// What every consumer of a service shares.
pub(crate) struct Context {
    pub(crate) service: &'static str,
    pub(crate) pool: PgPool,
    pub(crate) config: BusConfig,
    /// Handlers running at once, across every subject of the service.
    pub(crate) permits: Semaphore,
}

impl Consumers {
    /// `pool` is the service's pool for background work.
    pub fn new(
        service: &'static str,
        pool: PgPool,
        config: &BusConfig,
        listeners: Listeners,
    ) -> Self {
        let handlers = usize::try_from(pool.options().get_max_connections())
            .unwrap_or(1)
            .saturating_sub(1)
            .max(1);
        let listeners = listeners
            .0
            .into_iter()
            .map(|listener| {
                let waiting = Waiting::new(listener.subject(), config.wait_warn_after);
                (listener, Arc::new(waiting))
            })
            .collect();
        Self {
            context: Arc::new(Context {
                service,
                pool,
                config: config.clone(),
                permits: Semaphore::new(handlers),
            }),
            listeners,
        }
    }

    pub fn subjects(&self) -> Vec<Subject> {
        self.listeners.iter().map(|(l, _)| l.subject()).collect()
    }

    pub(crate) fn context(&self) -> &Context {
        &self.context
    }

    /// Runs every listener under `workers`, until `stop` is cancelled.
    pub fn spawn(&self, workers: &Workers, nats: &Nats, stop: &CancellationToken) {
        for (listener, waiting) in &self.listeners {
            let listener = Arc::clone(listener);
            let running = Running {
                context: Arc::clone(&self.context),
                waiting: Arc::clone(waiting),
                nats: nats.clone(),
            };
            let name = format!("consumer {}", listener.subject());
            workers.supervise(name, stop.clone(), move |stop| {
                Arc::clone(&listener).run(running.clone(), stop)
            });
        }
    }
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
    // A stream with a leader answers within milliseconds. While NATS elects one (a
    // node lost), a request with the default 5 s timeout would keep the next attempt,
    // to the new leader, waiting for up to that long after the election.
    let mut jetstream = nats.jetstream.clone();
    jetstream.set_timeout(CONSUMER_REQUEST_TIMEOUT);
    jetstream
        .create_consumer_on_stream(config, STREAM)
        .await
        .with_context(|| format!("creating consumer {name}"))
}

/// How long a request about a consumer (creating it, pulling from it) may wait.
pub const CONSUMER_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Which delivery of an event this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The first: no attempt has failed before.
    First,
    /// A redelivery: an earlier attempt may have failed, and its failures are
    /// forgotten once this one succeeds.
    Again,
}

/// Applies an event exactly once in effect: records its id and runs the listener in
/// one transaction, committed only when the listener is done. Acknowledges nothing
/// (a delivery's runner does that afterwards).
pub async fn apply<L: Listener>(
    pool: &PgPool,
    listener: &L,
    event_id: &str,
    event: L::Event,
    delivery: Delivery,
) -> anyhow::Result<Outcome> {
    let mut tx = Tx::begin(pool).await.context("starting a transaction")?;
    let outcome = apply_in(&mut tx, listener, event_id, event).await?;
    if outcome == Outcome::Done {
        if delivery == Delivery::Again {
            forget_failures(&mut tx, event_id).await?;
        }
        tx.commit().await.context("committing")?;
    }
    // Otherwise dropping the transaction rolls back, the processed id included.
    Ok(outcome)
}

/// A redelivered event handled at last: its earlier failures are forgotten with it.
pub(crate) async fn forget_failures(tx: &mut Tx, event_id: &str) -> anyhow::Result<()> {
    sqlx::query!("DELETE FROM event_failures WHERE event_id = $1", event_id)
        .execute(&mut **tx)
        .await
        .context("forgetting earlier failures")?;
    Ok(())
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
    handle_in(tx, listener, event).await
}

/// Records the ids of a batch's events in one statement, within `tx`; returns the
/// ids recorded now. The others were handled before: their events are duplicates.
pub(crate) async fn record_all(
    tx: &mut Tx,
    subject: Subject,
    event_ids: &[String],
) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar!(
        "INSERT INTO processed_events (event_id, subject)
         SELECT event_id, $2 FROM unnest($1::text[]) AS event_id
         ON CONFLICT DO NOTHING RETURNING event_id",
        event_ids,
        subject.as_str(),
    )
    .fetch_all(&mut **tx)
    .await
    .context("recording the event ids")
}

/// Runs the listener within `tx`, the event's id recorded already.
pub(crate) async fn handle_in<L: Listener>(
    tx: &mut Tx,
    listener: &L,
    event: L::Event,
) -> anyhow::Result<Outcome> {
    Ok(match listener.handle(tx, event).await? {
        Handled::Done => Outcome::Done,
        Handled::NotYet(reason) => Outcome::NotYet(reason),
    })
}
