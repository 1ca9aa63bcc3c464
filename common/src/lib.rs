//! The contract every Ticketing service speaks.
//!
//! The services are small axum applications, each owning one PostgreSQL database and
//! talking to the others only through events on NATS JetStream. What they must agree
//! on lives here, once, as the course's `common` package held it:
//!
//! - [`events`]: the subjects of the `TICKETING` stream and their payload types, the
//!   version rule replicas follow, and the AsyncAPI document built from them;
//! - [`error`]: the one error type and the JSON error body (`docs/api.md` § Errors);
//! - [`extract`]: request extractors that turn bad input into that error body;
//! - `session` (feature `session`): the `session` cookie, its JWT and the
//!   current-user extractors;
//! - [`validate`]: per-field validation and the parsers for emails, ids and prices;
//! - [`money`] and [`time`]: exact prices in cents and millisecond timestamps;
//! - [`Secret`]: a setting that never prints.
//!
//! It knows no NATS client and no connection pool. With the `sqlx` feature, prices and
//! order statuses map to PostgreSQL columns and a failed query converts into
//! [`Error`]. How a service is configured, started and observed is the service kit's
//! (`kit`); how events travel is the bus's (`bus`).

pub mod error;
pub mod events;
pub mod extract;
pub mod money;
mod secret;
#[cfg(feature = "session")]
pub mod session;
pub mod time;
pub mod validate;

#[cfg(feature = "sqlx")]
pub use error::ResultExt;
pub use error::{Error, ErrorBody, FieldError};
pub use extract::{Id, Json, UncheckedId};
pub use secret::Secret;
#[cfg(feature = "session")]
pub use session::{AuthUser, CurrentUser, SessionKeys, UserClaims};

/// The result type of handlers and of everything they call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
