//! Orders and their queries.

use bus::Tx;
use bus::append;
use common::events::{OrderCancelled, OrderCreated, OrderCreatedTicket, OrderStatus, TicketRef};
use common::money::Price;
use common::time::Timestamp;
use serde::Serialize;
use sqlx::PgExecutor;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::replica::TicketReplica;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    #[serde(with = "common::time::iso")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    pub version: i64,
    /// The ticket as it was when ordered.
    pub ticket: OrderedTicket,
}

/// What was bought, as it was when the order was placed: the order keeps its price
/// even if the ticket is edited after the order is cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OrderedTicket {
    pub id: Uuid,
    pub title: String,
    pub price: Price,
    pub version: i64,
}

/// An `orders` row as stored: the ordered ticket in columns of its own.
struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    status: OrderStatus,
    expires_at: Timestamp,
    version: i64,
    ticket_id: Uuid,
    ticket_title: String,
    ticket_price: Price,
    ticket_version: i64,
}

impl From<OrderRow> for Order {
    fn from(row: OrderRow) -> Self {
        Order {
            id: row.id,
            user_id: row.user_id,
            status: row.status,
            expires_at: row.expires_at,
            version: row.version,
            ticket: OrderedTicket {
                id: row.ticket_id,
                title: row.ticket_title,
                price: row.ticket_price,
                version: row.ticket_version,
            },
        }
    }
}

