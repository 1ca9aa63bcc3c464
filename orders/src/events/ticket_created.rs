use bus::Tx;
use bus::{Handled, Listener};
use common::events::TicketCreated;

use crate::replica::TicketReplica;

/// `ticket.created`: a new ticket enters the replica.
pub struct TicketCreatedListener;

impl Listener for TicketCreatedListener {
    type Event = TicketCreated;

    async fn handle(&self, tx: &mut Tx, ticket: TicketCreated) -> anyhow::Result<Handled> {
        let replica = TicketReplica {
            id: ticket.id,
            title: ticket.title,
            price: ticket.price,
            version: ticket.version,
        };
        replica.insert(tx).await?;
        Ok(Handled::Done)
    }
}
