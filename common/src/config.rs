//! Configuration from environment variables.
//!
//! Each service describes its settings as a struct built from an [`Env`]: reads with
//! [`Env::required`], [`Env::optional`] and [`Env::seconds`]. A missing or unreadable
//! variable is a [`ConfigError`] naming it, and [`load_or_exit`] turns that into a
//! one-line message and exit code 1.
//!
//! An [`Env`] remembers every variable it was asked for, so the code that loads a
//! service's configuration is also the list of the variables it reads:
//! [`describe`] runs a loader against an empty environment and reports them, and each
//! service binary prints that list with `<service> env` (the Kubernetes manifests are
//! checked against it).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

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

/// One variable a configuration reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Variable {
    pub name: &'static str,
    pub required: bool,
    /// The value used when it is not set (optional variables only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// Where settings come from: the process environment, or a fixed set of pairs (tests,
/// [`describe`]). Records every variable read.
pub struct Env {
    values: Option<HashMap<String, String>>,
    read: RefCell<Vec<Variable>>,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            values: None,
            read: RefCell::default(),
        }
    }

    /// Exactly these variables and no others.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let values = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self {
            values: Some(values),
            read: RefCell::default(),
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        let value = match &self.values {
            Some(values) => values.get(name).cloned(),
            None => std::env::var(name).ok(),
        };
        value.filter(|value| !value.trim().is_empty())
    }

    fn note(&self, name: &'static str, required: bool, default: Option<String>) {
        let mut read = self.read.borrow_mut();
        if !read.iter().any(|v| v.name == name) {
            read.push(Variable {
                name,
                required,
                default,
            });
        }
    }

    /// A variable that must be set and parse as `T`.
    pub fn required<T: FromStr>(&self, name: &'static str) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        self.note(name, true, None);
        parse(name, &self.get(name).ok_or(ConfigError::Missing(name))?)
    }

    /// A variable that falls back to `default` when unset or empty.
    pub fn optional<T: FromStr + fmt::Display>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        self.note(name, false, Some(default.to_string()));
        self.get(name).map_or(Ok(default), |raw| parse(name, &raw))
    }

    /// A variable that may be absent, with no default (`None`).
    pub fn maybe<T: FromStr>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T::Err: fmt::Display,
    {
        self.note(name, false, None);
        self.get(name).map(|raw| parse(name, &raw)).transpose()
    }

    /// A duration given in whole seconds.
    pub fn seconds(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.optional(name, default).map(Duration::from_secs)
    }

    /// A duration given in (possibly fractional) seconds, such as `0.5`.
    pub fn fractional_seconds(
        &self,
        name: &'static str,
        default: f64,
    ) -> Result<Duration, ConfigError> {
        let seconds = self.optional(name, default)?;
        Duration::try_from_secs_f64(seconds).map_err(|e| ConfigError::Invalid {
            name,
            problem: e.to_string(),
        })
    }

    /// The variables read so far.
    pub fn variables(&self) -> Vec<Variable> {
        self.read.borrow().clone()
    }
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

/// The variables a configuration loader reads: it is run against an empty
/// environment, given a placeholder for each required variable it misses, until it
/// succeeds.
pub fn describe<T>(load: impl Fn(&Env) -> Result<T, ConfigError>) -> Vec<Variable> {
    let mut given: BTreeMap<&'static str, &'static str> = BTreeMap::new();
    loop {
        let env = Env::from_pairs(given.iter().map(|(k, v)| (*k, *v)));
        match load(&env) {
            Err(ConfigError::Missing(name)) if !given.contains_key(name) => {
                given.insert(name, "placeholder");
            }
            _ => return env.variables(),
        }
    }
}

/// Builds the configuration from the process environment, or prints the one-line
/// error and exits with status 1.
pub fn load_or_exit<T>(load: impl FnOnce(&Env) -> Result<T, ConfigError>) -> T {
    load(&Env::process()).unwrap_or_else(|error| {
        eprintln!("{error}");
        std::process::exit(1)
    })
}

