use common::db::Tx;
use common::events::{Handled, Listener, OrderCancelled, Sequence};

use crate::model::Order;
use crate::settle::{Payments, SettleError};

/// `order.cancelled`: the replica's order is cancelled (in version order) and a
/// charge it kept is refunded, under the order's lock and in the same transaction.
/// If Stripe cannot be reached, the cancellation is still recorded and the refund is
/// left to the reconciler, which retries it until it succeeds.
pub struct OrderCancelledListener {
    pub payments: Payments,
}

impl Listener for OrderCancelledListener {
    type Event = OrderCancelled;

    async fn handle(&self, tx: &mut Tx, event: OrderCancelled) -> anyhow::Result<Handled> {
        let Some(order) = Order::lock(tx, event.id).await? else {
            return Ok(Handled::NotYet("the order has not been replicated yet"));
        };
        match Sequence::of(order.version, event.version) {
            Sequence::Stale => return Ok(Handled::Done),
            Sequence::Gap => return Ok(Handled::NotYet("an earlier version has not arrived yet")),
            Sequence::Next => {}
        }
        Order::mark_cancelled(tx, order.id, event.version).await?;
        match self.payments.refund_kept(tx, order.id).await {
            Ok(()) => {}
            Err(SettleError::Stripe(error)) => {
                tracing::warn!(order_id = %order.id, %error, "refund deferred to the reconciler");
            }
            Err(SettleError::Internal(error)) => return Err(error),
        }
        Ok(Handled::Done)
    }
}
