//! Charges: every attempt to pay for an order, and its queries.

use bus::{Signal, Tx};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::replica::OrderReplica;

/// Raised when a transaction that made a refund due commits: wakes the reconciler.
pub static REFUND_DUE: Signal = Signal::new();

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ChargeStatus {
    /// Recorded; the outcome at Stripe is not known yet.
    Created,
    /// Declined.
    Failed,
    /// Charged (and possibly refunded since, see `stripe_refund_id`).
    Completed,
}

/// One attempt to pay for an order.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub id: Uuid,
    pub order_id: Uuid,
    pub status: ChargeStatus,
    pub amount_cents: i64,
    pub source: String,
    pub stripe_id: Option<String>,
    pub stripe_refund_id: Option<String>,
    pub failure_message: Option<String>,
    /// Completed, but not kept: its refund is due (or made, see `stripe_refund_id`).
    pub refund_due: bool,
}

impl Charge {
    /// The id of the attempt to pay `order_id` with the card token `source`: the same
    /// request always names the same attempt.
    pub fn id_for(order_id: Uuid, source: &str) -> Uuid {
        Uuid::new_v5(&order_id, source.as_bytes())
    }

    /// The key Stripe deduplicates this attempt's charge by.
    pub fn charge_key(&self) -> String {
        format!("charge-{}", self.id)
    }

    /// What Stripe keeps with the charge: the order it pays for and this attempt.
    pub fn metadata(&self) -> [(&'static str, String); 2] {
        [
            ("order_id", self.order_id.to_string()),
            ("charge_id", self.id.to_string()),
        ]
    }

    /// The key Stripe deduplicates this attempt's refund by.
    pub fn refund_key(&self) -> String {
        format!("refund-{}", self.id)
    }

    /// Records an attempt for `order` with `source`, or finds the one recorded before.
    pub async fn start(tx: &mut Tx, order: &OrderReplica, source: &str) -> sqlx::Result<Charge> {
        let id = Self::id_for(order.id, source);
        sqlx::query!(
            "INSERT INTO charges (id, order_id, status, amount_cents, source)
             VALUES ($1, $2, 'created', $3, $4) ON CONFLICT (id) DO NOTHING",
            id,
            order.id,
            order.price_cents,
            source,
        )
        .execute(&mut **tx)
        .await?;
        Self::lock(tx, id).await
    }

    pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Charge> {
        sqlx::query_as!(
            Charge,
            r#"SELECT id, order_id, status AS "status: ChargeStatus", amount_cents, source,
                      stripe_id, stripe_refund_id, failure_message,
                      refund_due_at IS NOT NULL AS "refund_due!"
               FROM charges WHERE id = $1"#,
            id,
        )
        .fetch_one(db)
        .await
    }

    pub async fn lock(tx: &mut Tx, id: Uuid) -> sqlx::Result<Charge> {
        sqlx::query_as!(
            Charge,
            r#"SELECT id, order_id, status AS "status: ChargeStatus", amount_cents, source,
                      stripe_id, stripe_refund_id, failure_message,
                      refund_due_at IS NOT NULL AS "refund_due!"
               FROM charges WHERE id = $1 FOR UPDATE"#,
            id,
        )
        .fetch_one(&mut **tx)
        .await
    }

    /// Whether the order keeps a completed charge (one with no refund due).
    pub async fn is_paid(db: impl PgExecutor<'_>, order_id: Uuid) -> sqlx::Result<bool> {
        sqlx::query_scalar!(
            r#"SELECT EXISTS (
                   SELECT 1 FROM charges
                   WHERE order_id = $1 AND status = 'completed' AND refund_due_at IS NULL
               ) AS "paid!""#,
            order_id,
        )
        .fetch_one(db)
        .await
    }

    /// Attempts whose outcome was never recorded, older than `age_seconds` (through
    /// the `charges_unsettled` index).
    pub async fn unsettled(db: impl PgExecutor<'_>, age_seconds: f64) -> sqlx::Result<Vec<Charge>> {
        sqlx::query_as!(
            Charge,
            r#"SELECT id, order_id, status AS "status: ChargeStatus", amount_cents, source,
                      stripe_id, stripe_refund_id, failure_message,
                      refund_due_at IS NOT NULL AS "refund_due!"
               FROM charges
               WHERE status = 'created' AND updated_at < clock_timestamp() - make_interval(secs => $1)
               ORDER BY updated_at LIMIT 100"#,
            age_seconds,
        )
        .fetch_all(db)
        .await
    }

    /// Charges whose refund is due but not made (through `charges_refund_pending`).
    pub async fn refunds_due(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Uuid>> {
        sqlx::query_scalar!(
            "SELECT id FROM charges
             WHERE refund_due_at IS NOT NULL AND stripe_refund_id IS NULL
             ORDER BY refund_due_at LIMIT 100"
        )
        .fetch_all(db)
        .await
    }

    pub async fn mark_failed(tx: &mut Tx, id: Uuid, message: &str) -> sqlx::Result<()> {
        sqlx::query!(
            "UPDATE charges SET status = 'failed', failure_message = $2, updated_at = clock_timestamp()
             WHERE id = $1 AND status = 'created'",
            id,
            message,
        )
        .execute(&mut **tx)
        .await
        .map(drop)
    }

    /// Records a completed charge, kept (`refund_due: false`) or to be refunded.
    pub async fn mark_completed(
        tx: &mut Tx,
        id: Uuid,
        stripe_id: &str,
        refund_due: bool,
    ) -> sqlx::Result<()> {
        sqlx::query!(
            "UPDATE charges SET status = 'completed', stripe_id = $2, failure_message = NULL,
                 refund_due_at = CASE WHEN $3 THEN clock_timestamp() END,
                 updated_at = clock_timestamp()
             WHERE id = $1",
            id,
            stripe_id,
            refund_due,
        )
        .execute(&mut **tx)
        .await?;
        if refund_due {
            tx.wake_on_commit(&REFUND_DUE);
        }
        Ok(())
    }

    /// Cancels the replica's order (locked by the caller) at `version` and makes the
    /// charge it kept, if any, due for a refund: one statement, one round trip.
    /// Returns whether a refund became due.
    pub async fn cancel_order(tx: &mut Tx, order_id: Uuid, version: i64) -> sqlx::Result<bool> {
        let due = sqlx::query!(
            "WITH cancelled AS (
                 UPDATE orders SET status = 'cancelled', version = $2 WHERE id = $1
             )
             UPDATE charges SET refund_due_at = clock_timestamp(), updated_at = clock_timestamp()
             WHERE order_id = $1 AND status = 'completed' AND refund_due_at IS NULL",
            order_id,
            version,
        )
        .execute(&mut **tx)
        .await?
        .rows_affected()
            > 0;
        if due {
            tx.wake_on_commit(&REFUND_DUE);
        }
        Ok(due)
    }

    /// Records the refund of a charge whose refund was due.
    pub async fn mark_refunded(
        db: impl PgExecutor<'_>,
        id: Uuid,
        refund_id: &str,
    ) -> sqlx::Result<()> {
        sqlx::query!(
            "UPDATE charges SET stripe_refund_id = $2, updated_at = clock_timestamp()
             WHERE id = $1 AND stripe_refund_id IS NULL",
            id,
            refund_id,
        )
        .execute(db)
        .await
        .map(drop)
    }
}
