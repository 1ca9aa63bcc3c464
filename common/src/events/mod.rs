//! The events (`docs/api.md` § Events): what travels on the bus, and the rules both
//! ends of it keep.
//!
//! - [`Subject`]: the seven subjects of the `TICKETING` stream (the original's six
//!   and `session.revoked`), who publishes each and who consumes it;
//! - [`payloads`]: their payload types, field for field the original's JSON, shared
//!   by publisher and consumers so that both sides agree at compile time;
//! - [`Sequence`]: the version rule replicas apply updates by;
//! - [`schema`]: the events as an AsyncAPI document (`docs/asyncapi.yaml`).
//!
//! Publishing and consuming them (outbox, relay, durable consumers) is the `bus`
//! crate's work.

pub mod payloads;
pub mod schema;

pub use payloads::*;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The one stream that holds every subject.
pub const STREAM: &str = "TICKETING";

/// The durable consumer of a service for a subject, `<service>-<subject>`
/// (`tickets-order-created`): one per service and subject, shared by the service's
/// replicas.
pub fn durable_name(service: &str, subject: Subject) -> String {
    format!("{service}-{}", subject.as_str().replace('.', "-"))
}

/// The subjects of the `TICKETING` stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    TicketCreated,
    TicketUpdated,
    OrderCreated,
    OrderCancelled,
    ExpirationComplete,
    PaymentCreated,
    SessionRevoked,
}

impl Subject {
    pub const ALL: [Subject; 7] = [
        Subject::TicketCreated,
        Subject::TicketUpdated,
        Subject::OrderCreated,
        Subject::OrderCancelled,
        Subject::ExpirationComplete,
        Subject::PaymentCreated,
        Subject::SessionRevoked,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Subject::TicketCreated => "ticket.created",
            Subject::TicketUpdated => "ticket.updated",
            Subject::OrderCreated => "order.created",
            Subject::OrderCancelled => "order.cancelled",
            Subject::ExpirationComplete => "expiration.complete",
            Subject::PaymentCreated => "payment.created",
            Subject::SessionRevoked => "session.revoked",
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
            Subject::SessionRevoked => "auth",
        }
    }

    /// The services whose durable consumers handle it (checked against their
    /// listeners in `e2e`'s documentation test). `session.revoked` has none: every
    /// replica of every service that reads sessions follows it itself (see
    /// [`Subject::effects`]).
    pub const fn consumers(self) -> &'static [&'static str] {
        match self {
            Subject::TicketCreated | Subject::TicketUpdated => &["orders"],
            Subject::OrderCreated => &["tickets", "payments", "expiration"],
            Subject::OrderCancelled => &["tickets", "payments"],
            Subject::ExpirationComplete | Subject::PaymentCreated => &["orders"],
            Subject::SessionRevoked => &[],
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
            Subject::SessionRevoked => {
                "every replica of auth, tickets, orders and payments reads it with an \
                 ordered consumer of its own (not a shared durable: each must know every \
                 revocation), from the start of the stream when it starts, and treats the \
                 token as no current user until its `exp`."
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
/// (`docs/api.md` § Guarantees, 3).
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