/// Settings every HTTP service shares.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `BIND_ADDRESS` (default `0.0.0.0`, every interface, as a container needs; the
    /// local stack binds `127.0.0.1`).
    pub bind_address: IpAddr,
    /// `PORT` (default 3000).
    pub port: u16,
    /// `REQUEST_TIMEOUT_SECONDS` (default 30): a request still running after this long
    /// is abandoned (its transaction rolled back) and answered 503.
    pub request_timeout: Duration,
    /// `SHUTDOWN_GRACE_SECONDS` (default 20): how long a stop may take.
    pub shutdown_grace: Duration,
}

impl HttpConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            bind_address: env.optional("BIND_ADDRESS", IpAddr::from([0, 0, 0, 0]))?,
            port: env.optional("PORT", 3000)?,
            request_timeout: env.seconds("REQUEST_TIMEOUT_SECONDS", 30)?,
            shutdown_grace: env.seconds("SHUTDOWN_GRACE_SECONDS", 20)?,
        })
    }

    /// Defaults for tests: loopback, any port, a short grace.
    pub fn for_tests() -> Self {
        Self {
            bind_address: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// The service's database and how its connections are shared.
///
/// HTTP handlers and background work (event handlers, the outbox relay, timers) draw
/// from two separate pools, so that a burst of events can never leave a request
/// waiting for a connection.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `DATABASE_URL` (required).
    pub url: Secret,
    /// `DATABASE_MAX_CONNECTIONS` (default 10): connections for HTTP requests.
    pub http_connections: u32,
    /// `DATABASE_EVENT_CONNECTIONS` (default 8): connections for background work. Event
    /// handlers of all subjects together use all but one of them at a time, leaving one
    /// for the relay and timers. (8 rather than 4 replicated a burst of 10,000 tickets
    /// about 15 % sooner; see docs/benchmarks.md.)
    pub event_connections: u32,
    /// `DATABASE_ACQUIRE_TIMEOUT_SECONDS` (default 5): how long a request waits for a
    /// connection before it fails.
    pub acquire_timeout: Duration,
}

impl DatabaseConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let config = Self {
            url: env.required("DATABASE_URL")?,
            http_connections: env.optional("DATABASE_MAX_CONNECTIONS", 10)?,
            event_connections: env.optional("DATABASE_EVENT_CONNECTIONS", 8)?,
            acquire_timeout: env.seconds("DATABASE_ACQUIRE_TIMEOUT_SECONDS", 5)?,
        };
        at_least(1, "DATABASE_MAX_CONNECTIONS", config.http_connections)?;
        at_least(2, "DATABASE_EVENT_CONNECTIONS", config.event_connections)?;
        Ok(config)
    }

    pub fn for_tests(url: &str) -> Self {
        Self {
            url: Secret::new(url),
            http_connections: 5,
            event_connections: 4,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

fn at_least(minimum: u32, name: &'static str, value: u32) -> Result<(), ConfigError> {
    if value < minimum {
        return Err(ConfigError::Invalid {
            name,
            problem: format!("must be at least {minimum}"),
        });
    }
    Ok(())
}

/// The JWT key of `for_tests` configurations (and of the test toolkit's sessions).
pub const TEST_JWT_KEY: &str = "test-jwt-key";

/// `JWT_KEY` (required by every service that reads sessions): the shared secret that
/// signs them.
pub fn jwt_key(env: &Env) -> Result<Secret, ConfigError> {
    env.required("JWT_KEY")
}

/// Settings of services on the event bus.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `NATS_URL` (required).
    pub nats_url: String,
    /// `STREAM_REPLICAS` (default 1): copies JetStream keeps of the stream (3 in a
    /// three-node cluster). An existing stream is updated to it.
    pub stream_replicas: usize,
    /// `EVENT_MAX_FAILURES` (default 50): failed attempts at handling one event before
    /// it is parked. An event that only waits (its predecessor has not arrived) is
    /// never parked.
    pub max_failures: i64,
    /// `EVENT_RETRY_MAX_DELAY_SECONDS` (default 5): redelivery delays start at 50 ms
    /// and double up to this.
    pub retry_max_delay: Duration,
    /// `EVENT_WAIT_WARN_SECONDS` (default 60): an event still waiting for its
    /// predecessor after this long is logged as a warning.
    pub wait_warn_after: Duration,
    /// `EVENT_CONCURRENCY` (default 8): events one consumer takes at a time.
    pub concurrency: usize,
    /// `EVENT_ACK_WAIT_SECONDS` (default 30): how long an unacknowledged delivery waits
    /// before JetStream redelivers it (e.g. after a crash).
    pub ack_wait: Duration,
    /// `RETENTION_HOURS` (default 168, a week): how long handled event ids, parked
    /// events and other bookkeeping are kept. At least an hour: longer than the
    /// stream's duplicate window plus the longest redelivery.
    pub retention: Duration,
    /// `PRUNE_INTERVAL_SECONDS` (default 3600): how often old bookkeeping is pruned.
    pub prune_interval: Duration,
}

impl BusConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let config = Self {
            nats_url: env.required("NATS_URL")?,
            stream_replicas: env.optional("STREAM_REPLICAS", 1)?,
            max_failures: env.optional("EVENT_MAX_FAILURES", 50)?,
            retry_max_delay: env.fractional_seconds("EVENT_RETRY_MAX_DELAY_SECONDS", 5.0)?,
            wait_warn_after: env.seconds("EVENT_WAIT_WARN_SECONDS", 60)?,
            concurrency: env.optional("EVENT_CONCURRENCY", 8)?,
            ack_wait: env.seconds("EVENT_ACK_WAIT_SECONDS", 30)?,
            retention: env.optional("RETENTION_HOURS", 168_u64).map(hours)?,
            prune_interval: env.seconds("PRUNE_INTERVAL_SECONDS", 3600)?,
        };
        if config.retention < Duration::from_secs(3600) {
            return Err(ConfigError::Invalid {
                name: "RETENTION_HOURS",
                problem: "must be at least 1 (longer than the duplicate window)".into(),
            });
        }
        Ok(config)
    }

    pub fn for_tests(nats_url: &str) -> Self {
        Self {
            nats_url: nats_url.to_owned(),
            stream_replicas: 1,
            max_failures: 50,
            retry_max_delay: Duration::from_secs(5),
            wait_warn_after: Duration::from_secs(60),
            concurrency: 8,
            ack_wait: Duration::from_secs(2),
            retention: hours(168),
            prune_interval: Duration::from_secs(3600),
        }
    }
}

