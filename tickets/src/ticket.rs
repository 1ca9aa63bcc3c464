//! The ticket and its queries.

use anyhow::Context as _;
use bus::{Staged, Tx};
use common::events::{TicketCreated, TicketUpdated};
use common::money::Price;
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub id: Uuid,
    pub title: String,
    pub price: Price,
    pub user_id: Uuid,
    pub version: i64,
    /// The order reserving the ticket; null when it is free.
    pub order_id: Option<Uuid>,
}

impl Ticket {
    /// Lists a new ticket (version 0) and appends its `ticket.created` to the outbox,
    /// both in one statement: atomic without a transaction, and one round trip
    /// instead of four ([`Staged`]). It runs on its own, on `pool`: inside a
    /// transaction it would not have committed when the relay is woken.
    pub async fn create(
        pool: &PgPool,
        title: String,
        price: Price,
        user_id: Uuid,
    ) -> anyhow::Result<Ticket> {
        let ticket = Ticket {
            id: Uuid::new_v4(),
            title,
            price,
            user_id,
            version: 0,
            order_id: None,
        };
        let event = Staged::new(&ticket.created_event())?;
        let statement = sqlx::query!(
            r#"WITH event AS (
                   INSERT INTO outbox (event_id, subject, payload, traceparent)
                   VALUES ($5, $6, $7::text::json, $9)
               )
               INSERT INTO tickets (id, title, price_cents, user_id, version)
               VALUES ($1, $2, $3, $4, $8)"#,
            ticket.id,
            ticket.title,
            ticket.price as Price,
            ticket.user_id,
            event.event_id,
            event.subject,
            event.payload,
            ticket.version,
            event.traceparent,
        );
        event
            .execute(pool, statement)
            .await
            .context("listing a ticket")?;
        Ok(ticket)
    }

    pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Ticket>> {
        sqlx::query_as!(
            Ticket,
            r#"SELECT id, title, price_cents AS "price: Price", user_id, version, order_id
               FROM tickets WHERE id = $1"#,
            id,
        )
        .fetch_optional(db)
        .await
    }

    /// The ticket, locked until the transaction ends: changes to one ticket are
    /// serialised, so each increments the version exactly once and none is lost.
    pub async fn lock(tx: &mut Tx, id: Uuid) -> sqlx::Result<Option<Ticket>> {
        sqlx::query_as!(
            Ticket,
            r#"SELECT id, title, price_cents AS "price: Price", user_id, version, order_id
               FROM tickets WHERE id = $1 FOR UPDATE"#,
            id,
        )
        .fetch_optional(&mut **tx)
        .await
    }

    /// Up to `limit` unreserved tickets older than ticket `before` (newest first).
    pub async fn page_before(
        db: impl PgExecutor<'_>,
        before: Uuid,
        limit: i64,
    ) -> sqlx::Result<Vec<Ticket>> {
        sqlx::query_as!(
            Ticket,
            r#"SELECT id, title, price_cents AS "price: Price", user_id, version, order_id
               FROM tickets
               WHERE order_id IS NULL
                 AND (created_at, id) < (SELECT created_at, id FROM tickets WHERE id = $1)
               ORDER BY created_at DESC, id DESC LIMIT $2"#,
            before,
            limit,
        )
        .fetch_all(db)
        .await
    }

    /// Up to `limit` unreserved tickets newer than ticket `after`, oldest first.
    pub async fn page_after(
        db: impl PgExecutor<'_>,
        after: Uuid,
        limit: i64,
    ) -> sqlx::Result<Vec<Ticket>> {
        sqlx::query_as!(
            Ticket,
            r#"SELECT id, title, price_cents AS "price: Price", user_id, version, order_id
               FROM tickets
               WHERE order_id IS NULL
                 AND (created_at, id) > (SELECT created_at, id FROM tickets WHERE id = $1)
               ORDER BY created_at, id LIMIT $2"#,
            after,
            limit,
        )
        .fetch_all(db)
        .await
    }

    /// The newest `limit` unreserved tickets.
    pub async fn first_page(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<Ticket>> {
        sqlx::query_as!(
            Ticket,
            r#"SELECT id, title, price_cents AS "price: Price", user_id, version, order_id
               FROM tickets WHERE order_id IS NULL
               ORDER BY created_at DESC, id DESC LIMIT $1"#,
            limit,
        )
        .fetch_all(db)
        .await
    }

    /// Changes title and price; the version goes up by one.
    pub async fn edit(tx: &mut Tx, id: Uuid, title: &str, price: Price) -> sqlx::Result<Ticket> {
        sqlx::query_as!(
            Ticket,
            r#"UPDATE tickets SET title = $2, price_cents = $3, version = version + 1 WHERE id = $1
               RETURNING id, title, price_cents AS "price: Price", user_id, version, order_id"#,
            id,
            title,
            price as Price,
        )
        .fetch_one(&mut **tx)
        .await
    }

    /// Reserves (`Some(order)`) or frees (`None`) the ticket; the version goes up by one.
    pub async fn set_order(tx: &mut Tx, id: Uuid, order_id: Option<Uuid>) -> sqlx::Result<Ticket> {
        sqlx::query_as!(
            Ticket,
            r#"UPDATE tickets SET order_id = $2, version = version + 1 WHERE id = $1
               RETURNING id, title, price_cents AS "price: Price", user_id, version, order_id"#,
            id,
            order_id,
        )
        .fetch_one(&mut **tx)
        .await
    }

    /// Remembers that an order is over (see the `cancelled_orders` migration).
    pub async fn record_cancelled_order(
        tx: &mut Tx,
        order_id: Uuid,
        ticket_id: Uuid,
    ) -> sqlx::Result<()> {
        sqlx::query!(
            "INSERT INTO cancelled_orders (order_id, ticket_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            order_id,
            ticket_id,
        )
        .execute(&mut **tx)
        .await
        .map(drop)
    }

    pub async fn is_cancelled_order(tx: &mut Tx, order_id: Uuid) -> sqlx::Result<bool> {
        sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM cancelled_orders WHERE order_id = $1) AS "cancelled!""#,
            order_id,
        )
        .fetch_one(&mut **tx)
        .await
    }

    pub fn created_event(&self) -> TicketCreated {
        TicketCreated {
            id: self.id,
            version: self.version,
            title: self.title.clone(),
            price: self.price,
            user_id: self.user_id,
        }
    }

    pub fn updated_event(&self) -> TicketUpdated {
        TicketUpdated {
            id: self.id,
            version: self.version,
            title: self.title.clone(),
            price: self.price,
            user_id: self.user_id,
            order_id: self.order_id,
        }
    }
}
