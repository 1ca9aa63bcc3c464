//! The event bus ([docs/api.md § Events](../../../docs/api.md#events)).
//!
//! - [`payloads`]: the six subjects and their payload types, shared by publisher and
//!   consumers so that both sides agree at compile time;
//! - [`stream`]: connecting to NATS and creating the `TICKETING` stream;
//! - [`outbox`]: appending an event inside the caller's transaction, and the relay
//!   that publishes committed events to JetStream;
//! - [`consumer`]: durable pull consumers that handle each event exactly once in
//!   effect;
//! - [`parked`]: the operator's view of events that could not be handled, and
//!   re-driving them;
//! - [`schema`]: the events as an AsyncAPI document (`docs/asyncapi.yaml`).

pub mod consumer;
pub mod outbox;
pub mod parked;
pub mod payloads;
pub mod schema;
pub mod stream;

pub use consumer::{Consumers, Handled, Listener};
pub use outbox::{Relay, Staged, append};
pub use payloads::*;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The subjects of the `TICKETING` stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    TicketCreated,
    TicketUpdated,
    OrderCreated,
    OrderCancelled,
    ExpirationComplete,
    PaymentCreated,
}

impl Subject {
    pub const ALL: [Subject; 6] = [
        Subject::TicketCreated,
        Subject::TicketUpdated,
        Subject::OrderCreated,
        Subject::OrderCancelled,
        Subject::ExpirationComplete,
        Subject::PaymentCreated,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Subject::TicketCreated => "ticket.created",
            Subject::TicketUpdated => "ticket.updated",
            Subject::OrderCreated => "order.created",
            Subject::OrderCancelled => "order.cancelled",
            Subject::ExpirationComplete => "expiration.complete",
            Subject::PaymentCreated => "payment.created",
        }
    }
}

impl Subject {
    /// The service that publishes it.
    pub const fn publisher(self) -> &'static str {
        match self {
            Subject::TicketCreated | Subject::TicketUpdated => "tickets",
            Subject::OrderCreated | Subject::OrderCancelled => "orders",
            Subject::ExpirationComplete => "expiration",
            Subject::PaymentCreated => "payments",
        }
    }

    /// The services that consume it (checked against their listeners in `e2e`'s
    /// documentation test).
    pub const fn consumers(self) -> &'static [&'static str] {
        match self {
            Subject::TicketCreated | Subject::TicketUpdated => &["orders"],
            Subject::OrderCreated => &["tickets", "payments", "expiration"],
            Subject::OrderCancelled => &["tickets", "payments"],
            Subject::ExpirationComplete | Subject::PaymentCreated => &["orders"],
        }
    }

    /// What each consumer does with it.
    pub const fn effects(self) -> &'static str {
        match self {
            Subject::TicketCreated => "orders adds the ticket to its replica.",
            Subject::TicketUpdated => {
                "orders applies it to its replica, strictly in version order."
            }
            Subject::OrderCreated => {
                "tickets reserves the ticket (version + 1, `ticket.updated`); payments \
                 stores the order; expiration schedules `expiration.complete` at `expiresAt`."
            }
            Subject::OrderCancelled => {
                "tickets frees the ticket if this order still holds it (version + 1, \
                 `ticket.updated`); payments marks the order cancelled and refunds any \
                 completed charge for it."
            }
            Subject::ExpirationComplete => {
                "orders cancels the order if it is `created` or `awaiting:payment` \
                 (version + 1, `order.cancelled`); otherwise nothing."
            }
            Subject::PaymentCreated => {
                "orders completes a `created` or `awaiting:payment` order; a cancelled \
                 order stays cancelled (payments refunds)."
            }
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payload type and the subject it travels on.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    const SUBJECT: Subject;
}

/// Where an incoming version stands against a replica's
/// ([docs/api.md § Guarantees](../../../docs/api.md#guarantees), 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// Exactly one more than the replica's: apply it.
    Next,
    /// Older than or equal to the replica's (already applied): acknowledge and ignore.
    Stale,
    /// More than one ahead: an earlier version is still on its way; retry later.
    Gap,
}

impl Sequence {
    pub fn of(replica: i64, incoming: i64) -> Self {
        match incoming.checked_sub(replica) {
            Some(1) => Self::Next,
            Some(d) if d <= 0 => Self::Stale,
            _ => Self::Gap,
        }
    }
}

/// The replica version rule, in one place: `None` when `incoming` is the next version
/// of the replica's record (apply it), otherwise what the listener answers: done for
/// an old version, not yet for a gap or for a record the replica has not seen yet.
///
/// ```
/// # use common::events::{Handled, unless_next};
/// assert_eq!(unless_next(Some(3), 4), None);
/// assert_eq!(unless_next(Some(3), 3), Some(Handled::Done));
/// assert!(matches!(unless_next(Some(3), 5), Some(Handled::NotYet(_))));
/// assert!(matches!(unless_next(None, 1), Some(Handled::NotYet(_))));
/// ```
pub fn unless_next(replica: Option<i64>, incoming: i64) -> Option<Handled> {
    let Some(replica) = replica else {
        return Some(Handled::NotYet("the record has not been replicated yet"));
    };
    match Sequence::of(replica, incoming) {
        Sequence::Next => None,
        Sequence::Stale => Some(Handled::Done),
        Sequence::Gap => Some(Handled::NotYet("an earlier version has not arrived yet")),
    }
}

#[cfg(test)]
mod tests {
    use super::Sequence;

    #[test]
    fn only_the_next_version_applies() {
        assert_eq!(Sequence::of(3, 4), Sequence::Next);
        assert_eq!(Sequence::of(3, 3), Sequence::Stale);
        assert_eq!(Sequence::of(3, 0), Sequence::Stale);
        assert_eq!(Sequence::of(3, 5), Sequence::Gap);
        assert_eq!(Sequence::of(i64::MIN, i64::MAX), Sequence::Gap);
    }
}