fn hours(hours: u64) -> Duration {
    Duration::from_secs(hours * 3600)
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
        let env = Env::from_pairs([("PORT", "eighty")]);
        let invalid = env.optional::<u16>("PORT", 3000).unwrap_err();
        assert!(invalid.to_string().contains("PORT is invalid"), "{invalid}");
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret([redacted])"
        );
    }

    #[test]
    fn describe_lists_every_variable_a_loader_reads() {
        let variables = describe(|env| {
            HttpConfig::from_env(env)?;
            DatabaseConfig::from_env(env)
        });
        let required: Vec<_> = variables
            .iter()
            .filter(|v| v.required)
            .map(|v| v.name)
            .collect();
        assert_eq!(required, ["DATABASE_URL"]);
        let port = variables.iter().find(|v| v.name == "PORT").unwrap();
        assert_eq!(port.default.as_deref(), Some("3000"));
        assert!(
            variables
                .iter()
                .any(|v| v.name == "DATABASE_EVENT_CONNECTIONS")
        );
    }

    #[test]
    fn the_retention_must_outlast_the_duplicate_window() {
        let env = Env::from_pairs([("NATS_URL", "nats://x"), ("RETENTION_HOURS", "0")]);
        assert!(matches!(
            BusConfig::from_env(&env),
            Err(ConfigError::Invalid {
                name: "RETENTION_HOURS",
                ..
            })
        ));
    }
}
