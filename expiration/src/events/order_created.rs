//! `order.created` → an entry in the schedule.

use common::db::Tx;
use common::events::{Handled, Listener, OrderCreated};

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
