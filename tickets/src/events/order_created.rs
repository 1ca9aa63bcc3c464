use anyhow::Context;
use common::db::Tx;
use common::events::{Handled, Listener, OrderCreated, append};

use crate::ticket::Ticket;

/// `order.created`: the ticket is now reserved by that order (version + 1,
/// `ticket.updated`).
pub struct OrderCreatedListener;

impl Listener for OrderCreatedListener {
    type Event = OrderCreated;

    async fn handle(&self, tx: &mut Tx, order: OrderCreated) -> anyhow::Result<Handled> {
        let ticket = Ticket::lock(tx, order.ticket.id)
            .await?
            .with_context(|| format!("order {} names unknown ticket {}", order.id, order.ticket.id))?;
        if ticket.order_id == Some(order.id) {
            return Ok(Handled::Done);
        }
        let ticket = Ticket::set_order(tx, ticket.id, Some(order.id)).await?;
        append(tx, &ticket.updated_event()).await?;
        Ok(Handled::Done)
    }
}
