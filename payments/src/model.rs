//! The order replica and the charges, and their queries.

use common::db::Tx;
use common::events::OrderStatus;
use sqlx::PgExecutor;
use uuid::Uuid;

/// An order as the payments service knows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    #[sqlx(try_from = "String")]
    pub status: OrderStatus,
    pub price_cents: i64,
    pub version: i64,
}

impl Order {
    /// Stores a new order; a second copy of the same order changes nothing.
    pub async fn insert(tx: &mut Tx, order: &Order) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO orders (id, user_id, status, price_cents, version) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(order.id)
        .bind(order.user_id)
        .bind(order.status.as_str())
        .bind(order.price_cents)
        .bind(order.version)
        .execute(&mut **tx)
        .await
        .map(drop)
    }

    /// The order, locked until the transaction ends. Every decision about its money
    /// takes this lock first.
    pub async fn lock(tx: &mut Tx, id: Uuid) -> sqlx::Result<Option<Order>> {
        sqlx::query_as(
            "SELECT id, user_id, status, price_cents, version FROM orders WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
    }

    pub async fn mark_cancelled(tx: &mut Tx, id: Uuid, version: i64) -> sqlx::Result<()> {
        sqlx::query("UPDATE orders SET status = 'cancelled', version = $2 WHERE id = $1")
            .bind(id)
            .bind(version)
            .execute(&mut **tx)
            .await
            .map(drop)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeStatus {
    Created,
    Failed,
    Completed,
}

impl TryFrom<String> for ChargeStatus {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "created" => Ok(Self::Created),
            "failed" => Ok(Self::Failed),
            "completed" => Ok(Self::Completed),
            other => Err(format!("unknown charge status {other:?}")),
        }
    }
}

/// One attempt to pay for an order.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Charge {
    pub id: Uuid,
    pub order_id: Uuid,
    #[sqlx(try_from = "String")]
    pub status: ChargeStatus,
    pub amount_cents: i64,
    pub source: String,
    pub stripe_id: Option<String>,
    pub stripe_refund_id: Option<String>,
    pub failure_message: Option<String>,
}

const COLUMNS: &str =
    "id, order_id, status, amount_cents, source, stripe_id, stripe_refund_id, failure_message";

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

    /// The key Stripe deduplicates this attempt's refund by.
    pub fn refund_key(&self) -> String {
        format!("refund-{}", self.id)
    }

    /// Records an attempt for `order` with `source`, or finds the one recorded before.
    pub async fn start(tx: &mut Tx, order: &Order, source: &str) -> sqlx::Result<Charge> {
        let id = Self::id_for(order.id, source);
        sqlx::query(
            "INSERT INTO charges (id, order_id, status, amount_cents, source) VALUES ($1, $2, 'created', $3, $4)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(order.id)
        .bind(order.price_cents)
        .bind(source)
        .execute(&mut **tx)
        .await?;
        Self::lock(tx, id).await
    }

    pub async fn lock(tx: &mut Tx, id: Uuid) -> sqlx::Result<Charge> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM charges WHERE id = $1 FOR UPDATE"
        )))
        .bind(id)
        .fetch_one(&mut **tx)
        .await
    }

    /// The completed, unrefunded charge of an order, if any.
    pub async fn kept(db: impl PgExecutor<'_>, order_id: Uuid) -> sqlx::Result<Option<Charge>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM charges WHERE order_id = $1 AND status = 'completed' AND stripe_refund_id IS NULL"
        )))
        .bind(order_id)
        .fetch_optional(db)
        .await
    }

    /// Attempts whose outcome was never recorded, older than `age_seconds`.
    pub async fn unsettled(db: impl PgExecutor<'_>, age_seconds: f64) -> sqlx::Result<Vec<Charge>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM charges WHERE status = 'created'
             AND updated_at < clock_timestamp() - make_interval(secs => $1) ORDER BY updated_at LIMIT 100"
        )))
        .bind(age_seconds)
        .fetch_all(db)
        .await
    }

    /// Orders that are cancelled but still keep a charge (their refund failed).
    pub async fn unrefunded_cancelled_orders(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Uuid>> {
        sqlx::query_scalar(
            "SELECT c.order_id FROM charges c JOIN orders o ON o.id = c.order_id
             WHERE o.status = 'cancelled' AND c.status = 'completed' AND c.stripe_refund_id IS NULL LIMIT 100",
        )
        .fetch_all(db)
        .await
    }

    pub async fn mark_failed(tx: &mut Tx, id: Uuid, message: &str) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE charges SET status = 'failed', failure_message = $2, updated_at = clock_timestamp()
             WHERE id = $1 AND status = 'created'",
        )
        .bind(id)
        .bind(message)
        .execute(&mut **tx)
        .await
        .map(drop)
    }

    /// Records a completed charge, with its refund if it was refunded.
    pub async fn mark_completed(
        tx: &mut Tx,
        id: Uuid,
        stripe_id: &str,
        refund_id: Option<&str>,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE charges SET status = 'completed', stripe_id = $2, stripe_refund_id = $3,
             failure_message = NULL, updated_at = clock_timestamp() WHERE id = $1",
        )
        .bind(id)
        .bind(stripe_id)
        .bind(refund_id)
        .execute(&mut **tx)
        .await
        .map(drop)
    }

    pub async fn mark_refunded(tx: &mut Tx, id: Uuid, refund_id: &str) -> sqlx::Result<()> {
        sqlx::query("UPDATE charges SET stripe_refund_id = $2, updated_at = clock_timestamp() WHERE id = $1")
            .bind(id)
            .bind(refund_id)
            .execute(&mut **tx)
            .await
            .map(drop)
    }
}
