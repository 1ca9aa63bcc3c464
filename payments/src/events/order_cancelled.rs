use bus::Tx;
use bus::{Handled, Listener, unless_next};
use common::events::OrderCancelled;

use crate::charge::Charge;
use crate::replica::OrderReplica;

/// `order.cancelled`: the replica's order is cancelled (in version order) and a charge
/// it kept becomes due for a refund, in the same transaction under the order's lock.
/// The refund itself is made by the reconciler right after, outside any transaction.
pub struct OrderCancelledListener;

impl Listener for OrderCancelledListener {
    type Event = OrderCancelled;

    async fn handle(&self, tx: &mut Tx, event: OrderCancelled) -> anyhow::Result<Handled> {
        let order = OrderReplica::lock(tx, event.id).await?;
        if let Some(answer) = unless_next(order.map(|order| order.version), event.version) {
            return Ok(answer);
        }
        if Charge::cancel_order(tx, event.id, event.version).await? {
            tracing::info!(order_id = %event.id, "the cancelled order was paid: its refund is due");
        }
        Ok(Handled::Done)
    }
}
