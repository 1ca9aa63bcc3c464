//! The retry and parking policy: what becomes of a delivery that failed, or that
//! cannot be read at all.
//!
//! A failure is counted in `event_failures` (across redeliveries and replicas) and
//! the event redelivered after a growing delay; at `EVENT_MAX_FAILURES` failures, or
//! at once for an event that cannot be read, it is parked in `parked_events` and its
//! redelivery stopped. Nothing here ever drops an event: whatever cannot be recorded
//! (the database is down) is left to be redelivered.

use async_nats::jetstream::{AckKind, Message};

use super::Context;
use crate::tx::Tx;

/// A failed attempt: counted, then redelivered later, or parked after the limit.
pub(super) async fn failed(
    context: &Context,
    message: &Message,
    event_id: &str,
    error: &anyhow::Error,
) {
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
            let failures = u32::try_from(failures).unwrap_or(u32::MAX);
            let delay = context.config.retry_backoff().after(failures);
            acknowledge(message, AckKind::Nak(Some(delay))).await;
        }
        Err(count_error) => {
            tracing::warn!(error = %reason, %count_error, "handling an event failed, and so did counting it; it will be retried");
            let delay = context.config.retry_max_delay;
            acknowledge(message, AckKind::Nak(Some(delay))).await;
        }
    }
}

/// Stores an event that cannot be handled and stops its redelivery. If it cannot be
/// stored, it is left to be redelivered instead.
pub(super) async fn park(
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
            "INSERT INTO parked_events (event_id, subject, payload, failures, error)
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

pub(super) async fn acknowledge(message: &Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        // Harmless: the event comes back after the ack wait and is then a duplicate.
        tracing::warn!(subject = message.subject.as_str(), %error, "acknowledgement not sent");
    }
}
