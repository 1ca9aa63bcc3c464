use anyhow::Context;
use bus::Tx;
use bus::{Handled, Listener};
use common::events::PaymentCreated;

use crate::order::Order;

/// `payment.created`: an order still waiting for payment is complete. One that was
/// cancelled first stays cancelled; the payments service refunds the charge.
pub struct PaymentCreatedListener;

impl Listener for PaymentCreatedListener {
    type Event = PaymentCreated;

    async fn handle(&self, tx: &mut Tx, payment: PaymentCreated) -> anyhow::Result<Handled> {
        let order = Order::lock(tx, payment.order_id)
            .await?
            .with_context(|| format!("payment for unknown order {}", payment.order_id))?;
        if order.status.is_pending() {
            Order::complete(tx, order.id).await?;
        } else {
            tracing::info!(order_id = %order.id, status = order.status.as_str(), "payment for an order that is no longer pending");
        }
        Ok(Handled::Done)
    }
}
