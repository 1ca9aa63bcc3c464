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
        let replica = TicketReplica {
            id: ticket.id,
            title: ticket.title,
            price: ticket.price,
            version: ticket.version,
        };
        // The usual case, the next version, in one statement.
        if replica.replace_if_next(tx).await? {
            return Ok(Handled::Done);
        }
        let version = TicketReplica::lock_version(tx, replica.id).await?;
        if let Some(answer) = unless_next(version, replica.version) {
            return Ok(answer);
        }
        // It became the next one between the two statements.
        replica.replace(tx).await?;
        Ok(Handled::Done)
    }
}
