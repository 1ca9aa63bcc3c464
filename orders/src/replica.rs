//! The replica of the tickets service's tickets, fed by `ticket.created` and
//! `ticket.updated` in version order.

use bus::Tx;
use common::money::Price;
use sqlx::PgExecutor;
use uuid::Uuid;

/// A ticket as the orders service knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketReplica {
    pub id: Uuid,
    pub title: String,
    pub price: Price,
    pub version: i64,
}

impl TicketReplica {
    pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<TicketReplica>> {
        sqlx::query_as!(
            TicketReplica,
            r#"SELECT id, title, price_cents AS "price: Price", version FROM tickets WHERE id = $1"#,
            id,
        )
        .fetch_optional(db)
        .await
    }

    /// The replica's version of a ticket, locked until the transaction ends.
    pub async fn lock_version(tx: &mut Tx, id: Uuid) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar!("SELECT version FROM tickets WHERE id = $1 FOR UPDATE", id)
            .fetch_optional(&mut **tx)
            .await
    }

    /// Stores a new ticket; a second copy of the same ticket changes nothing.
    pub async fn insert(&self, tx: &mut Tx) -> sqlx::Result<()> {
        sqlx::query!(
            "INSERT INTO tickets (id, title, price_cents, version) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
            self.id,
            self.title,
            self.price as Price,
            self.version,
        )
        .execute(&mut **tx)
        .await
        .map(drop)
    }

    /// Stores this version of the ticket if it is the next one (the stored version is
    /// one less): one statement, which takes the row's lock as [`Self::lock_version`]
    /// would and waits for a concurrent change, whose result it then checks. Returns
    /// whether it was stored; if not, the caller locks the version and decides.
    pub async fn replace_if_next(&self, tx: &mut Tx) -> sqlx::Result<bool> {
        let done = sqlx::query!(
            "UPDATE tickets SET title = $2, price_cents = $3, version = $4,
                                replicated_at = clock_timestamp()
             WHERE id = $1 AND version = $4::bigint - 1",
            self.id,
            self.title,
            self.price as Price,
            self.version,
        )
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the stored ticket with this version of it.
    pub async fn replace(&self, tx: &mut Tx) -> sqlx::Result<()> {
        sqlx::query!(
            "UPDATE tickets SET title = $2, price_cents = $3, version = $4,
                                replicated_at = clock_timestamp()
             WHERE id = $1",
            self.id,
            self.title,
            self.price as Price,
            self.version,
        )
        .execute(&mut **tx)
        .await
        .map(drop)
    }
}
