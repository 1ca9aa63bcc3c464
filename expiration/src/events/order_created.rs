//! `order.created` → an entry in the schedule.

use bus::Tx;
use bus::{Handled, Listener};
use common::events::OrderCreated;

use crate::schedule;

/// `order.created`: the order's expiry enters the schedule.
pub struct OrderCreatedListener;

impl Listener for OrderCreatedListener {
    type Event = OrderCreated;

    async fn handle(&self, tx: &mut Tx, order: OrderCreated) -> anyhow::Result<Handled> {
        schedule::add(tx, order.id, order.expires_at).await?;
        Ok(Handled::Done)
    }
}
