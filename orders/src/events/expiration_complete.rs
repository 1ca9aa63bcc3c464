use anyhow::Context;
use bus::Tx;
use bus::{Handled, Listener};
use common::events::ExpirationComplete;

use crate::order::Order;

/// `expiration.complete`: an order still waiting for payment is cancelled (version + 1,
/// `order.cancelled`); a complete or cancelled one stays as it is.
pub struct ExpirationCompleteListener;

impl Listener for ExpirationCompleteListener {
    type Event = ExpirationComplete;

    async fn handle(&self, tx: &mut Tx, event: ExpirationComplete) -> anyhow::Result<Handled> {
        // The usual case in one statement; only when nothing was pending is the order
        // looked up, to tell an ended order from an unknown one.
        if Order::cancel_if_pending(tx, event.order_id)
            .await?
            .is_none()
        {
            Order::find(&mut **tx, event.order_id)
                .await?
                .with_context(|| format!("expiration of unknown order {}", event.order_id))?;
        }
        Ok(Handled::Done)
    }
}
