use bus::Tx;
use bus::{Handled, Listener};
use common::events::OrderCreated;

use crate::replica::OrderReplica;

/// `order.created`: a new order enters the replica.
pub struct OrderCreatedListener;

impl Listener for OrderCreatedListener {
    type Event = OrderCreated;

    async fn handle(&self, tx: &mut Tx, order: OrderCreated) -> anyhow::Result<Handled> {
        let replica = OrderReplica {
            id: order.id,
            user_id: order.user_id,
            status: order.status,
            price_cents: order.ticket.price.cents(),
            version: order.version,
        };
        replica.insert(tx).await?;
        Ok(Handled::Done)
    }
}
