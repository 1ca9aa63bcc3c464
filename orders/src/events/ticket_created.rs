use common::db::Tx;
use common::events::{Handled, Listener, TicketCreated};

use crate::order::Ticket;

/// `ticket.created`: a new ticket enters the replica.
pub struct TicketCreatedListener;

impl Listener for TicketCreatedListener {
    type Event = TicketCreated;

    async fn handle(&self, tx: &mut Tx, ticket: TicketCreated) -> anyhow::Result<Handled> {
        let ticket = Ticket {
            id: ticket.id,
            title: ticket.title,
            price: ticket.price,
            version: ticket.version,
        };
        Ticket::insert(tx, &ticket).await?;
        Ok(Handled::Done)
    }
}
