use common::db::Tx;
use common::events::{Handled, Listener, Sequence, TicketUpdated};

use crate::order::Ticket;

/// `ticket.updated`: applied only as the next version of the replica; an old one is
/// ignored and one that skips ahead waits for the versions before it.
pub struct TicketUpdatedListener;

impl Listener for TicketUpdatedListener {
    type Event = TicketUpdated;

    async fn handle(&self, tx: &mut Tx, ticket: TicketUpdated) -> anyhow::Result<Handled> {
        let Some(version) = Ticket::lock_version(tx, ticket.id).await? else {
            return Ok(Handled::NotYet("the ticket has not been replicated yet"));
        };
        match Sequence::of(version, ticket.version) {
            Sequence::Stale => return Ok(Handled::Done),
            Sequence::Gap => return Ok(Handled::NotYet("an earlier version has not arrived yet")),
            Sequence::Next => {}
        }
        let ticket = Ticket {
            id: ticket.id,
            title: ticket.title,
            price: ticket.price,
            version: ticket.version,
        };
        Ticket::replace(tx, &ticket).await?;
        Ok(Handled::Done)
    }
}
