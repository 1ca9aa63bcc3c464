//! Cross-service flows with every service running and a real NATS between them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod burst;
mod fuzz;
mod purchase;
mod race;
mod signout;
mod tickets_and_orders;
mod trace;
