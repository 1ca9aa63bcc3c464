use anyhow::Context;
use bus::Tx;
use bus::{Handled, Listener, append};
use common::events::OrderCancelled;

use crate::ticket::Ticket;

/// `order.cancelled`: the order is over. The ticket is free again, but only if that
/// order still holds it: a late cancellation of an older order must not free a
/// ticket that a newer order has reserved since. The cancellation is remembered, so a
/// late `order.created` of the same order changes nothing.
pub struct OrderCancelledListener;

impl Listener for OrderCancelledListener {
    type Event = OrderCancelled;

    async fn handle(&self, tx: &mut Tx, order: OrderCancelled) -> anyhow::Result<Handled> {
        let ticket = Ticket::lock(tx, order.ticket.id).await?.with_context(|| {
            format!(
                "order {} names unknown ticket {}",
                order.id, order.ticket.id
            )
        })?;
        Ticket::record_cancelled_order(tx, order.id, ticket.id).await?;
        if ticket.order_id == Some(order.id) {
            let ticket = Ticket::set_order(tx, ticket.id, None).await?;
            append(tx, &ticket.updated_event()).await?;
        }
        Ok(Handled::Done)
    }
}
