//! Configuration from environment variables.
//!
//! Each service describes its settings as a struct built from [`required`] and
//! [`optional`] reads. A missing or unreadable variable is a [`ConfigError`] naming
//! it, and [`load_or_exit`] turns that into a one-line message and exit code 1.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A setting that must never be printed (keys, passwords, connection strings).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration error: environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("configuration error: environment variable {name} is invalid: {problem}")]
    Invalid { name: &'static str, problem: String },
}

fn read(name: &'static str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

fn parse<T: FromStr>(name: &'static str, raw: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    raw.trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::Invalid {
            name,
            problem: e.to_string(),
        })
}

/// A variable that must be set and parse as `T`.
pub fn required<T: FromStr>(name: &'static str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    parse(name, &read(name).ok_or(ConfigError::Missing(name))?)
}

/// A variable that falls back to `default` when unset or empty.
pub fn optional<T: FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    read(name).map_or(Ok(default), |raw| parse(name, &raw))
}

/// A duration given in whole seconds.
pub fn seconds(name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    optional(name, default).map(Duration::from_secs)
}

/// Builds the configuration, or prints the one-line error and exits with status 1.
pub fn load_or_exit<T>(load: impl FnOnce() -> Result<T, ConfigError>) -> T {
    load().unwrap_or_else(|error| {
        eprintln!("{error}");
        std::process::exit(1)
    })
}

/// Settings every HTTP service shares.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `PORT` (default 3000).
    pub port: u16,
    /// `DATABASE_URL` (required).
    pub database_url: Secret,
    /// `DATABASE_MAX_CONNECTIONS` (default 10).
    pub database_max_connections: u32,
    /// `SHUTDOWN_GRACE_SECONDS` (default 20): how long a stop may take.
    pub shutdown_grace: Duration,
}

impl HttpConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            port: optional("PORT", 3000)?,
            database_url: required("DATABASE_URL")?,
            database_max_connections: optional("DATABASE_MAX_CONNECTIONS", 10)?,
            shutdown_grace: seconds("SHUTDOWN_GRACE_SECONDS", 20)?,
        })
    }

    /// Defaults for tests and tools; the database must still be given.
    pub fn new(database_url: &str) -> Self {
        Self {
            port: 0,
            database_url: Secret::new(database_url),
            database_max_connections: 5,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// `JWT_KEY` (required by every service that reads sessions): the shared secret that
/// signs them.
pub fn jwt_key() -> Result<Secret, ConfigError> {
    required("JWT_KEY")
}

/// Settings of services on the event bus.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `NATS_URL` (required).
    pub nats_url: String,
    /// `EVENT_MAX_DELIVERIES` (default 50, about four minutes of retries): deliveries of
    /// one event before it is parked.
    pub max_deliveries: i64,
    /// `EVENT_CONCURRENCY` (default 8): events one consumer handles at the same time.
    pub concurrency: usize,
    /// `EVENT_ACK_WAIT_SECONDS` (default 30): how long an unacknowledged delivery waits
    /// before JetStream redelivers it (e.g. after a crash).
    pub ack_wait: Duration,
}

impl BusConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            nats_url: required("NATS_URL")?,
            max_deliveries: optional("EVENT_MAX_DELIVERIES", 50)?,
            concurrency: optional("EVENT_CONCURRENCY", 8)?,
            ack_wait: seconds("EVENT_ACK_WAIT_SECONDS", 30)?,
        })
    }

    pub fn new(nats_url: &str) -> Self {
        Self {
            nats_url: nats_url.to_owned(),
            max_deliveries: 50,
            concurrency: 8,
            ack_wait: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_variable() {
        assert_eq!(
            ConfigError::Missing("JWT_KEY").to_string(),
            "configuration error: environment variable JWT_KEY is required but not set"
        );
        let invalid = parse::<u16>("PORT", "eighty").unwrap_err();
        assert!(invalid.to_string().contains("PORT is invalid"), "{invalid}");
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret([redacted])"
        );
    }
}
