//! The event bus: how a state change and the event announcing it commit together,
//! reach every service that listens, and take effect there exactly once
//! (`docs/api.md` § Guarantees).
//!
//! - [`tx`]: the database transaction every write and every handler works in, which
//!   wakes background work (the relay) when it commits;
//! - [`outbox`]: appending an event inside that transaction, and the [`Relay`] that
//!   publishes committed events to JetStream;
//! - [`stream`]: connecting to NATS and declaring the `TICKETING` stream;
//! - [`consumer`]: durable pull consumers that apply each event once in effect, with
//!   their retry and parking policy;
//! - [`parked`]: the operator's view of events that could not be handled, and
//!   re-driving them;
//! - [`permissions`]: what each service's NATS user may publish and receive;
//! - [`prune`]: keeping the bookkeeping tables from growing for ever;
//! - `sessions` (feature `sessions`): every replica following sign-outs
//!   (`session.revoked`), so that a revoked session is refused everywhere;
//! - [`service`]: a service on the bus ([`OnBus`]) and the [`Backend`] that connects
//!   it, plugged into the service kit as a part; [`main`] is its binary's command
//!   line, with the `parked` commands.
//!
//! The event types themselves are the contract's (`common::events`).

pub mod cli;
pub mod config;
pub mod consumer;
pub mod outbox;
pub mod parked;
pub mod permissions;
pub mod prune;
pub mod service;
#[cfg(feature = "sessions")]
pub mod sessions;
pub mod stream;
pub mod tx;

pub use cli::main;
pub use config::BusConfig;
pub use consumer::{Consumers, Handled, Listener, Listeners, unless_next};
pub use outbox::{Relay, Staged, append, append_all};
pub use service::{Backend, OnBus};
pub use tx::{Signal, Tx};