impl Order {
    /// Places an order for `ticket` unless another order already reserves it (then
    /// `None`). Decided by the unique index on active orders, so it is race-free.
    pub async fn reserve(
        tx: &mut Tx,
        user_id: Uuid,
        ticket: &TicketReplica,
        expires_at: Timestamp,
    ) -> sqlx::Result<Option<Order>> {
        let row = sqlx::query_as!(
            OrderRow,
            r#"INSERT INTO orders (id, user_id, status, expires_at, ticket_id, ticket_title,
                                   ticket_price_cents, ticket_version)
               VALUES ($1, $2, 'created', $3, $4, $5, $6, $7)
               ON CONFLICT (ticket_id) WHERE status IN ('created', 'awaiting:payment', 'complete')
               DO NOTHING
               RETURNING id, user_id, status AS "status: OrderStatus", expires_at, version,
                         ticket_id, ticket_title, ticket_price_cents AS "ticket_price: Price",
                         ticket_version"#,
            Uuid::new_v4(),
            user_id,
            expires_at,
            ticket.id,
            ticket.title,
            ticket.price as Price,
            ticket.version,
        )
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.map(Order::from))
    }

    /// How many unpaid orders (`created`, `awaiting:payment`) `user_id` holds, with
    /// the user's other new orders held off until this transaction ends: of any
    /// number placed at once, only as many as the cap allows get through.
    pub async fn count_unpaid_locked(tx: &mut Tx, user_id: Uuid) -> sqlx::Result<i64> {
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))",
            user_id.to_string(),
        )
        .execute(&mut **tx)
        .await?;
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM orders
               WHERE user_id = $1 AND status IN ('created', 'awaiting:payment')"#,
            user_id,
        )
        .fetch_one(&mut **tx)
        .await
    }

    pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Order>> {
        let row = sqlx::query_as!(
            OrderRow,
            r#"SELECT id, user_id, status AS "status: OrderStatus", expires_at, version,
                      ticket_id, ticket_title, ticket_price_cents AS "ticket_price: Price",
                      ticket_version
               FROM orders WHERE id = $1"#,
            id,
        )
        .fetch_optional(db)
        .await?;
        Ok(row.map(Order::from))
    }

    /// The order, locked until the transaction ends: its transitions are serialised.
    pub async fn lock(tx: &mut Tx, id: Uuid) -> sqlx::Result<Option<Order>> {
        let row = sqlx::query_as!(
            OrderRow,
            r#"SELECT id, user_id, status AS "status: OrderStatus", expires_at, version,
                      ticket_id, ticket_title, ticket_price_cents AS "ticket_price: Price",
                      ticket_version
               FROM orders WHERE id = $1 FOR UPDATE"#,
            id,
        )
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.map(Order::from))
    }

    /// A user's orders, newest first.
    /// The user's orders, newest first: at most `limit`, those placed before the
    /// user's order `before` if given (none if that is not one of theirs).
    pub async fn of_user(
        db: impl PgExecutor<'_>,
        user_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> sqlx::Result<Vec<Order>> {
        let rows = sqlx::query_as!(
            OrderRow,
            r#"SELECT id, user_id, status AS "status: OrderStatus", expires_at, version,
                      ticket_id, ticket_title, ticket_price_cents AS "ticket_price: Price",
                      ticket_version
               FROM orders
               WHERE user_id = $1
                 AND ($2::uuid IS NULL
                      OR (created_at, id) < (SELECT created_at, id FROM orders
                                             WHERE id = $2 AND user_id = $1))
               ORDER BY created_at DESC, id DESC
               LIMIT $3"#,
            user_id,
            before,
            limit,
        )
        .fetch_all(db)
        .await?;
        Ok(rows.into_iter().map(Order::from).collect())
    }

    /// Moves a locked order to `status`; the version goes up by one.
    async fn transition(tx: &mut Tx, id: Uuid, status: OrderStatus) -> sqlx::Result<Order> {
        let row = sqlx::query_as!(
            OrderRow,
            r#"UPDATE orders SET status = $2, version = version + 1, updated_at = clock_timestamp()
               WHERE id = $1
               RETURNING id, user_id, status AS "status: OrderStatus", expires_at, version,
                         ticket_id, ticket_title, ticket_price_cents AS "ticket_price: Price",
                         ticket_version"#,
            id,
            status as OrderStatus,
        )
        .fetch_one(&mut **tx)
        .await?;
        Ok(row.into())
    }

    /// Cancels a locked order and announces it with `order.cancelled`.
    pub async fn cancel(tx: &mut Tx, id: Uuid) -> anyhow::Result<Order> {
        let order = Self::transition(tx, id, OrderStatus::Cancelled).await?;
        append(tx, &order.cancelled_event()).await?;
        Ok(order)
    }

    /// Cancels the order if it is still pending, in one statement that takes its lock
    /// (as [`Order::lock`] would) and announces it with `order.cancelled`; `None` if
    /// it had already ended (complete or cancelled) or does not exist. A transition
    /// racing it is waited for, and the status it left is the one checked.
    pub async fn cancel_if_pending(tx: &mut Tx, id: Uuid) -> anyhow::Result<Option<Order>> {
        let row = sqlx::query_as!(
            OrderRow,
            r#"UPDATE orders SET status = 'cancelled', version = version + 1,
                                 updated_at = clock_timestamp()
               WHERE id = $1 AND status IN ('created', 'awaiting:payment')
               RETURNING id, user_id, status AS "status: OrderStatus", expires_at, version,
                         ticket_id, ticket_title, ticket_price_cents AS "ticket_price: Price",
                         ticket_version"#,
            id,
        )
        .fetch_optional(&mut **tx)
        .await?;
        let Some(order) = row.map(Order::from) else {
            return Ok(None);
        };
        append(tx, &order.cancelled_event()).await?;
        Ok(Some(order))
    }

    /// Completes a locked order (it was paid for).
    pub async fn complete(tx: &mut Tx, id: Uuid) -> sqlx::Result<Order> {
        Self::transition(tx, id, OrderStatus::Complete).await
    }

    pub fn created_event(&self) -> OrderCreated {
        OrderCreated {
            id: self.id,
            version: self.version,
            status: self.status,
            user_id: self.user_id,
            expires_at: self.expires_at,
            ticket: OrderCreatedTicket {
                id: self.ticket.id,
                price: self.ticket.price,
            },
        }
    }

    pub fn cancelled_event(&self) -> OrderCancelled {
        OrderCancelled {
            id: self.id,
            version: self.version,
            ticket: TicketRef { id: self.ticket.id },
        }
    }
}
