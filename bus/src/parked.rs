//! Parked events, for an operator: what could not be handled, and re-driving it once
//! the cause is fixed.
//!
//! Each service binary exposes this as a subcommand, usable in a pod with
//! `kubectl exec`:
//!
//! ```text
//! tickets parked list
//! tickets parked redrive 42 43
//! tickets parked redrive --all
//! ```
//!
//! Re-driving applies the stored event through the service's own listener, exactly as
//! a delivery would (its event id recorded in `processed_events` in the same
//! transaction, so an event handled meanwhile is recognised), and removes it from
//! `parked_events` in that transaction. An event that fails again, or still cannot be
//! applied, stays parked with the reason reported.

use std::fmt;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::consumer::{Consumers, Outcome};
use crate::tx::Tx;

/// One parked event.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedEvent {
    pub id: i64,
    pub event_id: Option<String>,
    pub subject: String,
    pub payload: String,
    /// Failed attempts before it was parked (1 for an unreadable event).
    pub failures: i64,
    pub error: String,
    pub parked_at: DateTime<Utc>,
}

/// What re-driving one parked event came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum Redriven {
    /// Applied and removed from the parked events.
    Applied,
    /// It had been handled meanwhile; removed.
    AlreadyHandled,
    /// Its predecessor has not arrived yet; still parked.
    NotYet(String),
    /// Failed again; still parked.
    Failed(String),
}

impl fmt::Display for Redriven {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Applied => f.write_str("applied; removed from the parked events"),
            Self::AlreadyHandled => f.write_str("had been handled already; removed"),
            Self::NotYet(reason) => write!(f, "not applicable yet ({reason}); still parked"),
            Self::Failed(error) => write!(f, "failed again: {error}; still parked"),
        }
    }
}

impl Consumers {
    /// Every parked event of this service, oldest first.
    pub async fn parked(&self) -> anyhow::Result<Vec<ParkedEvent>> {
        sqlx::query_as!(
            ParkedEvent,
            r#"SELECT id, event_id, subject, payload, failures, error, parked_at
               FROM parked_events ORDER BY id"#
        )
        .fetch_all(&self.context().pool)
        .await
        .context("reading parked events")
    }

    /// Applies parked event `id` through this service's listener for its subject.
    pub async fn redrive(&self, id: i64) -> anyhow::Result<Redriven> {
        let pool = &self.context().pool;
        let mut tx = Tx::begin(pool).await?;
        let parked = sqlx::query!(
            "SELECT event_id, subject, payload FROM parked_events WHERE id = $1 FOR UPDATE",
            id
        )
        .fetch_optional(&mut *tx)
        .await?
        .with_context(|| format!("there is no parked event {id}"))?;
        let (listener, _) = self
            .listeners
            .iter()
            .find(|(listener, _)| listener.subject().as_str() == parked.subject)
            .with_context(|| format!("this service has no listener for {}", parked.subject))?;
        // An event parked because it had no id gets one, so that it is still applied once.
        let event_id = parked
            .event_id
            .unwrap_or_else(|| format!("parked-{}-{id}", self.context().service));

        let outcome = listener
            .apply_stored(&mut tx, &event_id, &parked.payload)
            .await;
        let redriven = match outcome {
            Ok(Outcome::Done) => Redriven::Applied,
            Ok(Outcome::Duplicate) => Redriven::AlreadyHandled,
            // Returning drops the transaction: nothing of the attempt is kept.
            Ok(Outcome::NotYet(reason)) => return Ok(Redriven::NotYet(reason.to_owned())),
            Err(error) => return Ok(Redriven::Failed(format!("{error:#}"))),
        };
        sqlx::query!("DELETE FROM parked_events WHERE id = $1", id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(id, %event_id, result = %redriven, "re-drove a parked event");
        Ok(redriven)
    }

    /// Re-drives every parked event, oldest first.
    pub async fn redrive_all(&self) -> anyhow::Result<Vec<(i64, Redriven)>> {
        let mut results = Vec::new();
        for parked in self.parked().await? {
            results.push((parked.id, self.redrive(parked.id).await?));
        }
        Ok(results)
    }
}
