use anyhow::Context;
use bus::Tx;
use bus::{Handled, Listener, append};
use common::events::OrderCreated;

use crate::ticket::Ticket;

/// `order.created`: the ticket is now reserved by that order (version + 1,
/// `ticket.updated`).
///
/// Events about one ticket's orders can be handled out of order (two subjects, and
/// several events in flight). The orders service only creates an order for a ticket
/// once the previous order is cancelled, so:
///
/// - an order already known to be cancelled is over: ignore it;
/// - a ticket held by another order means that order's cancellation has not been
///   handled yet, or this one's has not: wait until it has, and look again.
pub struct OrderCreatedListener;

impl Listener for OrderCreatedListener {
    type Event = OrderCreated;

    async fn handle(&self, tx: &mut Tx, order: OrderCreated) -> anyhow::Result<Handled> {
        let ticket = Ticket::lock(tx, order.ticket.id).await?.with_context(|| {
            format!(
                "order {} names unknown ticket {}",
                order.id, order.ticket.id
            )
        })?;
        if Ticket::is_cancelled_order(tx, order.id).await? {
            return Ok(Handled::Done);
        }
        match ticket.order_id {
            Some(holder) if holder == order.id => Ok(Handled::Done),
            Some(_) => Ok(Handled::NotYet(
                "the ticket is held by another order whose cancellation has not arrived",
            )),
            None => {
                let ticket = Ticket::set_order(tx, ticket.id, Some(order.id)).await?;
                append(tx, &ticket.updated_event()).await?;
                Ok(Handled::Done)
            }
        }
    }
}
