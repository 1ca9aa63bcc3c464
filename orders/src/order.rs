//! Orders, the ticket replica, and their queries.

use common::db::Tx;
use common::events::{
    OrderCancelled, OrderCreated, OrderCreatedTicket, OrderStatus, TicketRef, append,
};
use common::money::Price;
use common::time::Timestamp;
use serde::Serialize;
use sqlx::PgExecutor;
use utoipa::ToSchema;
use uuid::Uuid;

/// A ticket as the orders service knows it (replicated from the tickets service).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
pub struct Ticket {
    pub id: Uuid,
    pub title: String,
    #[sqlx(rename = "price_cents", try_from = "i64")]
    pub price: Price,
    pub version: i64,
}

impl Ticket {
    pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Ticket>> {
        sqlx::query_as("SELECT id, title, price_cents, version FROM tickets WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await
    }

    /// The replica's version, locked until the transaction ends.
    pub async fn lock_version(tx: &mut Tx, id: Uuid) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar("SELECT version FROM tickets WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
    }

    /// Stores a new ticket; a second copy of the same ticket changes nothing.
    pub async fn insert(tx: &mut Tx, ticket: &Ticket) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO tickets (id, title, price_cents, version) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(ticket.id)
        .bind(&ticket.title)
        .bind(ticket.price.cents())
        .bind(ticket.version)
        .execute(&mut **tx)
        .await
        .map(drop)
    }

    pub async fn replace(tx: &mut Tx, ticket: &Ticket) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE tickets SET title = $2, price_cents = $3, version = $4, replicated_at = clock_timestamp() WHERE id = $1",
        )
        .bind(ticket.id)
        .bind(&ticket.title)
        .bind(ticket.price.cents())
        .bind(ticket.version)
        .execute(&mut **tx)
        .await
        .map(drop)
    }
}

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
    pub ticket: Ticket,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    #[sqlx(try_from = "String")]
    status: OrderStatus,
    expires_at: Timestamp,
    version: i64,
    ticket_id: Uuid,
    ticket_title: String,
    #[sqlx(try_from = "i64")]
    ticket_price_cents: Price,
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
            ticket: Ticket {
                id: row.ticket_id,
                title: row.ticket_title,
                price: row.ticket_price_cents,
                version: row.ticket_version,
            },
        }
    }
}

const COLUMNS: &str = "id, user_id, status, expires_at, version, ticket_id, ticket_title, ticket_price_cents, ticket_version";

fn select(clause: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM orders {clause}"))
}

impl Order {
    /// Places an order for `ticket` unless another order already reserves it (then
    /// `None`). Decided by the unique index on active orders, so it is race-free.
    pub async fn reserve(
        tx: &mut Tx,
        user_id: Uuid,
        ticket: &Ticket,
        expires_at: Timestamp,
    ) -> sqlx::Result<Option<Order>> {
        let row: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO orders (id, user_id, status, expires_at, ticket_id, ticket_title, ticket_price_cents, ticket_version)
             VALUES ($1, $2, 'created', $3, $4, $5, $6, $7)
             ON CONFLICT (ticket_id) WHERE status IN ('created', 'awaiting:payment', 'complete') DO NOTHING
             RETURNING {COLUMNS}"
        )))
        .bind(Uuid::new_v4())
        .bind(user_id)
        .bind(expires_at)
        .bind(ticket.id)
        .bind(&ticket.title)
        .bind(ticket.price.cents())
        .bind(ticket.version)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.map(Order::from))
    }

    pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Order>> {
        let row: Option<OrderRow> = sqlx::query_as(select("WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?;
        Ok(row.map(Order::from))
    }

    /// The order, locked until the transaction ends: its transitions are serialised.
    pub async fn lock(tx: &mut Tx, id: Uuid) -> sqlx::Result<Option<Order>> {
        let row: Option<OrderRow> = sqlx::query_as(select("WHERE id = $1 FOR UPDATE"))
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(row.map(Order::from))
    }

    /// A user's orders, newest first.
    pub async fn of_user(db: impl PgExecutor<'_>, user_id: Uuid) -> sqlx::Result<Vec<Order>> {
        let rows: Vec<OrderRow> = sqlx::query_as(select(
            "WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
        ))
        .bind(user_id)
        .fetch_all(db)
        .await?;
        Ok(rows.into_iter().map(Order::from).collect())
    }

    /// Moves a locked order to `status`; the version goes up by one.
    async fn transition(tx: &mut Tx, id: Uuid, status: OrderStatus) -> sqlx::Result<Order> {
        let row: OrderRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE orders SET status = $2, version = version + 1 WHERE id = $1 RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(status.as_str())
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
