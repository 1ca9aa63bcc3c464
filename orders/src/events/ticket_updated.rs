use bus::Tx;
use bus::{Handled, Listener, unless_next};
use common::events::TicketUpdated;

use crate::replica::TicketReplica;

/// `ticket.updated`: applied only as the next version of the replica; an old one is
/// ignored and one that skips ahead waits for the versions before it.
pub struct TicketUpdatedListener;

impl Listener for TicketUpdatedListener {
    type Event = TicketUpdated;

    async fn handle(&self, tx: &mut Tx, ticket: TicketUpdated) -> anyhow::Result<Handled> {
        let version = TicketReplica::lock_version(tx, ticket.id).await?;
        if let Some(answer) = unless_next(version, ticket.version) {
            return Ok(answer);
        }
        let replica = TicketReplica {
            id: ticket.id,
            title: ticket.title,
            price: ticket.price,
            version: ticket.version,
        };
        replica.replace(tx).await?;
        Ok(Handled::Done)
    }
}
