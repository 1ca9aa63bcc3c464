//! The replica of the orders service's orders, fed by `order.created` and
//! `order.cancelled` in version order.

use bus::Tx;
use common::events::OrderStatus;
use sqlx::PgExecutor;
use uuid::Uuid;

/// An order as the payments service knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderReplica {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub price_cents: i64,
    pub version: i64,
}

impl OrderReplica {
    /// Stores a new order; a second copy of the same order changes nothing.
    pub async fn insert(&self, tx: &mut Tx) -> sqlx::Result<()> {
        sqlx::query!(
            "INSERT INTO orders (id, user_id, status, price_cents, version) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
            self.id,
            self.user_id,
            self.status as OrderStatus,
            self.price_cents,
            self.version,
        )
        .execute(&mut **tx)
        .await
        .map(drop)
    }

    /// The order, locked until the transaction ends. Every decision about its money
    /// takes this lock first.
    pub async fn lock(tx: &mut Tx, id: Uuid) -> sqlx::Result<Option<OrderReplica>> {
        sqlx::query_as!(
            OrderReplica,
            r#"SELECT id, user_id, status AS "status: OrderStatus", price_cents, version
               FROM orders WHERE id = $1 FOR UPDATE"#,
            id,
        )
        .fetch_optional(&mut **tx)
        .await
    }

    pub async fn status(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<OrderStatus>> {
        sqlx::query_scalar!(
            r#"SELECT status AS "status: OrderStatus" FROM orders WHERE id = $1"#,
            id
        )
        .fetch_optional(db)
        .await
    }
}
