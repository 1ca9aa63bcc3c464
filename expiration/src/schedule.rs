//! The schedule table.

use std::time::Duration;

use bus::{Signal, Staged, Tx, append_all};
use common::events::ExpirationComplete;
use common::time::Timestamp;
use kit::telemetry::trace;
use sqlx::PgPool;
use uuid::Uuid;

/// Entries fired per transaction.
pub const BATCH: usize = 200;

/// Raised when a transaction that scheduled entries commits: the scheduler may have to
/// wake sooner than it planned.
pub static SCHEDULED: Signal = Signal::new();

/// Schedules an order's expiry; a second copy of the same order changes nothing.
pub async fn add(tx: &mut Tx, order_id: Uuid, expires_at: Timestamp) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO schedules (order_id, expires_at, traceparent) VALUES ($1, $2, $3)
         ON CONFLICT (order_id) DO NOTHING",
        order_id,
        expires_at,
        trace::current_traceparent(),
    )
    .execute(&mut **tx)
    .await?;
    tx.wake_on_commit(&SCHEDULED);
    Ok(())
}

/// An entry that came due and fired.
struct Fired {
    order_id: Uuid,
    /// How long after its due time it fired.
    lateness_seconds: f64,
    /// The context of the span that scheduled it, while traces are on.
    traceparent: Option<String>,
}

/// Fires up to [`BATCH`] due entries: claims them (skipping any another instance holds),
/// marks them fired and appends `expiration.complete` for each, all in one
/// transaction. Returns how many fired.
pub async fn fire_due(pool: &PgPool) -> anyhow::Result<usize> {
    let mut tx = Tx::begin(pool).await?;
    let fired = sqlx::query_as!(
        Fired,
        r#"WITH due AS (
               SELECT order_id FROM schedules
               WHERE fired_at IS NULL AND expires_at <= clock_timestamp()
               ORDER BY expires_at
               LIMIT $1
               FOR UPDATE SKIP LOCKED
           )
           UPDATE schedules AS s SET fired_at = clock_timestamp()
           FROM due WHERE s.order_id = due.order_id
           RETURNING s.order_id,
                     extract(epoch FROM s.fired_at - s.expires_at)::float8 AS "lateness_seconds!",
                     s.traceparent"#,
        BATCH as i64,
    )
    .fetch_all(&mut *tx)
    .await?;
    // The events, all appended in one statement. While traces are on, each expiry
    // continues the trace of the order it ends, in a span that lasts until its event
    // is in the outbox.
    let mut events = Vec::with_capacity(fired.len());
    let mut spans = Vec::with_capacity(fired.len());
    for entry in &fired {
        let event = ExpirationComplete {
            order_id: entry.order_id,
        };
        let span = match entry.traceparent.as_deref().filter(|_| trace::enabled()) {
            Some(parent) => {
                let span = tracing::info_span!("expire", order_id = %entry.order_id);
                trace::continue_from(&span, Some(parent));
                span
            }
            None => tracing::Span::none(),
        };
        events.push(span.in_scope(|| Staged::new(&event))?);
        spans.push(span);
    }
    append_all(&mut tx, events).await?;
    drop(spans);
    tx.commit().await?;
    for entry in &fired {
        metrics::histogram!("expiration_lateness_seconds").record(entry.lateness_seconds);
    }
    metrics::counter!("expirations_fired_total").increment(u64::try_from(fired.len())?);
    Ok(fired.len())
}

/// How long until the next pending entry is due (zero if one is overdue), by the
/// database's clock; `None` when nothing is pending.
pub async fn next_due_in(pool: &PgPool) -> sqlx::Result<Option<Duration>> {
    let seconds = sqlx::query_scalar!(
        "SELECT extract(epoch FROM min(expires_at) - clock_timestamp())::float8
         FROM schedules WHERE fired_at IS NULL"
    )
    .fetch_one(pool)
    .await?;
    Ok(seconds.map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)))
}
